//! The proofs of availability waiting to be ordered: consensus's payload source and its check
//! on proposals. The node's consensus driver owns the queue; proofs reach it from this node's
//! [`crate::Dissemination`] (`ProofReady`) and, once verified, from peers.
//!
//! Rules:
//! - **Offered until ordered**: a proof is offered (by [`ProofQueue::pull`]) until a committed
//!   block orders it. One seen in a proposal — pulled by this node as leader, or accepted by
//!   [`ProofQueue::validate`] as a voter — is held back for `reoffer_after_ms`, then offered
//!   again if no commit removed it (the proposal may have failed).
//! - **Ordered once**: a committed batch is remembered until it expires (at most
//!   [`COMMITTED_PER_QUEUED`] × the queue's size, the soonest-expiring forgotten first): a late
//!   copy of its proof is not queued again, and a proposal ordering it again gets no vote (a
//!   Byzantine leader re-ordering a batch after its holders pruned it would leave executors
//!   unable to fetch it).
//! - **Bounded, and fair across authors**: at most `max_queued_proofs` proofs, and each batch
//!   author at most its share (`max_queued_proofs` divided by the committee size, at least 1),
//!   so an author flooding proofs cannot crowd out the others'; proofs older than
//!   `expire_after_ms` are dropped. [`ProofQueue::pull`] takes the authors in turn (one proof
//!   each per turn, the first author rotating between pulls), so when a block's limits bind,
//!   every author with proofs waiting gets its share of the block.
//! - **Never expired**: a proof whose batch expired (`expires_at` at or before the time) is
//!   not queued, is dropped by [`ProofQueue::expire`], never pulled, and makes a proposal
//!   whose timestamp is at or after its expiry unvotable ([`ProofQueue::validate`]).
//! - **Verified once**: only verified proofs are queued, so a proposal's proof identical to a
//!   queued one is not verified again.

use crate::config::DisseminationConfig;
use keel_types::{ChainId, Committee, Digest, ProofOfAvailability, TimestampMs, ValidatorIndex};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// Committed batches remembered per queued proof allowed ([`ProofQueue`]'s "ordered once").
pub const COMMITTED_PER_QUEUED: usize = 32;

#[derive(Debug)]
struct Queued {
    proof: ProofOfAvailability,
    received_at: TimestampMs,
    /// When a proposal last carried it.
    proposed_at: Option<TimestampMs>,
}

/// Proofs waiting to be ordered, oldest first per author.
#[derive(Debug)]
pub struct ProofQueue {
    /// Each author's queued batches, oldest first.
    by_author: BTreeMap<ValidatorIndex, VecDeque<Digest>>,
    proofs: HashMap<Digest, Queued>,
    /// Most proofs queued per author.
    per_author: usize,
    /// Where the next pull starts its turns.
    next_author: ValidatorIndex,
    /// Committed batches that have not expired, with their expiries: a late copy of their
    /// proof is not queued again, and no proposal ordering them again is voted for.
    committed: HashMap<Digest, TimestampMs>,
    committed_by_expiry: BTreeSet<(TimestampMs, Digest)>,
    max: usize,
    reoffer_after_ms: u64,
    expire_after_ms: u64,
}

impl ProofQueue {
    /// An empty queue of at most `max` proofs, at most `max / authors` (at least 1) of any
    /// one batch author.
    pub fn new(max: usize, authors: usize, reoffer_after_ms: u64, expire_after_ms: u64) -> Self {
        ProofQueue {
            by_author: BTreeMap::new(),
            proofs: HashMap::new(),
            per_author: (max / authors.max(1)).max(1),
            next_author: ValidatorIndex(0),
            committed: HashMap::new(),
            committed_by_expiry: BTreeSet::new(),
            max,
            reoffer_after_ms,
            expire_after_ms,
        }
    }

    /// An empty queue sized and timed by `config` (`max_queued_proofs`, `reoffer_after_ms`,
    /// `expire_after_ms`) for a committee of `authors` validators.
    pub fn from_config(config: &DisseminationConfig, authors: usize) -> Self {
        ProofQueue::new(
            config.max_queued_proofs,
            authors,
            config.reoffer_after_ms,
            config.expire_after_ms,
        )
    }

