//! Receipts: what executing a transaction did, identical on every honest node.
//!
//! A transaction in a committed block ends in one of three ways:
//! - [`ExecutionStatus::Success`]: its ops applied and its nonce was consumed;
//! - [`ExecutionStatus::Failed`]: an op could not apply (balance, compare-and-swap), nothing but
//!   the nonce changed, and the reason is recorded;
//! - [`ExecutionStatus::Discarded`]: it could not run at all (wrong nonce, expired), so state is
//!   untouched and the nonce is not consumed; the same transaction may still execute later.

use crate::{
    account::Address,
    digest::Digest,
    ids::{Height, Nonce, TimestampMs},
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a transaction's ops did not apply (its nonce is still consumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureReason {
    /// A transfer needed more than the sender had at that point.
    InsufficientBalance {
        /// The failing op.
        op_index: u32,
        /// The amount to move.
        needed: u64,
        /// The sender's balance before the op.
        available: u64,
    },
    /// A transfer would overflow the recipient's balance.
    BalanceOverflow {
        /// The failing op.
        op_index: u32,
    },
    /// A compare-and-swap found another version.
    VersionMismatch {
        /// The failing op.
        op_index: u32,
        /// The version the op expected (0: absent).
        expected: u64,
        /// The version found (0: absent).
        found: u64,
    },
    /// The object's version counter is exhausted.
    VersionOverflow {
        /// The failing op.
        op_index: u32,
    },
    /// A governance vote was refused (not a validator, another epoch, a key in use, ...).
    GovernanceRefused {
        /// The failing op.
        op_index: u32,
        /// Why, naming the value at fault.
        reason: String,
    },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::InsufficientBalance {
                op_index,
                needed,
                available,
            } => write!(
                f,
                "ops[{op_index}]: insufficient balance: needed {needed}, available {available}"
            ),
            FailureReason::BalanceOverflow { op_index } => {
                write!(f, "ops[{op_index}]: recipient balance would overflow")
            }
            FailureReason::VersionMismatch {
                op_index,
                expected,
                found,
            } => write!(
                f,
                "ops[{op_index}]: expected version {expected}, found {found}"
            ),
            FailureReason::VersionOverflow { op_index } => {
                write!(f, "ops[{op_index}]: object version overflow")
            }
            FailureReason::GovernanceRefused { op_index, reason } => {
                write!(f, "ops[{op_index}]: governance vote refused: {reason}")
            }
        }
    }
}

/// Why a transaction was not run (its nonce is not consumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiscardReason {
    /// The nonce was already used by another transaction.
    StaleNonce {
        /// The transaction's nonce.
        nonce: Nonce,
        /// The account's next nonce.
        next: Nonce,
    },
    /// Earlier nonces of the sender have not executed yet.
    FutureNonce {
        /// The transaction's nonce.
        nonce: Nonce,
        /// The account's next nonce.
        next: Nonce,
    },
    /// The block's timestamp is past the transaction's expiry.
    Expired {
        /// The transaction's expiry.
        expiry: TimestampMs,
        /// The block's timestamp.
        block_timestamp: TimestampMs,
    },
    /// The sender's balance does not cover the transaction's fee.
    CannotPayFee {
        /// The fee.
        fee: u64,
        /// The sender's balance.
        balance: u64,
    },
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscardReason::StaleNonce { nonce, next } => {
                write!(f, "nonce {nonce} already used (next is {next})")
            }
            DiscardReason::FutureNonce { nonce, next } => {
                write!(
                    f,
                    "nonce {nonce} is ahead of the account's next nonce {next}"
                )
            }
            DiscardReason::Expired {
                expiry,
                block_timestamp,
            } => write!(
                f,
                "expired at {expiry} ms, before the block's timestamp {block_timestamp} ms"
            ),
            DiscardReason::CannotPayFee { fee, balance } => {
                write!(
                    f,
                    "the fee {fee} is more than the sender's balance {balance}"
                )
            }
        }
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionStatus {
    /// All ops applied.
    Success,
    /// No op applied; the nonce was consumed.
    Failed(FailureReason),
    /// Not run; nothing changed.
    Discarded(DiscardReason),
}

impl ExecutionStatus {
    /// Whether the transaction consumed its nonce (it succeeded or failed, as opposed to
    /// being discarded).
    pub fn is_executed(&self) -> bool {
        !matches!(self, ExecutionStatus::Discarded(_))
    }
}

/// One state change a transaction made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// An account's new balance and nonce.
    Account {
        /// The account.
        address: Address,
        /// Its balance after the transaction.
        balance: u64,
        /// Its next nonce after the transaction.
        nonce: Nonce,
    },
    /// One of the sender's objects was created or overwritten.
    ObjectWritten {
        /// The object's key.
        key: Vec<u8>,
        /// Its new version.
        version: u64,
    },
    /// One of the sender's objects was deleted.
    ObjectDeleted {
        /// The object's key.
        key: Vec<u8>,
    },
    /// A governance vote was counted.
    GovernanceVote {
        /// The change voted for ([`crate::CommitteeChange::digest`]).
        change: Digest,
        /// The last height of the epoch, when the change is scheduled.
        scheduled_until: Option<Height>,
    },
}

/// The outcome of one transaction in a committed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction.
    pub transaction: Digest,
    /// Its sender.
    pub sender: Address,
    /// Its nonce.
    pub nonce: Nonce,
    /// How it ended.
    pub status: ExecutionStatus,
    /// What it changed, in key order (empty unless it succeeded or failed).
    pub effects: Vec<Effect>,
    /// The height of the block that executed it.
    pub height: Height,
    /// The committed block that executed it.
    pub block: Digest,
    /// Its position among the block's transactions (in proof order, then batch order).
    pub position: u32,
    /// The fee it paid (0 when discarded).
    pub fee: u64,
}
