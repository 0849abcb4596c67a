//! keel-authority: turns client transactions into batches and committed blocks into state.
//!
//! ```text
//!  bytes ─decode(limits)─▶ SignedTransaction ─checks, batch-verify─▶ Mempool ─take─▶ Dissemination
//!  Dissemination: seal batch ─▶ peers verify + store + ack ─▶ proof of availability ─▶ ProofQueue
//!  consensus (in `node`): ProofQueue::pull as payload, validate_payload before voting
//!  committed block ─resolve_batches─▶ transactions ─Executor (parallel OCC)─▶ state, receipts, marker
//! ```
//!
//! Modules: [`mempool`] (admission), [`batching`] (sealing, acknowledgements → proofs),
//! [`dissemination`] (the batch/ack/proof protocol over a [`BatchNetwork`] trait, the proof
//! queue, batch resolution), [`execution`] (one transaction's semantics), [`executor`] (blocks:
//! optimistic parallel runs, in-order validation, one atomic commit), [`state`] (the key layout).
//!
//! Invariants:
//! - a transaction is admitted only with a valid signature, the node's chain id, an unexpired
//!   expiry within the lifetime limit, and a nonce inside the account's window; the pool never
//!   exceeds its limits (a full pool answers [`Rejection::Overloaded`]);
//! - a validator acknowledges a batch only after storing it and verifying every signature in it;
//!   a proof carries acknowledgements from more than 1/3 of the stake, so an honest holder exists;
//! - execution gives the receipts and state of sequential execution in block order, whatever the
//!   number of workers; a block's writes, receipts and executed marker commit atomically, so
//!   after a crash execution resumes at the marker's height + 1.
//!
//! This crate does not depend on consensus (the node adapts [`Dissemination`] to consensus's
//! payload traits), does no networking itself, and reads no files or environment.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batching;
pub mod cache;
pub mod dissemination;
pub mod error;
pub mod execution;
pub mod executor;
pub mod mempool;
pub mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use batching::{AckError, BatchConfig, BatchMaker, ProofBuilder};
pub use dissemination::{
    BatchNetwork, BatchRejection, BatchVerifier, Dissemination, DisseminationConfig,
    DisseminationDeps, ProofQueue, resolve_batches, store_batch,
};
pub use error::{Error, Rejection, Result};
pub use executor::{BlockOutcome, BlockToExecute, Executor, ExecutorConfig, GenesisState, Timings};
pub use mempool::{Mempool, MempoolConfig, NonceReader};
pub use state::ExecutedMarker;
