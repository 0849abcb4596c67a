//! The authority's parameters, one struct per node config section, each default written once.
//!
//! The node embeds these structs as TOML sections (`[batching]`, `[dissemination]`,
//! `[mempool]`, `[execution]`, `[checkpoints]`): every field may be left out (it takes the `DEFAULT_*` constant
//! below) and an unknown field is refused, so a typo does not silently fall back to a default.
//! Network-wide values (the chain id) are not configuration: they come from genesis and are
//! passed next to these structs.

use serde::{Deserialize, Serialize};

/// Default [`BatchConfig::max_transactions`].
pub const DEFAULT_BATCH_MAX_TRANSACTIONS: usize = 1_000;
/// Default [`BatchConfig::max_bytes`]: 1 MiB.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;
/// Default [`BatchConfig::seal_after_ms`]: short, since a transaction waits this long at most
/// before its batch travels.
pub const DEFAULT_BATCH_SEAL_AFTER_MS: u64 = 10;
/// Default [`BatchConfig::lifetime_ms`]: half of what validators accept
/// ([`keel_types::batch::MAX_BATCH_LIFETIME_MS`]), the rest is room for clock drift.
pub const DEFAULT_BATCH_LIFETIME_MS: u64 = 60_000;
/// Default [`BatchConfig::max_seal_after_ms`].
pub const DEFAULT_BATCH_MAX_SEAL_AFTER_MS: u64 = 40;
/// Default [`BatchConfig::grow_after_wait_ms`].
pub const DEFAULT_BATCH_GROW_AFTER_WAIT_MS: u64 = 100;
/// Default [`DisseminationConfig::max_stored_batches_per_author`].
pub const DEFAULT_MAX_STORED_BATCHES_PER_AUTHOR: usize = 4_096;
/// Default [`DisseminationConfig::max_stored_bytes_per_author`]: 256 MiB.
pub const DEFAULT_MAX_STORED_BYTES_PER_AUTHOR: u64 = 256 << 20;

/// Default [`DisseminationConfig::max_collecting`].
pub const DEFAULT_MAX_COLLECTING: usize = 256;
/// Default [`DisseminationConfig::max_queued_proofs`].
pub const DEFAULT_MAX_QUEUED_PROOFS: usize = 10_000;
/// Default [`DisseminationConfig::reoffer_after_ms`].
pub const DEFAULT_REOFFER_AFTER_MS: u64 = 3_000;
/// Default [`DisseminationConfig::verify_fallback_ms`].
pub const DEFAULT_VERIFY_FALLBACK_MS: u64 = 300;
/// Default [`DisseminationConfig::expire_after_ms`].
pub const DEFAULT_EXPIRE_AFTER_MS: u64 = 60_000;

/// Default [`MempoolConfig::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 200_000;
/// Default [`MempoolConfig::max_pending_per_sender`].
pub const DEFAULT_MAX_PENDING_PER_SENDER: usize = 64;
/// Default [`MempoolConfig::nonce_window`].
pub const DEFAULT_NONCE_WINDOW: u64 = 64;
/// Default [`MempoolConfig::max_lifetime_ms`]: ten minutes.
pub const DEFAULT_MAX_LIFETIME_MS: u64 = 10 * 60 * 1_000;

/// Default [`ExecutorConfig::workers`].
pub const DEFAULT_EXECUTION_WORKERS: usize = 2;
/// Default [`ExecutorConfig::cache_entries`].
pub const DEFAULT_CACHE_ENTRIES: usize = 1 << 20;

/// Default [`CheckpointConfig::interval`]: a checkpoint every 1,000 executed blocks.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 1_000;
/// Default [`CheckpointConfig::window`].
pub const DEFAULT_CHECKPOINT_WINDOW: u64 = 4;

/// When a batch is sealed (the node's `[batching]` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most transactions in a batch.
    pub max_transactions: usize,
    /// Most encoded transaction bytes in a batch.
    pub max_bytes: usize,
    /// Seal a non-empty batch once its oldest transaction has waited this long, in ms (while
    /// the pipeline keeps up; see `grow_after_wait_ms`).
    pub seal_after_ms: u64,
    /// The longest a batch waits to fill under load, in ms: batches grow with load, so the
    /// per-batch costs (acknowledgements, proofs, signature checks) are shared by more
    /// transactions when the committee is busy.
    pub max_seal_after_ms: u64,
    /// Batches start to wait longer once the oldest transaction this node admitted has waited
    /// this long for execution: one more ms of sealing time per 5 ms beyond it, up to
    /// `max_seal_after_ms`, in ms.
    pub grow_after_wait_ms: u64,
    /// A sealed batch expires this long after sealing, in ms: no block at or after that time
    /// orders it (at most [`keel_types::batch::MAX_BATCH_LIFETIME_MS`]).
    pub lifetime_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_transactions: DEFAULT_BATCH_MAX_TRANSACTIONS,
            max_bytes: DEFAULT_BATCH_MAX_BYTES,
            seal_after_ms: DEFAULT_BATCH_SEAL_AFTER_MS,
            max_seal_after_ms: DEFAULT_BATCH_MAX_SEAL_AFTER_MS,
            grow_after_wait_ms: DEFAULT_BATCH_GROW_AFTER_WAIT_MS,
            lifetime_ms: DEFAULT_BATCH_LIFETIME_MS,
        }
    }
}

