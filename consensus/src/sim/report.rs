//! What a run showed. [`SimReport`] carries the checker's safety violations, each replica's
//! committed height, traffic counters, and the liveness measures taken from the stabilisation
//! time on: how many blocks each honest replica committed after it, and how many rounds went
//! by before its first commit. `Liveness` takes those measures while the run goes.

use keel_types::Round;

/// What a run showed.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Safety violations found by the checker (empty when safe).
    pub violations: Vec<String>,
    /// Committed height per replica at the end.
    pub heights: Vec<u64>,
    /// Blocks each honest replica committed after `stable_ms` (`None` for faulty replicas).
    pub commits_after_stable: Vec<Option<u64>>,
    /// The most rounds any honest replica went, after `stable_ms`, before its first commit.
    pub rounds_to_resume: u64,
    /// The highest round any replica reached.
    pub max_round: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages refused because they failed verification.
    pub rejected: u64,
    /// Messages refused by the core's precheck, before any verification.
    pub dropped_unverified: u64,
    /// Rounds in which an honest replica acted on a leader it had not computed from final
    /// history (it lagged, see [`crate::Reputation`]) and that differs from another honest
    /// replica's: a wasted round at most, never a safety question (not a violation).
    pub unfinal_leader_disagreements: u64,
    /// Each replica's epoch at the end.
    pub epochs: Vec<u64>,
    /// Messages of an older epoch refused.
    pub old_epoch_refused: u64,
    /// Messages of a newer epoch held until the switch.
    pub future_epoch_held: u64,
    /// Answers to late replicas' requests for the rest of their epoch that they applied.
    pub epoch_syncs: u64,
}

impl SimReport {
    /// An empty report for `n` replicas.
    pub(super) fn new(n: usize) -> Self {
        SimReport {
            heights: vec![0; n],
            commits_after_stable: vec![None; n],
            ..SimReport::default()
        }
    }

    /// The least number of blocks an honest replica committed after stabilisation.
    pub fn min_commits_after_stable(&self) -> u64 {
        self.commits_after_stable
            .iter()
            .flatten()
            .copied()
            .min()
            .unwrap_or(0)
    }
}

/// Liveness measures, per replica, taken from the stabilisation time on.
pub(super) struct Liveness {
    /// Height and the highest live round when the network stabilised (`None` before).
    at_stable: Vec<Option<(u64, Round)>>,
    /// Rounds between stabilisation and the replica's first commit after it.
    resumed_after_rounds: Vec<Option<u64>>,
    marked: bool,
}

impl Liveness {
    /// Measures for `n` replicas.
    pub(super) fn new(n: usize) -> Self {
        Liveness {
            at_stable: vec![None; n],
            resumed_after_rounds: vec![None; n],
            marked: false,
        }
    }

    /// Whether the stabilisation time has been marked.
    pub(super) fn is_marked(&self) -> bool {
        self.marked
    }

    /// Records, at stabilisation, each replica's height and the highest round any live
    /// replica has reached (the yardstick for how long commits take to resume).
    pub(super) fn mark_stable(&mut self, heights: &[u64], highest_round: Round) {
        self.marked = true;
        for (at, h) in self.at_stable.iter_mut().zip(heights) {
            *at = Some((*h, highest_round));
        }
    }

    /// Honest replica `i` committed a block while in `round`.
    pub(super) fn honest_commit(&mut self, i: usize, round: Round) {
        if let Some((_, stable_round)) = self.at_stable[i]
            && self.resumed_after_rounds[i].is_none()
        {
            self.resumed_after_rounds[i] = Some(round.0.saturating_sub(stable_round.0));
        }
    }

    /// Fills `report`'s liveness fields for replica `i`, at height `height`, if it is honest
    /// and up at the end.
    pub(super) fn fill(&self, report: &mut SimReport, i: usize, height: u64, honest_and_up: bool) {
        report.heights[i] = height;
        if honest_and_up {
            let (at_stable, _) = self.at_stable[i].unwrap_or((0, Round(0)));
            report.commits_after_stable[i] = Some(height - at_stable);
            report.rounds_to_resume = report
                .rounds_to_resume
                .max(self.resumed_after_rounds[i].unwrap_or(u64::MAX));
        }
    }
}
