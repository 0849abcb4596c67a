//! The validator config (TOML): loaded once, validated with errors that name the field at
//! fault. Each library's section is that library's own config struct (its defaults are the
//! library's `DEFAULT_*` constants, unknown fields are refused); `[limits]` holds the node's own
//! capacities. `keel config show` prints the effective config with every default filled in.

use crate::limits::LimitsConfig;
use anyhow::{Context, Result};
use keel_authority::{
    BatchConfig, CheckpointConfig, DisseminationConfig, ExecutorConfig, MempoolConfig,
};
use keel_consensus::CoreConfig;
use keel_p2p::{EndpointConfig, range_sync::RangeSyncConfig, state_sync::StateSyncConfig};
use keel_storage::{PruningConfig, StoreConfig};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Default of [`NodeConfig::admin_listen`].
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9101);
/// Default of [`LogConfig::format`].
pub const DEFAULT_LOG_FORMAT: &str = "human";
/// Default of [`LogConfig::filter`].
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Most optimistic execution threads a config may ask for.
pub const MAX_EXECUTION_WORKERS: usize = 64;
/// Most async runtime threads a config may ask for.
pub const MAX_RUNTIME_THREADS: usize = 256;
/// Shortest and longest base round timeout accepted, in ms.
pub const ROUND_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 50..=600_000;

/// One validator's configuration (`keel run --config FILE`). Relative paths are relative to
/// the config file's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The genesis file (JSON).
    pub genesis: PathBuf,
    /// The validator's protocol key file (signs votes, timeouts, blocks, acknowledgements).
    pub protocol_key: PathBuf,
    /// The validator's network key file (its QUIC/TLS identity).
    pub network_key: PathBuf,
    /// The data directory (RocksDB); one node per directory.
    pub data_dir: PathBuf,
    /// UDP address for QUIC peer traffic; must match this validator's address in genesis.
    pub p2p_listen: SocketAddr,
    /// TCP address of the public REST API.
    pub api_listen: SocketAddr,
    /// TCP address of the admin API. A non-loopback address is refused unless
    /// `admin_allow_remote` is set.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Serve the admin API on a non-loopback `admin_listen` (default false: refused). Only
    /// behind a network the operator controls; the node warns at start.
    #[serde(default)]
    pub admin_allow_remote: bool,
    /// File holding the admin API's bearer token.
    pub admin_token_file: PathBuf,
    /// Threads of the async runtime (0: one per core).
    #[serde(default)]
    pub runtime_threads: usize,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Admission limits (keel-authority).
    #[serde(default)]
    pub mempool: MempoolConfig,
    /// Batch sealing (keel-authority).
    #[serde(default)]
    pub batching: BatchConfig,
    /// Acknowledgements, proofs and their expiry (keel-authority).
    #[serde(default)]
    pub dissemination: DisseminationConfig,
    /// Consensus timing, windows and block size (keel-consensus).
    #[serde(default)]
    pub consensus: CoreConfig,
    /// Execution (keel-authority).
    #[serde(default)]
    pub execution: ExecutorConfig,
    /// Checkpoint interval and signature window (keel-authority).
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
    /// RocksDB (keel-storage).
    #[serde(default)]
    pub storage: StoreConfig,
    /// QUIC transport (keel-p2p); its listen address is `p2p_listen`.
    #[serde(default)]
    pub p2p: EndpointConfig,
    /// Committed-range sync (keel-p2p).
    #[serde(default)]
    pub sync: RangeSyncConfig,
    /// Checkpoint state sync at start-up (keel-p2p).
    #[serde(default)]
    pub state_sync: StateSyncConfig,
    /// The node's queues, buffers and intervals.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How much committed history is kept (keel-storage's retention planner).
    #[serde(default)]
    pub pruning: PruningConfig,
}

fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// Filter in tracing `EnvFilter` syntax, e.g. `info,keel_p2p=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: DEFAULT_LOG_FORMAT.into(),
            filter: DEFAULT_LOG_FILTER.into(),
        }
    }
}

fn field_error(field: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("config field `{field}`: {reason}")
}

