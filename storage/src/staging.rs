//! State transfer: serving a bucket of the state as of a snapshot in chunks, and receiving a
//! whole state into a staging area, then installing it in place of the current one.
//!
//! Serving ([`StateSnapshot::bucket_chunk`]): entries of one bucket in key order, after a
//! resume key, up to a byte budget; the last chunk of a bucket says so.
//!
//! Receiving:
//! - [`check_chunk`] is what a client checks before staging a chunk: keys strictly increasing
//!   and after the resume key, every key in the bucket, sizes within the store's limits.
//! - [`Store::stage`] writes a checked chunk to the `staging` column family (never read by
//!   execution). Staging survives a crash: [`Store::staged_resume_key`] says where a bucket's
//!   download stopped, [`Store::staged_bucket_hash`] recomputes a bucket's lattice hash from
//!   what is staged (the client proves it against the certified root before installing), and
//!   [`Store::clear_staged_bucket`] drops a bucket a lying peer served.
//!   [`Store::stage_current_bucket`] stages a bucket of the current state as it is, for a
//!   sync whose target shares that bucket with the installed state.
//! - [`Store::install_staged`] replaces the state with the staged one. It first writes a synced
//!   `installing` marker, then rewrites the state bucket by bucket from staging, then, in one
//!   synced batch, the lattices, the sequence, the caller's own writes (e.g. the executed
//!   marker), the marker's removal and the staging area's removal. A crash at any point leaves
//!   either the old state with staging intact, or the marker, and [`Store::open`] finishes an
//!   interrupted install (every step is idempotent) before anything reads the state. So a half
//!   installed state never looks complete.
//!
//! Installing requires that no transaction runs on the store (the node installs before it
//! starts execution); every installed key gets the install's sequence as its version.

use crate::{
    db::Store,
    error::{Error, Result},
    layout::{
        KEY_INSTALLING, KEY_LATTICE_SEQ, KEY_SEQ, MAX_STATE_KEY, MAX_STATE_VALUE, PREFIX_JOURNAL,
        lattice_key, state_value,
    },
    lthash::{BUCKETS, LtHash, StateHash, bucket_of},
    occ::StateSnapshot,
    recent::RecentWrites,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use std::sync::atomic::Ordering;

/// One chunk of a bucket: `(key, value)` entries in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketChunk {
    /// The entries.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the bucket ends with this chunk.
    pub complete: bool,
}

