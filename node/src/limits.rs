//! The node's own capacities and intervals (the config's `[limits]` section): every queue,
//! buffer and cache the wiring creates takes its size from here, so no capacity is a literal
//! in the code. Each field's doc says what happens when the bound is hit.

use serde::{Deserialize, Serialize};

/// Default of [`LimitsConfig::consensus_queue`].
pub const DEFAULT_CONSENSUS_QUEUE: usize = 10_000;
/// Default of [`LimitsConfig::proof_queue`].
pub const DEFAULT_PROOF_QUEUE: usize = 4_096;
/// Default of [`LimitsConfig::fetched_queue`].
pub const DEFAULT_FETCHED_QUEUE: usize = 64;
/// Default of [`LimitsConfig::ack_queue`].
pub const DEFAULT_ACK_QUEUE: usize = 4_096;
/// Default of [`LimitsConfig::batch_verifiers`].
pub const DEFAULT_BATCH_VERIFIERS: usize = 4;
/// Default of [`LimitsConfig::batch_verify_queue`].
pub const DEFAULT_BATCH_VERIFY_QUEUE: usize = 256;
/// Default of [`LimitsConfig::proof_verify_queue`].
pub const DEFAULT_PROOF_VERIFY_QUEUE: usize = 1_024;
/// Default of [`LimitsConfig::certificate_cache`].
pub const DEFAULT_CERTIFICATE_CACHE: usize = 1_024;
/// Default of [`LimitsConfig::stream_subscribers`].
pub const DEFAULT_STREAM_SUBSCRIBERS: usize = 256;
/// Default of [`LimitsConfig::receipt_stream_buffer`].
pub const DEFAULT_RECEIPT_STREAM_BUFFER: usize = 1_024;
/// Default of [`LimitsConfig::remembered_roots`].
pub const DEFAULT_REMEMBERED_ROOTS: usize = 100_000;
/// Default of [`LimitsConfig::tracked_pending`].
pub const DEFAULT_TRACKED_PENDING: usize = 1 << 20;
/// Default of [`LimitsConfig::recent_acks`].
pub const DEFAULT_RECENT_ACKS: usize = 4_096;
/// Default of [`LimitsConfig::admission_max_wait_ms`].
pub const DEFAULT_ADMISSION_MAX_WAIT_MS: u64 = 400;
/// Default of [`LimitsConfig::batching_tick_ms`].
pub const DEFAULT_BATCHING_TICK_MS: u64 = 5;
/// Default of [`LimitsConfig::batching_take`].
pub const DEFAULT_BATCHING_TAKE: usize = 10_000;
/// Default of [`LimitsConfig::served_ancestors`].
pub const DEFAULT_SERVED_ANCESTORS: usize = 64;
/// Default of [`LimitsConfig::stall_after_secs`].
pub const DEFAULT_STALL_AFTER_SECS: u64 = 30;
/// Default of [`LimitsConfig::shutdown_grace_secs`].
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Default of [`LimitsConfig::gauges_interval_ms`].
pub const DEFAULT_GAUGES_INTERVAL_MS: u64 = 1_000;
/// Default of [`LimitsConfig::execution_retry_ms`].
pub const DEFAULT_EXECUTION_RETRY_MS: u64 = 200;
/// Default of [`LimitsConfig::state_snapshots`].
pub const DEFAULT_STATE_SNAPSHOTS: usize = 2;
/// Default of [`LimitsConfig::sync_control_queue`].
pub const DEFAULT_SYNC_CONTROL_QUEUE: usize = 16;
/// Default of [`LimitsConfig::proof_expiry_interval_ms`].
pub const DEFAULT_PROOF_EXPIRY_INTERVAL_MS: u64 = 1_000;
/// Default of [`LimitsConfig::checkpoint_queue`].
pub const DEFAULT_CHECKPOINT_QUEUE: usize = 1_024;
/// Default of [`LimitsConfig::checkpoint_signature_queue`].
pub const DEFAULT_CHECKPOINT_SIGNATURE_QUEUE: usize = 1_024;
/// Default of [`LimitsConfig::checkpoint_rebroadcast_ms`].
pub const DEFAULT_CHECKPOINT_REBROADCAST_MS: u64 = 5_000;
/// Default of [`LimitsConfig::future_epoch_messages`].
pub const DEFAULT_FUTURE_EPOCH_MESSAGES: usize = 1_024;
/// Default of [`LimitsConfig::epoch_switch_grace_ms`].
pub const DEFAULT_EPOCH_SWITCH_GRACE_MS: u64 = 10_000;

