//! The checkpoint task: owns the checkpoint state machine (keel-authority's
//! [`CheckpointMachine`]) and carries out its actions. Inputs:
//!
//! - executed heights from the execution thread (`[limits] checkpoint_queue`; full: the
//!   execution thread waits, so no checkpoint height is ever skipped);
//! - peers' checkpoint signatures from the router (`[limits] checkpoint_signature_queue`; full:
//!   the router drops and counts, the signer sends its uncertified signature again every
//!   `checkpoint_rebroadcast_ms`);
//! - certified checkpoints fetched from a peer that signs sequences beyond this node's window
//!   (one fetch at a time, at most one per rebroadcast tick).
//!
//! Actions run in the machine's order: an own signature is stored (on the blocking pool)
//! before it is broadcast; a certified checkpoint is stored before the next input is handled.
//! A store failure stops the node (its disk is broken). Signature checks run inline: there are
//! at most committee-size signatures per checkpoint interval.

use crate::{keys::KeyRing, metrics::Metrics, peers::Outbound};
use keel_authority::{
    CertifiedOutcome, CheckpointAction, CheckpointMachine, Executed, SignatureOutcome,
    checkpoint_store,
};
use keel_p2p::{Notification, Request, Response};
use keel_storage::Store;
use keel_types::{CertifiedCheckpoint, CheckpointSignature, Height, ValidatorIndex};
use std::{sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// What the checkpoint task is built from.
pub struct CheckpointTaskDeps {
    /// The state machine, resumed from the store.
    pub machine: CheckpointMachine,
    /// The executed state at start (re-offered: it may be a checkpoint height the node did not
    /// get to sign before it stopped).
    pub start: Executed,
    /// Where checkpoints are kept.
    pub store: Arc<Store>,
    /// Broadcasts signatures, fetches certificates.
    pub outbound: Outbound,
    /// Executed heights (from the execution thread).
    pub executed: mpsc::Receiver<Executed>,
    /// Peers' signatures (from the router), with the sending validator.
    pub signatures: mpsc::Receiver<(ValidatorIndex, CheckpointSignature)>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// How often an uncertified own signature is sent again.
    pub rebroadcast: Duration,
    /// The height of the latest certified checkpoint (the pruner keeps everything above it,
    /// so peers can state-sync to it and range-sync on).
    pub certified: watch::Sender<Option<Height>>,
    /// This node's keys: an epoch-ending block names the next committee, and with it the
    /// protocol key to sign with from then on (a rotated one).
    pub keys: Arc<KeyRing>,
}

/// Starts the checkpoint task.
pub fn spawn(deps: CheckpointTaskDeps) -> JoinHandle<()> {
    tokio::spawn(run(deps))
}

async fn run(deps: CheckpointTaskDeps) {
    let CheckpointTaskDeps {
        mut machine,
        start,
        store,
        outbound,
        mut executed,
        mut signatures,
        metrics,
        shutdown,
        rebroadcast,
        certified,
        keys,
    } = deps;
    let m = &metrics.checkpoints;
    m.certified_sequence
        .set(machine.certified_sequence() as i64);
    m.signed_sequence
        .set(machine.signed_sequence().map_or(0, |s| s as i64));
    let mut ticker = tokio::time::interval(rebroadcast);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Answers of certificate fetches; one fetch in flight at most.
    let (fetched_tx, mut fetched) = mpsc::channel::<CertifiedCheckpoint>(1);
    let mut ahead: Option<ValidatorIndex> = None;
    let carry = Carry {
        store: &store,
        outbound: &outbound,
        metrics: &metrics,
        certified: &certified,
    };
    let first = machine.handle_executed(start).actions;
    if carry.out(&machine, first).await.is_err() {
        shutdown.cancel();
        return;
    }
    loop {
        let actions = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(e) = executed.recv() => {
                if let Some((_, next)) = e.epoch_end.as_ref().and_then(|c| keys.for_committee(c)) {
                    machine.set_next_key(next.protocol.clone());
                }
                machine.handle_executed(e).actions
            }
            Some(c) = fetched.recv() => {
                let handled = machine.handle_certified(c);
                if let CertifiedOutcome::Invalid(e) = &handled.outcome {
                    tracing::warn!(error = %e, "a peer's certified checkpoint does not verify");
                }
                handled.actions
            }
            Some((from, s)) = signatures.recv() => {
                m.signatures_received.inc();
                let handled = machine.handle_signature(s);
                if let Some(reason) = handled.outcome.refusal() {
                    m.signatures_refused.with_label_values(&[reason]).inc();
                }
                match &handled.outcome {
                    SignatureOutcome::OutOfWindow => ahead = Some(from),
                    SignatureOutcome::Invalid(e) => {
                        tracing::debug!(%from, error = %e, "invalid checkpoint signature");
                    }
                    SignatureOutcome::Equivocation => {
                        tracing::warn!(%from, "a validator signed two checkpoints with one sequence");
                    }
                    _ => {}
                }
                handled.actions
            }
            _ = ticker.tick() => {
                if let Some(own) = machine.uncertified_own() {
                    outbound.broadcast(&Notification::CheckpointSignature(own.clone()));
                }
                if let Some(peer) = ahead.take()
                    && let Ok(permit) = fetched_tx.clone().try_reserve_owned()
                {
                    let outbound = outbound.clone();
                    tokio::spawn(async move {
                        match outbound.request(peer, &Request::LatestCheckpoint).await {
                            Ok(Response::Checkpoint(Some(c))) => {
                                permit.send(c);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(%peer, error = %e, "checkpoint fetch failed"),
                        }
                    });
                }
                Vec::new()
            }
        };
        if carry.out(&machine, actions).await.is_err() {
            shutdown.cancel();
            return;
        }
    }
}

/// Carries out the machine's actions.
struct Carry<'a> {
    store: &'a Arc<Store>,
    outbound: &'a Outbound,
    metrics: &'a Metrics,
    certified: &'a watch::Sender<Option<Height>>,
}

