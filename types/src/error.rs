//! The error type of keel-types: every way a value can be malformed, mis-signed or mis-certified.

use crate::{
    digest::Digest,
    ids::{ChainId, Epoch, ValidatorIndex},
};

/// Errors from decoding, validating and verifying shared types.
///
/// Every variant names the field or value at fault so that a client or an operator can act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Input bytes exceed the cap for this kind of message.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was being decoded or checked.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },
    /// Bytes that do not decode as the expected type.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// A public key that is not a valid ed25519 point.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// Why the key was rejected.
        reason: String,
    },
    /// A signature that does not verify under the claimed key and domain.
    #[error("invalid signature on {what}")]
    InvalidSignature {
        /// What was signed.
        what: &'static str,
    },
    /// A field that violates the data model's rules.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field at fault, e.g. `ops[2].key`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A message signed for another chain.
    #[error("wrong chain id: expected {expected}, found {found}")]
    WrongChainId {
        /// The chain id this node runs.
        expected: ChainId,
        /// The chain id in the message.
        found: ChainId,
    },
    /// A message or certificate for another epoch.
    #[error("wrong epoch: expected {expected}, found {found}")]
    WrongEpoch {
        /// The committee's epoch.
        expected: Epoch,
        /// The epoch in the message.
        found: Epoch,
    },
    /// A signer index that the committee does not have.
    #[error("unknown signer {index} (committee has {size} validators)")]
    UnknownSigner {
        /// The index claimed.
        index: ValidatorIndex,
        /// Committee size.
        size: usize,
    },
    /// The same signer appears twice, or signers are not in ascending order.
    #[error("duplicate or unordered signer {index} in {what}")]
    DuplicateSigner {
        /// The index that repeats or breaks the order.
        index: ValidatorIndex,
        /// The certificate kind.
        what: &'static str,
    },
    /// Signers whose stake does not reach the threshold.
    #[error(
        "insufficient stake for {what}: {stake} of {total}, need more than {needed_fraction} of total"
    )]
    InsufficientStake {
        /// The certificate kind.
        what: &'static str,
        /// The signers' stake.
        stake: u64,
        /// The committee's total stake.
        total: u64,
        /// The threshold as a fraction, e.g. `2/3`.
        needed_fraction: &'static str,
    },
    /// A certificate whose parts disagree (e.g. a TC whose high QC is not the highest reported).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The certificate or message kind.
        what: &'static str,
        /// What is inconsistent.
        reason: String,
    },
    /// A committee definition that cannot be used.
    #[error("invalid committee: {reason}")]
    InvalidCommittee {
        /// What is wrong.
        reason: String,
    },
    /// A digest that does not match the content it names.
    #[error("digest mismatch for {what}: expected {expected}, computed {computed}")]
    DigestMismatch {
        /// What was hashed.
        what: &'static str,
        /// The claimed digest.
        expected: Digest,
        /// The digest of the content received.
        computed: Digest,
    },
}

/// Result with keel-types' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
