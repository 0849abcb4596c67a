//! The node's side of the network: who is who (validator index ↔ network key), the p2p
//! handler that routes what arrives, and the [`BatchNetwork`] the authority sends through.

use crate::{persist, service::Shared};
use keel_authority::{BatchNetwork, store_batch};
use keel_consensus::ConsensusMessage;
use keel_p2p::{Handler, Network, Notification, Request, Response, protocol::MAX_REQUEST_ITEMS};
use keel_storage::Column;
use keel_types::{
    Batch, BatchAck, Committee, Digest, ProofOfAvailability, PublicKey, SignedBlock, ValidatorIndex,
};
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, Weak, atomic::Ordering},
};

/// The network type the node runs.
pub type Net = Network<ConsensusMessage>;

/// Most ancestors returned with a requested block.
const MAX_ANCESTORS: usize = 64;

/// Validator indexes and network keys.
#[derive(Debug, Clone)]
pub struct Peers {
    keys: Vec<PublicKey>,
    by_key: HashMap<PublicKey, ValidatorIndex>,
}

impl Peers {
    /// The committee's network keys.
    pub fn new(committee: &Committee) -> Self {
        let keys: Vec<PublicKey> = committee
            .validators()
            .iter()
            .map(|v| v.network_key)
            .collect();
        let by_key = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, ValidatorIndex(i as u32)))
            .collect();
        Peers { keys, by_key }
    }

    /// The network key of validator `index`.
    pub fn key(&self, index: ValidatorIndex) -> Option<&PublicKey> {
        self.keys.get(index.as_usize())
    }

    /// The validator holding network key `key`.
    pub fn index(&self, key: &PublicKey) -> Option<ValidatorIndex> {
        self.by_key.get(key).copied()
    }
}

/// The started network, reachable from the handler and the authority (set once at start).
#[derive(Clone, Default)]
pub struct NetHandle {
    net: Arc<OnceLock<Net>>,
    peers: Arc<OnceLock<Peers>>,
    runtime: Arc<OnceLock<tokio::runtime::Handle>>,
}

impl NetHandle {
    /// Sets the network once it has started, and the runtime blocking fetches run on.
    pub fn set(&self, net: Net, peers: Peers, runtime: tokio::runtime::Handle) {
        let _ = self.net.set(net);
        let _ = self.peers.set(peers);
        let _ = self.runtime.set(runtime);
    }

    fn send(&self, to: ValidatorIndex, message: &Notification<ConsensusMessage>) {
        if let (Some(net), Some(key)) = (self.net.get(), self.peers.get().and_then(|p| p.key(to)))
            && let Err(e) = net.send(key, message)
        {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }

    /// Sends to one validator (not to this node).
    pub fn send_consensus(&self, to: ValidatorIndex, message: ConsensusMessage) {
        self.send(to, &Notification::Consensus(message));
    }

    /// Sends to every other validator.
    pub fn broadcast(&self, message: &Notification<ConsensusMessage>) {
        if let Some(net) = self.net.get()
            && let Err(e) = net.broadcast(message)
        {
            tracing::debug!(error = %e, "broadcast failed");
        }
    }

    /// Asks validator `from` for a request's answer.
    pub async fn request(
        &self,
        from: ValidatorIndex,
        request: &Request,
    ) -> Result<Response, String> {
        let net = self.net.get().ok_or("network not started")?;
        let key = self
            .peers
            .get()
            .and_then(|p| p.key(from))
            .ok_or_else(|| format!("no validator {from}"))?;
        net.request(key, request).await.map_err(|e| e.to_string())
    }
}

impl BatchNetwork for NetHandle {
    fn broadcast_batch(&self, batch: &Batch) {
        self.broadcast(&Notification::Batch(batch.clone()));
    }

    fn send_ack(&self, to: ValidatorIndex, ack: &BatchAck) {
        self.send(to, &Notification::BatchAck(ack.clone()));
    }

    fn broadcast_proof(&self, proof: &ProofOfAvailability) {
        self.broadcast(&Notification::Proof(proof.clone()));
    }

