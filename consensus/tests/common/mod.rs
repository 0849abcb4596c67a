//! Fixtures shared by the core's test suites: a 4-validator committee with seeded keys, a
//! recording payload object, properly signed blocks, QCs and chains, and readers of the
//! actions a core returns. Each suite uses a part of them.

#![allow(dead_code)]

use keel_consensus::{
    Action, ConsensusMessage, Core, CoreConfig, CoreDeps, Input, LeaderElection, PayloadLimit,
    PayloadSource, PayloadValidator, RecoveryData, VoteAggregator, VoteOutcome, WeightedRoundRobin,
};
use keel_types::{
    BatchInfo, Block, ChainId, Committee, Digest, Epoch, KeyPair, MultiSignature,
    ProofOfAvailability, QuorumCertificate, Round, Signature, SignedBlock, Timeout, TimestampMs,
    ValidatorIndex, Vote, VoteData, test_utils::committee,
};

pub const CHAIN: ChainId = ChainId(1);
pub const NOW: TimestampMs = TimestampMs(1_000);
/// The replica under test: with 4 equal stakes round `r` is led by `r % 4`, so replica 0 leads
/// none of rounds 1 to 3.
pub const ME: ValidatorIndex = ValidatorIndex(0);

/// A payload object that records what the core asks of it.
#[derive(Debug, Default)]
pub struct Recording {
    /// Whether `validate` accepts.
    pub accept: bool,
    /// Proofs `pull` returns, whatever the limit (to check the core enforces it).
    pub supply: usize,
    /// Rounds of the blocks `validate` was asked about, in order.
    pub validated: Vec<Round>,
    /// The `max` of every `pull`.
    pub pulled: Vec<usize>,
    /// The `max_bytes` of every `pull`.
    pub pulled_bytes: Vec<u64>,
    /// `num_bytes` of each proof `pull` returns (0: 1 byte).
    pub proof_bytes: u64,
    /// Whether the source reports no payload (idle pacing).
    pub idle: bool,
}

impl PayloadSource for Recording {
    fn pull(&mut self, _: Round, _: Digest, limit: PayloadLimit) -> Vec<ProofOfAvailability> {
        self.pulled.push(limit.proofs);
        self.pulled_bytes.push(limit.bytes);
        (0..self.supply as u64)
            .map(|s| ProofOfAvailability {
                info: BatchInfo {
                    num_bytes: self.proof_bytes.max(1),
                    ..junk_proof(s).info
                },
                ..junk_proof(s)
            })
            .collect()
    }

    fn has_payload(&self) -> bool {
        !self.idle
    }
}

impl PayloadValidator for Recording {
    fn validate(&mut self, block: &Block) -> bool {
        self.validated.push(block.round);
        self.accept
    }
}

pub type TestCore = Core<WeightedRoundRobin, Recording>;

pub struct Fixture {
    pub committee: Committee,
    pub keys: Vec<KeyPair>,
    pub leader: WeightedRoundRobin,
}

impl Fixture {
    pub fn new() -> Self {
        let (committee, keys) = committee(4);
        let leader = WeightedRoundRobin::new(&committee);
        Fixture {
            committee,
            keys,
            leader,
        }
    }

    /// Replica `me`'s core, started (`Input::Start` handled), with `payload`.
    pub fn core(&self, me: ValidatorIndex, config: CoreConfig, payload: Recording) -> TestCore {
        self.started(me, config, payload).0
    }

    /// [`Fixture::core`], with the actions `Input::Start` returned.
    pub fn started(
        &self,
        me: ValidatorIndex,
        config: CoreConfig,
        payload: Recording,
    ) -> (TestCore, Vec<Action>) {
        let recovery = RecoveryData::genesis(&self.committee, CHAIN);
        let mut core = self.build(me, config, payload, recovery);
        let actions = core.handle(NOW, Input::Start);
        (core, actions)
    }

