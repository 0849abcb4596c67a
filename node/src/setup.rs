//! `keel keygen` and `keel genesis`: key files, the genesis file and one config per validator.

use crate::{
    config::NodeConfig,
    genesis::{
        DerivedAccounts, Genesis, GenesisAccount, GenesisValidator, read_key, write_key,
        write_private,
    },
};
use anyhow::{Context, Result, bail};
use keel_types::KeyPair;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Key file names inside a key directory.
pub const PROTOCOL_KEY_FILE: &str = "protocol.key";
/// See [`PROTOCOL_KEY_FILE`].
pub const NETWORK_KEY_FILE: &str = "network.key";

/// Generates a validator's protocol and network keys into `dir` (mode 0600); refuses to
/// overwrite existing keys.
pub fn keygen(dir: &Path) -> Result<(KeyPair, KeyPair)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rng = rand::rngs::OsRng;
    let protocol = KeyPair::generate(&mut rng);
    let network = KeyPair::generate(&mut rng);
    for (name, key) in [(PROTOCOL_KEY_FILE, &protocol), (NETWORK_KEY_FILE, &network)] {
        let path = dir.join(name);
        if path.exists() {
            bail!("{} exists; refusing to overwrite a key", path.display());
        }
        write_key(&path, key)?;
    }
    Ok((protocol, network))
}

/// One validator for `keel genesis`: `NAME=KEYDIR@HOST:PORT[/STAKE]`.
#[derive(Debug, Clone)]
pub struct ValidatorSpec {
    /// Name (also the config file's name).
    pub name: String,
    /// Directory holding its key files.
    pub key_dir: PathBuf,
    /// Its QUIC address.
    pub p2p: SocketAddr,
    /// Its stake.
    pub stake: u64,
}

impl std::str::FromStr for ValidatorSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("`{s}`: expected NAME=KEYDIR@HOST:PORT[/STAKE]");
        let (name, rest) = s.split_once('=').ok_or_else(usage)?;
        let (key_dir, rest) = rest.rsplit_once('@').ok_or_else(usage)?;
        let (address, stake) = match rest.split_once('/') {
            Some((a, stake)) => (
                a,
                stake
                    .parse()
                    .map_err(|e| format!("`{s}`: stake `{stake}`: {e}"))?,
            ),
            None => (rest, 1),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "`{s}`: the name must be letters, digits and dashes"
            ));
        }
        Ok(ValidatorSpec {
            name: name.into(),
            key_dir: key_dir.into(),
            p2p: address
                .parse()
                .map_err(|e| format!("`{s}`: address `{address}`: {e}"))?,
            stake,
        })
    }
}

/// What `keel genesis` writes.
#[derive(Debug, Clone)]
pub struct GenesisSpec {
    /// The chain id.
    pub chain_id: u64,
    /// The validators.
    pub validators: Vec<ValidatorSpec>,
    /// Explicit accounts `ADDRESS:BALANCE`.
    pub accounts: Vec<GenesisAccount>,
    /// Seed-derived accounts.
    pub derived: Option<DerivedAccounts>,
    /// The fees.
    pub fees: keel_types::FeeSchedule,
    /// Port offset of each validator's public API from its p2p port.
    pub api_port_offset: u16,
    /// Port offset of each validator's admin API from its p2p port.
    pub admin_port_offset: u16,
}

fn port(addr: SocketAddr, offset: u16) -> Result<SocketAddr> {
    let p = addr
        .port()
        .checked_add(offset)
        .context("port offset overflows")?;
    Ok(SocketAddr::new(addr.ip(), p))
}

/// Writes `out/genesis.json`, and for each validator `out/NAME.toml` and `out/NAME.token`
/// (its admin token, mode 0600). Returns the config paths.
pub fn genesis(spec: &GenesisSpec, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    let mut validators = Vec::new();
    for v in &spec.validators {
        let protocol = read_key(&v.key_dir.join(PROTOCOL_KEY_FILE))?;
        let network = read_key(&v.key_dir.join(NETWORK_KEY_FILE))?;
        validators.push(GenesisValidator {
            name: v.name.clone(),
            protocol_key: protocol.public().to_string(),
            network_key: network.public().to_string(),
            stake: v.stake,
            address: v.p2p.to_string(),
        });
    }
    let genesis = Genesis {
        chain_id: spec.chain_id,
        epoch: 1,
        validators,
        accounts: spec.accounts.clone(),
        derived_accounts: spec.derived.clone(),
        epochs: Default::default(),
        fees: spec.fees,
    };
    genesis.committee()?;
    genesis.funded()?;
    let genesis_path = out.join("genesis.json");
    std::fs::write(&genesis_path, serde_json::to_string_pretty(&genesis)?)
        .with_context(|| format!("cannot write {}", genesis_path.display()))?;
    let mut configs = Vec::new();
    for v in &spec.validators {
        let key_dir = v
            .key_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", v.key_dir.display()))?;
        let token_path = out.join(format!("{}.token", v.name));
        let token = hex::encode(rand::random::<[u8; 24]>());
        write_private(&token_path, &format!("{token}\n"))?;
        let config = NodeConfig {
            genesis: genesis_path.clone(),
            protocol_key: key_dir.join(PROTOCOL_KEY_FILE),
            network_key: key_dir.join(NETWORK_KEY_FILE),
            data_dir: out.join(format!("{}-data", v.name)),
            p2p_listen: v.p2p,
            api_listen: port(v.p2p, spec.api_port_offset)?,
            admin_listen: SocketAddr::new(
                [127, 0, 0, 1].into(),
                port(v.p2p, spec.admin_port_offset)?.port(),
            ),
            admin_allow_remote: false,
            admin_token_file: token_path,
            runtime_threads: 0,
            log: Default::default(),
            mempool: Default::default(),
            batching: Default::default(),
            dissemination: Default::default(),
            consensus: Default::default(),
            execution: Default::default(),
            checkpoints: Default::default(),
            storage: Default::default(),
            p2p: Default::default(),
            sync: Default::default(),
            state_sync: Default::default(),
            limits: Default::default(),
            pruning: Default::default(),
        };
        config.validate()?;
        let path = out.join(format!("{}.toml", v.name));
        let text = format!(
            "# Keel validator `{}` (generated by `keel genesis`; every field is documented in\n\
             # configs/localnet/validator-0.toml).\n{}",
            v.name,
            toml::to_string_pretty(&config)?
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        configs.push(path);
    }
    Ok(configs)
}
