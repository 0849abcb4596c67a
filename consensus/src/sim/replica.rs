//! A simulated replica: an ordinary `Core` and the embedder around it. The embedder carries
//! out the core's actions the way a node does — it persists safety data *before* releasing the
//! messages that depend on it, stores blocks, arms timers (a newer timer replaces an older
//! one), sends fetches and certificate requests, and applies commits — but into memory and the
//! simulated network. What a replica persisted (`Persisted`) survives a crash (its safety data
//! unless the crash wipes it); everything else is rebuilt from it on restart, exactly as
//! `RecoveryData` describes, amnesiac when no safety data is left and the guard is on.

use super::{Simulation, network::Event, scenario::Behaviour, scenario::CHAIN};
use crate::{
    block_tree::{CommitRoot, CommittedBlock},
    core::{Action, Core, CoreConfig, CoreDeps, EmptyPayload, Input, RecoveryData},
    leader::Election,
    message::{CertificateCache, ConsensusMessage},
    safety::SafetyData,
};
use keel_types::{
    Committee, Digest, Epoch, KeyPair, Round, SignedBlock, TimestampMs, ValidatorIndex,
};
use std::collections::{HashMap, VecDeque};

/// The core every simulated replica runs.
pub(super) type SimCore = Core<Election, EmptyPayload>;

/// What survives a crash.
pub(super) struct Persisted {
    /// The epoch its consensus state is in.
    pub(super) epoch: Epoch,
    pub(super) safety: Option<SafetyData>,
    pub(super) blocks: HashMap<Digest, SignedBlock>,
    pub(super) root: Option<CommitRoot>,
    pub(super) committed: Vec<Digest>,
}

impl Persisted {
    /// Nothing yet, in the first epoch.
    fn new() -> Self {
        Persisted {
            epoch: Epoch(1),
            safety: None,
            blocks: HashMap::new(),
            root: None,
            committed: Vec::new(),
        }
    }

    /// What a core restarting from this state starts with (`amnesiac`: with the amnesia
    /// guard). As a node's recovery: an older epoch's safety data and blocks are ignored.
    fn recovery(&self, committee: &Committee, amnesiac: bool) -> RecoveryData {
        let mut recovery = RecoveryData::genesis(committee, CHAIN);
        recovery.amnesiac = amnesiac;
        if let Some(s) = &self.safety
            && s.epoch == committee.epoch()
        {
            recovery.safety = s.clone();
        }
        if let Some(root) = self.root {
            recovery.root = root;
        }
        recovery.blocks = self
            .blocks
            .values()
            .filter(|b| b.block.epoch == committee.epoch())
            .cloned()
            .collect();
        recovery
    }

    /// `election` after being fed the last committed blocks it needs, as a node feeds it
    /// from its store on restart.
    fn election(&self, mut election: Election) -> Election {
        let keep = election.history_len();
        let from = self.committed.len().saturating_sub(keep);
        let recent: Vec<CommittedBlock> = self
            .committed
            .iter()
            .enumerate()
            .skip(from)
            .filter_map(|(i, digest)| {
                self.blocks.get(digest).map(|block| CommittedBlock {
                    block: block.clone(),
                    height: keel_types::Height(i as u64 + 1),
                })
            })
            // The epoch's own history only, as a node's rebuilt election.
            .filter(|cb| cb.block.block.epoch == self.epoch)
            .collect();
        election.recover(keel_types::Height(self.committed.len() as u64), &recent);
        election
    }

    /// Records a committed block as the new root.
    fn commit(&mut self, cb: &CommittedBlock) {
        let digest = cb.block.digest();
        self.committed.push(digest);
        self.root = Some(CommitRoot {
            digest,
            round: cb.block.block.round,
            height: cb.height,
            timestamp: cb.block.block.timestamp,
        });
    }
}

/// One replica: its core while up, its persisted state always.
pub(super) struct Replica {
    pub(super) core: Option<SimCore>,
    pub(super) persisted: Persisted,
    pub(super) behaviour: Behaviour,
    /// Bumped by every timer set, so only the latest one fires.
    pub(super) timer_generation: u64,
    /// Messages a replaying replica received.
    pub(super) seen: VecDeque<ConsensusMessage>,
    pub(super) certificates: CertificateCache,
    /// Newer-epoch messages held until the switch, with their sender.
    pub(super) held: VecDeque<(Option<usize>, ConsensusMessage)>,
    /// It committed its epoch's last height: it switches once the current step is done.
    pub(super) switch_pending: bool,
    /// When it last asked for the rest of its epoch (an open request).
    pub(super) epoch_sync_sent: Option<u64>,
}

