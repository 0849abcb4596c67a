//! Optimistic transactions over the state column family.
//!
//! A transaction reads from a RocksDB snapshot, records every key it read with the version it
//! saw (`None` for absent), and buffers its writes. Commit takes the store's commit lock and
//! validates, in key order: every read key still has the version seen, and every written key
//! was not changed after the snapshot (first committer wins). It then applies the writes, any
//! extra writes to other columns, the new commit sequence and the state-hash journal entry in one
//! RocksDB `WriteBatch`, so a crash leaves either all of a commit or none of it.
//!
//! Validation and the state hash need each touched key's latest version and value seed; the
//! recent-writes index ([`crate::recent`]) and the read set supply them for keys written
//! recently or read by the transaction, so a read-modify-write commit does no RocksDB read
//! under the lock.
//!
//! Versions are commit sequence numbers: a stored value carries the sequence of the commit that
//! wrote it. `visible_seq` is read before the snapshot is taken, so every commit with sequence
//! at or below it is in the snapshot; a value with a higher version was written after it.
//! Committed transactions are serialisable in commit-sequence order.

use crate::{
    db::{CommitState, Store, WriteOp},
    error::{Error, Result},
    layout::{
        KEY_SEQ, MAX_STATE_KEY, MAX_STATE_VALUE, journal_key, split_value, state_key, state_value,
    },
    lthash::element_seed,
    recent::{Latest, Lookup},
    root_keeper::JournalEntry,
};
use rocksdb::{DB, ReadOptions, SnapshotWithThreadMode, WriteBatch};
use std::{collections::BTreeMap, sync::atomic::Ordering};

/// Journal entries handed to the state-root thread at a time.
const ROOT_BATCH: usize = 512;

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_STATE_KEY {
        return Err(Error::KeySize {
            size: key.len(),
            limit: MAX_STATE_KEY,
        });
    }
    Ok(())
}

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit's sequence number (the version of every key it wrote). A transaction with
    /// nothing to write reports the sequence it validated against.
    pub seq: u64,
}

/// A state value with the sequence of the commit that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The writing commit's sequence.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

impl Store {
    /// A consistent read-only view of the committed state.
    pub fn snapshot(&self) -> StateSnapshot<'_> {
        // Read the bound first: every commit at or below it is in the snapshot taken next.
        let seq = self.visible_seq.load(Ordering::Acquire);
        let snapshot = self.db.snapshot();
        let mut read_opts = ReadOptions::default();
        read_opts.set_snapshot(&snapshot);
        StateSnapshot {
            store: self,
            read_opts,
            _snapshot: snapshot,
            seq,
        }
    }

    /// Starts an optimistic transaction on a snapshot of the committed state.
    pub fn begin(&self) -> OccTransaction<'_> {
        OccTransaction {
            snapshot: self.snapshot(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// Reads the latest committed value of a state key (no transaction, no read set).
    pub fn get_state(&self, key: &[u8]) -> Result<Option<Versioned>> {
        check_key(key)?;
        let raw = self
            .db
            .get_pinned_cf(self.state_cf(), state_key(key))
            .map_err(Error::rocks("get"))?;
        raw.map(|raw| {
            split_value(&raw).map(|(version, value)| Versioned {
                version,
                value: value.to_vec(),
            })
        })
        .transpose()
    }
}

/// A read-only view of the state as of one moment; later commits are invisible to it.
pub struct StateSnapshot<'a> {
    store: &'a Store,
    // Declared before the snapshot: the options point at it and are dropped first.
    read_opts: ReadOptions,
    _snapshot: SnapshotWithThreadMode<'a, DB>,
    seq: u64,
}

impl std::fmt::Debug for StateSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSnapshot")
            .field("seq", &self.seq)
            .finish()
    }
}

impl StateSnapshot<'_> {
    /// Iterates the `state` column as of the snapshot, forward from the stored key `start`.
    pub(crate) fn iterator_from(&self, start: &[u8]) -> rocksdb::DBIteratorWithThreadMode<'_, DB> {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self._snapshot);
        self.store.db.iterator_cf_opt(
            self.store.state_cf(),
            opts,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        )
    }

    /// Every commit with a sequence at or below this is visible in the snapshot.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Reads `key` as of the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        check_key(key)?;
        let raw = self
            .store
            .db
            .get_pinned_cf_opt(self.store.state_cf(), state_key(key), &self.read_opts)
            .map_err(Error::rocks("get"))?;
        raw.map(|raw| {
            split_value(&raw).map(|(version, value)| Versioned {
                version,
                value: value.to_vec(),
            })
        })
        .transpose()
    }
}

