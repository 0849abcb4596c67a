//! Configuration files: the validator config (TOML) and the genesis file (JSON), loaded once
//! and validated with errors that name the field at fault.

use anyhow::{Context, Result, bail};
use keel_types::{
    Address, ChainId, Committee, Digest, Epoch, KeyPair, PublicKey, Stake, ValidatorInfo,
};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

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
    /// TCP address of the admin API (keep it on loopback).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// File holding the admin API's bearer token.
    pub admin_token_file: PathBuf,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Threads of the async runtime (0: one per core).
    #[serde(default)]
    pub runtime_threads: usize,
    /// Admission limits.
    #[serde(default)]
    pub mempool: MempoolSection,
    /// Batch sealing.
    #[serde(default)]
    pub batching: BatchingSection,
    /// Consensus timing and block size.
    #[serde(default)]
    pub consensus: ConsensusSection,
    /// Execution.
    #[serde(default)]
    pub execution: ExecutionSection,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9101))
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// Filter in tracing `EnvFilter` syntax, e.g. `info,keel_p2p=debug`.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

fn default_log_format() -> String {
    "human".into()
}

fn default_log_filter() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            filter: default_log_filter(),
        }
    }
}

/// Admission limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolSection {
    /// Pending transactions in total; a full pool answers 429.
    pub max_pending: usize,
    /// Pending transactions per sender.
    pub max_pending_per_sender: usize,
    /// Nonces accepted ahead of an account's next nonce.
    pub nonce_window: u64,
    /// Longest transaction lifetime accepted (expiry minus now), in ms.
    pub max_lifetime_ms: u64,
}

impl Default for MempoolSection {
    fn default() -> Self {
        MempoolSection {
            max_pending: 200_000,
            max_pending_per_sender: 64,
            nonce_window: 64,
            max_lifetime_ms: 600_000,
        }
    }
}

/// Batch sealing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingSection {
    /// Most transactions per batch.
    pub max_transactions: usize,
    /// Most bytes per batch.
    pub max_bytes: usize,
    /// Seal a non-empty batch after this long.
    pub seal_after_ms: u64,
}

impl Default for BatchingSection {
    fn default() -> Self {
        BatchingSection {
            max_transactions: 1_000,
            max_bytes: 1 << 20,
            seal_after_ms: 20,
        }
    }
}

/// Consensus timing and block size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSection {
    /// Base round timeout.
    pub round_timeout_ms: u64,
    /// Most proofs of availability per block.
    pub max_block_proofs: usize,
    /// A leader waits this long after its parent block before proposing (paces empty rounds).
    pub min_block_interval_ms: u64,
}

impl Default for ConsensusSection {
    fn default() -> Self {
        ConsensusSection {
            round_timeout_ms: 1_000,
            max_block_proofs: 200,
            min_block_interval_ms: 20,
        }
    }
}

/// Execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionSection {
    /// Optimistic execution threads (0: plain sequential).
    pub workers: usize,
    /// State values cached in memory.
    pub cache_entries: usize,
}

impl Default for ExecutionSection {
    fn default() -> Self {
        ExecutionSection {
            workers: 2,
            cache_entries: 1 << 20,
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

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return Err(field_error(
                "log.format",
                format!("`{}` is not `human` or `json`", self.log.format),
            ));
        }
        if self.execution.workers > 64 {
            return Err(field_error("execution.workers", "at most 64"));
        }
        if self.runtime_threads > 256 {
            return Err(field_error("runtime_threads", "at most 256"));
        }
        if self.mempool.max_pending == 0 || self.mempool.max_pending_per_sender == 0 {
            return Err(field_error(
                "mempool.max_pending",
                "limits must be positive",
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
        if self.consensus.round_timeout_ms < 50 || self.consensus.round_timeout_ms > 600_000 {
            return Err(field_error(
                "consensus.round_timeout_ms",
                "must be 50..=600000",
            ));
        }
        if self.consensus.min_block_interval_ms >= self.consensus.round_timeout_ms {
            return Err(field_error(
                "consensus.min_block_interval_ms",
                "must be below consensus.round_timeout_ms",
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
        Ok(())
    }
}

/// One validator in the genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// A name for logs.
    pub name: String,
    /// Protocol public key (hex).
    pub protocol_key: String,
    /// Network public key (hex).
    pub network_key: String,
    /// Voting power.
    pub stake: u64,
    /// `host:port` of its QUIC endpoint.
    pub address: String,
}

/// An explicitly funded account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Address (hex).
    pub address: String,
    /// Balance.
    pub balance: u64,
}

/// Accounts funded from a seed: account `i`'s key is derived from `(seed, i)` (see
/// [`derived_account_key`]), so load generators can sign for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedAccounts {
    /// The seed phrase.
    pub seed: String,
    /// How many.
    pub count: u64,
    /// Balance of each.
    pub balance: u64,
}

/// The genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The network's chain id.
    pub chain_id: u64,
    /// The first epoch.
    pub epoch: u64,
    /// The committee.
    pub validators: Vec<GenesisValidator>,
    /// Funded accounts.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// Accounts funded from a seed.
    #[serde(default)]
    pub derived_accounts: Option<DerivedAccounts>,
}

/// Most accounts a genesis may derive.
pub const MAX_DERIVED_ACCOUNTS: u64 = 1_000_000;

/// The key of derived account `index`.
pub fn derived_account_key(seed: &str, index: u64) -> KeyPair {
    let mut hasher = blake3::Hasher::new_derive_key("keel derived genesis account v1");
    hasher.update(seed.as_bytes());
    hasher.update(&index.to_le_bytes());
    KeyPair::from_seed(hasher.finalize().as_bytes())
}

fn genesis_error(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("genesis field `{field}`: {reason}")
}

impl Genesis {
    /// Reads and checks a genesis file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read genesis file {}", path.display()))?;
        let genesis: Genesis = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("genesis file {}: {e}", path.display()))?;
        genesis.committee()?;
        genesis.funded()?;
        Ok(genesis)
    }