    /// Replica `me`'s core starting from `recovery`, not started yet.
    pub fn build(
        &self,
        me: ValidatorIndex,
        config: CoreConfig,
        payload: Recording,
        recovery: RecoveryData,
    ) -> TestCore {
        Core::new(CoreDeps {
            config,
            chain_id: CHAIN,
            me,
            committee: self.committee.clone(),
            key: KeyPair::from_seed(&self.keys[me.as_usize()].seed()),
            leader: self.leader.clone(),
            payload,
            recovery,
        })
    }

    /// A core for [`ME`] whose validator accepts everything.
    pub fn accepting(&self) -> TestCore {
        let payload = Recording {
            accept: true,
            ..Recording::default()
        };
        self.core(ME, CoreConfig::default(), payload)
    }

    pub fn genesis_qc(&self) -> QuorumCertificate {
        QuorumCertificate::genesis(self.committee.epoch(), CHAIN)
    }

    /// The leader of `round`'s proposal on `parent_qc`, properly signed.
    pub fn proposal(&self, round: u64, parent_qc: QuorumCertificate) -> SignedBlock {
        let author = self.leader.leader(Round(round));
        self.block_by(author, round, parent_qc)
            .sign(&self.keys[author.as_usize()], CHAIN)
    }

    pub fn block_by(
        &self,
        author: ValidatorIndex,
        round: u64,
        parent_qc: QuorumCertificate,
    ) -> Block {
        Block {
            epoch: self.committee.epoch(),
            round: Round(round),
            author,
            parent_qc,
            timeout_cert: None,
            failed_leaders: vec![],
            payload: vec![],
            timestamp: TimestampMs(100 + round),
        }
    }

    /// A QC for `block`, signed by validators 1, 2 and 3 (a quorum of 4).
    pub fn qc_for(&self, block: &SignedBlock) -> QuorumCertificate {
        let data = VoteData {
            epoch: block.block.epoch,
            round: block.block.round,
            block: block.digest(),
        };
        let mut votes = VoteAggregator::default();
        for i in 1..4u32 {
            let vote = Vote::new(data, ValidatorIndex(i), &self.keys[i as usize], CHAIN);
            if let VoteOutcome::NewQc(qc) = votes.add(&vote, &self.committee) {
                return qc;
            }
        }
        panic!("three of four votes form a QC");
    }

    /// The core of the leader of `round` with a source that has no payload and a 500 ms idle
    /// wait, started.
    pub fn idle_core_leading(&self, round: u64) -> TestCore {
        let (config, payload) = idle_setup();
        self.core(self.leader.leader(Round(round)), config, payload)
    }

    /// Every validator's vote for `block`, handed to `core` verified; the actions it returned.
    pub fn all_votes_for(&self, core: &mut TestCore, block: &SignedBlock) -> Vec<Action> {
        let data = VoteData {
            epoch: block.block.epoch,
            round: block.block.round,
            block: block.digest(),
        };
        let mut actions = Vec::new();
        for i in 0..self.keys.len() as u32 {
            let vote = ConsensusMessage::Vote(Vote::new(
                data,
                ValidatorIndex(i),
                &self.keys[i as usize],
                CHAIN,
            ))
            .verify(&self.committee, CHAIN)
            .expect("a signed vote verifies");
            actions.extend(core.handle(NOW, Input::Message(Box::new(vote))));
        }
        actions
    }

    /// Validator `author`'s timeout for `round` carrying `high_qc`.
    pub fn timeout(&self, author: u32, round: u64, high_qc: QuorumCertificate) -> Timeout {
        Timeout::new(
            self.committee.epoch(),
            Round(round),
            high_qc,
            ValidatorIndex(author),
            &self.keys[author as usize],
            CHAIN,
        )
    }

