//! Batching and proofs of availability.
//!
//! [`BatchMaker`] seals the transactions it is given into a [`Batch`] when the batch reaches its
//! transaction or byte limit, or when the oldest transaction in it has waited `seal_after_ms`.
//! The author broadcasts the batch; each validator that stores it returns a signed
//! [`BatchAck`]. [`ProofBuilder`] verifies acknowledgements and turns those from more than 1/3
//! of the stake into a [`ProofOfAvailability`], which the author offers to consensus. Proofs that
//! are not ordered within `expire_after_ms` are dropped, and the builder holds a bounded number of
//! batches awaiting acknowledgements.

use crate::config::BatchConfig;
use keel_types::{
    Batch, BatchAck, ChainId, Committee, Digest, Epoch, MultiSignature, ProofOfAvailability,
    Signature, SignedTransaction, Threshold, TimestampMs, ValidatorIndex,
};
use std::{collections::HashMap, sync::Arc};

/// How many batch sequence numbers one durable reservation covers (see [`BatchMaker`]).
pub const SEQUENCE_RESERVATION: u64 = 10_000;

/// Seals transactions into batches by size, bytes or time.
///
/// Sequence numbers never repeat within an epoch, across restarts too: the maker starts at
/// the sequence the node reserved last (`first_sequence`, 0 in a new epoch) and, before it
/// seals a batch at or past its reservation, asks for the next [`SEQUENCE_RESERVATION`]
/// numbers to be reserved durably ([`BatchMaker::reserve`]). So a restart skips at most one
/// reservation's worth of numbers and costs one synced write per reservation, not per batch.
#[derive(Debug)]
pub struct BatchMaker {
    config: BatchConfig,
    author: ValidatorIndex,
    epoch: Epoch,
    next_sequence: u64,
    /// Sequences below this are reserved durably.
    reserved: u64,
    /// A reservation to persist before the next sealed batch leaves.
    to_reserve: Option<u64>,
    open: Vec<SignedTransaction>,
    open_bytes: usize,
    opened_at: Option<TimestampMs>,
    /// The sealing time in force (see [`BatchMaker::pace`]).
    seal_after_ms: u64,
}

/// Under load a batch waits one more ms to fill per this many ms the pipeline is behind.
const GROWTH_DIVISOR: u64 = 5;

impl BatchMaker {
    /// A maker for `author`'s batches in `epoch`, starting at `first_sequence` (what the node
    /// reserved before a restart in this epoch; 0 otherwise).
    pub fn new(
        config: BatchConfig,
        author: ValidatorIndex,
        epoch: Epoch,
        first_sequence: u64,
    ) -> Self {
        BatchMaker {
            seal_after_ms: config.seal_after_ms,
            config,
            author,
            epoch,
            next_sequence: first_sequence,
            reserved: first_sequence,
            to_reserve: None,
            open: Vec::new(),
            open_bytes: 0,
            opened_at: None,
        }
    }

    /// Batches that grow with load: given how long the oldest transaction this node admitted
    /// has waited for execution (`pipeline_wait_ms`), sets the sealing time to `seal_after_ms`
    /// while that wait is at most `grow_after_wait_ms`, then one more ms per
    /// [`GROWTH_DIVISOR`] ms beyond, up to `max_seal_after_ms`. Returns the sealing time now in
    /// force. An idle committee seals fast (latency); a busy one seals larger batches (fewer
    /// per-batch costs for the same transactions).
    pub fn pace(&mut self, pipeline_wait_ms: u64) -> u64 {
        let behind = pipeline_wait_ms.saturating_sub(self.config.grow_after_wait_ms);
        let ceiling = self.config.max_seal_after_ms.max(self.config.seal_after_ms);
        self.seal_after_ms = self
            .config
            .seal_after_ms
            .saturating_add(behind / GROWTH_DIVISOR)
            .min(ceiling);
        self.seal_after_ms
    }

    /// Adds a transaction; returns a sealed batch if this one filled it.
    pub fn push(&mut self, tx: SignedTransaction, now: TimestampMs) -> Option<Batch> {
        let size = tx.encode().len();
        // A transaction that would overflow the byte limit goes into the next batch.
        let sealed = if !self.open.is_empty() && self.open_bytes + size > self.config.max_bytes {
            self.seal(now)
        } else {
            None
        };
        if self.open.is_empty() {
            self.opened_at = Some(now);
        }
        self.open.push(tx);
        self.open_bytes += size;
        if sealed.is_some() {
            return sealed;
        }
        if self.open.len() >= self.config.max_transactions
            || self.open_bytes >= self.config.max_bytes
        {
            return self.seal(now);
        }
        None
    }

