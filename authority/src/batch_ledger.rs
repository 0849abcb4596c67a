//! The batches this node stores before a block orders them: each author's quota, and when
//! they go. A pure state machine; the node persists an index entry per batch
//! ([`ledger_key`]) so the ledger is rebuilt at start-up, and carries out what
//! [`BatchLedger::on_committed`] returns.
//!
//! Rules:
//! - **Quota per author**: a peer's batch is admitted only if its author's stored, unordered
//!   batches stay within `max_stored_batches_per_author` and `max_stored_bytes_per_author`;
//!   otherwise it is refused before any signature is verified (not stored, not
//!   acknowledged), so one author cannot fill disks or crowd out the others. This node's own
//!   batches are recorded without the quota (they are bounded by `max_collecting` and time).
//! - **Released when ordered**: a committed block ordering a batch takes it out of the ledger
//!   (pruning deletes it with its height later).
//! - **Deleted when expired**: no block with a timestamp at or after a batch's `expires_at`
//!   may order it (voters refuse it), and committed timestamps never decrease, so once the
//!   committed chain's time reaches `expires_at` an unordered batch never will be ordered:
//!   the node deletes it. Expiry follows the *committed* time, not this node's clock, so a
//!   batch that a certified but not yet committed block orders is never deleted.
//! - **Released when refused**: a batch that fails verification leaves at once.

use crate::config::DisseminationConfig;
use keel_types::{BatchInfo, Digest, TimestampMs, ValidatorIndex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Meta-column key prefix of the ledger's index entries.
pub const LEDGER_PREFIX: &[u8] = b"unordered/";

/// The Meta-column key of a stored, unordered batch's index entry (its value is the bcs of
/// [`LedgerEntry`]).
pub fn ledger_key(digest: &Digest) -> Vec<u8> {
    [LEDGER_PREFIX, &digest.0].concat()
}

/// What the ledger keeps of one stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The batch's author.
    pub author: ValidatorIndex,
    /// Its encoded size.
    pub bytes: u64,
    /// Its expiry.
    pub expires_at: TimestampMs,
    /// Whether it counts against the author's quota (a peer's batch).
    pub counted: bool,
}

impl LedgerEntry {
    /// The entry of a batch summarised by `info`.
    pub fn of(info: &BatchInfo, counted: bool) -> Self {
        LedgerEntry {
            author: info.author,
            bytes: info.num_bytes,
            expires_at: info.expires_at,
            counted,
        }
    }
}

/// Why a peer's batch was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// The author already has this many batches stored and unordered.
    #[error("{author} already has {held} unordered batches stored (limit {limit})")]
    Batches {
        /// The author.
        author: ValidatorIndex,
        /// Its batches held.
        held: usize,
        /// The limit.
        limit: usize,
    },
    /// The batch would take the author over its byte quota.
    #[error("{author} would hold {would_hold} bytes of unordered batches (limit {limit})")]
    Bytes {
        /// The author.
        author: ValidatorIndex,
        /// Its bytes held with this batch.
        would_hold: u64,
        /// The limit.
        limit: u64,
    },
}

/// What to do after a commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    /// Batches the committed blocks ordered: drop their index entries (keep the batches).
    pub ordered: Vec<Digest>,
    /// Batches that expired unordered: delete them and their index entries (unless a block
    /// the ledger did not see ordered them, which the node checks in its store).
    pub expired: Vec<Digest>,
    /// This node's own batches among `expired`: no block can order them any more, so their
    /// transactions go back to its mempool (see the node's batch ledger task).
    pub own_expired: Vec<Digest>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    batches: usize,
    bytes: u64,
}

/// Stored, unordered batches by author, with their expiries.
#[derive(Debug)]
pub struct BatchLedger {
    max_batches: usize,
    max_bytes: u64,
    entries: HashMap<Digest, LedgerEntry>,
    usage: HashMap<ValidatorIndex, Usage>,
    by_expiry: BTreeSet<(TimestampMs, Digest)>,
    /// The latest committed block's timestamp seen.
    committed_time: TimestampMs,
}

