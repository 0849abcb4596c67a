//! Safety rules: the only component that signs votes, timeouts and proposals, and the state it
//! persists.
//!
//! Rules (Jolteon / DiemBFT v4, two-chain):
//! 1. **Vote once per round.** A vote for round `r` requires `r > last_voted_round`; signing
//!    sets `last_voted_round = r`.
//! 2. **Extend the certified chain.** A block at round `r` with parent QC round `q` is safe to
//!    vote for iff `r == q + 1`, or `r == tc.round + 1` and `q >= ` the highest QC round reported
//!    in that TC. So after a timeout the new block extends the highest QC any quorum member had
//!    seen, which is at least as high as any block that may have been committed.
//! 3. **Timeouts do not undercut.** A timeout for round `r` requires `r >= last_voted_round`,
//!    `r == q + 1` or `r == tc.round + 1` for the signer's high QC round `q` (resp. the TC that
//!    brought it to `r`), and `q >= one_chain_round` (the highest QC round it has voted on).
//!    Signing sets `last_voted_round = max(last_voted_round, r)`, so a replica that timed out in
//!    round `r` never votes in it afterwards.
//! 4. **Durable before visible.** Every signature updates [`SafetyData`]; the core emits it in
//!    [`crate::Action::PersistSafety`], whose carried messages the embedder releases only after a
//!    synced write. After a crash the replica reloads the data, so it cannot sign twice.
//! 5. **Propose above the last voted round.** A proposal for round `r` requires
//!    `r > last_voted_round`. A leader proposes before it votes in its round, so this costs an
//!    honest leader nothing; it keeps a restarted leader that already signed in `r` (and may
//!    have proposed there) from proposing a second block, and applies the amnesia floor to
//!    proposals.
//! 6. **Amnesia.** Rules built from data that may be missing signatures
//!    ([`SafetyRules::amnesiac`]) sign nothing at all until [`SafetyRules::lift_amnesia`]
//!    raises `last_voted_round` to the floor [`crate::amnesia`] derives from a quorum's
//!    certificates; rules 1, 3 and 5 then keep every signature above it.

use crate::error::{Error, Result};
use keel_types::{
    Block, ChainId, Epoch, KeyPair, QuorumCertificate, Round, SignedBlock, Timeout,
    TimeoutCertificate, ValidatorIndex, Vote, VoteData,
};
use serde::{Deserialize, Serialize};

/// The state that must survive a crash for a replica to stay safe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyData {
    /// The epoch the data belongs to.
    pub epoch: Epoch,
    /// Highest round voted or timed out in.
    pub last_voted_round: Round,
    /// Highest round of a QC's parent this replica has seen while voting (the 2-chain lock).
    pub preferred_round: Round,
    /// Highest QC round this replica has voted on or timed out with.
    pub one_chain_round: Round,
    /// Highest round this replica signed a timeout for.
    pub highest_timeout_round: Round,
    /// The last vote signed, re-sent unchanged if asked to vote again in its round.
    pub last_vote: Option<Vote>,
    /// The highest QC known when this data was written. With `last_tc` it brings a restarted
    /// replica back to a round it may sign in (at least `last_voted_round`).
    pub high_qc: Option<QuorumCertificate>,
    /// The TC that ended the highest timed-out round this replica knows.
    pub last_tc: Option<TimeoutCertificate>,
    /// Highest round this replica proposed in: persisted before the proposal leaves, so a
    /// leader restarted within its round never proposes a second block there.
    pub last_proposed_round: Round,
}

/// Signs votes and timeouts only when the rules above allow.
#[derive(Debug)]
pub struct SafetyRules {
    data: SafetyData,
    key: KeyPair,
    author: ValidatorIndex,
    chain_id: ChainId,
    /// Rule 6: `data` may be missing signatures; nothing is signed until lifted.
    amnesiac: bool,
}

impl SafetyRules {
    /// Rules starting from `data` (fresh, or reloaded after a crash).
    pub fn new(data: SafetyData, key: KeyPair, author: ValidatorIndex, chain_id: ChainId) -> Self {
        SafetyRules {
            data,
            key,
            author,
            chain_id,
            amnesiac: false,
        }
    }

