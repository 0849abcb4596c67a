//! The inbound verifier tasks: peers' batches and proofs of availability are checked on the
//! blocking pool, off every task that consensus or batching needs.
//!
//! - Batches: at most `batch_verifiers` are verified at once; the router's bounded queue holds
//!   the ones waiting, each author at most its share ([`PendingBatches`]; full: the router
//!   drops and counts). A batch must first fit its author's
//!   quota in the [`BatchLedger`] (else it is refused before any signature check); one that
//!   passes [`accept_peer_batch`] is stored with its ledger entry, synced, and only then
//!   acknowledged to its author. Only a designated verifier checks the signatures of a
//!   batch's first copy (and acknowledges it); the others store it unverified, and verify and
//!   acknowledge a second copy (see `keel_authority::peer_batch`).
//! - Proofs: verified one at a time against the committee and handed to the consensus driver
//!   (`try_send`: a full driver queue drops and counts the proof; another leader can still
//!   propose its batch).
//!
//! Both follow the epoch ([`crate::epoch`]): a batch or proof is checked against the current
//! committee (another epoch's is refused), and a node outside the committee acknowledges no
//! batch.

use crate::{epoch::EpochWatch, metrics::Metrics, peers::Outbound};
use keel_authority::{
    BatchLedger, BatchVerifier, DisseminationAction, LedgerEntry, accept_peer_batch_with_info,
    store_acknowledged_batch, store_held_batch,
};
use keel_p2p::Notification;
use keel_storage::Store;
use keel_types::{
    Batch, BatchAck, ChainId, Committee, Digest, KeyPair, ProofOfAvailability, ValidatorIndex,
};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// A peer's batch, unverified.
pub type PeerBatch = (ValidatorIndex, Batch);

/// Peers' batches waiting in the verification queue, counted per author: an author may hold
/// at most its share of the queue (its capacity divided by the committee size at start-up),
/// so one member flooding batches cannot crowd the others' out of verification. The router
/// reserves a place before queueing a batch; the verifier releases it on taking the batch.
#[derive(Debug)]
pub struct PendingBatches {
    share: usize,
    waiting: Mutex<std::collections::HashMap<ValidatorIndex, usize>>,
}

impl PendingBatches {
    /// Shares of a queue of `capacity` among `authors`.
    pub fn new(capacity: usize, authors: usize) -> Self {
        PendingBatches {
            share: (capacity / authors.max(1)).max(1),
            waiting: Mutex::new(Default::default()),
        }
    }

    /// Takes a place for `author`'s batch; false when its share is full.
    pub fn reserve(&self, author: ValidatorIndex) -> bool {
        let mut waiting = self.waiting.lock();
        let n = waiting.entry(author).or_default();
        if *n >= self.share {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives `author`'s place back (its batch left the queue, or never entered it).
    pub fn release(&self, author: ValidatorIndex) {
        let mut waiting = self.waiting.lock();
        if let Some(n) = waiting.get_mut(&author) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waiting.remove(&author);
            }
        }
    }
}

/// Acknowledgements this node sent for peers' batches, the most recent `capacity`: a copy of
/// one of those batches (the author offering it again, or repeating it) gets the same
/// acknowledgement back without being verified or stored again.
#[derive(Debug)]
pub struct RecentAcks {
    capacity: usize,
    inner: Mutex<(
        std::collections::HashMap<Digest, BatchAck>,
        std::collections::VecDeque<Digest>,
    )>,
}

impl RecentAcks {
    /// Remembers at most `capacity` acknowledgements.
    pub fn new(capacity: usize) -> Self {
        RecentAcks {
            capacity: capacity.max(1),
            inner: Mutex::new(Default::default()),
        }
    }

    /// The acknowledgement sent for batch `digest`, if remembered.
    pub fn get(&self, digest: &Digest) -> Option<BatchAck> {
        self.inner.lock().0.get(digest).cloned()
    }

