//! Batch dissemination (Narwhal / Quorum-Store style): batches travel to every validator before
//! consensus orders their proofs, so a leader proposes digests, not transactions.
//!
//! ```text
//!  author: seal ─store─▶ broadcast batch ──▶ receiver: validate, verify every signature once,
//!                                                       store, signed ack ──▶ author
//!  author: acks from > 1/3 stake ─▶ proof of availability ─broadcast─▶ every validator's ProofQueue
//!  leader: ProofQueue::pull ─▶ block payload;   voter: validate_payload (every proof verifies)
//!  commit: resolve proofs to batches (local store, else fetch from a signer) ─▶ execution
//! ```
//!
//! The [`ProofQueue`] offers a proof until a block orders it: a proof seen in a proposal is held
//! back for `reoffer_after_ms`, then offered again if no commit removed it (the proposal may
//! have failed); proofs older than `expire_after_ms` are dropped. Everything is bounded: the
//! queue, the batches awaiting acknowledgements, and the size of every batch accepted.

use crate::{
    batching::{AckError, BatchConfig, BatchMaker, ProofBuilder},
    error::{Error, Result},
    state,
};
use keel_storage::{Column, Store};
use keel_types::{
    Batch, BatchAck, ChainId, Committee, Digest, KeyPair, ProofOfAvailability, SignedTransaction,
    TimestampMs, ValidatorIndex,
    crypto::{SignedMessage, verify_batch},
};
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

/// How batches and proofs reach other validators. Sends are fire-and-forget (the transport
/// queues or drops); `fetch_batch` blocks until a peer answers or every one failed.
pub trait BatchNetwork {
    /// Sends this node's batch to every other validator.
    fn broadcast_batch(&self, batch: &Batch);
    /// Acknowledges a batch to its author.
    fn send_ack(&self, to: ValidatorIndex, ack: &BatchAck);
    /// Sends a proof of availability to every other validator.
    fn broadcast_proof(&self, proof: &ProofOfAvailability);
    /// Asks `holders` (in turn) for a batch; the answer is untrusted.
    fn fetch_batch(&self, digest: &Digest, holders: &[ValidatorIndex]) -> Result<Batch, String>;
}

/// Dissemination parameters.
#[derive(Debug, Clone)]
pub struct DisseminationConfig {
    /// The network.
    pub chain_id: ChainId,
    /// When batches are sealed.
    pub batch: BatchConfig,
    /// Own batches awaiting acknowledgements at once.
    pub max_collecting: usize,
    /// Proofs queued for ordering at once.
    pub max_queued_proofs: usize,
    /// A proof seen in a proposal is offered again after this long without a commit.
    pub reoffer_after_ms: u64,
    /// Proofs (and batches awaiting acknowledgements) older than this are dropped.
    pub expire_after_ms: u64,
}

impl DisseminationConfig {
    /// Defaults for `chain_id`.
    pub fn new(chain_id: ChainId) -> Self {
        DisseminationConfig {
            chain_id,
            batch: BatchConfig::default(),
            max_collecting: 256,
            max_queued_proofs: 10_000,
            reoffer_after_ms: 3_000,
            expire_after_ms: 60_000,
        }
    }
}

/// Why a batch from a peer was refused (no acknowledgement is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchRejection {
    /// The sender is not the batch's author.
    #[error("batch authored by {author} arrived from {sender}")]
    NotAuthor {
        /// The batch's author.
        author: ValidatorIndex,
        /// Who sent it.
        sender: ValidatorIndex,
    },
    /// Wrong epoch, oversize, or a transaction breaks a static rule (names it).
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// A transaction's signature does not verify.
    #[error("transactions[{index}] has an invalid signature")]
    BadSignature {
        /// The first bad transaction.
        index: usize,
    },
}

#[derive(Debug)]
struct Queued {
    proof: ProofOfAvailability,
    received_at: TimestampMs,
    /// When a proposal last carried it.
    proposed_at: Option<TimestampMs>,
}

/// Proofs waiting to be ordered, oldest first.
#[derive(Debug)]
pub struct ProofQueue {
    order: VecDeque<Digest>,
    proofs: HashMap<Digest, Queued>,
    /// Recently committed batches, so a late copy of their proof is not queued again.
    committed: HashSet<Digest>,
    committed_order: VecDeque<Digest>,
    max: usize,
    reoffer_after_ms: u64,
    expire_after_ms: u64,
}

