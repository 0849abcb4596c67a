//! The wire protocols: what each kind of stream carries and its size cap.
//!
//! One-way notifications ([`Notification`]) carry consensus messages (a type the node supplies,
//! so this crate does not depend on keel-consensus) and batch dissemination. Requests and
//! responses ([`Request`]/[`Response`]) serve block, batch, checkpoint and state sync. Every
//! response is verified by its consumer against the committee (signatures, digests, QCs) before
//! use; this layer only bounds and decodes.

use keel_types::{
    Batch, BatchAck, CertifiedCheckpoint, CheckpointSignature, Digest, Epoch, Height,
    ProofOfAvailability, QuorumCertificate, SignedBlock, TimeoutCertificate,
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

    /// The byte that opens a notification stream of this protocol's lane (requests travel
    /// on their own bidirectional streams and carry none).
    pub const fn tag(self) -> u8 {
        match self {
            Protocol::Consensus => 0,
            Protocol::Batches => 1,
            Protocol::Sync => 2,
        }
    }

    /// The notification lane a stream's first byte names (`None` for anything else).
    pub const fn lane_of(tag: u8) -> Option<Protocol> {
        match tag {
            0 => Some(Protocol::Consensus),
            1 => Some(Protocol::Batches),
            _ => None,
        }
    }

    /// Largest frame payload accepted (for [`Protocol::Sync`], a response's; requests are
    /// capped at [`MAX_REQUEST_BYTES`]).
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

/// Largest request frame payload accepted (a request names at most [`MAX_REQUEST_ITEMS`]
/// digests: about 8 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// Notification lanes: each peer has one outbound queue and one inbound byte budget per lane,
/// so consensus messages never wait behind, or are dropped because of, batches.
pub const LANES: [Protocol; 2] = [Protocol::Consensus, Protocol::Batches];

/// Most items asked for in one request (blocks, batches, heights of a committed range).
pub const MAX_REQUEST_ITEMS: usize = 256;
/// Committed blocks a server adds above a requested range, so that the range's top can be
/// proven committed by the 2-chain rule (a block, a child one round later, and a grandchild
/// carrying the child's QC).
pub const RANGE_ANCHOR_BLOCKS: usize = 2;
/// Most encoded bytes of blocks or batches in one sync answer (under the sync frame cap).
pub const MAX_RANGE_BYTES: usize = 12 << 20;

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
    /// A validator's signature over a checkpoint, broadcast by its signer.
    CheckpointSignature(CheckpointSignature),
}

impl<C> Notification<C> {
    /// The lane (and frame cap) this notification travels on: consensus messages and
    /// checkpoint signatures on [`Protocol::Consensus`], batch dissemination on
    /// [`Protocol::Batches`].
    pub fn protocol(&self) -> Protocol {
        match self {
            Notification::Consensus(_) | Notification::CheckpointSignature(_) => {
                Protocol::Consensus
            }
            Notification::Batch(_) | Notification::BatchAck(_) | Notification::Proof(_) => {
                Protocol::Batches
            }
        }
    }
}

/// Sync requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Blocks by digest.
    Blocks {
        /// At most [`MAX_REQUEST_ITEMS`].
        digests: Vec<Digest>,
    },
    /// The server's committed height and the lowest height it still serves.
    SyncStatus,
    /// Committed blocks at heights `from..=to` (at most [`MAX_REQUEST_ITEMS`] heights), plus
    /// up to [`RANGE_ANCHOR_BLOCKS`] committed blocks above `to` so that the client can prove
    /// the range committed (see [`crate::range_sync`]).
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
    /// The server's highest QC and last TC, as persisted with its safety data (what a
    /// validator that lost its safety data needs before it may sign again).
    Certificates,
    /// The latest certified checkpoint.
    LatestCheckpoint,
    /// The 256 bucket checksums of the state as of a checkpoint.
    StateSummary {
        /// The checkpoint's sequence.
        checkpoint: u64,
    },
    /// The certified checkpoint with this sequence (answered with [`Response::Checkpoint`]).
    Checkpoint {
        /// Its sequence.
        sequence: u64,
    },
    /// The certified checkpoint that ends `epoch` and names the next committee (answered with
    /// [`Response::Checkpoint`]; `None` while the epoch runs).
    EpochEnd {
        /// The epoch.
        epoch: Epoch,
    },
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
    /// The answer to [`Request::SyncStatus`] (a claim: the client checks what it fetches).
    SyncStatus {
        /// The highest committed height.
        committed: Height,
        /// The lowest committed height still served (older ones are pruned).
        retained_from: Height,
    },
    /// Committed blocks at consecutive heights from `from` (possibly fewer than asked, never
    /// more than [`MAX_RANGE_BYTES`] encoded).
    CommittedRange {
        /// The height of the first block.
        from: Height,
        /// The blocks, in height order.
        blocks: Vec<SignedBlock>,
    },
    /// Batches found.
    Batches(Vec<Batch>),
    /// The answer to [`Request::Certificates`] (the client verifies both).
    Certificates {
        /// The highest QC.
        high_qc: QuorumCertificate,
        /// The TC that ended the highest timed-out round known, if any.
        last_tc: Option<TimeoutCertificate>,
    },
    /// The certified checkpoint asked for (the latest, or by sequence), if the server has it.
    Checkpoint(Option<CertifiedCheckpoint>),
    /// The bucket checksums answering [`Request::StateSummary`], in bucket order.
    StateSummary {
        /// One per bucket.
        checksums: Vec<Digest>,
    },
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
