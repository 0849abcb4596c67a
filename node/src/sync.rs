//! The range-sync task: watches how far the committee is ahead and, when this node has fallen
//! more than `sync.trigger_gap` heights behind, runs keel-p2p's [`RangeSync`] state machine,
//! carrying out its actions. It decides nothing itself:
//! - every `check_interval_ms` it asks each peer for its committed height
//!   ([`Request::SyncStatus`]) and takes the height more than 1/3 of the stake claims
//!   ([`sync_target`]);
//! - to sync it first pauses the consensus driver ([`SyncControl::Pause`]), which answers with
//!   its committed root and then neither votes nor commits, so the store has one writer of
//!   the committed chain and the node signs nothing for rounds it cannot check;
//! - each range request runs as a task (at most `max_in_flight`), which also fetches the
//!   range's batches the store lacks from the same peer (each checked against its digest), so
//!   execution finds them locally; answers come back through a bounded channel;
//! - proven ranges are persisted as committed, in order, and reported to the driver
//!   ([`SyncControl::Applied`]), which publishes them to execution, status and metrics;
//! - when the target is reached it looks again (the chain moved on meanwhile) and resumes the
//!   driver ([`SyncControl::Resume`]) once within the trigger gap, or when no peer can serve
//!   the next range (the next check retries).

use crate::{
    epoch::EpochWatch,
    metrics::Metrics,
    peers::Outbound,
    persist,
    status::{StatusWriter, SyncProgress},
};
use keel_authority::store_batch;
use keel_consensus::{CommitRoot, CommittedBlock};
use keel_p2p::{
    Request, Response,
    protocol::MAX_REQUEST_ITEMS,
    range_sync::{RangeSync, RangeSyncConfig, SyncAction, committed_prefix, sync_target},
};
use keel_storage::{Column, Store};
use keel_types::{ChainId, Committee, Digest, Height, SignedBlock, ValidatorIndex};
use std::{collections::HashSet, sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

/// What the sync task asks of the consensus driver.
#[derive(Debug)]
pub enum SyncControl {
    /// Stop voting and committing; answer with the committed root.
    Pause(oneshot::Sender<CommitRoot>),
    /// These heights were persisted as committed (the last one is `root`); publish them and
    /// drop their proofs from the proof queue.
    Applied {
        /// The new committed root.
        root: CommitRoot,
        /// Batches the applied blocks ordered, with their expiries.
        batches: Vec<(Digest, keel_types::TimestampMs)>,
    },
    /// Rebuild the core from the store and take part in consensus again.
    Resume,
}

impl SyncDeps {
    fn committee(&self) -> Committee {
        self.epoch.borrow().committee().clone()
    }

    /// The current epoch's last block `(height, digest)`, when this node holds its certified
    /// epoch-ending checkpoint (verified against this committee before it was stored).
    fn epoch_end(&self) -> Option<(Height, Digest)> {
        let epoch = self.epoch.borrow().epoch();
        let end = keel_authority::checkpoint_store::epoch_end(&self.store, epoch).ok()??;
        let c = end.checkpoint;
        Some((c.last_height, c.last_block))
    }

    /// Asks `peer` for the certified checkpoint that ends the current epoch; stores it if it
    /// verifies against this epoch's committee and names the next one (a node that was not
    /// connected when its signatures were gossiped needs it to sync past the epoch's end).
    async fn fetch_epoch_end(&self, peer: ValidatorIndex) {
        let (committee, epoch) = {
            let view = self.epoch.borrow();
            (view.committee().clone(), view.epoch())
        };
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let request = Request::EpochEnd { epoch };
        let answer = tokio::time::timeout(timeout, self.outbound.request(peer, &request)).await;
        let Ok(Ok(Response::Checkpoint(Some(certified)))) = answer else {
            return;
        };
        let c = &certified.checkpoint;
        if c.epoch != epoch || c.next_committee.is_none() {
            tracing::debug!(%peer, "answered another checkpoint than the epoch's end");
            return;
        }
        if let Err(e) = certified.verify(&committee, self.chain_id) {
            tracing::warn!(%peer, error = %e, "sent an epoch-ending checkpoint that does not verify");
            return;
        }
        match keel_authority::checkpoint_store::save_certified(&self.store, &certified) {
            Ok(()) => {
                tracing::info!(%epoch, height = %c.last_height, "fetched the epoch-ending checkpoint")
            }
            Err(e) => tracing::warn!(error = %e, "cannot store the epoch-ending checkpoint"),
        }
    }
}

/// What the sync task is built from.
pub struct SyncDeps {
    /// Tunables.
    pub config: RangeSyncConfig,
    /// The epoch: its committee verifies, is asked and makes quorums (a range stops at the
    /// epoch's end; the next pass, after execution switched, goes on in the next epoch).
    pub epoch: EpochWatch,
    /// The chain.
    pub chain_id: ChainId,
    /// Where committed blocks and batches go.
    pub store: Arc<Store>,
    /// Requests to peers.
    pub outbound: Outbound,
    /// The consensus driver.
    pub driver: mpsc::Sender<SyncControl>,
    /// The sync state for the API.
    pub status: StatusWriter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
}

/// Most batch requests one range's prefetch makes (what is still missing afterwards, execution
/// fetches from the proofs' signers).
const PREFETCH_ROUNDS: usize = 8;
/// A sync pass that applies nothing for this many request timeouts ends (consensus resumes;
/// the next check tries again).
const STALL_TIMEOUTS: u32 = 6;

/// A range answer (with its batches fetched), or why there is none.
type Answer = (ValidatorIndex, Height, Result<Vec<SignedBlock>, String>);

/// Starts the sync task.
pub fn spawn(deps: SyncDeps) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(deps))
}

