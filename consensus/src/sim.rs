//! A deterministic simulator: whole committees in one thread, under a seeded adversary.
//!
//! Events sit in a queue ordered by (virtual time, sequence number); one seeded RNG draws link
//! latencies, losses and Byzantine choices, so a seed replays exactly. The simulator models
//! per-link latency and loss, partitions that start and heal, crashes and restarts from
//! persisted state (safety data, blocks, committed root), and Byzantine replicas that
//! equivocate, double-vote, forge signatures, stay silent or replay old messages. Every message
//! an honest replica receives is verified against the committee first, exactly as a node does.
//!
//! After every step a checker asserts safety: honest replicas never commit different blocks at
//! one height, commit heights are contiguous, no honest replica signs votes for two blocks in
//! one round, and a live replica's round never goes back. The report measures liveness: blocks
//! each honest replica committed after the network stabilised, and how many rounds commits took
//! to resume.

use crate::{
    block_tree::CommitRoot,
    core::{Action, Core, CoreConfig, EmptyPayload, Input, RecoveryData},
    leader::{LeaderElection, WeightedRoundRobin},
    message::{CertificateCache, ConsensusMessage, Verified, verify_block},
    pacemaker::PacemakerConfig,
    safety::SafetyData,
};
use keel_types::{
    ChainId, Committee, Digest, Epoch, KeyPair, Round, SignedBlock, Stake, TimestampMs,
    ValidatorIndex, ValidatorInfo, Vote, VoteData,
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use std::collections::{BinaryHeap, HashMap, VecDeque};

const CHAIN: ChainId = ChainId(0x6b65_656c);
/// Most ancestors returned with a fetched block.
const FETCH_ANCESTORS: usize = 32;

/// How a replica behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Sends nothing.
    Silent,
    /// As leader, sends different blocks for one round to different halves of the committee.
    Equivocate,
    /// Votes for every proposal it sees, ignoring the safety rules.
    DoubleVote,
    /// Sends messages with corrupted signatures and votes forged in other validators' names.
    ForgeSignatures,
    /// Re-sends old messages it received to random replicas.
    Replay,
}

impl Behaviour {
    /// The Byzantine behaviours.
    pub const BYZANTINE: [Behaviour; 5] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::DoubleVote,
        Behaviour::ForgeSignatures,
        Behaviour::Replay,
    ];
}

/// Messages between the two sides are dropped from `from_ms` until `heal_ms`.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Start (virtual ms).
    pub from_ms: u64,
    /// End (virtual ms).
    pub heal_ms: u64,
    /// One side; the other side is everyone else.
    pub side: Vec<ValidatorIndex>,
}

/// A replica crashes at `at_ms` and restarts from its persisted state at `restart_ms`.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The replica.
    pub replica: ValidatorIndex,
    /// Crash time (virtual ms).
    pub at_ms: u64,
    /// Restart time, or never.
    pub restart_ms: Option<u64>,
}

/// A scenario.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// One behaviour per replica (the committee size is its length).
    pub behaviours: Vec<Behaviour>,
    /// Link latency range in ms (inclusive).
    pub latency_ms: (u64, u64),
    /// Probability a message (or fetch) is lost before `stable_ms`.
    pub loss: f64,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Crashes and restarts.
    pub crashes: Vec<Crash>,
    /// From this time on: no loss, no partition, no crash (Global Stabilisation Time).
    pub stable_ms: u64,
    /// End of the run.
    pub duration_ms: u64,
    /// Round timers.
    pub pacemaker: PacemakerConfig,
    /// Whether replicas persist safety data. Turning it off is for the negative test only.
    pub persist_safety: bool,
    /// The replicas' future-round window (see [`CoreConfig::max_future_rounds`]).
    pub max_future_rounds: u64,
    /// The replicas' minimum block interval (see [`CoreConfig::min_block_interval_ms`]).
    pub min_block_interval_ms: u64,
}

impl SimConfig {
    /// An all-honest committee of `n` with fixed small latency and no faults.
    pub fn honest(n: usize, seed: u64) -> Self {
        SimConfig {
            seed,
            behaviours: vec![Behaviour::Honest; n],
            latency_ms: (5, 15),
            loss: 0.0,
            partitions: vec![],
            crashes: vec![],
            stable_ms: 0,
            duration_ms: 10_000,
            pacemaker: PacemakerConfig {
                base_timeout_ms: 300,
                max_backoff_exponent: 4,
            },
            persist_safety: true,
            max_future_rounds: 100,
            min_block_interval_ms: 0,
        }
    }

