//! keel-types: the vocabulary every Keel crate shares.
//!
//! ```text
//!  KeyPair ──sign(Domain, epoch, chain id, bcs(content))──▶ Signature
//!  Transaction ─▶ Batch ─acks─▶ ProofOfAvailability ─▶ Block ─votes─▶ QuorumCertificate
//!                                                        └─timeouts─▶ TimeoutCertificate
//!  executed state ─▶ Checkpoint ─signatures─▶ CertifiedCheckpoint
//! ```
//!
//! Main types: [`Digest`] (blake3; every id), [`PublicKey`]/[`KeyPair`]/[`Signature`] (ed25519),
//! [`Committee`] (stake and quorum arithmetic), [`SignedTransaction`], [`Batch`],
//! [`ProofOfAvailability`], [`SignedBlock`], [`Vote`], [`QuorumCertificate`], [`Timeout`],
//! [`TimeoutCertificate`], [`Checkpoint`], [`CheckpointSignature`], [`CertifiedCheckpoint`],
//! [`Receipt`]; [`state_proof`] holds the state root's Merkle tree and bucket proofs, and
//! [`address`] the one rule for validator addresses.
//!
//! Invariants:
//! - Every id is `blake3(tag || bcs(content))`; bcs is canonical, so equal content has one id.
//! - Every signature is over `blake3(domain tag || epoch || chain id || bcs(content))` with a
//!   distinct [`Domain`] per message kind, so no signature verifies as another kind of message.
//! - A certificate verifies only if its signers are distinct committee members in ascending
//!   order, of the right epoch, whose stake passes the threshold (quorum: more than 2/3; validity:
//!   more than 1/3), and whose signatures are all valid.
//! - Decoding untrusted bytes is size-capped and never panics ([`encoding::decode`]).
//!
//! This crate does no I/O, keeps no state and knows nothing of storage, networking or consensus
//! rules beyond what a single message or certificate can show about itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod address;
pub mod batch;
pub mod certificates;
pub mod checkpoint;
pub mod committee;
pub mod consensus;
pub mod crypto;
pub mod digest;
pub mod encoding;
pub mod error;
pub mod fees;
pub mod governance;
pub mod ids;
pub mod multisig;
pub mod receipt;
pub mod state_proof;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod transaction;

pub use account::{Account, Address, Object, ObjectId};
pub use batch::{Batch, BatchAck, BatchInfo, ProofOfAvailability};
pub use checkpoint::{CertifiedCheckpoint, Checkpoint, CheckpointSignature};
pub use committee::{Committee, ValidatorInfo};
pub use consensus::{
    Block, CertificateVerifier, QuorumCertificate, SignedBlock, Timeout, TimeoutCertificate,
    TimeoutData, Uncached, Vote, VoteData, genesis_digest,
};
pub use crypto::{Domain, KeyPair, PublicKey, Signature};
pub use digest::Digest;
pub use error::{Error, Result};
pub use fees::FeeSchedule;
pub use governance::{
    CommitteeChange, EpochParams, EpochState, PendingChange, PossessionProof, ScheduledChange,
};
pub use ids::{ChainId, Epoch, Height, Nonce, Round, Stake, TimestampMs, ValidatorIndex};
pub use multisig::{MultiSignature, Threshold};
pub use receipt::{DiscardReason, Effect, ExecutionStatus, FailureReason, Receipt};
pub use transaction::{
    MAX_KEY_LEN, MAX_OPS, MAX_TRANSACTION_BYTES, MAX_VALUE_LEN, Op, SignedTransaction, Transaction,
};
