//! A bounded cache of committed state values in front of RocksDB, owned by the executor.
//!
//! The executor is the only writer of state, so after each block it records what it wrote (and
//! the snapshot values it read); between blocks the cache equals the committed state for every
//! key it holds. Two generations bound it: entries go into the young one; when that fills, it
//! becomes the old one and the previous old one is dropped. Values read during a block are inserted
//! again after it, so entries in use stay young. Memory stays below `capacity` entries.

use keel_storage::Versioned;
use std::collections::HashMap;

/// Committed state values (`None`: known absent).
#[derive(Debug)]
pub struct StateCache {
    young: HashMap<Vec<u8>, Option<Versioned>>,
    old: HashMap<Vec<u8>, Option<Versioned>>,
    generation: usize,
}

impl StateCache {
    /// A cache of at most `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        StateCache {
            young: HashMap::new(),
            old: HashMap::new(),
            generation: capacity / 2,
        }
    }

    /// The committed value of `key`, if cached.
    pub fn get(&self, key: &[u8]) -> Option<&Option<Versioned>> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// Records the committed value of `key`.
    pub fn insert(&mut self, key: Vec<u8>, value: Option<Versioned>) {
        if self.generation == 0 {
            return;
        }
        self.old.remove(&key);
        self.young.insert(key, value);
        if self.young.len() >= self.generation {
            self.old = std::mem::take(&mut self.young);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything (after the state changed behind the executor's back).
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Option<Versioned> {
        Some(Versioned {
            version: n,
            value: vec![n as u8],
        })
    }

    #[test]
    fn bounded_with_recent_entries_kept() {
        let mut cache = StateCache::new(4);
        for i in 0..10u8 {
            cache.insert(vec![i], v(i as u64));
            assert!(cache.len() <= 4);
        }
        assert_eq!(cache.get(&[9]), Some(&v(9)));
        assert_eq!(cache.get(&[0]), None);
        cache.insert(vec![9], None);
        assert_eq!(cache.get(&[9]), Some(&None));
        let mut off = StateCache::new(0);
        off.insert(vec![1], v(1));
        assert!(off.is_empty());
    }
}
