//! The consensus driver task: owns the core and the proof queue (the core's payload), feeds the
//! core checked inputs and carries out its actions. It decides nothing:
//! - a peer's message passes the core's cheap checks ([`Core::precheck`]: sender, leader,
//!   round window, size) before any signature is verified, then verification, then the core;
//! - safety data is written with a synced write before the messages that depend on it leave;
//! - own messages loop back without verification;
//! - block fetches run as tasks whose answers come back, unverified, through a bounded queue;
//! - commits are persisted, then published (status, the executor's watch) and their proofs
//!   leave the queue;
//! - while range sync runs ([`SyncControl::Pause`] … [`SyncControl::Resume`]) the core gets no
//!   input: peers' messages, timers and fetch answers are dropped, so it signs and commits
//!   nothing while the sync task writes the committed chain; the heights sync applies are
//!   published like commits; on resume the core is rebuilt from the store (safety data,
//!   the new committed root, the uncommitted blocks above it) keeping the proof queue;
//! - epochs ([`crate::epoch`]): once the epoch's last height is known, commits above it are
//!   not persisted (the next epoch starts from it); when execution publishes the next epoch
//!   the stored consensus state moves to that epoch's start ([`persist::start_epoch`]) and
//!   the core is rebuilt for the new committee at round 0 with an empty proof queue (the old
//!   epoch's proofs cannot be ordered in the new one). A node outside the new committee stops
//!   feeding its core. Messages of an older epoch are refused and counted; messages of a
//!   newer one are held (at most `max_held_messages`, the oldest dropped first) and handed to
//!   the new core after the switch.

use crate::{
    clock::now_ms,
    epoch::EpochWatch,
    metrics::Metrics,
    payload::ProofPayload,
    peers::Outbound,
    persist,
    status::{ConsensusView, StatusWriter},
    sync::SyncControl,
};
use keel_consensus::{
    Action, CertificateAnswer, CertificateCache, CommitRoot, CommittedBlock, ConsensusMessage,
    Core, Election, Input, LeaderElection, PayloadSource, RecoveryData, Verified, verify_block,
};
use keel_p2p::{Notification, Request, Response};
use keel_storage::Store;
use keel_types::{
    ChainId, Digest, Height, KeyPair, ProofOfAvailability, Round, SignedBlock, ValidatorIndex,
};
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

mod epoch;

/// The consensus core type the node runs.
pub type NodeCore = Core<Election, ProofPayload>;

/// A peer's consensus message, unverified.
pub type PeerMessage = (ValidatorIndex, ConsensusMessage);

/// A peer's answer to a certificates request (amnesia guard), unverified.
pub type PeerCertificates = (ValidatorIndex, CertificateAnswer);

/// Builds a core for a committee, this node's index in it and the protocol key the committee
/// names, from recovery data (the same config as the first one, a fresh proof queue).
pub type CoreBuilder =
    Box<dyn Fn(RecoveryData, &keel_types::Committee, ValidatorIndex, &KeyPair) -> NodeCore + Send>;

/// What the driver is built from.
pub struct DriverDeps {
    /// The core, recovered from the store.
    pub core: NodeCore,
    /// The chain (for verification).
    pub chain_id: ChainId,
    /// This validator.
    pub me: ValidatorIndex,
    /// Where blocks, commits and safety data are persisted.
    pub store: Arc<Store>,
    /// Sends to peers.
    pub outbound: Outbound,
    /// Round and committed height for the API.
    pub status: StatusWriter,
    /// The committed height, for the execution thread.
    pub committed: watch::Sender<Height>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown; the driver fires it itself when it cannot persist.
    pub shutdown: CancellationToken,
    /// Peers' consensus messages (from the router).
    pub messages: mpsc::Receiver<PeerMessage>,
    /// Verified proofs of availability (own ones from batching, peers' from the verifiers).
    pub proofs: mpsc::Receiver<ProofOfAvailability>,
    /// The fetch tasks' answers, and the sender they use.
    pub fetched: (
        mpsc::Sender<Vec<SignedBlock>>,
        mpsc::Receiver<Vec<SignedBlock>>,
    ),
    /// Certificates remembered as verified.
    pub certificate_cache: usize,
    /// How often expired proofs are dropped.
    pub proof_expiry_interval: Duration,
    /// Range sync's requests.
    pub sync: mpsc::Receiver<SyncControl>,
    /// Rebuilds the core after range sync and at an epoch change.
    pub rebuild: CoreBuilder,
    /// The epoch (published by execution).
    pub epoch: EpochWatch,
    /// Messages of a future epoch held until the switch.
    pub max_held_messages: usize,
    /// Peers' answers to certificate requests (amnesia guard), and the sender they use.
    pub certificates: (
        mpsc::Sender<PeerCertificates>,
        mpsc::Receiver<PeerCertificates>,
    ),
}

