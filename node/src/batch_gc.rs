//! The batch ledger task: follows the committed chain and carries out what the
//! [`BatchLedger`] releases — ordered batches leave the ledger (their index entries go; the
//! batches stay until pruning deletes their heights), expired unordered ones are deleted.
//!
//! - At start-up [`restore`] rebuilds the ledger from its index entries in the Meta column
//!   (one small entry per stored, unordered batch), so a restart forgets no quota and no
//!   batch to delete.
//! - On every new committed height it reads the newly committed blocks from the store: their
//!   proofs are what they ordered, and the newest one's timestamp is the committed time that
//!   expires batches. After a jump of more than [`MAX_BLOCKS_READ`] heights (state sync) only
//!   the newest block is read; entries of batches the skipped blocks ordered then expire with
//!   time, and an expired batch that a block ordered is found in the store's batch index and
//!   kept.
//! - Deletions are not synced: a batch deleted before a crash is deleted again, or found
//!   expired again, after it.
//! - An own batch that expired unordered (its proof never made it into a block: a long stall,
//!   a full acknowledgement tracker) can never be ordered any more, since voters refuse a
//!   batch at or past its expiry: its transactions are read back before the deletion and
//!   admitted again ([`keel_authority::Admission::check_verified`]: every check but the
//!   signatures, which this node verified at their first admission), so an accepted
//!   transaction does not vanish. Those that can no longer be admitted (expired, nonce used,
//!   fees unpaid) are dropped; their sender sees them expire.

use crate::{metrics::Metrics, persist};
use anyhow::Result;
use keel_authority::{
    BatchLedger, LedgerEntry, Mempool, Released, batch_ledger::LEDGER_PREFIX, ledger_key,
};
use keel_storage::{Column, Store, WriteOp};
use keel_types::{Batch, Digest, Height, SignedTransaction};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Most committed blocks read for one jump of the committed height.
pub const MAX_BLOCKS_READ: u64 = 10_000;

/// What the task is built from.
pub struct BatchGcDeps {
    /// The ledger (shared with the batch verifier and the batching task, which admit into it).
    pub ledger: Arc<Mutex<BatchLedger>>,
    /// Where the transactions of own expired batches are admitted again.
    pub mempool: Arc<Mutex<Mempool>>,
    /// The store.
    pub store: Arc<Store>,
    /// The committed height.
    pub committed: watch::Receiver<Height>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
}

/// Puts the ledger's index entries from `store` back into `ledger`.
pub fn restore(store: &Store, ledger: &mut BatchLedger) -> Result<usize> {
    let entries = store.scan_prefix(Column::Meta, LEDGER_PREFIX)?;
    let mut restored = 0;
    for (key, value) in entries {
        let Some(raw) = key.get(LEDGER_PREFIX.len()..) else {
            continue;
        };
        let (Ok(digest), Ok(entry)) = (
            <[u8; 32]>::try_from(raw),
            bcs::from_bytes::<LedgerEntry>(&value),
        ) else {
            tracing::warn!("ignoring a corrupt batch ledger entry");
            continue;
        };
        ledger.restore(Digest(digest), entry);
        restored += 1;
    }
    Ok(restored)
}

/// Starts the task.
pub fn spawn(deps: BatchGcDeps) -> JoinHandle<()> {
    tokio::spawn(run(deps))
}

async fn run(deps: BatchGcDeps) {
    let BatchGcDeps {
        ledger,
        mempool,
        store,
        mut committed,
        metrics,
        shutdown,
    } = deps;
    let mut seen = *committed.borrow_and_update();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = committed.changed() => if changed.is_err() { return },
        }
        let height = *committed.borrow_and_update();
        if height <= seen {
            continue;
        }
        let (from, to) = (seen, height);
        let (store, ledger, mempool, metrics) = (
            store.clone(),
            ledger.clone(),
            mempool.clone(),
            metrics.clone(),
        );
        let done = tokio::task::spawn_blocking(move || {
            let again = follow(&store, &ledger, &metrics, from, to)?;
            readmit(&store, &mempool, &metrics, again);
            anyhow::Ok(())
        });
        // On a failure the heights are read again at the next commit (batches the ledger
        // already let go of are found again at the next start-up, from their index entries).
        match done.await {
            Ok(Ok(())) => seen = to,
            Ok(Err(e)) => tracing::warn!(error = %e, "batch ledger: cannot follow a commit"),
            Err(e) => tracing::warn!(error = %e, "batch ledger task failed"),
        }
    }
}

/// Feeds heights `(from, to]` to the ledger and carries out what it releases; returns the
/// transactions of own batches that expired unordered.
fn follow(
    store: &Store,
    ledger: &Mutex<BatchLedger>,
    metrics: &Metrics,
    from: Height,
    to: Height,
) -> Result<Vec<SignedTransaction>> {
    let first = Height(from.0.max(to.0.saturating_sub(MAX_BLOCKS_READ)) + 1);
    let mut released = Released::default();
    for h in first.0..=to.0 {
        let Some(record) = persist::committed_at(store, Height(h))? else {
            continue;
        };
        let block = &record.block.block;
        let ordered = block.payload.iter().map(|p| p.info.digest);
        let r = ledger.lock().on_committed(ordered, block.timestamp);
        released.ordered.extend(r.ordered);
        released.expired.extend(r.expired);
        released.own_expired.extend(r.own_expired);
    }
    carry_out(store, &released, metrics)
}

/// Drops the index entries of ordered batches, and deletes expired batches no block ordered;
/// returns the transactions of the own ones among those.
fn carry_out(
    store: &Store,
    released: &Released,
    metrics: &Metrics,
) -> Result<Vec<SignedTransaction>> {
    let mut ops: Vec<WriteOp> = released.ordered.iter().map(forget).collect();
    let own: std::collections::HashSet<&Digest> = released.own_expired.iter().collect();
    let mut again = Vec::new();
    for digest in &released.expired {
        ops.push(forget(digest));
        if persist::batch_ordered_at(store, digest)?.is_none() {
            if own.contains(digest)
                && let Some(bytes) = store.get(Column::Batches, &digest.0)?
            {
                match bcs::from_bytes::<Batch>(&bytes) {
                    Ok(batch) => again.extend(batch.transactions),
                    Err(e) => tracing::warn!(%digest, error = %e, "cannot decode an own batch"),
                }
            }
            ops.push(WriteOp {
                column: Column::Batches,
                key: digest.0.to_vec(),
                value: None,
            });
            metrics.batches_expired.inc();
        }
    }
    if !ops.is_empty() {
        store.write(ops, false)?;
    }
    Ok(again)
}

/// Admits again the transactions of own batches that expired unordered.
fn readmit(
    store: &Store,
    mempool: &Mutex<Mempool>,
    metrics: &Metrics,
    txs: Vec<SignedTransaction>,
) {
    if txs.is_empty() {
        return;
    }
    let offered = txs.len();
    let accounts = keel_authority::state::StoreAccounts(store);
    let admission = mempool.lock().admission();
    let checked = admission.check_verified(txs, crate::clock::now_ms(), &accounts);
    let admitted = mempool
        .lock()
        .insert_checked(checked)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    metrics.readmitted.inc_by(admitted as u64);
    tracing::info!(
        offered,
        admitted,
        "own batches expired unordered: transactions admitted again"
    );
}

fn forget(digest: &Digest) -> WriteOp {
    WriteOp {
        column: Column::Meta,
        key: ledger_key(digest),
        value: None,
    }
}
