//! The consensus driver: owns the core, feeds it verified inputs and carries out its actions.
//! It decides nothing: safety data is written with a synced write before the messages that
//! depend on it are sent; own messages loop back without verification; fetches run as tasks
//! whose verified answers come back through the same queue.

use crate::{persist, service::Shared, service::now_ms};
use keel_consensus::{
    Action, CertificateCache, ConsensusMessage, Core, Input, PayloadSource, PayloadValidator,
    Verified, WeightedRoundRobin, verify_block,
};
use keel_p2p::{Notification, Request, Response};
use keel_types::{Block, Digest, ProofOfAvailability, Round, SignedBlock, ValidatorIndex};
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

/// What reaches the driver from outside.
#[derive(Debug)]
pub enum DriverInput {
    /// A consensus message from a peer (unverified).
    Message(ValidatorIndex, Box<ConsensusMessage>),
    /// Blocks a peer sent in answer to a fetch (unverified).
    Fetched(Vec<SignedBlock>),
}

/// Consensus payload: proofs from the dissemination queue; votes only for verified proofs.
#[derive(Clone)]
pub struct Payload(pub Arc<Shared>);

impl PayloadSource for Payload {
    fn pull(&mut self, _round: Round, _parent: Digest) -> Vec<ProofOfAvailability> {
        let max = self.0.config.consensus.max_block_proofs;
        self.0.dissemination.lock().pull(max, now_ms())
    }
}

impl PayloadValidator for Payload {
    fn validate(&self, block: &Block) -> bool {
        self.0.dissemination.lock().validate_payload(&block.payload)
    }
}

/// The consensus core type the node runs.
pub type NodeCore = Core<WeightedRoundRobin, Payload, Payload>;

/// Owns the core.
pub struct Driver {
    core: NodeCore,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<DriverInput>,
    fetch_tx: mpsc::Sender<DriverInput>,
    certs: CertificateCache,
    timer: Option<(Round, Instant)>,
    propose_timer: Option<(Round, Instant)>,
}

impl Driver {
    /// A driver for `core`; `fetch_tx` feeds fetched blocks back into `rx`.
    pub fn new(
        core: NodeCore,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<DriverInput>,
        fetch_tx: mpsc::Sender<DriverInput>,
    ) -> Self {
        Driver {
            core,
            shared,
            rx,
            fetch_tx,
            certs: CertificateCache::new(1024),
            timer: None,
            propose_timer: None,
        }
    }

    /// Runs until `cancel` fires.
    #[tracing::instrument(skip_all, name = "consensus")]
    pub async fn run(mut self, cancel: CancellationToken) {
        self.process(Input::Start).await;
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
                input = self.rx.recv() => match input {
                    Some(input) => self.on_input(input).await,
                    None => break,
                },
            }
        }
    }

    async fn on_input(&mut self, input: DriverInput) {
        let committee = self.core.committee().clone();
        let chain_id = self.shared.chain_id;
        match input {
            DriverInput::Message(from, message) => {
                match (*message).verify_with(&committee, chain_id, &mut self.certs) {
                    Ok(verified) => {
                        if let ConsensusMessage::Proposal(b) = verified.inner() {
                            let digests = b.block.payload.iter().map(|p| p.info.digest);
                            self.shared
                                .dissemination
                                .lock()
                                .queue()
                                .mark_proposed(digests, now_ms());
                        }
                        self.process(Input::Message(Box::new(verified))).await;
                    }
                    Err(e) => {
                        self.shared.metrics.consensus_dropped.inc();
                        tracing::warn!(%from, error = %e, "consensus message failed verification");
                    }
                }
            }
            DriverInput::Fetched(blocks) => {
                let verified: Vec<Verified<SignedBlock>> = blocks
                    .into_iter()
                    .filter_map(|b| verify_block(b, &committee, chain_id, &mut self.certs).ok())
                    .collect();
                if !verified.is_empty() {
                    self.process(Input::BlocksFetched(verified)).await;
                }
            }
        }
    }

    async fn process(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let actions = self.core.handle(now_ms(), input);
            self.apply(actions, &mut inputs).await;
        }
        let stats = self.core.stats();
        let m = &self.shared.metrics;
        m.round.set(self.core.round().0 as i64);
        m.timeouts
            .inc_by(stats.timeouts.saturating_sub(m.timeouts.get()));
        m.proposals
            .inc_by(stats.proposals.saturating_sub(m.proposals.get()));
        self.shared.set_round(self.core.round());
    }

    async fn apply(&mut self, actions: Vec<Action>, inputs: &mut VecDeque<Input>) {
        let mut work: VecDeque<Action> = actions.into();
        while let Some(action) = work.pop_front() {
            match action {
                Action::Send { to, message } => {
                    if to == self.shared.me {
                        inputs.push_back(Input::Message(Box::new(Verified::own(message))));
                    } else {
                        self.shared.net.send_consensus(to, message);
                    }
                }
                Action::Broadcast(message) => {
                    self.shared
                        .net
                        .broadcast(&Notification::Consensus(message.clone()));
                    inputs.push_back(Input::Message(Box::new(Verified::own(message))));
                }
                Action::PersistSafety { data, then } => {
                    let shared = self.shared.clone();
                    let saved = tokio::task::spawn_blocking(move || {
                        persist::save_safety(&shared.store, &data)
                    })
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
                            self.shared.shutdown.cancel();
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "safety write task failed; shutting down");
                            self.shared.shutdown.cancel();
                            return;
                        }
                    }
                }
                Action::PersistBlock(block) => {
                    if let Err(e) = persist::save_block(&self.shared.store, &block) {
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
                Action::Commit(blocks) => {
                    if let Err(e) = persist::save_commit(&self.shared.store, &blocks) {
                        tracing::error!(error = %e, "cannot persist a commit; shutting down");
                        self.shared.shutdown.cancel();
                        return;
                    }
                    self.shared.on_committed(&blocks);
                }
                Action::FetchBlock { digest, from } => self.fetch(digest, from),
            }
        }
    }

    fn fetch(&self, digest: Digest, from: ValidatorIndex) {
        let net = self.shared.net.clone();
        let tx = self.fetch_tx.clone();
        tokio::spawn(async move {
            let request = Request::Blocks {
                digests: vec![digest],
            };
            match net.request(from, &request).await {
                Ok(Response::Blocks(blocks)) if !blocks.is_empty() => {
                    let _ = tx.send(DriverInput::Fetched(blocks)).await;
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
