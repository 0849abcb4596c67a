//! keel-authority: turns client transactions into batches and committed blocks into state.
//!
//! ```text
//!  bytes ─decode(limits)─▶ SignedTransaction ─checks, batch-verify─▶ Mempool ─take─▶ Dissemination
//!  Dissemination (pure): seal ─▶ [StoreBatch, BroadcastBatch] ─▶ acks ─▶ [ProofReady]
//!      (late proof, or a silent designated verifier: [SendBatch] again to the non-signers)
//!  peer batch ─accept_peer_batch_with_info (designated verifier or second copy: verify every
//!      signature, blocking pool)─▶ [StoreBatch, SendAck];  otherwise ─▶ [StoreBatch] unverified
//!  proofs (own, and peers' after proof.verify) ─▶ ProofQueue (owned by the consensus driver):
//!      pull ─▶ leader's payload;   validate ─▶ vote (marks proposed);   remove_committed
//!  committed block ─resolve_batches (store, else BatchFetcher)─▶ transactions
//!      ─Executor (parallel OCC)─▶ state, receipts, executed marker (one atomic write)
//! ```
//!
//! Modules: [`config`] (every parameter struct and its `DEFAULT_*`), [`mempool`] (admission),
//! [`batching`] (sealing, acknowledgements → proofs), [`dissemination`] (this validator's
//! batch/ack/proof state machine and its [`DisseminationAction`]s), [`peer_batch`] (checking
//! and acknowledging peers' batches), [`proof_queue`] (proofs awaiting ordering, payload
//! validation), [`resolve`] (storing batches, resolving committed proofs through a
//! [`BatchFetcher`]), [`execution`] (one transaction's semantics), [`executor`] (blocks:
//! optimistic parallel runs, in-order validation, one atomic commit), [`genesis`] (the state a
//! chain starts from, fees included, and its markers), [`batch_ledger`] (each author's stored,
//! unordered batches: quota and expiry), [`governance`] (votes for committee changes and the
//! end of an epoch), [`state`] (the key layout),
//! [`checkpoints`] (the checkpoint state machine: signing every K blocks, aggregating peers'
//! signatures into certificates), [`checkpoint_store`] (where checkpoints are kept).
//!
//! Invariants:
//! - a transaction is admitted only with a valid signature, the node's chain id, an unexpired
//!   expiry within the lifetime limit, a nonce inside the account's window, and fees its
//!   sender's balance covers (with its other pending transactions); the pool never exceeds its
//!   limits (a full pool answers [`Rejection::Overloaded`]);
//! - a validator acknowledges a batch only after verifying every signature in it and storing
//!   it. Dissemination does no I/O, so this is an ordering contract the node honours: it
//!   carries out each returned action list in order, and a `StoreBatch` completes before the
//!   actions after it ([`accept_peer_batch`] answers `[StoreBatch, SendAck]`; an own batch is
//!   stored before it is broadcast or its proof, which carries the own acknowledgement, is
//!   ready);
//! - a proof carries acknowledgements from more than 1/3 of the stake, so an honest holder
//!   exists, and an honest validator that verified every signature in the batch (a validity
//!   certificate): execution never checks transaction signatures again, and a validator not
//!   designated for a batch's first copy stores it unverified without acknowledging it; only verified proofs enter a [`ProofQueue`], and a proposal is voted for only if
//!   each of its proofs verifies (or is identical to a queued one) and none repeats;
//! - execution gives the receipts and state of sequential execution in block order, whatever the
//!   number of workers; a block's writes, receipts and executed marker commit atomically, so
//!   after a crash execution resumes at the marker's height + 1;
//! - the epoch record (committee, votes, scheduled changes) is part of the executed state, so
//!   the end of an epoch and the next committee are deterministic and covered by the state
//!   root; a block executes only in its own epoch;
//! - a checkpoint is signed only as the successor of the previous checkpoint this node knows,
//!   each signature is persisted before it is broadcast, and peers' signatures are verified and
//!   buffered within a bounded window (see [`checkpoints`]).
//!
//! This crate does not depend on consensus (the node adapts the [`ProofQueue`] to consensus's
//! payload traits), does no networking itself (sends are actions, fetches go through
//! [`BatchFetcher`]), and reads no files or environment.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch_ledger;
pub mod batching;
pub mod cache;
pub mod checkpoint_store;
pub mod checkpoints;
pub mod config;
pub mod dissemination;
pub mod error;
pub mod execution;
pub mod executor;
pub mod genesis;
pub mod governance;
pub mod mempool;
pub mod peer_batch;
pub mod proof_queue;
pub mod resolve;
pub mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use batch_ledger::{BatchLedger, LedgerEntry, QuotaExceeded, Released, ledger_key};
pub use batching::{AckError, BatchMaker, ProofBuilder, designated_verifiers};
pub use checkpoints::{
    CertifiedOutcome, CheckpointAction, CheckpointDeps, CheckpointMachine, Executed,
    ExecutedOutcome, Restored, SignatureOutcome,
};
pub use config::{
    BatchConfig, CheckpointConfig, DisseminationConfig, ExecutorConfig, MempoolConfig,
};
pub use dissemination::{Dissemination, DisseminationAction, DisseminationDeps};
pub use error::{Error, Rejection, Result};
pub use executor::{BlockOutcome, BlockToExecute, Executor, Timings};
pub use genesis::{GenesisState, installed_state_ops, read_epoch_state};
pub use mempool::{AccountReader, Admission, Checked, Mempool};
pub use peer_batch::{
    BatchRejection, BatchVerifier, accept_peer_batch, accept_peer_batch_with_info,
};
pub use proof_queue::ProofQueue;
pub use resolve::{
    BatchFetcher, resolve_batches, store_acknowledged_batch, store_batch, store_held_batch,
};
pub use state::ExecutedMarker;
