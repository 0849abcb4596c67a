//! The execution thread: owns the executor and executes committed blocks in height order as
//! they appear in the store (so after a restart it simply resumes at the executed marker + 1),
//! fetching batches it lacks from the validators that signed their proofs. It publishes what it
//! executed: the status (height, root, counts), the receipts stream (a broadcast: a lagging
//! subscriber skips the oldest blocks and is told so), the pending set, and each executed
//! height to the checkpoint task (a bounded queue; full: this thread waits, so no checkpoint
//! height is skipped).
//!
//! It is also the only writer of the epoch ([`crate::epoch`]): after a block that counted a
//! governance vote or ended the epoch it publishes the executed state's epoch record. A block
//! that ends the epoch reaches the checkpoint task (which builds the epoch-ending checkpoint
//! under the old committee) before the new epoch is published. A committed record of an older
//! epoch at the next height (committed past that epoch's end, before consensus switched) is
//! never executed: the thread waits until the new epoch's block replaces it.

use crate::{
    epoch::EpochView, keys::KeyRing, metrics::Metrics, peers::Outbound, pending::PendingTxs,
    persist, snapshots::Snapshots, status::StatusWriter,
};
use keel_authority::{BlockOutcome, BlockToExecute, Executed, Executor, resolve_batches};
use keel_types::{Digest, Effect, Height, Receipt};
use std::{sync::Arc, time::Duration};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What the execution thread is built from.
pub struct ExecuteDeps {
    /// The executor, opened on the store.
    pub executor: Executor,
    /// Fetches batches this node lacks.
    pub outbound: Outbound,
    /// The committed height (from the driver): wakes the thread.
    pub committed: watch::Receiver<Height>,
    /// Executed height and root for the API.
    pub status: StatusWriter,
    /// Receipts of each executed block, for the event stream.
    pub receipts: broadcast::Sender<Arc<Vec<Receipt>>>,
    /// Transactions reported pending until executed.
    pub pending: Arc<PendingTxs>,
    /// Executed heights, for the checkpoint task.
    pub checkpoints: mpsc::Sender<Executed>,
    /// State snapshots served to state-syncing peers, taken at checkpoint heights.
    pub snapshots: Snapshots,
    /// The checkpoint interval (a snapshot is taken at every multiple of it).
    pub checkpoint_interval: u64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown; fired here when execution cannot go on.
    pub shutdown: CancellationToken,
    /// Waits on it (the thread is not an async task).
    pub runtime: tokio::runtime::Handle,
    /// Wait before re-reading the store or retrying a batch fetch.
    pub retry: Duration,
    /// The epoch, published here.
    pub epoch: watch::Sender<Arc<EpochView>>,
    /// This node's keys (which pair, hence which index, each committee names).
    pub keys: Arc<KeyRing>,
}

/// Starts the execution thread.
pub fn spawn(deps: ExecuteDeps) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keel-execution".into())
        .spawn(move || run(deps))
}