    /// Seals the open batch if its oldest transaction has waited long enough.
    pub fn tick(&mut self, now: TimestampMs) -> Option<Batch> {
        let opened = self.opened_at?;
        if now.0.saturating_sub(opened.0) >= self.seal_after_ms {
            return self.seal(now);
        }
        None
    }

    /// Whether transactions wait in the open batch.
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// A reservation to persist (durably) before the batch just sealed leaves: sequences
    /// below the returned value may be used; a restart in this epoch starts there.
    pub fn reserve(&mut self) -> Option<u64> {
        self.to_reserve.take()
    }

    /// Seals the open batch at `now`; it expires `lifetime_ms` later.
    fn seal(&mut self, now: TimestampMs) -> Option<Batch> {
        if self.open.is_empty() {
            return None;
        }
        if self.next_sequence >= self.reserved {
            self.reserved = self.next_sequence.saturating_add(SEQUENCE_RESERVATION);
            self.to_reserve = Some(self.reserved);
        }
        let batch = Batch {
            author: self.author,
            epoch: self.epoch,
            sequence: self.next_sequence,
            expires_at: TimestampMs(now.0.saturating_add(self.config.lifetime_ms)),
            transactions: std::mem::take(&mut self.open),
        };
        self.next_sequence += 1;
        self.open_bytes = 0;
        self.opened_at = None;
        Some(batch)
    }
}

/// Why an acknowledgement was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The acknowledgement does not verify.
    #[error("invalid acknowledgement: {0}")]
    Invalid(String),
    /// Not for a batch this node is collecting acknowledgements for.
    #[error("acknowledgement for unknown batch {0}")]
    UnknownBatch(Digest),
    /// Already counted.
    #[error("duplicate acknowledgement from {0}")]
    Duplicate(ValidatorIndex),
}

struct Collecting {
    /// The batch, kept to offer it again (bounded by `max_collecting`).
    batch: Arc<Batch>,
    info: keel_types::BatchInfo,
    signatures: Vec<(ValidatorIndex, Signature)>,
    stake: u64,
    sealed_at: TimestampMs,
    /// Times it was offered again (at most [`MAX_REOFFERS`]).
    reoffers: u8,
    /// When it was last offered.
    offered_at: TimestampMs,
}

/// Most times an own batch is offered again: a validator that missed the first copy holds
/// the second unverified, and verifies a third.
pub const MAX_REOFFERS: u8 = 2;

/// Turns acknowledgements of this node's batches into proofs of availability.
pub struct ProofBuilder {
    committee: Committee,
    chain_id: ChainId,
    collecting: HashMap<Digest, Collecting>,
    max_collecting: usize,
    expire_after_ms: u64,
}

impl ProofBuilder {
    /// A builder for `committee`, holding at most `max_collecting` batches at once and
    /// forgetting those not certified within `expire_after_ms`.
    pub fn new(
        committee: Committee,
        chain_id: ChainId,
        max_collecting: usize,
        expire_after_ms: u64,
    ) -> Self {
        ProofBuilder {
            committee,
            chain_id,
            collecting: HashMap::new(),
            max_collecting,
            expire_after_ms,
        }
    }

    /// The committee acknowledgements are checked against.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// Starts collecting acknowledgements for a batch this node sealed. Returns false (and
    /// does not track it) when too many batches are already waiting.
    pub fn track(&mut self, batch: &Arc<Batch>, now: TimestampMs) -> bool {
        self.track_with_info(batch, batch.info(), now)
    }

    /// [`ProofBuilder::track`] for a caller that already computed `batch.info()`.
    pub fn track_with_info(
        &mut self,
        batch: &Arc<Batch>,
        info: keel_types::BatchInfo,
        now: TimestampMs,
    ) -> bool {
        if self.collecting.len() >= self.max_collecting {
            return false;
        }
        self.collecting.insert(
            info.digest,
            Collecting {
                batch: batch.clone(),
                info,
                signatures: Vec::new(),
                stake: 0,
                sealed_at: now,
                reoffers: 0,
                offered_at: now,
            },
        );
        true
    }

