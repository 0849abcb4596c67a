//! Consensus payload: the proof queue the consensus driver owns, adapted to the core's
//! [`PayloadSource`] and [`PayloadValidator`] traits.
//!
//! Rules:
//! - a leader's block carries the oldest queued proofs not recently proposed, up to the
//!   core's limit; they are held back from the next proposals until re-offered or committed;
//! - a proposal's proofs count as "proposed" (held back) only when the core is about to vote
//!   for it, which it does only for the current round leader's proposal: a replayed or junk
//!   proposal cannot keep honest batches out of blocks;
//! - a payload is voted for only if every proof verifies against the committee, none repeats
//!   (a proof identical to a queued one was verified when it was queued), and no batch has
//!   expired by the block's timestamp.

use crate::clock::now_ms;
use keel_authority::ProofQueue;
use keel_consensus::{PayloadLimit, PayloadSource, PayloadValidator};
use keel_types::{Block, ChainId, Committee, Digest, ProofOfAvailability, Round};

/// The driver's proof queue as the core's payload.
#[derive(Debug)]
pub struct ProofPayload {
    queue: ProofQueue,
    committee: Committee,
    chain_id: ChainId,
}

impl ProofPayload {
    /// Proofs for `committee`'s epoch, queued in `queue`.
    pub fn new(queue: ProofQueue, committee: Committee, chain_id: ChainId) -> Self {
        ProofPayload {
            queue,
            committee,
            chain_id,
        }
    }

    /// The queue (to add verified proofs, drop committed and expired ones).
    pub fn queue(&mut self) -> &mut ProofQueue {
        &mut self.queue
    }

    /// Proofs queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

impl PayloadSource for ProofPayload {
    fn pull(
        &mut self,
        _round: Round,
        _parent: Digest,
        limit: PayloadLimit,
    ) -> Vec<ProofOfAvailability> {
        // Batches are checked against the block's timestamp (possibly its parent's, ahead of
        // this clock), as voters will.
        self.queue
            .pull_for_block(limit.proofs, limit.bytes, now_ms(), limit.timestamp)
    }

    fn has_payload(&self) -> bool {
        self.queue.has_available(now_ms())
    }
}

impl PayloadValidator for ProofPayload {
    fn validate(&mut self, block: &Block) -> bool {
        let (committee, chain) = (&self.committee, self.chain_id);
        self.queue
            .validate(&block.payload, committee, chain, block.timestamp, now_ms())
    }
}

#[cfg(test)]
mod tests {
    //! The proof queue behind a real core: a proposal's proofs are held back only when the core
    //! accepted the round leader's proposal, never for a replayed or junk one.

    use super::*;
    use keel_authority::ProofBuilder;
    use keel_consensus::{
        Action, ConsensusMessage, Core, CoreConfig, CoreDeps, Error, Input, LeaderElection,
        RecoveryData, Verified, WeightedRoundRobin,
    };
    use keel_types::{
        Batch, BatchAck, KeyPair, QuorumCertificate, SignedBlock, TimestampMs, ValidatorIndex,
        test_utils,
    };
    use std::collections::VecDeque;

    const CHAIN: ChainId = ChainId(7);
    const NOW: TimestampMs = TimestampMs(1_000_000);

    type TestCore = Core<WeightedRoundRobin, ProofPayload>;

    /// Two proofs of availability, each acknowledged by validators 0 and 1.
    fn proofs(committee: &Committee, keys: &[KeyPair]) -> Vec<ProofOfAvailability> {
        (0..2u64)
            .map(|sequence| {
                let batch = Batch {
                    author: ValidatorIndex(0),
                    epoch: committee.epoch(),
                    sequence,
                    expires_at: TimestampMs(NOW.0 + 60_000),
                    transactions: vec![],
                };
                let mut builder = ProofBuilder::new(committee.clone(), CHAIN, 16, 60_000);
                assert!(builder.track(&std::sync::Arc::new(batch.clone()), NOW));
                let mut proof = None;
                for (i, key) in keys.iter().enumerate().take(2) {
                    let ack = BatchAck::new(batch.info(), ValidatorIndex(i as u32), key, CHAIN);
                    proof = builder.add(&ack).unwrap().or(proof);
                }
                proof.expect("two of four acknowledgements form a proof")
            })
            .collect()
    }

    fn cores(
        committee: &Committee,
        keys: &[KeyPair],
        queued: &[ProofOfAvailability],
    ) -> Vec<TestCore> {
        keys.iter()
            .enumerate()
            .map(|(i, key)| {
                let mut queue = ProofQueue::new(100, 4, 3_000, 60_000);
                for p in queued {
                    assert!(queue.insert(p.clone(), NOW));
                }
                Core::new(CoreDeps {
                    config: CoreConfig {
                        min_block_interval_ms: 0,
                        ..CoreConfig::default()
                    },
                    chain_id: CHAIN,
                    me: ValidatorIndex(i as u32),
                    committee: committee.clone(),
                    key: KeyPair::from_seed(&key.seed()),
                    leader: WeightedRoundRobin::new(committee),
                    payload: ProofPayload::new(queue, committee.clone(), CHAIN),
                    recovery: RecoveryData::genesis(committee, CHAIN),
                })
            })
            .collect()
    }

