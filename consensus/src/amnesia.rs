//! The amnesia guard: what a replica that lost its safety data may sign, and when.
//!
//! A replica whose data directory was wiped, or restored from an old backup, restarts without
//! the record of what it signed ([`crate::SafetyData`]); signing again could contradict a vote
//! or timeout it signed before. The embedder says so with [`crate::RecoveryData::amnesiac`].
//!
//! Derivation. A replica signs in round `r` only while in round `r`, and it enters `r` only on a
//! certificate (QC or TC) for `r - 1`. For `r - 1 >= 1` that certificate carries signatures of
//! more than 2/3 of the stake, each signed in round `r - 1`. Any set of answers from more than
//! 2/3 of the stake meets those signers in more than 1/3 of the stake, so (faulty stake, the
//! amnesiac replica included, being below 1/3) in at least one correct replica with its
//! memory. That replica signed in `r - 1`, so it then held a certificate for `r - 2`, and a
//! correct replica's highest certificate never goes back. So if `M` is the highest certified
//! round among the answers of a quorum (and among what the amnesiac replica learns itself),
//! every round it can have signed in before losing its data is at most `M + 2`
//! ([`signed_at_most`]). Certificates are verified, so a faulty peer cannot raise `M` above a
//! real certified round; it can only withhold, and the correct members of a quorum suffice.
//!
//! Rules:
//! 1. **Sign nothing while amnesiac.** No vote, no timeout, no proposal until validators holding
//!    more than 2/3 of the stake have answered ([`AnswerTally`]): distinct senders, committee
//!    members only, this replica counting itself (its own certificates are answers like any
//!    other's). Meanwhile the replica follows the chain: it processes certificates, advances
//!    rounds, fetches blocks and commits, and asks again on every round timer.
//! 2. **Then stay above `M + 2`.** With a quorum of answers the replica raises its last voted
//!    round to [`resume_last_voted_round`]`(M)` = `M + 3` and persists that before signing
//!    anything. The ordinary safety rules then refuse a vote or proposal in any round up to
//!    `M + 3` and a timeout in any round up to `M + 2` (a replica may time out in its last
//!    voted round, so a last voted round of `M + 2` would allow a timeout there). The vote
//!    given up in `M + 3` is the price of enforcing the bound with the persisted fields alone.
//! 3. **Genesis.** When the quorum's highest certificate is the genesis QC (`M = 0`), refusing
//!    rounds 1 and 2 would deadlock a committee starting fresh, where every replica is
//!    amnesiac (no QC and no TC could ever form). Instead the last voted round becomes 1: no
//!    vote and no proposal in round 1, a timeout there allowed. A round-1 timeout carries the
//!    genesis QC, so it is the same signed data whenever it is signed: re-signing it is no
//!    equivocation. A fresh amnesiac committee therefore spends its round 1 on a timeout
//!    certificate and runs normally from round 2.
//!    Residual risk, named precisely: a replica that signed in round 2 of an epoch (so held a
//!    QC or TC for round 1) and lost its data before any member of the quorum that answered it
//!    held a certificate above genesis may sign again in round 2: a second vote if round 2's
//!    leader equivocates or is this replica itself (whose new proposal differs), or a timeout
//!    with a lower high QC. Round 1 carries no such risk, nor does any later round.
//!
//! Limits: the guard relies on amnesiac replicas counting as faulty. When more than 1/3 of the
//! stake loses its data at once (beyond the fault model), the replicas stay safe but may wait
//! forever: rounds `M + 1` to `M + 3` then lack a quorum of signers.

use keel_types::{Committee, Round, ValidatorIndex};
use std::collections::BTreeSet;

/// The highest round an amnesiac replica can have signed in before it lost its data, given
/// `highest_certified`, the highest certified round `M` among a quorum's answers.
pub fn signed_at_most(highest_certified: Round) -> Round {
    Round(highest_certified.0.saturating_add(2))
}

