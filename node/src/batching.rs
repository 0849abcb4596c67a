//! The batching task: owns the dissemination state machine. Every tick it moves admitted
//! transactions from the mempool into batches and seals batches whose timer ran out; it counts
//! acknowledgements of its own batches. It carries out the machine's actions in order: a batch
//! is stored (synced, with its ledger entry: see `batch_gc`) before it is broadcast, and a finished proof goes to the consensus driver's queue
//! (waiting for room: own proofs are never dropped) and to every peer.
//!
//! At an epoch change ([`crate::epoch`]) the machine is rebuilt for the new committee (batches
//! name their epoch; the old epoch's unfinished batches are dropped). A node outside the
//! committee seals nothing: admitted transactions wait in the mempool.
//!
//! Batch sequence numbers never repeat within an epoch across restarts: the machine asks for
//! reservations ahead of use, which this task writes synced ([`reserved_sequence`] reads the
//! last one back when the machine is built).

use crate::{clock::now_ms, epoch::EpochWatch, metrics::Metrics, peers::Outbound};
use keel_authority::{
    BatchLedger, Dissemination, DisseminationAction, LedgerEntry, Mempool, store_acknowledged_batch,
};
use keel_p2p::Notification;
use keel_storage::{Column, Store};
use keel_types::{Batch, BatchAck, Committee, Epoch, KeyPair, ProofOfAvailability, ValidatorIndex};
use parking_lot::Mutex;
use std::{sync::Arc, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Builds the dissemination machine for a committee, this node's index in it and its protocol key.
pub type DisseminationBuilder =
    Box<dyn Fn(&Committee, ValidatorIndex, Arc<KeyPair>) -> Dissemination + Send + Sync>;

/// What the batching task is built from.
pub struct BatchingDeps {
    /// Builds the state machine for each epoch.
    pub dissemination: DisseminationBuilder,
    /// The epoch.
    pub epoch: EpochWatch,
    /// Admitted transactions (shared with the API, which admits into it).
    pub mempool: Arc<Mutex<Mempool>>,
    /// Where batches are stored.
    pub store: Arc<Store>,
    /// Stored, unordered batches: own ones are recorded so they are deleted if they expire.
    pub ledger: Arc<Mutex<BatchLedger>>,
    /// Sends batches and proofs.
    pub outbound: Outbound,
    /// Acknowledgements of own batches (from the router).
    pub acks: mpsc::Receiver<BatchAck>,
    /// The consensus driver's proof input.
    pub proofs: mpsc::Sender<ProofOfAvailability>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// How often the mempool is drained into batches.
    pub tick: Duration,
    /// Most transactions taken from the mempool per tick.
    pub take: usize,
    /// Admitted, unexecuted transactions: how long the oldest has waited paces sealing
    /// (batches grow with load).
    pub pending: Arc<crate::pending::PendingTxs>,
    /// Transactions that waited longer than this no longer count for that wait.
    pub pending_horizon: Duration,
}

/// Starts the batching task.
pub fn spawn(deps: BatchingDeps) -> JoinHandle<()> {
    tokio::spawn(run(deps))
}

async fn run(deps: BatchingDeps) {
    let BatchingDeps {
        dissemination: build,
        mut epoch,
        mempool,
        store,
        ledger,
        outbound,
        mut acks,
        proofs,
        metrics,
        shutdown,
        tick,
        take,
        pending,
        pending_horizon,
    } = deps;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let carry = Carry {
        store: &store,
        ledger: &ledger,
        outbound: &outbound,
        proofs: &proofs,
    };
    let make = |view: &crate::epoch::EpochView| {
        view.me
            .map(|me| build(view.committee(), me, view.keys.protocol.clone()))
    };
    let mut machine = make(&epoch.borrow_and_update());
    loop {
        // The ticker comes before acknowledgements: a flood of them cannot stop sealing.
        let actions = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Ok(()) = epoch.changed() => {
                let view = epoch.borrow_and_update().clone();
                if machine.as_ref().map(|m| m.epoch()) != Some(view.epoch()) {
                    machine = make(&view);
                }
                continue;
            }
            _ = ticker.tick(), if machine.is_some() => {
                let Some(dissemination) = machine.as_mut() else { continue };
                let waited = pending.oldest_wait(std::time::Instant::now(), pending_horizon);
                let seal_after = dissemination.pace(waited.as_millis() as u64);
                metrics
                    .batch_seal_after_seconds
                    .set(seal_after as f64 / 1000.0);
                let txs = mempool.lock().take(take);
                let now = now_ms();
                let mut actions = dissemination.on_transactions(txs, now);
                actions.extend(dissemination.tick(now));
                for size in dissemination.drain_sealed_sizes() {
                    metrics.batches_sealed.inc();
                    metrics.batch_size.observe(size as f64);
                }
                metrics.batches_reoffered.inc_by(dissemination.drain_reoffered());
                actions
            }
            Some(ack) = acks.recv() => match machine.as_mut() {
                Some(dissemination) => dissemination.on_ack(&ack, now_ms()),
                None => continue,
            },
        };
        if let Err(e) = carry.out(actions).await {
            tracing::error!(error = %e, "cannot store a batch; shutting down");
            shutdown.cancel();
            return;
        }
    }
}