/// Capacities and intervals of the node's tasks and channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Peer consensus messages waiting for the consensus driver. Full: a new message is
    /// dropped and counted (`keel_node_consensus_dropped_total`); timeouts and
    /// retransmission recover.
    pub consensus_queue: usize,
    /// Verified proofs of availability waiting for the driver's proof queue. Full: a peer's
    /// proof is dropped and counted (its batch is still ordered when another leader proposes
    /// it); this node's own proofs wait for room (back-pressure on batching).
    pub proof_queue: usize,
    /// Fetched blocks waiting for the driver. Full: the fetch task waits.
    pub fetched_queue: usize,
    /// Acknowledgements waiting for the batching task. Full: dropped and counted (the proof
    /// forms from the other acknowledgements, or the batch expires).
    pub ack_queue: usize,
    /// Peer batches verified at once (each on the blocking pool).
    pub batch_verifiers: usize,
    /// Peer batches waiting for a verifier. Full: a new batch is dropped and counted
    /// (`keel_node_batches_refused_total`); the author forms its proof from the others, and
    /// this node fetches the batch if a committed block orders it.
    pub batch_verify_queue: usize,
    /// Peer proofs waiting for signature verification. Full: dropped and counted.
    pub proof_verify_queue: usize,
    /// Certificates remembered as verified by the driver (oldest evicted first).
    pub certificate_cache: usize,
    /// Executed blocks' receipts buffered for each event-stream subscriber. Full: a slow
    /// subscriber skips the oldest and is told how many it missed.
    pub receipt_stream_buffer: usize,
    /// Event-stream (`/v1/stream`) subscribers at once. Full: a new subscriber is refused
    /// with 429 until one goes away.
    pub stream_subscribers: usize,
    /// Executed heights whose state root the API can report (oldest forgotten first).
    pub remembered_roots: usize,
    /// Admitted, not yet executed transactions the API reports as pending (oldest forgotten
    /// first; a forgotten one is reported unknown until its receipt exists).
    pub tracked_pending: usize,
    /// Acknowledgements of peers' batches remembered: another copy of one of those batches is
    /// answered with the same acknowledgement, without verifying or storing it again (oldest
    /// forgotten first).
    pub recent_acks: usize,
    /// Admission answers "overloaded" (HTTP 429) while the oldest transaction admitted here
    /// and not yet executed has waited longer than this, in ms. Transactions that waited more
    /// than ten times this are no longer counted (see `pending`).
    pub admission_max_wait_ms: u64,
    /// How often the batching task moves admitted transactions into batches, in ms.
    pub batching_tick_ms: u64,
    /// Most transactions moved from the mempool per batching tick.
    pub batching_take: usize,
    /// Ancestors returned with each block a peer asks for.
    pub served_ancestors: usize,
    /// Readiness fails after this long without a commit or an execution, in seconds.
    pub stall_after_secs: u64,
    /// How long shutdown waits for each task, in seconds.
    pub shutdown_grace_secs: u64,
    /// How often gauges read from other components are refreshed, in ms.
    pub gauges_interval_ms: u64,
    /// How long execution waits before retrying a missing batch or re-reading the store, in ms.
    pub execution_retry_ms: u64,
    /// How often the driver drops expired proofs, in ms.
    pub proof_expiry_interval_ms: u64,
    /// Range sync's requests waiting for the driver (pause, applied heights, resume). Full:
    /// the sync task waits.
    pub sync_control_queue: usize,
    /// State snapshots held for state-syncing peers (the latest checkpoint heights). Each pins
    /// the old versions of what was written after it; the oldest is released beyond this.
    pub state_snapshots: usize,
    /// Executed heights waiting for the checkpoint task. Full: the execution thread waits
    /// (no checkpoint height is skipped).
    pub checkpoint_queue: usize,
    /// Peer checkpoint signatures waiting for the checkpoint task. Full: dropped and counted
    /// (`keel_checkpoint_signatures_refused_total{reason="queue_full"}`); signers send
    /// uncertified signatures again.
    pub checkpoint_signature_queue: usize,
    /// How often this validator sends its not yet certified checkpoint signature again, and
    /// may fetch a newer certified checkpoint from a peer that is ahead, in ms.
    pub checkpoint_rebroadcast_ms: u64,
    /// Consensus messages of the next epoch held until this node switches. Full: the oldest
    /// is dropped and counted (`keel_consensus_wrong_epoch_messages_total{epoch="future_dropped"}`);
    /// timeouts recover.
    pub future_epoch_messages: usize,
    /// After an epoch change, how long members of the old and the new committee may both
    /// connect (peers that switch later can still reach this node), in ms.
    pub epoch_switch_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            consensus_queue: DEFAULT_CONSENSUS_QUEUE,
            proof_queue: DEFAULT_PROOF_QUEUE,
            fetched_queue: DEFAULT_FETCHED_QUEUE,
            ack_queue: DEFAULT_ACK_QUEUE,
            batch_verifiers: DEFAULT_BATCH_VERIFIERS,
            batch_verify_queue: DEFAULT_BATCH_VERIFY_QUEUE,
            proof_verify_queue: DEFAULT_PROOF_VERIFY_QUEUE,
            certificate_cache: DEFAULT_CERTIFICATE_CACHE,
            receipt_stream_buffer: DEFAULT_RECEIPT_STREAM_BUFFER,
            stream_subscribers: DEFAULT_STREAM_SUBSCRIBERS,
            remembered_roots: DEFAULT_REMEMBERED_ROOTS,
            tracked_pending: DEFAULT_TRACKED_PENDING,
            admission_max_wait_ms: DEFAULT_ADMISSION_MAX_WAIT_MS,
            recent_acks: DEFAULT_RECENT_ACKS,
            batching_tick_ms: DEFAULT_BATCHING_TICK_MS,
            batching_take: DEFAULT_BATCHING_TAKE,
            served_ancestors: DEFAULT_SERVED_ANCESTORS,
            stall_after_secs: DEFAULT_STALL_AFTER_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            gauges_interval_ms: DEFAULT_GAUGES_INTERVAL_MS,
            execution_retry_ms: DEFAULT_EXECUTION_RETRY_MS,
            proof_expiry_interval_ms: DEFAULT_PROOF_EXPIRY_INTERVAL_MS,
            sync_control_queue: DEFAULT_SYNC_CONTROL_QUEUE,
            state_snapshots: DEFAULT_STATE_SNAPSHOTS,
            checkpoint_queue: DEFAULT_CHECKPOINT_QUEUE,
            checkpoint_signature_queue: DEFAULT_CHECKPOINT_SIGNATURE_QUEUE,
            checkpoint_rebroadcast_ms: DEFAULT_CHECKPOINT_REBROADCAST_MS,
            future_epoch_messages: DEFAULT_FUTURE_EPOCH_MESSAGES,
            epoch_switch_grace_ms: DEFAULT_EPOCH_SWITCH_GRACE_MS,
        }
    }
}