impl ProofQueue {
    /// An empty queue of at most `max` proofs.
    pub fn new(max: usize, reoffer_after_ms: u64, expire_after_ms: u64) -> Self {
        ProofQueue {
            order: VecDeque::new(),
            proofs: HashMap::new(),
            committed: HashSet::new(),
            committed_order: VecDeque::new(),
            max,
            reoffer_after_ms,
            expire_after_ms,
        }
    }

    /// Queues a verified proof; false if it is known, committed, or the queue is full.
    pub fn insert(&mut self, proof: ProofOfAvailability, now: TimestampMs) -> bool {
        let digest = proof.info.digest;
        if self.proofs.contains_key(&digest)
            || self.committed.contains(&digest)
            || self.proofs.len() >= self.max
        {
            return false;
        }
        self.order.push_back(digest);
        self.proofs.insert(
            digest,
            Queued {
                proof,
                received_at: now,
                proposed_at: None,
            },
        );
        true
    }

    /// Up to `max` proofs not recently proposed, the oldest ones, ordered by author and batch
    /// sequence (so one author's batches, and the nonces in them, execute in the order they
    /// were sealed); they count as proposed now.
    pub fn pull(&mut self, max: usize, now: TimestampMs) -> Vec<ProofOfAvailability> {
        let mut out = Vec::new();
        for digest in &self.order {
            if out.len() >= max {
                break;
            }
            let Some(q) = self.proofs.get_mut(digest) else {
                continue;
            };
            let available = q
                .proposed_at
                .is_none_or(|t| now.0.saturating_sub(t.0) >= self.reoffer_after_ms);
            if available {
                q.proposed_at = Some(now);
                out.push(q.proof.clone());
            }
        }
        out.sort_by_key(|p| (p.info.author, p.info.sequence));
        out
    }

    /// Notes that a proposal carries these batches (they are held back until re-offered).
    pub fn mark_proposed(&mut self, digests: impl IntoIterator<Item = Digest>, now: TimestampMs) {
        for d in digests {
            if let Some(q) = self.proofs.get_mut(&d) {
                q.proposed_at = Some(now);
            }
        }
    }

    /// Removes batches a committed block ordered.
    pub fn remove_committed(&mut self, digests: impl IntoIterator<Item = Digest>) {
        for d in digests {
            self.proofs.remove(&d);
            if self.committed.insert(d) {
                self.committed_order.push_back(d);
            }
        }
        while self.committed_order.len() > self.max {
            if let Some(old) = self.committed_order.pop_front() {
                self.committed.remove(&old);
            }
        }
        self.compact();
    }

    /// Drops proofs older than the expiry; returns their digests.
    pub fn expire(&mut self, now: TimestampMs) -> Vec<Digest> {
        let limit = self.expire_after_ms;
        let expired: Vec<Digest> = self
            .proofs
            .iter()
            .filter(|(_, q)| now.0.saturating_sub(q.received_at.0) >= limit)
            .map(|(d, _)| *d)
            .collect();
        for d in &expired {
            self.proofs.remove(d);
        }
        self.compact();
        expired
    }

    fn compact(&mut self) {
        let proofs = &self.proofs;
        self.order.retain(|d| proofs.contains_key(d));
    }

    /// Whether this exact proof (summary and signatures) is queued; queued proofs verified.
    pub fn contains(&self, proof: &ProofOfAvailability) -> bool {
        self.proofs
            .get(&proof.info.digest)
            .is_some_and(|q| q.proof == *proof)
    }

    /// Proofs queued.
    pub fn len(&self) -> usize {
        self.proofs.len()
    }

    /// Whether no proof is queued.
    pub fn is_empty(&self) -> bool {
        self.proofs.is_empty()
    }
}

/// Checks peers' batches and signs acknowledgements. Cheap to clone, so the signature work can
/// run on a blocking pool without holding the [`Dissemination`] state.
#[derive(Debug, Clone)]
pub struct BatchVerifier {
    committee: Committee,
    chain_id: ChainId,
    me: ValidatorIndex,
    key: Arc<KeyPair>,
}

