//! A deterministic simulator: whole committees in one thread, under a seeded adversary.
//!
//! Events sit in a queue ordered by (virtual time, sequence number); one seeded RNG draws link
//! latencies, losses and Byzantine choices, so a seed replays exactly. The simulator models
//! per-link latency and loss, partitions that start and heal, crashes and restarts from
//! persisted state (safety data, blocks, committed root), crashes that lose the safety data
//! (the replica restarts amnesiac and asks its peers for their certificates, which faulty
//! peers withhold), and Byzantine replicas that
//! equivocate, double-vote, forge signatures, stay silent or replay old messages. Every message
//! a replica receives from another passes the core's precheck and is then verified against the
//! committee, exactly as a node does.
//!
//! After every step a checker asserts safety: honest replicas never commit different blocks at
//! one height, commit heights are contiguous, no honest replica equivocates in a round across
//! its lives (votes for two blocks, timeouts with different high QCs, a vote after its
//! timeout), and a live replica's round never goes back. The report measures liveness: blocks
//! each honest replica committed after the network stabilised, and how many rounds commits took
//! to resume.
//!
//! With [`SimConfig::epoch_length`] set, epochs end every few heights and replicas switch
//! committees as a node does (`epochs`): the checks then hold across epochs (votes and
//! timeouts are per round of an epoch), and late replicas catch up to each epoch's end.
//!
//! Test machinery only: compiled with the `sim` feature, which this crate's tests and
//! benchmarks enable. Parts: `scenario` ([`SimConfig`]: what a run looks like), `network`
//! (event queue and links), `adversary` (Byzantine behaviours), `replica` (a core and its
//! in-memory embedder), `epochs` (epoch changes), `checker` (safety checks) and `report`
//! ([`SimReport`], liveness).

mod adversary;
mod checker;
mod epochs;
mod network;
mod replica;
mod report;
mod scenario;

pub use report::SimReport;
pub use scenario::{Behaviour, Crash, Partition, SimConfig};

use crate::{
    core::Input,
    leader::LeaderElection,
    message::{CertificateAnswer, ConsensusMessage, Verified, verify_block},
};
use checker::Checker;
use keel_types::{
    Committee, Digest, Epoch, KeyPair, Round, SignedBlock, Stake, ValidatorIndex, ValidatorInfo,
};
use network::{Event, Network};
use replica::Replica;
use report::Liveness;
use scenario::{CHAIN, key_for};

/// Most ancestors returned with a fetched block.
const FETCH_ANCESTORS: usize = 32;

/// A committee under simulation.
pub struct Simulation {
    config: SimConfig,
    committee: Committee,
    keys: Vec<KeyPair>,
    replicas: Vec<Replica>,
    net: Network,
    checker: Checker,
    liveness: Liveness,
    report: SimReport,
    started: bool,
}