    /// A random scenario for `n` replicas: up to f Byzantine replicas of mixed behaviours,
    /// random latency and loss, sometimes a partition that heals, and crash-restarts of honest
    /// replicas, never more than f faulty at once.
    pub fn random(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let f = (n - 1) / 3;
        let byzantine = rng.gen_range(0..=f);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut behaviours = vec![Behaviour::Honest; n];
        for i in &order[..byzantine] {
            behaviours[*i] = *Behaviour::BYZANTINE
                .choose(&mut rng)
                .unwrap_or(&Behaviour::Silent);
        }
        let max_latency = rng.gen_range(20..=100);
        let mut partitions = Vec::new();
        let mut stable_ms = rng.gen_range(1_000..4_000);
        if rng.gen_bool(0.6) {
            let from_ms = rng.gen_range(0..3_000);
            let heal_ms = from_ms + rng.gen_range(500..5_000);
            let side_len = rng.gen_range(1..=n / 2);
            let mut ids: Vec<usize> = (0..n).collect();
            ids.shuffle(&mut rng);
            partitions.push(Partition {
                from_ms,
                heal_ms,
                side: ids[..side_len]
                    .iter()
                    .map(|i| ValidatorIndex(*i as u32))
                    .collect(),
            });
            stable_ms = stable_ms.max(heal_ms);
        }
        let mut crashes = Vec::new();
        for i in &order[byzantine..byzantine + (f - byzantine)] {
            if rng.gen_bool(0.7) {
                let at_ms = rng.gen_range(0..4_000);
                let restart_ms = at_ms + rng.gen_range(100..4_000);
                crashes.push(Crash {
                    replica: ValidatorIndex(*i as u32),
                    at_ms,
                    restart_ms: Some(restart_ms),
                });
                stable_ms = stable_ms.max(restart_ms);
            }
        }
        // Drawn last, so the rest of a seed's scenario does not depend on it.
        let min_block_interval_ms = if rng.gen_bool(0.3) {
            rng.gen_range(10..=max_latency)
        } else {
            0
        };
        SimConfig {
            seed,
            behaviours,
            latency_ms: (max_latency / 4, max_latency),
            loss: rng.gen_range(0.0..0.05),
            partitions,
            crashes,
            stable_ms,
            // Long enough for two full leader rotations at the longest back-off: with f faulty
            // leaders up to 3 of 7 rounds in a rotation fail by design.
            duration_ms: stable_ms + 15_000,
            pacemaker: PacemakerConfig {
                base_timeout_ms: 4 * max_latency + 100,
                max_backoff_exponent: 2,
            },
            persist_safety: true,
            max_future_rounds: 100,
            min_block_interval_ms,
        }
    }
}

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
}

