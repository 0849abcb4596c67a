//! The pruner task: keeps a validator's disk bounded by deleting committed heights that fell out
//! of the retention window, following chain progress.
//!
//! ```text
//!  every interval_ms: status watch (executed) + checkpoint floor watch + retained_from
//!        ─▶ retention::plan (pure, keel-storage) ─▶ delete [retained_from, end)? compact?
//!        ─▶ blocking pool: read the doomed blocks, their batches and receipts
//!           ─▶ one write batch: range delete of `h/`, point deletes, new `retained_from`
//!        ─▶ metrics (pruned height, lag, counters), status (forget roots of pruned heights)
//! ```
//!
//! The planner decides (see `keel_storage::retention` for its rules: never above
//! `executed - keep_blocks`, never at or above the checkpoint floor, at most
//! `max_heights_per_pass` heights); this task only carries the plan out. For each pruned height
//! it deletes, in one write batch with the new lowest retained height (`persist::retained_from`):
//! - the block (`h/` keys: one range delete) and its digest index entry (`d/`, point delete);
//! - each batch the block orders, unless a retained block orders it again: the batch index
//!   (`b/` ‖ batch digest → highest height ordering it, written by `persist::save_commit`) says
//!   where it was last ordered, and the batch (with its index entry) goes only when that height
//!   is pruned too. A batch ordered before the index existed has no entry and goes with the
//!   first pruned block ordering it;
//! - the receipts of the batches' transactions whose receipt was written at a pruned height (a
//!   receipt is keyed by transaction digest; a transaction ordered twice keeps the receipt of
//!   its later height if that height is retained). Point deletes, batched in the pass's one
//!   write batch.
//!
//! A crash leaves the store before or after a pass, never in between; a restart resumes from the
//! durable `retained_from`. A pass holds at most [`MAX_PASS_TRANSACTIONS`] receipts (it stops
//! after the height that reaches it), so its memory and write batch are bounded. The checkpoint
//! floor is a `watch` that nothing feeds yet: until certified checkpoints exist it stays `None`
//! and retention alone decides.
//!
//! Compaction, at most once per `compact_interval_ms`: the store is flushed (so the write-ahead
//! log holding the deleted values is released), then the pruned `h/` range, the `d/` and `b/`
//! indexes, and the receipts and batches columns are compacted.

use crate::{metrics::Metrics, persist, status::StatusWriter};
use anyhow::{Context, Result};
use keel_authority::state;
use keel_storage::{
    Column, KeyRange, PruneInput, PrunePlan, PruningConfig, Store, WriteOp, retention,
};
use keel_types::{Batch, Digest, Height, Receipt};
use std::{
    collections::{HashMap, HashSet},
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Most receipts one pass looks up and deletes (about 250 bytes of memory each).
pub const MAX_PASS_TRANSACTIONS: usize = 100_000;

/// What the pruner is built from.
pub struct PruneDeps {
    /// The store to prune.
    pub store: Arc<Store>,
    /// Retention, pacing and compaction (`[pruning]`).
    pub config: PruningConfig,
    /// The executed height is read here; roots of pruned heights are forgotten here.
    pub status: StatusWriter,
    /// The height of the latest certified checkpoint: nothing at or above it is pruned.
    /// `None` (all there is until checkpoints are built): retention alone decides.
    pub checkpoint_floor: watch::Receiver<Option<Height>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
}

/// What one pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// The lowest retained height after the pass.
    pub retained_from: Height,
    /// Heights deleted.
    pub heights: u64,
    /// Batches deleted.
    pub batches: u64,
    /// Receipts deleted.
    pub receipts: u64,
    /// Whether the pass compacted.
    pub compacted: bool,
    /// Time spent reading and deleting.
    pub deleting: Duration,
    /// Time spent flushing and compacting.
    pub compacting: Duration,
}

