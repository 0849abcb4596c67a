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
//! Every key file is written to a temporary file, synced and renamed, so a crash never leaves
//! a torn key under a name the node reads. A crash at any step leaves a readable pair under
//! the config's names plus, possibly, `.staged` or `.prev` files beside them; the next start
//! loads the current, staged and previous pairs (a pair takes each key from its suffixed file
//! where there is one, so a promotion interrupted between the two files still yields the pair
//! each committee names) and picks by the committee again. The previous pair also serves a
//! store that lost its last writes (they are not synced) and is back in the epoch before the
//! promotion. So the node never signs with a key its epoch does not name.

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

/// The current key pair and, during a rotation, the staged one; after a promotion, the
/// previous one (see the module docs).
pub struct KeyRing {
    protocol_path: PathBuf,
    network_path: PathBuf,
    /// One lock for all candidates: a reader never sees a half-done promotion.
    candidates: RwLock<Candidates>,
}

#[derive(Clone)]
struct Candidates {
    current: Arc<ValidatorKeys>,
    staged: Option<Arc<ValidatorKeys>>,
    previous: Option<Arc<ValidatorKeys>>,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

const STAGED: &str = ".staged";
const PREVIOUS: &str = ".prev";

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

/// Writes a key file atomically and durably: a temporary file, synced, renamed over `path`.
fn write_key_durably(path: &Path, key: &KeyPair) -> Result<()> {
    let temporary = with_suffix(path, ".tmp");
    write_key(&temporary, key)?;
    std::fs::File::open(&temporary)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))?;
    sync_dir(path)
}

/// The key in `path` with `suffix`, if the file exists and holds a key (a torn or corrupt file
/// is ignored with a warning: the config's own files are what must be readable).
fn optional_key(path: &Path, suffix: &str) -> Option<Arc<KeyPair>> {
    let file = with_suffix(path, suffix);
    if !file.exists() {
        return None;
    }
    match read_key(&file) {
        Ok(key) => Some(Arc::new(key)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "ignoring an unreadable key file");
            None
        }
    }
}

impl KeyRing {
    /// Reads the keys the config names, and the staged and previous keys beside them. A
    /// staged (or previous) pair takes each key from its `.staged` (`.prev`) file where there
    /// is one and from the config's file otherwise, so a promotion interrupted between the
    /// two files still yields the pair each committee names.
    pub fn load(protocol_path: &Path, network_path: &Path) -> Result<Self> {
        let protocol = Arc::new(read_key(protocol_path)?);
        let network = Arc::new(read_key(network_path)?);
        let pair = |suffix: &str| -> Option<Arc<ValidatorKeys>> {
            let p = optional_key(protocol_path, suffix);
            let n = optional_key(network_path, suffix);
            if p.is_none() && n.is_none() {
                return None;
            }
            Some(Arc::new(ValidatorKeys {
                protocol: p.unwrap_or_else(|| protocol.clone()),
                network: n.unwrap_or_else(|| network.clone()),
            }))
        };
        let candidates = Candidates {
            staged: pair(STAGED),
            previous: pair(PREVIOUS),
            current: Arc::new(ValidatorKeys {
                protocol: protocol.clone(),
                network: network.clone(),
            }),
        };
        Ok(KeyRing {
            protocol_path: protocol_path.to_path_buf(),
            network_path: network_path.to_path_buf(),
            candidates: RwLock::new(candidates),
        })
    }

    /// The pair the config's files hold.
    pub fn current(&self) -> Arc<ValidatorKeys> {
        self.candidates.read().current.clone()
    }

    /// The staged pair, during a rotation.
    pub fn staged(&self) -> Option<Arc<ValidatorKeys>> {
        self.candidates.read().staged.clone()
    }

    /// The candidate pair `committee` names (both keys of one member), with its index: the
    /// current pair, else the staged one, else the previous one (a store rolled back to the
    /// epoch before a promotion).
    pub fn for_committee(
        &self,
        committee: &Committee,
    ) -> Option<(ValidatorIndex, Arc<ValidatorKeys>)> {
        let c = self.candidates.read().clone();
        [Some(c.current), c.staged, c.previous]
            .into_iter()
            .flatten()
            .find_map(|keys| {
                let (protocol, network) = keys.public();
                let index = committee.index_of(&protocol)?;
                let member = committee.member(index).ok()?;
                (member.network_key == network).then_some((index, keys))
            })
    }

