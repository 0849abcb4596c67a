//! The safety checker, run after every step of a simulation. It asserts what must hold
//! whatever the adversary does: honest replicas never commit different blocks at one height
//! and every honest chain is a prefix of one canonical chain; an honest replica's commit
//! heights are contiguous; no honest replica equivocates in a round, across all its lives (crashes
//! and wipes included): it signs no votes for two blocks, no two timeouts with different high
//! QC rounds, and no first vote after a timeout in that round; a live honest replica's round
//! never goes back; and (when safety data is persisted) its last voted round never goes back
//! either, except when a wipe loses it; and honest replicas that act on a leader (propose as
//! it, or vote for its block) computed from final history agree on it in every round.
//! Violations are collected as messages, not panics, so a
//! test can print the seed and the whole list.

use keel_types::{Digest, Epoch, Height, Round, Timeout, ValidatorIndex, Vote};

/// A round of an epoch (rounds restart at 0 in each epoch).
pub(super) type EpochRound = (Epoch, Round);
use std::collections::{HashMap, HashSet};

/// What the checker has seen, and what it found.
pub(super) struct Checker {
    /// The first block committed at each height by any honest replica.
    canonical: Vec<Digest>,
    /// The block each honest replica voted for in each round.
    honest_votes: HashMap<(usize, EpochRound), Digest>,
    /// The high QC round of each honest replica's timeout in each round.
    honest_timeouts: HashMap<(usize, EpochRound), Round>,
    /// Per replica: its round after its last step (0 after a crash).
    rounds: Vec<Round>,
    /// Per replica: its last voted round after its last step.
    voted: Vec<Round>,
    /// Whether the last voted round must survive crashes (safety data is persisted).
    voted_survives_crashes: bool,
    /// Per round: the leader honest replicas acted on from final history, and the first
    /// replica that did.
    final_leaders: HashMap<EpochRound, (ValidatorIndex, usize)>,
    /// Per round: every leader honest replicas acted on.
    acted_leaders: HashMap<EpochRound, HashSet<ValidatorIndex>>,
    violations: Vec<String>,
}

impl Checker {
    /// A checker for `n` replicas.
    pub(super) fn new(n: usize, voted_survives_crashes: bool) -> Self {
        Checker {
            canonical: Vec::new(),
            honest_votes: HashMap::new(),
            honest_timeouts: HashMap::new(),
            rounds: vec![Round(0); n],
            voted: vec![Round(0); n],
            voted_survives_crashes,
            final_leaders: HashMap::new(),
            acted_leaders: HashMap::new(),
            violations: Vec::new(),
        }
    }

    /// The violations found so far.
    pub(super) fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Ends the check: every honest replica's committed chain must be a prefix of the
    /// canonical one. Returns every violation found.
    pub(super) fn finish<'a>(
        mut self,
        honest_chains: impl Iterator<Item = (usize, &'a [Digest])>,
    ) -> Vec<String> {
        for (i, chain) in honest_chains {
            if let Some(h) = chain.iter().zip(&self.canonical).position(|(a, b)| a != b) {
                self.violations.push(format!(
                    "replica {i} diverges from the canonical chain at height {}",
                    h + 1
                ));
            }
        }
        self.violations
    }

    /// Honest replica `from` sends `vote` at `now`: it must not have voted for another block
    /// in that round. Returns whether this is its first vote in the round (not the same vote
    /// again, as timeouts re-send it).
    pub(super) fn honest_vote(&mut self, now: u64, from: usize, vote: &Vote) -> bool {
        let round = vote.data.round;
        let key = (from, (vote.data.epoch, round));
        match self.honest_votes.get(&key) {
            Some(d) if *d != vote.data.block => {
                self.violations.push(format!(
                    "t={now}ms: honest replica {from} voted for two blocks in round {round}"
                ));
                false
            }
            Some(_) => false, // the same vote again
            None => {
                if self.honest_timeouts.contains_key(&key) {
                    self.violations.push(format!(
                        "t={now}ms: honest replica {from} voted in round {round} after timing out in it"
                    ));
                }
                self.honest_votes.insert(key, vote.data.block);
                true
            }
        }
    }