/// The last voted round an amnesiac replica adopts once a quorum answered with highest
/// certified round `highest_certified` (rules 2 and 3): `M + 3`, or 1 at genesis.
pub fn resume_last_voted_round(highest_certified: Round) -> Round {
    if highest_certified == Round(0) {
        Round(1)
    } else {
        Round(signed_at_most(highest_certified).0.saturating_add(1))
    }
}

/// What one answer did to the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// A new sender's answer; its stake now counts.
    Counted,
    /// The sender had answered already: its stake counts once.
    Duplicate,
    /// The sender is not a committee member: ignored.
    NotMember,
}

/// Answers collected by an amnesiac replica: who answered (distinct committee members, by
/// stake) and the highest certified round among them.
#[derive(Debug, Clone)]
pub struct AnswerTally {
    answered: BTreeSet<ValidatorIndex>,
    stake: u64,
    highest: Round,
}

impl AnswerTally {
    /// A tally holding this replica's own answer: `me` with its highest certified round.
    pub fn new(committee: &Committee, me: ValidatorIndex, own_round: Round) -> Self {
        let mut tally = AnswerTally {
            answered: BTreeSet::new(),
            stake: 0,
            highest: Round(0),
        };
        tally.add(committee, me, own_round);
        tally
    }

    /// Counts `from`'s answer certifying `round`: a committee member's stake counts once.
    pub fn add(
        &mut self,
        committee: &Committee,
        from: ValidatorIndex,
        round: Round,
    ) -> AnswerOutcome {
        if committee.validator(from).is_none() {
            return AnswerOutcome::NotMember;
        }
        // Any verified certificate is real, whoever sent it: it raises M even from a repeat.
        self.highest = self.highest.max(round);
        if !self.answered.insert(from) {
            return AnswerOutcome::Duplicate;
        }
        self.stake = self.stake.saturating_add(committee.stake(from));
        AnswerOutcome::Counted
    }

    /// Raises the highest certified round with one this replica learnt itself.
    pub fn learn(&mut self, round: Round) {
        self.highest = self.highest.max(round);
    }

    /// Whether more than 2/3 of the stake has answered.
    pub fn has_quorum(&self, committee: &Committee) -> bool {
        committee.is_quorum(self.stake)
    }

    /// The highest certified round answered or learnt (`M`).
    pub fn highest(&self) -> Round {
        self.highest
    }

    /// The committee members that have not answered yet.
    pub fn missing(&self, committee: &Committee) -> Vec<ValidatorIndex> {
        committee
            .indices()
            .filter(|v| !self.answered.contains(v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{Epoch, test_utils::committee_with_stakes};

    #[test]
    fn the_floor_is_two_rounds_past_the_highest_certificate_and_genesis_starts() {
        assert_eq!(signed_at_most(Round(5)), Round(7));
        assert_eq!(resume_last_voted_round(Round(5)), Round(8));
        assert_eq!(resume_last_voted_round(Round(1)), Round(4));
        assert_eq!(resume_last_voted_round(Round(0)), Round(1));
    }

    #[test]
    fn stake_counts_once_per_member() {
        let (c, _) = committee_with_stakes(Epoch(1), &[1, 1, 1, 3]);
        let mut t = AnswerTally::new(&c, ValidatorIndex(0), Round(2));
        assert_eq!(
            t.add(&c, ValidatorIndex(1), Round(4)),
            AnswerOutcome::Counted
        );
        assert_eq!(
            t.add(&c, ValidatorIndex(1), Round(6)),
            AnswerOutcome::Duplicate
        );
        assert_eq!(
            t.add(&c, ValidatorIndex(9), Round(9)),
            AnswerOutcome::NotMember
        );
        assert!(!t.has_quorum(&c), "2 of 6 is no quorum");
        assert_eq!(t.highest(), Round(6));
        assert_eq!(t.missing(&c), vec![ValidatorIndex(2), ValidatorIndex(3)]);
        // 2 + 3 = 5 of 6 is more than 2/3.
        assert_eq!(
            t.add(&c, ValidatorIndex(3), Round(1)),
            AnswerOutcome::Counted
        );
        assert!(t.has_quorum(&c));
        t.learn(Round(10));
        assert_eq!(t.highest(), Round(10));
    }
}
