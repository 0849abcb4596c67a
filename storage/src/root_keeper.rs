//! The state-hash keeper: a thread that owns the bucket lattices.
//!
//! Each commit writes its journal entry (old and new element seeds per changed key) in its own
//! atomic batch; entries are handed to this thread in sequence order, a few hundred at a time,
//! over a bounded channel.
//! The thread applies entries to the lattices and, every [`LATTICE_FLUSH_INTERVAL`] commits,
//! writes the lattices with the sequence they reflect and deletes the journal up to it, in one
//! batch. Recovery loads the lattices and replays the journal after their sequence, so the
//! recovered hash is exact whichever write a crash interrupted.
//!
//! The expansion of element seeds into lattice vectors is the costly part of a state-root
//! update; doing it here keeps it off the commit path and on another core. A full channel
//! blocks commits, so the lattices never fall more than the channel's capacity behind.
//! Queries ([`RootKeeper::state_hash`], [`RootKeeper::root`]) wait until every commit sent
//! before them is applied.
//!
//! The thread also keeps each bucket's checksum and recomputes, on a root query, only those of
//! buckets changed since the last one: execution asks for the root after every block, and a
//! block touches a few buckets' worth of work, not all 256 lattices (512 KiB).

use crate::{
    error::{Error, Result},
    layout::{INTERNAL_CF, KEY_LATTICE_SEQ, LATTICE_FLUSH_INTERVAL, journal_key, lattice_key},
    lthash::{BUCKETS, StateHash, root_of_checksums},
};
use keel_types::Digest;
use rocksdb::{DB, WriteBatch};
use serde::{Deserialize, Serialize};
use std::{
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

/// Commits that may wait in the channel before commits block.
const CHANNEL_CAPACITY: usize = 4096;

/// One element change in the state-hash journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JournalEntry {
    pub(crate) bucket: u8,
    pub(crate) old: Option<[u8; 32]>,
    pub(crate) new: Option<[u8; 32]>,
}

impl JournalEntry {
    pub(crate) fn apply(&self, hash: &mut StateHash) {
        let lattice = hash.bucket_mut(self.bucket);
        if let Some(old) = &self.old {
            lattice.remove_seed(old);
        }
        if let Some(new) = &self.new {
            lattice.insert_seed(new);
        }
    }
}

enum Message {
    Apply {
        seq: u64,
        entries: Vec<JournalEntry>,
    },
    Query(SyncSender<StateHash>),
    /// The state root only.
    Root(SyncSender<Digest>),
    /// A new state was installed at `seq` with these lattices (already written).
    Reset {
        seq: u64,
        hash: StateHash,
    },
}

/// The lattices as recovered at open, and the sequences they stand at.
pub(crate) struct Recovered {
    pub(crate) hash: StateHash,
    pub(crate) dirty: [bool; BUCKETS],
    pub(crate) lattice_seq: u64,
    pub(crate) applied_seq: u64,
}

struct Keeper {
    db: Arc<DB>,
    hash: StateHash,
    /// Buckets changed since the last flush to disk.
    dirty: [bool; BUCKETS],
    /// Each bucket's checksum, current for the buckets not marked `stale`.
    checksums: [Digest; BUCKETS],
    /// Buckets changed since their checksum was last computed.
    stale: [bool; BUCKETS],
    lattice_seq: u64,
    applied_seq: u64,
}