    /// Honest replica `from` acts at `now` on `leader` leading `round`, computed from final
    /// history or not (`is_final`): every final belief in a round must be the same.
    pub(super) fn honest_leader(
        &mut self,
        now: u64,
        from: usize,
        round: EpochRound,
        leader: ValidatorIndex,
        is_final: bool,
    ) {
        self.acted_leaders.entry(round).or_default().insert(leader);
        if !is_final {
            return;
        }
        match self.final_leaders.get(&round) {
            Some((other, by)) if *other != leader => self.violations.push(format!(
                "t={now}ms: honest replicas {by} and {from} took {other} and {leader} as the leader of round {} of epoch {}",
                round.1,
                round.0
            )),
            Some(_) => {}
            None => {
                self.final_leaders.insert(round, (leader, from));
            }
        }
    }

    /// Rounds in which honest replicas acted on different leaders, some of them not from final
    /// history (final disagreements are violations).
    pub(super) fn unfinal_disagreements(&self) -> u64 {
        self.acted_leaders.values().filter(|l| l.len() > 1).count() as u64
    }

    /// Honest replica `from` sends `timeout` at `now`: any earlier timeout of its in that round
    /// must carry the same high QC round (the same signed data).
    pub(super) fn honest_timeout(&mut self, now: u64, from: usize, timeout: &Timeout) {
        let qc_round = timeout.high_qc.round();
        let key = (from, (timeout.epoch, timeout.round));
        match self.honest_timeouts.get(&key) {
            Some(r) if *r != qc_round => self.violations.push(format!(
                "t={now}ms: honest replica {from} signed conflicting timeouts in round {} (high QC rounds {r} and {qc_round})",
                timeout.round
            )),
            _ => {
                self.honest_timeouts.insert(key, qc_round);
            }
        }
    }

    /// Honest replica `i`, which had committed `committed` blocks, commits `digest` at
    /// `height`: the height must be the next one, and the block the canonical one there.
    pub(super) fn honest_commit(
        &mut self,
        now: u64,
        i: usize,
        committed: u64,
        digest: Digest,
        height: Height,
    ) {
        let expected = committed + 1;
        if height.0 != expected {
            self.violations.push(format!(
                "t={now}ms: replica {i} committed height {height} after height {}",
                expected - 1
            ));
        }
        let h = height.0 as usize;
        if h == self.canonical.len() + 1 {
            self.canonical.push(digest);
        } else if let Some(c) = self.canonical.get(h.wrapping_sub(1))
            && *c != digest
        {
            self.violations.push(format!(
                "t={now}ms: replica {i} committed {} at height {h}, others committed {}",
                digest.short(),
                c.short()
            ));
        }
    }

    /// Honest replica `i` finished a step in `round` with last voted round `voted`: neither
    /// may go back.
    pub(super) fn honest_step(&mut self, now: u64, i: usize, round: Round, voted: Round) {
        if round < self.rounds[i] {
            self.violations.push(format!(
                "t={now}ms: replica {i} went back from round {} to {round}",
                self.rounds[i]
            ));
        }
        self.rounds[i] = round;
        if self.voted_survives_crashes {
            if voted < self.voted[i] {
                self.violations.push(format!(
                    "t={now}ms: replica {i} last voted round went back to {voted}"
                ));
            }
            self.voted[i] = voted;
        }
    }

    /// Replica `i` started a new epoch: its round and last voted round restart at 0 (what it
    /// signed in earlier epochs stays recorded under their epoch).
    pub(super) fn epoch_started(&mut self, i: usize) {
        self.rounds[i] = Round(0);
        self.voted[i] = Round(0);
    }

    /// Replica `i` crashed: its round restarts from what it persisted.
    pub(super) fn crashed(&mut self, i: usize) {
        self.rounds[i] = Round(0);
    }

    /// Replica `i` lost its safety data: its last voted round restarts too (what it signed
    /// before stays recorded here, so equivocation across the wipe is still caught).
    pub(super) fn wiped(&mut self, i: usize) {
        self.voted[i] = Round(0);
    }
}
