//! `keel keygen` and `keel genesis`: key files, the genesis file and one config per validator.

use crate::{
    config::NodeConfig,
    genesis::{
        DerivedAccounts, Genesis, GenesisAccount, GenesisValidator, read_key, write_key,
        write_private,
    },
};
use anyhow::{Context, Result, bail};
use keel_p2p::PeerAddress;
use keel_types::{KeyPair, PublicKey};
use serde::{Deserialize, Serialize};
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

/// Key file names inside a key directory.
pub const PROTOCOL_KEY_FILE: &str = "protocol.key";
/// See [`PROTOCOL_KEY_FILE`].
pub const NETWORK_KEY_FILE: &str = "network.key";

/// The public halves of a key directory's keys, written by [`keygen`] beside them: what an
/// operator sends to whoever writes the genesis, while the private keys stay on the host.
pub const PUBLIC_KEYS_FILE: &str = "public.json";

/// The content of [`PUBLIC_KEYS_FILE`] (keys in hex, as genesis and the CLI print them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeys {
    /// The protocol (consensus) key.
    pub protocol_key: String,
    /// The network (QUIC identity) key.
    pub network_key: String,
}

impl PublicKeys {
    fn of(protocol: PublicKey, network: PublicKey) -> Self {
        PublicKeys {
            protocol_key: protocol.to_string(),
            network_key: network.to_string(),
        }
    }
}

/// Generates a validator's protocol and network keys into `dir` (mode 0600) with their
/// [`PUBLIC_KEYS_FILE`]; refuses to overwrite existing keys.
pub fn keygen(dir: &Path) -> Result<(KeyPair, KeyPair)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rng = rand::rngs::OsRng;
    let protocol = KeyPair::generate(&mut rng);
    let network = KeyPair::generate(&mut rng);
    for name in [PROTOCOL_KEY_FILE, NETWORK_KEY_FILE, PUBLIC_KEYS_FILE] {
        let path = dir.join(name);
        if path.exists() {
            bail!("{} exists; refusing to overwrite a key", path.display());
        }
    }
    write_key(&dir.join(PROTOCOL_KEY_FILE), &protocol)?;
    write_key(&dir.join(NETWORK_KEY_FILE), &network)?;
    write_public(dir, &PublicKeys::of(protocol.public(), network.public()))?;
    Ok((protocol, network))
}

/// Writes `dir`'s [`PUBLIC_KEYS_FILE`] from the keys already there (`keel keygen
/// --export-public`). Returns its path.
pub fn export_public(dir: &Path) -> Result<PathBuf> {
    let protocol = read_key(&dir.join(PROTOCOL_KEY_FILE))?;
    let network = read_key(&dir.join(NETWORK_KEY_FILE))?;
    write_public(dir, &PublicKeys::of(protocol.public(), network.public()))
}

fn write_public(dir: &Path, keys: &PublicKeys) -> Result<PathBuf> {
    let path = dir.join(PUBLIC_KEYS_FILE);
    write_file(&path, &(serde_json::to_string_pretty(keys)? + "\n"))?;
    Ok(path)
}

/// A key directory's public keys: from its private key files when they are there, else from
/// its [`PUBLIC_KEYS_FILE`]. Says whether the private keys are there.
pub fn public_keys(key_dir: &Path) -> Result<(PublicKeys, bool)> {
    let protocol = key_dir.join(PROTOCOL_KEY_FILE);
    if protocol.exists() {
        let keys = PublicKeys::of(
            read_key(&protocol)?.public(),
            read_key(&key_dir.join(NETWORK_KEY_FILE))?.public(),
        );
        return Ok((keys, true));
    }
    let path = key_dir.join(PUBLIC_KEYS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} has neither {PROTOCOL_KEY_FILE} nor a readable {PUBLIC_KEYS_FILE}",
            key_dir.display()
        )
    })?;
    let keys: PublicKeys =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    for (field, key) in [
        ("protocol_key", &keys.protocol_key),
        ("network_key", &keys.network_key),
    ] {
        key.parse::<PublicKey>()
            .map_err(|e| anyhow::anyhow!("{} field `{field}`: {e}", path.display()))?;
    }
    Ok((keys, false))
}

