//! The node's Prometheus metrics, registered on one registry (no globals).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder, core::Collector,
};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Current consensus round.
    pub round: IntGauge,
    /// Round timeouts signed (view changes started).
    pub timeouts: IntCounter,
    /// Proposals made.
    pub proposals: IntCounter,
    /// Rounds this node left on a timeout certificate.
    pub failed_rounds: IntCounter,
    /// The current round timeout in seconds (adapted base, back-off, idle allowance).
    pub round_timeout_seconds: Gauge,
    /// The leader of the current round.
    pub round_leader: IntGauge,
    /// Leader rounds per validator and outcome (`succeeded`: its block is committed;
    /// `failed`: a committed block records its round as skipped), from committed blocks.
    pub leader_rounds: IntCounterVec,
    /// Each validator's reputation weight (before stake) for the current round's draw.
    pub leader_weight: IntGaugeVec,
    /// Blocks committed.
    pub committed_blocks: IntCounter,
    /// Highest committed height.
    pub committed_height: IntGauge,
    /// Seconds from a block's timestamp to its commit here.
    pub commit_latency: Histogram,
    /// Highest executed height.
    pub executed_height: IntGauge,
    /// Transactions executed (succeeded or failed).
    pub executed_transactions: IntCounter,
    /// Transactions with a receipt (including discarded ones).
    pub receipts: IntCounter,
    /// Seconds to execute and commit a block.
    pub execution_seconds: Histogram,
    /// Transactions re-executed after optimistic runs were invalidated.
    pub reexecuted: IntCounter,
    /// Transactions in the mempool.
    pub mempool_size: IntGauge,
    /// Transactions admitted.
    pub admitted: IntCounter,
    /// Transactions refused at admission.
    pub rejected: IntCounter,
    /// Transactions of own batches that expired unordered, admitted again.
    pub readmitted: IntCounter,
    /// Batches this node sealed.
    pub batches_sealed: IntCounter,
    /// Transactions per sealed batch.
    pub batch_size: Histogram,
    /// The sealing time in force (batches grow with load).
    pub batch_seal_after_seconds: Gauge,
    /// Peer batches acknowledged.
    pub batches_acknowledged: IntCounter,
    /// Peer batches stored without verifying their signatures (not designated for them).
    pub batches_unverified: IntCounter,
    /// Own batches offered again because their proof was late or a designated verifier
    /// looked down.
    pub batches_reoffered: IntCounter,
    /// Peer batches refused or dropped for overload.
    pub batches_refused: IntCounter,
    /// Peer batches refused unverified because their author's quota of stored, unordered
    /// batches was full.
    pub batches_over_quota: IntCounter,
    /// Stored batches deleted because they expired unordered.
    pub batches_expired: IntCounter,
    /// Proofs waiting to be ordered.
    pub queued_proofs: IntGauge,
    /// Connected peers.
    pub peers: IntGauge,
    /// Frame bytes sent to peers.
    pub bytes_out: IntGauge,
    /// Frame bytes received from peers.
    pub bytes_in: IntGauge,
    /// Outbound notifications dropped (a peer's lane full, or its connection lost).
    pub p2p_dropped: IntGauge,
    /// Inbound frames refused (over the cap, undecodable, wrong lane, stalled).
    pub p2p_bad_frames: IntGauge,
    /// Of those, frames whose bytes did not arrive within the frame timeout.
    pub p2p_stalled_frames: IntGauge,
    /// Connections closed because the same key connected again.
    pub p2p_replaced_connections: IntGauge,
    /// Outbound frame bytes queued for peers.
    pub p2p_queued_bytes: IntGauge,
    /// Inbound consensus messages dropped (queue full, cheap checks, failed verification).
    pub consensus_dropped: IntCounter,
    /// Inbound acknowledgements dropped because the batching task's queue was full.
    pub acks_dropped: IntCounter,
    /// Peer proofs dropped (invalid, or a full verification or proof queue).
    pub proofs_dropped: IntCounter,
    /// Bytes each RocksDB column family holds (live SST files and memtables), by `column`.
    pub disk_bytes: IntGaugeVec,
    /// 1 while range sync runs, else 0.
    pub sync_active: IntGauge,
    /// The height range sync is syncing to.
    pub sync_target_height: IntGauge,
    /// Blocks applied by range sync.
    pub sync_applied_blocks: IntCounter,
    /// Peers dropped from a sync for sending bad ranges or bad state.
    pub sync_peers_dropped: IntCounter,
    /// Buckets proven by the start-up state sync in progress (256 when done).
    pub state_sync_buckets: IntGauge,
    /// Seconds the last start-up state sync took.
    pub state_sync_seconds: Gauge,
    /// The highest pruned height (the lowest retained height minus one; 0: nothing pruned).
    pub pruned_height: IntGauge,
    /// Heights that retention allows to prune and the pruner has not pruned yet.
    pub pruner_lag: IntGauge,
    /// Heights pruned.
    pub pruned_heights: IntCounter,
    /// Batches pruned.
    pub pruned_batches: IntCounter,
    /// Receipts pruned.
    pub pruned_receipts: IntCounter,
    /// Seconds each pruning pass spends reading and deleting (`keel_pruned_heights_total` over
    /// its sum is the pruner's speed).
    pub pruner_pass_seconds: Histogram,
    /// Seconds each compaction of pruned data takes (flush included).
    pub pruner_compaction_seconds: Histogram,
    /// The current epoch.
    pub epoch: IntGauge,
    /// Validators in the current committee.
    pub committee_size: IntGauge,
    /// Epoch changes this node carried out.
    pub epoch_changes: IntCounter,
    /// Consensus messages of another epoch, by `epoch` (`old`: refused; `future`: held until
    /// the switch, or dropped when the hold is full).
    pub wrong_epoch_messages: IntCounterVec,
    /// Checkpoint signing and certification.
    pub checkpoints: CheckpointMetrics,
}