/// Checks `[pruning]`: each field (keel-storage's rules), and that the pruner keeps at least
/// twice the pace of the fastest chain the consensus pacing allows
/// (`1000 / min_block_interval_ms` blocks a second, 0 counting as 1 ms). Names the field.
pub fn check_config(
    pruning: &PruningConfig,
    min_block_interval_ms: u64,
) -> Result<(), (&'static str, String)> {
    match pruning.validate() {
        Ok(()) => {}
        Err(keel_storage::Error::Config { field, reason }) => return Err((field, reason)),
        Err(other) => return Err(("pruning", other.to_string())),
    }
    let chain = 1000.0 / min_block_interval_ms.max(1) as f64;
    let pruner = pruning.max_heights_per_second();
    if pruning.enabled && pruner < 2.0 * chain {
        return Err((
            "max_heights_per_pass",
            format!(
                "{} heights every {} ms is {pruner:.0} heights/s, below twice the {chain:.0} \
                 blocks/s consensus.min_block_interval_ms = {min_block_interval_ms} allows",
                pruning.max_heights_per_pass, pruning.interval_ms
            ),
        ));
    }
    Ok(())
}

/// Starts the pruner; with pruning disabled it only reports the pruned height and returns.
pub fn spawn(deps: PruneDeps) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(deps))
}

#[tracing::instrument(skip_all, fields(keep_blocks = deps.config.keep_blocks))]
async fn run(deps: PruneDeps) {
    let PruneDeps {
        store,
        config,
        status,
        checkpoint_floor,
        metrics,
        shutdown,
    } = deps;
    let mut retained_from = match persist::retained_from(&store) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the lowest retained height; not pruning");
            return;
        }
    };
    metrics
        .pruned_height
        .set(retained_from.0.saturating_sub(1) as i64);
    if !config.enabled {
        tracing::info!("pruning disabled");
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_compaction = Instant::now();
    let mut pruned_since_compaction = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let input = PruneInput {
            executed: status.borrow().executed,
            retained_from,
            checkpoint_floor: *checkpoint_floor.borrow(),
            pruned_since_compaction,
            since_compaction: last_compaction.elapsed(),
        };
        let plan = retention::plan(&config, &input);
        metrics.pruner_lag.set(plan.lag_blocks as i64);
        if plan.delete.is_none() && !plan.compact {
            continue;
        }
        let (pass_store, pass_plan) = (store.clone(), plan.clone());
        let pass =
            tokio::task::spawn_blocking(move || carry_out(&pass_store, &pass_plan, retained_from))
                .await;
        let outcome = match pass {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "pruning pass failed; retrying next interval");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "pruning pass panicked; stopping the pruner");
                return;
            }
        };
        if plan.delete.is_some() {
            metrics
                .pruner_pass_seconds
                .observe(outcome.deleting.as_secs_f64());
        }
        if outcome.compacted {
            metrics
                .pruner_compaction_seconds
                .observe(outcome.compacting.as_secs_f64());
        }
        metrics.pruned_heights.inc_by(outcome.heights);
        metrics.pruned_batches.inc_by(outcome.batches);
        metrics.pruned_receipts.inc_by(outcome.receipts);
        metrics
            .pruner_lag
            .set(plan.lag_blocks.saturating_sub(outcome.heights) as i64);
        pruned_since_compaction = pruned_since_compaction.saturating_add(outcome.heights);
        if outcome.compacted {
            pruned_since_compaction = 0;
            last_compaction = Instant::now();
        }
        if outcome.retained_from > retained_from {
            retained_from = outcome.retained_from;
            metrics
                .pruned_height
                .set(retained_from.0.saturating_sub(1) as i64);
            status.send_modify(|s| s.forget_roots_below(retained_from));
            tracing::debug!(
                %retained_from,
                heights = outcome.heights,
                receipts = outcome.receipts,
                took_ms = outcome.deleting.as_millis() as u64,
                "pruned"
            );
        }
    }
}