/// Owns the core.
pub struct Driver {
    core: NodeCore,
    /// The core's committee, kept here so verification does not clone it per message.
    committee: keel_types::Committee,
    chain_id: ChainId,
    me: ValidatorIndex,
    store: Arc<Store>,
    outbound: Outbound,
    status: StatusWriter,
    committed: watch::Sender<Height>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    fetched_tx: mpsc::Sender<Vec<SignedBlock>>,
    certificates_tx: mpsc::Sender<PeerCertificates>,
    certs: CertificateCache,
    timer: Option<(Round, Instant)>,
    propose_timer: Option<(Round, Instant)>,
    /// Range sync runs: the core gets no input.
    paused: bool,
    rebuild: CoreBuilder,
    /// The protocol key of the current epoch (the core signs with it).
    key: Arc<KeyPair>,
    /// Whether this node is in the current committee (a core runs only then).
    member: bool,
    /// The current epoch's last height, once known: commits above it are not persisted.
    ends_at: Option<Height>,
    /// Peers' messages of a future epoch, oldest first.
    held: VecDeque<PeerMessage>,
    max_held: usize,
}

/// The driver's inputs.
struct Inputs {
    messages: mpsc::Receiver<PeerMessage>,
    proofs: mpsc::Receiver<ProofOfAvailability>,
    fetched: mpsc::Receiver<Vec<SignedBlock>>,
    expiry: tokio::time::Interval,
    sync: mpsc::Receiver<SyncControl>,
    certificates: mpsc::Receiver<PeerCertificates>,
    epoch: EpochWatch,
}

impl Driver {
    /// Starts the driver task; it runs until shutdown.
    pub fn spawn(deps: DriverDeps) -> JoinHandle<()> {
        let DriverDeps {
            core,
            chain_id,
            me,
            store,
            outbound,
            status,
            committed,
            metrics,
            shutdown,
            messages,
            proofs,
            fetched: (fetched_tx, fetched),
            certificate_cache,
            proof_expiry_interval,
            sync,
            rebuild,
            certificates: (certificates_tx, certificates),
            epoch,
            max_held_messages,
        } = deps;
        let mut expiry = tokio::time::interval(proof_expiry_interval);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let driver = Driver {
            committee: core.committee().clone(),
            core,
            chain_id,
            me,
            store,
            outbound,
            status,
            committed,
            metrics,
            shutdown,
            fetched_tx,
            certificates_tx,
            certs: CertificateCache::new(certificate_cache),
            timer: None,
            propose_timer: None,
            paused: false,
            rebuild,
            key: epoch.borrow().keys.protocol.clone(),
            member: epoch.borrow().me.is_some(),
            ends_at: epoch.borrow().ends_at(),
            held: VecDeque::new(),
            max_held: max_held_messages,
        };
        let inputs = Inputs {
            messages,
            proofs,
            fetched,
            expiry,
            sync,
            certificates,
            epoch,
        };
        tokio::spawn(driver.run(inputs))
    }