    /// The round-1 proposal of `leader`, carrying `payload`.
    fn first_proposal(
        committee: &Committee,
        keys: &[KeyPair],
        leader: ValidatorIndex,
        payload: &[ProofOfAvailability],
    ) -> SignedBlock {
        keel_types::Block {
            epoch: committee.epoch(),
            round: keel_types::Round(1),
            author: leader,
            parent_qc: QuorumCertificate::genesis(committee.epoch(), CHAIN),
            timeout_cert: None,
            failed_leaders: vec![],
            payload: payload.to_vec(),
            timestamp: NOW,
        }
        .sign(&keys[leader.as_usize()], CHAIN)
    }

    /// Delivers every message the cores send (proposals dropped: no block is ever proposed
    /// successfully), releasing persisted messages at once, until nothing is left.
    fn run(cores: &mut [TestCore], inputs: Vec<(usize, Input)>) {
        let mut queue: VecDeque<(usize, Input)> = inputs.into();
        let mut steps = 0;
        while let Some((to, input)) = queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "the mini committee does not settle");
            let mut actions: VecDeque<Action> = cores[to].handle(NOW, input).into();
            while let Some(action) = actions.pop_front() {
                match action {
                    Action::PersistSafety { then, .. } => actions.extend(then),
                    Action::Broadcast(m) if !matches!(m, ConsensusMessage::Proposal(_)) => {
                        for j in 0..cores.len() {
                            queue
                                .push_back((j, Input::Message(Box::new(Verified::own(m.clone())))));
                        }
                    }
                    Action::Send { to, message } => {
                        queue.push_back((
                            to.as_usize(),
                            Input::Message(Box::new(Verified::own(message))),
                        ));
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_replayed_old_proposal_holds_back_no_proof() {
        let (committee, keys) = test_utils::committee(4);
        let queued = proofs(&committee, &keys);
        let mut cores = cores(&committee, &keys, &queued);
        let leaders = WeightedRoundRobin::new(&committee);
        let leader_1 = leaders.leader(keel_types::Round(1));
        // The round-1 leader's proposal, carrying both proofs; it never reaches anyone.
        let old = first_proposal(&committee, &keys, leader_1, &queued);
        // Round 1 times out everywhere: a TC moves everyone to round 2.
        let starts = (0..4).map(|i| (i, Input::Start)).collect();
        run(&mut cores, starts);
        let timers = (0..4)
            .map(|i| {
                (
                    i,
                    Input::Timer {
                        round: keel_types::Round(1),
                    },
                )
            })
            .collect();
        run(&mut cores, timers);
        let leader_2 = leaders.leader(keel_types::Round(2));
        let victim = (0..4)
            .find(|i| {
                ValidatorIndex(*i as u32) != leader_1 && ValidatorIndex(*i as u32) != leader_2
            })
            .unwrap();
        assert!(
            cores[victim].round() >= keel_types::Round(2),
            "the TC advanced the round"
        );
        let replayer = (0..4u32)
            .map(ValidatorIndex)
            .find(|v| *v != leader_1 && v.as_usize() != victim)
            .unwrap();
        let replay = ConsensusMessage::Proposal(old.clone());

        // Cheap checks refuse it before any signature is verified.
        let refused = cores[victim].precheck(replayer, &replay).unwrap_err();
        assert!(
            matches!(refused, Error::WrongSender { .. } | Error::Stale { .. }),
            "{refused}"
        );
        let from_author = cores[victim].precheck(leader_1, &replay).unwrap_err();
        assert!(matches!(from_author, Error::Stale { .. }), "{from_author}");

        // Even handed to the core as verified, a stale proposal is not voted for, so its
        // proofs are not held back: the victim's next proposal may carry them.
        let actions = cores[victim].handle(NOW, Input::Message(Box::new(Verified::own(replay))));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::PersistSafety { .. })),
            "voted for a stale proposal: {actions:?}"
        );
        let offered = cores[victim].payload_mut().queue().pull(10, u64::MAX, NOW);
        assert_eq!(offered.len(), 2, "the replay held back honest proofs");
    }

    #[test]
    fn the_leaders_proposal_holds_its_proofs_back_once_voted_for() {
        let (committee, keys) = test_utils::committee(4);
        let queued = proofs(&committee, &keys);
        let mut cores = cores(&committee, &keys, &queued);
        let leaders = WeightedRoundRobin::new(&committee);
        let leader_1 = leaders.leader(keel_types::Round(1));
        let voter = (0..4)
            .find(|i| ValidatorIndex(*i as u32) != leader_1)
            .unwrap();
        let proposal = first_proposal(&committee, &keys, leader_1, &queued);
        let message = ConsensusMessage::Proposal(proposal);
        cores[voter].handle(NOW, Input::Start);
        cores[voter].precheck(leader_1, &message).unwrap();
        let actions = cores[voter].handle(NOW, Input::Message(Box::new(Verified::own(message))));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::PersistSafety { .. })),
            "the voter votes for the leader's proposal: {actions:?}"
        );
        assert!(
            cores[voter]
                .payload_mut()
                .queue()
                .pull(10, u64::MAX, NOW)
                .is_empty(),
            "proofs in a proposal this node voted for are held back"
        );
    }
}
