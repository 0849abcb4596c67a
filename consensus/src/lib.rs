//! keel-consensus: pipelined two-chain HotStuff (Jolteon / DiemBFT v4) as a deterministic state
//! machine, and a simulator that runs whole committees under faults.
//!
//! ```text
//!   network ─▶ ConsensusMessage::verify(committee) ─▶ Verified ─┐
//!   timers, fetched blocks ──────────────────────────────────────┼─▶ Core::handle(now, Input)
//!                                                                │        │
//!        embedder carries out, in order ◀── Vec<Action> ◀────────┘        │
//!   (PersistSafety = synced write, then release its messages; Broadcast; SetTimer; Commit; …)
//! ```
//!
//! Main types: [`Core`] (the state machine), [`SafetyRules`]/[`SafetyData`] (what may be signed,
//! and the state persisted before any signature leaves), [`Pacemaker`] (rounds and back-off),
//! [`VoteAggregator`]/[`TimeoutAggregator`] (QCs and TCs), [`BlockTree`] (2-chain commits),
//! [`LeaderElection`] (who proposes), [`sim::Simulation`] (deterministic committee simulator).
//!
//! Invariants:
//! - The core does no I/O, reads no clock and draws no randomness: equal inputs give equal
//!   outputs.
//! - No vote or timeout leaves before the safety data that records it is durable.
//! - A replica never votes twice in a round, and never votes for a block that does not extend
//!   the highest QC a quorum may have committed on (see [`safety`]).
//! - Committed blocks are delivered in height order, each exactly once per replica life.
//! - Every buffer is bounded: rounds in aggregators, pending blocks, the block tree.
//!
//! Not here: transports (keel-p2p), persistence (the embedder writes through keel-storage),
//! payload dissemination (keel-authority implements [`PayloadSource`]/[`PayloadValidator`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregator;
pub mod block_tree;
pub mod core;
pub mod error;
pub mod leader;
pub mod message;
pub mod pacemaker;
pub mod safety;
pub mod sim;

pub use aggregator::{TimeoutAggregator, TimeoutOutcome, VoteAggregator, VoteOutcome};
pub use block_tree::{BlockTree, CommitRoot, CommittedBlock, InsertOutcome};
pub use core::{
    Action, Core, CoreConfig, CoreStats, EmptyPayload, Input, PayloadSource, PayloadValidator,
    RecoveryData,
};
pub use error::{Error, Result};
pub use leader::{LeaderElection, WeightedRoundRobin};
pub use message::{CertificateCache, ConsensusMessage, Verified, verify_block};
pub use pacemaker::{Pacemaker, PacemakerConfig};
pub use safety::{SafetyData, SafetyRules};
