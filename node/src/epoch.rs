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
//! later can still reach this node); then only the new committee is allowed and connections
//! of the others are closed. Validators that a pending or scheduled change adds are allowed
//! and dialled too, from the first vote on: a joining validator syncs as a follower before
//! the epoch that includes it.
//!
//! Key rotation: each view carries the key pair this node uses in its epoch (see
//! [`crate::keys`]). When the switch brings a rotated network key, the endpoint presents it
//! from then on and re-makes its connections. Peers allow a rotating validator's new network
//! key from its vote on (it may switch before them) and dial it once the epoch naming it
//! starts; its old key goes with the grace period.

use crate::{
    keys::{KeyRing, ValidatorKeys},
    metrics::Metrics,
    peers::Net,
    peers::Peers,
};
use keel_types::{
    Committee, CommitteeChange, Epoch, EpochState, Height, PublicKey, ValidatorIndex,
};
use std::{collections::HashSet, sync::Arc, time::Duration};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The epoch as the node's executed state has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochView {
    /// The governance record: the committee, when the epoch started and ends, pending and
    /// scheduled changes.
    pub state: EpochState,
    /// This node's index in the committee (`None`: not a member; it follows the chain
    /// without voting).
    pub me: Option<ValidatorIndex>,
    /// The keys this node uses in the epoch: the pair the committee names (a rotation's
    /// staged pair once its epoch starts), or the current pair while not a member.
    pub keys: Arc<ValidatorKeys>,
}

impl EpochView {
    /// The view of `state` for the node holding `keys`.
    pub fn new(state: EpochState, keys: &KeyRing) -> Self {
        let (me, keys) = match keys.for_committee(&state.committee) {
            Some((me, keys)) => (Some(me), keys),
            None => (None, keys.current()),
        };
        EpochView { state, me, keys }
    }

    /// The committee (its epoch is the current epoch).
    pub fn committee(&self) -> &Committee {
        &self.state.committee
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.state.epoch()
    }

    /// The last height of the previous epoch.
    pub fn started_after(&self) -> Height {
        self.state.started_after
    }

    /// The epoch's last height, once a change is scheduled.
    pub fn ends_at(&self) -> Option<Height> {
        self.state.ends_at
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

/// Network keys and addresses of validators that pending or scheduled changes add: they may
/// connect (and are dialled) to sync before the epoch that includes them.
fn joining(view: &EpochView) -> Vec<(PublicKey, String)> {
    changes(view)
        .filter_map(|change| match change {
            CommitteeChange::Add { validator, .. } => {
                Some((validator.network_key, validator.address.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Pending or scheduled key rotations: (the member's index now, its next network key). The
/// next key may connect before the switch (the rotating validator changes its identity when
/// it switches, possibly before this node) and what it sends counts as the member's; it is
/// dialled once its epoch starts.
fn rotating(view: &EpochView) -> Vec<(ValidatorIndex, PublicKey)> {
    changes(view)
        .filter_map(|change| match change {
            CommitteeChange::RotateKeys {
                protocol_key,
                new_network_key,
                ..
            } => Some((view.committee().index_of(protocol_key)?, *new_network_key)),
            _ => None,
        })
        .collect()
}

fn changes(view: &EpochView) -> impl Iterator<Item = &CommitteeChange> {
    let pending = view.state.pending.iter().map(|p| &p.change);
    let scheduled = view.state.scheduled.iter().map(|s| &s.change);
    pending.chain(scheduled)
}

async fn run_network(mut deps: EpochNetworkDeps) {
    let mut current = deps.epoch.borrow().epoch();
    // Members of the previous committee still allowed, until the grace period ends.
    let mut grace: Option<(tokio::time::Instant, HashSet<PublicKey>)> = None;
    let mut dialled: HashSet<PublicKey> = HashSet::new();
    let mut view = deps.epoch.borrow_and_update().clone();
    loop {
        let members: HashSet<PublicKey> = view
            .committee()
            .validators()
            .iter()
            .map(|v| v.network_key)
            .collect();
        if view.epoch() != current {
            let old: HashSet<PublicKey> = deps.peers.keys().into_iter().collect();
            tracing::info!(epoch = %view.epoch(), members = members.len(), member = view.me.is_some(), "epoch change: switching peers");
            deps.peers.set_committee(view.committee());
            // A rotated network key: present it from now on (connections are re-made).
            let identity = view.keys.network.public();
            if identity != deps.net.identity() {
                match keel_p2p::NetworkIdentity::from_seed(&view.keys.network.seed())
                    .and_then(|id| deps.net.set_identity(&id))
                {
                    Ok(()) => tracing::info!(network_key = %identity, "network key rotated"),
                    Err(e) => tracing::error!(error = %e, "cannot present the rotated network key"),
                }
            }
            deps.metrics.epoch.set(view.epoch().0 as i64);
            deps.metrics
                .committee_size
                .set(view.committee().size() as i64);
            // Members of the old committee lose their series; the driver sets the new ones.
            deps.metrics.leader_weight.reset();
            current = view.epoch();
            let mut gone: HashSet<PublicKey> = old.difference(&members).copied().collect();
            if let Some((_, earlier)) = grace.take() {
                gone.extend(earlier.difference(&members));
            }
            grace = Some((tokio::time::Instant::now() + deps.switch_grace, gone));
        }
        let mut wanted: Vec<(PublicKey, String)> = view
            .committee()
            .validators()
            .iter()
            .map(|v| (v.network_key, v.address.clone()))
            .collect();
        wanted.extend(joining(&view));
        let mut allowed: HashSet<PublicKey> = wanted.iter().map(|(k, _)| *k).collect();
        let rotations = rotating(&view);
        allowed.extend(rotations.iter().map(|(_, key)| *key));
        deps.peers
            .set_aliases(rotations.iter().map(|(index, key)| (*key, *index)));
        if let Some((_, old)) = &grace {
            allowed.extend(old.iter().copied());
        }
        deps.net.set_allowed(allowed);
        for (key, address) in wanted {
            if key == deps.net.identity() || dialled.contains(&key) {
                continue;
            }
            match address.parse::<keel_p2p::PeerAddress>() {
                Ok(address) => {
                    deps.net.add_peer(key, address);
                    dialled.insert(key);
                }
                Err(e) => {
                    tracing::warn!(%address, error = %e, "a validator's address does not parse; not dialled")
                }
            }
        }
        let grace_end = grace.as_ref().map(|(at, _)| *at);
        tokio::select! {
            _ = deps.shutdown.cancelled() => return,
            changed = deps.epoch.changed() => {
                if changed.is_err() {
                    return;
                }
                view = deps.epoch.borrow_and_update().clone();
            }
            _ = async {
                match grace_end {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                // The grace period is over: only the committee and joining validators remain.
                if let Some((_, old)) = grace.take() {
                    let keep: HashSet<PublicKey> =
                        members.iter().copied().chain(joining(&view).into_iter().map(|(k, _)| k)).collect();
                    for key in old.difference(&keep) {
                        deps.net.remove_peer(key);
                        dialled.remove(key);
                    }
                }
            }
        }
    }
}