    /// Stages a new pair: a fresh protocol key if `protocol`, a fresh network key if
    /// `network`, the current key otherwise. If a pair is staged already, returns it
    /// unchanged (repeating the request is harmless; the flag says whether this call staged
    /// it). Each file is written atomically and synced.
    pub fn stage(&self, protocol: bool, network: bool) -> Result<(Arc<ValidatorKeys>, bool)> {
        let mut candidates = self.candidates.write();
        if let Some(keys) = candidates.staged.as_ref() {
            return Ok((keys.clone(), false));
        }
        let current = candidates.current.clone();
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
        write_key_durably(&with_suffix(&self.protocol_path, STAGED), &keys.protocol)?;
        write_key_durably(&with_suffix(&self.network_path, STAGED), &keys.network)?;
        candidates.staged = Some(keys.clone());
        Ok((keys, true))
    }

    /// `keys` are in use from now on: if they are the staged pair, the files are promoted
    /// (for each key with a staged file: the config's file is kept as `.prev`, the staged one
    /// takes its name) and the pair becomes current, the replaced one previous.
    pub fn adopt(&self, keys: &ValidatorKeys) -> Result<()> {
        let mut candidates = self.candidates.write();
        if candidates.staged.as_deref() != Some(keys) {
            return Ok(());
        }
        for (path, key) in [
            (&self.protocol_path, &candidates.current.protocol),
            (&self.network_path, &candidates.current.network),
        ] {
            let staged = with_suffix(path, STAGED);
            if !staged.exists() {
                continue; // promoted before a crash
            }
            write_key_durably(&with_suffix(path, PREVIOUS), key)?;
            std::fs::rename(&staged, path).with_context(|| {
                format!("cannot move {} over {}", staged.display(), path.display())
            })?;
            sync_dir(path)?;
        }
        let staged = candidates.staged.take().expect("checked above");
        candidates.previous = Some(std::mem::replace(&mut candidates.current, staged));
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

    /// A directory with a protocol and a network key file.
    fn key_files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (p, n) = (
            dir.path().join("protocol.key"),
            dir.path().join("network.key"),
        );
        write_key(&p, &KeyPair::from_seed(&[1; 32])).unwrap();
        write_key(&n, &KeyPair::from_seed(&[2; 32])).unwrap();
        (dir, p, n)
    }

    /// Another member's keys.
    fn other_member() -> (PublicKey, PublicKey) {
        (
            KeyPair::from_seed(&[3; 32]).public(),
            KeyPair::from_seed(&[4; 32]).public(),
        )
    }

    #[test]
    fn a_staged_pair_is_used_once_a_committee_names_it_and_promoted_on_adoption() {
        let (_dir, p, n) = key_files();
        let other = other_member();
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
        // A store rolled back to the old epoch still finds the old pair (kept as previous).
        assert_eq!(*reloaded.for_committee(&before).unwrap().1, *old);
    }

    #[test]
    fn a_promotion_interrupted_between_the_two_files_resumes_at_the_next_start() {
        let (_dir, p, n) = key_files();
        let ring = KeyRing::load(&p, &n).unwrap();
        let old = ring.current();
        let (staged, _) = ring.stage(true, true).unwrap();
        // The crash: the protocol key was promoted, the network key not yet.
        std::fs::copy(&p, with_suffix(&p, PREVIOUS)).unwrap();
        std::fs::rename(with_suffix(&p, STAGED), &p).unwrap();
        // A torn temporary file of an interrupted write is ignored.
        std::fs::write(with_suffix(&n, ".tmp"), "12").unwrap();
        let ring = KeyRing::load(&p, &n).unwrap();
        let other = other_member();
        let after = committee_of(&[other, staged.public()]);
        let before = committee_of(&[other, old.public()]);
        let (_, keys) = ring.for_committee(&after).unwrap();
        assert_eq!(*keys, *staged);
        assert_eq!(*ring.for_committee(&before).unwrap().1, *old);
        ring.adopt(&keys).unwrap();
        let ring = KeyRing::load(&p, &n).unwrap();
        assert_eq!(*ring.current(), *staged);
        assert!(ring.staged().is_none());
        assert_eq!(*ring.for_committee(&before).unwrap().1, *old);
    }
}
