//! keel-api: the node's HTTP surfaces, as axum routers over a [`NodeApi`] handle.
//!
//! ```text
//!  client ─HTTP─▶ public router (/v1/..., /healthz, /readyz, /metrics) ─┐
//!  operator ─HTTP─▶ admin router (bearer token, /admin/...) ─────────────┼─▶ dyn NodeApi (node)
//! ```
//!
//! - [`public_router`]: submit one transaction (JSON) or a batch (bcs), transaction status and
//!   receipt, accounts, objects, blocks, certified checkpoints, node status, the committee as
//!   this node sees it (connections and recent activity), a server-sent-events stream of
//!   committed transactions, health and readiness, Prometheus metrics, the OpenAPI document at
//!   [`OPENAPI_PATH`], and at `/` a status page: one self-contained HTML document (inline
//!   script and style, served with a CSP that allows nothing else) that reads this API.
//! - [`admin_router`]: status, peers, log level and graceful shutdown, behind a bearer token
//!   compared in constant time; reconfiguration routes slot in under `/admin/`.
//!
//! Invariants: every body, path and query is size-limited and validated; client mistakes get a
//! 4xx with the [`error::ErrorJson`] body naming the field at fault; node failures get a 500
//! that does not leak internals. This crate holds no state of its own and knows nothing of
//! storage or consensus: the node implements [`NodeApi`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod dto;
pub mod error;
pub mod openapi;
pub mod public;

pub use admin::admin_router;
pub use error::{ApiError, ErrorJson};
pub use openapi::OPENAPI_PATH;
pub use public::public_router;

use dto::{
    BlockJson, ChangeRequest, ConsensusJson, EpochJson, PeerJson, StageKeysJson, StagedKeysJson,
    StatusJson, TxLookup, VoteJson,
};
use keel_types::{
    Account, Address, CertifiedCheckpoint, Digest, Height, Object, Receipt, SignedTransaction,
};
use std::sync::Arc;

/// An event-stream subscription: the receipts, and the subscriber slot it holds (given back
/// when the subscription is dropped, i.e. when the client goes away).
pub struct Subscription {
    /// Receipts of each executed block.
    pub receipts: tokio::sync::broadcast::Receiver<Arc<Vec<Receipt>>>,
    /// The slot.
    pub slot: SubscriberSlot,
}

/// One of at most `max` concurrent subscribers, counted in a shared counter.
pub struct SubscriberSlot(Arc<std::sync::atomic::AtomicUsize>);

impl SubscriberSlot {
    /// Takes a slot if fewer than `max` are taken.
    pub fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscriberSlot(count.clone()))
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why a submitted transaction was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The transaction is malformed or breaks a rule (the message names it): HTTP 400.
    #[error("{0}")]
    Invalid(String),
    /// The node is full; retry later: HTTP 429.
    #[error("{0}")]
    Overloaded(String),
}

/// What the API needs from the node. Methods may block briefly (storage reads, signature
/// checks); the routers call them off the async executor where that matters.
pub trait NodeApi: Send + Sync + 'static {
    /// Admits transactions; one result per input, in order. A transaction already pending
    /// is accepted again (submission is idempotent).
    fn submit(&self, txs: Vec<SignedTransaction>) -> Vec<Result<Digest, SubmitError>>;
    /// Where a transaction stands.
    fn transaction(&self, digest: &Digest) -> Result<TxLookup, String>;
    /// An account's committed state (all zero if it never existed).
    fn account(&self, address: &Address) -> Result<Account, String>;
    /// An object's committed state.
    fn object(&self, owner: &Address, key: &[u8]) -> Result<Option<Object>, String>;
    /// A committed block by height (`None`: the latest).
    fn block(&self, height: Option<Height>) -> Result<Option<BlockJson>, String>;
    /// The lowest committed height this node still holds: blocks below it, and the receipts
    /// written at those heights, were pruned (1 when nothing was).
    fn retained_from(&self) -> Result<Height, String>;
    /// A certified checkpoint by sequence (`None`: the latest), if this node holds it.
    fn checkpoint(&self, sequence: Option<u64>) -> Result<Option<CertifiedCheckpoint>, String>;
    /// Node status.
    fn status(&self) -> Result<StatusJson, String>;
    /// This node's view of consensus: round, timeout, leaders (admin status).
    fn consensus(&self) -> ConsensusJson;
    /// Receipts of each executed block, as it executes; refused (with why) while the
    /// event-stream subscriber cap is reached.
    fn subscribe(&self) -> Result<Subscription, String>;
    /// Metrics in the Prometheus text format.
    fn metrics(&self) -> String;
    /// `Ok` when the node is connected and making progress; otherwise why not.
    fn readiness(&self) -> Result<(), String>;
    /// Peers and their connection state.
    fn peers(&self) -> Vec<PeerJson>;
    /// Changes the log filter (tracing `EnvFilter` syntax).
    fn set_log_level(&self, filter: &str) -> Result<(), String>;
    /// Starts a graceful shutdown.
    fn shutdown(&self);
    /// The epoch: committee, pending and scheduled changes (admin).
    fn epoch(&self) -> Result<EpochJson, String>;
    /// Signs this validator's vote for a committee change and submits it (admin). A refused
    /// change is a [`SubmitError::Invalid`] naming the value at fault.
    fn vote(&self, change: ChangeRequest) -> Result<VoteJson, SubmitError>;
    /// Stages new keys for a rotation of this validator's keys (admin); an error is the
    /// node's (it cannot write the key files).
    fn stage_keys(&self, request: StageKeysJson) -> Result<StagedKeysJson, String>;
}
