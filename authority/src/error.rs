//! Why a transaction is not admitted. Every variant is something a client can read and act on;
//! [`Rejection::Overloaded`] is the back-pressure signal the API maps to HTTP 429.

use keel_types::{ChainId, Digest, Nonce, TimestampMs};

/// A transaction refused at admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Malformed or oversize bytes, or a static rule broken (names the field).
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// Signed for another network.
    #[error("wrong chain id: this node runs {expected}, the transaction is for {found}")]
    WrongChain {
        /// This node's chain.
        expected: ChainId,
        /// The transaction's chain.
        found: ChainId,
    },
    /// The expiry has passed.
    #[error("expired at {expiry} ms, now is {now} ms")]
    Expired {
        /// The transaction's expiry.
        expiry: TimestampMs,
        /// The node's clock.
        now: TimestampMs,
    },
    /// The expiry is further ahead than the node keeps transactions.
    #[error("expiry {expiry} ms is more than {max_ms} ms ahead of now ({now} ms)")]
    ExpiryTooFar {
        /// The transaction's expiry.
        expiry: TimestampMs,
        /// The node's clock.
        now: TimestampMs,
        /// The longest lifetime accepted.
        max_ms: u64,
    },
    /// The nonce was already used.
    #[error("nonce {nonce} already used: the account's next nonce is {next}")]
    StaleNonce {
        /// The transaction's nonce.
        nonce: Nonce,
        /// The account's next nonce.
        next: Nonce,
    },
    /// The nonce is beyond the window of future nonces the node buffers.
    #[error("nonce {nonce} is too far ahead of the account's next nonce {next} (window {window})")]
    NonceTooFarAhead {
        /// The transaction's nonce.
        nonce: Nonce,
        /// The account's next nonce.
        next: Nonce,
        /// The window.
        window: u64,
    },
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// The sender's committed balance does not cover the fee.
    #[error("the fee {fee} is more than the sender's balance {balance}")]
    CannotPayFee {
        /// The transaction's fee.
        fee: u64,
        /// The sender's committed balance.
        balance: u64,
    },
    /// Already pending (same digest), or another pending transaction has this nonce.
    #[error("duplicate of pending transaction {0}")]
    Duplicate(Digest),
    /// The mempool or this sender's share of it is full; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// Why execution or batch handling could not proceed. These are the node's own problems (or
/// a caller's sequencing mistake), never a client's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] keel_storage::Error),
    /// Something this node stored does not decode.
    #[error("corrupt {what} in the store: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A block was handed to execution out of order.
    #[error("block at height {found} handed to execution, expected height {expected}")]
    OutOfOrder {
        /// The next height to execute.
        expected: keel_types::Height,
        /// The height given.
        found: keel_types::Height,
    },
    /// A block of another epoch than the executed state's.
    #[error(
        "block at height {height} is of epoch {found}, the executed state is in epoch {expected}"
    )]
    WrongEpoch {
        /// The block's height.
        height: keel_types::Height,
        /// The executed state's epoch.
        expected: keel_types::Epoch,
        /// The block's epoch.
        found: keel_types::Epoch,
    },
    /// The store holds another network's genesis.
    #[error("the data directory holds genesis {found}, the configuration names {expected}")]
    GenesisMismatch {
        /// The configured genesis.
        expected: keel_types::Digest,
        /// The stored one.
        found: keel_types::Digest,
    },
    /// A batch a committed block orders could not be obtained.
    #[error("batch {digest} is not stored and could not be fetched: {reason}")]
    MissingBatch {
        /// The batch.
        digest: keel_types::Digest,
        /// Why the fetch failed.
        reason: String,
    },
}

/// Result of execution and batch handling.
pub type Result<T, E = Error> = std::result::Result<T, E>;
