//! The error type of keel-storage.
//!
//! [`Error::Conflict`] is an expected outcome of optimistic concurrency (retry the transaction);
//! [`Error::Locked`] and the size errors are caller mistakes; [`Error::Rocks`] and
//! [`Error::Corrupt`] mean the store itself is broken.

use std::path::PathBuf;

/// Errors from opening, reading and committing to the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process (or another handle in this one) holds the data directory.
    #[error(
        "data directory {path} is in use by another process ({holder}); stop it or choose another directory"
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// The data directory cannot be created or opened.
    #[error("cannot open data directory {path}: {reason}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key this transaction read or writes was changed by a commit after its snapshot.
    #[error(
        "conflict on key {}: expected version {expected:?}, found {found:?}",
        hex::encode(key)
    )]
    Conflict {
        /// The conflicting key (the first in key order).
        key: Vec<u8>,
        /// The version the transaction saw (`None`: absent).
        expected: Option<u64>,
        /// The version now committed (`None`: absent).
        found: Option<u64>,
    },
    /// A state key that is empty or over the limit.
    #[error("state key is {size} bytes, must be 1..={limit}")]
    KeySize {
        /// The key's length.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A state value over the limit.
    #[error("state value is {size} bytes, over the limit of {limit}")]
    ValueTooLarge {
        /// The value's length.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// RocksDB failed.
    #[error("rocksdb {op} failed: {reason}")]
    Rocks {
        /// The operation.
        op: &'static str,
        /// RocksDB's message.
        reason: String,
    },
    /// A config field out of range.
    #[error("{field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Stored bytes that do not have the expected layout.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
        move |e| Error::Rocks {
            op,
            reason: e.into_string(),
        }
    }
}

/// Result with keel-storage's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
