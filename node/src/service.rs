//! Wiring: config → storage → components → tasks → wait for shutdown. Also the state the tasks
//! and the API share, and the API's view of the node.

use crate::{
    config::{Genesis, NodeConfig, read_key},
    driver::{Driver, DriverInput, Payload},
    execute,
    metrics::Metrics,
    net::{NetHandle, NodeHandler, Peers},
    persist,
};
use anyhow::{Context, Result, bail};
use keel_api::{
    NodeApi, SubmitError,
    dto::{BatchRefJson, BlockJson, PeerJson, StatusJson, TxLookup},
};
use keel_authority::{
    BatchConfig, BlockOutcome, Dissemination, DisseminationConfig, DisseminationDeps, Executor,
    ExecutorConfig, GenesisState, Mempool, MempoolConfig, NonceReader, Rejection, state,
};
use keel_consensus::{CommittedBlock, Core, CoreConfig, WeightedRoundRobin};
use keel_p2p::{AllowedPeers, EndpointConfig, Network, NetworkIdentity};
use keel_storage::{Store, StoreConfig};
use keel_types::{
    Account, Address, ChainId, Committee, Digest, Height, KeyPair, Nonce, Object, Receipt, Round,
    SignedTransaction, TimestampMs, ValidatorIndex,
};
use parking_lot::Mutex;
use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> TimestampMs {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    TimestampMs(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Changes the log filter at run time.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The executed state the API reports.
#[derive(Debug, Clone, Default)]
struct ExecutedState {
    height: Height,
    root: Digest,
    transactions: u64,
}

/// Digests admitted here and not yet executed (bounded; the oldest are forgotten first).
#[derive(Default)]
struct Submitted {
    set: HashSet<Digest>,
    order: VecDeque<Digest>,
}

const MAX_SUBMITTED: usize = 1 << 20;

impl Submitted {
    fn insert(&mut self, d: Digest) {
        if self.set.insert(d) {
            self.order.push_back(d);
        }
        while self.order.len() > MAX_SUBMITTED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// What the node's tasks and its API share.
pub struct Shared {
    /// The validated config.
    pub config: NodeConfig,
    /// The chain.
    pub chain_id: ChainId,
    /// This validator.
    pub me: ValidatorIndex,
    /// The committee.
    pub committee: Committee,
    /// The data directory.
    pub store: Arc<Store>,
    /// Admitted transactions waiting for a batch.
    pub mempool: Mutex<Mempool>,
    /// Batches, acknowledgements and proofs.
    pub dissemination: Mutex<Dissemination<NetHandle>>,
    /// The network.
    pub net: NetHandle,
    /// Validator indexes and network keys.
    pub peers: Peers,
    /// Metrics.
    pub metrics: Metrics,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// The async runtime (for blocking threads that must wait on it).
    pub runtime: tokio::runtime::Handle,
    /// Peer batches verified at once.
    pub batch_permits: Arc<Semaphore>,
    /// Peer batches waiting for a verification permit.
    pub batches_waiting: std::sync::atomic::AtomicUsize,
    driver_tx: mpsc::Sender<DriverInput>,
    committed: watch::Sender<Height>,
    round: AtomicU64,
    executed: Mutex<ExecutedState>,
    last_progress: Mutex<Instant>,
    receipts: broadcast::Sender<Arc<Vec<Receipt>>>,
    submitted: Mutex<Submitted>,
    /// State roots of recently executed heights, oldest first.
    roots: Mutex<VecDeque<(Height, Digest)>>,
    log_reload: LogReload,
}

/// Executed heights whose state root is remembered.
const REMEMBERED_ROOTS: usize = 100_000;

struct StoreNonces<'a>(&'a Store);

impl NonceReader for StoreNonces<'_> {
    fn next_nonce(&self, address: &Address) -> Nonce {
        state::account(self.0, address).map_or(Nonce(0), |a| a.nonce)
    }
}

impl Shared {
    /// A consensus message from a peer: queued for the driver, dropped (and counted) if the
    /// queue is full.
    pub fn on_consensus_message(
        &self,
        from: ValidatorIndex,
        message: keel_consensus::ConsensusMessage,
    ) {
        if self
            .driver_tx
            .try_send(DriverInput::Message(from, Box::new(message)))
            .is_err()
        {
            self.metrics.consensus_dropped.inc();
        }
    }

    /// Records the current round.
    pub fn set_round(&self, round: Round) {
        self.round.store(round.0, Ordering::Relaxed);
    }

    /// Blocks committed by consensus (already persisted).
    pub fn on_committed(&self, blocks: &[CommittedBlock]) {
        let now = now_ms();
        let mut digests = Vec::new();
        for b in blocks {
            self.metrics.committed_blocks.inc();
            let latency = now.0.saturating_sub(b.block.block.timestamp.0) as f64 / 1e3;
            self.metrics.commit_latency.observe(latency);
            digests.extend(b.block.block.payload.iter().map(|p| p.info.digest));
        }
        self.dissemination.lock().queue().remove_committed(digests);
        if let Some(last) = blocks.last() {
            self.metrics.committed_height.set(last.height.0 as i64);
            self.committed.send_replace(last.height);
        }
        *self.last_progress.lock() = Instant::now();
    }

    /// Wakes the executor on commits.
    pub fn committed_rx(&self) -> watch::Receiver<Height> {
        self.committed.subscribe()
    }

    /// A block was executed and committed to the store.
    pub fn on_executed(&self, outcome: BlockOutcome, root: Digest, took: Duration) {
        let m = &self.metrics;
        m.executed_height.set(outcome.marker.height.0 as i64);
        m.execution_seconds.observe(took.as_secs_f64());
        m.reexecuted.inc_by(outcome.reexecuted as u64);
        m.receipts.inc_by(outcome.receipts.len() as u64);
        let executed_before = self.executed.lock().transactions;
        m.executed_transactions.inc_by(
            outcome
                .marker
                .executed_transactions
                .saturating_sub(executed_before),
        );
        *self.executed.lock() = ExecutedState {
            height: outcome.marker.height,
            root,
            transactions: outcome.marker.executed_transactions,
        };
        {
            let mut roots = self.roots.lock();
            roots.push_back((outcome.marker.height, root));
            if roots.len() > REMEMBERED_ROOTS {
                roots.pop_front();
            }
        }
        {
            let mut submitted = self.submitted.lock();
            for r in &outcome.receipts {
                submitted.set.remove(&r.transaction);
            }
        }
        // No subscriber is not an error.
        let _ = self.receipts.send(Arc::new(outcome.receipts));
        *self.last_progress.lock() = Instant::now();
    }
}

/// Starts every component and runs until SIGINT, SIGTERM or an admin shutdown.
pub async fn run(config: NodeConfig, log_reload: LogReload) -> Result<()> {
    let genesis = Genesis::load(&config.genesis)?;
    let committee = genesis.committee()?;
    let chain_id = genesis.chain_id();
    let protocol_key = read_key(&config.protocol_key)?;
    let network_key = read_key(&config.network_key)?;
    let me = committee
        .index_of(&protocol_key.public())
        .with_context(|| {
            format!(
                "config field `protocol_key`: key {} is not in the genesis committee",
                protocol_key.public()
            )
        })?;
    let member = committee.member(me)?;
    if member.network_key != network_key.public() {
        bail!(
            "config field `network_key`: key {} is not validator {me}'s network key in genesis",
            network_key.public()
        );
    }
    let token = std::fs::read_to_string(&config.admin_token_file)
        .with_context(|| {
            format!(
                "config field `admin_token_file`: cannot read {}",
                config.admin_token_file.display()
            )
        })?
        .trim()
        .to_string();
    if token.len() < 16 {
        bail!("config field `admin_token_file`: the token must be at least 16 characters");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = Arc::new(Store::open(&config.data_dir, &StoreConfig::default())?);
    let executor = Executor::open(
        store.clone(),
        ExecutorConfig {
            workers: config.execution.workers,
            cache_entries: config.execution.cache_entries,
        },
        &GenesisState {
            digest: genesis.digest(),
            accounts: genesis.funded()?,
        },
    )?;
    let recovery = persist::recover(&store, &committee, chain_id)?;
    let committed_height = recovery.root.height;
    tracing::info!(
        validator = %me,
        chain = %chain_id,
        committed = %committed_height,
        executed = %executor.marker().height,
        "starting"
    );

    let net = NetHandle::default();
    let mut mempool_config = MempoolConfig::new(chain_id);
    mempool_config.max_pending = config.mempool.max_pending;
    mempool_config.max_pending_per_sender = config.mempool.max_pending_per_sender;
    mempool_config.nonce_window = config.mempool.nonce_window;
    mempool_config.max_lifetime_ms = config.mempool.max_lifetime_ms;
    let dissemination = Dissemination::new(DisseminationDeps {
        config: DisseminationConfig {
            batch: BatchConfig {
                max_transactions: config.batching.max_transactions,
                max_bytes: config.batching.max_bytes,
                seal_after_ms: config.batching.seal_after_ms,
            },
            ..DisseminationConfig::new(chain_id)
        },
        committee: committee.clone(),
        me,
        key: KeyPair::from_seed(&protocol_key.seed()),
        store: store.clone(),
        network: net.clone(),
    });
    let (driver_tx, driver_rx) = mpsc::channel(10_000);
    let executed = executor.marker().clone();
    let shared = Arc::new(Shared {
        chain_id,
        me,
        committee: committee.clone(),
        store: store.clone(),
        mempool: Mutex::new(Mempool::new(mempool_config)),
        dissemination: Mutex::new(dissemination),
        net: net.clone(),
        peers: Peers::new(&committee),
        metrics: Metrics::new(),
        shutdown: CancellationToken::new(),
        runtime: tokio::runtime::Handle::current(),
        batch_permits: Arc::new(Semaphore::new(crate::net::BATCH_VERIFIERS)),
        batches_waiting: std::sync::atomic::AtomicUsize::new(0),
        driver_tx: driver_tx.clone(),
        committed: watch::channel(committed_height).0,
        round: AtomicU64::new(0),
        executed: Mutex::new(ExecutedState {
            height: executed.height,
            root: store.state_root()?,
            transactions: executed.executed_transactions,
        }),
        last_progress: Mutex::new(Instant::now()),
        receipts: broadcast::channel(1024).0,
        submitted: Mutex::new(Submitted::default()),
        roots: Mutex::new(VecDeque::new()),
        log_reload,
        config,
    });

    // P2P.
    let identity = NetworkIdentity::from_seed(&network_key.seed())?;
    let allowed = AllowedPeers::new(committee.validators().iter().map(|v| v.network_key));
    let handler = Arc::new(NodeHandler {
        shared: Arc::downgrade(&shared),
    });
    let endpoint = Network::start(
        EndpointConfig {
            listen: shared.config.p2p_listen,
            ..EndpointConfig::default()
        },
        &identity,
        allowed,
        handler,
    )
    .with_context(|| {
        format!(
            "config field `p2p_listen`: cannot start QUIC on {}",
            shared.config.p2p_listen
        )
    })?;
    for (i, v) in committee.validators().iter().enumerate() {
        if i != me.as_usize() {
            let address = v
                .address
                .parse()
                .with_context(|| format!("genesis validators[{i}].address"))?;
            endpoint.add_peer(v.network_key, address);
        }
    }
    net.set(
        endpoint.clone(),
        shared.peers.clone(),
        tokio::runtime::Handle::current(),
    );

    // Consensus.
    let mut core_config = CoreConfig::new(chain_id, me);
    core_config.pacemaker.base_timeout_ms = shared.config.consensus.round_timeout_ms;
    core_config.min_block_interval_ms = shared.config.consensus.min_block_interval_ms;
    let core = Core::new(
        core_config,
        committee.clone(),
        KeyPair::from_seed(&protocol_key.seed()),
        WeightedRoundRobin::new(&committee),
        (Payload(shared.clone()), Payload(shared.clone())),
        recovery,
    );
    let driver = Driver::new(core, shared.clone(), driver_rx, driver_tx);
    let driver_task = tokio::spawn(driver.run(shared.shutdown.clone()));
    let batching_task = tokio::spawn(batching_loop(shared.clone()));
    let gauges_task = tokio::spawn(gauges_loop(shared.clone(), endpoint.clone()));
    let exec_shared = shared.clone();
    let executor_thread = std::thread::Builder::new()
        .name("keel-execution".into())
        .spawn(move || execute::run(executor, exec_shared))
        .context("cannot start the execution thread")?;

    // APIs.
    let api: Arc<dyn NodeApi> = Arc::new(NodeView {
        shared: shared.clone(),
        endpoint: endpoint.clone(),
    });
    let public = tokio::net::TcpListener::bind(shared.config.api_listen)
        .await
        .with_context(|| {
            format!(
                "config field `api_listen`: cannot bind {}",
                shared.config.api_listen
            )
        })?;
    let admin = tokio::net::TcpListener::bind(shared.config.admin_listen)
        .await
        .with_context(|| {
            format!(
                "config field `admin_listen`: cannot bind {}",
                shared.config.admin_listen
            )
        })?;
    tracing::info!(api = %public.local_addr()?, admin = %admin.local_addr()?, p2p = %endpoint.local_addr()?, "listening");
    let cancel = shared.shutdown.clone();
    let public_task = tokio::spawn(
        axum::serve(public, keel_api::public_router(api.clone()))
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .into_future(),
    );
    let cancel = shared.shutdown.clone();
    let admin_task = tokio::spawn(
        axum::serve(admin, keel_api::admin_router(api, &token))
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .into_future(),
    );

    wait_for_signal(&shared.shutdown).await;
    tracing::info!("shutting down");
    shared.shutdown.cancel();
    let grace = Duration::from_secs(10);
    for (name, task) in [
        ("consensus", driver_task),
        ("batching", batching_task),
        ("gauges", gauges_task),
    ] {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!(task = name, "did not stop in time");
        }
    }
    for task in [public_task, admin_task] {
        let _ = tokio::time::timeout(grace, task).await;
    }
    endpoint.shutdown().await;
    let joined = tokio::task::spawn_blocking(move || executor_thread.join());
    if tokio::time::timeout(grace, joined).await.is_err() {
        tracing::warn!("execution thread did not stop in time");
    }
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal(shutdown: &CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            shutdown.cancelled().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = shutdown.cancelled() => {}
    }
}

/// Moves admitted transactions into batches and seals batches whose timer ran out.
async fn batching_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let txs = shared.mempool.lock().take(10_000);
        let now = now_ms();
        let mut d = shared.dissemination.lock();
        if let Err(e) = d.on_transactions(txs, now).and_then(|_| d.tick(now)) {
            tracing::error!(error = %e, "cannot store a batch");
        }
        for size in d.drain_sealed_sizes() {
            shared.metrics.batches_sealed.inc();
            shared.metrics.batch_size.observe(size as f64);
        }
        shared.metrics.queued_proofs.set(d.queue().len() as i64);
    }
}