    /// Rules starting from `data` that may not record every signature this replica made (no
    /// safety data was found, or it comes from an old backup): they sign nothing until
    /// [`SafetyRules::lift_amnesia`] (rule 6).
    pub fn amnesiac(
        data: SafetyData,
        key: KeyPair,
        author: ValidatorIndex,
        chain_id: ChainId,
    ) -> Self {
        SafetyRules {
            amnesiac: true,
            ..SafetyRules::new(data, key, author, chain_id)
        }
    }

    /// Whether the rules still refuse everything (rule 6).
    pub fn is_amnesiac(&self) -> bool {
        self.amnesiac
    }

    /// Ends amnesia: raises the last voted round to `last_voted_round` (never lowers it), so
    /// rules 1, 3 and 5 refuse every round a signature may be remembered wrongly in. Returns the
    /// data to persist before anything is signed.
    pub fn lift_amnesia(&mut self, last_voted_round: Round) -> &SafetyData {
        self.data.last_voted_round = self.data.last_voted_round.max(last_voted_round);
        self.amnesiac = false;
        &self.data
    }

    fn check_remembers(&self) -> Result<()> {
        if self.amnesiac {
            return Err(Error::Unsafe(
                "amnesiac: no signature until a quorum's certificates set the floor".into(),
            ));
        }
        Ok(())
    }

    /// Whether rules 5 and 6 allow a proposal for `round` (asked before pulling payload).
    pub fn check_proposal(&self, round: Round) -> Result<()> {
        self.check_remembers()?;
        if round <= self.data.last_voted_round {
            return Err(Error::Unsafe(format!(
                "proposal round {round} is not above the last voted round {}",
                self.data.last_voted_round
            )));
        }
        if round <= self.data.last_proposed_round {
            return Err(Error::Unsafe(format!(
                "already proposed in round {} (a restart within the round)",
                self.data.last_proposed_round
            )));
        }
        Ok(())
    }

    /// Signs `block` as this replica's proposal if rules 5 and 6 allow, and records its round:
    /// the data must be persisted before the proposal is sent.
    pub fn sign_proposal(&mut self, block: Block) -> Result<SignedBlock> {
        self.check_proposal(block.round)?;
        self.data.last_proposed_round = block.round;
        Ok(block.sign(&self.key, self.chain_id))
    }

    /// The current safety data.
    pub fn data(&self) -> &SafetyData {
        &self.data
    }

    /// The signing key.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// Records the certificates that justify the replica's current round, to be persisted with
    /// the next signature.
    pub fn record_certificates(
        &mut self,
        high_qc: &QuorumCertificate,
        last_tc: Option<&TimeoutCertificate>,
    ) {
        if self
            .data
            .high_qc
            .as_ref()
            .is_none_or(|q| q.round() < high_qc.round())
        {
            self.data.high_qc = Some(high_qc.clone());
        }
        if let Some(tc) = last_tc
            && self
                .data
                .last_tc
                .as_ref()
                .is_none_or(|t| t.round < tc.round)
        {
            self.data.last_tc = Some(tc.clone());
        }
    }

    fn observe_qc(&mut self, qc_round: Round, qc_parent_round: Round) {
        self.data.one_chain_round = self.data.one_chain_round.max(qc_round);
        self.data.preferred_round = self.data.preferred_round.max(qc_parent_round);
    }

    /// Whether the rules allow a vote for `block` (rules 1 and 2), without signing anything:
    /// `Ok` exactly when [`SafetyRules::vote`] would sign a vote for it, or re-send the vote
    /// already signed for it. The core asks this before asking the payload validator, so the
    /// validator only ever sees proposals this replica is about to vote for.
    pub fn check_vote(&self, block: &SignedBlock) -> Result<()> {
        self.check_remembers()?;
        let b = &block.block;
        if b.epoch != self.data.epoch {
            return Err(Error::Unsafe(format!(
                "block epoch {} differs from safety epoch {}",
                b.epoch, self.data.epoch
            )));
        }
        if b.round <= self.data.last_voted_round {
            if let Some(last) = &self.data.last_vote
                && last.data.round == b.round
                && last.data.block == block.digest()
            {
                return Ok(());
            }
            return Err(Error::Unsafe(format!(
                "round {} is not above the last voted round {}",
                b.round, self.data.last_voted_round
            )));
        }
        let qc_round = b.parent_qc.round();
        let extends = qc_round.checked_next() == Some(b.round)
            || b.timeout_cert.as_ref().is_some_and(|tc| {
                tc.round.checked_next() == Some(b.round) && qc_round >= tc.high_qc.round()
            });
        if !extends {
            return Err(Error::Unsafe(format!(
                "block at round {} neither follows its QC (round {qc_round}) nor a timeout certificate it may extend",
                b.round
            )));
        }
        Ok(())
    }

