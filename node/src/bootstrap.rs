//! Start-up state sync: before execution and consensus start, a node that is far behind its
//! peers' latest certified checkpoint, or whose next heights no peer holds any more (pruned),
//! downloads the state as of that checkpoint and installs it, then starts from the checkpoint
//! (range sync brings it the rest). It carries out keel-p2p's [`StateSync`] state machine:
//! - it asks every peer for its sync status and latest certified checkpoint, waiting up to
//!   `state_sync.startup_wait_ms` for peers holding more than 1/3 of the stake. A checkpoint
//!   of a later epoch than the node's is verified against that epoch's committee, which the
//!   node proves from its own through the chain of epoch-ending checkpoints (each names the
//!   next committee and is certified by the one it ends; fetched with `Request::EpochEnd`,
//!   verified, stored). The highest verified checkpoint is the target. (The peers asked are
//!   the node's own epoch's members; a wiped node of a committee that has since been wholly
//!   replaced cannot bootstrap this way.)
//! - the target and each proven bucket are recorded in the meta column and the chunks staged in
//!   the store, so a node killed during the sync resumes it (with the same checkpoint, while a
//!   peer still serves its state and its block; otherwise it goes on with the newest one,
//!   keeping the proven buckets whose content the newer checkpoint's checksums still match);
//! - the checkpoint's block is fetched and checked against the certified digest (it becomes the
//!   committed root);
//! - the install replaces the state atomically with the executed marker, the committed root,
//!   the lowest retained height (the checkpoint's: nothing below it is here) and the certified
//!   checkpoint, and the installed block's epoch as consensus's (see keel-storage's
//!   staging); the node then starts in the epoch the installed state is in;
//! - after an install it asks again (at most [`MAX_INSTALLS`] installs, and [`ATTEMPTS`]
//!   failures): peers that certified a newer checkpoint meanwhile may have pruned the heights
//!   right after the installed one, and then it syncs to the newer one instead of starting
//!   where nobody can serve it. Such a sync downloads only the buckets whose content changed
//!   since (the others are copied from the installed state), so the chase ends. (Once running,
//!   a node whose next heights are pruned everywhere is told to restart: state sync runs only
//!   here.)
//!
//! Safety data is not touched: a node that lost it starts amnesiac (see the driver).

use crate::{
    metrics::Metrics,
    peers::Outbound,
    persist,
    status::{StatusWriter, SyncProgress},
};
use anyhow::{Context, Result, bail};
use keel_authority::{checkpoint_store, installed_state_ops, state};
use keel_consensus::CommittedBlock;
use keel_p2p::{
    Request, Response,
    state_sync::{BUCKETS, BucketProgress, StateAction, StateSync, StateSyncConfig},
};
use keel_storage::{Column, Store, WriteOp, check_chunk};
use keel_types::{
    CertifiedCheckpoint, ChainId, Checkpoint, Committee, Digest, Height, SignedBlock,
    ValidatorIndex, state_proof::state_root_of,
};
use std::{sync::Arc, time::Duration};
use tokio::{sync::mpsc, task::JoinSet};

mod chain;
mod progress;

use chain::{committee_chain, verify_checkpoints};
use progress::{carry_over, forget, keep_current_buckets, restore_progress};

/// Meta key: the checkpoint a state sync in progress is syncing to (bcs).
const TARGET_KEY: &[u8] = b"state_sync/target";
/// Meta key prefix: a bucket proven by a sync in progress.
const PROVEN_PREFIX: &[u8] = b"state_sync/proven/";
/// Failed start-up attempts before giving up (each waits `startup_wait_ms` for peers first).
const ATTEMPTS: usize = 5;
/// Most installs in one start-up: each install that finds the peers already past it (they
/// certified a newer checkpoint and pruned the heights after this one) syncs again, and each
/// of those downloads only the buckets that changed, so the chase ends within a few.
const MAX_INSTALLS: usize = 16;

/// What start-up state sync needs.
pub struct BootstrapDeps {
    /// Tunables.
    pub config: StateSyncConfig,
    /// The committee (verification, peers).
    pub committee: Committee,
    /// The chain.
    pub chain_id: ChainId,
    /// This validator.
    pub me: Option<ValidatorIndex>,
    /// The genesis digest (recorded with the installed state).
    pub genesis: Digest,
    /// The store to install into.
    pub store: Arc<Store>,
    /// Requests to peers.
    pub outbound: Outbound,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The sync state for the API (the API is up while this runs).
    pub status: StatusWriter,
}