/// Refreshes gauges that are read from elsewhere.
async fn gauges_loop(shared: Arc<Shared>, endpoint: Network<keel_consensus::ConsensusMessage>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let m = &shared.metrics;
        m.peers.set(endpoint.connected_peers().len() as i64);
        let c = endpoint.counters();
        m.bytes_out.set(c.bytes_sent.load(Ordering::Relaxed) as i64);
        m.bytes_in
            .set(c.bytes_received.load(Ordering::Relaxed) as i64);
        m.mempool_size.set(shared.mempool.lock().len() as i64);
    }
}

/// The API's view of the node.
struct NodeView {
    shared: Arc<Shared>,
    endpoint: Network<keel_consensus::ConsensusMessage>,
}

impl NodeApi for NodeView {
    fn submit(&self, txs: Vec<SignedTransaction>) -> Vec<Result<Digest, SubmitError>> {
        let s = &self.shared;
        let results = s
            .mempool
            .lock()
            .admit(txs, now_ms(), &StoreNonces(&s.store));
        let mut submitted = s.submitted.lock();
        results
            .into_iter()
            .map(|r| match r {
                Ok(d) | Err(Rejection::Duplicate(d)) => {
                    s.metrics.admitted.inc();
                    submitted.insert(d);
                    Ok(d)
                }
                Err(Rejection::Overloaded(m)) => {
                    s.metrics.rejected.inc();
                    Err(SubmitError::Overloaded(m))
                }
                Err(e) => {
                    s.metrics.rejected.inc();
                    Err(SubmitError::Invalid(e.to_string()))
                }
            })
            .collect()
    }