/// Acknowledgement collection and the proof queue (the node's `[dissemination]` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisseminationConfig {
    /// Own batches awaiting acknowledgements at once.
    pub max_collecting: usize,
    /// Proofs queued for ordering at once.
    pub max_queued_proofs: usize,
    /// A proof seen in a proposal is offered again after this long without a commit, in ms.
    pub reoffer_after_ms: u64,
    /// Proofs (and batches awaiting acknowledgements) older than this are dropped, in ms.
    pub expire_after_ms: u64,
    /// Each author's batches this node stores before they are ordered or expire; a peer's
    /// batch beyond it is refused unverified (not stored, not acknowledged).
    pub max_stored_batches_per_author: usize,
    /// The same bound in encoded bytes.
    pub max_stored_bytes_per_author: u64,
    /// An own batch still without a proof this long after it was sealed is offered again to
    /// the validators that have not acknowledged it, which then verify it (see
    /// [`crate::designated_verifiers`]), in ms.
    pub verify_fallback_ms: u64,
    /// Every receiver verifies and acknowledges every batch on its first copy (the rule before
    /// designated verifiers; costs each validator the signature checks of every batch).
    pub all_verify: bool,
}

impl Default for DisseminationConfig {
    fn default() -> Self {
        DisseminationConfig {
            max_collecting: DEFAULT_MAX_COLLECTING,
            max_queued_proofs: DEFAULT_MAX_QUEUED_PROOFS,
            reoffer_after_ms: DEFAULT_REOFFER_AFTER_MS,
            expire_after_ms: DEFAULT_EXPIRE_AFTER_MS,
            max_stored_batches_per_author: DEFAULT_MAX_STORED_BATCHES_PER_AUTHOR,
            max_stored_bytes_per_author: DEFAULT_MAX_STORED_BYTES_PER_AUTHOR,
            verify_fallback_ms: DEFAULT_VERIFY_FALLBACK_MS,
            all_verify: false,
        }
    }
}

/// Admission limits (the node's `[mempool]` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Pending transactions in total.
    pub max_pending: usize,
    /// Pending transactions per sender.
    pub max_pending_per_sender: usize,
    /// How many nonces beyond the account's next one are buffered.
    pub nonce_window: u64,
    /// Longest lifetime (expiry minus now) accepted, in ms.
    pub max_lifetime_ms: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_sender: DEFAULT_MAX_PENDING_PER_SENDER,
            nonce_window: DEFAULT_NONCE_WINDOW,
            max_lifetime_ms: DEFAULT_MAX_LIFETIME_MS,
        }
    }
}

/// Execution parameters (the node's `[execution]` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Threads of the optimistic phase; 0 executes plainly in order.
    pub workers: usize,
    /// State values cached in memory in front of RocksDB (0: none).
    pub cache_entries: usize,
}

impl ExecutorConfig {
    /// `workers` optimistic workers and the default cache.
    pub fn with_workers(workers: usize) -> Self {
        ExecutorConfig {
            workers,
            ..ExecutorConfig::default()
        }
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            workers: DEFAULT_EXECUTION_WORKERS,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

/// Checkpoint building and certification (the node's `[checkpoints]` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Executed blocks between two checkpoints: a validator signs a checkpoint after executing
    /// every height that is a multiple of this (and at every epoch end). Must be positive and
    /// the same on every validator (a validator with another interval signs checkpoints no
    /// one else signs, and they never certify).
    pub interval: u64,
    /// Peer signatures are kept for checkpoint sequences within this many of this node's
    /// latest checkpoint, ahead or behind (at most one per validator per sequence); others
    /// are dropped, so at most `2 × window × committee size` signatures wait at once.
    pub window: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            window: DEFAULT_CHECKPOINT_WINDOW,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{
        DeserializeOwned, IntoDeserializer,
        value::{Error as ValueError, MapDeserializer},
    };

    /// Deserializes a section given as `field = number` pairs (what a TOML table holds).
    fn section<T: DeserializeOwned>(fields: &[(&'static str, u64)]) -> Result<T, ValueError> {
        let map = MapDeserializer::new(
            fields
                .iter()
                .map(|(k, v)| (k.into_deserializer(), v.into_deserializer())),
        );
        T::deserialize(map)
    }

    #[test]
    fn missing_fields_take_their_defaults_and_given_ones_are_kept() {
        let batch: BatchConfig = section(&[("seal_after_ms", 50)]).unwrap();
        assert_eq!(
            batch,
            BatchConfig {
                seal_after_ms: 50,
                ..BatchConfig::default()
            }
        );
        assert_eq!(
            section::<DisseminationConfig>(&[]).unwrap(),
            DisseminationConfig::default()
        );
        assert_eq!(
            section::<MempoolConfig>(&[("max_pending", 10)])
                .unwrap()
                .max_pending,
            10
        );
        assert_eq!(
            section::<CheckpointConfig>(&[("interval", 20)]).unwrap(),
            CheckpointConfig {
                interval: 20,
                window: DEFAULT_CHECKPOINT_WINDOW
            }
        );
        assert_eq!(
            section::<ExecutorConfig>(&[("workers", 0)]).unwrap(),
            ExecutorConfig {
                workers: 0,
                cache_entries: DEFAULT_CACHE_ENTRIES
            }
        );
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let err = section::<BatchConfig>(&[("seal_after", 50)]).unwrap_err();
        assert!(err.to_string().contains("seal_after"), "{err}");
        assert!(section::<MempoolConfig>(&[("chain_id", 7)]).is_err());
        assert!(section::<DisseminationConfig>(&[("batch", 1)]).is_err());
        assert!(section::<ExecutorConfig>(&[("threads", 1)]).is_err());
        assert!(section::<CheckpointConfig>(&[("checkpoint_interval", 1)]).is_err());
    }
}