impl SimReport {
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

enum Event {
    ProposeTimer {
        replica: usize,
        round: Round,
    },
    Deliver {
        from: usize,
        to: usize,
        message: Box<ConsensusMessage>,
    },
    Timer {
        replica: usize,
        round: Round,
        generation: u64,
    },
    Fetch {
        requester: usize,
        server: usize,
        digest: Digest,
    },
    FetchReply {
        to: usize,
        blocks: Vec<SignedBlock>,
    },
    Crash(usize),
    Restart(usize),
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What survives a crash.
#[derive(Default)]
struct Persisted {
    safety: Option<SafetyData>,
    blocks: HashMap<Digest, SignedBlock>,
    root: Option<CommitRoot>,
    committed: Vec<Digest>,
}

type SimCore = Core<WeightedRoundRobin, EmptyPayload, EmptyPayload>;

struct Replica {
    core: Option<SimCore>,
    persisted: Persisted,
    behaviour: Behaviour,
    timer_generation: u64,
    last_round: Round,
    last_voted_round_persisted: Round,
    seen: VecDeque<ConsensusMessage>,
    certificates: CertificateCache,
    committed_at_stable: Option<(u64, Round)>,
    resumed_after_rounds: Option<u64>,
}

/// A committee under simulation.
pub struct Simulation {
    config: SimConfig,
    committee: Committee,
    keys: Vec<KeyPair>,
    leader: WeightedRoundRobin,
    replicas: Vec<Replica>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    now: u64,
    rng: ChaCha8Rng,
    canonical: Vec<Digest>,
    honest_votes: HashMap<(usize, Round), Digest>,
    report: SimReport,
    started: bool,
    stable_marked: bool,
}

fn key_for(seed: u64, i: usize) -> KeyPair {
    let mut h = blake3::Hasher::new();
    h.update(b"keel-sim-key");
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    KeyPair::from_seed(h.finalize().as_bytes())
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
        let leader = WeightedRoundRobin::new(&committee);
        let replicas = config
            .behaviours
            .iter()
            .map(|b| Replica {
                core: None,
                persisted: Persisted::default(),
                behaviour: *b,
                timer_generation: 0,
                last_round: Round(0),
                last_voted_round_persisted: Round(0),
                seen: VecDeque::new(),
                certificates: CertificateCache::new(256),
                committed_at_stable: None,
                resumed_after_rounds: None,
            })
            .collect();
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut sim = Simulation {
            report: SimReport {
                heights: vec![0; n],
                commits_after_stable: vec![None; n],
                ..SimReport::default()
            },
            config,
            committee,
            keys,
            leader,
            replicas,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            canonical: Vec::new(),
            honest_votes: HashMap::new(),
            started: false,
            stable_marked: false,
        };
        for c in sim.config.crashes.clone() {
            sim.schedule(c.at_ms, Event::Crash(c.replica.as_usize()));
            if let Some(r) = c.restart_ms {
                sim.schedule(r, Event::Restart(c.replica.as_usize()));
            }
        }
        sim
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            event,
        });
    }

    fn is_honest(&self, i: usize) -> bool {
        self.replicas[i].behaviour == Behaviour::Honest
    }

    fn make_core(&self, i: usize) -> SimCore {
        let p = &self.replicas[i].persisted;
        let mut recovery = RecoveryData::genesis(&self.committee, CHAIN);
        if let Some(s) = &p.safety {
            recovery.safety = s.clone();
        }
        if let Some(root) = p.root {
            recovery.root = root;
        }
        recovery.blocks = p.blocks.values().cloned().collect();
        let mut config = CoreConfig::new(CHAIN, ValidatorIndex(i as u32));
        config.pacemaker = self.config.pacemaker;
        config.max_future_rounds = self.config.max_future_rounds;
        config.min_block_interval_ms = self.config.min_block_interval_ms;
        Core::new(
            config,
            self.committee.clone(),
            KeyPair::from_seed(&self.keys[i].seed()),
            self.leader.clone(),
            (EmptyPayload, EmptyPayload),
            recovery,
        )
    }

    /// Whether a message from `from` to `to` sent now is lost.
    fn link_drops(&mut self, from: usize, to: usize) -> bool {
        if from == to {
            return false;
        }
        if self.now >= self.config.stable_ms {
            return false;
        }
        let (a, b) = (ValidatorIndex(from as u32), ValidatorIndex(to as u32));
        let cut = self.config.partitions.iter().any(|p| {
            self.now >= p.from_ms
                && self.now < p.heal_ms
                && (p.side.contains(&a) != p.side.contains(&b))
        });
        cut || self.rng.gen_bool(self.config.loss)
    }

    fn latency(&mut self, from: usize, to: usize) -> u64 {
        if from == to {
            0
        } else {
            self.rng
                .gen_range(self.config.latency_ms.0..=self.config.latency_ms.1)
        }
    }

    fn transmit(&mut self, from: usize, to: usize, message: ConsensusMessage) {
        if self.link_drops(from, to) {
            return;
        }
        let at = self.now + self.latency(from, to);
        self.schedule(
            at,
            Event::Deliver {
                from,
                to,
                message: Box::new(message),
            },
        );
    }

    /// Sends `message` from `from`, applying its behaviour and checking honest votes.
    fn send(&mut self, from: usize, to: usize, message: ConsensusMessage) {
        let behaviour = self.replicas[from].behaviour;
        if let ConsensusMessage::Vote(v) = &message
            && behaviour == Behaviour::Honest
        {
            match self.honest_votes.get(&(from, v.data.round)) {
                Some(d) if *d != v.data.block => self.report.violations.push(format!(
                    "t={}ms: honest replica {from} voted for two blocks in round {}",
                    self.now, v.data.round
                )),
                _ => {
                    self.honest_votes.insert((from, v.data.round), v.data.block);
                }
            }
        }
        match behaviour {
            Behaviour::Honest | Behaviour::DoubleVote => self.transmit(from, to, message),
            Behaviour::Silent => {
                if from == to {
                    self.transmit(from, to, message);
                }
            }
            Behaviour::Replay => {
                self.transmit(from, to, message);
                let seen = &self.replicas[from].seen;
                if !seen.is_empty() {
                    let old = seen[self.rng.gen_range(0..seen.len())].clone();
                    let target = self.rng.gen_range(0..self.replicas.len());
                    self.transmit(from, target, old);
                }
            }
            Behaviour::ForgeSignatures => {
                if from == to {
                    self.transmit(from, to, message);
                    return;
                }
                let mut corrupted = message.clone();
                match &mut corrupted {
                    ConsensusMessage::Proposal(b) => b.signature.0[3] ^= 0x40,
                    ConsensusMessage::Vote(v) => v.signature.0[3] ^= 0x40,
                    ConsensusMessage::Timeout(t) => t.signature.0[3] ^= 0x40,
                    ConsensusMessage::TimeoutCertificate(tc) => {
                        if let Some(s) = tc.signatures.first_mut() {
                            s.2.0[3] ^= 0x40;
                        }
                    }
                }
                self.transmit(from, to, corrupted);
                // A vote in another validator's name, signed with this replica's own key.
                let victim = (from + 1) % self.replicas.len();
                let forged = Vote::new(
                    VoteData {
                        epoch: self.committee.epoch(),
                        round: message.round(),
                        block: Digest::of_bytes(&self.rng.r#gen::<[u8; 8]>()),
                    },
                    ValidatorIndex(victim as u32),
                    &self.keys[from],
                    CHAIN,
                );
                self.transmit(from, to, ConsensusMessage::Vote(forged));
            }
            Behaviour::Equivocate => {
                if let ConsensusMessage::Proposal(block) = &message
                    && block.block.author.as_usize() == from
                    && to != from
                    && to % 2 == 1
                {
                    let mut other = block.block.clone();
                    other.timestamp = TimestampMs(other.timestamp.0 + 1);
                    let twin = other.sign(&self.keys[from], CHAIN);
                    self.transmit(from, to, ConsensusMessage::Proposal(twin));
                } else {
                    self.transmit(from, to, message);
                }
            }
        }
    }

    fn execute(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => self.send(i, to.as_usize(), message),
                Action::Broadcast(message) => {
                    for to in 0..self.replicas.len() {
                        self.send(i, to, message.clone());
                    }
                }
                Action::PersistSafety { data, then } => {
                    if self.config.persist_safety {
                        self.replicas[i].persisted.safety = Some(data);
                    }
                    self.execute(i, then);
                }
                Action::PersistBlock(block) => {
                    self.replicas[i]
                        .persisted
                        .blocks
                        .insert(block.digest(), block);
                }
                Action::SetTimer { round, after_ms } => {
                    let r = &mut self.replicas[i];
                    r.timer_generation += 1;
                    let generation = r.timer_generation;
                    self.schedule(
                        self.now + after_ms,
                        Event::Timer {
                            replica: i,
                            round,
                            generation,
                        },
                    );
                }
                Action::ProposeAfter { round, after_ms } => {
                    self.schedule(
                        self.now + after_ms,
                        Event::ProposeTimer { replica: i, round },
                    );
                }
                Action::Commit(blocks) => self.on_commit(i, blocks),
                Action::FetchBlock { digest, from } => {
                    let server = from.as_usize();
                    if !self.link_drops(i, server) {
                        let at = self.now + self.latency(i, server);
                        self.schedule(
                            at,
                            Event::Fetch {
                                requester: i,
                                server,
                                digest,
                            },
                        );
                    }
                }
            }
        }
    }

    fn on_commit(&mut self, i: usize, blocks: Vec<crate::CommittedBlock>) {
        let honest = self.is_honest(i);
        for cb in blocks {
            let digest = cb.block.digest();
            let p = &mut self.replicas[i].persisted;
            let expected = p.committed.len() as u64 + 1;
            if honest && cb.height.0 != expected {
                self.report.violations.push(format!(
                    "t={}ms: replica {i} committed height {} after height {}",
                    self.now,
                    cb.height,
                    expected - 1
                ));
            }
            p.committed.push(digest);
            p.root = Some(CommitRoot {
                digest,
                round: cb.block.block.round,
                height: cb.height,
                timestamp: cb.block.block.timestamp,
            });
            if !honest {
                continue;
            }
            let h = cb.height.0 as usize;
            if h == self.canonical.len() + 1 {
                self.canonical.push(digest);
            } else if let Some(c) = self.canonical.get(h.wrapping_sub(1))
                && *c != digest
            {
                self.report.violations.push(format!(
                    "t={}ms: replica {i} committed {} at height {h}, others committed {}",
                    self.now,
                    digest.short(),
                    c.short()
                ));
            }
            let round = self.replicas[i]
                .core
                .as_ref()
                .map_or(Round(0), |c| c.round());
            let r = &mut self.replicas[i];
            if let Some((_, stable_round)) = r.committed_at_stable
                && r.resumed_after_rounds.is_none()
            {
                r.resumed_after_rounds = Some(round.0.saturating_sub(stable_round.0));
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, message: ConsensusMessage) {
        if self.replicas[to].core.is_none() {
            return;
        }
        if from == to {
            // The replica's own message, looped back: nothing to verify.
            self.step(to, Input::Message(Box::new(Verified::own(message))));
            return;
        }
        let checked = message.clone().verify_with(
            &self.committee,
            CHAIN,
            &mut self.replicas[to].certificates,
        );
        let Ok(verified) = checked else {
            self.report.rejected += 1;
            return;
        };
        self.report.delivered += 1;
        let behaviour = self.replicas[to].behaviour;
        if behaviour == Behaviour::Replay {
            let seen = &mut self.replicas[to].seen;
            if seen.len() >= 64 {
                seen.pop_front();
            }
            seen.push_back(message.clone());
        }
        if behaviour == Behaviour::DoubleVote
            && let ConsensusMessage::Proposal(b) = &message
        {
            // Vote for every proposal seen, whatever was voted before.
            let vote = Vote::new(
                VoteData {
                    epoch: b.block.epoch,
                    round: b.block.round,
                    block: b.digest(),
                },
                ValidatorIndex(to as u32),
                &self.keys[to],
                CHAIN,
            );
            let next = self.leader.leader(Round(b.block.round.0 + 1)).as_usize();
            self.send(to, next, ConsensusMessage::Vote(vote));
        }
        self.step(to, Input::Message(Box::new(verified)));
    }

    fn step(&mut self, i: usize, input: Input) {
        let now = TimestampMs(self.now);
        let Some(core) = self.replicas[i].core.as_mut() else {
            return;
        };
        let actions = core.handle(now, input);
        let round = core.round();
        let voted = core.safety_data().last_voted_round;
        self.execute(i, actions);
        if self.is_honest(i) {
            let r = &mut self.replicas[i];
            if round < r.last_round {
                self.report.violations.push(format!(
                    "t={}ms: replica {i} went back from round {} to {round}",
                    self.now, r.last_round
                ));
            }
            r.last_round = round;
            if self.config.persist_safety {
                if voted < r.last_voted_round_persisted {
                    self.report.violations.push(format!(
                        "t={}ms: replica {i} last voted round went back to {voted}",
                        self.now
                    ));
                }
                r.last_voted_round_persisted = voted;
            }
        }
        self.report.max_round = self.report.max_round.max(round.0);
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
        if blocks.is_empty() || self.link_drops(server, requester) {
            return;
        }
        let at = self.now + self.latency(server, requester);
        self.schedule(
            at,
            Event::FetchReply {
                to: requester,
                blocks,
            },
        );
    }

    fn on_fetch_reply(&mut self, to: usize, blocks: Vec<SignedBlock>) {
        if self.replicas[to].core.is_none() {
            return;
        }
        let mut verified = Vec::new();
        for b in blocks {
            match verify_block(
                b,
                &self.committee,
                CHAIN,
                &mut self.replicas[to].certificates,
            ) {
                Ok(v) => verified.push(v),
                Err(_) => self.report.rejected += 1,
            }
        }
        self.step(to, Input::BlocksFetched(verified));
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
            let core = self.make_core(i);
            self.replicas[i].core = Some(core);
            self.step(i, Input::Start);
        }
    }

    /// Processes events up to virtual time `until_ms` (inclusive).
    pub fn run_until(&mut self, until_ms: u64) {
        if !self.started {
            self.start_all();
        }
        while let Some(q) = self.queue.peek() {
            if q.at > until_ms {
                break;
            }
            let Some(q) = self.queue.pop() else { break };
            self.now = q.at;
            if !self.stable_marked && self.now >= self.config.stable_ms {
                self.mark_stable();
            }
            self.dispatch(q.event);
        }
        self.now = self.now.max(until_ms);
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, message } => self.deliver(from, to, *message),
            Event::ProposeTimer { replica, round } => {
                self.step(replica, Input::ProposeTimer { round });
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
            Event::Crash(i) => self.crash(ValidatorIndex(i as u32)),
            Event::Restart(i) => self.restart(ValidatorIndex(i as u32)),
        }
    }

    /// Processes events until some replica reaches `round` (or the queue empties). With zero
    /// latency virtual time stands still, so this is how benchmarks bound a run.
    pub fn run_rounds(&mut self, round: u64) {
        if !self.started {
            self.start_all();
        }
        while self.report.max_round < round {
            let Some(q) = self.queue.pop() else { break };
            self.now = q.at;
            self.dispatch(q.event);
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
        self.replicas[i].last_round = Round(0);
    }

    /// Restarts a replica now from its persisted state.
    pub fn restart(&mut self, replica: ValidatorIndex) {
        let i = replica.as_usize();
        let core = self.make_core(i);
        self.replicas[i].core = Some(core);
        self.step(i, Input::Start);
    }

    /// Delivers `message` to `to` now, as if a peer had sent it (scripted adversaries).
    pub fn inject(&mut self, to: ValidatorIndex, message: ConsensusMessage) {
        // Scripted messages come from "the network": always verified.
        self.deliver(usize::MAX, to.as_usize(), message);
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

    /// Signs `block` with `signer`'s key (scripted equivocation).
    pub fn sign_block(&self, signer: ValidatorIndex, block: keel_types::Block) -> SignedBlock {
        block.sign(&self.keys[signer.as_usize()], CHAIN)
    }

    /// The safety violations found so far.
    pub fn violations(&self) -> &[String] {
        &self.report.violations
    }

    /// Records, at stabilisation, each replica's height and the highest round any live
    /// replica has reached (the yardstick for how long commits take to resume).
    fn mark_stable(&mut self) {
        self.stable_marked = true;
        let round = self
            .replicas
            .iter()
            .filter_map(|r| r.core.as_ref().map(|c| c.round()))
            .max()
            .unwrap_or(Round(0));
        for r in &mut self.replicas {
            r.committed_at_stable = Some((r.persisted.committed.len() as u64, round));
        }
    }

    /// Ends the run and returns the report.
    pub fn finish(mut self) -> SimReport {
        if !self.stable_marked {
            self.mark_stable();
        }
        for (i, r) in self.replicas.iter().enumerate() {
            self.report.heights[i] = r.persisted.committed.len() as u64;
            let honest = r.behaviour == Behaviour::Honest && r.core.is_some();
            if honest {
                let (at_stable, _) = r.committed_at_stable.unwrap_or((0, Round(0)));
                self.report.commits_after_stable[i] =
                    Some(r.persisted.committed.len() as u64 - at_stable);
                self.report.rounds_to_resume = self
                    .report
                    .rounds_to_resume
                    .max(r.resumed_after_rounds.unwrap_or(u64::MAX));
            }
        }
        // Every honest replica's chain is a prefix of the canonical one.
        for (i, r) in self.replicas.iter().enumerate() {
            if r.behaviour != Behaviour::Honest {
                continue;
            }
            if let Some(h) = r
                .persisted
                .committed
                .iter()
                .zip(&self.canonical)
                .position(|(a, b)| a != b)
            {
                self.report.violations.push(format!(
                    "replica {i} diverges from the canonical chain at height {}",
                    h + 1
                ));
            }
        }
        self.report
    }

    /// The committee (for tests that script messages).
    pub fn committee(&self) -> &Committee {
        &self.committee
    }
}