    fn transaction(&self, digest: &Digest) -> Result<TxLookup, String> {
        if let Some(r) = state::receipt(&self.shared.store, digest).map_err(|e| e.to_string())? {
            return Ok(TxLookup::Executed(r));
        }
        if self.shared.submitted.lock().set.contains(digest) {
            return Ok(TxLookup::Pending);
        }
        Ok(TxLookup::Unknown)
    }

    fn account(&self, address: &Address) -> Result<Account, String> {
        state::account(&self.shared.store, address).map_err(|e| e.to_string())
    }

    fn object(&self, owner: &Address, key: &[u8]) -> Result<Option<Object>, String> {
        state::object(&self.shared.store, owner, key).map_err(|e| e.to_string())
    }

    fn block(&self, height: Option<Height>) -> Result<Option<BlockJson>, String> {
        let height = match height {
            Some(h) => h,
            None => *self.shared.committed.borrow(),
        };
        if height.0 == 0 {
            return Ok(None);
        }
        let Some(record) =
            persist::committed_at(&self.shared.store, height).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let b = &record.block.block;
        Ok(Some(BlockJson {
            height: height.0,
            digest: record.block.digest().to_string(),
            epoch: b.epoch.0,
            round: b.round.0,
            author: b.author.0,
            timestamp_ms: b.timestamp.0,
            parent: b.parent_qc.block().to_string(),
            batches: b
                .payload
                .iter()
                .map(|p| BatchRefJson {
                    digest: p.info.digest.to_string(),
                    author: p.info.author.0,
                    transactions: p.info.num_transactions,
                })
                .collect(),
            executed: height <= self.shared.executed.lock().height,
            state_root: {
                let roots = self.shared.roots.lock();
                let i = roots.partition_point(|(h, _)| *h < height);
                roots
                    .get(i)
                    .filter(|(h, _)| *h == height)
                    .map(|(_, r)| r.to_string())
            },
        }))
    }

