//! The store's tuning knobs, as a serde section the node embeds in its config file.
//!
//! Every field has a default, a [`DEFAULT_*`](DEFAULT_SYNC_COMMITS) constant that is the one
//! place it is written; a section may name any subset of the fields, and an unknown field is
//! an error rather than a silently ignored typo.

use serde::{Deserialize, Serialize};

/// Default of [`StoreConfig::sync_commits`]: no fsync per commit. A process crash loses
/// nothing (RocksDB's write-ahead log is written before a commit returns); a power loss may
/// lose the last commits, which the node re-executes from consensus.
pub const DEFAULT_SYNC_COMMITS: bool = false;
/// Default of [`StoreConfig::block_cache_bytes`]: 256 MiB.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 256 << 20;
/// Default of [`StoreConfig::background_jobs`]: two, one flush and one compaction at a time.
pub const DEFAULT_BACKGROUND_JOBS: i32 = 2;

/// Tuning knobs for the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// fsync every state commit (survives power loss, not just process crashes). Safety data
    /// written with [`crate::Store::put_synced`] is always synced, whatever this says.
    /// Default: [`DEFAULT_SYNC_COMMITS`].
    pub sync_commits: bool,
    /// Size of the shared block cache in bytes. Default: [`DEFAULT_BLOCK_CACHE_BYTES`].
    pub block_cache_bytes: usize,
    /// Background flush and compaction threads. Default: [`DEFAULT_BACKGROUND_JOBS`].
    pub background_jobs: i32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sync_commits: DEFAULT_SYNC_COMMITS,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            background_jobs: DEFAULT_BACKGROUND_JOBS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{
        IntoDeserializer,
        value::{Error as DeError, MapDeserializer},
    };

    fn from_pairs<V: IntoDeserializer<'static, DeError>>(
        pairs: Vec<(&'static str, V)>,
    ) -> Result<StoreConfig, DeError> {
        StoreConfig::deserialize(MapDeserializer::new(pairs.into_iter()))
    }

    #[test]
    fn an_empty_section_is_the_default() {
        let config = from_pairs::<bool>(vec![]).unwrap();
        assert_eq!(config, StoreConfig::default());
        assert!(!config.sync_commits);
        assert_eq!(config.block_cache_bytes, 256 << 20);
        assert_eq!(config.background_jobs, 2);
    }

    #[test]
    fn named_fields_override_only_themselves() {
        let config = from_pairs(vec![("sync_commits", true)]).unwrap();
        assert_eq!(
            config,
            StoreConfig {
                sync_commits: true,
                ..StoreConfig::default()
            }
        );
        let config = from_pairs(vec![("block_cache_bytes", 1024_u64)]).unwrap();
        assert_eq!(config.block_cache_bytes, 1024);
        assert_eq!(config.background_jobs, DEFAULT_BACKGROUND_JOBS);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = from_pairs(vec![("sync_commit", true)]).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `sync_commit`"),
            "{err}"
        );
    }

    #[test]
    fn serialises_every_field() {
        let config = StoreConfig {
            sync_commits: true,
            block_cache_bytes: 1 << 20,
            background_jobs: 4,
        };
        let back: StoreConfig = bcs::from_bytes(&bcs::to_bytes(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }
}
