//! The inbound network router: the p2p handler. It only maps the sender's network key to its
//! validator index, drops acknowledgements and proofs that do not come from their signer or
//! author, and forwards each message, by kind, to its task's bounded queue with
//! `try_send` (it never waits: the transport's receive loop must not stall). A full queue drops
//! the message and counts it (see each queue's bound in `limits.rs`). Requests for blocks,
//! batches, committed ranges, the sync status and certified checkpoints are answered from the
//! store, each answer capped at [`MAX_RANGE_BYTES`] encoded.

use crate::{
    driver::PeerMessage,
    metrics::Metrics,
    peers::Peers,
    persist,
    snapshots::Snapshots,
    verify::{PeerBatch, PendingBatches},
};
use keel_authority::checkpoint_store;
use keel_consensus::ConsensusMessage;
use keel_p2p::{
    Handler, Notification, Request, Response,
    protocol::{MAX_RANGE_BYTES, MAX_REQUEST_ITEMS, RANGE_ANCHOR_BLOCKS},
};
use keel_storage::{Column, Store};
use keel_types::{
    Batch, BatchAck, CheckpointSignature, Digest, Height, ProofOfAvailability, PublicKey,
    QuorumCertificate, SignedBlock, ValidatorIndex,
};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where the router forwards what arrives.
pub struct Router {
    /// Validator indexes by network key.
    pub peers: Peers,
    /// Consensus messages → consensus driver.
    pub consensus: mpsc::Sender<PeerMessage>,
    /// Batches → batch verifier.
    pub batches: mpsc::Sender<PeerBatch>,
    /// Each author's places in the batch queue.
    pub pending_batches: Arc<PendingBatches>,
    /// Acknowledgements → batching task.
    pub acks: mpsc::Sender<BatchAck>,
    /// Proofs → proof verifier.
    pub proofs: mpsc::Sender<ProofOfAvailability>,
    /// Checkpoint signatures → checkpoint task.
    pub checkpoint_signatures: mpsc::Sender<(ValidatorIndex, CheckpointSignature)>,
    /// Blocks and batches served to peers.
    pub store: Arc<Store>,
    /// Ancestors returned with each requested block.
    pub served_ancestors: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The epoch's genesis QC (the answer to a certificates request before any other).
    pub genesis_qc: QuorumCertificate,
    /// State snapshots at checkpoint heights, served to state-syncing peers.
    pub snapshots: Snapshots,
    /// Bytes of state entries in one served chunk.
    pub chunk_bytes: usize,
    /// Test-only: answer sync requests with lies (see `faults.rs`; debug builds only).
    pub lie_in_sync: bool,
}

impl Handler<ConsensusMessage> for Router {
    fn on_notification(&self, from: PublicKey, message: Notification<ConsensusMessage>) {
        let Some(sender) = self.peers.index(&from) else {
            return;
        };
        let m = &self.metrics;
        match message {
            Notification::Consensus(c) => {
                if self.consensus.try_send((sender, c)).is_err() {
                    m.consensus_dropped.inc();
                }
            }
            Notification::Batch(batch) => {
                if !self.pending_batches.reserve(sender) {
                    m.batches_refused.inc();
                } else if self.batches.try_send((sender, batch)).is_err() {
                    self.pending_batches.release(sender);
                    m.batches_refused.inc();
                }
            }
            // An acknowledgement comes from its signer and a proof from its batch's author,
            // never relayed: anything else is dropped before it costs a signature check.
            Notification::BatchAck(ack) => {
                if ack.signer != sender || self.acks.try_send(ack).is_err() {
                    m.acks_dropped.inc();
                }
            }
            Notification::Proof(proof) => {
                if proof.info.author != sender || self.proofs.try_send(proof).is_err() {
                    m.proofs_dropped.inc();
                }
            }
            // Like acknowledgements, a checkpoint signature comes from its signer.
            Notification::CheckpointSignature(s) => {
                let reason = if s.signer != sender {
                    "relayed"
                } else if self.checkpoint_signatures.try_send((sender, s)).is_err() {
                    "queue_full"
                } else {
                    return;
                };
                m.checkpoints
                    .signatures_refused
                    .with_label_values(&[reason])
                    .inc();
            }
        }
    }

    fn on_request(&self, _from: PublicKey, request: Request) -> Response {
        let response = self.answer(request);
        if self.lie_in_sync {
            return crate::faults::corrupt(response);
        }
        response
    }
}

