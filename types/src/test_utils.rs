//! Deterministic fixtures for tests: seeded keys and committees.

use crate::{
    committee::{Committee, ValidatorInfo},
    crypto::KeyPair,
    ids::{Epoch, Stake},
};

/// The key pair derived from `(domain, index)`; the same inputs give the same key.
pub fn seeded_key(domain: &str, index: u64) -> KeyPair {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.as_bytes());
    hasher.update(&index.to_le_bytes());
    KeyPair::from_seed(hasher.finalize().as_bytes())
}

/// A committee of `stakes.len()` validators with seeded keys, and their protocol keys.
pub fn committee_with_stakes(epoch: Epoch, stakes: &[u64]) -> (Committee, Vec<KeyPair>) {
    let keys: Vec<KeyPair> = (0..stakes.len() as u64)
        .map(|i| seeded_key("protocol", i))
        .collect();
    let validators = keys
        .iter()
        .zip(stakes)
        .enumerate()
        .map(|(i, (k, s))| ValidatorInfo {
            protocol_key: k.public(),
            network_key: seeded_key("network", i as u64).public(),
            stake: Stake(*s),
            address: format!("127.0.0.1:{}", 7000 + i),
        })
        .collect();
    // INVARIANT: test fixtures use positive stakes and distinct seeded keys.
    let committee = Committee::new(epoch, validators).expect("INVARIANT: valid test committee");
    (committee, keys)
}

/// A committee of `n` validators with stake 1 each.
pub fn committee(n: usize) -> (Committee, Vec<KeyPair>) {
    committee_with_stakes(Epoch(1), &vec![1; n])
}