/// The checkpoint task's metrics.
pub struct CheckpointMetrics {
    /// Latest certified checkpoint sequence.
    pub certified_sequence: IntGauge,
    /// Latest checkpoint sequence this validator signed.
    pub signed_sequence: IntGauge,
    /// Peer checkpoint signatures handled.
    pub signatures_received: IntCounter,
    /// Peer checkpoint signatures refused or dropped, by `reason`.
    pub signatures_refused: IntCounterVec,
    /// Certified checkpoints that contradict this node's own.
    pub diverged: IntCounter,
}

impl CheckpointMetrics {
    fn new(r: &Registry) -> Self {
        CheckpointMetrics {
            certified_sequence: gauge(
                r,
                "keel_checkpoint_certified_sequence",
                "Latest certified checkpoint sequence",
            ),
            signed_sequence: gauge(
                r,
                "keel_checkpoint_signed_sequence",
                "Latest checkpoint sequence this validator signed",
            ),
            signatures_received: counter(
                r,
                "keel_checkpoint_signatures_received_total",
                "Peer checkpoint signatures handled",
            ),
            signatures_refused: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "keel_checkpoint_signatures_refused_total",
                        "Peer checkpoint signatures refused (invalid, stale, out_of_window, duplicate, equivocation) or dropped (queue_full)",
                    ),
                    &["reason"],
                ),
            ),
            diverged: counter(
                r,
                "keel_checkpoint_diverged_total",
                "Certified checkpoints that contradict the one this node built",
            ),
        }
    }
}

/// Registers a metric built from constant names (so neither step can fail at run time).
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("INVARIANT: valid metric name");
    registry
        .register(Box::new(metric.clone()))
        .expect("INVARIANT: metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::with_opts(Opts::new(name, help)))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::with_opts(Opts::new(name, help)))
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::with_opts(Opts::new(name, help)))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}