/// Meta key: the last batch sequence reservation of this validator, bcs `(Epoch, u64)`.
const SEQUENCE_KEY: &[u8] = b"batching/sequence";

/// The first batch sequence to use in `epoch`: the last reservation if it was made in that
/// epoch, 0 otherwise (a store that cannot be read is reported, and the epoch starts at 0).
pub fn reserved_sequence(store: &Store, epoch: Epoch) -> u64 {
    let stored = store
        .get(Column::Meta, SEQUENCE_KEY)
        .map(|v| v.and_then(|bytes| bcs::from_bytes::<(Epoch, u64)>(&bytes).ok()));
    match stored {
        Ok(Some((e, up_to))) if e == epoch => up_to,
        Ok(_) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the batch sequence reservation");
            0
        }
    }
}

fn reserve_sequences(store: &Store, epoch: Epoch, up_to: u64) -> anyhow::Result<()> {
    store.put_synced(Column::Meta, SEQUENCE_KEY, &bcs::to_bytes(&(epoch, up_to))?)?;
    Ok(())
}

/// Carries out dissemination actions.
struct Carry<'a> {
    store: &'a Arc<Store>,
    ledger: &'a Arc<Mutex<BatchLedger>>,
    outbound: &'a Outbound,
    proofs: &'a mpsc::Sender<ProofOfAvailability>,
}

impl Carry<'_> {
    async fn out(&self, actions: Vec<DisseminationAction>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                DisseminationAction::ReserveSequences { epoch, up_to } => {
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || reserve_sequences(&store, epoch, up_to))
                        .await??;
                }
                DisseminationAction::StoreBatch(batch) => {
                    let (store, ledger) = (self.store.clone(), self.ledger.clone());
                    tokio::task::spawn_blocking(move || {
                        // The digest is a hash of the whole batch: off the async workers.
                        let info = batch.info();
                        ledger.lock().record_own(&info);
                        let entry = LedgerEntry::of(&info, false);
                        store_acknowledged_batch(&store, &batch, &entry)
                    })
                    .await??;
                }
                DisseminationAction::BroadcastBatch(batch) => {
                    self.outbound
                        .broadcast(&Notification::Batch(Batch::clone(&batch)));
                }
                DisseminationAction::SendBatch { batch, to } => {
                    let notification = Notification::Batch(Batch::clone(&batch));
                    for peer in to {
                        self.outbound.send(peer, &notification);
                    }
                }
                DisseminationAction::SendAck { to, ack } => {
                    self.outbound.send(to, &Notification::BatchAck(ack));
                }
                DisseminationAction::ProofReady(proof) => {
                    self.outbound.broadcast(&Notification::Proof(proof.clone()));
                    // Own proofs wait for room; the driver only closes at shutdown.
                    let _ = self.proofs.send(proof).await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_is_read_back_in_its_epoch_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        assert_eq!(reserved_sequence(&store, Epoch(1)), 0);
        reserve_sequences(&store, Epoch(1), 20_000).unwrap();
        drop(store);
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        assert_eq!(reserved_sequence(&store, Epoch(1)), 20_000);
        assert_eq!(
            reserved_sequence(&store, Epoch(2)),
            0,
            "a new epoch starts at 0"
        );
    }
}