/// A peer's answer to the start-up questions.
struct PeerView {
    peer: ValidatorIndex,
    retained_from: Height,
    checkpoint: Option<CertifiedCheckpoint>,
}

fn proven_key(bucket: u8) -> Vec<u8> {
    [PROVEN_PREFIX, &[bucket]].concat()
}

fn root_of(checksums: &[Digest]) -> Digest {
    <&[Digest; BUCKETS]>::try_from(checksums)
        .map(state_root_of)
        .unwrap_or_default()
}

/// Runs start-up state sync if the node needs it; returns once the node may start.
pub async fn run(deps: &BootstrapDeps) -> Result<()> {
    if !deps.config.enabled {
        return Ok(());
    }
    let (mut failures, mut installs) = (0, 0);
    loop {
        match attempt_sync(deps).await {
            // Installed: check again, as the peers may have certified a newer checkpoint and
            // pruned the heights after this one while it synced (then it syncs to that one).
            Ok(true) if installs + 1 < MAX_INSTALLS => installs += 1,
            Ok(_) => return Ok(()),
            Err(e) if failures + 1 < ATTEMPTS => {
                failures += 1;
                tracing::warn!(attempt = failures, error = %format!("{e:#}"), "state sync failed; trying again");
                tokio::time::sleep(Duration::from_millis(deps.config.startup_wait_ms)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One state sync if the node needs it; whether it installed a checkpoint's state.
async fn attempt_sync(deps: &BootstrapDeps) -> Result<bool> {
    let store = &deps.store;
    let resume: Option<CertifiedCheckpoint> = store
        .get(Column::Meta, TARGET_KEY)?
        .map(|b| bcs::from_bytes(&b))
        .transpose()
        .context("corrupt state sync target")?;
    let local = state::executed_marker(store)?
        .map(|m| m.height)
        .unwrap_or_default();
    let mut views = peer_views(deps).await;
    // The peers' checkpoints may be of later epochs: prove those epochs' committees from this
    // node's through the epoch-ending checkpoints, then keep only checkpoints that verify.
    let claimed = views
        .iter()
        .filter_map(|v| v.checkpoint.as_ref().map(|c| c.checkpoint.epoch))
        .max()
        .unwrap_or_default();
    let chain = committee_chain(deps, &views, claimed).await;
    verify_checkpoints(deps, &mut views, &chain);
    let best = views
        .iter()
        .filter_map(|v| v.checkpoint.as_ref())
        .max_by_key(|c| c.checkpoint.sequence)
        .cloned();
    // Resume the sync in progress while its checkpoint is still the best or still served.
    let target = match (resume, best) {
        (Some(r), Some(b)) if r.checkpoint.sequence >= b.checkpoint.sequence => Some(r),
        (Some(r), best) => {
            // Resume while a peer still holds the snapshot of the interrupted sync's checkpoint
            // and its block (peers prune blocks sooner than snapshots: without the block the
            // sync could never install, and would retry forever).
            if serves_summary(deps, &views, &r.checkpoint).await
                && fetch_block(deps, &views, r.checkpoint.last_block)
                    .await
                    .is_ok()
            {
                Some(r)
            } else {
                // Buckets that did not change since are kept (most of a large state).
                let newer = match &best {
                    Some(b) => summary(deps, &views, &b.checkpoint).await,
                    None => None,
                };
                let kept = match newer {
                    Some(checksums) => carry_over(store, &checksums)?,
                    None => {
                        forget(store)?;
                        0
                    }
                };
                tracing::info!(
                    sequence = r.checkpoint.sequence,
                    kept,
                    "no peer serves the interrupted state sync's checkpoint (its state or its block) any more; going on with the latest, keeping the buckets that did not change"
                );
                best
            }
        }
        (None, best) => best,
    };
    let Some(target) = target else {
        return Ok(false);
    };
    let cp = &target.checkpoint;
    // Range sync can go on from here only if peers holding more than 1/3 of the stake (so
    // at least one honest one) still hold the next height.
    let holding: u64 = views
        .iter()
        .filter(|v| v.retained_from.0 <= local.0 + 1)
        .map(|v| deps.committee.stake(v.peer))
        .sum();
    let held_by_peers = deps.committee.is_validity(holding);
    // "Nobody holds it" is only believed when more than 2/3 of the stake answered (a slow
    // start of the whole committee must not make a healthy node replace its state).
    let answered: u64 = views
        .iter()
        .map(|v| deps.committee.stake(v.peer))
        .sum::<u64>()
        + deps.me.map_or(0, |me| deps.committee.stake(me));
    let pruned_out = !held_by_peers && deps.committee.is_quorum(answered);
    let resuming = store.get(Column::Meta, TARGET_KEY)?.is_some();
    let needed = cp.last_height > local
        && (resuming || cp.last_height.0 > local.0 + deps.config.min_gap || pruned_out);
    if !needed {
        return Ok(false);
    }
    tracing::info!(
        executed = %local,
        checkpoint = cp.sequence,
        height = %cp.last_height,
        state_root = %cp.state_root,
        resuming,
        "state sync from a certified checkpoint starts"
    );
    store.put(Column::Meta, TARGET_KEY, &bcs::to_bytes(&target)?)?;
    let height = cp.last_height;
    deps.status
        .send_modify(|s| s.sync = SyncProgress::State { height, buckets: 0 });
    let block = fetch_block(deps, &views, cp.last_block).await?;
    // Every peer that answered may hold the snapshot (one that does not fails its requests
    // and is asked less, then not at all).
    let peers: Vec<ValidatorIndex> = views.iter().map(|v| v.peer).collect();
    keep_current_buckets(deps, &views, cp).await?;
    let progress = restore_progress(store)?;
    let started = std::time::Instant::now();
    download(deps, &target, &peers, progress).await?;
    let secs = started.elapsed().as_secs_f64();
    // The staged state as a whole must hash to the certified root before it replaces
    // anything (proven-bucket records from an earlier run are not trusted alone).
    let staged = store.clone();
    let checksums = tokio::task::spawn_blocking(move || {
        (0..BUCKETS)
            .map(|b| staged.staged_bucket_hash(b as u8).map(|l| l.checksum()))
            .collect::<Result<Vec<Digest>, _>>()
    })
    .await??;
    if root_of(&checksums) != cp.state_root {
        forget(store)?;
        bail!(
            "the staged state does not hash to checkpoint {}'s root; staging dropped",
            cp.sequence
        );
    }

    let marker = state::ExecutedMarker {
        height: cp.last_height,
        block: cp.last_block,
        executed_transactions: cp.executed_transactions,
    };
    let mut extra = installed_state_ops(deps.genesis, &marker);
    let block_epoch = block.block.epoch;
    extra.extend(persist::commit_ops(&[CommittedBlock {
        block,
        height: cp.last_height,
    }]));
    extra.push(persist::retained_from_op(cp.last_height));
    // Consensus resumes in the installed block's epoch (start-up moves it on if the installed
    // state already ended that epoch).
    extra.push(persist::consensus_epoch_op(block_epoch));
    extra.push(WriteOp {
        column: Column::Meta,
        key: TARGET_KEY.to_vec(),
        value: None,
    });
    for b in 0..BUCKETS {
        extra.push(WriteOp {
            column: Column::Meta,
            key: proven_key(b as u8),
            value: None,
        });
    }
    // The certified checkpoint goes with the install (the checkpoint task resumes from it).
    extra.push(WriteOp {
        column: Column::Meta,
        key: checkpoint_store::certified_key(cp.sequence),
        value: Some(bcs::to_bytes(&target)?),
    });
    extra.push(WriteOp {
        column: Column::Meta,
        key: checkpoint_store::LATEST_CERTIFIED_KEY.to_vec(),
        value: Some(bcs::to_bytes(&cp.sequence)?),
    });
    let installing = store.clone();
    tokio::task::spawn_blocking(move || installing.install_staged(extra)).await??;
    let root = store.state_root()?;
    if root != cp.state_root {
        // Checked before installing; reaching this is a bug. Refuse to run on that state.
        anyhow::bail!(
            "FATAL: the installed state's root {root} is not the certified {}; wipe the data \
             directory and restart",
            cp.state_root
        );
    }
    deps.metrics.state_sync_seconds.set(secs);
    deps.status.send_modify(|s| s.sync = SyncProgress::Idle);
    tracing::info!(
        height = %cp.last_height,
        seconds = format!("{secs:.1}"),
        state_root = %root,
        "state sync installed the checkpoint's state; range sync continues from it"
    );
    Ok(true)
}

/// Whether some peer answers the bucket summary of `target` (one that hashes to its root).
async fn serves_summary(deps: &BootstrapDeps, views: &[PeerView], target: &Checkpoint) -> bool {
    summary(deps, views, target).await.is_some()
}

/// The bucket checksums of `target` from the first peer whose summary hashes to its root.
async fn summary(
    deps: &BootstrapDeps,
    views: &[PeerView],
    target: &Checkpoint,
) -> Option<Vec<Digest>> {
    for v in views {
        let request = Request::StateSummary {
            checkpoint: target.sequence,
        };
        if let Ok(Response::StateSummary { checksums }) =
            deps.outbound.request(v.peer, &request).await
            && root_of(&checksums) == target.state_root
        {
            return Some(checksums);
        }
    }
    None
}

/// Asks every peer for its status and latest checkpoint (unverified), until peers holding
/// more than 1/3 of the stake answered or `startup_wait_ms` passed.
async fn peer_views(deps: &BootstrapDeps) -> Vec<PeerView> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(deps.config.startup_wait_ms);
    let mut views: Vec<PeerView> = Vec::new();
    loop {
        let mut asks = JoinSet::new();
        for i in 0..deps.committee.size() {
            let peer = ValidatorIndex(i as u32);
            if Some(peer) == deps.me || views.iter().any(|v| v.peer == peer) {
                continue;
            }
            let outbound = deps.outbound.clone();
            asks.spawn(async move {
                let status = outbound.request(peer, &Request::SyncStatus).await;
                let checkpoint = outbound.request(peer, &Request::LatestCheckpoint).await;
                (peer, status, checkpoint)
            });
        }
        while let Some(Ok((peer, status, checkpoint))) = asks.join_next().await {
            let Ok(Response::SyncStatus { retained_from, .. }) = status else {
                continue;
            };
            // Verified once the committee of its epoch is known (`verify_checkpoints`).
            let checkpoint = match checkpoint {
                Ok(Response::Checkpoint(Some(c))) => Some(c),
                _ => None,
            };
            views.push(PeerView {
                peer,
                retained_from,
                checkpoint,
            });
        }
        let stake: u64 = views.iter().map(|v| deps.committee.stake(v.peer)).sum();
        if deps.committee.is_validity(stake) && views.len() + 1 >= deps.committee.size()
            || tokio::time::Instant::now() >= deadline
        {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checkpoint's block, from any peer, checked against the certified digest.
async fn fetch_block(
    deps: &BootstrapDeps,
    views: &[PeerView],
    digest: Digest,
) -> Result<SignedBlock> {
    for v in views {
        let request = Request::Blocks {
            digests: vec![digest],
        };
        if let Ok(Response::Blocks(blocks)) = deps.outbound.request(v.peer, &request).await
            && let Some(block) = blocks.into_iter().find(|b| b.digest() == digest)
        {
            return Ok(block);
        }
    }
    bail!("no peer served the checkpoint's block {digest}")
}

type Answer = (ValidatorIndex, Option<u8>, Result<Response, String>);

/// Runs the state machine until every bucket is proven.
async fn download(
    deps: &BootstrapDeps,
    target: &CertifiedCheckpoint,
    peers: &[ValidatorIndex],
    progress: Vec<BucketProgress>,
) -> Result<()> {
    let cp = &target.checkpoint;
    let store = &deps.store;
    let mut machine = StateSync::new(
        deps.config,
        (cp.state_root, root_of),
        check_chunk,
        peers,
        progress,
    );
    let proven_at_start = machine.proven();
    deps.status.send_modify(|s| {
        s.sync = SyncProgress::State {
            height: cp.last_height,
            buckets: proven_at_start as u16,
        }
    });
    let (tx, mut answers) = mpsc::channel::<Answer>(deps.config.max_in_flight + 1);
    let timeout = Duration::from_millis(deps.config.request_timeout_ms);
    let mut tasks = JoinSet::new();
    let mut pending = machine.start();
    let mut bytes = 0u64;
    let started = std::time::Instant::now();
    loop {
        for action in std::mem::take(&mut pending) {
            match action {
                StateAction::RequestSummary { peer } => {
                    let request = Request::StateSummary {
                        checkpoint: cp.sequence,
                    };
                    tasks.spawn(ask(
                        deps.outbound.clone(),
                        peer,
                        None,
                        request,
                        timeout,
                        tx.clone(),
                    ));
                }
                StateAction::RequestChunk {
                    peer,
                    bucket,
                    after,
                } => {
                    let request = Request::StateChunk {
                        checkpoint: cp.sequence,
                        bucket,
                        after,
                    };
                    tasks.spawn(ask(
                        deps.outbound.clone(),
                        peer,
                        Some(bucket),
                        request,
                        timeout,
                        tx.clone(),
                    ));
                }
                StateAction::Stage { bucket, entries } => {
                    bytes += entries
                        .iter()
                        .map(|(k, v)| (k.len() + v.len()) as u64)
                        .sum::<u64>();
                    let s = store.clone();
                    tokio::task::spawn_blocking(move || s.stage(bucket, &entries)).await??;
                }
                StateAction::Checksum { bucket } => {
                    let s = store.clone();
                    let lattice =
                        tokio::task::spawn_blocking(move || s.staged_bucket_hash(bucket)).await??;
                    pending.extend(machine.on_bucket_checksum(bucket, lattice.checksum()));
                }
                StateAction::ClearBucket { bucket } => store.clear_staged_bucket(bucket)?,
                StateAction::BucketProven { bucket } => {
                    store.put(Column::Meta, &proven_key(bucket), &[1])?;
                    let proven = machine.proven();
                    deps.metrics.state_sync_buckets.set(proven as i64);
                    deps.status.send_modify(|s| {
                        s.sync = SyncProgress::State {
                            height: cp.last_height,
                            buckets: proven as u16,
                        }
                    });
                    if proven.is_multiple_of(32) {
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        tracing::info!(
                            buckets = proven,
                            of = BUCKETS,
                            percent = proven * 100 / BUCKETS,
                            mib_per_s = format!("{:.1}", bytes as f64 / secs / (1 << 20) as f64),
                            "state sync progress"
                        );
                    }
                }
                StateAction::DropPeer { peer, reason } => {
                    deps.metrics.sync_peers_dropped.inc();
                    tracing::warn!(%peer, %reason, "peer served bad state; not asked again in this sync");
                }
                StateAction::Install => {
                    tracing::info!(
                        resumed_buckets = proven_at_start,
                        mib = bytes / (1 << 20),
                        "every bucket proven"
                    );
                    return Ok(());
                }
                StateAction::Stuck => bail!(
                    "no usable peer can serve checkpoint {} (its staging is kept)",
                    cp.sequence
                ),
            }
        }
        if !pending.is_empty() {
            continue;
        }
        let Some((peer, bucket, answer)) = answers.recv().await else {
            bail!("state sync requests stopped");
        };
        pending = match (bucket, answer) {
            (None, Ok(Response::StateSummary { checksums })) => machine.on_summary(peer, checksums),
            (None, _) => machine.on_summary_failed(peer),
            (Some(b), Ok(Response::StateChunk { entries, complete })) => {
                machine.on_chunk(peer, b, entries, complete)
            }
            (Some(b), _) => machine.on_chunk_failed(peer, b),
        };
        while tasks.try_join_next().is_some() {}
    }
}

/// One request with a timeout; the answer goes back with the peer and bucket.
async fn ask(
    outbound: Outbound,
    peer: ValidatorIndex,
    bucket: Option<u8>,
    request: Request,
    timeout: Duration,
    tx: mpsc::Sender<Answer>,
) {
    let answer = match tokio::time::timeout(timeout, outbound.request(peer, &request)).await {
        Ok(answer) => answer,
        Err(_) => Err("timed out".into()),
    };
    let _ = tx.send((peer, bucket, answer)).await;
}