/// One validator for `keel genesis`: `NAME=KEYDIR@HOST:PORT[/STAKE]`. `HOST` is an IP address
/// (the node binds it) or a host name (peers look it up at each dial; the node binds all
/// interfaces on the port).
#[derive(Debug, Clone)]
pub struct ValidatorSpec {
    /// Name (also the config file's name).
    pub name: String,
    /// Directory holding its key files.
    pub key_dir: PathBuf,
    /// Its QUIC address, as peers dial it.
    pub p2p: PeerAddress,
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
            p2p: address.parse().map_err(|e| format!("`{s}`: address {e}"))?,
            stake,
        })
    }
}

/// Where each validator's files will sit on its own host (`keel genesis --node-dir`):
/// templates in which `{name}` stands for the validator's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    /// The directory holding `keel.toml`, `genesis.json`, `admin.token` and `keys/`.
    pub node_dir: String,
    /// The data directory (default: `NODE_DIR/data`).
    pub data_dir: Option<String>,
}

/// The config file's name inside a node directory.
pub const NODE_CONFIG_FILE: &str = "keel.toml";
/// The admin token's file name inside a node directory.
pub const NODE_TOKEN_FILE: &str = "admin.token";
/// The key directory's name inside a node directory.
pub const NODE_KEYS_DIR: &str = "keys";

impl NodeLayout {
    fn expand(template: &str, name: &str, what: &str) -> Result<PathBuf> {
        let path = PathBuf::from(template.replace("{name}", name));
        if !path.is_absolute() {
            bail!(
                "{what} `{template}` must be an absolute path (it is read on the validator's host)"
            );
        }
        Ok(path)
    }

    /// The node directory of validator `name`.
    pub fn node_dir(&self, name: &str) -> Result<PathBuf> {
        Self::expand(&self.node_dir, name, "--node-dir")
    }

