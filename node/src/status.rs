//! The node's read-mostly status: a `watch` that the consensus driver, the execution thread
//! and the sync task write and the API reads. Writers only ever change their own fields (`send_modify`), so the
//! two never overwrite each other; readers borrow briefly and never block a writer for long.

use keel_consensus::ValidatorReputation;
use keel_types::{Digest, Height, Round, ValidatorIndex};
use std::{collections::VecDeque, time::Instant};
use tokio::sync::watch;

/// Where the node stands with range sync (for the API and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncProgress {
    /// Following consensus.
    #[default]
    Idle,
    /// Installing a certified checkpoint's state (start-up state sync).
    State {
        /// The checkpoint's height.
        height: Height,
        /// Buckets proven so far, of 256.
        buckets: u16,
    },
    /// Fetching committed ranges.
    Range {
        /// The committed height when this sync started.
        start: Height,
        /// The last height applied.
        applied: Height,
        /// The height being synced to.
        target: Height,
    },
}

/// The driver's view of consensus, refreshed when the round changes (admin status).
#[derive(Debug, Clone, Default)]
pub struct ConsensusView {
    /// The current round's leader.
    pub leader: ValidatorIndex,
    /// The current round timeout in ms.
    pub round_timeout_ms: u64,
    /// Rounds left on a timeout certificate since start.
    pub failed_rounds: u64,
    /// `reputation` or `round_robin`.
    pub election: &'static str,
    /// Each validator's standing in the current round's draw (empty for round robin).
    pub reputations: Vec<ValidatorReputation>,
}

/// What consensus and execution have reached.
#[derive(Debug)]
pub struct NodeStatus {
    /// The consensus round (driver).
    pub round: Round,
    /// Leaders, timeouts (driver).
    pub consensus: ConsensusView,
    /// The highest committed height (driver).
    pub committed: Height,
    /// The highest executed height (execution).
    pub executed: Height,
    /// The state root after `executed` (execution).
    pub root: Digest,
    /// Transactions executed so far (execution).
    pub executed_transactions: u64,
    /// The last commit or execution (both).
    pub last_progress: Instant,
    /// Range sync's progress (sync task).
    pub sync: SyncProgress,
    /// Every task runs (false during start-up, state sync included).
    pub started: bool,
    /// State roots of recently executed heights, oldest first, at most `max_roots` (execution).
    roots: VecDeque<(Height, Digest)>,
    max_roots: usize,
}

impl NodeStatus {
    /// The status at start: what the store recovered.
    pub fn new(
        committed: Height,
        executed: Height,
        root: Digest,
        executed_transactions: u64,
        max_roots: usize,
    ) -> Self {
        NodeStatus {
            round: Round(0),
            consensus: ConsensusView::default(),
            committed,
            executed,
            root,
            executed_transactions,
            last_progress: Instant::now(),
            sync: SyncProgress::Idle,
            started: false,
            roots: VecDeque::new(),
            max_roots: max_roots.max(1),
        }
    }

    /// Records the root after executing `height` (forgetting the oldest beyond the bound).
    pub fn record_root(&mut self, height: Height, root: Digest) {
        self.roots.push_back((height, root));
        while self.roots.len() > self.max_roots {
            self.roots.pop_front();
        }
    }

    /// Forgets the roots of heights below `height` (pruned ones).
    pub fn forget_roots_below(&mut self, height: Height) {
        while self.roots.front().is_some_and(|(h, _)| *h < height) {
            self.roots.pop_front();
        }
    }

    /// The state root after `height`, if still remembered.
    pub fn root_at(&self, height: Height) -> Option<Digest> {
        let i = self.roots.partition_point(|(h, _)| *h < height);
        self.roots
            .get(i)
            .filter(|(h, _)| *h == height)
            .map(|(_, r)| *r)
    }
}

/// The writing side (driver and execution each hold a clone).
pub type StatusWriter = watch::Sender<NodeStatus>;
/// The reading side (API).
pub type StatusReader = watch::Receiver<NodeStatus>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_bounded_and_found_by_height() {
        let mut s = NodeStatus::new(Height(0), Height(0), Digest::default(), 0, 3);
        for h in 1..=5u64 {
            s.record_root(Height(h), Digest::of_tagged("r", &h));
        }
        assert_eq!(s.root_at(Height(2)), None, "forgotten");
        assert_eq!(s.root_at(Height(5)), Some(Digest::of_tagged("r", &5u64)));
        assert_eq!(s.root_at(Height(6)), None);
        s.forget_roots_below(Height(5));
        assert_eq!(s.root_at(Height(4)), None, "pruned");
        assert_eq!(s.root_at(Height(5)), Some(Digest::of_tagged("r", &5u64)));
    }
}