    #[tracing::instrument(skip_all, name = "consensus")]
    async fn run(mut self, mut inputs: Inputs) {
        self.process(Input::Start).await;
        let cancel = self.shutdown.clone();
        loop {
            let timer = self.timer;
            let propose = self.propose_timer;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = sleep_until(timer.map(|t| t.1)) => {
                    self.timer = None;
                    if let Some((round, _)) = timer {
                        self.process(Input::Timer { round }).await;
                    }
                }
                _ = sleep_until(propose.map(|t| t.1)) => {
                    self.propose_timer = None;
                    if let Some((round, _)) = propose {
                        self.process(Input::ProposeTimer { round }).await;
                    }
                }
                Ok(()) = inputs.epoch.changed() => {
                    let view = inputs.epoch.borrow_and_update().clone();
                    self.on_epoch(&view).await;
                }
                Some(control) = inputs.sync.recv() => self.on_sync(control).await,
                Some((from, answer)) = inputs.certificates.recv() => {
                    self.on_certificates(from, answer).await;
                }
                Some(blocks) = inputs.fetched.recv() => {
                    if !self.paused {
                        self.on_fetched(blocks).await;
                    }
                }
                Some(proof) = inputs.proofs.recv() => {
                    let queued = self.core.payload_mut().queue().insert(proof, now_ms());
                    self.metrics.queued_proofs.set(self.core.payload().len() as i64);
                    if queued && !self.paused {
                        // Ends an idle leader's wait for payload.
                        self.process(Input::PayloadAvailable).await;
                    }
                }
                // Before peer messages, so a flood of them cannot stop expiry.
                _ = inputs.expiry.tick() => {
                    self.core.payload_mut().queue().expire(now_ms());
                    self.metrics.queued_proofs.set(self.core.payload().len() as i64);
                    // Held-back proofs become offerable again with time: end an idle wait.
                    if self.core.payload().has_payload() && !self.paused {
                        self.process(Input::PayloadAvailable).await;
                    }
                }
                Some((from, message)) = inputs.messages.recv() => {
                    if self.paused {
                        self.metrics.consensus_dropped.inc();
                    } else {
                        self.on_message(from, message).await;
                    }
                }
                else => break,
            }
        }
    }

    /// The epoch first ([`Driver::admit_epoch`]), then cheap checks, then signatures, then
    /// the core.
    async fn on_message(&mut self, from: ValidatorIndex, message: ConsensusMessage) {
        let Some(message) = self.admit_epoch(from, message) else {
            return;
        };
        if let Err(e) = self.core.precheck(from, &message) {
            self.metrics.consensus_dropped.inc();
            tracing::debug!(%from, error = %e, "consensus message failed the cheap checks");
            return;
        }
        match message.verify_with(&self.committee, self.chain_id, &mut self.certs) {
            Ok(verified) => self.process(Input::Message(Box::new(verified))).await,
            Err(e) => {
                // Counted, and logged at debug only: a hostile peer must not flood the log.
                self.metrics.consensus_dropped.inc();
                tracing::debug!(%from, error = %e, "consensus message failed verification");
            }
        }
    }

    async fn on_fetched(&mut self, blocks: Vec<SignedBlock>) {
        let verified: Vec<Verified<SignedBlock>> = blocks
            .into_iter()
            .filter_map(|b| verify_block(b, &self.committee, self.chain_id, &mut self.certs).ok())
            .collect();
        if !verified.is_empty() {
            self.process(Input::BlocksFetched(verified)).await;
        }
    }

    async fn process(&mut self, input: Input) {
        if !self.member {
            return;
        }
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let actions = self.core.handle(now_ms(), input);
            self.apply(actions, &mut inputs).await;
        }
        let stats = self.core.stats();
        let m = &self.metrics;
        m.round.set(self.core.round().0 as i64);
        m.timeouts
            .inc_by(stats.timeouts.saturating_sub(m.timeouts.get()));
        m.proposals
            .inc_by(stats.proposals.saturating_sub(m.proposals.get()));
        m.failed_rounds
            .inc_by(stats.failed_rounds.saturating_sub(m.failed_rounds.get()));
        m.round_timeout_seconds
            .set(self.core.timeout_ms() as f64 / 1000.0);
        let round = self.core.round();
        if self.status.borrow().round != round {
            let view = self.consensus_view(round);
            self.status.send_modify(|s| {
                s.round = round;
                s.consensus = view;
            });
        }
    }

    /// The consensus view of `round` for the status and the leader metrics (once per round:
    /// the reputations walk the election's windows).
    fn consensus_view(&self, round: Round) -> ConsensusView {
        let election = self.core.election();
        let leader = election.leader(round);
        let reputations = election.reputations(round);
        self.metrics.round_leader.set(i64::from(leader.0));
        for r in &reputations {
            self.metrics
                .leader_weight
                .with_label_values(&[&r.validator.0.to_string()])
                .set(r.weight as i64);
        }
        ConsensusView {
            leader,
            round_timeout_ms: self.core.timeout_ms(),
            failed_rounds: self.core.stats().failed_rounds,
            election: match election {
                Election::RoundRobin(_) => "round_robin",
                Election::Reputation(_) => "reputation",
            },
            reputations,
        }
    }

    async fn apply(&mut self, actions: Vec<Action>, inputs: &mut VecDeque<Input>) {
        let mut work: VecDeque<Action> = actions.into();
        while let Some(action) = work.pop_front() {
            match action {
                Action::Send { to, message } => {
                    if let ConsensusMessage::Vote(vote) = &message
                        && vote.author == self.me
                    {
                        // An audit trail of what this validator signed (off by default).
                        tracing::debug!(
                            target: "keel::signed",
                            round = vote.data.round.0,
                            block = %vote.data.block,
                            "signed vote"
                        );
                    }
                    if to == self.me {
                        inputs.push_back(Input::Message(Box::new(Verified::own(message))));
                    } else {
                        self.outbound.send(to, &Notification::Consensus(message));
                    }
                }
                Action::Broadcast(message) => {
                    self.outbound
                        .broadcast(&Notification::Consensus(message.clone()));
                    inputs.push_back(Input::Message(Box::new(Verified::own(message))));
                }
                Action::PersistSafety { data, then } => {
                    let store = self.store.clone();
                    let saved =
                        tokio::task::spawn_blocking(move || persist::save_safety(&store, &data))
                            .await;
                    match saved {
                        Ok(Ok(())) => {
                            for a in then.into_iter().rev() {
                                work.push_front(a);
                            }
                        }
                        // Without durable safety data nothing may be signed: stop the node.
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot persist safety data; shutting down");
                            self.shutdown.cancel();
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "safety write task failed; shutting down");
                            self.shutdown.cancel();
                            return;
                        }
                    }
                }
                Action::PersistBlock(block) => {
                    if let Err(e) = persist::save_block(&self.store, &block) {
                        tracing::error!(error = %e, "cannot persist a block");
                    }
                }
                Action::SetTimer { round, after_ms } => {
                    self.timer = Some((round, Instant::now() + Duration::from_millis(after_ms)));
                }
                Action::ProposeAfter { round, after_ms } => {
                    self.propose_timer =
                        Some((round, Instant::now() + Duration::from_millis(after_ms)));
                }
                Action::Commit(mut blocks) => {
                    // Past the epoch's end nothing is committed: the next epoch starts there.
                    if let Some(end) = self.ends_at {
                        blocks.retain(|b| b.height <= end);
                        if blocks.is_empty() {
                            continue;
                        }
                    }
                    if let Err(e) = persist::save_commit(&self.store, &blocks) {
                        tracing::error!(error = %e, "cannot persist a commit; shutting down");
                        self.shutdown.cancel();
                        return;
                    }
                    self.on_committed(&blocks);
                }
                Action::FetchBlock { digest, from } => self.fetch(digest, from),
                Action::RequestCertificates { to } => self.request_certificates(to),
            }
        }
    }

    /// Publishes persisted commits: metrics, the proof queue, the status and the executor.
    fn on_committed(&mut self, blocks: &[CommittedBlock]) {
        let now = now_ms();
        let mut digests = Vec::new();
        for b in blocks {
            self.metrics.committed_blocks.inc();
            let block = &b.block.block;
            let outcome = |validator: ValidatorIndex, outcome: &str| {
                self.metrics
                    .leader_rounds
                    .with_label_values(&[&validator.0.to_string(), outcome])
                    .inc();
            };
            outcome(block.author, "succeeded");
            for failed in block.failed_leaders.iter().flatten() {
                outcome(*failed, "failed");
            }
            let latency = now.0.saturating_sub(b.block.block.timestamp.0) as f64 / 1e3;
            self.metrics.commit_latency.observe(latency);
            digests.extend(
                b.block
                    .block
                    .payload
                    .iter()
                    .map(|p| (p.info.digest, p.info.expires_at)),
            );
        }
        self.core.payload_mut().queue().remove_committed(digests);
        self.metrics
            .queued_proofs
            .set(self.core.payload().len() as i64);
        if let Some(last) = blocks.last() {
            self.publish_height(last.height);
        }
    }

    /// Tells metrics, the status and the execution thread of a new committed height.
    fn publish_height(&self, height: Height) {
        self.metrics.committed_height.set(height.0 as i64);
        self.committed.send_replace(height);
        self.status.send_modify(|s| {
            s.committed = height;
            s.last_progress = std::time::Instant::now();
        });
    }

    /// Range sync's requests: pause, publish what it applied, resume with a rebuilt core.
    async fn on_sync(&mut self, control: SyncControl) {
        match control {
            SyncControl::Pause(reply) => {
                self.paused = true;
                self.timer = None;
                self.propose_timer = None;
                let root: CommitRoot = self.core.committed_root();
                let _ = reply.send(root);
            }
            SyncControl::Applied { root, batches } => {
                self.core.payload_mut().queue().remove_committed(batches);
                self.metrics
                    .queued_proofs
                    .set(self.core.payload().len() as i64);
                self.publish_height(root.height);
            }
            SyncControl::Resume => {
                let recovery = match persist::recover(&self.store, &self.committee, self.chain_id) {
                    Ok(recovery) => recovery,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reload consensus after sync; shutting down");
                        self.shutdown.cancel();
                        return;
                    }
                };
                // Still amnesiac before the sync: still amnesiac after it.
                let mut recovery = recovery;
                recovery.amnesiac |= self.core.is_amnesiac();
                let mut core = (self.rebuild)(recovery, &self.committee, self.me, &self.key);
                std::mem::swap(core.payload_mut(), self.core.payload_mut());
                self.core = core;
                self.paused = false;
                self.process(Input::Start).await;
            }
        }
    }

    /// Asks each of `to` for its certificates (the amnesia guard); verified answers come back
    /// through the certificates queue.
    fn request_certificates(&self, to: Vec<ValidatorIndex>) {
        for peer in to {
            let outbound = self.outbound.clone();
            let tx = self.certificates_tx.clone();
            tokio::spawn(async move {
                match outbound.request(peer, &Request::Certificates).await {
                    Ok(Response::Certificates { high_qc, last_tc }) => {
                        let _ = tx.try_send((peer, CertificateAnswer { high_qc, last_tc }));
                    }
                    Ok(other) => tracing::debug!(%peer, ?other, "certificates request refused"),
                    Err(e) => tracing::debug!(%peer, error = %e, "certificates request failed"),
                }
            });
        }
    }

    async fn on_certificates(&mut self, from: ValidatorIndex, answer: CertificateAnswer) {
        if !self.core.is_amnesiac() || self.paused {
            return;
        }
        match answer.verify_with(&self.committee, self.chain_id, &mut self.certs) {
            Ok(answer) => {
                self.process(Input::PeerCertificates {
                    from,
                    answer: Box::new(answer),
                })
                .await;
                if !self.core.is_amnesiac() {
                    // The raised safety data is persisted (PersistSafety ran in `process`).
                    if let Err(e) = persist::clear_amnesiac(&self.store) {
                        tracing::warn!(error = %e, "cannot clear the amnesia mark");
                    }
                    tracing::info!(
                        round = %self.core.round(),
                        "amnesia guard lifted: a quorum's certificates set the rounds this node may sign in"
                    );
                }
            }
            Err(e) => tracing::debug!(%from, error = %e, "certificates answer failed verification"),
        }
    }

    fn fetch(&self, digest: Digest, from: ValidatorIndex) {
        let outbound = self.outbound.clone();
        let tx = self.fetched_tx.clone();
        tokio::spawn(async move {
            let request = Request::Blocks {
                digests: vec![digest],
            };
            match outbound.request(from, &request).await {
                Ok(Response::Blocks(blocks)) if !blocks.is_empty() => {
                    // Waits for room: answers are few (one per fetch) and each unblocks the core.
                    let _ = tx.send(blocks).await;
                }
                Ok(other) => tracing::debug!(%from, ?other, "block fetch answered without blocks"),
                Err(e) => tracing::debug!(%from, error = %e, "block fetch failed"),
            }
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