/// Transactions that waited this many times `admission_max_wait_ms` no longer count for the
/// admission gate's wait, nor for the batch maker's pacing.
pub const PENDING_HORIZON_FACTOR: u32 = 10;

impl LimitsConfig {
    /// The admission gate's limit on the oldest pending transaction's wait.
    pub fn admission_max_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.admission_max_wait_ms)
    }

    /// How long a pending transaction counts for that wait ([`PENDING_HORIZON_FACTOR`] times
    /// the limit).
    pub fn pending_horizon(&self) -> std::time::Duration {
        self.admission_max_wait()
            .saturating_mul(PENDING_HORIZON_FACTOR)
    }

    /// Every capacity must be positive and every interval at least 1 ms; returns the first
    /// field at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("consensus_queue", self.consensus_queue),
            ("proof_queue", self.proof_queue),
            ("fetched_queue", self.fetched_queue),
            ("ack_queue", self.ack_queue),
            ("batch_verifiers", self.batch_verifiers),
            ("batch_verify_queue", self.batch_verify_queue),
            ("proof_verify_queue", self.proof_verify_queue),
            ("certificate_cache", self.certificate_cache),
            ("receipt_stream_buffer", self.receipt_stream_buffer),
            ("stream_subscribers", self.stream_subscribers),
            ("remembered_roots", self.remembered_roots),
            ("tracked_pending", self.tracked_pending),
            ("admission_max_wait_ms", self.admission_max_wait_ms as usize),
            ("recent_acks", self.recent_acks),
            ("batching_take", self.batching_take),
            ("batching_tick_ms", self.batching_tick_ms as usize),
            ("stall_after_secs", self.stall_after_secs as usize),
            ("gauges_interval_ms", self.gauges_interval_ms as usize),
            ("execution_retry_ms", self.execution_retry_ms as usize),
            (
                "proof_expiry_interval_ms",
                self.proof_expiry_interval_ms as usize,
            ),
            ("sync_control_queue", self.sync_control_queue),
            ("state_snapshots", self.state_snapshots),
            ("checkpoint_queue", self.checkpoint_queue),
            (
                "checkpoint_signature_queue",
                self.checkpoint_signature_queue,
            ),
            (
                "checkpoint_rebroadcast_ms",
                self.checkpoint_rebroadcast_ms as usize,
            ),
            ("future_epoch_messages", self.future_epoch_messages),
            ("epoch_switch_grace_ms", self.epoch_switch_grace_ms as usize),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field, "must be positive".into()));
            }
        }
        if self.batch_verifiers > 256 {
            return Err(("batch_verifiers", "at most 256".into()));
        }
        Ok(())
    }
}