    /// Queues a proof; false if it is known, committed, or the queue (or its author's share of
    /// it) is full.
    ///
    /// The caller has verified it: it is this node's own (`ProofReady`), or a peer's that
    /// passed `proof.verify(committee, chain_id)`. [`ProofQueue::validate`] trusts queued proofs.
    pub fn insert(&mut self, proof: ProofOfAvailability, now: TimestampMs) -> bool {
        let digest = proof.info.digest;
        let author = proof.info.author;
        if self.proofs.contains_key(&digest)
            || self.committed.contains_key(&digest)
            || self.proofs.len() >= self.max
            || self.queued_by(author) >= self.per_author
            || proof.info.expires_at <= now
        {
            return false;
        }
        self.by_author.entry(author).or_default().push_back(digest);
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

    /// Up to `max` proofs not recently proposed, of batches of at most `max_bytes` in total:
    /// the authors take turns (one proof each per turn, oldest first; a proof that does not
    /// fit the bytes left ends its author's share of this pull), starting from a different
    /// author each pull. The result is ordered by author and batch sequence (so one author's
    /// batches, and the nonces in them, execute in the order they were sealed); the proofs
    /// count as proposed now.
    pub fn pull(
        &mut self,
        max: usize,
        max_bytes: u64,
        now: TimestampMs,
    ) -> Vec<ProofOfAvailability> {
        self.pull_for_block(max, max_bytes, now, now)
    }

    /// [`ProofQueue::pull`] for a block with timestamp `block_time` (after `now` when the
    /// parent's timestamp is ahead of this clock): only batches expiring after both, as the
    /// voters check.
    pub fn pull_for_block(
        &mut self,
        max: usize,
        max_bytes: u64,
        now: TimestampMs,
        block_time: TimestampMs,
    ) -> Vec<ProofOfAvailability> {
        let reoffer = self.reoffer_after_ms;
        let expiry_floor = now.max(block_time);
        let proofs = &self.proofs;
        let available = |d: &Digest| {
            proofs.get(d).is_some_and(|q| {
                q.proof.info.expires_at > expiry_floor
                    && q.proposed_at
                        .is_none_or(|t| now.0.saturating_sub(t.0) >= reoffer)
            })
        };
        // Each author's available proofs, oldest first, the turn order starting at
        // `next_author`.
        let (after, before): (Vec<_>, Vec<_>) = self
            .by_author
            .iter()
            .partition(|(author, _)| **author >= self.next_author);
        let mut turns: Vec<_> = after
            .into_iter()
            .chain(before)
            .map(|(_, digests)| digests.iter().filter(|d| available(d)).peekable())
            .collect();
        let mut chosen = Vec::new();
        let mut bytes = 0u64;
        while chosen.len() < max && !turns.is_empty() {
            turns.retain_mut(|digests| {
                if chosen.len() >= max {
                    return false;
                }
                let Some(digest) = digests.next() else {
                    return false;
                };
                let size = proofs.get(digest).map_or(0, |q| q.proof.info.num_bytes);
                if bytes.saturating_add(size) > max_bytes {
                    return false;
                }
                bytes = bytes.saturating_add(size);
                chosen.push(*digest);
                true
            });
        }
        if let Some(last) = self.by_author.keys().next_back() {
            self.next_author = if self.next_author >= *last {
                ValidatorIndex(0)
            } else {
                ValidatorIndex(self.next_author.0 + 1)
            };
        }
        let mut out = Vec::with_capacity(chosen.len());
        for digest in chosen {
            if let Some(q) = self.proofs.get_mut(&digest) {
                q.proposed_at = Some(now);
                out.push(q.proof.clone());
            }
        }
        out.sort_by_key(|p| (p.info.author, p.info.sequence));
        out
    }

    /// Proofs queued from `author`.
    pub fn queued_by(&self, author: ValidatorIndex) -> usize {
        self.by_author.get(&author).map_or(0, VecDeque::len)
    }

    /// Whether [`ProofQueue::pull`] at `now` would return anything (a proof not recently
    /// proposed is queued).
    pub fn has_available(&self, now: TimestampMs) -> bool {
        self.proofs.values().any(|q| {
            q.proof.info.expires_at > now
                && q.proposed_at
                    .is_none_or(|t| now.0.saturating_sub(t.0) >= self.reoffer_after_ms)
        })
    }

    /// Whether a proposal's proofs may be voted for: each verifies, none repeats, none was
    /// committed already, and none has expired by the block's timestamp `block_time`. Only when
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
        block_time: TimestampMs,
        now: TimestampMs,
    ) -> bool {
        let mut seen = HashSet::with_capacity(proofs.len());
        let valid = proofs.iter().all(|p| {
            p.info.expires_at > block_time
                && !self.committed.contains_key(&p.info.digest)
                && seen.insert(p.info.digest)
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

    /// Removes batches a committed block ordered (digests with their expiries), and remembers
    /// them until they expire.
    pub fn remove_committed(&mut self, batches: impl IntoIterator<Item = (Digest, TimestampMs)>) {
        for (digest, expires_at) in batches {
            self.proofs.remove(&digest);
            if self.committed.insert(digest, expires_at).is_none() {
                self.committed_by_expiry.insert((expires_at, digest));
            }
        }
        let most = self.max.saturating_mul(COMMITTED_PER_QUEUED);
        while self.committed.len() > most {
            self.forget_first_committed();
        }
        self.compact();
    }

    fn forget_first_committed(&mut self) {
        if let Some((_, digest)) = self.committed_by_expiry.pop_first() {
            self.committed.remove(&digest);
        }
    }

    /// Drops proofs older than `expire_after_ms` or whose batch expired; returns their
    /// digests. Call periodically.
    pub fn expire(&mut self, now: TimestampMs) -> Vec<Digest> {
        let limit = self.expire_after_ms;
        let expired: Vec<Digest> = self
            .proofs
            .iter()
            .filter(|(_, q)| {
                now.0.saturating_sub(q.received_at.0) >= limit || q.proof.info.expires_at <= now
            })
            .map(|(d, _)| *d)
            .collect();
        for d in &expired {
            self.proofs.remove(d);
        }
        // Expired batches can be ordered by no block: forgetting them is safe.
        while self
            .committed_by_expiry
            .first()
            .is_some_and(|(expires_at, _)| *expires_at <= now)
        {
            self.forget_first_committed();
        }
        self.compact();
        expired
    }

    fn compact(&mut self) {
        let proofs = &self.proofs;
        self.by_author.retain(|_, digests| {
            digests.retain(|d| proofs.contains_key(d));
            !digests.is_empty()
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{BatchInfo, Epoch, MultiSignature, Signature};

    const NOW: TimestampMs = TimestampMs(1_000);

    /// An (unverified) proof of `author`'s batch `sequence` of `bytes` bytes.
    fn proof(author: u32, sequence: u64, bytes: u64) -> ProofOfAvailability {
        let digest =
            Digest::of_bytes(&[author.to_le_bytes(), (sequence as u32).to_le_bytes()].concat());
        ProofOfAvailability {
            info: BatchInfo {
                author: ValidatorIndex(author),
                epoch: Epoch(1),
                sequence,
                expires_at: TimestampMs(u64::MAX),
                digest,
                num_transactions: 1,
                num_bytes: bytes,
            },
            signatures: MultiSignature::from_raw(vec![(
                ValidatorIndex(author),
                Signature([0; 64]),
            )]),
        }
    }

    fn authors(proofs: &[ProofOfAvailability]) -> Vec<u32> {
        proofs.iter().map(|p| p.info.author.0).collect()
    }

    #[test]
    fn an_author_flooding_proofs_gets_only_its_share() {
        // 8 proofs for 4 authors: 2 each.
        let mut queue = ProofQueue::new(8, 4, 500, 60_000);
        let accepted = (0..10)
            .filter(|s| queue.insert(proof(1, *s, 10), NOW))
            .count();
        assert_eq!(accepted, 2);
        assert_eq!(queue.queued_by(ValidatorIndex(1)), 2);
        // The others still find room.
        for author in [0, 2, 3] {
            assert!(queue.insert(proof(author, 0, 10), NOW), "author {author}");
        }
        assert_eq!(queue.len(), 5);
    }

    #[test]
    fn pulls_take_the_authors_in_turn_within_the_byte_limit() {
        let mut queue = ProofQueue::new(100, 4, 500, 60_000);
        // Author 1's 20 proofs arrive first, then one each from authors 2 and 3.
        for s in 0..20 {
            assert!(queue.insert(proof(1, s, 10), NOW));
        }
        assert!(queue.insert(proof(2, 0, 10), NOW));
        assert!(queue.insert(proof(3, 0, 10), NOW));
        // Four proofs: not author 1's four oldest, but each author in turn.
        let first = queue.pull(4, u64::MAX, NOW);
        assert_eq!(authors(&first), vec![1, 1, 2, 3]);
        assert_eq!(
            first
                .iter()
                .filter(|p| p.info.author.0 == 1)
                .map(|p| p.info.sequence)
                .collect::<Vec<_>>(),
            vec![0, 1],
            "an author's proofs go oldest first"
        );
        // At most 35 bytes: three proofs of 10.
        let second = queue.pull(100, 35, NOW);
        assert_eq!(second.len(), 3);
        assert!(second.iter().all(|p| p.info.author.0 == 1));
        assert_eq!(second[0].info.sequence, 2);
    }

    #[test]
    fn a_batch_expiring_by_the_blocks_timestamp_is_not_pulled_for_it() {
        let mut queue = ProofQueue::new(100, 4, 500, 60_000);
        let mut p = proof(1, 0, 10);
        p.info.expires_at = TimestampMs(2_000);
        assert!(queue.insert(p, NOW));
        // The parent's timestamp, ahead of this clock, makes the block's 2,000: voters refuse
        // a batch expiring then, so the leader does not pull it.
        assert!(
            queue
                .pull_for_block(10, u64::MAX, NOW, TimestampMs(2_000))
                .is_empty()
        );
        assert_eq!(queue.pull_for_block(10, u64::MAX, NOW, NOW).len(), 1);
    }
}
