//! Recent writes: the latest version and element seed of every key the last commits wrote.
//!
//! Commit validation must know, for each key a transaction touched, whether it changed after
//! the transaction's snapshot, and the state hash needs the element seed of the value each write
//! replaces. Reading both from RocksDB under the commit lock costs a point lookup per key. This
//! index answers most of them from memory.
//!
//! Invariant: every key written by a commit with sequence above `floor` is in the map with its
//! latest write. Eviction drops the oldest commit's keys (those it wrote last) and raises
//! `floor` to that commit, which keeps the invariant. So for a snapshot at or above `floor`, a
//! key absent from the map has not changed since the snapshot; for an older snapshot the index
//! knows nothing and the caller reads RocksDB.

use std::collections::{HashMap, VecDeque};

/// The latest committed state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Latest {
    /// The version (the writing commit's sequence), `None` if deleted.
    pub(crate) version: Option<u64>,
    /// The element seed of the value, `None` if deleted.
    pub(crate) seed: Option<[u8; 32]>,
}

/// What the index knows about a key, relative to a snapshot.
pub(crate) enum Lookup {
    /// Written since `floor`; this is its latest state.
    Written(Latest),
    /// Not written after the snapshot.
    Unchanged,
    /// The snapshot predates what the index covers.
    Unknown,
}

pub(crate) struct RecentWrites {
    map: HashMap<Vec<u8>, (u64, Latest)>,
    log: VecDeque<(u64, Vec<Vec<u8>>)>,
    floor: u64,
    keys: usize,
    capacity: usize,
}

impl RecentWrites {
    /// An empty index covering commits after `floor`, holding about `capacity` keys.
    pub(crate) fn new(floor: u64, capacity: usize) -> Self {
        RecentWrites {
            map: HashMap::new(),
            log: VecDeque::new(),
            floor,
            keys: 0,
            capacity,
        }
    }

    /// About how many keys the index holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn lookup(&self, key: &[u8], snapshot_seq: u64) -> Lookup {
        if let Some((_, latest)) = self.map.get(key) {
            return Lookup::Written(*latest);
        }
        if snapshot_seq >= self.floor {
            Lookup::Unchanged
        } else {
            Lookup::Unknown
        }
    }

    /// Records the keys commit `seq` wrote, then evicts the oldest commits beyond capacity.
    pub(crate) fn record(&mut self, seq: u64, writes: Vec<(Vec<u8>, Latest)>) {
        let mut keys = Vec::with_capacity(writes.len());
        for (key, latest) in writes {
            self.map.insert(key.clone(), (seq, latest));
            keys.push(key);
        }
        self.keys += keys.len();
        self.log.push_back((seq, keys));
        while self.keys > self.capacity {
            let Some((old_seq, old_keys)) = self.log.pop_front() else {
                break;
            };
            self.keys -= old_keys.len();
            for key in old_keys {
                if self.map.get(&key).is_some_and(|(s, _)| *s == old_seq) {
                    self.map.remove(&key);
                }
            }
            self.floor = old_seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(v: u64) -> Latest {
        Latest {
            version: Some(v),
            seed: Some([v as u8; 32]),
        }
    }

    #[test]
    fn eviction_raises_the_floor_and_keeps_newer_writes() {
        let mut r = RecentWrites::new(10, 2);
        r.record(11, vec![(b"a".to_vec(), latest(11))]);
        r.record(12, vec![(b"b".to_vec(), latest(12))]);
        assert!(matches!(r.lookup(b"a", 10), Lookup::Written(l) if l.version == Some(11)));
        assert!(matches!(r.lookup(b"c", 10), Lookup::Unchanged));
        assert!(matches!(r.lookup(b"c", 9), Lookup::Unknown));
        // Commit 13 rewrites `b`; evicting 11 drops `a` and raises the floor to 11.
        r.record(13, vec![(b"b".to_vec(), latest(13))]);
        assert!(matches!(r.lookup(b"a", 11), Lookup::Unchanged));
        assert!(matches!(r.lookup(b"a", 10), Lookup::Unknown));
        // Evicting 12 must not drop `b`, whose latest write is 13.
        r.record(14, vec![(b"c".to_vec(), latest(14))]);
        assert!(matches!(r.lookup(b"b", 12), Lookup::Written(l) if l.version == Some(13)));
    }
}