/// Carries out a plan on the blocking pool: deletes the planned heights, then compacts if due.
pub fn carry_out(store: &Store, plan: &PrunePlan, retained_from: Height) -> Result<PassOutcome> {
    let started = Instant::now();
    let mut outcome = match &plan.delete {
        Some(range) => prune_heights(store, range.clone())?,
        None => PassOutcome {
            retained_from,
            ..PassOutcome::default()
        },
    };
    outcome.deleting = started.elapsed();
    if plan.compact {
        compact(store, outcome.retained_from)?;
        outcome.compacted = true;
        outcome.compacting = started.elapsed().saturating_sub(outcome.deleting);
    }
    Ok(outcome)
}

/// Deletes heights `range` (starting at the lowest retained height), or a prefix of it if the
/// receipts reach [`MAX_PASS_TRANSACTIONS`], with everything only they hold; returns what went.
pub fn prune_heights(store: &Store, range: Range<Height>) -> Result<PassOutcome> {
    let mut ops = Vec::new();
    let mut end = range.start;
    let mut batches: HashMap<Digest, Option<Height>> = HashMap::new();
    let mut transactions: Vec<Vec<u8>> = Vec::new();
    let mut seen_transactions: HashSet<Digest> = HashSet::new();
    let mut height = range.start;
    while height < range.end && transactions.len() < MAX_PASS_TRANSACTIONS {
        if let Some(record) = persist::committed_at(store, height)? {
            ops.push(delete(
                Column::Blocks,
                persist::digest_key(&record.block.digest()),
            ));
            for proof in &record.block.block.payload {
                let digest = proof.info.digest;
                if batches.contains_key(&digest) {
                    continue;
                }
                batches.insert(digest, persist::batch_ordered_at(store, &digest)?);
                let Some(bytes) = store.get(Column::Batches, &digest.0)? else {
                    continue;
                };
                let batch: Batch = state::decode(&bytes, "batch")?;
                for tx in &batch.transactions {
                    let d = tx.digest();
                    if seen_transactions.insert(d) {
                        transactions.push(d.0.to_vec());
                    }
                }
            }
        }
        height = Height(height.0.saturating_add(1));
        end = height;
    }
    let mut outcome = PassOutcome {
        retained_from: end,
        heights: end.0.saturating_sub(range.start.0),
        ..PassOutcome::default()
    };
    for (digest, ordered_at) in batches {
        // Kept while a retained block orders it (its index entry is at or above `end`).
        if ordered_at.is_none_or(|h| h < end) {
            ops.push(delete(Column::Batches, digest.0.to_vec()));
            ops.push(delete(Column::Blocks, persist::batch_ref_key(&digest)));
            outcome.batches += 1;
        }
    }
    let found = store.multi_get(Column::Receipts, &transactions)?;
    for (key, bytes) in transactions.into_iter().zip(found) {
        let Some(bytes) = bytes else { continue };
        let receipt: Receipt = state::decode(&bytes, "receipt")?;
        if receipt.height < end {
            ops.push(delete(Column::Receipts, key));
            outcome.receipts += 1;
        }
    }
    // Key order makes the memtable insertions cheaper.
    ops.sort_unstable_by(|a, b| (a.column.name(), &a.key).cmp(&(b.column.name(), &b.key)));
    ops.push(persist::retained_from_op(end));
    let blocks = KeyRange {
        column: Column::Blocks,
        start: persist::height_key(range.start),
        end: persist::height_key(end),
    };
    store
        .delete_ranges_with(&[blocks], ops, false)
        .with_context(|| format!("deleting heights {}..{end}", range.start))?;
    Ok(outcome)
}

/// Flushes the store, then compacts what pruning deletes from: the blocks column below
/// `h/` ‖ `retained_from` (the `b/` and `d/` indexes sort before `h/`, so this covers them and
/// the pruned heights, not the retained ones), and the receipts and batches columns.
fn compact(store: &Store, retained_from: Height) -> Result<()> {
    store.flush().context("flushing before compaction")?;
    let below = persist::height_key(retained_from);
    store.compact_range(Column::Blocks, Some((&[], &below)));
    store.compact_range(Column::Receipts, None);
    store.compact_range(Column::Batches, None);
    Ok(())
}

fn delete(column: Column, key: Vec<u8>) -> WriteOp {
    WriteOp {
        column,
        key,
        value: None,
    }
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