impl BatchLedger {
    /// An empty ledger with `config`'s per-author quota.
    pub fn new(config: &DisseminationConfig) -> Self {
        BatchLedger {
            max_batches: config.max_stored_batches_per_author,
            max_bytes: config.max_stored_bytes_per_author,
            entries: HashMap::new(),
            usage: HashMap::new(),
            by_expiry: BTreeSet::new(),
            committed_time: TimestampMs(0),
        }
    }

    /// Admits a peer's batch against its author's quota. `Ok(false)`: already held (store and
    /// acknowledge again, nothing to count). The caller verifies next, and calls
    /// [`BatchLedger::release`] if verification or storage fails.
    pub fn admit(&mut self, info: &BatchInfo) -> Result<bool, QuotaExceeded> {
        if self.entries.contains_key(&info.digest) {
            return Ok(false);
        }
        let author = info.author;
        let usage = self.usage.get(&author).copied().unwrap_or_default();
        if usage.batches >= self.max_batches {
            return Err(QuotaExceeded::Batches {
                author,
                held: usage.batches,
                limit: self.max_batches,
            });
        }
        let would_hold = usage.bytes.saturating_add(info.num_bytes);
        if would_hold > self.max_bytes {
            return Err(QuotaExceeded::Bytes {
                author,
                would_hold,
                limit: self.max_bytes,
            });
        }
        self.insert(info.digest, LedgerEntry::of(info, true));
        Ok(true)
    }

    /// Records this node's own batch (no quota).
    pub fn record_own(&mut self, info: &BatchInfo) {
        if !self.entries.contains_key(&info.digest) {
            self.insert(info.digest, LedgerEntry::of(info, false));
        }
    }

    /// Puts back an entry read from the store at start-up.
    pub fn restore(&mut self, digest: Digest, entry: LedgerEntry) {
        if !self.entries.contains_key(&digest) {
            self.insert(digest, entry);
        }
    }

    /// Forgets a batch (refused by verification, or its storage failed).
    pub fn release(&mut self, digest: &Digest) {
        let Some(entry) = self.entries.remove(digest) else {
            return;
        };
        self.by_expiry.remove(&(entry.expires_at, *digest));
        if entry.counted
            && let Some(usage) = self.usage.get_mut(&entry.author)
        {
            usage.batches = usage.batches.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(entry.bytes);
            if usage.batches == 0 {
                self.usage.remove(&entry.author);
            }
        }
    }

    /// A committed block at `timestamp` ordered `ordered`: those leave the ledger, and every
    /// batch whose expiry the committed time has reached is returned for deletion.
    pub fn on_committed(
        &mut self,
        ordered: impl IntoIterator<Item = Digest>,
        timestamp: TimestampMs,
    ) -> Released {
        let mut released = Released::default();
        for digest in ordered {
            if self.entries.contains_key(&digest) {
                self.release(&digest);
                released.ordered.push(digest);
            }
        }
        self.committed_time = self.committed_time.max(timestamp);
        while let Some(&(expires_at, digest)) = self.by_expiry.first() {
            if expires_at > self.committed_time {
                break;
            }
            if self.entries.get(&digest).is_some_and(|e| !e.counted) {
                released.own_expired.push(digest);
            }
            self.release(&digest);
            released.expired.push(digest);
        }
        released
    }

    /// Stored, unordered batches (and their bytes) counted against `author`'s quota.
    pub fn held_by(&self, author: ValidatorIndex) -> (usize, u64) {
        self.usage
            .get(&author)
            .map_or((0, 0), |u| (u.batches, u.bytes))
    }