    /// Blocks the calling thread (the executor's, never an async task) on the runtime.
    fn fetch_batch(&self, digest: &Digest, holders: &[ValidatorIndex]) -> Result<Batch, String> {
        let handle = self.runtime.get().ok_or("network not started")?;
        let mut last = String::from("no holder to ask");
        for holder in holders {
            let request = Request::Batches {
                digests: vec![*digest],
            };
            match handle.block_on(self.request(*holder, &request)) {
                Ok(Response::Batches(batches)) => {
                    if let Some(b) = batches.into_iter().find(|b| b.digest() == *digest) {
                        return Ok(b);
                    }
                    last = format!("validator {holder} does not have it");
                }
                Ok(other) => last = format!("validator {holder} answered {other:?}"),
                Err(e) => last = format!("validator {holder}: {e}"),
            }
        }
        Err(last)
    }
}

/// Routes what peers send. Returns at once: heavy work goes to the blocking pool or to the
/// consensus driver's bounded queue.
pub struct NodeHandler {
    /// Weak, so the network (which owns the handler) does not keep the node alive.
    pub shared: Weak<Shared>,
}

impl Handler<ConsensusMessage> for NodeHandler {
    fn on_notification(&self, from: PublicKey, message: Notification<ConsensusMessage>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(sender) = shared.peers.index(&from) else {
            return;
        };
        match message {
            Notification::Consensus(m) => shared.on_consensus_message(sender, m),
            Notification::Batch(batch) => on_batch(&shared, sender, batch),
            Notification::BatchAck(ack) => {
                let now = crate::service::now_ms();
                if let Err(e) = shared.dissemination.lock().on_ack(&ack, now) {
                    tracing::error!(error = %e, "cannot record an acknowledgement");
                }
            }
            Notification::Proof(proof) => {
                let now = crate::service::now_ms();
                shared.dissemination.lock().on_proof(proof, now);
            }
        }
    }

    fn on_request(&self, _from: PublicKey, request: Request) -> Response {
        let Some(shared) = self.shared.upgrade() else {
            return Response::Refused("shutting down".into());
        };
        match request {
            Request::Blocks { digests } if digests.len() <= MAX_REQUEST_ITEMS => {
                match blocks_with_ancestors(&shared, &digests) {
                    Ok(blocks) => Response::Blocks(blocks),
                    Err(e) => Response::Refused(format!("cannot read blocks: {e}")),
                }
            }
            Request::Batches { digests } if digests.len() <= MAX_REQUEST_ITEMS => {
                let mut found = Vec::new();
                for d in digests {
                    if let Ok(Some(bytes)) = shared.store.get(Column::Batches, &d.0)
                        && let Ok(batch) = bcs::from_bytes::<Batch>(&bytes)
                    {
                        found.push(batch);
                    }
                }
                Response::Batches(found)
            }
            Request::Blocks { .. } | Request::Batches { .. } => {
                Response::Refused(format!("more than {MAX_REQUEST_ITEMS} items"))
            }
            _ => Response::Refused("not served by this node".into()),
        }
    }
}

/// The blocks asked for, each followed by up to [`MAX_ANCESTORS`] of its ancestors.
fn blocks_with_ancestors(shared: &Shared, digests: &[Digest]) -> anyhow::Result<Vec<SignedBlock>> {
    let mut out: Vec<SignedBlock> = Vec::new();
    for d in digests {
        let mut next = *d;
        for _ in 0..=MAX_ANCESTORS {
            let Some(block) = persist::block_by_digest(&shared.store, &next)? else {
                break;
            };
            next = block.block.parent();
            out.push(block);
        }
    }
    Ok(out)
}

/// Verifies a peer's batch on the blocking pool, stores it and acknowledges it. At most
/// [`BATCH_VERIFIERS`] run at once; up to [`MAX_WAITING_BATCHES`] more wait their turn, and
/// beyond that a batch is dropped and counted (the author gathers enough acknowledgements
/// from the others; this node fetches the batch if a block orders it).
fn on_batch(shared: &Arc<Shared>, sender: ValidatorIndex, batch: Batch) {
    if shared.batches_waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING_BATCHES {
        shared.batches_waiting.fetch_sub(1, Ordering::AcqRel);
        shared.metrics.batches_refused.inc();
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let permit = shared.batch_permits.clone().acquire_owned().await;
        shared.batches_waiting.fetch_sub(1, Ordering::AcqRel);
        let Ok(permit) = permit else { return };
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let verifier = shared.dissemination.lock().verifier();
            match verifier.check(sender, &batch) {
                Ok(ack) => {
                    if let Err(e) = store_batch(&shared.store, &batch) {
                        tracing::error!(error = %e, "cannot store a batch");
                        return;
                    }
                    shared.metrics.batches_acknowledged.inc();
                    shared.net.send_ack(sender, &ack);
                }
                Err(e) => {
                    shared.metrics.batches_refused.inc();
                    tracing::warn!(%sender, error = %e, "refused a batch");
                }
            }
        });
        let _ = verified.await;
    });
}

/// Peer batches verified at once.
pub const BATCH_VERIFIERS: usize = 4;
/// Peer batches waiting for a verifier before new ones are dropped.
pub const MAX_WAITING_BATCHES: usize = 256;
