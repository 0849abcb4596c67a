//! What a replica signs as a voter: its vote for the current round leader's proposal
//! ([`Core::vote_for`], the only path to a vote, with every check in order) and its timeout
//! when the round timer fires ([`Core::local_timeout`], carrying the round's vote so the QC
//! can still form if the next leader failed). Both leave only after their safety data is
//! persisted.

use super::Core;
use crate::{
    error::{Error, Result},
    interface::{Action, PayloadSource, PayloadValidator},
    leader::LeaderElection,
    message::ConsensusMessage,
};
use keel_types::{Round, SignedBlock};

impl<L: LeaderElection, P: PayloadSource + PayloadValidator> Core<L, P> {
    /// Votes for `block`, the current round leader's proposal, now in the tree: the only path
    /// to a vote. In order: the timestamp must not precede the parent's nor run ahead of this
    /// replica's clock by more than `max_clock_drift_ms`; the payload must be within
    /// `max_block_proofs` and `max_block_bytes`; the failed leaders it records must be those this replica's
    /// election names for the rounds it skips; the safety rules must allow the vote; then, and only then, the
    /// payload validator checks the payload (its proofs included, which verification left to
    /// it); then the vote is signed and released only after its safety data is persisted.
    pub(crate) fn vote_for(&mut self, block: &SignedBlock, out: &mut Vec<Action>) -> Result<()> {
        let b = &block.block;
        let parent = b.parent();
        let parent_timestamp = self.tree.timestamp_of(&parent).unwrap_or_default();
        if b.timestamp < parent_timestamp {
            return Err(Error::Unsafe(format!(
                "block timestamp {} is before its parent's {parent_timestamp}",
                b.timestamp
            )));
        }
        if b.timestamp.0 > self.now.0.saturating_add(self.config.max_clock_drift_ms) {
            return Err(Error::Unsafe(format!(
                "block timestamp {} is more than {} ms ahead of this replica's clock {}",
                b.timestamp, self.config.max_clock_drift_ms, self.now
            )));
        }
        crate::precheck::payload_within_limits(&b.payload, &self.config)?;
        // Only where this replica's history decides the round: replicas that are not final
        // for a round may name another leader for it, and refusing them would stall.
        if let Some((round, named)) = b
            .skipped_rounds()
            .zip(&b.failed_leaders)
            .filter_map(|(r, named)| named.map(|n| (r, n)))
            .find(|(r, named)| self.leader.is_final(*r) && self.leader.leader(*r) != *named)
        {
            return Err(Error::Unsafe(format!(
                "block records {named} as the failed leader of round {round}, this replica's election names {}",
                self.leader.leader(round)
            )));
        }
        self.safety.check_vote(block)?;
        if !self.payload.validate(b) {
            return Err(Error::Unsafe("payload refused".into()));
        }
        let parent_parent_round = self.tree.parent_round_of(&parent).unwrap_or_default();
        let vote = self.safety.vote(block, parent_parent_round)?;
        self.safety
            .record_certificates(&self.high_qc, self.last_tc.as_ref());
        self.stats.votes += 1;
        let next_leader = self.leader.leader(Round(b.round.0.saturating_add(1)));
        out.push(Action::PersistSafety {
            data: self.safety.data().clone(),
            then: vec![Action::Send {
                to: next_leader,
                message: ConsensusMessage::Vote(vote),
            }],
        });
        // The next leader may wait for payload before proposing if nothing ordered is
        // uncommitted (it also checks its own payload, unknown here): allow for that wait.
        if self.config.max_idle_wait_ms > 0
            && b.round == self.round()
            && !self.tree.uncommitted_payload(&block.digest())
        {
            self.pacemaker.mark_idle(self.now);
            out.push(Action::SetTimer {
                round: b.round,
                after_ms: self.pacemaker.timeout_ms(),
            });
        }
        Ok(())
    }

    /// The round timer fired: sign (once per round) and broadcast a timeout, with this round's
    /// vote if there is one, after persisting; re-arm the timer.
    pub(crate) fn local_timeout(&mut self, out: &mut Vec<Action>) {
        if self.is_amnesiac() {
            // Nothing to sign; the round timer asks for certificates instead (and is not
            // re-armed here, so timeouts arriving from others cannot keep postponing it).
            return;
        }
        let round = self.round();
        self.pacemaker.on_local_timeout();
        let timeout = match &self.last_timeout {
            Some(t) if t.round == round => Some(t.clone()),
            _ => {
                let entry_tc = self.last_tc.as_ref();
                match self.safety.timeout(round, &self.high_qc, entry_tc) {
                    Ok(t) => {
                        self.safety
                            .record_certificates(&self.high_qc, self.last_tc.as_ref());
                        self.stats.timeouts += 1;
                        self.last_timeout = Some(t.clone());
                        Some(t)
                    }
                    Err(_) => {
                        self.stats.dropped += 1;
                        None
                    }
                }
            }
        };
        if let Some(t) = timeout {
            let mut release = vec![Action::Broadcast(ConsensusMessage::Timeout(t))];
            // Votes survive a failed round: the vote went to the next leader only; if that
            // leader failed, everyone can still form the QC from the votes that come with the
            // timeouts, so this round's block is certified rather than orphaned.
            if let Some(vote) = &self.safety.data().last_vote
                && vote.data.round == round
            {
                release.push(Action::Broadcast(ConsensusMessage::Vote(vote.clone())));
            }
            // Replicas that missed how the previous round ended can catch up from its TC.
            if let Some(tc) = &self.last_tc {
                release.push(Action::Broadcast(ConsensusMessage::TimeoutCertificate(
                    tc.clone(),
                )));
            }
            out.push(Action::PersistSafety {
                data: self.safety.data().clone(),
                then: release,
            });
        }
        // Re-arm: if the round still does not end, the timeout is re-broadcast (lossy links).
        out.push(Action::SetTimer {
            round,
            after_ms: self.pacemaker.timeout_ms(),
        });
    }
}
