//! The driver at epoch boundaries (see the driver's module documentation): messages of other
//! epochs, the epoch's end height, and the switch to the next epoch's committee.

use super::{Driver, PeerMessage};
use crate::{epoch::EpochView, persist};
use keel_consensus::{CertificateCache, ConsensusMessage, Input};
use keel_types::ValidatorIndex;

impl Driver {
    /// Lets through a message of the current epoch while this node is a member. An older
    /// epoch's message is refused and counted; a newer one is held (bounded, oldest dropped)
    /// until the switch.
    pub(super) fn admit_epoch(
        &mut self,
        from: ValidatorIndex,
        message: ConsensusMessage,
    ) -> Option<ConsensusMessage> {
        let epoch = message.epoch();
        let current = self.committee.epoch();
        if epoch < current {
            self.metrics
                .wrong_epoch_messages
                .with_label_values(&["old"])
                .inc();
            tracing::debug!(%from, %epoch, %current, "consensus message of an old epoch refused");
            return None;
        }
        if epoch > current {
            if self.held.len() >= self.max_held {
                self.held.pop_front();
                self.metrics
                    .wrong_epoch_messages
                    .with_label_values(&["future_dropped"])
                    .inc();
            }
            let held: PeerMessage = (from, message);
            self.held.push_back(held);
            self.metrics
                .wrong_epoch_messages
                .with_label_values(&["future"])
                .inc();
            return None;
        }
        if !self.member {
            self.metrics.consensus_dropped.inc();
            return None;
        }
        Some(message)
    }

    /// Execution published the epoch: a scheduled end, or the next epoch (see the module
    /// documentation).
    pub(super) async fn on_epoch(&mut self, view: &EpochView) {
        if view.epoch() <= self.committee.epoch() {
            if view.epoch() == self.committee.epoch() {
                self.ends_at = view.ends_at();
            }
            return;
        }
        let started = std::time::Instant::now();
        // Peers still in the old epoch may lack the certificate that committed its last block
        // here (say this node formed it as the next leader and was still waiting to propose).
        // A timeout carries this node's highest QC: receiving it commits that block there too,
        // so they reach the end and switch as well.
        if self.member && !self.paused {
            let round = self.core.round();
            self.process(Input::Timer { round }).await;
        }
        let store = self.store.clone();
        let (committee, chain_id, after) = (
            view.committee().clone(),
            self.chain_id,
            view.started_after(),
        );
        let moved = tokio::task::spawn_blocking(move || {
            persist::start_epoch(&store, &committee, chain_id, after)?;
            persist::recover(&store, &committee, chain_id)
        })
        .await;
        let recovery = match moved {
            Ok(Ok(recovery)) => recovery,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot start the new epoch's consensus; shutting down");
                self.shutdown.cancel();
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "epoch switch task failed; shutting down");
                self.shutdown.cancel();
                return;
            }
        };
        self.committee = view.committee().clone();
        self.certs = CertificateCache::new(self.certs.capacity());
        self.timer = None;
        self.propose_timer = None;
        self.paused = false;
        self.ends_at = view.ends_at();
        self.metrics.epoch_changes.inc();
        self.metrics.queued_proofs.set(0);
        self.publish_height(view.started_after());
        let held = std::mem::take(&mut self.held);
        match view.me {
            Some(me) => {
                self.me = me;
                self.member = true;
                self.key = view.keys.protocol.clone();
                self.core = (self.rebuild)(recovery, &self.committee, me, &self.key);
                tracing::info!(epoch = %view.epoch(), validator = %me, after = %view.started_after(), took_ms = started.elapsed().as_millis() as u64, "consensus starts the new epoch");
                self.process(Input::Start).await;
            }
            None => {
                self.member = false;
                tracing::info!(epoch = %view.epoch(), "not in the new committee: consensus stops here");
            }
        }
        for (from, message) in held {
            if message.epoch() == self.committee.epoch() {
                self.on_message(from, message).await;
            } else if message.epoch() > self.committee.epoch() {
                self.held.push_back((from, message));
            }
        }
    }
}