    /// Batches in the ledger (own ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, digest: Digest, entry: LedgerEntry) {
        if entry.counted {
            let usage = self.usage.entry(entry.author).or_default();
            usage.batches += 1;
            usage.bytes = usage.bytes.saturating_add(entry.bytes);
        }
        self.by_expiry.insert((entry.expires_at, digest));
        self.entries.insert(digest, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::Epoch;

    fn info(author: u32, sequence: u64, bytes: u64, expires_at: u64) -> BatchInfo {
        BatchInfo {
            author: ValidatorIndex(author),
            epoch: Epoch(1),
            sequence,
            expires_at: TimestampMs(expires_at),
            digest: Digest::of_tagged("ledger test", &(author, sequence)),
            num_transactions: 1,
            num_bytes: bytes,
        }
    }

    fn ledger(max_batches: usize, max_bytes: u64) -> BatchLedger {
        BatchLedger::new(&DisseminationConfig {
            max_stored_batches_per_author: max_batches,
            max_stored_bytes_per_author: max_bytes,
            ..DisseminationConfig::default()
        })
    }

    #[test]
    fn a_flooding_author_hits_its_quota_and_the_others_do_not() {
        let mut l = ledger(3, 1_000);
        for s in 0..3 {
            assert_eq!(l.admit(&info(1, s, 100, 5_000)), Ok(true));
        }
        assert_eq!(
            l.admit(&info(1, 3, 100, 5_000)),
            Err(QuotaExceeded::Batches {
                author: ValidatorIndex(1),
                held: 3,
                limit: 3
            })
        );
        // Bytes bind too.
        assert_eq!(l.admit(&info(2, 0, 900, 5_000)), Ok(true));
        assert!(matches!(
            l.admit(&info(2, 1, 101, 5_000)),
            Err(QuotaExceeded::Bytes {
                would_hold: 1_001,
                ..
            })
        ));
        assert_eq!(l.admit(&info(3, 0, 100, 5_000)), Ok(true));
        // A copy of a held batch is not counted twice.
        assert_eq!(l.admit(&info(1, 0, 100, 5_000)), Ok(false));
        assert_eq!(l.held_by(ValidatorIndex(1)), (3, 300));
        // Own batches never count.
        for s in 0..10 {
            l.record_own(&info(0, s, 500, 5_000));
        }
        assert_eq!(l.held_by(ValidatorIndex(0)), (0, 0));
    }

    #[test]
    fn ordering_and_refusal_release_and_committed_time_expires() {
        let mut l = ledger(2, 1_000);
        let (a, b) = (info(1, 0, 10, 5_000), info(1, 1, 10, 9_000));
        l.admit(&a).unwrap();
        l.admit(&b).unwrap();
        // A refused verification frees the slot.
        l.release(&b.digest);
        assert_eq!(l.held_by(ValidatorIndex(1)), (1, 10));
        l.admit(&b).unwrap();
        // Ordered: leaves the ledger, not for deletion.
        let released = l.on_committed([a.digest], TimestampMs(1_000));
        assert_eq!(released.ordered, vec![a.digest]);
        assert!(released.expired.is_empty());
        assert_eq!(l.held_by(ValidatorIndex(1)), (1, 10));
        // The committed time reaching `b`'s expiry deletes it; before, nothing goes.
        let own = info(0, 0, 10, 8_999);
        l.record_own(&own);
        assert_eq!(l.on_committed([], TimestampMs(8_998)), Released::default());
        let released = l.on_committed([], TimestampMs(9_000));
        assert_eq!(released.expired, vec![own.digest, b.digest]);
        assert_eq!(
            released.own_expired,
            vec![own.digest],
            "own batches are named"
        );
        assert!(l.is_empty());
        assert_eq!(l.held_by(ValidatorIndex(1)), (0, 0));
        // The committed time never goes back.
        l.admit(&info(2, 0, 10, 9_500)).unwrap();
        assert_eq!(l.on_committed([], TimestampMs(100)), Released::default());
        assert_eq!(l.on_committed([], TimestampMs(9_500)).expired.len(), 1);
    }
}
