//! The batching task: owns the dissemination state machine. Every tick it moves admitted
//! transactions from the mempool into batches and seals batches whose timer ran out; it counts
//! acknowledgements of its own batches. It carries out the machine's actions in order: a batch
//! is stored before it is broadcast, and a finished proof goes to the consensus driver's queue
//! (waiting for room: own proofs are never dropped) and to every peer.

use crate::{clock::now_ms, metrics::Metrics, peers::Outbound};
use keel_authority::{Dissemination, DisseminationAction, Mempool, store_batch};
use keel_p2p::Notification;
use keel_storage::Store;
use keel_types::{Batch, BatchAck, ProofOfAvailability};
use parking_lot::Mutex;
use std::{sync::Arc, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// What the batching task is built from.
pub struct BatchingDeps {
    /// The state machine.
    pub dissemination: Dissemination,
    /// Admitted transactions (shared with the API, which admits into it).
    pub mempool: Arc<Mutex<Mempool>>,
    /// Where batches are stored.
    pub store: Arc<Store>,
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
}

/// Starts the batching task.
pub fn spawn(deps: BatchingDeps) -> JoinHandle<()> {
    tokio::spawn(run(deps))
}

async fn run(deps: BatchingDeps) {
    let BatchingDeps {
        mut dissemination,
        mempool,
        store,
        outbound,
        mut acks,
        proofs,
        metrics,
        shutdown,
        tick,
        take,
    } = deps;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let carry = Carry {
        store: &store,
        outbound: &outbound,
        proofs: &proofs,
    };
    loop {
        // The ticker comes before acknowledgements: a flood of them cannot stop sealing.
        let actions = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                let txs = mempool.lock().take(take);
                let now = now_ms();
                let mut actions = dissemination.on_transactions(txs, now);
                actions.extend(dissemination.tick(now));
                for size in dissemination.drain_sealed_sizes() {
                    metrics.batches_sealed.inc();
                    metrics.batch_size.observe(size as f64);
                }
                actions
            }
            Some(ack) = acks.recv() => dissemination.on_ack(&ack, now_ms()),
        };
        if let Err(e) = carry.out(actions).await {
            tracing::error!(error = %e, "cannot store a batch; shutting down");
            shutdown.cancel();
            return;
        }
    }
}

/// Carries out dissemination actions.
struct Carry<'a> {
    store: &'a Arc<Store>,
    outbound: &'a Outbound,
    proofs: &'a mpsc::Sender<ProofOfAvailability>,
}

impl Carry<'_> {
    async fn out(&self, actions: Vec<DisseminationAction>) -> anyhow::Result<()> {
        for action in actions {
            match action {
                DisseminationAction::StoreBatch(batch) => {
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || store_batch(&store, &batch)).await??;
                }
                DisseminationAction::BroadcastBatch(batch) => {
                    self.outbound
                        .broadcast(&Notification::Batch(Batch::clone(&batch)));
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