impl Keeper {
    fn run(mut self, rx: Receiver<Message>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Message::Apply { seq, entries } => {
                    for e in &entries {
                        e.apply(&mut self.hash);
                        self.dirty[usize::from(e.bucket)] = true;
                        self.stale[usize::from(e.bucket)] = true;
                    }
                    self.applied_seq = seq;
                    if seq - self.lattice_seq >= LATTICE_FLUSH_INTERVAL {
                        self.flush();
                    }
                }
                Message::Query(reply) => {
                    let _ = reply.send(self.hash.clone());
                }
                Message::Root(reply) => {
                    let _ = reply.send(self.root());
                }
                Message::Reset { seq, hash } => {
                    self.hash = hash;
                    self.applied_seq = seq;
                    self.lattice_seq = seq;
                    self.dirty = [false; BUCKETS];
                    self.stale = [true; BUCKETS];
                }
            }
        }
        // The store is closing: leave a short journal for the next open.
        self.flush();
    }

    /// The root over the bucket checksums, recomputing only the stale ones.
    fn root(&mut self) -> Digest {
        for (b, stale) in self.stale.iter_mut().enumerate() {
            if std::mem::take(stale) {
                self.checksums[b] = self.hash.bucket(b as u8).checksum();
            }
        }
        root_of_checksums(&self.checksums)
    }

    /// Writes the dirty lattices as of `applied_seq` and drops the journal they cover. On
    /// failure the journal still holds everything, so the next flush simply covers more.
    fn flush(&mut self) {
        if self.applied_seq == self.lattice_seq {
            return;
        }
        let Some(cf) = self.db.cf_handle(INTERNAL_CF) else {
            return;
        };
        let mut batch = WriteBatch::default();
        for (b, dirty) in self.dirty.iter().enumerate() {
            if *dirty {
                let bucket = b as u8;
                batch.put_cf(cf, lattice_key(bucket), self.hash.bucket(bucket).to_bytes());
            }
        }
        batch.put_cf(cf, KEY_LATTICE_SEQ, self.applied_seq.to_le_bytes());
        batch.delete_range_cf(cf, journal_key(0), journal_key(self.applied_seq + 1));
        match self.db.write(batch) {
            Ok(()) => {
                self.lattice_seq = self.applied_seq;
                self.dirty = [false; BUCKETS];
            }
            Err(e) => tracing::warn!(error = %e, "state lattice flush failed; will retry"),
        }
    }
}

/// The handle commits and queries use.
pub(crate) struct RootKeeper {
    tx: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
}

impl RootKeeper {
    pub(crate) fn spawn(db: Arc<DB>, recovered: Recovered) -> Result<Self> {
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let keeper = Keeper {
            db,
            hash: recovered.hash,
            dirty: recovered.dirty,
            checksums: [Digest::default(); BUCKETS],
            stale: [true; BUCKETS],
            lattice_seq: recovered.lattice_seq,
            applied_seq: recovered.applied_seq,
        };
        let thread = std::thread::Builder::new()
            .name("keel-state-root".into())
            .spawn(move || keeper.run(rx))
            .map_err(|e| Error::Open {
                path: Default::default(),
                reason: format!("cannot start the state-root thread: {e}"),
            })?;
        Ok(RootKeeper {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn sender(&self) -> Result<&SyncSender<Message>> {
        self.tx.as_ref().ok_or_else(keeper_gone)
    }

    /// Queues a commit's entries; must be called in sequence order (under the commit lock).
    pub(crate) fn apply(&self, seq: u64, entries: Vec<JournalEntry>) -> Result<()> {
        self.sender()?
            .send(Message::Apply { seq, entries })
            .map_err(|_| keeper_gone())
    }

    /// The state root after every commit queued so far.
    pub(crate) fn root(&self) -> Result<Digest> {
        self.ask(Message::Root)
    }

    /// Replaces the lattices after an install wrote them (with their sequence) to disk.
    pub(crate) fn reset(&self, seq: u64, hash: StateHash) -> Result<()> {
        self.sender()?
            .send(Message::Reset { seq, hash })
            .map_err(|_| keeper_gone())
    }

    /// The lattices after every commit queued so far.
    pub(crate) fn state_hash(&self) -> Result<StateHash> {
        self.ask(Message::Query)
    }

    /// Sends a query (after every commit queued so far) and waits for its answer.
    fn ask<T>(&self, query: impl FnOnce(SyncSender<T>) -> Message) -> Result<T> {
        let (reply_tx, reply_rx) = sync_channel(1);
        self.sender()?
            .send(query(reply_tx))
            .map_err(|_| keeper_gone())?;
        reply_rx.recv().map_err(|_| keeper_gone())
    }
}

fn keeper_gone() -> Error {
    Error::Corrupt {
        what: "state-root thread",
        reason: "the thread keeping the state hash has stopped".into(),
    }
}

impl Drop for RootKeeper {
    fn drop(&mut self) {
        // Closing the channel lets the thread drain, flush and exit; wait so that the database
        // handle it holds is released before the store's directory lock is.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
