//! The epoch the node is in, as execution decides it, and the network side of an epoch change.
//!
//! The execution thread is the only writer of the [`EpochView`] watch: it publishes the epoch
//! record of the executed state after every block that changed it (a scheduled end, or the end
//! itself). Every epoch-scoped task (consensus, batching, verification, checkpoints, sync, the
//! API) reads it and rebuilds its own state when the epoch number changes, so no task needs
//! another's lock and each switches on the same event.
//!
//! The network task here carries the switch out on the transport: the index ↔ key map
//! ([`Peers`]) becomes the new committee's, the new members are dialled, and for
//! `switch_grace` both the old and the new members may connect (peers that switch a little
//! later can still reach this node); then only the new committee (and sync-only peers) is
//! allowed and connections of the others are closed.

use crate::{metrics::Metrics, peers::Net, peers::Peers};
use keel_types::{Committee, Epoch, EpochState, Height, PublicKey, ValidatorIndex};
use std::{collections::HashSet, sync::Arc, time::Duration};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The epoch as the node's executed state has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochView {
    /// The committee (its epoch is the current epoch).
    pub committee: Committee,
    /// This node's index in it (`None`: not a member; it follows the chain without voting).
    pub me: Option<ValidatorIndex>,
    /// The last height of the previous epoch.
    pub started_after: Height,
    /// The epoch's last height, once a change is scheduled.
    pub ends_at: Option<Height>,
    /// The governance record (pending and scheduled changes), for the admin API.
    pub state: EpochState,
}

impl EpochView {
    /// The view of `state` for the node with protocol key `me`.
    pub fn new(state: EpochState, me: &PublicKey) -> Self {
        EpochView {
            me: state.committee.index_of(me),
            committee: state.committee.clone(),
            started_after: state.started_after,
            ends_at: state.ends_at,
            state,
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.committee.epoch()
    }
}

/// Readers of the epoch.
pub type EpochWatch = watch::Receiver<Arc<EpochView>>;

/// What the network task is built from.
pub struct EpochNetworkDeps {
    /// The epoch.
    pub epoch: EpochWatch,
    /// The transport.
    pub net: Net,
    /// The index ↔ key map every task sends through.
    pub peers: Peers,
    /// This node's network key (never dialled).
    pub me: PublicKey,
    /// How long old and new members are both allowed after a switch.
    pub switch_grace: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Stops the task.
    pub shutdown: CancellationToken,
}

/// Starts the network side of epoch changes.
pub fn spawn_network(deps: EpochNetworkDeps) -> JoinHandle<()> {
    tokio::spawn(run_network(deps))
}

async fn run_network(mut deps: EpochNetworkDeps) {
    let mut current = deps.epoch.borrow().epoch();
    loop {
        tokio::select! {
            _ = deps.shutdown.cancelled() => return,
            changed = deps.epoch.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let view = deps.epoch.borrow_and_update().clone();
        if view.epoch() == current {
            continue;
        }
        let old: HashSet<PublicKey> = deps.peers.keys().into_iter().collect();
        let new: HashSet<PublicKey> = view
            .committee
            .validators()
            .iter()
            .map(|v| v.network_key)
            .collect();
        tracing::info!(epoch = %view.epoch(), members = new.len(), member = view.me.is_some(), "epoch change: switching peers");
        deps.peers.set_committee(&view.committee);
        deps.net.set_allowed(old.union(&new).copied());
        for v in view.committee.validators() {
            if v.network_key == deps.me {
                continue;
            }
            match v.address.parse() {
                Ok(address) => deps.net.add_peer(v.network_key, address),
                Err(e) => {
                    tracing::warn!(address = %v.address, error = %e, "a member's address does not parse; not dialled")
                }
            }
        }
        deps.metrics.epoch.set(view.epoch().0 as i64);
        current = view.epoch();
        tokio::select! {
            _ = deps.shutdown.cancelled() => return,
            _ = tokio::time::sleep(deps.switch_grace) => {}
        }
        // Only if no newer epoch arrived meanwhile (the next pass handles that one).
        if deps.epoch.borrow().epoch() != current {
            continue;
        }
        deps.net.set_allowed(new.iter().copied());
        for key in old.difference(&new) {
            deps.net.remove_peer(key);
        }
    }
}
