//! This validator's keys across key rotations.
//!
//! A validator's protocol and network keys live in the files its config names
//! (`protocol_key`, `network_key`). Rotating them takes three steps:
//! - `POST /admin/keys/stage` generates the new pair ([`KeyRing::stage`]) and writes it beside
//!   the current files as `<file>.staged` (mode 0600, synced). A key that is not rotated is
//!   staged unchanged. Staging again returns the pair already staged.
//! - `POST /admin/keys/rotate` votes the `RotateKeys` change naming the staged public keys.
//! - The epoch the change takes effect in names the new keys in its committee. The node holds
//!   both pairs meanwhile and, for each epoch, uses the pair that epoch's committee names
//!   ([`KeyRing::for_committee`]; execution decides it when it publishes the epoch). When the
//!   staged pair comes into use, [`KeyRing::adopt`] promotes the files: the current key moves
//!   to `<file>.prev`, the staged one takes the config's file name.
//!
//! A crash at any step leaves a readable pair under the config's names, and possibly a staged
//! pair beside it (or a `.prev` pair): the next start loads both candidates and picks by the
//! committee again, so the node never signs with a key its epoch does not name.

use anyhow::{Context, Result};
use keel_types::{Committee, KeyPair, PublicKey, ValidatorIndex};
use parking_lot::RwLock;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::genesis::{read_key, write_key};

/// A protocol key and a network key.
pub struct ValidatorKeys {
    /// Signs votes, proposals, acknowledgements, checkpoints and governance votes.
    pub protocol: Arc<KeyPair>,
    /// The QUIC identity.
    pub network: Arc<KeyPair>,
}

impl ValidatorKeys {
    /// Both public keys.
    pub fn public(&self) -> (PublicKey, PublicKey) {
        (self.protocol.public(), self.network.public())
    }
}

impl std::fmt::Debug for ValidatorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (protocol, network) = self.public();
        write!(
            f,
            "ValidatorKeys {{ protocol: {protocol}, network: {network} }}"
        )
    }
}

impl PartialEq for ValidatorKeys {
    fn eq(&self, other: &Self) -> bool {
        self.public() == other.public()
    }
}

impl Eq for ValidatorKeys {}

/// The current key pair and, during a rotation, the staged one (see the module docs).
pub struct KeyRing {
    protocol_path: PathBuf,
    network_path: PathBuf,
    current: RwLock<Arc<ValidatorKeys>>,
    staged: RwLock<Option<Arc<ValidatorKeys>>>,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn staged_path(path: &Path) -> PathBuf {
    with_suffix(path, ".staged")
}

/// Makes renames and creations in `path`'s directory durable.
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

impl KeyRing {
    /// Reads the keys the config names and a staged pair beside them, if both files exist.
    pub fn load(protocol_path: &Path, network_path: &Path) -> Result<Self> {
        let current = ValidatorKeys {
            protocol: Arc::new(read_key(protocol_path)?),
            network: Arc::new(read_key(network_path)?),
        };
        let (sp, sn) = (staged_path(protocol_path), staged_path(network_path));
        let staged = if sp.exists() && sn.exists() {
            Some(Arc::new(ValidatorKeys {
                protocol: Arc::new(read_key(&sp)?),
                network: Arc::new(read_key(&sn)?),
            }))
        } else {
            None
        };
        Ok(KeyRing {
            protocol_path: protocol_path.to_path_buf(),
            network_path: network_path.to_path_buf(),
            current: RwLock::new(Arc::new(current)),
            staged: RwLock::new(staged),
        })
    }

    /// The pair the config's files hold.
    pub fn current(&self) -> Arc<ValidatorKeys> {
        self.current.read().clone()
    }

    /// The staged pair, during a rotation.
    pub fn staged(&self) -> Option<Arc<ValidatorKeys>> {
        self.staged.read().clone()
    }

    /// The candidate pair `committee` names (both keys of one member), with its index.
    pub fn for_committee(
        &self,
        committee: &Committee,
    ) -> Option<(ValidatorIndex, Arc<ValidatorKeys>)> {
        let candidates = [Some(self.current()), self.staged()];
        candidates.into_iter().flatten().find_map(|keys| {
            let (protocol, network) = keys.public();
            let index = committee.index_of(&protocol)?;
            let member = committee.member(index).ok()?;
            (member.network_key == network).then_some((index, keys))
        })
    }