    /// The data directory of validator `name`.
    pub fn data_dir(&self, name: &str) -> Result<PathBuf> {
        match &self.data_dir {
            Some(t) => Self::expand(t, name, "--data-dir"),
            None => Ok(self.node_dir(name)?.join("data")),
        }
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
    /// Per-validator directories for several hosts; `None`: configs for this host.
    pub layout: Option<NodeLayout>,
}

/// The address to bind for a validator dialled at `address`, `offset` ports up: an IP address
/// as given, a host name as all interfaces.
fn listen(address: &PeerAddress, offset: u16) -> Result<SocketAddr> {
    let (ip, port) = match address {
        PeerAddress::Socket(a) => (a.ip(), a.port()),
        PeerAddress::Name { port, .. } => (Ipv4Addr::UNSPECIFIED.into(), *port),
    };
    let port = port.checked_add(offset).with_context(|| {
        format!("port {port} + offset {offset} of validator address {address} overflows")
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The files of one validator's config.
struct ConfigPaths {
    genesis: PathBuf,
    key_dir: PathBuf,
    token: PathBuf,
    data: PathBuf,
}

/// Writes `out/genesis.json` and each validator's config with a fresh admin token (mode 0600):
/// - without a layout, `out/NAME.toml` and `out/NAME.token`, naming the files where they are;
/// - with one, a directory `out/NAME/` to copy to the validator's node directory: `keel.toml`
///   (naming files under the node directory), `genesis.json`, `admin.token`, and `keys/` when
///   the key directory holds the private keys (otherwise they are expected there already).
///
/// Returns the config paths.
pub fn genesis(spec: &GenesisSpec, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    let mut validators = Vec::new();
    let mut private = Vec::new();
    for v in &spec.validators {
        let (keys, has_private) = public_keys(&v.key_dir)?;
        private.push(has_private);
        validators.push(GenesisValidator {
            name: v.name.clone(),
            protocol_key: keys.protocol_key,
            network_key: keys.network_key,
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
    let deriving = spec
        .derived
        .as_ref()
        .map(|d| crate::progress::bar(d.count, "genesis", "deriving accounts"));
    genesis.funded_with(|done| {
        if let Some(bar) = &deriving {
            bar.set_position(done);
        }
    })?;
    if let Some(bar) = deriving {
        bar.finish_and_clear();
    }
    let genesis_text = serde_json::to_string_pretty(&genesis)?;
    let genesis_path = out.join("genesis.json");
    write_file(&genesis_path, &genesis_text)?;
    let mut configs = Vec::new();
    for (v, has_private) in spec.validators.iter().zip(private) {
        let token = format!("{}\n", hex::encode(rand::random::<[u8; 24]>()));
        let (paths, config_path) = match &spec.layout {
            None => {
                let token_path = out.join(format!("{}.token", v.name));
                write_private(&token_path, &token)?;
                let paths = ConfigPaths {
                    genesis: genesis_path.clone(),
                    key_dir: v
                        .key_dir
                        .canonicalize()
                        .with_context(|| format!("cannot resolve {}", v.key_dir.display()))?,
                    token: token_path,
                    data: out.join(format!("{}-data", v.name)),
                };
                (paths, out.join(format!("{}.toml", v.name)))
            }
            Some(layout) => {
                let bundle = out.join(&v.name);
                std::fs::create_dir_all(&bundle)
                    .with_context(|| format!("cannot create {}", bundle.display()))?;
                write_file(&bundle.join("genesis.json"), &genesis_text)?;
                write_private(&bundle.join(NODE_TOKEN_FILE), &token)?;
                if has_private {
                    let keys = bundle.join(NODE_KEYS_DIR);
                    std::fs::create_dir_all(&keys)
                        .with_context(|| format!("cannot create {}", keys.display()))?;
                    for file in [PROTOCOL_KEY_FILE, NETWORK_KEY_FILE] {
                        write_key(&keys.join(file), &read_key(&v.key_dir.join(file))?)?;
                    }
                }
                let node_dir = layout.node_dir(&v.name)?;
                let paths = ConfigPaths {
                    genesis: node_dir.join("genesis.json"),
                    key_dir: node_dir.join(NODE_KEYS_DIR),
                    token: node_dir.join(NODE_TOKEN_FILE),
                    data: layout.data_dir(&v.name)?,
                };
                (paths, bundle.join(NODE_CONFIG_FILE))
            }
        };
        let config = NodeConfig {
            genesis: paths.genesis,
            protocol_key: paths.key_dir.join(PROTOCOL_KEY_FILE),
            network_key: paths.key_dir.join(NETWORK_KEY_FILE),
            data_dir: paths.data,
            p2p_listen: listen(&v.p2p, 0)?,
            api_listen: listen(&v.p2p, spec.api_port_offset)?,
            admin_listen: SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                listen(&v.p2p, spec.admin_port_offset)?.port(),
            ),
            admin_allow_remote: false,
            admin_token_file: paths.token,
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
        let text = format!(
            "# Keel validator `{}` (generated by `keel genesis`; every field is documented in\n\
             # configs/localnet/validator-0.toml).\n{}",
            v.name,
            toml::to_string_pretty(&config)?
        );
        write_file(&config_path, &text)?;
        configs.push(config_path);
    }
    Ok(configs)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, layout: Option<NodeLayout>, private: bool) -> GenesisSpec {
        let validators = (0..4)
            .map(|i| {
                let key_dir = dir.join(format!("keys-{i}"));
                keygen(&key_dir).unwrap();
                if !private {
                    // What a coordinator receives from each host: the public keys only.
                    std::fs::remove_file(key_dir.join(PROTOCOL_KEY_FILE)).unwrap();
                    std::fs::remove_file(key_dir.join(NETWORK_KEY_FILE)).unwrap();
                }
                format!("keel-{i}={}@keel-{i}.example:7000", key_dir.display())
                    .parse()
                    .unwrap()
            })
            .collect();
        GenesisSpec {
            chain_id: 9,
            validators,
            accounts: vec![],
            derived: Some(DerivedAccounts {
                seed: "s".into(),
                count: 2,
                balance: 10,
            }),
            fees: Default::default(),
            api_port_offset: 100,
            admin_port_offset: 200,
            layout,
        }
    }

    #[test]
    fn host_names_and_a_node_layout_give_one_directory_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let layout = NodeLayout {
            node_dir: "/etc/keel".into(),
            data_dir: Some("/var/lib/keel/{name}".into()),
        };
        let out = dir.path().join("out");
        let configs = genesis(&spec(dir.path(), Some(layout), true), &out).unwrap();
        assert_eq!(configs.len(), 4);
        let config = NodeConfig::load(&out.join("keel-2").join(NODE_CONFIG_FILE)).unwrap();
        assert_eq!(config.genesis, Path::new("/etc/keel/genesis.json"));
        assert_eq!(
            config.protocol_key,
            Path::new("/etc/keel/keys/protocol.key")
        );
        assert_eq!(config.admin_token_file, Path::new("/etc/keel/admin.token"));
        assert_eq!(config.data_dir, Path::new("/var/lib/keel/keel-2"));
        assert_eq!(config.p2p_listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(config.api_listen, "0.0.0.0:7100".parse().unwrap());
        assert_eq!(config.admin_listen, "127.0.0.1:7200".parse().unwrap());
        let bundle = out.join("keel-2");
        let genesis: Genesis =
            serde_json::from_str(&std::fs::read_to_string(bundle.join("genesis.json")).unwrap())
                .unwrap();
        assert_eq!(genesis.validators[2].address, "keel-2.example:7000");
        // The bundle's keys are the key directory's, still private.
        let copied = read_key(&bundle.join("keys").join(PROTOCOL_KEY_FILE)).unwrap();
        let original = read_key(&dir.path().join("keys-2").join(PROTOCOL_KEY_FILE)).unwrap();
        assert_eq!(copied.public(), original.public());
        use std::os::unix::fs::PermissionsExt;
        for private in ["keys/protocol.key", "keys/network.key", NODE_TOKEN_FILE] {
            let mode = std::fs::metadata(bundle.join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{private}: {mode:o}");
        }
    }

    #[test]
    fn public_keys_alone_make_a_genesis_and_configs_expecting_keys_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let layout = NodeLayout {
            node_dir: "/srv/{name}".into(),
            data_dir: None,
        };
        let out = dir.path().join("out");
        genesis(&spec(dir.path(), Some(layout), false), &out).unwrap();
        let bundle = out.join("keel-1");
        assert!(!bundle.join("keys").exists());
        let config = NodeConfig::load(&bundle.join(NODE_CONFIG_FILE)).unwrap();
        assert_eq!(
            config.network_key,
            Path::new("/srv/keel-1/keys/network.key")
        );
        assert_eq!(config.data_dir, Path::new("/srv/keel-1/data"));
        let public: PublicKeys = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("keys-1").join(PUBLIC_KEYS_FILE)).unwrap(),
        )
        .unwrap();
        let genesis: Genesis =
            serde_json::from_str(&std::fs::read_to_string(out.join("genesis.json")).unwrap())
                .unwrap();
        assert_eq!(genesis.validators[1].network_key, public.network_key);
        // A damaged public.json is refused naming the file and field.
        let key_dir = dir.path().join("keys-1");
        let text = std::fs::read_to_string(key_dir.join(PUBLIC_KEYS_FILE)).unwrap();
        let damaged = text.replace(&public.network_key, &public.network_key[2..]);
        std::fs::write(key_dir.join(PUBLIC_KEYS_FILE), damaged).unwrap();
        let e = public_keys(&key_dir).unwrap_err().to_string();
        assert!(e.contains("public.json field `network_key`"), "{e}");
        // Keys made before public.json existed: --export-public writes it from them.
        let old = dir.path().join("old-keys");
        let (protocol, _) = keygen(&old).unwrap();
        std::fs::remove_file(old.join(PUBLIC_KEYS_FILE)).unwrap();
        export_public(&old).unwrap();
        let (exported, private) = public_keys(&old).unwrap();
        assert!(private);
        assert_eq!(exported.protocol_key, protocol.public().to_string());
        let json: PublicKeys =
            serde_json::from_str(&std::fs::read_to_string(old.join(PUBLIC_KEYS_FILE)).unwrap())
                .unwrap();
        assert_eq!(json, exported);
    }

    #[test]
    fn bad_specs_and_layouts_are_refused_naming_the_part_at_fault() {
        for (bad, says) in [
            ("v0=keys@keel_0:7000", "label `keel_0`"),
            ("v0=keys@keel-0", "not HOST:PORT"),
            ("v 0=keys@keel-0:7000", "letters, digits and dashes"),
            ("v0=keys@keel-0:7000/x", "stake `x`"),
        ] {
            let e = bad.parse::<ValidatorSpec>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let relative = NodeLayout {
            node_dir: "etc/keel".into(),
            data_dir: None,
        };
        let e = genesis(
            &spec(dir.path(), Some(relative), true),
            &dir.path().join("out"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = public_keys(empty.path()).unwrap_err();
        assert!(e.to_string().contains("neither protocol.key"), "{e}");
    }
}
