//! Where the store puts its bytes: the data directory, the column families, the keys and
//! values of the `state` and `internal` columns, and the size limits.
//!
//! Every module that reads or writes RocksDB takes its names and encodings from here, so the
//! on-disk format is written down in one place and nothing else depends on the modules that
//! use it.
//!
//! A data directory holds [`LOCK_FILE`] (the process lock) and [`DB_DIR`] (one RocksDB
//! instance) with these column families:
//!
//! | column family | key | value |
//! |---|---|---|
//! | [`STATE_CF`] | [`state_key`]: `bucket(key) ‖ key` | [`state_value`]: `version (u64 LE) ‖ value` |
//! | [`Column`]s: `receipts`, `blocks`, `batches`, `consensus`, `meta` | caller-defined | caller-defined |
//! | [`INTERNAL_CF`] | [`KEY_SEQ`], [`KEY_LATTICE_SEQ`], [`lattice_key`], [`journal_key`], [`KEY_INSTALLING`] | see below |
//! | [`STAGING_CF`] | `bucket(key) ‖ key` | value (a state received from peers, see [`crate::staging`]) |
//!
//! `internal` belongs to this crate: the last commit sequence (u64 LE), the bucket lattices
//! ([`crate::LtHash::to_bytes`]) as of `lattice_seq` (u64 LE), and a journal of element seeds
//! changed by each commit after `lattice_seq` (bcs, keyed by the big-endian sequence so that
//! the journal iterates in commit order).

use crate::{
    error::{Error, Result},
    lthash::bucket_of,
};

/// Longest state key accepted, in bytes.
pub const MAX_STATE_KEY: usize = 512;
/// Largest state value accepted, in bytes.
pub const MAX_STATE_VALUE: usize = 128 * 1024;
/// Commits between two writes of the full bucket lattices (the journal is at most this long).
pub const LATTICE_FLUSH_INTERVAL: u64 = 1024;

/// The lock file in the data directory, holding the owner's pid.
pub(crate) const LOCK_FILE: &str = "keel.lock";
/// The RocksDB directory inside the data directory.
pub(crate) const DB_DIR: &str = "db";

/// The column family of the state (written only through optimistic transactions).
pub(crate) const STATE_CF: &str = "state";
/// The column family of the store's own bookkeeping.
pub(crate) const INTERNAL_CF: &str = "internal";
/// The column family where a state received from peers waits to be installed.
pub(crate) const STAGING_CF: &str = "staging";

/// `internal`: the sequence of the last commit.
pub(crate) const KEY_SEQ: &[u8] = b"seq";
/// `internal`: the sequence the stored lattices reflect.
pub(crate) const KEY_LATTICE_SEQ: &[u8] = b"lattice_seq";
/// `internal`: prefix of the per-bucket lattices.
pub(crate) const PREFIX_LATTICE: &[u8] = b"lattice/";
/// `internal`: prefix of the state-hash journal.
pub(crate) const PREFIX_JOURNAL: &[u8] = b"journal/";
/// `internal`: present while a staged state is being installed; holds the caller's writes
/// that complete the install (see [`crate::staging`]).
pub(crate) const KEY_INSTALLING: &[u8] = b"installing";

/// The column families callers may read and write directly. State is only written through
/// [`crate::OccTransaction`], so that the state hash follows every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// Transaction receipts.
    Receipts,
    /// Blocks and certificates.
    Blocks,
    /// Transaction batches.
    Batches,
    /// Consensus safety data and other consensus persistence.
    Consensus,
    /// Node metadata (e.g. the executed-height marker).
    Meta,
}

impl Column {
    /// All caller-visible columns.
    pub const ALL: [Column; 5] = [
        Column::Receipts,
        Column::Blocks,
        Column::Batches,
        Column::Consensus,
        Column::Meta,
    ];

    /// The RocksDB column family name.
    pub const fn name(self) -> &'static str {
        match self {
            Column::Receipts => "receipts",
            Column::Blocks => "blocks",
            Column::Batches => "batches",
            Column::Consensus => "consensus",
            Column::Meta => "meta",
        }
    }
}

/// The `state` key of a user key: its bucket, then the key, so a bucket is one key range.
pub(crate) fn state_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(bucket_of(key));
    out.extend_from_slice(key);
    out
}

/// The stored `state` value: the version of the commit that wrote it, then the value.
pub(crate) fn state_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(8 + value.len());
    stored.extend_from_slice(&version.to_le_bytes());
    stored.extend_from_slice(value);
    stored
}

/// Splits a stored state value into its version and payload.
pub(crate) fn split_value(raw: &[u8]) -> Result<(u64, &[u8])> {
    match raw.split_first_chunk::<8>() {
        Some((version, payload)) => Ok((u64::from_le_bytes(*version), payload)),
        None => Err(Error::Corrupt {
            what: "state value",
            reason: format!("{} bytes, shorter than its 8-byte version", raw.len()),
        }),
    }
}

/// The `internal` key of a bucket's stored lattice.
pub(crate) fn lattice_key(bucket: u8) -> Vec<u8> {
    [PREFIX_LATTICE, &[bucket]].concat()
}

/// The `internal` key of commit `seq`'s journal entry.
pub(crate) fn journal_key(seq: u64) -> Vec<u8> {
    [PREFIX_JOURNAL, &seq.to_be_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_values_round_trip() {
        let stored = state_value(7, b"abc");
        assert_eq!(split_value(&stored).unwrap(), (7, &b"abc"[..]));
        assert!(matches!(
            split_value(&[1, 2, 3]),
            Err(Error::Corrupt {
                what: "state value",
                ..
            })
        ));
    }

    #[test]
    fn journal_keys_sort_in_commit_order() {
        assert!(journal_key(255) < journal_key(256));
        assert!(journal_key(1).starts_with(PREFIX_JOURNAL));
        assert_eq!(state_key(b"k")[1..], b"k"[..]);
        assert_eq!(state_key(b"k")[0], bucket_of(b"k"));
    }
}