impl BatchVerifier {
    /// Validates `batch` from `sender` (author, epoch, sizes, static rules), verifies every
    /// transaction signature in one batch verification, and signs the acknowledgement.
    pub fn check(&self, sender: ValidatorIndex, batch: &Batch) -> Result<BatchAck, BatchRejection> {
        if batch.author != sender {
            return Err(BatchRejection::NotAuthor {
                author: batch.author,
                sender,
            });
        }
        if batch.epoch != self.committee.epoch() {
            return Err(BatchRejection::Invalid(format!(
                "epoch {} is not the current epoch {}",
                batch.epoch,
                self.committee.epoch()
            )));
        }
        batch
            .validate(self.chain_id)
            .map_err(|e| BatchRejection::Invalid(e.to_string()))?;
        let messages: Vec<[u8; 32]> = batch
            .transactions
            .iter()
            .map(|t| t.transaction.signing_message())
            .collect();
        let items: Vec<SignedMessage<'_>> = batch
            .transactions
            .iter()
            .zip(&messages)
            .map(|(t, m)| SignedMessage {
                message: m,
                key: &t.transaction.sender,
                signature: &t.signature,
            })
            .collect();
        verify_batch(&items).map_err(|bad| BatchRejection::BadSignature {
            index: bad.first().copied().unwrap_or(0),
        })?;
        Ok(BatchAck::new(
            batch.info(),
            self.me,
            &self.key,
            self.chain_id,
        ))
    }
}

/// One validator's side of batch dissemination.
pub struct Dissemination<N> {
    config: DisseminationConfig,
    committee: Committee,
    me: ValidatorIndex,
    verifier: BatchVerifier,
    store: Arc<Store>,
    network: N,
    maker: BatchMaker,
    builder: ProofBuilder,
    queue: ProofQueue,
    /// Sizes of batches sealed since the last [`Dissemination::drain_sealed_sizes`].
    sealed: Vec<usize>,
}

impl<N> std::fmt::Debug for Dissemination<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dissemination")
            .field("me", &self.me)
            .field("collecting", &self.builder.collecting())
            .field("queued_proofs", &self.queue.len())
            .finish()
    }
}

/// Who this validator is in dissemination.
#[derive(Debug)]
pub struct DisseminationDeps<N> {
    /// Parameters.
    pub config: DisseminationConfig,
    /// The current committee.
    pub committee: Committee,
    /// This validator's index in it.
    pub me: ValidatorIndex,
    /// Its protocol key (signs acknowledgements).
    pub key: KeyPair,
    /// Where batches are kept.
    pub store: Arc<Store>,
    /// How batches and proofs travel.
    pub network: N,
}

impl<N: BatchNetwork> Dissemination<N> {
    /// Dissemination for `deps.me` in `deps.committee`'s epoch.
    pub fn new(deps: DisseminationDeps<N>) -> Self {
        let DisseminationDeps {
            config,
            committee,
            me,
            key,
            store,
            network,
        } = deps;
        Dissemination {
            verifier: BatchVerifier {
                committee: committee.clone(),
                chain_id: config.chain_id,
                me,
                key: Arc::new(key),
            },
            maker: BatchMaker::new(config.batch.clone(), me, committee.epoch()),
            builder: ProofBuilder::new(
                committee.clone(),
                config.chain_id,
                config.max_collecting,
                config.expire_after_ms,
            ),
            queue: ProofQueue::new(
                config.max_queued_proofs,
                config.reoffer_after_ms,
                config.expire_after_ms,
            ),
            config,
            committee,
            me,
            store,
            network,
            sealed: Vec::new(),
        }
    }

    /// A verifier for peers' batches (to run off this state's lock).
    pub fn verifier(&self) -> BatchVerifier {
        self.verifier.clone()
    }

    /// Adds admitted transactions to the open batch, publishing every batch they fill.
    pub fn on_transactions(
        &mut self,
        txs: Vec<SignedTransaction>,
        now: TimestampMs,
    ) -> Result<usize> {
        let mut published = 0;
        for tx in txs {
            if let Some(batch) = self.maker.push(tx, now) {
                self.publish(batch, now)?;
                published += 1;
            }
        }
        Ok(published)
    }

    /// Seals a batch whose timer ran out, and drops expired work. Call periodically.
    pub fn tick(&mut self, now: TimestampMs) -> Result<()> {
        if let Some(batch) = self.maker.tick(now) {
            self.publish(batch, now)?;
        }
        self.builder.expire(now);
        self.queue.expire(now);
        Ok(())
    }

    /// Whether the batch maker holds transactions not yet sealed.
    pub fn has_open_batch(&self) -> bool {
        self.maker.has_open()
    }

