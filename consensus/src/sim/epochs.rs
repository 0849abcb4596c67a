//! Epoch changes in the simulator, as a node carries them out around its core (keel-node's
//! driver and range sync).
//!
//! With [`super::SimConfig::epoch_length`] `L > 0`, epoch `e` (the first is 1) ends at height
//! `e·L`. A replica that commits that height keeps nothing committed above it, sends one last
//! timeout carrying its highest QC (peers still in the old epoch commit the end from it), and
//! starts epoch `e+1` with the next committee (the same validators under the next epoch) at
//! round 0 from the epoch's genesis root at `e·L`: fresh safety data (an older epoch's is
//! ignored, as the node's recovery does), the new epoch's blocks only, its own leader history.
//! Messages of an older epoch are refused and counted; a newer epoch's are held (bounded,
//! oldest dropped) and replayed after the switch.
//!
//! A replica that learns of the new epoch late (it was partitioned or down at the boundary, so
//! the last timeouts of the old epoch never reached it) sees the newer epoch's messages and
//! asks their sender for the committed blocks up to its epoch's end: the model of a node's
//! range sync, whose answer the certified epoch-ending checkpoint proves. Only honest replicas
//! answer (a Byzantine answer would fail that proof), at most one request is open per
//! replica, and a request that goes unanswered is asked again after a timer's base timeout.

use super::{Simulation, network::Event, scenario::CHAIN};
use crate::{
    block_tree::{CommitRoot, CommittedBlock},
    core::Input,
    message::ConsensusMessage,
};
use keel_types::{Committee, Epoch, Height, Round, SignedBlock};

/// Most newer-epoch messages a replica holds (the oldest goes first).
pub(super) const MAX_HELD: usize = 1_024;

impl Simulation {
    /// The committee of `epoch` (the same validators in every epoch).
    pub(super) fn committee_of(&self, epoch: Epoch) -> Committee {
        // INVARIANT: the first committee's validators make a valid committee in any epoch.
        Committee::new(epoch, self.committee.validators().to_vec())
            .expect("INVARIANT: a valid committee")
    }

    /// The last height of `epoch` (`None`: epochs never end).
    pub(super) fn epoch_end(&self, epoch: Epoch) -> Option<Height> {
        (self.config.epoch_length > 0).then(|| Height(epoch.0 * self.config.epoch_length))
    }

    /// Whether replica `i` takes `message` now: an older epoch's is refused, a newer one's held
    /// (and the sender asked for the rest of the replica's epoch). `from` is the sender.
    pub(super) fn admit_epoch(
        &mut self,
        from: Option<usize>,
        i: usize,
        message: &ConsensusMessage,
    ) -> bool {
        let epoch = self.replicas[i].persisted.epoch;
        if message.epoch() < epoch {
            self.report.old_epoch_refused += 1;
            return false;
        }
        if message.epoch() > epoch {
            let held = &mut self.replicas[i].held;
            if held.len() >= MAX_HELD {
                held.pop_front();
            }
            held.push_back((from, message.clone()));
            self.report.future_epoch_held += 1;
            if let Some(server) = from {
                self.ask_epoch_end(i, server);
            }
            return false;
        }
        true
    }

    /// Replica `i` asks `server` for the committed blocks up to the end of its epoch, unless a
    /// request is open.
    fn ask_epoch_end(&mut self, i: usize, server: usize) {
        let retry = self.config.pacemaker.base_timeout_ms;
        let r = &mut self.replicas[i];
        if r.epoch_sync_sent
            .is_some_and(|at| self.net.now < at + retry)
        {
            return;
        }
        r.epoch_sync_sent = Some(self.net.now);
        let (epoch, after) = (r.persisted.epoch, r.persisted.committed.len() as u64);
        self.net.over_link(
            i,
            server,
            Event::EpochSync {
                requester: i,
                server,
                epoch,
                after: Height(after),
            },
        );
    }

    /// `server` answers a request for `epoch`'s committed blocks above `after`, if it is honest,
    /// up, and has committed the whole epoch.
    pub(super) fn on_epoch_sync(
        &mut self,
        requester: usize,
        server: usize,
        epoch: Epoch,
        after: Height,
    ) {
        let Some(end) = self.epoch_end(epoch) else {
            return;
        };
        let s = &self.replicas[server];
        if !self.is_honest(server)
            || s.core.is_none()
            || (s.persisted.committed.len() as u64) < end.0
        {
            return;
        }
        let blocks: Vec<SignedBlock> = (after.0..end.0)
            .filter_map(|h| s.persisted.committed.get(h as usize))
            .filter_map(|d| s.persisted.blocks.get(d).cloned())
            .collect();
        self.net.over_link(
            server,
            requester,
            Event::EpochSyncReply {
                to: requester,
                first: Height(after.0 + 1),
                blocks,
            },
        );
    }

    /// Replica `i` applies committed blocks from `first` on (those it has not committed yet),
    /// then switches if they reach its epoch's end.
    pub(super) fn on_epoch_sync_reply(
        &mut self,
        i: usize,
        first: Height,
        blocks: Vec<SignedBlock>,
    ) {
        let r = &mut self.replicas[i];
        r.epoch_sync_sent = None;
        if r.core.is_none() {
            return;
        }
        let have = r.persisted.committed.len() as u64;
        let fresh: Vec<CommittedBlock> = blocks
            .into_iter()
            .enumerate()
            .map(|(k, block)| CommittedBlock {
                block,
                height: Height(first.0 + k as u64),
            })
            .filter(|cb| cb.height.0 > have)
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.report.epoch_syncs += 1;
        for cb in &fresh {
            self.replicas[i]
                .persisted
                .blocks
                .insert(cb.block.digest(), cb.block.clone());
        }
        self.on_commit(i, fresh);
        if self.replicas[i].switch_pending {
            self.switch_epoch(i);
        }
    }

    /// Replica `i` committed its epoch's last height: it moves to the next epoch (see the
    /// module documentation).
    pub(super) fn switch_epoch(&mut self, i: usize) {
        self.replicas[i].switch_pending = false;
        let Some(core) = self.replicas[i].core.as_ref() else {
            return;
        };
        let round = core.round();
        // The hand-off: a timeout carrying this replica's highest QC.
        self.step(i, Input::Timer { round });
        let old = self.replicas[i].persisted.epoch;
        let Some(end) = self.epoch_end(old) else {
            return;
        };
        let r = &mut self.replicas[i];
        let next = Epoch(old.0 + 1);
        let timestamp = r
            .persisted
            .root
            .map(|root| root.timestamp)
            .unwrap_or_default();
        r.persisted.epoch = next;
        r.persisted.root = Some(CommitRoot {
            digest: keel_types::genesis_digest(next, CHAIN),
            round: Round(0),
            height: end,
            timestamp,
        });
        // Old timers must not fire in the new epoch's rounds.
        r.timer_generation += 1;
        self.checker.epoch_started(i);
        let core = self.make_core(i, false);
        self.replicas[i].core = Some(core);
        self.step(i, Input::Start);

        let held = std::mem::take(&mut self.replicas[i].held);
        for (from, message) in held {
            if self.replicas[i].core.is_none() {
                break;
            }
            if message.epoch() >= next {
                self.deliver(from, i, message);
            }
        }
    }
}