impl Router {
    /// The honest answer to a request.
    fn answer(&self, request: Request) -> Response {
        match request {
            Request::Blocks { digests } if digests.len() <= MAX_REQUEST_ITEMS => {
                match blocks_with_ancestors(&self.store, &digests, self.served_ancestors) {
                    Ok(blocks) => Response::Blocks(blocks),
                    Err(e) => Response::Refused(format!("cannot read blocks: {e}")),
                }
            }
            Request::Batches { digests } if digests.len() <= MAX_REQUEST_ITEMS => {
                let mut found = Vec::new();
                let mut bytes_out = 0;
                for d in digests {
                    if let Ok(Some(bytes)) = self.store.get(Column::Batches, &d.0)
                        && let Ok(batch) = bcs::from_bytes::<Batch>(&bytes)
                    {
                        // Capped: the client asks again for what is left out.
                        bytes_out += bytes.len();
                        if bytes_out > MAX_RANGE_BYTES && !found.is_empty() {
                            break;
                        }
                        found.push(batch);
                    }
                }
                Response::Batches(found)
            }
            Request::LatestCheckpoint => {
                checkpoint_response(checkpoint_store::latest_certified(&self.store))
            }
            Request::Checkpoint { sequence } => {
                checkpoint_response(checkpoint_store::certified(&self.store, sequence))
            }
            Request::EpochEnd { epoch } => {
                checkpoint_response(checkpoint_store::epoch_end(&self.store, epoch))
            }
            Request::Blocks { .. } | Request::Batches { .. } => {
                Response::Refused(format!("more than {MAX_REQUEST_ITEMS} items"))
            }
            Request::Certificates => match persist::load_safety(&self.store) {
                // Persisted before any signature left: it holds the certificates that brought
                // this node to every round it signed in (what the amnesia guard relies on).
                Ok(safety) => {
                    let safety = safety.unwrap_or_default();
                    Response::Certificates {
                        high_qc: safety.high_qc.unwrap_or_else(|| self.genesis_qc.clone()),
                        last_tc: safety.last_tc,
                    }
                }
                Err(e) => Response::Refused(format!("cannot read safety data: {e}")),
            },
            Request::SyncStatus => {
                let status = persist::commit_root(&self.store).and_then(|root| {
                    Ok((
                        root.map(|r| r.height).unwrap_or_default(),
                        persist::retained_from(&self.store)?,
                    ))
                });
                match status {
                    Ok((committed, retained_from)) => Response::SyncStatus {
                        committed,
                        retained_from,
                    },
                    Err(e) => Response::Refused(format!("cannot read the sync status: {e}")),
                }
            }
            Request::CommittedRange { from, to } => {
                if from.0 == 0 || to < from || to.0 - from.0 >= MAX_REQUEST_ITEMS as u64 {
                    return Response::Refused(format!(
                        "range {from}..={to}: must start at 1 or above and hold at most \
                         {MAX_REQUEST_ITEMS} heights"
                    ));
                }
                match persist::retained_from(&self.store) {
                    Ok(retained) if from < retained => {
                        return Response::Refused(format!(
                            "heights below {retained} are pruned here"
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Response::Refused(format!("cannot read blocks: {e}")),
                }
                match committed_range(&self.store, from, to) {
                    Ok(blocks) => Response::CommittedRange { from, blocks },
                    Err(e) => Response::Refused(format!("cannot read blocks: {e}")),
                }
            }
            Request::StateSummary { checkpoint } => match self.snapshot_height(checkpoint) {
                Ok(height) => match self.snapshots.summary(height) {
                    Some(checksums) => Response::StateSummary { checksums },
                    None => Response::Refused(format!(
                        "no state snapshot of checkpoint {checkpoint} here any more"
                    )),
                },
                Err(refusal) => *refusal,
            },
            Request::StateChunk {
                checkpoint,
                bucket,
                after,
            } => match self.snapshot_height(checkpoint) {
                Ok(height) => match self
                    .snapshots
                    .chunk(height, bucket, after, self.chunk_bytes)
                {
                    Ok(chunk) => Response::StateChunk {
                        entries: chunk.entries,
                        complete: chunk.complete,
                    },
                    Err(e) => Response::Refused(e),
                },
                Err(refusal) => *refusal,
            },
        }
    }
}

fn checkpoint_response(
    found: keel_authority::Result<Option<keel_types::CertifiedCheckpoint>>,
) -> Response {
    match found {
        Ok(c) => Response::Checkpoint(c),
        Err(e) => Response::Refused(format!("cannot read checkpoints: {e}")),
    }
}

impl Router {
    /// The height certified checkpoint `sequence` covers, or the refusal to answer with.
    fn snapshot_height(&self, sequence: u64) -> Result<Height, Box<Response>> {
        match checkpoint_store::certified(&self.store, sequence) {
            Ok(Some(c)) => Ok(c.checkpoint.last_height),
            Ok(None) => Err(Box::new(Response::Refused(format!(
                "no certified checkpoint {sequence} here"
            )))),
            Err(e) => Err(Box::new(Response::Refused(format!(
                "cannot read checkpoints: {e}"
            )))),
        }
    }
}

/// The blocks asked for, each followed by up to `ancestors` of its ancestors.
fn blocks_with_ancestors(
    store: &Store,
    digests: &[Digest],
    ancestors: usize,
) -> anyhow::Result<Vec<SignedBlock>> {
    let mut out: Vec<SignedBlock> = Vec::new();
    for d in digests {
        let mut next = *d;
        for _ in 0..=ancestors {
            let Some(block) = persist::block_by_digest(store, &next)? else {
                break;
            };
            next = block.block.parent();
            out.push(block);
        }
    }
    Ok(out)
}

/// Committed blocks at `from..=to`, then up to [`RANGE_ANCHOR_BLOCKS`] more (so the client can
/// prove the range committed), stopping at the first missing height or past
/// [`MAX_RANGE_BYTES`] (at least one block is sent).
fn committed_range(store: &Store, from: Height, to: Height) -> anyhow::Result<Vec<SignedBlock>> {
    let mut out = Vec::new();
    let mut bytes = 0;
    let last = to.0.saturating_add(RANGE_ANCHOR_BLOCKS as u64);
    for h in from.0..=last {
        let Some(record) = persist::committed_at(store, Height(h))? else {
            break;
        };
        bytes += bcs::serialized_size(&record.block)?;
        if bytes > MAX_RANGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(record.block);
    }
    Ok(out)
}