    /// Sizes (transactions) of the batches sealed since the last call, for metrics.
    pub fn drain_sealed_sizes(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.sealed)
    }

    fn publish(&mut self, batch: Batch, now: TimestampMs) -> Result<()> {
        store_batch(&self.store, &batch)?;
        if self.sealed.len() < 1024 {
            self.sealed.push(batch.transactions.len());
        }
        if !self.builder.track(&batch, now) {
            // Too many batches await acknowledgements: the batch stays stored (a peer may
            // still fetch it) but is not offered; its transactions are lost to this node.
            return Ok(());
        }
        let own = BatchAck::new(
            batch.info(),
            self.me,
            &self.verifier.key,
            self.config.chain_id,
        );
        self.on_ack(&own, now)?;
        self.network.broadcast_batch(&batch);
        Ok(())
    }

    /// Handles a peer's batch: validates it, verifies every signature once, stores it and
    /// acknowledges it to its author. The outer error is this node's storage failing; the
    /// inner one says why the peer's batch was refused.
    pub fn on_batch(
        &mut self,
        sender: ValidatorIndex,
        batch: Batch,
    ) -> Result<Result<BatchAck, BatchRejection>> {
        let ack = match self.verifier.check(sender, &batch) {
            Ok(ack) => ack,
            Err(rejection) => return Ok(Err(rejection)),
        };
        store_batch(&self.store, &batch)?;
        self.network.send_ack(sender, &ack);
        Ok(Ok(ack))
    }

    /// Counts an acknowledgement of one of this node's batches; a completed proof is queued
    /// here and broadcast.
    pub fn on_ack(&mut self, ack: &BatchAck, now: TimestampMs) -> Result<Option<Digest>> {
        match self.builder.add(ack) {
            Ok(Some(proof)) => {
                let digest = proof.info.digest;
                self.network.broadcast_proof(&proof);
                self.queue.insert(proof, now);
                Ok(Some(digest))
            }
            Ok(None) => Ok(None),
            // Late, duplicate or bogus acknowledgements change nothing.
            Err(AckError::UnknownBatch(_) | AckError::Duplicate(_) | AckError::Invalid(_)) => {
                Ok(None)
            }
        }
    }

    /// Queues a peer's proof if it verifies; false otherwise.
    pub fn on_proof(&mut self, proof: ProofOfAvailability, now: TimestampMs) -> bool {
        proof.verify(&self.committee, self.config.chain_id).is_ok() && self.queue.insert(proof, now)
    }

    /// Proofs for a proposal (consensus's payload source).
    pub fn pull(&mut self, max: usize, now: TimestampMs) -> Vec<ProofOfAvailability> {
        self.queue.pull(max, now)
    }

    /// Whether a proposal's proofs may be voted for: each verifies, none repeats.
    ///
    /// A proof identical to one already queued here was verified when it was queued and is
    /// not verified again; any other proof (a different copy included) is.
    pub fn validate_payload(&self, proofs: &[ProofOfAvailability]) -> bool {
        let mut seen = HashSet::with_capacity(proofs.len());
        proofs.iter().all(|p| {
            seen.insert(p.info.digest)
                && (self.queue.contains(p)
                    || p.verify(&self.committee, self.config.chain_id).is_ok())
        })
    }

    /// The proof queue (to mark proposed and committed batches).
    pub fn queue(&mut self) -> &mut ProofQueue {
        &mut self.queue
    }

    /// The network (also used to fetch batches for execution).
    pub fn network(&self) -> &N {
        &self.network
    }
}

/// Stores a batch under its digest.
pub fn store_batch(store: &Store, batch: &Batch) -> Result<()> {
    store.put(Column::Batches, &batch.digest().0, &state::encode(batch))?;
    Ok(())
}

/// The batches a committed block's proofs name, in order: from the local store, else fetched
/// from the proof's signers (an answer counts only if its digest matches, and is then stored).
pub fn resolve_batches(
    store: &Store,
    network: &impl BatchNetwork,
    proofs: &[ProofOfAvailability],
) -> Result<Vec<Batch>> {
    proofs
        .iter()
        .map(|proof| {
            let digest = proof.info.digest;
            if let Some(bytes) = store.get(Column::Batches, &digest.0)? {
                return state::decode(&bytes, "batch");
            }
            let holders: Vec<ValidatorIndex> = proof.signatures.signers().collect();
            let batch = network
                .fetch_batch(&digest, &holders)
                .map_err(|reason| Error::MissingBatch { digest, reason })?;
            if batch.digest() != digest {
                return Err(Error::MissingBatch {
                    digest,
                    reason: "the peer answered with another batch".into(),
                });
            }
            store_batch(store, &batch)?;
            Ok(batch)
        })
        .collect()
}
