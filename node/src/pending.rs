//! Transactions admitted here and not yet executed, so the API can answer "pending" for them,
//! and how long the oldest of them has waited: admission refuses new transactions while that
//! wait is over its limit (see `api_view`), so the queues behind admission never grow into
//! seconds of latency. The API inserts at admission, the execution thread removes on
//! receipts. Bounded: beyond `capacity` the oldest are forgotten (such a transaction reads as
//! unknown until its receipt exists). A transaction that waited past the horizon given to
//! [`PendingTxs::oldest_wait`] no longer counts for the wait, so one that never executes here
//! (its batch lost, or ordered from another validator under a different digest) cannot keep
//! admission closed.

use keel_types::Digest;
use parking_lot::Mutex;
use std::{
    collections::{HashSet, VecDeque},
    time::{Duration, Instant},
};

/// The set, behind its own short lock (held for a set operation, never across I/O).
#[derive(Debug)]
pub struct PendingTxs {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<Digest>,
    order: VecDeque<Digest>,
    /// Admission times, oldest first (executed ones leave lazily).
    waits: VecDeque<(Digest, Instant)>,
}

impl PendingTxs {
    /// An empty set of at most `capacity` digests.
    pub fn new(capacity: usize) -> Self {
        PendingTxs {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// Records admitted transactions.
    pub fn insert_all(&self, digests: impl IntoIterator<Item = Digest>) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        for d in digests {
            if inner.set.insert(d) {
                inner.order.push_back(d);
                inner.waits.push_back((d, now));
            }
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
        while inner.waits.len() > self.capacity {
            inner.waits.pop_front();
        }
    }

    /// How long the oldest transaction still pending has waited at `now`, among those that
    /// waited at most `horizon` (older ones are dropped from this reckoning). Zero when none.
    pub fn oldest_wait(&self, now: Instant, horizon: Duration) -> Duration {
        let mut inner = self.inner.lock();
        while let Some(&(d, at)) = inner.waits.front() {
            let waited = now.saturating_duration_since(at);
            if inner.set.contains(&d) && waited <= horizon {
                return waited;
            }
            inner.waits.pop_front();
        }
        Duration::ZERO
    }

    /// Forgets executed transactions (their receipts answer from now on). The order queue
    /// keeps their digests until they age out, which only bounds it more tightly.
    pub fn remove_all<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let mut inner = self.inner.lock();
        for d in digests {
            inner.set.remove(d);
        }
    }

    /// Whether `digest` was admitted here and has not executed.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.inner.lock().set.contains(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_forgotten_first() {
        let p = PendingTxs::new(2);
        let d = |i: u64| Digest::of_tagged("t", &i);
        p.insert_all([d(1), d(2), d(3)]);
        assert!(!p.contains(&d(1)));
        assert!(p.contains(&d(2)) && p.contains(&d(3)));
        p.remove_all([&d(2)]);
        assert!(!p.contains(&d(2)));
    }

    #[test]
    fn the_oldest_wait_skips_executed_and_long_lost_transactions() {
        let p = PendingTxs::new(16);
        let d = |i: u64| Digest::of_tagged("t", &i);
        let hour = Duration::from_secs(3600);
        assert_eq!(p.oldest_wait(Instant::now(), hour), Duration::ZERO);
        p.insert_all([d(1)]);
        std::thread::sleep(Duration::from_millis(20));
        p.insert_all([d(2)]);
        let now = Instant::now();
        assert!(p.oldest_wait(now, hour) >= Duration::from_millis(20));
        // The oldest executes: the next one's wait counts.
        p.remove_all([&d(1)]);
        assert!(p.oldest_wait(now, hour) < Duration::from_millis(20));
        // Past the horizon a transaction no longer holds the wait up.
        let later = now + Duration::from_secs(10);
        assert_eq!(p.oldest_wait(later, Duration::from_secs(5)), Duration::ZERO);
        assert!(p.contains(&d(2)), "still reported pending");
    }
}