    /// Stages a new pair: a fresh protocol key if `protocol`, a fresh network key if
    /// `network`, the current key otherwise. If a pair is staged already, returns it
    /// unchanged (repeating the request is harmless; `new` says whether this call staged it).
    pub fn stage(&self, protocol: bool, network: bool) -> Result<(Arc<ValidatorKeys>, bool)> {
        let mut staged = self.staged.write();
        if let Some(keys) = staged.as_ref() {
            return Ok((keys.clone(), false));
        }
        let current = self.current();
        let mut rng = rand::rngs::OsRng;
        let keys = Arc::new(ValidatorKeys {
            protocol: if protocol {
                Arc::new(KeyPair::generate(&mut rng))
            } else {
                current.protocol.clone()
            },
            network: if network {
                Arc::new(KeyPair::generate(&mut rng))
            } else {
                current.network.clone()
            },
        });
        for (path, key) in [
            (staged_path(&self.protocol_path), &keys.protocol),
            (staged_path(&self.network_path), &keys.network),
        ] {
            write_key(&path, key)?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", path.display()))?;
        }
        sync_dir(&self.protocol_path)?;
        sync_dir(&self.network_path)?;
        *staged = Some(keys.clone());
        Ok((keys, true))
    }

    /// `keys` are in use from now on: if they are the staged pair, the files are promoted
    /// (current → `.prev`, staged → the config's names) and the pair becomes current.
    pub fn adopt(&self, keys: &ValidatorKeys) -> Result<()> {
        let mut staged = self.staged.write();
        if staged.as_deref() != Some(keys) {
            return Ok(());
        }
        for path in [&self.protocol_path, &self.network_path] {
            let prev = with_suffix(path, ".prev");
            std::fs::copy(path, &prev)
                .with_context(|| format!("cannot keep {} as {}", path.display(), prev.display()))?;
            std::fs::rename(staged_path(path), path)
                .with_context(|| format!("cannot move the staged key over {}", path.display()))?;
            sync_dir(path)?;
        }
        *self.current.write() = staged.take().expect("checked above");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{Epoch, Stake, ValidatorInfo};

    fn committee_of(keys: &[(PublicKey, PublicKey)]) -> Committee {
        let validators = keys
            .iter()
            .enumerate()
            .map(|(i, (p, n))| ValidatorInfo {
                protocol_key: *p,
                network_key: *n,
                stake: Stake(1),
                address: format!("127.0.0.1:{}", 9000 + i),
            })
            .collect();
        Committee::new(Epoch(0), validators).unwrap()
    }

    #[test]
    fn a_staged_pair_is_used_once_a_committee_names_it_and_promoted_on_adoption() {
        let dir = tempfile::tempdir().unwrap();
        let (p, n) = (
            dir.path().join("protocol.key"),
            dir.path().join("network.key"),
        );
        write_key(&p, &KeyPair::from_seed(&[1; 32])).unwrap();
        write_key(&n, &KeyPair::from_seed(&[2; 32])).unwrap();
        let other = (
            KeyPair::from_seed(&[3; 32]).public(),
            KeyPair::from_seed(&[4; 32]).public(),
        );
        let ring = KeyRing::load(&p, &n).unwrap();
        let old = ring.current();
        let before = committee_of(&[other, old.public()]);
        assert_eq!(ring.for_committee(&before).unwrap().0, ValidatorIndex(1));

        // Only the network key rotates; staging again returns the same pair.
        let (staged, new) = ring.stage(false, true).unwrap();
        assert!(new);
        assert_eq!(staged.protocol.public(), old.protocol.public());
        assert_ne!(staged.network.public(), old.network.public());
        assert_eq!(ring.stage(true, true).unwrap(), (staged.clone(), false));
        // The old committee still picks the old pair (same protocol key, old network key).
        assert_eq!(*ring.for_committee(&before).unwrap().1, *old);
        // A restart in between finds both.
        let reloaded = KeyRing::load(&p, &n).unwrap();
        assert_eq!(reloaded.staged().as_deref(), Some(&*staged));

        let after = committee_of(&[other, staged.public()]);
        let (index, keys) = ring.for_committee(&after).unwrap();
        assert_eq!((index, &*keys), (ValidatorIndex(1), &*staged));
        ring.adopt(&keys).unwrap();
        assert_eq!(*ring.current(), *staged);
        assert!(ring.staged().is_none());
        let reloaded = KeyRing::load(&p, &n).unwrap();
        assert_eq!(*reloaded.current(), *staged);
        assert!(reloaded.staged().is_none());
        assert_eq!(
            read_key(&with_suffix(&n, ".prev")).unwrap().public(),
            old.network.public()
        );
        // A committee that names neither pair: not a member.
        assert!(ring.for_committee(&committee_of(&[other])).is_none());
    }
}