impl Replica {
    /// A replica that has not started yet.
    pub(super) fn new(behaviour: Behaviour) -> Self {
        Replica {
            core: None,
            persisted: Persisted::new(),
            behaviour,
            timer_generation: 0,
            seen: VecDeque::new(),
            certificates: CertificateCache::new(256),
            held: VecDeque::new(),
            switch_pending: false,
            epoch_sync_sent: None,
        }
    }
}

impl Simulation {
    /// A core for replica `i`, recovered from what it persisted; `amnesiac` as a node decides
    /// it (no safety data found, and the guard on).
    pub(super) fn make_core(&self, i: usize, amnesiac: bool) -> SimCore {
        let config = CoreConfig {
            pacemaker: self.config.pacemaker,
            max_future_rounds: self.config.max_future_rounds,
            // Set explicitly: the scenario's value (often 0), not the library default.
            min_block_interval_ms: self.config.min_block_interval_ms,
            max_idle_wait_ms: self.config.max_idle_wait_ms,
            election: self.election_config(i),
            ..CoreConfig::default()
        };
        let committee = self.committee_of(self.replicas[i].persisted.epoch);
        let election = Election::new(&config.election, &committee);
        Core::new(CoreDeps {
            config,
            chain_id: CHAIN,
            me: ValidatorIndex(i as u32),
            committee: committee.clone(),
            key: KeyPair::from_seed(&self.keys[i].seed()),
            leader: self.replicas[i].persisted.election(election),
            payload: EmptyPayload,
            recovery: self.replicas[i].persisted.recovery(&committee, amnesiac),
        })
    }

    /// The election configuration replica `i` runs.
    pub(super) fn election_config(&self, i: usize) -> crate::leader::ElectionConfig {
        match &self.config.election_override {
            Some((replicas, config)) if replicas.contains(&ValidatorIndex(i as u32)) => *config,
            _ => self.config.election,
        }
    }

    /// Feeds `input` to replica `i`'s core (if up), carries out its actions, then checks.
    pub(super) fn step(&mut self, i: usize, input: Input) {
        let now = TimestampMs(self.net.now);
        let Some(core) = self.replicas[i].core.as_mut() else {
            return;
        };
        let actions = core.handle(now, input);
        let round = core.round();
        let voted = core.safety_data().last_voted_round;
        self.execute(i, actions);
        if self.is_honest(i) {
            self.checker.honest_step(self.net.now, i, round, voted);
        }
        self.report.max_round = self.report.max_round.max(round.0);
        if self.replicas[i].switch_pending {
            self.switch_epoch(i);
        }
    }

    /// Carries out replica `i`'s actions, in order.
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
                    self.net.schedule(
                        self.net.now + after_ms,
                        Event::Timer {
                            replica: i,
                            round,
                            generation,
                        },
                    );
                }
                Action::ProposeAfter { round, after_ms } => {
                    let epoch = self.replicas[i].persisted.epoch;
                    self.net.schedule(
                        self.net.now + after_ms,
                        Event::ProposeTimer {
                            replica: i,
                            epoch,
                            round,
                        },
                    );
                }
                Action::Commit(blocks) => self.on_commit(i, blocks),
                Action::FetchBlock { digest, from } => {
                    self.net.request(i, from.as_usize(), digest);
                }
                Action::RequestCertificates { to } => {
                    for server in to {
                        self.net.request_certificates(i, server.as_usize());
                    }
                }
            }
        }
    }

    /// Replica `i` commits `blocks`: persist them, check them, measure liveness. Nothing above
    /// its epoch's end is kept; committing the end makes it switch after this step.
    pub(super) fn on_commit(&mut self, i: usize, blocks: Vec<CommittedBlock>) {
        let honest = self.is_honest(i);
        let end = self.epoch_end(self.replicas[i].persisted.epoch);
        for cb in blocks {
            if end.is_some_and(|end| cb.height > end) || self.replicas[i].switch_pending {
                continue;
            }
            if end == Some(cb.height) {
                self.replicas[i].switch_pending = true;
            }
            if honest {
                let committed = self.replicas[i].persisted.committed.len() as u64;
                self.checker.honest_commit(
                    self.net.now,
                    i,
                    committed,
                    cb.block.digest(),
                    cb.height,
                );
            }
            self.replicas[i].persisted.commit(&cb);
            if honest {
                let round = self.replicas[i]
                    .core
                    .as_ref()
                    .map_or(Round(0), |c| c.round());
                self.liveness.honest_commit(i, round);
            }
        }
    }
}