impl Carry<'_> {
    /// Err: the store failed (logged); the node stops.
    async fn out(
        &self,
        machine: &CheckpointMachine,
        actions: Vec<CheckpointAction>,
    ) -> Result<(), ()> {
        let m = &self.metrics.checkpoints;
        for action in actions {
            match action {
                CheckpointAction::PersistOwn(own) => {
                    let sequence = own.checkpoint.sequence;
                    self.blocking(move |s| checkpoint_store::save_own(s, &own))
                        .await?;
                    m.signed_sequence.set(sequence as i64);
                }
                CheckpointAction::Broadcast(own) => {
                    self.outbound
                        .broadcast(&Notification::CheckpointSignature(own));
                }
                CheckpointAction::PersistCertified(certified) => {
                    let cp = &certified.checkpoint;
                    tracing::info!(
                        sequence = cp.sequence,
                        height = %cp.last_height,
                        root = %cp.state_root.short(),
                        signers = certified.signatures.len(),
                        "checkpoint certified"
                    );
                    let height = cp.last_height;
                    self.blocking(move |s| checkpoint_store::save_certified(s, &certified))
                        .await?;
                    self.certified.send_replace(Some(height));
                    m.certified_sequence
                        .set(machine.certified_sequence() as i64);
                }
                CheckpointAction::Diverged {
                    sequence,
                    own,
                    certified,
                } => {
                    m.diverged.inc();
                    tracing::error!(
                        sequence,
                        %own,
                        %certified,
                        "this node's checkpoint differs from the certified one: its execution diverged"
                    );
                }
            }
        }
        Ok(())
    }

    async fn blocking(
        &self,
        write: impl FnOnce(&Store) -> keel_authority::Result<()> + Send + 'static,
    ) -> Result<(), ()> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || write(&store)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot store a checkpoint; shutting down");
                Err(())
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint write task failed; shutting down");
                Err(())
            }
        }
    }
}