impl NodeConfig {
    /// Reads and validates a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.genesis,
            &mut config.protocol_key,
            &mut config.network_key,
            &mut config.data_dir,
            &mut config.admin_token_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The effective config as TOML, every default filled in.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("cannot encode the config")
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<()> {
        if !self.admin_listen.ip().is_loopback() && !self.admin_allow_remote {
            return Err(field_error(
                "admin_listen",
                format!(
                    "{} is not a loopback address: the admin API stays on loopback unless \
                     `admin_allow_remote = true`",
                    self.admin_listen
                ),
            ));
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return Err(field_error(
                "log.format",
                format!("`{}` is not `human` or `json`", self.log.format),
            ));
        }
        if self.execution.workers > MAX_EXECUTION_WORKERS {
            return Err(field_error(
                "execution.workers",
                format!("at most {MAX_EXECUTION_WORKERS}"),
            ));
        }
        if self.runtime_threads > MAX_RUNTIME_THREADS {
            return Err(field_error(
                "runtime_threads",
                format!("at most {MAX_RUNTIME_THREADS}"),
            ));
        }
        self.p2p
            .validate()
            .map_err(|e| anyhow::anyhow!("config field {e}"))?;
        if self.checkpoints.interval == 0 {
            return Err(field_error("checkpoints.interval", "must be positive"));
        }
        if self.mempool.max_pending == 0 {
            return Err(field_error("mempool.max_pending", "must be positive"));
        }
        if self.mempool.max_pending_per_sender == 0 {
            return Err(field_error(
                "mempool.max_pending_per_sender",
                "must be positive",
            ));
        }
        if self.batching.max_transactions == 0
            || self.batching.max_transactions > keel_types::batch::MAX_BATCH_TRANSACTIONS
        {
            return Err(field_error(
                "batching.max_transactions",
                format!("must be 1..={}", keel_types::batch::MAX_BATCH_TRANSACTIONS),
            ));
        }
        if self.batching.max_bytes == 0
            || self.batching.max_bytes > keel_types::batch::MAX_BATCH_BYTES / 2
        {
            return Err(field_error(
                "batching.max_bytes",
                format!("must be 1..={}", keel_types::batch::MAX_BATCH_BYTES / 2),
            ));
        }
        // Half the lifetime validators accept: the rest is room for clock drift.
        let most = keel_types::batch::MAX_BATCH_LIFETIME_MS / 2;
        if !(1..=most).contains(&self.batching.lifetime_ms) {
            return Err(field_error(
                "batching.lifetime_ms",
                format!("must be 1..={most}"),
            ));
        }
        let timeout = self.consensus.pacemaker.base_timeout_ms;
        if !ROUND_TIMEOUT_RANGE_MS.contains(&timeout) {
            return Err(field_error(
                "consensus.pacemaker.base_timeout_ms",
                format!(
                    "must be {}..={}",
                    ROUND_TIMEOUT_RANGE_MS.start(),
                    ROUND_TIMEOUT_RANGE_MS.end()
                ),
            ));
        }
        if self.consensus.min_block_interval_ms >= timeout {
            return Err(field_error(
                "consensus.min_block_interval_ms",
                "must be below consensus.pacemaker.base_timeout_ms",
            ));
        }
        if self.consensus.max_block_proofs == 0
            || self.consensus.max_block_proofs > keel_types::consensus::MAX_BLOCK_PAYLOAD
        {
            return Err(field_error(
                "consensus.max_block_proofs",
                format!("must be 1..={}", keel_types::consensus::MAX_BLOCK_PAYLOAD),
            ));
        }
        if let Err(keel_consensus::Error::Config { field, reason }) = self.consensus.validate() {
            return Err(field_error(&format!("consensus.{field}"), reason));
        }
        if self.dissemination.max_queued_proofs == 0 || self.dissemination.max_collecting == 0 {
            return Err(field_error(
                "dissemination.max_queued_proofs",
                "queue sizes must be positive",
            ));
        }
        if self.dissemination.verify_fallback_ms == 0 {
            return Err(field_error(
                "dissemination.verify_fallback_ms",
                "must be at least 1 ms (0 would send every batch twice)",
            ));
        }
        if self.dissemination.max_stored_batches_per_author == 0 {
            return Err(field_error(
                "dissemination.max_stored_batches_per_author",
                "must be positive",
            ));
        }
        let batch = keel_types::batch::MAX_BATCH_BYTES as u64;
        if self.dissemination.max_stored_bytes_per_author < batch {
            return Err(field_error(
                "dissemination.max_stored_bytes_per_author",
                format!("must hold at least one full batch ({batch} bytes)"),
            ));
        }
        self.sync
            .validate()
            .map_err(|(field, reason)| field_error(&format!("sync.{field}"), reason))?;
        self.state_sync
            .validate()
            .map_err(|(field, reason)| field_error(&format!("state_sync.{field}"), reason))?;
        self.limits
            .check()
            .map_err(|(field, reason)| field_error(&format!("limits.{field}"), reason))?;
        crate::prune::check_config(&self.pruning, self.consensus.min_block_interval_ms)
            .map_err(|(field, reason)| field_error(&format!("pruning.{field}"), reason))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented config with one `name = value` line's value replaced by `value`.
    fn documented_with(line: usize, value: &str) -> String {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/localnet/validator-0.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let assignments: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('#') && l.contains(" = "))
            .map(|(i, _)| i)
            .collect();
        let target = assignments[line % assignments.len()];
        text.lines()
            .enumerate()
            .map(|(i, l)| match l.split_once(" = ") {
                Some((name, _)) if i == target => format!("{name} = {value}"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    mod untrusted {
        use super::{documented_with, load_str};
        use proptest::prelude::*;

        proptest! {
            /// An operator's config file is untrusted input: whatever value any field holds,
            /// and wherever the file is cut, loading answers Ok or an error, never a panic,
            /// and an error names the config.
            #[test]
            fn any_value_in_any_field_loads_or_is_refused_by_name(
                line in 0usize..200,
                value in prop_oneof![
                    any::<u64>().prop_map(|v| v.to_string()),
                    any::<i64>().prop_map(|v| v.to_string()),
                    Just("0".to_string()),
                    Just("18446744073709551616".to_string()),
                    "[ -~]{0,24}".prop_map(|s| format!("\"{}\"", s.replace(['"', '\\'], ""))),
                    "[ -~]{0,24}",
                ],
                cut in any::<prop::sample::Index>(),
            ) {
                let text = documented_with(line, &value);
                if let Err(e) = load_str(&text) {
                    let message = format!("{e:#}");
                    prop_assert!(message.contains("config"), "{}", message);
                }
                let chars = text.chars().count().max(1);
                let cut = text.char_indices().nth(cut.index(chars)).map_or(0, |(i, _)| i);
                let _ = load_str(&text[..cut]);
            }
        }
    }

    #[test]
    fn the_documented_localnet_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/localnet");
        for i in 0..4 {
            let config = NodeConfig::load(&dir.join(format!("validator-{i}.toml"))).unwrap();
            assert_eq!(config.p2p_listen.port(), 7100 + i);
            assert!(config.genesis.ends_with("generated/genesis.json"));
            assert!(config.genesis.is_absolute() || config.genesis.starts_with(&dir));
            // The documented values are the defaults: the file cannot drift from the code.
            let sections = |c: &NodeConfig| {
                [
                    toml::to_string(&c.mempool).unwrap(),
                    toml::to_string(&c.batching).unwrap(),
                    toml::to_string(&c.dissemination).unwrap(),
                    toml::to_string(&c.consensus).unwrap(),
                    toml::to_string(&c.execution).unwrap(),
                    toml::to_string(&c.checkpoints).unwrap(),
                    toml::to_string(&c.storage).unwrap(),
                    toml::to_string(&c.p2p).unwrap(),
                    toml::to_string(&c.sync).unwrap(),
                    toml::to_string(&c.state_sync).unwrap(),
                    toml::to_string(&c.limits).unwrap(),
                    toml::to_string(&c.pruning).unwrap(),
                ]
            };
            let defaults = load_str(MINIMAL).unwrap();
            assert_eq!(sections(&config), sections(&defaults), "validator-{i}.toml");
        }
    }

    fn load_str(text: &str) -> anyhow::Result<NodeConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(&path)
    }

    const MINIMAL: &str = r#"
genesis = "g.json"
protocol_key = "p.key"
network_key = "n.key"
data_dir = "data"
p2p_listen = "127.0.0.1:1"
api_listen = "127.0.0.1:2"
admin_token_file = "t"
"#;

    #[test]
    fn a_remote_admin_listener_needs_the_explicit_setting() {
        let remote = format!("{MINIMAL}admin_listen = \"0.0.0.0:9\"\n");
        let err = format!("{:#}", load_str(&remote).unwrap_err());
        assert!(err.contains("admin_allow_remote"), "{err}");
        let allowed = format!("{remote}admin_allow_remote = true\n");
        assert!(load_str(&allowed).unwrap().admin_allow_remote);
    }

    #[test]
    fn config_errors_name_the_field() {
        assert!(load_str(MINIMAL).is_ok());
        let cases = [
            ("p2p_listen = \"nowhere\"", "p2p_listen"),
            ("[execution]\nworkers = 1000", "execution.workers"),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[consensus]\nmin_block_interval_ms = 5000",
                "consensus.min_block_interval_ms",
            ),
            (
                "[batching]\nmax_transactions = 0",
                "batching.max_transactions",
            ),
            ("unknown_field = 1", "unknown_field"),
            ("[limits]\nconsensus_queue = 0", "limits.consensus_queue"),
            ("[sync]\nchunk_blocks = 0", "sync.chunk_blocks"),
            ("[state_sync]\nchunk_bytes = 0", "state_sync.chunk_bytes"),
            ("[sync]\ndone_margin = 100", "sync.done_margin"),
            ("[pruning]\nkeep_blocks = 10", "pruning.keep_blocks"),
            ("[pruning]\nkeep_block = 1000", "keep_block"),
            (
                "[pruning]\ninterval_ms = 60000\nmax_heights_per_pass = 100",
                "pruning.max_heights_per_pass",
            ),
            ("[checkpoints]\ninterval = 0", "checkpoints.interval"),
            ("admin_listen = \"0.0.0.0:9\"", "admin_listen"),
            ("[consensus]\nunknown = 1", "unknown"),
            (
                "[consensus.pacemaker]\nbase_timeout_ms = 1",
                "consensus.pacemaker.base_timeout_ms",
            ),
        ];
        for (extra, field) in cases {
            let text = if extra.starts_with("p2p_listen") {
                MINIMAL.replace("p2p_listen = \"127.0.0.1:1\"", extra)
            } else {
                format!("{MINIMAL}\n{extra}\n")
            };
            let err = format!("{:#}", load_str(&text).unwrap_err());
            assert!(
                err.contains(field),
                "`{extra}`: error does not name {field}: {err}"
            );
        }
    }

    #[test]
    fn the_effective_config_round_trips_with_library_defaults() {
        let config = load_str(MINIMAL).unwrap();
        assert_eq!(
            config.batching.max_transactions,
            keel_authority::config::DEFAULT_BATCH_MAX_TRANSACTIONS
        );
        assert_eq!(
            config.consensus.max_block_proofs,
            keel_consensus::DEFAULT_MAX_BLOCK_PROOFS
        );
        assert_eq!(config.limits, LimitsConfig::default());
        let shown = config.to_toml().unwrap();
        let again: NodeConfig = toml::from_str(&shown).unwrap();
        assert_eq!(again.to_toml().unwrap(), shown);
        assert!(
            shown.contains("[limits]") && shown.contains("[consensus.pacemaker]"),
            "{shown}"
        );
        assert_eq!(config.pruning, PruningConfig::default());
        assert!(
            shown.contains("[pruning]\nenabled = true\nkeep_blocks = 100000\n"),
            "{shown}"
        );
    }
}