#[tracing::instrument(skip_all, name = "sync")]
async fn run(deps: SyncDeps) {
    let mut tick = tokio::time::interval(Duration::from_millis(deps.config.check_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once per stretch of being unable to range-sync (not every check).
    let mut warned = false;
    loop {
        tokio::select! {
            _ = deps.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let local = match persist::commit_root(&deps.store) {
            Ok(root) => root.map(|r| r.height).unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the committed root");
                continue;
            }
        };
        let (claims, pruned) = peer_heights(&deps, local).await;
        let Some(target) = sync_target(&deps.committee(), &claims) else {
            // Only peers that answered and had pruned what this node needs warrant the warning
            // (no answer at all is a connection problem, which the peer metrics show).
            if claims.is_empty() && pruned > 0 && local.0 > 0 && !warned {
                warned = true;
                tracing::warn!(
                    committed = %local,
                    "the peers that answered have pruned the heights above this node's: restart \
                     the node to state-sync from a certified checkpoint"
                );
            }
            continue;
        };
        warned = false;
        // Behind: the epoch may have ended; ask the most advanced peer for its end if unknown.
        if target.0 > local.0 + deps.config.done_margin
            && deps.epoch_end().is_none()
            && let Some((peer, _)) = claims.iter().max_by_key(|(_, h)| *h)
        {
            deps.fetch_epoch_end(*peer).await;
        }
        // Below the epoch's end, consensus cannot fetch the rest (its committee moved on):
        // sync at any gap.
        let ending = deps
            .epoch_end()
            .is_some_and(|(end, _)| local < end && target >= end);
        if target.0 > local.0 + deps.config.trigger_gap || ending {
            sync(&deps, claims, target).await;
        }
    }
}

/// The committed heights claimed by the peers that hold the height after `local` (peers that
/// do not answer in time are left out), and how many answering peers had pruned it.
async fn peer_heights(deps: &SyncDeps, local: Height) -> (Vec<(ValidatorIndex, Height)>, usize) {
    let timeout = Duration::from_millis(deps.config.request_timeout_ms);
    let mut asks = JoinSet::new();
    let me = deps.epoch.borrow().me;
    for i in 0..deps.committee().size() {
        let peer = ValidatorIndex(i as u32);
        if Some(peer) == me {
            continue;
        }
        let outbound = deps.outbound.clone();
        asks.spawn(async move {
            let answer =
                tokio::time::timeout(timeout, outbound.request(peer, &Request::SyncStatus));
            match answer.await {
                Ok(Ok(Response::SyncStatus {
                    committed,
                    retained_from,
                })) if retained_from.0 <= local.0 + 1 => Some(Ok((peer, committed))),
                Ok(Ok(Response::SyncStatus { retained_from, .. })) => {
                    tracing::debug!(
                        %peer, %retained_from, committed = %local,
                        "peer pruned the heights this node needs: only checkpoint state sync \
                         at start can bring it back"
                    );
                    Some(Err(peer))
                }
                _ => None,
            }
        });
    }
    let mut claims = Vec::new();
    let mut pruned = 0;
    while let Some(answer) = asks.join_next().await {
        match answer {
            Ok(Some(Ok(claim))) => claims.push(claim),
            Ok(Some(Err(_))) => pruned += 1,
            _ => {}
        }
    }
    (claims, pruned)
}

/// One sync episode: pause consensus, range-sync (again while the chain has moved on by more
/// than the trigger gap), resume consensus.
async fn sync(deps: &SyncDeps, mut claims: Vec<(ValidatorIndex, Height)>, mut target: Height) {
    let (tx, rx) = oneshot::channel();
    if deps.driver.send(SyncControl::Pause(tx)).await.is_err() {
        return;
    }
    let Ok(mut root) = rx.await else {
        return;
    };
    let start = root.height;
    tracing::info!(committed = %root.height, %target, "behind the committee: range sync starts");
    deps.metrics.sync_active.set(1);
    loop {
        let mut machine = RangeSync::new(
            deps.config,
            deps.committee(),
            deps.chain_id,
            (root.height, root.digest),
            target,
            &claims,
        );
        if let Some(end) = deps.epoch_end() {
            machine = machine.with_epoch_end(end);
        }
        let started = std::time::Instant::now();
        let before = root.height;
        let ended = drive(deps, &mut machine, &mut root, start).await;
        let applied = root.height.0 - before.0;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            applied_blocks = applied,
            seconds = format!("{secs:.1}"),
            blocks_per_second = format!("{:.0}", applied as f64 / secs.max(1e-3)),
            committed = %root.height,
            "range sync pass ended"
        );
        if !ended || deps.shutdown.is_cancelled() {
            break;
        }
        // At the epoch's end: the next pass starts once execution moved to the next epoch.
        if deps.epoch_end().is_some_and(|(end, _)| root.height >= end) {
            break;
        }
        // The chain moved on meanwhile: go again while still far behind.
        claims = peer_heights(deps, root.height).await.0;
        match sync_target(&deps.committee(), &claims) {
            Some(t) if t.0 > root.height.0 + deps.config.trigger_gap => target = t,
            _ => break,
        }
    }
    deps.metrics.sync_active.set(0);
    deps.status.send_modify(|s| s.sync = SyncProgress::Idle);
    tracing::info!(committed = %root.height, "range sync done; consensus resumes");
    let _ = deps.driver.send(SyncControl::Resume).await;
}

/// Runs one state machine to its end. Returns whether it reached its target (`Done`).
async fn drive(
    deps: &SyncDeps,
    machine: &mut RangeSync,
    root: &mut CommitRoot,
    start: Height,
) -> bool {
    let (answers_tx, mut answers) = mpsc::channel::<Answer>(deps.config.max_in_flight);
    let mut tasks = JoinSet::new();
    let mut pending = machine.start();
    let stall = Duration::from_millis(deps.config.request_timeout_ms) * STALL_TIMEOUTS;
    let mut progressed = tokio::time::Instant::now();
    loop {
        for action in std::mem::take(&mut pending) {
            match action {
                SyncAction::Request { peer, from, to } => {
                    tasks.spawn(fetch_range(deps, peer, from, to, answers_tx.clone()));
                }
                SyncAction::Apply { from, blocks } => {
                    progressed = tokio::time::Instant::now();
                    if let Err(e) = apply(deps, root, from, blocks).await {
                        tracing::error!(error = %e, "cannot persist synced blocks; stopping");
                        deps.shutdown.cancel();
                        return false;
                    }
                    deps.status.send_modify(|s| {
                        s.sync = SyncProgress::Range {
                            start,
                            applied: root.height,
                            target: machine.target(),
                        }
                    });
                    deps.metrics
                        .sync_target_height
                        .set(machine.target().0 as i64);
                }
                SyncAction::DropPeer { peer, reason } => {
                    deps.metrics.sync_peers_dropped.inc();
                    tracing::warn!(%peer, %reason, "peer sent a bad range; not asked again in this sync");
                }
                SyncAction::Done { .. } => return true,
                SyncAction::Stuck { applied } => {
                    tracing::warn!(%applied, "no peer can serve the next range; will retry");
                    return false;
                }
            }
        }
        tokio::select! {
            _ = deps.shutdown.cancelled() => return false,
            _ = tokio::time::sleep_until(progressed + stall) => {
                tracing::warn!(applied = %root.height, "range sync made no progress; consensus resumes");
                return false;
            }
            Some((peer, from, answer)) = answers.recv() => {
                pending = match answer {
                    Ok(blocks) => machine.on_response(peer, from, blocks),
                    Err(reason) => {
                        tracing::debug!(%peer, %from, %reason, "range request failed");
                        machine.on_failure(peer, from)
                    }
                };
            }
        }
        // Reap finished tasks (their answers are already in the channel).
        while tasks.try_join_next().is_some() {}
    }
}

/// Asks `peer` for `from..=to`; if the answer proves some of those heights committed, fetches
/// the batches of the proven ones that the store lacks (at most [`PREFETCH_ROUNDS`] requests);
/// sends the blocks back (the state machine checks them again, and decides). The whole task
/// ends within twice the request timeout.
fn fetch_range(
    deps: &SyncDeps,
    peer: ValidatorIndex,
    from: Height,
    to: Height,
    answers: mpsc::Sender<Answer>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let outbound = deps.outbound.clone();
    let store = deps.store.clone();
    let committee = deps.committee();
    let chain_id = deps.chain_id;
    let timeout = Duration::from_millis(deps.config.request_timeout_ms);
    async move {
        let fetch = async {
            let request = Request::CommittedRange { from, to };
            let blocks = match tokio::time::timeout(timeout, outbound.request(peer, &request)).await
            {
                Err(_) => return Err("timed out".to_string()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Response::CommittedRange { from: f, blocks })) if f == from => blocks,
                Ok(Ok(other)) => return Err(format!("answered {}", response_kind(&other))),
            };
            // Only batches of blocks proven committed (and asked for) are fetched: a peer
            // cannot make this node store batches of made-up blocks.
            let wanted = (to.0 - from.0 + 1) as usize;
            let proven = committed_prefix(&blocks, &committee, chain_id)
                .unwrap_or(0)
                .min(wanted);
            prefetch_batches(&outbound, &store, peer, &blocks[..proven], timeout).await;
            Ok(blocks)
        };
        let answer = tokio::time::timeout(timeout * 2, fetch)
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()));
        let _ = answers.send((peer, from, answer)).await;
    }
}

