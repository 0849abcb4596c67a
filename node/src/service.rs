//! Wiring: config → storage → channels → network → tasks → wait for shutdown. Every decision
//! lives in the tasks; this file only builds them from their deps and waits. The task and
//! channel map is drawn at the top of `main.rs`.

use crate::{
    api_view::{LogReload, NodeView},
    batch_gc::{self, BatchGcDeps},
    batching::{self, BatchingDeps},
    bootstrap::{self, BootstrapDeps},
    checkpoint::{self, CheckpointTaskDeps},
    config::NodeConfig,
    driver::{Driver, DriverDeps},
    epoch::{self, EpochNetworkDeps, EpochView},
    execute::{self, ExecuteDeps},
    gauges,
    genesis::Genesis,
    keys::KeyRing,
    metrics::Metrics,
    payload::ProofPayload,
    peers::{Outbound, Peers},
    pending::PendingTxs,
    persist,
    prune::{self, PruneDeps},
    router::Router,
    snapshots::Snapshots,
    status::NodeStatus,
    sync::{self, SyncDeps},
    verify::{self, BatchVerifyDeps, ProofVerifyDeps},
};
use anyhow::{Context, Result};
use keel_api::NodeApi;
use keel_authority::{
    BatchLedger, BatchVerifier, CheckpointMachine, Dissemination, DisseminationDeps, Executed,
    Executor, GenesisState, Mempool, ProofQueue, checkpoint_store,
};
use keel_consensus::{Core, CoreDeps, RecoveryData};
use keel_p2p::{AllowedPeers, EndpointConfig, Network, NetworkIdentity};
use keel_storage::Store;
use keel_types::{Checkpoint, KeyPair};
use parking_lot::Mutex;
use std::{sync::Arc, time::Duration};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Starts every component and runs until SIGINT, SIGTERM or an admin shutdown.
pub async fn run(
    config: NodeConfig,
    log_reload: LogReload,
    restored_from_backup: bool,
) -> Result<()> {
    let term = listen_for_sigterm()?;
    let genesis = Genesis::load(&config.genesis)?;
    let chain_id = genesis.chain_id();
    // The config's keys and, during a rotation, the staged ones (each epoch uses the pair
    // its committee names).
    let keys = Arc::new(KeyRing::load(&config.protocol_key, &config.network_key)?);
    let token = crate::token::read_token(&config)?;
    let limits = config.limits.clone();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = Arc::new(Store::open(&config.data_dir, &config.storage)?);
    // The epoch the executed state is in (genesis for a new store). Outside the committee
    // the node follows the chain without voting (a joining validator syncs until the epoch
    // that includes it starts; a removed one keeps serving sync).
    let view = epoch_view(&store, &genesis, &keys)?;
    let committee = view.committee().clone();
    let me = view.me;
    // The epoch's keys (a rotation's staged pair once its epoch has started).
    let epoch_keys = view.keys.clone();
    let (epoch_tx, epoch_rx) = watch::channel(Arc::new(view));
    let genesis_state = GenesisState {
        digest: genesis.digest(),
        accounts: genesis.funded()?,
        epoch: Some(genesis.epoch_state()?),
        fees: genesis.fees,
    };
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let peers = Peers::new(&committee);
    let snapshots = Snapshots::spawn(store.clone(), limits.state_snapshots)
        .context("cannot start the state snapshot thread")?;
    let snapshot_thread = snapshots.clone();
    let (receipts, _) = broadcast::channel(limits.receipt_stream_buffer);
    let mempool = Arc::new(Mutex::new(Mempool::new(
        config.mempool.clone(),
        chain_id,
        genesis.fees,
    )));
    let pending = Arc::new(PendingTxs::new(limits.tracked_pending));
    let (consensus_tx, consensus_rx) = mpsc::channel(limits.consensus_queue);
    let (proof_tx, proof_rx) = mpsc::channel(limits.proof_queue);
    let fetched = mpsc::channel(limits.fetched_queue);
    let (ack_tx, ack_rx) = mpsc::channel(limits.ack_queue);
    let (peer_batch_tx, peer_batch_rx) = mpsc::channel(limits.batch_verify_queue);
    let pending_batches = Arc::new(verify::PendingBatches::new(
        limits.batch_verify_queue,
        committee.size(),
    ));
    let (peer_proof_tx, peer_proof_rx) = mpsc::channel(limits.proof_verify_queue);
    let (sync_tx, sync_rx) = mpsc::channel(limits.sync_control_queue);
    let (executed_tx, executed_rx) = mpsc::channel(limits.checkpoint_queue);
    let (checkpoint_sig_tx, checkpoint_sig_rx) = mpsc::channel(limits.checkpoint_signature_queue);

    let lie_in_sync = crate::faults::lie_in_sync();
    if lie_in_sync {
        tracing::warn!("test fault on: this node answers sync requests with corrupted data");
    }
    // P2P: the router only forwards into the channels above.
    let identity = NetworkIdentity::from_seed(&epoch_keys.network.seed())?;
    let allowed = AllowedPeers::new(committee.validators().iter().map(|v| v.network_key));
    let router = Arc::new(Router {
        peers: peers.clone(),
        consensus: consensus_tx,
        batches: peer_batch_tx,
        pending_batches: pending_batches.clone(),
        acks: ack_tx,
        proofs: peer_proof_tx,
        checkpoint_signatures: checkpoint_sig_tx,
        store: store.clone(),
        served_ancestors: limits.served_ancestors,
        metrics: metrics.clone(),
        genesis_qc: keel_types::QuorumCertificate::genesis(committee.epoch(), chain_id),
        snapshots: snapshots.clone(),
        chunk_bytes: config.state_sync.chunk_bytes,
        lie_in_sync,
    });
    let endpoint = Network::start(
        EndpointConfig {
            listen: config.p2p_listen,
            ..config.p2p.clone()
        },
        &identity,
        allowed,
        router,
    )
    .with_context(|| {
        format!(
            "config field `p2p_listen`: cannot start QUIC on {}",
            config.p2p_listen
        )
    })?;
    for (i, v) in committee.validators().iter().enumerate() {
        if v.network_key != identity.public() {
            let address: keel_p2p::PeerAddress = v
                .address
                .parse()
                .map_err(|e| anyhow::anyhow!("genesis validators[{i}].address: {e}"))?;
            endpoint.add_peer(v.network_key, address);
        }
    }
    let outbound = Outbound::new(
        endpoint.clone(),
        peers.clone(),
        tokio::runtime::Handle::current(),
    );

    // What the store holds now (start-up state sync may move it on).
    let stored = keel_authority::state::executed_marker(&store)?;
    let (status, status_rx) = watch::channel(NodeStatus::new(
        persist::commit_root(&store)?
            .map(|r| r.height)
            .unwrap_or_default(),
        stored.as_ref().map(|m| m.height).unwrap_or_default(),
        store.state_root()?,
        stored.map(|m| m.executed_transactions).unwrap_or_default(),
        limits.remembered_roots,
    ));
    // APIs: up before start-up state sync, so its progress shows (`/readyz` says not ready).
    let api: Arc<dyn NodeApi> = Arc::new(NodeView {
        chain_id,
        epoch: epoch_rx.clone(),
        keys: keys.clone(),
        store: store.clone(),
        mempool: mempool.clone(),
        pending: pending.clone(),
        status: status_rx,
        receipts: receipts.clone(),
        subscribers: Arc::default(),
        max_subscribers: limits.stream_subscribers,
        net: endpoint.clone(),
        metrics: metrics.clone(),
        stall_after: Duration::from_secs(limits.stall_after_secs),
        admission_max_wait: limits.admission_max_wait(),
        pending_horizon: limits.pending_horizon(),
        all_verify: config.dissemination.all_verify,
        log_reload,
        shutdown: shutdown.clone(),
    });
    let public = bind(config.api_listen, "api_listen").await?;
    if config.admin_allow_remote && !config.admin_listen.ip().is_loopback() {
        tracing::warn!(admin = %config.admin_listen, "the admin API listens beyond loopback (admin_allow_remote): keep that network closed to others");
    }
    let admin = bind(config.admin_listen, "admin_listen").await?;
    tracing::info!(api = %public.local_addr()?, admin = %admin.local_addr()?, p2p = %endpoint.local_addr()?, "listening");
    let public_api = serve(public, keel_api::public_router(api.clone()), &shutdown);
    let admin_api = serve(admin, keel_api::admin_router(api, &token), &shutdown);

    // A node far behind (or wiped) installs a certified checkpoint's state before it starts.
    bootstrap::run(&BootstrapDeps {
        config: config.state_sync,
        committee: committee.clone(),
        chain_id,
        me,
        genesis: genesis_state.digest,
        store: store.clone(),
        outbound: outbound.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
    })
    .await
    .context("start-up state sync")?;
    // The installed state may be of a later epoch: the node starts in that one.
    let view = epoch_view(&store, &genesis, &keys)?;
    if view.epoch() != committee.epoch() {
        tracing::info!(from = %committee.epoch(), to = %view.epoch(), "state sync moved the node to a later epoch");
        peers.set_committee(view.committee());
    }
    let epoch_state = view.state.clone();
    let committee = view.committee().clone();
    let me = view.me;
    if me.is_none() {
        tracing::info!(
            protocol_key = %keys.current().protocol.public(),
            epoch = %committee.epoch(),
            "not in the committee: following the chain without voting until an epoch includes this key"
        );
    }
    // An inert index for the parts built before the epoch includes this node (its core gets
    // no input and signs nothing while it is not a member).
    let index = me.unwrap_or_default();
    let epoch_keys = view.keys.clone();
    if let Err(e) = keys.adopt(&epoch_keys) {
        tracing::error!(error = %format!("{e:#}"), "cannot promote the rotated key files");
    }
    if epoch_keys.network.public() != endpoint.identity() {
        endpoint.set_identity(&NetworkIdentity::from_seed(&epoch_keys.network.seed())?)?;
    }
    epoch_tx.send_replace(Arc::new(view));
    let executor = Executor::open(store.clone(), config.execution.clone(), &genesis_state)?;
    if restored_from_backup {
        tracing::warn!(
            "restored from a backup: signing nothing until peers' certificates show a safe round"
        );
        persist::mark_amnesiac(&store)?;
    }
    // A crash between executing an epoch's last block and moving consensus to the next
    // epoch: move it now.
    if persist::consensus_epoch(&store, genesis.committee()?.epoch())? < committee.epoch() {
        persist::start_epoch(&store, &committee, chain_id, epoch_state.started_after)?;
    }
    let recovery = persist::recover(&store, &committee, chain_id)?;
    let executed = executor.marker().clone();
    let root = store.state_root()?;
    tracing::info!(
        validator = ?me,
        chain = %chain_id,
        committed = %recovery.root.height,
        executed = %executed.height,
        "starting"
    );

    status.send_modify(|s| {
        s.committed = recovery.root.height;
        s.executed = executed.height;
        s.executed_transactions = executed.executed_transactions;
        s.root = root;
    });
    let (committed_tx, committed_rx) = watch::channel(recovery.root.height);
    let ledger = {
        let mut ledger = BatchLedger::new(&config.dissemination);
        let restored = batch_gc::restore(&store, &mut ledger)?;
        tracing::info!(restored, "stored, unordered batches");
        Arc::new(Mutex::new(ledger))
    };

    // Tasks.
    let new_core = {
        let (consensus, dissemination, store) = (
            config.consensus.clone(),
            config.dissemination.clone(),
            store.clone(),
        );
        move |recovery: RecoveryData, committee: &keel_types::Committee, me, key: &KeyPair| {
            let leader = persist::election(&store, &consensus.election, committee, &recovery.root);
            Core::new(CoreDeps {
                config: consensus.clone(),
                chain_id,
                me,
                committee: committee.clone(),
                key: KeyPair::from_seed(&key.seed()),
                leader,
                payload: ProofPayload::new(
                    ProofQueue::from_config(&dissemination, committee.size()),
                    committee.clone(),
                    chain_id,
                ),
                recovery,
            })
        }
    };
    let core = new_core(recovery, &committee, index, &epoch_keys.protocol);
    let driver = Driver::spawn(DriverDeps {
        core,
        chain_id,
        me: index,
        store: store.clone(),
        outbound: outbound.clone(),
        status: status.clone(),
        committed: committed_tx,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        messages: consensus_rx,
        proofs: proof_rx,
        fetched,
        certificate_cache: limits.certificate_cache,
        proof_expiry_interval: Duration::from_millis(limits.proof_expiry_interval_ms),
        sync: sync_rx,
        rebuild: Box::new(new_core),
        certificates: mpsc::channel(committee.size()),
        epoch: epoch_rx.clone(),
        max_held_messages: limits.future_epoch_messages,
    });
    let sync = sync::spawn(SyncDeps {
        config: config.sync,
        epoch: epoch_rx.clone(),
        chain_id,
        store: store.clone(),
        outbound: outbound.clone(),
        driver: sync_tx,
        status: status.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let batching = batching::spawn(BatchingDeps {
        dissemination: {
            let (config, batch, store) = (
                config.dissemination.clone(),
                config.batching.clone(),
                store.clone(),
            );
            Box::new(move |committee: &keel_types::Committee, me, key| {
                Dissemination::new(DisseminationDeps {
                    config: config.clone(),
                    batch: batch.clone(),
                    chain_id,
                    committee: committee.clone(),
                    me,
                    key,
                    first_sequence: batching::reserved_sequence(&store, committee.epoch()),
                })
            })
        },
        epoch: epoch_rx.clone(),
        mempool: mempool.clone(),
        store: store.clone(),
        ledger: ledger.clone(),
        outbound: outbound.clone(),
        acks: ack_rx,
        proofs: proof_tx.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        tick: Duration::from_millis(limits.batching_tick_ms),
        take: limits.batching_take,
        pending: pending.clone(),
        pending_horizon: limits.pending_horizon(),
    });
    let all_verify = config.dissemination.all_verify;
    let batch_verifier = verify::spawn_batches(BatchVerifyDeps {
        verifier: Box::new(move |committee: &keel_types::Committee, me, key| {
            BatchVerifier::new(committee.clone(), chain_id, me, key).with_all_verify(all_verify)
        }),
        epoch: epoch_rx.clone(),
        store: store.clone(),
        ledger: ledger.clone(),
        outbound: outbound.clone(),
        batches: peer_batch_rx,
        pending: pending_batches,
        recent: Arc::new(verify::RecentAcks::new(limits.recent_acks)),
        parallel: limits.batch_verifiers,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let proof_verifier = verify::spawn_proofs(ProofVerifyDeps {
        epoch: epoch_rx.clone(),
        chain_id,
        proofs: peer_proof_rx,
        driver: proof_tx,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let batch_gc = batch_gc::spawn(BatchGcDeps {
        ledger,
        mempool: mempool.clone(),
        store: store.clone(),
        committed: committed_rx.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let gauges = tokio::spawn(gauges::run(
        metrics.clone(),
        endpoint.clone(),
        mempool.clone(),
        store.clone(),
        shutdown.clone(),
        Duration::from_millis(limits.gauges_interval_ms),
    ));
    // The pruner keeps every height above the latest certified checkpoint.
    let (checkpoint_floor_tx, checkpoint_floor) = watch::channel(
        keel_authority::checkpoint_store::latest_certified(&store)?
            .map(|c| c.checkpoint.last_height),
    );
    let pruner = prune::spawn(PruneDeps {
        store: store.clone(),
        config: config.pruning.clone(),
        status: status.clone(),
        checkpoint_floor,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let checkpoints = checkpoint::spawn(CheckpointTaskDeps {
        machine: CheckpointMachine::new(keel_authority::CheckpointDeps {
            config: config.checkpoints.clone(),
            chain_id,
            committee: committee.clone(),
            me,
            key: epoch_keys.protocol.clone(),
            genesis: Checkpoint::genesis(
                genesis.committee()?.epoch(),
                genesis_state.digest,
                genesis_state.state_root(),
            ),
            restored: checkpoint_store::restore(&store)?,
        }),
        start: Executed {
            height: executed.height,
            block: executed.block,
            state_root: store.state_root()?,
            executed_transactions: executed.executed_transactions,
            epoch_end: None,
        },
        store: store.clone(),
        outbound: outbound.clone(),
        executed: executed_rx,
        signatures: checkpoint_sig_rx,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        rebroadcast: Duration::from_millis(limits.checkpoint_rebroadcast_ms),
        certified: checkpoint_floor_tx,
        keys: keys.clone(),
    });
    let execution = execute::spawn(ExecuteDeps {
        executor,
        outbound,
        committed: committed_rx,
        status: status.clone(),
        receipts: receipts.clone(),
        pending: pending.clone(),
        checkpoints: executed_tx,
        snapshots,
        checkpoint_interval: config.checkpoints.interval,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        runtime: tokio::runtime::Handle::current(),
        retry: Duration::from_millis(limits.execution_retry_ms),
        epoch: epoch_tx,
        keys: keys.clone(),
    })
    .context("cannot start the execution thread")?;
    let epoch_network = epoch::spawn_network(EpochNetworkDeps {
        epoch: epoch_rx.clone(),
        net: endpoint.clone(),
        peers: peers.clone(),
        switch_grace: Duration::from_millis(limits.epoch_switch_grace_ms),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    metrics.epoch.set(committee.epoch().0 as i64);
    metrics.committee_size.set(committee.size() as i64);

    status.send_modify(|s| s.started = true);
    wait_for_signal(&shutdown, term).await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let grace = Duration::from_secs(limits.shutdown_grace_secs);
    for (name, task) in [
        ("consensus", driver),
        ("sync", sync),
        ("batching", batching),
        ("batch verifier", batch_verifier),
        ("proof verifier", proof_verifier),
        ("batch ledger", batch_gc),
        ("gauges", gauges),
        ("pruner", pruner),
        ("checkpoints", checkpoints),
        ("epoch network", epoch_network),
        ("public api", public_api),
        ("admin api", admin_api),
    ] {
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!(task = name, "did not stop in time");
        }
    }
    endpoint.shutdown().await;
    let joined = tokio::task::spawn_blocking(move || execution.join());
    if tokio::time::timeout(grace, joined).await.is_err() {
        tracing::warn!("execution thread did not stop in time");
    }
    // The snapshot thread holds the store: end it, so the store closes before the process
    // exits (RocksDB aborts an exit that its background threads outlive).
    let stopped = tokio::task::spawn_blocking(move || snapshot_thread.stop());
    if tokio::time::timeout(grace, stopped).await.is_err() {
        tracing::warn!("snapshot thread did not stop in time");
    }
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// The epoch the executed state is in (genesis for a new store), for the node holding
/// `keys`. A node whose protocol key is a member's but whose network key is not that
/// member's follows without voting, with a warning: its network key may be a rotated one that
/// a later epoch names (a node restarted from an old or empty store), or the config names the
/// wrong file.
fn epoch_view(store: &Store, genesis: &Genesis, keys: &KeyRing) -> Result<EpochView> {
    let state = match keel_authority::read_epoch_state(store)? {
        Some(state) => state,
        None => genesis.epoch_state()?,
    };
    let view = EpochView::new(state, keys);
    if view.me.is_none() {
        let current = keys.current();
        if let Some(i) = view.committee().index_of(&current.protocol.public()) {
            tracing::warn!(
                network_key = %current.network.public(),
                validator = %i,
                epoch = %view.epoch(),
                "the protocol key is this validator's but the network key (config field `network_key`) is not: following without voting until an epoch names both (a rotated key), or fix the config"
            );
        }
    }
    Ok(view)
}

async fn bind(address: std::net::SocketAddr, field: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("config field `{field}`: cannot bind {address}"))
}

fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "an API listener failed");
        }
    })
}

/// Listens for SIGTERM from now on (installed at start: a SIGTERM during start-up, state sync
/// included, is a clean stop rather than the default kill).
fn listen_for_sigterm() -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")
}

async fn wait_for_signal(shutdown: &CancellationToken, mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = shutdown.cancelled() => {}
    }
}