    /// Remembers `ack`, forgetting the oldest beyond the capacity.
    pub fn insert(&self, ack: BatchAck) {
        let mut inner = self.inner.lock();
        let (map, order) = &mut *inner;
        let digest = ack.info.digest;
        if map.insert(digest, ack).is_none() {
            order.push_back(digest);
        }
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// Builds the batch verifier for a committee, this node's index in it and its protocol key.
pub type VerifierBuilder =
    Box<dyn Fn(&Committee, ValidatorIndex, Arc<KeyPair>) -> BatchVerifier + Send + Sync>;

/// What the batch verifier is built from.
pub struct BatchVerifyDeps {
    /// Builds the verifier (checks batches, signs acknowledgements) for each epoch.
    pub verifier: VerifierBuilder,
    /// The epoch.
    pub epoch: EpochWatch,
    /// Where accepted batches are stored.
    pub store: Arc<Store>,
    /// Each author's stored, unordered batches (the quota).
    pub ledger: Arc<Mutex<BatchLedger>>,
    /// Sends acknowledgements.
    pub outbound: Outbound,
    /// Batches from the router.
    pub batches: mpsc::Receiver<PeerBatch>,
    /// Each author's places in that queue (released here as batches are taken).
    pub pending: Arc<PendingBatches>,
    /// Acknowledgements sent lately (answers repeated copies).
    pub recent: Arc<RecentAcks>,
    /// Batches verified at once.
    pub parallel: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
}

/// Starts the batch verifier.
pub fn spawn_batches(deps: BatchVerifyDeps) -> JoinHandle<()> {
    tokio::spawn(async move {
        let BatchVerifyDeps {
            verifier: build,
            mut epoch,
            store,
            ledger,
            outbound,
            mut batches,
            pending,
            recent,
            parallel,
            metrics,
            shutdown,
        } = deps;
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        let make = |view: &crate::epoch::EpochView| {
            view.me
                .map(|me| build(view.committee(), me, view.keys.protocol.clone()))
        };
        let mut current = make(&epoch.borrow_and_update());
        loop {
            let (sender, batch) = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Ok(()) = epoch.changed() => {
                    let view = epoch.borrow_and_update().clone();
                    if current.as_ref().map(|v| v.epoch()) != Some(view.epoch()) {
                        current = make(&view);
                    }
                    continue;
                }
                Some(b) = batches.recv() => b,
                else => return,
            };
            pending.release(sender);
            let Some(verifier) = current.clone() else {
                metrics.batches_refused.inc();
                continue;
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let context = BatchContext {
                store: store.clone(),
                ledger: ledger.clone(),
                outbound: outbound.clone(),
                recent: recent.clone(),
                metrics: metrics.clone(),
            };
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                on_batch(&verifier, &context, sender, batch);
            });
        }
    })
}

/// What a batch verification needs besides the verifier.
struct BatchContext {
    store: Arc<Store>,
    ledger: Arc<Mutex<BatchLedger>>,
    outbound: Outbound,
    recent: Arc<RecentAcks>,
    metrics: Arc<Metrics>,
}

/// Admits one peer batch against its author's quota, verifies it, stores it with its ledger
/// entry, then acknowledges it (on a blocking thread).
fn on_batch(
    verifier: &BatchVerifier,
    context: &BatchContext,
    sender: ValidatorIndex,
    batch: Batch,
) {
    let BatchContext {
        store,
        ledger,
        outbound,
        recent,
        metrics,
    } = context;
    let now = crate::clock::now_ms();
    // Nothing is counted for an author before the sender is shown to be it.
    if let Err(e) = verifier.precheck(sender, &batch, now) {
        metrics.batches_refused.inc();
        tracing::warn!(%sender, error = %e, "refused a batch");
        return;
    }
    let info = batch.info();
    // Acknowledged lately: the same batch (same digest, so the same bytes) was verified and
    // stored synced; answer again without doing either twice.
    if let Some(ack) = recent.get(&info.digest) {
        outbound.send(sender, &Notification::BatchAck(ack));
        return;
    }
    // `false`: already held (stored and counted); a failure below must not release it.
    let new = match ledger.lock().admit(&info) {
        Ok(new) => new,
        Err(e) => {
            metrics.batches_over_quota.inc();
            tracing::debug!(%sender, error = %e, "refused a batch over its author's quota");
            return;
        }
    };
    let release = || {
        if new {
            ledger.lock().release(&info.digest);
        }
    };
    // A first copy is verified only by the designated verifiers; a copy of a batch already
    // held is the author asking again, and is verified by whoever holds it.
    let verify = !new || verifier.is_designated(&info);
    let accepted = accept_peer_batch_with_info(verifier, sender, batch, info.clone(), now, verify);
    if !verify && accepted.is_ok() {
        metrics.batches_unverified.inc();
    }
    let actions = match accepted {
        Ok(actions) => actions,
        Err(e) => {
            release();
            metrics.batches_refused.inc();
            tracing::warn!(%sender, error = %e, "refused a batch");
            return;
        }
    };
    for action in actions {
        match action {
            DisseminationAction::StoreBatch(batch) => {
                let entry = LedgerEntry::of(&info, true);
                // Synced only when an acknowledgement follows (a promise to hold it).
                let stored = if verify {
                    store_acknowledged_batch(store, &batch, &entry)
                } else {
                    store_held_batch(store, &batch, &entry)
                };
                if let Err(e) = stored {
                    release();
                    tracing::error!(error = %e, "cannot store a batch");
                    return;
                }
            }
            DisseminationAction::SendAck { to, ack } => {
                metrics.batches_acknowledged.inc();
                outbound.send(to, &Notification::BatchAck(ack.clone()));
                recent.insert(ack);
            }
            other => tracing::error!(?other, "unexpected action for a peer batch"),
        }
    }
}

