//! The proofs of availability waiting to be ordered: consensus's payload source and its check
//! on proposals. The node's consensus driver owns the queue; proofs reach it from this node's
//! [`crate::Dissemination`] (`ProofReady`) and, once verified, from peers.
//!
//! Rules:
//! - **Offered until ordered**: a proof is offered (by [`ProofQueue::pull`]) until a committed
//!   block orders it. One seen in a proposal — pulled by this node as leader, or accepted by
//!   [`ProofQueue::validate`] as a voter — is held back for `reoffer_after_ms`, then offered
//!   again if no commit removed it (the proposal may have failed).
//! - **Ordered once**: a committed batch is remembered (up to the queue's size), so a late copy
//!   of its proof is not queued again.
//! - **Bounded**: at most `max_queued_proofs` proofs; proofs older than `expire_after_ms` are
//!   dropped.
//! - **Verified once**: only verified proofs are queued, so a proposal's proof identical to a
//!   queued one is not verified again.

use crate::config::DisseminationConfig;
use keel_types::{ChainId, Committee, Digest, ProofOfAvailability, TimestampMs};
use std::collections::{HashMap, HashSet, VecDeque};

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

    /// An empty queue sized and timed by `config` (`max_queued_proofs`, `reoffer_after_ms`,
    /// `expire_after_ms`).
    pub fn from_config(config: &DisseminationConfig) -> Self {
        ProofQueue::new(
            config.max_queued_proofs,
            config.reoffer_after_ms,
            config.expire_after_ms,
        )
    }

    /// Queues a proof; false if it is known, committed, or the queue is full.
    ///
    /// The caller has verified it: it is this node's own (`ProofReady`), or a peer's that
    /// passed `proof.verify(committee, chain_id)`. [`ProofQueue::validate`] trusts queued proofs.
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

    /// Whether [`ProofQueue::pull`] at `now` would return anything (a proof not recently
    /// proposed is queued).
    pub fn has_available(&self, now: TimestampMs) -> bool {
        self.proofs.values().any(|q| {
            q.proposed_at
                .is_none_or(|t| now.0.saturating_sub(t.0) >= self.reoffer_after_ms)
        })
    }

    /// Whether a proposal's proofs may be voted for: each verifies, none repeats. Only when
    /// the answer is yes, the queued ones count as proposed at `now` (held back from this
    /// node's own proposals until re-offered); a refused proposal changes nothing.
    ///
    /// A proof identical to one already queued was verified when it was queued and is not
    /// verified again; any other proof (a different copy included) is.
    pub fn validate(
        &mut self,
        proofs: &[ProofOfAvailability],
        committee: &Committee,
        chain_id: ChainId,
        now: TimestampMs,
    ) -> bool {
        let mut seen = HashSet::with_capacity(proofs.len());
        let valid = proofs.iter().all(|p| {
            seen.insert(p.info.digest)
                && (self.contains(p) || p.verify(committee, chain_id).is_ok())
        });
        if valid {
            self.mark_proposed(seen, now);
        }
        valid
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

    /// Drops proofs older than the expiry; returns their digests. Call periodically.
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
