//! keel-authority: turns client transactions into batches and committed blocks into state.
//!
//! In progress: admission and the mempool ([`Mempool`]), batching ([`BatchMaker`]) and proofs of
//! availability ([`ProofBuilder`]). Parallel execution comes next.
//!
//! ```text
//!  bytes ─decode(limits)─▶ SignedTransaction ─precheck─▶ batch-verify signatures ─▶ Mempool ─take─▶ batch
//! ```
//!
//! Invariants: a transaction is admitted only with a valid signature, the node's chain id, an
//! unexpired expiry within the lifetime limit, and a nonce inside the account's window; a
//! digest or (sender, nonce) is pending at most once; the pool never exceeds its limits (a full
//! pool answers [`Rejection::Overloaded`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batching;
pub mod error;
pub mod execution;
pub mod executor;
pub mod mempool;
pub mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use batching::{AckError, BatchConfig, BatchMaker, ProofBuilder};
pub use error::{Error, Rejection, Result};
pub use executor::{BlockOutcome, BlockToExecute, Executor, ExecutorConfig, GenesisState};
pub use mempool::{Mempool, MempoolConfig, NonceReader};
pub use state::ExecutedMarker;