fn run(deps: ExecuteDeps) {
    let ExecuteDeps {
        mut executor,
        outbound,
        mut committed,
        status,
        receipts,
        pending,
        checkpoints,
        snapshots,
        checkpoint_interval,
        metrics,
        shutdown,
        runtime,
        retry,
        epoch,
        keys,
    } = deps;
    let store = executor.store().clone();
    while !shutdown.is_cancelled() {
        let next = Height(executor.marker().height.0 + 1);
        let record = match persist::committed_at(&store, next) {
            Ok(Some(record)) => record,
            Ok(None) => {
                // Wait for the next commit (or poll, in case a notification was missed).
                let _ = runtime
                    .block_on(async { tokio::time::timeout(retry, committed.changed()).await });
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read a committed block; stopping");
                shutdown.cancel();
                return;
            }
        };
        let block = &record.block;
        if let Some(state) = executor.epoch_state()
            && block.block.epoch < state.epoch()
        {
            // Committed past the old epoch's end; the new epoch's block will replace it.
            let _ =
                runtime.block_on(async { tokio::time::timeout(retry, committed.changed()).await });
            continue;
        }
        let batches = loop {
            match resolve_batches(&store, &outbound, &block.block.payload) {
                Ok(batches) => break batches,
                Err(e) => {
                    tracing::warn!(height = %next, error = %e, "waiting for a batch");
                    if shutdown.is_cancelled() {
                        return;
                    }
                    std::thread::sleep(retry);
                }
            }
        };
        let to_execute = BlockToExecute {
            height: next,
            digest: block.digest(),
            epoch: block.block.epoch,
            timestamp: block.block.timestamp,
            transactions: batches.iter().flat_map(|b| &b.transactions).collect(),
        };
        let started = std::time::Instant::now();
        let outcome = match executor.execute_block(&to_execute) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(height = %next, error = %e, "execution failed; stopping");
                shutdown.cancel();
                return;
            }
        };
        let root = match executor.store().state_root() {
            Ok(root) => root,
            Err(e) => {
                tracing::error!(error = %e, "cannot compute the state root; stopping");
                shutdown.cancel();
                return;
            }
        };
        let voted = outcome.receipts.iter().any(|r| {
            r.effects
                .iter()
                .any(|e| matches!(e, Effect::GovernanceVote { .. }))
        });
        let epoch_end = outcome.epoch_end.clone();
        let executed = Executed {
            height: outcome.marker.height,
            block: outcome.marker.block,
            state_root: root,
            executed_transactions: outcome.marker.executed_transactions,
            epoch_end: epoch_end.as_ref().map(|e| e.committee.clone()),
        };
        publish(
            &status,
            &metrics,
            &pending,
            &receipts,
            outcome,
            root,
            started.elapsed(),
        );
        // The state a checkpoint at this height certifies, held before the next block runs.
        if executed.height.0.is_multiple_of(checkpoint_interval.max(1)) {
            snapshots.take(executed.height);
        }
        // Waits while the checkpoint task is behind; fails only once it has stopped (shutdown).
        let _ = checkpoints.blocking_send(executed);
        if let Some(next) = epoch_end {
            tracing::info!(epoch = %next.epoch(), after = %next.started_after, members = next.committee.size(), "epoch ends");
            let view = Arc::new(EpochView::new(next, &keys));
            // A rotation's staged keys in use from now on: their files take the config's
            // names (the view is published either way; a failure here only delays that).
            if let Err(e) = keys.adopt(&view.keys) {
                tracing::error!(error = %format!("{e:#}"), "cannot promote the rotated key files");
            }
            epoch.send_replace(view);
        } else if voted && let Some(state) = executor.epoch_state() {
            epoch.send_replace(Arc::new(EpochView::new(state.clone(), &keys)));
        }
    }
}

/// Publishes an executed block.
fn publish(
    status: &StatusWriter,
    metrics: &Metrics,
    pending: &PendingTxs,
    receipts: &broadcast::Sender<Arc<Vec<Receipt>>>,
    outcome: BlockOutcome,
    root: Digest,
    took: Duration,
) {
    let m = metrics;
    m.executed_height.set(outcome.marker.height.0 as i64);
    m.execution_seconds.observe(took.as_secs_f64());
    m.reexecuted.inc_by(outcome.reexecuted as u64);
    m.receipts.inc_by(outcome.receipts.len() as u64);
    let marker = outcome.marker.clone();
    status.send_modify(|s| {
        m.executed_transactions.inc_by(
            marker
                .executed_transactions
                .saturating_sub(s.executed_transactions),
        );
        s.executed = marker.height;
        s.root = root;
        s.executed_transactions = marker.executed_transactions;
        s.record_root(marker.height, root);
        s.last_progress = std::time::Instant::now();
    });
    pending.remove_all(outcome.receipts.iter().map(|r| &r.transaction));
    // No subscriber is not an error.
    let _ = receipts.send(Arc::new(outcome.receipts));
}