    /// The genesis id: the digest of its canonical encoding.
    pub fn digest(&self) -> Digest {
        Digest::of_tagged("keel/genesis", self)
    }

    /// The chain id.
    pub fn chain_id(&self) -> ChainId {
        ChainId(self.chain_id)
    }

    /// The first committee.
    pub fn committee(&self) -> Result<Committee> {
        if self.validators.is_empty() {
            return Err(genesis_error("validators", "empty"));
        }
        let validators = self
            .validators
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let protocol_key: PublicKey = v
                    .protocol_key
                    .parse()
                    .map_err(|e| genesis_error(format!("validators[{i}].protocol_key"), e))?;
                let network_key: PublicKey = v
                    .network_key
                    .parse()
                    .map_err(|e| genesis_error(format!("validators[{i}].network_key"), e))?;
                v.address.parse::<SocketAddr>().map_err(|e| {
                    genesis_error(
                        format!("validators[{i}].address"),
                        format!("`{}`: {e}", v.address),
                    )
                })?;
                Ok(ValidatorInfo {
                    protocol_key,
                    network_key,
                    stake: Stake(v.stake),
                    address: v.address.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Committee::new(Epoch(self.epoch), validators).map_err(|e| genesis_error("validators", e))
    }

    /// Every funded account with its balance.
    pub fn funded(&self) -> Result<Vec<(Address, u64)>> {
        let mut out = Vec::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let address: Address = a
                .address
                .parse()
                .map_err(|e| genesis_error(format!("accounts[{i}].address"), e))?;
            out.push((address, a.balance));
        }
        if let Some(d) = &self.derived_accounts {
            if d.count > MAX_DERIVED_ACCOUNTS {
                bail!(genesis_error(
                    "derived_accounts.count",
                    format!("{} is over the limit of {MAX_DERIVED_ACCOUNTS}", d.count)
                ));
            }
            for i in 0..d.count {
                let key = derived_account_key(&d.seed, i);
                out.push((Address::from_public_key(&key.public()), d.balance));
            }
        }
        Ok(out)
    }
}

/// Reads a key file: 64 hex characters (the ed25519 secret seed), optionally with a newline.
pub fn read_key(path: &Path) -> Result<KeyPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| {
        anyhow::anyhow!(
            "key file {}: expected 64 hex characters: {e}",
            path.display()
        )
    })?;
    Ok(KeyPair::from_seed(&seed))
}

/// Writes a key file readable only by its owner.
pub fn write_key(path: &Path, key: &KeyPair) -> Result<()> {
    write_private(path, &format!("{}\n", hex::encode(key.seed())))
}

/// Writes a file with mode 0600 (created that way, so it is never readable by others).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_localnet_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/localnet");
        for i in 0..4 {
            let config = NodeConfig::load(&dir.join(format!("validator-{i}.toml"))).unwrap();
            assert_eq!(config.p2p_listen.port(), 7100 + i);
            assert!(config.genesis.ends_with("generated/genesis.json"));
            assert!(config.genesis.is_absolute() || config.genesis.starts_with(&dir));
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
    fn genesis_errors_name_the_field() {
        let genesis = Genesis {
            chain_id: 1,
            epoch: 1,
            validators: vec![GenesisValidator {
                name: "a".into(),
                protocol_key: "zz".into(),
                network_key: "00".repeat(32),
                stake: 1,
                address: "127.0.0.1:1".into(),
            }],
            accounts: vec![],
            derived_accounts: None,
        };
        let err = genesis.committee().unwrap_err().to_string();
        assert!(err.contains("validators[0].protocol_key"), "{err}");
        let too_many = Genesis {
            derived_accounts: Some(DerivedAccounts {
                seed: "s".into(),
                count: MAX_DERIVED_ACCOUNTS + 1,
                balance: 1,
            }),
            ..genesis
        };
        let err = too_many.funded().unwrap_err().to_string();
        assert!(err.contains("derived_accounts.count"), "{err}");
    }
}