    /// Signs a vote for `block` if the rules allow ([`SafetyRules::check_vote`]).
    /// `parent_parent_round` is the round of the parent QC's block's own parent (for the lock).
    /// Returns the vote; the caller must persist [`SafetyRules::data`] before the vote leaves
    /// the node.
    pub fn vote(&mut self, block: &SignedBlock, parent_parent_round: Round) -> Result<Vote> {
        self.check_vote(block)?;
        let b = &block.block;
        if b.round <= self.data.last_voted_round
            && let Some(last) = &self.data.last_vote
        {
            // check_vote allows a round already voted in only to re-send the same vote.
            return Ok(last.clone());
        }
        let qc_round = b.parent_qc.round();
        self.observe_qc(qc_round, parent_parent_round);
        self.data.last_voted_round = b.round;
        let vote = Vote::new(
            VoteData {
                epoch: b.epoch,
                round: b.round,
                block: block.digest(),
            },
            self.author,
            &self.key,
            self.chain_id,
        );
        self.data.last_vote = Some(vote.clone());
        Ok(vote)
    }

    /// Signs a timeout for `round` carrying `high_qc`, if the rules allow. `entry_tc` is the TC
    /// that brought the replica into `round`, if any.
    pub fn timeout(
        &mut self,
        round: Round,
        high_qc: &QuorumCertificate,
        entry_tc: Option<&TimeoutCertificate>,
    ) -> Result<Timeout> {
        self.check_remembers()?;
        if round < self.data.last_voted_round {
            return Err(Error::Unsafe(format!(
                "timeout round {round} is below the last voted round {}",
                self.data.last_voted_round
            )));
        }
        let qc_round = high_qc.round();
        let entered = qc_round.checked_next() == Some(round)
            || entry_tc.is_some_and(|tc| tc.round.checked_next() == Some(round));
        if !entered {
            return Err(Error::Unsafe(format!(
                "timeout round {round} follows neither the high QC (round {qc_round}) nor a timeout certificate"
            )));
        }
        if qc_round < self.data.one_chain_round {
            return Err(Error::Unsafe(format!(
                "high QC round {qc_round} is below the one-chain round {}",
                self.data.one_chain_round
            )));
        }
        self.data.one_chain_round = self.data.one_chain_round.max(qc_round);
        self.data.last_voted_round = self.data.last_voted_round.max(round);
        self.data.highest_timeout_round = self.data.highest_timeout_round.max(round);
        Ok(Timeout::new(
            self.data.epoch,
            round,
            high_qc.clone(),
            self.author,
            &self.key,
            self.chain_id,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{Block, TimestampMs, test_utils::committee};

    const CHAIN: ChainId = ChainId(1);

    fn rules() -> SafetyRules {
        let (_, mut keys) = committee(4);
        SafetyRules::new(
            SafetyData {
                epoch: Epoch(1),
                ..Default::default()
            },
            keys.remove(0),
            ValidatorIndex(0),
            CHAIN,
        )
    }

    fn block(
        round: u64,
        parent_qc: QuorumCertificate,
        tc: Option<TimeoutCertificate>,
    ) -> SignedBlock {
        let (_, keys) = committee(4);
        Block {
            epoch: Epoch(1),
            round: Round(round),
            author: ValidatorIndex(1),
            parent_qc,
            timeout_cert: tc,
            failed_leaders: vec![],
            payload: vec![],
            timestamp: TimestampMs(round),
        }
        .sign(&keys[1], CHAIN)
    }

    fn fake_qc(round: u64) -> QuorumCertificate {
        let mut qc = QuorumCertificate::genesis(Epoch(1), CHAIN);
        qc.data.round = Round(round);
        qc
    }

    #[test]
    fn votes_once_per_round() {
        let mut r = rules();
        let a = block(1, fake_qc(0), None);
        let mut b = block(1, fake_qc(0), None);
        b.block.timestamp = TimestampMs(99);
        let v = r.vote(&a, Round(0)).unwrap();
        // Asking again for the same block returns the same vote; another block is refused.
        assert_eq!(r.vote(&a, Round(0)).unwrap(), v);
        assert!(r.vote(&b, Round(0)).is_err());
        assert_eq!(r.data().last_voted_round, Round(1));
    }

    #[test]
    fn refuses_blocks_that_skip_rounds_without_a_tc() {
        let mut r = rules();
        assert!(r.vote(&block(3, fake_qc(1), None), Round(0)).is_err());
        assert!(r.vote(&block(2, fake_qc(1), None), Round(0)).is_ok());
    }

    #[test]
    fn refuses_a_tc_block_below_the_tcs_high_qc() {
        let mut r = rules();
        let tc = TimeoutCertificate {
            epoch: Epoch(1),
            round: Round(4),
            high_qc: fake_qc(3),
            signatures: vec![],
        };
        assert!(
            r.vote(&block(5, fake_qc(2), Some(tc.clone())), Round(0))
                .is_err()
        );
        assert!(r.vote(&block(5, fake_qc(3), Some(tc)), Round(0)).is_ok());
    }

    #[test]
    fn no_vote_after_timing_out_the_round() {
        let mut r = rules();
        r.timeout(Round(1), &fake_qc(0), None).unwrap();
        assert!(r.vote(&block(1, fake_qc(0), None), Round(0)).is_err());
        assert_eq!(r.data().highest_timeout_round, Round(1));
    }

    #[test]
    fn proposals_stay_above_the_last_voted_round() {
        let mut r = rules();
        assert!(r.check_proposal(Round(1)).is_ok());
        r.vote(&block(2, fake_qc(1), None), Round(0)).unwrap();
        assert!(r.check_proposal(Round(2)).is_err());
        assert!(r.sign_proposal(block(2, fake_qc(1), None).block).is_err());
        assert!(r.sign_proposal(block(3, fake_qc(2), None).block).is_ok());
    }

    #[test]
    fn amnesiac_rules_sign_nothing_until_lifted_then_stay_above_the_floor() {
        let (_, mut keys) = committee(4);
        let data = SafetyData {
            epoch: Epoch(1),
            ..Default::default()
        };
        let mut r = SafetyRules::amnesiac(data, keys.remove(0), ValidatorIndex(0), CHAIN);
        assert!(r.is_amnesiac());
        assert!(r.check_vote(&block(1, fake_qc(0), None)).is_err());
        assert!(r.timeout(Round(1), &fake_qc(0), None).is_err());
        assert!(r.check_proposal(Round(1)).is_err());
        assert_eq!(r.lift_amnesia(Round(8)).last_voted_round, Round(8));
        assert!(!r.is_amnesiac());
        // Never lowered.
        assert_eq!(r.lift_amnesia(Round(3)).last_voted_round, Round(8));
        assert!(r.vote(&block(8, fake_qc(7), None), Round(0)).is_err());
        assert!(r.timeout(Round(7), &fake_qc(6), None).is_err());
        assert!(r.timeout(Round(8), &fake_qc(7), None).is_ok());
        assert!(r.vote(&block(9, fake_qc(8), None), Round(0)).is_ok());
    }

    #[test]
    fn timeout_cannot_carry_a_qc_below_one_voted_on() {
        let mut r = rules();
        r.vote(&block(3, fake_qc(2), None), Round(1)).unwrap();
        assert_eq!(r.data().one_chain_round, Round(2));
        let tc = TimeoutCertificate {
            epoch: Epoch(1),
            round: Round(3),
            high_qc: fake_qc(1),
            signatures: vec![],
        };
        assert!(r.timeout(Round(4), &fake_qc(1), Some(&tc)).is_err());
        assert!(r.timeout(Round(4), &fake_qc(2), Some(&tc)).is_ok());
        assert!(r.timeout(Round(2), &fake_qc(1), None).is_err());
    }
}