/// What a peer answered instead of a committed range (named, not printed: an answer can be
/// megabytes).
fn response_kind(response: &Response) -> String {
    let kind = match response {
        Response::Refused(reason) => return format!("refused: {reason}"),
        Response::CommittedRange { .. } => "a range from another height",
        Response::Blocks(_) => "blocks",
        Response::Batches(_) => "batches",
        Response::SyncStatus { .. } => "a sync status",
        Response::Certificates { .. } => "certificates",
        Response::Checkpoint(_) => "a checkpoint",
        Response::StateSummary { .. } => "a state summary",
        Response::StateChunk { .. } => "a state chunk",
    };
    format!("with {kind}")
}

/// Fetches from `peer` the batches `blocks` order that the store lacks, storing each whose
/// digest is one asked for. Best effort: what is missing afterwards, execution fetches from
/// the proofs' signers.
async fn prefetch_batches(
    outbound: &Outbound,
    store: &Store,
    peer: ValidatorIndex,
    blocks: &[SignedBlock],
    timeout: Duration,
) {
    let mut missing: Vec<Digest> = blocks
        .iter()
        .flat_map(|b| b.block.payload.iter().map(|p| p.info.digest))
        .filter(|d| !matches!(store.get(Column::Batches, &d.0), Ok(Some(_))))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    for _ in 0..PREFETCH_ROUNDS {
        if missing.is_empty() {
            break;
        }
        let ask: Vec<Digest> = missing.iter().take(MAX_REQUEST_ITEMS).copied().collect();
        let wanted: HashSet<Digest> = ask.iter().copied().collect();
        let request = Request::Batches { digests: ask };
        let Ok(Ok(Response::Batches(batches))) =
            tokio::time::timeout(timeout, outbound.request(peer, &request)).await
        else {
            return;
        };
        let mut got = HashSet::new();
        for batch in batches {
            let digest = batch.digest();
            if wanted.contains(&digest) && got.insert(digest) && store_batch(store, &batch).is_err()
            {
                return;
            }
        }
        if got.is_empty() {
            return;
        }
        missing.retain(|d| !got.contains(d));
    }
}