    /// [`Fixture::timeout`] as it reaches the core from the network: verified.
    pub fn verified_timeout(&self, author: u32, round: u64, high_qc: QuorumCertificate) -> Input {
        let message = ConsensusMessage::Timeout(self.timeout(author, round, high_qc))
            .verify(&self.committee, CHAIN)
            .expect("a signed timeout verifies");
        Input::Message(Box::new(message))
    }

    /// `block` as it reaches the core from the network: verified.
    pub fn verified(&self, block: &SignedBlock) -> Input {
        let message = ConsensusMessage::Proposal(block.clone())
            .verify(&self.committee, CHAIN)
            .expect("a properly signed proposal verifies");
        Input::Message(Box::new(message))
    }

    /// The chain B1 <- B2 <- ... <- Bn, each the proposal of its round's leader.
    pub fn chain(&self, n: u64) -> Vec<SignedBlock> {
        let mut blocks: Vec<SignedBlock> = Vec::new();
        for round in 1..=n {
            let parent_qc = blocks
                .last()
                .map_or_else(|| self.genesis_qc(), |b| self.qc_for(b));
            blocks.push(self.proposal(round, parent_qc));
        }
        blocks
    }
}

/// A proof of availability with junk signatures.
pub fn junk_proof(sequence: u64) -> ProofOfAvailability {
    ProofOfAvailability {
        info: BatchInfo {
            author: ValidatorIndex(1),
            epoch: Epoch(1),
            sequence,
            expires_at: TimestampMs(u64::MAX),
            digest: Digest::of_bytes(&sequence.to_le_bytes()),
            num_transactions: 1,
            num_bytes: 1,
        },
        signatures: MultiSignature::from_raw(vec![(ValidatorIndex(1), Signature([0; 64]))]),
    }
}

/// Signed votes and timeouts in `actions`: those sent at once, and those released only after
/// a `PersistSafety` write.
pub fn signed_messages(actions: &[Action]) -> (Vec<ConsensusMessage>, Vec<ConsensusMessage>) {
    fn walk(
        actions: &[Action],
        persisted: bool,
        at_once: &mut Vec<ConsensusMessage>,
        released: &mut Vec<ConsensusMessage>,
    ) {
        for action in actions {
            let message = match action {
                Action::PersistSafety { then, .. } => {
                    walk(then, true, at_once, released);
                    continue;
                }
                Action::Send { message, .. } | Action::Broadcast(message) => message,
                _ => continue,
            };
            if matches!(
                message,
                ConsensusMessage::Vote(_) | ConsensusMessage::Timeout(_)
            ) {
                if persisted {
                    released.push(message.clone());
                } else {
                    at_once.push(message.clone());
                }
            }
        }
    }
    let (mut at_once, mut released) = (Vec::new(), Vec::new());
    walk(actions, false, &mut at_once, &mut released);
    (at_once, released)
}

pub fn votes_in(messages: &[ConsensusMessage]) -> Vec<Round> {
    messages
        .iter()
        .filter_map(|m| match m {
            ConsensusMessage::Vote(v) => Some(v.data.round),
            _ => None,
        })
        .collect()
}

pub fn any_vote(actions: &[Action]) -> bool {
    let (at_once, released) = signed_messages(actions);
    !votes_in(&at_once).is_empty() || !votes_in(&released).is_empty()
}

pub fn proposals_in(actions: &[Action]) -> Vec<&SignedBlock> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Broadcast(ConsensusMessage::Proposal(b)) => vec![b],
            // A proposal leaves after its round is persisted.
            Action::PersistSafety { then, .. } => proposals_in(then),
            _ => Vec::new(),
        })
        .collect()
}

/// A 500 ms idle wait and a source that has no payload.
pub fn idle_setup() -> (CoreConfig, Recording) {
    let config = CoreConfig {
        max_idle_wait_ms: 500,
        ..CoreConfig::default()
    };
    let payload = Recording {
        accept: true,
        idle: true,
        ..Recording::default()
    };
    (config, payload)
}
