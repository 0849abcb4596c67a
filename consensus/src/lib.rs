//! keel-consensus: pipelined two-chain HotStuff (Jolteon / DiemBFT v4) as a deterministic state
//! machine, and (behind the `sim` feature) a simulator that runs whole committees under faults.
//!
//! ```text
//!   network ─▶ Core::precheck(from, &msg) ─▶ ConsensusMessage::verify(committee) ─▶ Verified ─┐
//!              (no signature work)            (proposals: header only)                      │
//!   timers, fetched blocks (verify_block: in full) ─────────────────────────────────────────┤
//!                                                                                           ▼
//!        embedder carries out, in order ◀── Vec<Action> ◀──────────── Core::handle(now, Input)
//!   (PersistSafety = synced write, then release its messages; Broadcast; SetTimer; Commit; …)
//!
//!   amnesiac start: RequestCertificates ─▶ peers serve Core::certificate_answer ─▶
//!                   CertificateAnswer::verify ─▶ Input::PeerCertificates ─▶ floor persisted
//! ```
//!
//! Main types: [`Core`] (the state machine, built from [`CoreDeps`]; tunables in
//! [`CoreConfig`], serde-loadable with `DEFAULT_*` constants), [`SafetyRules`]/[`SafetyData`]
//! (what may be signed, and the state persisted before any signature leaves), [`Pacemaker`]
//! (rounds, timeouts adapted to round latency, back-off), [`VoteAggregator`]/[`TimeoutAggregator`]
//! (QCs and TCs), [`BlockTree`] (2-chain commits), [`LeaderElection`] (who proposes:
//! [`Election`] runs [`Reputation`], from committed history, or [`WeightedRoundRobin`]),
//! [`amnesia`] (the guard
//! of a replica that lost its safety data: [`AnswerTally`], [`CertificateAnswer`]), and
//! `sim::Simulation` (deterministic committee simulator).
//!
//! Receiving a message takes three steps, cheapest first: [`Core::precheck`] refuses, from
//! the message's fields and the core's round alone, what the core would drop or no honest
//! peer sends (see [`precheck`]); verification checks signatures and certificates (a
//! proposal's header only); the core's payload validator checks a proposal's payload proofs,
//! only for the current leader's proposal it is about to vote for.
//!
//! Features: `sim` compiles the simulator module `sim` (and its RNG dependencies). It is
//! test machinery: this crate's tests and benchmarks turn it on through a dev-dependency on
//! the crate itself, so a normal build (the node's) neither compiles it nor depends, through
//! this crate, on `rand` or `rand_chacha`.
//!
//! Invariants:
//! - The core does no I/O, reads no clock and draws no randomness: equal inputs give equal
//!   outputs.
//! - No vote, timeout or proposal leaves before the safety data that records it is durable (a
//!   leader restarted within its round never proposes there again).
//! - A replica that starts without trustworthy safety data ([`RecoveryData::amnesiac`]) signs
//!   nothing until more than 2/3 of the stake has answered with its certificates, then nothing
//!   in a round it may have signed in before (see [`amnesia`]).
//! - A replica never votes twice in a round, and never votes for a block that does not extend
//!   the highest QC a quorum may have committed on (see [`safety`]).
//! - A replica votes only for its current round leader's proposal, whose record of failed
//!   leaders matches its election, and only after its [`PayloadValidator`] accepted the
//!   payload (the one path to a vote, fetched parents included).
//! - Leader election depends only on the committee and committed blocks; replicas whose
//!   committed history decides a round ([`LeaderElection::is_final`]) name the same leader
//!   (the simulator checks, in every round, the leaders honest replicas propose as or vote
//!   for).
//! - Committed blocks are delivered in height order, each exactly once per replica life.
//! - Every buffer is bounded: rounds in aggregators, pending blocks, the block tree.
//!
//! Not here: transports (keel-p2p), persistence (the embedder writes through keel-storage),
//! payload dissemination (the node implements [`PayloadSource`]/[`PayloadValidator`] over
//! keel-authority), reading config files (the node loads [`CoreConfig`] and passes it in).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregator;
pub mod amnesia;
pub mod block_tree;
pub mod core;
pub mod error;
pub mod interface;
pub mod leader;
pub mod message;
pub mod pacemaker;
pub mod precheck;
pub mod safety;
#[cfg(feature = "sim")]
pub mod sim;

pub use aggregator::{TimeoutAggregator, TimeoutOutcome, VoteAggregator, VoteOutcome};
pub use amnesia::{AnswerOutcome, AnswerTally};
pub use block_tree::{BlockTree, CommitRoot, CommittedBlock, InsertOutcome};
pub use core::Core;
pub use error::{Error, Result};
pub use interface::{
    Action, CoreConfig, CoreDeps, CoreStats, DEFAULT_MAX_BLOCK_PROOFS, DEFAULT_MAX_BLOCKS,
    DEFAULT_MAX_CLOCK_DRIFT_MS, DEFAULT_MAX_FUTURE_ROUNDS, DEFAULT_MAX_PENDING,
    DEFAULT_MIN_BLOCK_INTERVAL_MS, EmptyPayload, Input, PayloadLimit, PayloadSource,
    PayloadValidator, RecoveryData,
};
pub use leader::{
    Election, ElectionConfig, ElectionKind, LeaderElection, Reputation, ValidatorReputation,
    WeightedRoundRobin,
};
pub use message::{CertificateAnswer, CertificateCache, ConsensusMessage, Verified, verify_block};
pub use pacemaker::{
    DEFAULT_BASE_TIMEOUT_MS, DEFAULT_LATENCY_MULTIPLIER, DEFAULT_LATENCY_WINDOW,
    DEFAULT_MAX_BACKOFF_EXPONENT, DEFAULT_MIN_TIMEOUT_MS, Pacemaker, PacemakerConfig,
};
pub use safety::{SafetyData, SafetyRules};
