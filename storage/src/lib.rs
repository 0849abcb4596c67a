//! keel-storage: Keel's RocksDB storage engine.
//!
//! ```text
//!  Store::begin() ─▶ OccTransaction ── get (snapshot, recorded) / put / delete (buffered)
//!                          │
//!                          ▼ commit: lock → validate read+write set → one WriteBatch
//!   state CF (bucket‖key → version‖value) + other columns + seq + state-hash journal
//!                          │
//!                          ▼ journal entry (element seeds), in sequence order
//!        state-root thread: StateHash (LtHash per bucket) → state_root()
//! ```
//!
//! Main types: [`Store`] (one data directory, exclusively locked), [`StoreConfig`] (its tuning,
//! a serde section with `DEFAULT_*` constants), [`OccTransaction`] (optimistic transaction),
//! [`StateHash`]/[`LtHash`] (the incremental state root), [`Column`] (the caller-visible column
//! families).
//!
//! Modules, each depending only on those listed before it (no import cycles):
//! - `error`, `config`, `lthash` (the lattice hash per bucket; public, also as `state_root`),
//!   `recent` (the recent-writes index);
//! - `layout`: the on-disk format (column families, key and value encodings, size limits);
//! - `root_keeper`: the thread owning the bucket lattices and the state-hash journal;
//! - `db`: [`Store`] itself (open, lock, recovery, plain column reads and writes);
//! - `occ`: snapshots and optimistic transactions over the `state` column;
//! - `staging`: state transfer — serving a bucket as of a snapshot in chunks, staging a state
//!   received from peers, and installing it atomically (an interrupted install is finished at
//!   open).
//! - `range`: range deletes, batched point reads and manual compaction ([`KeyRange`]);
//! - `retention`: the pure pruning planner and its config section ([`PruningConfig`],
//!   [`retention::plan`]): which old heights a pass may delete.
//!
//! Invariants:
//! - Committed transactions are serialisable in commit order; a transaction never sees another's
//!   uncommitted or later writes; a conflicting commit fails with [`Error::Conflict`] naming the
//!   key and writes nothing.
//! - A commit's state writes, extra column writes, sequence number and state-hash journal entry
//!   are one RocksDB write batch: after a crash the store is at a commit boundary, and the
//!   state hash recovered at open equals the hash recomputed from a full scan.
//! - The state hash is updated in O(changed keys) per commit, on its own thread; queries wait
//!   for every earlier commit to be applied.
//! - [`Store::put_synced`] returns only after the write-ahead log is fsynced.
//! - One process holds a data directory at a time; a second `open` fails at once with
//!   [`Error::Locked`].
//! - A pruning plan never deletes a height above `executed - keep_blocks` nor at or above the
//!   checkpoint floor it is given (see [`retention`]).
//!
//! This crate does not know what the bytes it stores mean (accounts, receipts and blocks are
//! encoded by their owners), does no networking, and reads no configuration files.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod db;
mod error;
mod layout;
pub mod lthash;
mod occ;
mod range;
mod recent;
pub mod retention;
mod root_keeper;
mod staging;

/// [`lthash`] under its other public name (it computes the state root); both paths work.
pub use lthash as state_root;

pub use config::{
    DEFAULT_BACKGROUND_JOBS, DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_SYNC_COMMITS, StoreConfig,
};
pub use db::{Store, WriteOp};
pub use error::{Error, Result};
pub use layout::{Column, LATTICE_FLUSH_INTERVAL, MAX_STATE_KEY, MAX_STATE_VALUE};
pub use lthash::{LtHash, StateHash};
pub use occ::{CommitInfo, OccTransaction, StateSnapshot, Versioned};
pub use range::KeyRange;
pub use retention::{PruneInput, PrunePlan, PruningConfig};
pub use staging::{BucketChunk, check_chunk};