/// An optimistic transaction: snapshot reads, buffered writes, validated commit.
pub struct OccTransaction<'a> {
    snapshot: StateSnapshot<'a>,
    reads: BTreeMap<Vec<u8>, Latest>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl std::fmt::Debug for OccTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OccTransaction")
            .field("snapshot_seq", &self.snapshot.seq)
            .field("reads", &self.reads.len())
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl<'a> OccTransaction<'a> {
    /// Every commit with a sequence at or below this is visible to the transaction.
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot.seq
    }

    /// Reads `key`: this transaction's own write if any, else the snapshot's value (recorded
    /// in the read set with its version).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key)?.map(|v| v.value))
    }

    /// Like [`OccTransaction::get`], with the version; a value this transaction wrote has no
    /// version yet and is reported with version 0.
    pub fn get_versioned(&mut self, key: &[u8]) -> Result<Option<Versioned>> {
        check_key(key)?;
        if let Some(own) = self.writes.get(key) {
            return Ok(own.clone().map(|value| Versioned { version: 0, value }));
        }
        let found = self.snapshot.get(key)?;
        if !self.reads.contains_key(key) {
            // The seed is kept so that, if this key is written too, commit knows the element
            // its write replaces without reading it again.
            let seen = Latest {
                version: found.as_ref().map(|v| v.version),
                seed: found.as_ref().map(|v| element_seed(key, &v.value)),
            };
            self.reads.insert(key.to_vec(), seen);
        }
        Ok(found)
    }

    /// The snapshot this transaction reads; it is `Sync`, so several threads may read it at
    /// once (parallel execution) and report what they saw with [`OccTransaction::record_read`].
    pub fn snapshot(&self) -> &StateSnapshot<'a> {
        &self.snapshot
    }

    /// Adds `key` to the read set as if [`OccTransaction::get_versioned`] had returned `found`.
    /// `found` must be what `self.snapshot().get(key)` returns: commit validates the version
    /// and the state root relies on the value. Lets a caller that read the snapshot elsewhere
    /// avoid reading the key again.
    pub fn record_read(&mut self, key: &[u8], found: Option<&Versioned>) -> Result<()> {
        check_key(key)?;
        if !self.reads.contains_key(key) && !self.writes.contains_key(key) {
            let seen = Latest {
                version: found.map(|v| v.version),
                seed: found.map(|v| element_seed(key, &v.value)),
            };
            self.reads.insert(key.to_vec(), seen);
        }
        Ok(())
    }

    /// Buffers a write of `value` to `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        if value.len() > MAX_STATE_VALUE {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                limit: MAX_STATE_VALUE,
            });
        }
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Buffers a deletion of `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    /// The keys read from the snapshot with the versions seen, in key order.
    pub fn read_set(&self) -> impl Iterator<Item = (&[u8], Option<u64>)> {
        self.reads.iter().map(|(k, v)| (k.as_slice(), v.version))
    }

    /// The keys written, in key order.
    pub fn write_set(&self) -> impl Iterator<Item = &[u8]> {
        self.writes.keys().map(Vec::as_slice)
    }

    /// Validates and commits the transaction.
    pub fn commit(self) -> Result<CommitInfo> {
        self.commit_with(Vec::new())
    }

    /// Validates and commits the transaction together with `extra` writes to other columns,
    /// all in one atomic RocksDB write.
    pub fn commit_with(self, extra: Vec<WriteOp>) -> Result<CommitInfo> {
        let store = self.snapshot.store;
        let state_cf = store.state_cf();
        let mut guard = store.commit.lock();
        let cs = &mut *guard;

        let snapshot_seq = self.snapshot.seq;
        let from_db = |key: &[u8], opts: &ReadOptions| -> Result<Latest> {
            let raw = store
                .db
                .get_pinned_cf_opt(state_cf, state_key(key), opts)
                .map_err(Error::rocks("get"))?;
            match raw {
                Some(raw) => {
                    let (version, payload) = split_value(&raw)?;
                    Ok(Latest {
                        version: Some(version),
                        seed: Some(element_seed(key, payload)),
                    })
                }
                None => Ok(Latest {
                    version: None,
                    seed: None,
                }),
            }
        };
        // The latest committed state of `key`, or `None` if it has not changed since the
        // snapshot (from the recent-writes index when it knows, else from RocksDB).
        let latest = |key: &[u8], cs: &CommitState| -> Result<Option<Latest>> {
            match cs.recent.lookup(key, snapshot_seq) {
                Lookup::Written(l) => Ok(Some(l)),
                Lookup::Unchanged => Ok(None),
                Lookup::Unknown => from_db(key, &cs.latest_opts).map(Some),
            }
        };

        for (key, seen) in &self.reads {
            if self.writes.contains_key(key) {
                continue; // validated with the writes below
            }
            if let Some(now) = latest(key, cs)?
                && now.version != seen.version
            {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: seen.version,
                    found: now.version,
                });
            }
        }

        let seq = cs.last_seq.checked_add(1).ok_or_else(|| Error::Corrupt {
            what: "commit sequence",
            reason: "u64 exhausted".into(),
        })?;
        let mut batch = WriteBatch::default();
        let mut journal = Vec::with_capacity(self.writes.len());
        let mut written = Vec::with_capacity(self.writes.len());
        // RocksDB inserts a write batch into its memtable skiplist in batch order; writes in
        // stored-key order make each insertion start next to the previous one.
        let mut ordered: Vec<_> = self
            .writes
            .iter()
            .map(|(key, new)| (state_key(key), key, new))
            .collect();
        ordered.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (skey, key, new) in ordered {
            let seen = self.reads.get(key);
            let (current, changed) = match (latest(key, cs)?, seen) {
                (Some(now), Some(seen)) => (now, now.version != seen.version),
                (Some(now), None) => {
                    let changed = match now.version {
                        Some(v) => v > snapshot_seq,
                        // Absent now: a conflict only if it existed at the snapshot.
                        None => self.snapshot.get(key)?.is_some(),
                    };
                    (now, changed)
                }
                (None, Some(seen)) => (*seen, false),
                (None, None) => (from_db(key, &cs.latest_opts)?, false),
            };
            if changed {
                let expected = match seen {
                    Some(seen) => seen.version,
                    None => self.snapshot.get(key)?.map(|v| v.version),
                };
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected,
                    found: current.version,
                });
            }
            let new_seed = match new {
                Some(value) => {
                    batch.put_cf(state_cf, &skey, state_value(seq, value));
                    Some(element_seed(key, value))
                }
                None => {
                    batch.delete_cf(state_cf, &skey);
                    None
                }
            };
            if current.seed != new_seed {
                journal.push(JournalEntry {
                    bucket: skey[0],
                    old: current.seed,
                    new: new_seed,
                });
            }
            written.push((
                key.clone(),
                Latest {
                    version: new.as_ref().map(|_| seq),
                    seed: new_seed,
                },
            ));
        }

        if self.writes.is_empty() && extra.is_empty() {
            return Ok(CommitInfo { seq: cs.last_seq });
        }
        for op in extra {
            let cf = store.cf(op.column);
            match op.value {
                Some(v) => batch.put_cf(cf, op.key, v),
                None => batch.delete_cf(cf, op.key),
            }
        }

        let internal = store.internal_cf();
        batch.put_cf(internal, KEY_SEQ, seq.to_le_bytes());
        if !journal.is_empty() {
            let encoded = bcs::to_bytes(&journal).map_err(|e| Error::Corrupt {
                what: "state journal",
                reason: e.to_string(),
            })?;
            batch.put_cf(internal, journal_key(seq), encoded);
        }
        store
            .db
            .write_opt(batch, &cs.write_opts)
            .map_err(Error::rocks("write"))?;
        cs.root_pending.extend(journal);
        if cs.root_pending.len() >= ROOT_BATCH {
            let batch = std::mem::take(&mut cs.root_pending);
            // The commit is durable; if the state-root thread were gone, `state_root` says so.
            let _ = store.root.apply(seq, batch);
        }
        cs.recent.record(seq, written);
        cs.last_seq = seq;
        store.visible_seq.store(seq, Ordering::Release);
        Ok(CommitInfo { seq })
    }
}
