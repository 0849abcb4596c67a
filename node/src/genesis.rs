//! The genesis file (JSON) and key files: loaded once and checked with errors that name the
//! field at fault.

use anyhow::{Context, Result, bail};
use keel_types::{
    Address, ChainId, Committee, Digest, Epoch, EpochParams, EpochState, FeeSchedule, KeyPair,
    PublicKey, Stake, ValidatorInfo,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// When epochs end (execution rules: part of the genesis digest).
    #[serde(default)]
    pub epochs: EpochParams,
    /// What every transaction pays (execution rules: part of the genesis digest; absent: no
    /// fees).
    #[serde(default)]
    pub fees: FeeSchedule,
}

/// Default of `keel genesis --fee-per-op`.
pub const DEFAULT_FEE_PER_OP: u64 = 100;
/// Default of `keel genesis --fee-per-byte`.
pub const DEFAULT_FEE_PER_BYTE: u64 = 1;

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
        genesis.epoch_state()?;
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

    /// The first epoch's governance record.
    pub fn epoch_state(&self) -> Result<EpochState> {
        if self.epochs.change_delay_blocks == 0 {
            return Err(genesis_error(
                "epochs.change_delay_blocks",
                "must be positive",
            ));
        }
        Ok(EpochState::genesis(self.committee()?, self.epochs))
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
                v.address
                    .parse::<keel_p2p::PeerAddress>()
                    .map_err(|e| genesis_error(format!("validators[{i}].address"), e))?;
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
        self.funded_with(|_| {})
    }

    /// [`Genesis::funded`], telling `derived` how many derived accounts are done so far (after
    /// each one: deriving a million keys takes a while).
    pub fn funded_with(&self, mut derived: impl FnMut(u64)) -> Result<Vec<(Address, u64)>> {
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
                derived(i + 1);
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
            epochs: EpochParams::default(),
            fees: FeeSchedule::default(),
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

    /// A valid genesis of four validators and two accounts, as JSON.
    fn valid_json() -> serde_json::Value {
        let validators = (0..4u8)
            .map(|i| GenesisValidator {
                name: format!("v{i}"),
                protocol_key: KeyPair::from_seed(&[i; 32]).public().to_string(),
                network_key: KeyPair::from_seed(&[i + 100; 32]).public().to_string(),
                stake: 1,
                address: format!("127.0.0.1:{}", 7000 + u16::from(i)),
            })
            .collect();
        let genesis = Genesis {
            chain_id: 1,
            epoch: 1,
            validators,
            accounts: vec![GenesisAccount {
                address: "11".repeat(32),
                balance: 5,
            }],
            derived_accounts: None,
            epochs: EpochParams::default(),
            fees: FeeSchedule {
                per_op: 1,
                per_byte: 1,
            },
        };
        serde_json::to_value(&genesis).unwrap()
    }

    /// Replaces the `n`th scalar of `value` (depth first, wrapping) with `with`.
    fn replace_scalar(
        value: &mut serde_json::Value,
        n: &mut usize,
        with: &serde_json::Value,
    ) -> bool {
        match value {
            serde_json::Value::Object(map) => map.values_mut().any(|v| replace_scalar(v, n, with)),
            serde_json::Value::Array(items) => items.iter_mut().any(|v| replace_scalar(v, n, with)),
            scalar => {
                if *n == 0 {
                    *scalar = with.clone();
                    return true;
                }
                *n -= 1;
                false
            }
        }
    }

    mod untrusted {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A genesis file is untrusted input: with any scalar replaced by any value,
            /// loading and every derivation the node makes from it answer Ok or an error,
            /// never a panic.
            #[test]
            fn any_value_anywhere_loads_or_is_refused(
                at in 0usize..64,
                with in prop_oneof![
                    any::<u64>().prop_map(serde_json::Value::from),
                    any::<i64>().prop_map(serde_json::Value::from),
                    any::<bool>().prop_map(serde_json::Value::from),
                    "[ -~]{0,80}".prop_map(serde_json::Value::from),
                    Just(serde_json::Value::Null),
                ],
            ) {
                let mut json = valid_json();
                let mut n = at;
                if !replace_scalar(&mut json, &mut n, &with) {
                    let mut n = at % 8;
                    replace_scalar(&mut json, &mut n, &with);
                }
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("genesis.json");
                std::fs::write(&path, json.to_string()).unwrap();
                if let Ok(genesis) = Genesis::load(&path) {
                    let _ = genesis.committee();
                    let _ = genesis.funded();
                    let _ = genesis.epoch_state();
                    let _ = genesis.digest();
                }
            }
        }
    }
}
