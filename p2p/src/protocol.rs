//! The wire protocols: what each kind of stream carries and its size cap.
//!
//! One-way notifications ([`Notification`]) carry consensus messages (a type the node supplies,
//! so this crate does not depend on keel-consensus) and batch dissemination. Requests and
//! responses ([`Request`]/[`Response`]) serve block, batch, checkpoint and state sync. Every
//! response is verified by its consumer against the committee (signatures, digests, QCs) before
//! use; this layer only bounds and decodes.

use keel_types::{
    Batch, BatchAck, CertifiedCheckpoint, Digest, Height, ProofOfAvailability, QuorumCertificate,
    SignedBlock,
};
use serde::{Deserialize, Serialize};

/// The protocols, each with its own frame cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// Consensus messages (proposals, votes, timeouts, TCs).
    Consensus,
    /// Batches and their acknowledgements.
    Batches,
    /// Requests and responses for sync.
    Sync,
}

impl Protocol {
    /// The name used in errors and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Consensus => "consensus",
            Protocol::Batches => "batches",
            Protocol::Sync => "sync",
        }
    }

    /// Largest frame payload accepted.
    pub const fn frame_limit(self) -> usize {
        match self {
            // A proposal with a full payload of proofs and a TC.
            Protocol::Consensus => 2 << 20,
            // A full batch (keel_types::batch::MAX_BATCH_BYTES) plus framing slack.
            Protocol::Batches => 5 << 20,
            // Responses are paginated to stay under this.
            Protocol::Sync => 16 << 20,
        }
    }
}

/// Most items asked for in one request (blocks, batches).
pub const MAX_REQUEST_ITEMS: usize = 256;

/// One-way messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notification<C> {
    /// A consensus message.
    Consensus(C),
    /// A new batch from its author.
    Batch(Batch),
    /// A signed acknowledgement of a batch, sent back to its author.
    BatchAck(BatchAck),
    /// A proof of availability, broadcast by the batch's author so any leader can order it.
    Proof(ProofOfAvailability),
}

/// Sync requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Blocks by digest.
    Blocks {
        /// At most [`MAX_REQUEST_ITEMS`].
        digests: Vec<Digest>,
    },
    /// Committed blocks with the QCs that certify them, heights `from..=to`.
    CommittedRange {
        /// First height.
        from: Height,
        /// Last height (the server may return fewer).
        to: Height,
    },
    /// Batches by digest.
    Batches {
        /// At most [`MAX_REQUEST_ITEMS`].
        digests: Vec<Digest>,
    },
    /// The latest certified checkpoint.
    LatestCheckpoint,
    /// The entries of one state bucket as of a checkpoint.
    StateChunk {
        /// The checkpoint's sequence.
        checkpoint: u64,
        /// The bucket (see keel-storage's state root).
        bucket: u8,
        /// Resume after this key (pagination), if any.
        after: Option<Vec<u8>>,
    },
}

/// Sync responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blocks found (possibly fewer than asked).
    Blocks(Vec<SignedBlock>),
    /// Committed blocks in height order, each with a QC certifying it.
    CommittedRange(Vec<(SignedBlock, QuorumCertificate)>),
    /// Batches found.
    Batches(Vec<Batch>),
    /// The latest certified checkpoint, if any.
    Checkpoint(Option<CertifiedCheckpoint>),
    /// State entries (key, value) of a bucket, in key order; `complete` when the bucket ends.
    StateChunk {
        /// The entries.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        /// Whether this page ends the bucket.
        complete: bool,
    },
    /// The server cannot answer (unknown checkpoint, too many items, ...).
    Refused(String),
}