impl Metrics {
    /// Registers every metric on a new registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let seconds = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
        ];
        Metrics {
            round: gauge(&r, "keel_consensus_round", "Current consensus round"),
            timeouts: counter(
                &r,
                "keel_consensus_timeouts_total",
                "Round timeouts signed (view changes started)",
            ),
            proposals: counter(&r, "keel_consensus_proposals_total", "Blocks proposed"),
            failed_rounds: counter(
                &r,
                "keel_consensus_failed_rounds_total",
                "Rounds left on a timeout certificate (their leader failed)",
            ),
            round_timeout_seconds: float_gauge(
                &r,
                "keel_consensus_round_timeout_seconds",
                "Current round timeout (adapted to round latency, backed off while rounds fail)",
            ),
            round_leader: gauge(
                &r,
                "keel_consensus_round_leader",
                "Validator index of the current round's leader",
            ),
            leader_rounds: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "keel_consensus_leader_rounds_total",
                        "Leader rounds by validator and outcome (succeeded, failed), from committed blocks",
                    ),
                    &["validator", "outcome"],
                ),
            ),
            leader_weight: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "keel_consensus_leader_weight",
                        "Reputation weight (before stake) of each validator for the current round's leader draw",
                    ),
                    &["validator"],
                ),
            ),
            committed_blocks: counter(
                &r,
                "keel_consensus_committed_blocks_total",
                "Blocks committed",
            ),
            committed_height: gauge(
                &r,
                "keel_consensus_committed_height",
                "Highest committed height",
            ),
            commit_latency: histogram(
                &r,
                "keel_consensus_commit_latency_seconds",
                "From a block's timestamp to its commit on this node",
                seconds.clone(),
            ),
            executed_height: gauge(
                &r,
                "keel_execution_executed_height",
                "Highest executed height",
            ),
            executed_transactions: counter(
                &r,
                "keel_execution_transactions_total",
                "Transactions executed (succeeded or failed)",
            ),
            receipts: counter(
                &r,
                "keel_execution_receipts_total",
                "Receipts written, including discarded transactions",
            ),
            execution_seconds: histogram(
                &r,
                "keel_execution_block_seconds",
                "Time to execute and commit one block",
                seconds,
            ),
            reexecuted: counter(
                &r,
                "keel_execution_reexecuted_total",
                "Transactions re-executed after their optimistic run was invalidated",
            ),
            mempool_size: gauge(
                &r,
                "keel_mempool_transactions",
                "Transactions in the mempool",
            ),
            admitted: counter(&r, "keel_mempool_admitted_total", "Transactions admitted"),
            readmitted: counter(
                &r,
                "keel_mempool_readmitted_total",
                "Transactions of this node's batches that expired unordered, admitted again",
            ),
            rejected: counter(
                &r,
                "keel_mempool_rejected_total",
                "Transactions refused at admission",
            ),
            batches_sealed: counter(&r, "keel_batches_sealed_total", "Batches sealed here"),
            batch_size: histogram(
                &r,
                "keel_batch_size_transactions",
                "Transactions per sealed batch",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0],
            ),
            batch_seal_after_seconds: float_gauge(
                &r,
                "keel_batch_seal_after_seconds",
                "How long a batch waits to fill now (longer while the pipeline is behind)",
            ),
            batches_acknowledged: counter(
                &r,
                "keel_batches_acknowledged_total",
                "Peer batches verified, stored and acknowledged",
            ),
            batches_unverified: counter(
                &r,
                "keel_batches_unverified_total",
                "Peer batches stored without verifying their signatures (another validator is designated to)",
            ),
            batches_reoffered: counter(
                &r,
                "keel_batches_reoffered_total",
                "Own batches offered again to the validators that had not acknowledged them",
            ),
            batches_refused: counter(
                &r,
                "keel_batches_refused_total",
                "Peer batches refused (invalid) or dropped (overload)",
            ),
            batches_over_quota: counter(
                &r,
                "keel_batches_over_quota_total",
                "Peer batches refused unverified: their author's stored, unordered batches were at \
                 the quota",
            ),
            batches_expired: counter(
                &r,
                "keel_batches_expired_total",
                "Stored batches deleted because they expired before any block ordered them",
            ),
            queued_proofs: gauge(
                &r,
                "keel_batches_queued_proofs",
                "Proofs of availability waiting to be ordered",
            ),
            peers: gauge(&r, "keel_p2p_peers_connected", "Connected peers"),
            bytes_out: gauge(&r, "keel_p2p_sent_bytes", "Frame bytes sent to peers"),
            bytes_in: gauge(
                &r,
                "keel_p2p_received_bytes",
                "Frame bytes received from peers",
            ),
            p2p_dropped: gauge(
                &r,
                "keel_p2p_dropped_notifications",
                "Outbound notifications dropped (a peer's lane full in frames or bytes, or its \
                 connection lost)",
            ),
            p2p_bad_frames: gauge(
                &r,
                "keel_p2p_bad_frames",
                "Inbound frames refused (over the cap, undecodable, wrong lane, stalled)",
            ),
            p2p_stalled_frames: gauge(
                &r,
                "keel_p2p_stalled_frames",
                "Inbound frames whose bytes did not arrive within p2p.frame_timeout_ms",
            ),
            p2p_replaced_connections: gauge(
                &r,
                "keel_p2p_replaced_connections",
                "Connections closed because the same key connected again",
            ),
            p2p_queued_bytes: gauge(
                &r,
                "keel_p2p_queued_bytes",
                "Outbound frame bytes queued for peers",
            ),
            consensus_dropped: counter(
                &r,
                "keel_consensus_dropped_messages_total",
                "Inbound consensus messages dropped (queue full, cheap checks, failed verification)",
            ),
            acks_dropped: counter(
                &r,
                "keel_batches_acks_dropped_total",
                "Inbound batch acknowledgements dropped (batching queue full)",
            ),
            proofs_dropped: counter(
                &r,
                "keel_batches_proofs_dropped_total",
                "Peer proofs of availability dropped (invalid, or a full queue)",
            ),
            sync_active: gauge(&r, "keel_sync_active", "1 while range sync runs"),
            sync_target_height: gauge(
                &r,
                "keel_sync_target_height",
                "The committed height range sync is syncing to",
            ),
            sync_applied_blocks: counter(
                &r,
                "keel_sync_applied_blocks_total",
                "Committed blocks applied by range sync",
            ),
            sync_peers_dropped: counter(
                &r,
                "keel_sync_peers_dropped_total",
                "Peers dropped from a range or state sync for sending bad data",
            ),
            state_sync_buckets: gauge(
                &r,
                "keel_state_sync_buckets",
                "Buckets proven by the start-up state sync (256 when done)",
            ),
            state_sync_seconds: float_gauge(
                &r,
                "keel_state_sync_seconds",
                "Seconds the last start-up state sync took",
            ),
            disk_bytes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "keel_storage_disk_bytes",
                        "Bytes each RocksDB column family holds (live SST files and memtables)",
                    ),
                    &["column"],
                ),
            ),
            pruned_height: gauge(
                &r,
                "keel_pruned_height",
                "Highest pruned height (lowest retained height minus one)",
            ),
            pruner_lag: gauge(
                &r,
                "keel_pruner_lag_blocks",
                "Heights retention allows to prune that are not pruned yet",
            ),
            pruned_heights: counter(&r, "keel_pruned_heights_total", "Heights pruned"),
            pruned_batches: counter(&r, "keel_pruned_batches_total", "Batches pruned"),
            pruned_receipts: counter(&r, "keel_pruned_receipts_total", "Receipts pruned"),
            pruner_pass_seconds: histogram(
                &r,
                "keel_pruner_pass_seconds",
                "Time one pruning pass spends reading and deleting",
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
            ),
            pruner_compaction_seconds: histogram(
                &r,
                "keel_pruner_compaction_seconds",
                "Time one compaction of pruned data takes, flush included",
                vec![0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0],
            ),
            epoch: gauge(&r, "keel_epoch", "The current epoch"),
            committee_size: gauge(
                &r,
                "keel_committee_size",
                "Validators in the current committee",
            ),
            epoch_changes: counter(
                &r,
                "keel_epoch_changes_total",
                "Epoch changes this node carried out",
            ),
            wrong_epoch_messages: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "keel_consensus_wrong_epoch_messages_total",
                        "Consensus messages of another epoch: old (refused), future (held until the switch), future_dropped (the hold was full)",
                    ),
                    &["epoch"],
                ),
            ),
            checkpoints: CheckpointMetrics::new(&r),
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