    /// Marks the batch `digest` offered again at `now`: returns it with the members that have
    /// not acknowledged it (`None` if it is not collecting or was offered again
    /// [`MAX_REOFFERS`] times already).
    pub fn reoffer(
        &mut self,
        digest: &Digest,
        now: TimestampMs,
    ) -> Option<(Arc<Batch>, Vec<ValidatorIndex>)> {
        let entry = self.collecting.get_mut(digest)?;
        if entry.reoffers >= MAX_REOFFERS {
            return None;
        }
        entry.reoffers += 1;
        entry.offered_at = now;
        let to = self
            .committee
            .indices()
            .filter(|v| !entry.signatures.iter().any(|(s, _)| s == v))
            .collect();
        Some((entry.batch.clone(), to))
    }

    /// Batches still without a proof, offered last at least `after_ms` before `now` and
    /// offered again fewer than [`MAX_REOFFERS`] times, with how often they were, in no
    /// particular order.
    pub fn late(&self, now: TimestampMs, after_ms: u64) -> Vec<(Digest, u8)> {
        self.collecting
            .iter()
            .filter(|(_, c)| {
                c.reoffers < MAX_REOFFERS && now.0.saturating_sub(c.offered_at.0) >= after_ms
            })
            .map(|(d, c)| (*d, c.reoffers))
            .collect()
    }

    /// When the collecting batch `digest` was sealed, and how often it was offered again.
    pub fn offers(&self, digest: &Digest) -> Option<(TimestampMs, u8)> {
        self.collecting
            .get(digest)
            .map(|c| (c.sealed_at, c.reoffers))
    }

    /// Adds an acknowledgement; returns the proof when this one completes it.
    pub fn add(&mut self, ack: &BatchAck) -> Result<Option<ProofOfAvailability>, AckError> {
        let digest = ack.info.digest;
        let entry = self
            .collecting
            .get_mut(&digest)
            .ok_or(AckError::UnknownBatch(digest))?;
        if entry.info != ack.info {
            return Err(AckError::Invalid(
                "acknowledged a different batch summary".into(),
            ));
        }
        if entry.signatures.iter().any(|(i, _)| *i == ack.signer) {
            return Err(AckError::Duplicate(ack.signer));
        }
        ack.verify(&self.committee, self.chain_id)
            .map_err(|e| AckError::Invalid(e.to_string()))?;
        entry.signatures.push((ack.signer, ack.signature));
        entry.stake = entry.stake.saturating_add(self.committee.stake(ack.signer));
        if Threshold::Validity.is_met(&self.committee, entry.stake)
            && let Some(done) = self.collecting.remove(&digest)
        {
            return Ok(Some(ProofOfAvailability {
                info: done.info,
                signatures: MultiSignature::from_signatures(done.signatures),
            }));
        }
        Ok(None)
    }

    /// Forgets batches whose acknowledgements did not arrive in time; returns their digests
    /// (their transactions can be re-batched).
    pub fn expire(&mut self, now: TimestampMs) -> Vec<Digest> {
        let limit = self.expire_after_ms;
        let expired: Vec<Digest> = self
            .collecting
            .iter()
            .filter(|(_, c)| now.0.saturating_sub(c.sealed_at.0) >= limit)
            .map(|(d, _)| *d)
            .collect();
        for d in &expired {
            self.collecting.remove(d);
        }
        expired
    }

    /// Batches waiting for acknowledgements.
    pub fn collecting(&self) -> usize {
        self.collecting.len()
    }
}

/// The validators besides `author` that verify and acknowledge the batch numbered `sequence`
/// on its first copy: the fewest, taken in index order from a starting point that rotates with
/// the sequence, whose stake with the author's reaches the validity threshold (more than 1/3:
/// f of them with equal stakes). Empty when the author alone reaches it.
pub fn designated_verifiers(
    committee: &Committee,
    author: ValidatorIndex,
    sequence: u64,
) -> Vec<ValidatorIndex> {
    let others: Vec<ValidatorIndex> = committee.indices().filter(|i| *i != author).collect();
    let mut stake = committee.stake(author);
    let mut chosen = Vec::new();
    if others.is_empty() {
        return chosen;
    }
    let start = usize::try_from(sequence % others.len() as u64).unwrap_or(0);
    for k in 0..others.len() {
        if committee.is_validity(stake) {
            break;
        }
        let v = others[(start + k) % others.len()];
        stake = stake.saturating_add(committee.stake(v));
        chosen.push(v);
    }
    chosen
}
