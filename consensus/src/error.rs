//! The error type of keel-consensus.
//!
//! Errors are split by cause: [`Error::Invalid`] (a peer sent something that fails
//! verification), [`Error::WrongSender`] / [`Error::NotLeader`] / [`Error::PayloadTooLarge`] /
//! [`Error::PayloadTooHeavy`]
//! (a peer sent something no honest peer sends; found by [`crate::Core::precheck`] before any
//! signature check), [`Error::Unsafe`] (the safety rules refuse to sign), [`Error::Stale`] /
//! [`Error::TooFarAhead`] (a message outside the window this replica keeps),
//! [`Error::NotMember`] (an answer from outside the committee), and [`Error::Config`] (this
//! replica's own configuration is unusable).

use keel_types::{Round, ValidatorIndex};

/// Errors from verifying messages and applying the safety rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The message failed verification.
    #[error("invalid message: {0}")]
    Invalid(#[from] keel_types::Error),
    /// The message is for a round this replica has left behind.
    #[error("stale message for round {round} (current round {current})")]
    Stale {
        /// The message's round.
        round: Round,
        /// This replica's round.
        current: Round,
    },
    /// The message is for a round too far ahead to buffer.
    #[error("message for round {round} is more than {window} rounds ahead of round {current}")]
    TooFarAhead {
        /// The message's round.
        round: Round,
        /// This replica's round.
        current: Round,
        /// The window.
        window: u64,
    },
    /// A proposal from a validator that does not lead its round.
    #[error("proposal for round {round} from {author}, but the leader is {leader}")]
    NotLeader {
        /// The round.
        round: Round,
        /// Who proposed.
        author: ValidatorIndex,
        /// Who leads.
        leader: ValidatorIndex,
    },
    /// A message whose sender is not its author (a peer relaying or impersonating).
    #[error("message authored by {author} arrived from {from}")]
    WrongSender {
        /// The peer it came from.
        from: ValidatorIndex,
        /// The author it names.
        author: ValidatorIndex,
    },
    /// A proposal carrying more proofs of availability than the configured limit.
    #[error("proposal carries {len} proofs, the limit is {limit}")]
    PayloadTooLarge {
        /// Proofs carried.
        len: usize,
        /// [`crate::CoreConfig::max_block_proofs`].
        limit: usize,
    },
    /// A proposal ordering more batch bytes than the configured limit.
    #[error("proposal orders {bytes} bytes of batches, the limit is {limit}")]
    PayloadTooHeavy {
        /// The sum of its proofs' `num_bytes`.
        bytes: u64,
        /// [`crate::CoreConfig::max_block_bytes`].
        limit: u64,
    },
    /// A message from a validator outside the committee.
    #[error("{from} is not a committee member")]
    NotMember {
        /// The sender.
        from: ValidatorIndex,
    },
    /// The safety rules refuse to sign.
    #[error("safety rules refuse: {0}")]
    Unsafe(String),
    /// A configuration value the core cannot run with (our own setup is wrong, no peer is).
    #[error("invalid consensus config: {field}: {reason}")]
    Config {
        /// The field, as written in a config file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result with keel-consensus' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