impl Simulation {
    /// Builds the committee and schedules the scenario's crashes.
    pub fn new(config: SimConfig) -> Self {
        let n = config.behaviours.len();
        let keys: Vec<KeyPair> = (0..n).map(|i| key_for(config.seed, i)).collect();
        let validators = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ValidatorInfo {
                protocol_key: k.public(),
                network_key: key_for(config.seed ^ 0xffff, i).public(),
                stake: Stake(1),
                address: format!("sim-{i}"),
            })
            .collect();
        // INVARIANT: distinct seeded keys and positive stakes make a valid committee.
        let committee = Committee::new(Epoch(1), validators).expect("INVARIANT: valid committee");
        let replicas = config.behaviours.iter().map(|b| Replica::new(*b)).collect();
        let mut sim = Simulation {
            report: SimReport::new(n),
            checker: Checker::new(n, config.persist_safety),
            liveness: Liveness::new(n),
            net: Network::new(&config),
            config,
            committee,
            keys,
            replicas,
            started: false,
        };
        for c in sim.config.crashes.clone() {
            sim.net.schedule(
                c.at_ms,
                Event::Crash {
                    replica: c.replica.as_usize(),
                    wipe_safety: c.wipe_safety,
                },
            );
            if let Some(r) = c.restart_ms {
                sim.net.schedule(r, Event::Restart(c.replica.as_usize()));
            }
        }
        sim
    }

    fn is_honest(&self, i: usize) -> bool {
        self.replicas[i].behaviour == Behaviour::Honest
    }

    /// Sends `message` from `from`: checks honest votes and timeouts, then applies `from`'s
    /// behaviour.
    fn send(&mut self, from: usize, to: usize, message: ConsensusMessage) {
        if self.is_honest(from) {
            match &message {
                ConsensusMessage::Vote(v) => {
                    if !self.checker.honest_vote(self.net.now, from, v) {
                        // The same vote again (a timeout re-sends it): the leader it was
                        // cast for was recorded, with its finality, when it was signed.
                        return self.send_as(from, to, message);
                    }
                    let author = self.replicas[from]
                        .persisted
                        .blocks
                        .get(&v.data.block)
                        .map(|b| b.block.author);
                    if let Some(author) = author {
                        self.honest_leader(from, v.data.epoch, v.data.round, author);
                    }
                }
                ConsensusMessage::Timeout(t) => {
                    self.checker.honest_timeout(self.net.now, from, t);
                }
                ConsensusMessage::Proposal(b) if b.block.author.as_usize() == from => {
                    self.honest_leader(from, b.block.epoch, b.block.round, b.block.author);
                }
                _ => {}
            }
        }
        self.send_as(from, to, message);
    }

    /// Honest replica `from` acts on `leader` leading `round` (it proposes as the leader, or
    /// votes for the leader's block): the checker compares it with the other honest replicas'.
    fn honest_leader(&mut self, from: usize, epoch: Epoch, round: Round, leader: ValidatorIndex) {
        let Some(core) = self.replicas[from].core.as_ref() else {
            return;
        };
        let is_final = core.election().is_final(round);
        self.checker
            .honest_leader(self.net.now, from, (epoch, round), leader, is_final);
    }

    /// Delivers `message` from replica `from` (`None`: a scripted message claiming to come
    /// from its author) to `to`, as a node receives it: a message of another epoch is refused
    /// or held (its own too: one sent just before its switch loops back after it); its own
    /// messages loop back unchecked; others pass the core's precheck, then verification,
    /// before reaching the core.
    fn deliver(&mut self, from: Option<usize>, to: usize, message: ConsensusMessage) {
        if self.replicas[to].core.is_none() || !self.admit_epoch(from, to, &message) {
            return;
        }
        if from == Some(to) {
            // The replica's own message, looped back: nothing to verify.
            self.step(to, Input::Message(Box::new(Verified::own(message))));
            return;
        }
        let Some(core) = self.replicas[to].core.as_ref() else {
            return;
        };
        let sender = from.map_or_else(|| message.author(), |i| ValidatorIndex(i as u32));
        if core.precheck(sender, &message).is_err() {
            self.report.dropped_unverified += 1;
            return;
        }
        let committee = self.committee_of(self.replicas[to].persisted.epoch);
        let checked =
            message
                .clone()
                .verify_with(&committee, CHAIN, &mut self.replicas[to].certificates);
        let Ok(verified) = checked else {
            self.report.rejected += 1;
            return;
        };
        self.report.delivered += 1;
        self.byzantine_receive(to, &message);
        self.step(to, Input::Message(Box::new(verified)));
    }

    fn on_fetch(&mut self, requester: usize, server: usize, digest: Digest) {
        let r = &self.replicas[server];
        if r.core.is_none() || r.behaviour == Behaviour::Silent {
            return;
        }
        let mut blocks = Vec::new();
        let mut cursor = digest;
        while let Some(b) = r.persisted.blocks.get(&cursor) {
            blocks.push(b.clone());
            if blocks.len() > FETCH_ANCESTORS {
                break;
            }
            cursor = b.block.parent();
        }
        if blocks.is_empty() {
            return;
        }
        self.net.reply(server, requester, blocks);
    }

    fn on_fetch_reply(&mut self, to: usize, blocks: Vec<SignedBlock>) {
        if self.replicas[to].core.is_none() {
            return;
        }
        let mut verified = Vec::new();
        let committee = self.committee_of(self.replicas[to].persisted.epoch);
        for b in blocks {
            match verify_block(b, &committee, CHAIN, &mut self.replicas[to].certificates) {
                Ok(v) => verified.push(v),
                Err(_) => self.report.rejected += 1,
            }
        }
        self.step(to, Input::BlocksFetched(verified));
    }

    fn on_certificate_request(&mut self, requester: usize, server: usize) {
        let Some(core) = self.replicas[server].core.as_ref() else {
            return;
        };
        if let Some(answer) = self.answer_as(server, core.certificate_answer()) {
            self.net.answer(server, requester, answer);
        }
    }

    fn on_certificate_answer(&mut self, to: usize, from: usize, answer: CertificateAnswer) {
        if self.replicas[to].core.is_none() {
            return;
        }
        let committee = self.committee_of(self.replicas[to].persisted.epoch);
        let checked = answer.verify_with(&committee, CHAIN, &mut self.replicas[to].certificates);
        let Ok(verified) = checked else {
            self.report.rejected += 1;
            return;
        };
        let from = ValidatorIndex(from as u32);
        self.step(
            to,
            Input::PeerCertificates {
                from,
                answer: Box::new(verified),
            },
        );
    }

    /// Runs the scenario to its end and returns the report.
    pub fn run(mut self) -> SimReport {
        let end = self.config.duration_ms;
        self.run_until(end);
        self.finish()
    }

    fn start_all(&mut self) {
        self.started = true;
        for i in 0..self.replicas.len() {
            let core = self.make_core(i, self.config.start_amnesiac);
            self.replicas[i].core = Some(core);
            self.step(i, Input::Start);
        }
    }

    /// Processes events up to virtual time `until_ms` (inclusive).
    pub fn run_until(&mut self, until_ms: u64) {
        if !self.started {
            self.start_all();
        }
        while self.net.next_at().is_some_and(|at| at <= until_ms) {
            let Some(event) = self.net.pop() else { break };
            if !self.liveness.is_marked() && self.net.now >= self.config.stable_ms {
                self.mark_stable();
            }
            self.dispatch(event);
        }
        self.net.now = self.net.now.max(until_ms);
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, message } => self.deliver(Some(from), to, *message),
            Event::ProposeTimer {
                replica,
                epoch,
                round,
            } => {
                if self.replicas[replica].persisted.epoch == epoch {
                    self.step(replica, Input::ProposeTimer { round });
                }
            }
            Event::Timer {
                replica,
                round,
                generation,
            } => {
                if self.replicas[replica].timer_generation == generation {
                    self.step(replica, Input::Timer { round });
                }
            }
            Event::Fetch {
                requester,
                server,
                digest,
            } => self.on_fetch(requester, server, digest),
            Event::FetchReply { to, blocks } => self.on_fetch_reply(to, blocks),
            Event::CertificateRequest { requester, server } => {
                self.on_certificate_request(requester, server);
            }
            Event::CertificateAnswer { to, from, answer } => {
                self.on_certificate_answer(to, from, *answer);
            }
            Event::Crash {
                replica,
                wipe_safety,
            } => {
                self.crash(ValidatorIndex(replica as u32));
                if wipe_safety {
                    self.wipe_safety(ValidatorIndex(replica as u32));
                }
            }
            Event::Restart(i) => self.restart(ValidatorIndex(i as u32)),
            Event::EpochSync {
                requester,
                server,
                epoch,
                after,
            } => self.on_epoch_sync(requester, server, epoch, after),
            Event::EpochSyncReply { to, first, blocks } => {
                self.on_epoch_sync_reply(to, first, blocks);
            }
        }
    }

    /// Processes events until some replica reaches `round` (or the queue empties). With zero
    /// latency virtual time stands still, so this is how benchmarks bound a run.
    pub fn run_rounds(&mut self, round: u64) {
        if !self.started {
            self.start_all();
        }
        while self.report.max_round < round {
            let Some(event) = self.net.pop() else { break };
            self.dispatch(event);
        }
    }

    /// One line per replica: round, high QC round, safety data, stats (for failure messages).
    pub fn describe(&self) -> Vec<String> {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, r)| match &r.core {
                Some(c) => format!(
                    "replica {i} ({:?}): round {} high_qc {} root {} safety {:?} stats {:?}",
                    r.behaviour,
                    c.round(),
                    c.high_qc().round(),
                    c.committed_root().round,
                    (
                        c.safety_data().last_voted_round,
                        c.safety_data().one_chain_round,
                        c.safety_data().highest_timeout_round
                    ),
                    c.stats()
                ),
                None => format!("replica {i}: down"),
            })
            .collect()
    }

    /// Each replica's view of `round`'s leader (`None` while down): the leader, whether its
    /// election is final for the round, and the reputations it drew from.
    pub fn leader_views(
        &self,
        round: Round,
    ) -> Vec<Option<(ValidatorIndex, bool, Vec<crate::ValidatorReputation>)>> {
        self.replicas
            .iter()
            .map(|r| {
                r.core.as_ref().map(|c| {
                    let e = c.election();
                    (e.leader(round), e.is_final(round), e.reputations(round))
                })
            })
            .collect()
    }

    /// Current round of each replica (0 while down).
    pub fn rounds(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .map(|r| r.core.as_ref().map_or(0, |c| c.round().0))
            .collect()
    }

    /// Committed height of each replica so far.
    pub fn heights(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .map(|r| r.persisted.committed.len() as u64)
            .collect()
    }

    /// Crashes a replica now: its in-memory state is lost, its persisted state kept.
    pub fn crash(&mut self, replica: ValidatorIndex) {
        let i = replica.as_usize();
        self.replicas[i].core = None;
        self.checker.crashed(i);
    }

    /// Loses a (crashed) replica's safety data, as a wiped data directory does; its blocks and
    /// commits stay.
    pub fn wipe_safety(&mut self, replica: ValidatorIndex) {
        let i = replica.as_usize();
        self.replicas[i].persisted.safety = None;
        self.checker.wiped(i);
    }

    /// Restarts a replica now from its persisted state: amnesiac, as a node that finds no
    /// safety data in its store, when it has none and the scenario's guard is on.
    pub fn restart(&mut self, replica: ValidatorIndex) {
        let i = replica.as_usize();
        let amnesiac = self.config.amnesia_guard && self.replicas[i].persisted.safety.is_none();
        let core = self.make_core(i, amnesiac);
        self.replicas[i].core = Some(core);
        self.step(i, Input::Start);
    }

    /// Delivers `message` to `to` now, as if a peer had sent it (scripted adversaries).
    pub fn inject(&mut self, to: ValidatorIndex, message: ConsensusMessage) {
        // Scripted messages come from "the network": always prechecked and verified.
        self.deliver(None, to.as_usize(), message);
    }

    /// The blocks `replica` has persisted.
    pub fn persisted_blocks(&self, replica: ValidatorIndex) -> Vec<SignedBlock> {
        self.replicas[replica.as_usize()]
            .persisted
            .blocks
            .values()
            .cloned()
            .collect()
    }

    /// The blocks `replica` has committed, in height order.
    pub fn committed_blocks(&self, replica: ValidatorIndex) -> Vec<SignedBlock> {
        let p = &self.replicas[replica.as_usize()].persisted;
        p.committed
            .iter()
            .filter_map(|d| p.blocks.get(d).cloned())
            .collect()
    }

    /// Signs `block` with `signer`'s key (scripted equivocation).
    pub fn sign_block(&self, signer: ValidatorIndex, block: keel_types::Block) -> SignedBlock {
        block.sign(&self.keys[signer.as_usize()], CHAIN)
    }

    /// The safety violations found so far.
    pub fn violations(&self) -> &[String] {
        self.checker.violations()
    }

    /// Marks the stabilisation time for the liveness measures.
    fn mark_stable(&mut self) {
        let round = self
            .replicas
            .iter()
            .filter_map(|r| r.core.as_ref().map(|c| c.round()))
            .max()
            .unwrap_or(Round(0));
        let heights = self.heights();
        self.liveness.mark_stable(&heights, round);
    }

    /// Ends the run and returns the report.
    pub fn finish(mut self) -> SimReport {
        if !self.liveness.is_marked() {
            self.mark_stable();
        }
        for (i, r) in self.replicas.iter().enumerate() {
            let honest_and_up = r.behaviour == Behaviour::Honest && r.core.is_some();
            let height = r.persisted.committed.len() as u64;
            self.liveness
                .fill(&mut self.report, i, height, honest_and_up);
        }
        let honest_chains = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.behaviour == Behaviour::Honest)
            .map(|(i, r)| (i, r.persisted.committed.as_slice()));
        self.report.unfinal_leader_disagreements = self.checker.unfinal_disagreements();
        self.report.epochs = self.replicas.iter().map(|r| r.persisted.epoch.0).collect();
        self.report.violations = self.checker.finish(honest_chains);
        self.report
    }

    /// The committee (for tests that script messages).
    pub fn committee(&self) -> &Committee {
        &self.committee
    }
}