/// What the proof verifier is built from.
pub struct ProofVerifyDeps {
    /// The epoch (proofs are checked against its committee).
    pub epoch: EpochWatch,
    /// The chain.
    pub chain_id: ChainId,
    /// Proofs from the router.
    pub proofs: mpsc::Receiver<ProofOfAvailability>,
    /// The consensus driver's proof input.
    pub driver: mpsc::Sender<ProofOfAvailability>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
}

/// Starts the proof verifier.
pub fn spawn_proofs(deps: ProofVerifyDeps) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ProofVerifyDeps {
            epoch,
            chain_id,
            mut proofs,
            driver,
            metrics,
            shutdown,
        } = deps;
        loop {
            let proof = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Some(p) = proofs.recv() => p,
                else => return,
            };
            let view = epoch.borrow().clone();
            let checked = tokio::task::spawn_blocking(move || {
                proof.verify(view.committee(), chain_id).map(|()| proof)
            })
            .await;
            match checked {
                Ok(Ok(proof)) => {
                    if driver.try_send(proof).is_err() {
                        metrics.proofs_dropped.inc();
                    }
                }
                Ok(Err(e)) => {
                    metrics.proofs_dropped.inc();
                    tracing::debug!(error = %e, "a peer's proof failed verification");
                }
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(sequence: u64) -> BatchAck {
        let batch = Batch {
            author: ValidatorIndex(1),
            epoch: keel_types::Epoch(1),
            sequence,
            expires_at: keel_types::TimestampMs(1_000),
            transactions: Vec::new(),
        };
        let key = keel_types::test_utils::seeded_key("recent-acks", 0);
        BatchAck::new(batch.info(), ValidatorIndex(0), &key, ChainId(1))
    }

    #[test]
    fn recent_acks_answer_the_latest_and_forget_the_oldest_beyond_capacity() {
        let recent = RecentAcks::new(2);
        let (a, b, c) = (ack(0), ack(1), ack(2));
        recent.insert(a.clone());
        recent.insert(b.clone());
        // The same batch again takes no second place.
        recent.insert(a.clone());
        assert_eq!(recent.get(&a.info.digest), Some(a.clone()));
        recent.insert(c.clone());
        assert_eq!(recent.get(&a.info.digest), None, "the oldest is forgotten");
        assert_eq!(recent.get(&b.info.digest), Some(b));
        assert_eq!(recent.get(&c.info.digest), Some(c));
    }

    #[test]
    fn a_flooding_author_holds_only_its_share_of_the_queue() {
        let pending = PendingBatches::new(8, 4);
        let flooder = ValidatorIndex(3);
        let taken = (0..10).filter(|_| pending.reserve(flooder)).count();
        assert_eq!(taken, 2);
        // The others still find room.
        for author in 0..3 {
            assert!(pending.reserve(ValidatorIndex(author)));
        }
        // A place comes back when the verifier takes a batch.
        pending.release(flooder);
        assert!(pending.reserve(flooder));
        assert!(!pending.reserve(flooder));
    }
}