/// Checks a received chunk of `bucket` that should start after `after`: keys strictly
/// increasing and after `after`, each in `bucket`, keys and values within the store's limits.
pub fn check_chunk(
    bucket: u8,
    after: Option<&[u8]>,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> std::result::Result<(), String> {
    let mut previous = after;
    for (i, (key, value)) in entries.iter().enumerate() {
        if key.is_empty() || key.len() > MAX_STATE_KEY {
            return Err(format!("entry {i}: a key of {} bytes", key.len()));
        }
        if value.len() > MAX_STATE_VALUE {
            return Err(format!("entry {i}: a value of {} bytes", value.len()));
        }
        if bucket_of(key) != bucket {
            return Err(format!(
                "entry {i}: key {} belongs to bucket {}, not {bucket}",
                hex::encode(key),
                bucket_of(key)
            ));
        }
        if previous.is_some_and(|p| key.as_slice() <= p) {
            return Err(format!("entry {i}: keys not strictly increasing"));
        }
        previous = Some(key);
    }
    Ok(())
}

impl StateSnapshot<'_> {
    /// The entries of `bucket` after `after` (all of them if `None`), in key order, up to
    /// about `max_bytes` of keys and values (at least one entry if any remains).
    pub fn bucket_chunk(
        &self,
        bucket: u8,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<BucketChunk> {
        let start: Vec<u8> = match after {
            Some(key) => [&[bucket][..], key, &[0][..]].concat(),
            None => vec![bucket],
        };
        let mut entries = Vec::new();
        let mut bytes = 0;
        let iter = self.iterator_from(&start);
        for item in iter {
            let (skey, raw) = item.map_err(Error::rocks("iterate"))?;
            if skey.first() != Some(&bucket) {
                return Ok(BucketChunk {
                    entries,
                    complete: true,
                });
            }
            if bytes >= max_bytes && !entries.is_empty() {
                return Ok(BucketChunk {
                    entries,
                    complete: false,
                });
            }
            let (_, value) = crate::layout::split_value(&raw)?;
            bytes += skey.len() + value.len();
            entries.push((skey[1..].to_vec(), value.to_vec()));
        }
        Ok(BucketChunk {
            entries,
            complete: true,
        })
    }
}

fn bucket_range(bucket: u8) -> (Vec<u8>, Vec<u8>) {
    // Keys of bucket b are b‖key: the range [b, b+1) (the last bucket ends at [0xff, 0xff..]).
    let from = vec![bucket];
    let to = match bucket.checked_add(1) {
        Some(next) => vec![next],
        None => vec![0xff; MAX_STATE_KEY + 2],
    };
    (from, to)
}

impl Store {
    /// Stages a checked chunk of `bucket` (see [`check_chunk`]).
    pub fn stage(&self, bucket: u8, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let cf = self.staging_cf();
        let mut batch = WriteBatch::default();
        for (key, value) in entries {
            if bucket_of(key) != bucket {
                return Err(Error::Corrupt {
                    what: "staged entry",
                    reason: format!("key {} is not in bucket {bucket}", hex::encode(key)),
                });
            }
            batch.put_cf(cf, [&[bucket][..], key].concat(), value);
        }
        self.db.write(batch).map_err(Error::rocks("stage"))
    }

    /// Stages `bucket` of the current state as it is (a local copy: a state sync keeps the
    /// buckets its target has in common with the installed state instead of downloading
    /// them). Replaces what was staged for the bucket. Written in batches of about
    /// `batch_bytes`; no transaction may run on the store meanwhile.
    pub fn stage_current_bucket(&self, bucket: u8, batch_bytes: usize) -> Result<()> {
        self.clear_staged_bucket(bucket)?;
        let (from, _) = bucket_range(bucket);
        let iter = self.db.iterator_cf(
            self.state_cf(),
            IteratorMode::From(&from, Direction::Forward),
        );
        let cf = self.staging_cf();
        let mut batch = WriteBatch::default();
        for item in iter {
            let (skey, raw) = item.map_err(Error::rocks("iterate"))?;
            if skey.first() != Some(&bucket) {
                break;
            }
            let (_, value) = crate::layout::split_value(&raw)?;
            batch.put_cf(cf, &skey, value);
            if batch.size_in_bytes() >= batch_bytes {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(Error::rocks("stage"))?;
            }
        }
        self.db.write(batch).map_err(Error::rocks("stage"))
    }

    /// The last key staged for `bucket` (the download resumes after it), if any.
    pub fn staged_resume_key(&self, bucket: u8) -> Result<Option<Vec<u8>>> {
        let (_, to) = bucket_range(bucket);
        let mut iter = self.db.iterator_cf(
            self.staging_cf(),
            IteratorMode::From(&to, Direction::Reverse),
        );
        match iter.next() {
            Some(item) => {
                let (key, _) = item.map_err(Error::rocks("iterate"))?;
                // A reverse seek lands on the last key at or before `to`.
                Ok(
                    (key.first() == Some(&bucket) && key.as_ref() < to.as_slice())
                        .then(|| key[1..].to_vec()),
                )
            }
            None => Ok(None),
        }
    }

    /// The lattice hash of what is staged for `bucket`.
    pub fn staged_bucket_hash(&self, bucket: u8) -> Result<LtHash> {
        let mut lattice = LtHash::default();
        let iter = self.db.iterator_cf(
            self.staging_cf(),
            IteratorMode::From(&[bucket], Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(Error::rocks("iterate"))?;
            if key.first() != Some(&bucket) {
                break;
            }
            lattice.insert(&key[1..], &value);
        }
        Ok(lattice)
    }

    /// Drops what is staged for `bucket`.
    pub fn clear_staged_bucket(&self, bucket: u8) -> Result<()> {
        let (from, to) = bucket_range(bucket);
        self.db
            .delete_range_cf(self.staging_cf(), from, to)
            .map_err(Error::rocks("clear staging"))
    }

    /// Drops everything staged.
    pub fn clear_staging(&self) -> Result<()> {
        for b in 0..BUCKETS {
            self.clear_staged_bucket(b as u8)?;
        }
        Ok(())
    }

    /// Replaces the state with the staged one, together with `extra` caller writes, as the
    /// module docs describe. No transaction may run on the store meanwhile.
    pub fn install_staged(&self, extra: Vec<crate::WriteOp>) -> Result<()> {
        // The marker carries the caller's writes, so a finished install always has them.
        let carried: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = extra
            .into_iter()
            .map(|op| (op.column.name().to_string(), op.key, op.value))
            .collect();
        let encoded = bcs::to_bytes(&carried).map_err(|e| Error::Corrupt {
            what: "install marker",
            reason: e.to_string(),
        })?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let mut marker = WriteBatch::default();
        marker.put_cf(self.internal_cf(), KEY_INSTALLING, encoded);
        self.db
            .write_opt(marker, &synced)
            .map_err(Error::rocks("install marker"))?;
        self.finish_install()
    }

    /// Rewrites the state from staging and completes the install with the writes the
    /// `installing` marker carries (also run by `open` when it finds the marker).
    pub(crate) fn finish_install(&self) -> Result<()> {
        let Some(raw) = self
            .db
            .get_cf(self.internal_cf(), KEY_INSTALLING)
            .map_err(Error::rocks("get"))?
        else {
            return Ok(());
        };
        let carried: Vec<(String, Vec<u8>, Option<Vec<u8>>)> =
            bcs::from_bytes(&raw).map_err(|e| Error::Corrupt {
                what: "install marker",
                reason: e.to_string(),
            })?;
        let mut extra = Vec::with_capacity(carried.len());
        for (name, key, value) in carried {
            let column = crate::Column::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .ok_or_else(|| Error::Corrupt {
                    what: "install marker",
                    reason: format!("unknown column `{name}`"),
                })?;
            extra.push(crate::WriteOp { column, key, value });
        }
        let mut cs = self.commit.lock();
        let seq = cs.last_seq + 1;
        let state_cf = self.state_cf();
        let mut hash = StateHash::default();
        for b in 0..BUCKETS {
            let bucket = b as u8;
            let (from, to) = bucket_range(bucket);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(state_cf, &from, &to);
            let iter = self.db.iterator_cf(
                self.staging_cf(),
                IteratorMode::From(&from, Direction::Forward),
            );
            for item in iter {
                let (key, value) = item.map_err(Error::rocks("iterate"))?;
                if key.first() != Some(&bucket) {
                    break;
                }
                hash.bucket_mut(bucket).insert(&key[1..], &value);
                batch.put_cf(state_cf, &key, state_value(seq, &value));
            }
            self.db.write(batch).map_err(Error::rocks("install"))?;
        }
        let internal = self.internal_cf();
        let mut last = WriteBatch::default();
        for b in 0..BUCKETS {
            let bucket = b as u8;
            last.put_cf(
                internal,
                lattice_key(bucket),
                hash.bucket(bucket).to_bytes(),
            );
        }
        last.put_cf(internal, KEY_SEQ, seq.to_le_bytes());
        last.put_cf(internal, KEY_LATTICE_SEQ, seq.to_le_bytes());
        let journal_end = [PREFIX_JOURNAL, &[0xff; 9][..]].concat();
        last.delete_range_cf(internal, PREFIX_JOURNAL, &journal_end);
        for op in extra {
            let cf = self.cf(op.column);
            match op.value {
                Some(v) => last.put_cf(cf, op.key, v),
                None => last.delete_cf(cf, op.key),
            }
        }
        last.delete_cf(internal, KEY_INSTALLING);
        let (_, end) = bucket_range(0xff);
        last.delete_range_cf(self.staging_cf(), vec![0u8], end);
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db
            .write_opt(last, &synced)
            .map_err(Error::rocks("install"))?;
        // The in-memory views follow the new state.
        cs.root_pending.clear();
        self.root.reset(seq, hash)?;
        cs.recent = RecentWrites::new(seq, cs.recent.capacity());
        cs.last_seq = seq;
        self.visible_seq.store(seq, Ordering::Release);
        Ok(())
    }
}