/// Persists proven blocks as committed at heights `from..` and tells the driver.
async fn apply(
    deps: &SyncDeps,
    root: &mut CommitRoot,
    from: Height,
    blocks: Vec<SignedBlock>,
) -> anyhow::Result<()> {
    let committed: Vec<CommittedBlock> = blocks
        .into_iter()
        .enumerate()
        .map(|(i, block)| CommittedBlock {
            block,
            height: Height(from.0 + i as u64),
        })
        .collect();
    let store = deps.store.clone();
    let last = committed.last().map(|c| CommitRoot {
        digest: c.block.digest(),
        round: c.block.block.round,
        height: c.height,
        timestamp: c.block.block.timestamp,
    });
    let batches: Vec<(Digest, keel_types::TimestampMs)> = committed
        .iter()
        .flat_map(|c| {
            c.block
                .block
                .payload
                .iter()
                .map(|p| (p.info.digest, p.info.expires_at))
        })
        .collect();
    let count = committed.len() as u64;
    tokio::task::spawn_blocking(move || persist::save_commit(&store, &committed)).await??;
    if let Some(last) = last {
        *root = last;
        deps.metrics.sync_applied_blocks.inc_by(count);
        let _ = deps
            .driver
            .send(SyncControl::Applied {
                root: last,
                batches,
            })
            .await;
    }
    Ok(())
}