    fn status(&self) -> Result<StatusJson, String> {
        let s = &self.shared;
        let executed = s.executed.lock().clone();
        Ok(StatusJson {
            chain_id: s.chain_id.0,
            validator: s.me.0,
            epoch: s.committee.epoch().0,
            round: s.round.load(Ordering::Relaxed),
            committed_height: s.committed.borrow().0,
            executed_height: executed.height.0,
            state_root: executed.root.to_string(),
            executed_transactions: executed.transactions,
            peers: self.endpoint.connected_peers().len(),
            mempool_size: s.mempool.lock().len(),
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Receipt>>> {
        self.shared.receipts.subscribe()
    }

    fn metrics(&self) -> String {
        self.shared.metrics.render()
    }

    fn readiness(&self) -> Result<(), String> {
        let s = &self.shared;
        let connected = self.endpoint.connected_peers().len();
        let others_needed = (2 * (s.committee.size().saturating_sub(1) / 3)).max(1);
        if s.committee.size() > 1 && connected < others_needed {
            return Err(format!(
                "connected to {connected} peers; {others_needed} needed for a quorum"
            ));
        }
        let idle = s.last_progress.lock().elapsed();
        if idle > Duration::from_secs(30) {
            return Err(format!("no commit or execution for {} s", idle.as_secs()));
        }
        Ok(())
    }

    fn peers(&self) -> Vec<PeerJson> {
        let connected: HashSet<_> = self.endpoint.connected_peers().into_iter().collect();
        self.shared
            .committee
            .validators()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.shared.me.as_usize())
            .map(|(i, v)| PeerJson {
                validator: i as u32,
                network_key: v.network_key.to_string(),
                address: v.address.clone(),
                connected: connected.contains(&v.network_key),
            })
            .collect()
    }

    fn set_log_level(&self, filter: &str) -> Result<(), String> {
        (self.shared.log_reload)(filter)
    }

    fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}
