//! Transactions admitted here and not yet executed, so the API can answer "pending" for them.
//! The API inserts at admission, the execution thread removes on receipts. Bounded: beyond
//! `capacity` the oldest are forgotten (such a transaction reads as unknown until its receipt
//! exists; nothing else depends on this set).

use keel_types::Digest;
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};

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
        let mut inner = self.inner.lock();
        for d in digests {
            if inner.set.insert(d) {
                inner.order.push_back(d);
            }
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
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
}
