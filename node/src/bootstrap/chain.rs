//! The chain of committees from a node's own epoch to a later one, for start-up state sync:
//! each epoch-ending certified checkpoint names the next committee and is verified against the
//! committee it ends (see the parent module's documentation).

use super::{BootstrapDeps, PeerView};
use keel_authority::checkpoint_store;
use keel_p2p::{Request, Response};
use keel_types::{CertifiedCheckpoint, Committee, Epoch};

/// The committees from this node's epoch up to `up_to` (fewer if a link cannot be had), in
/// order, each proven by the previous one: the certified checkpoint that ends an epoch names
/// the next committee, and is verified against the committee it ends. The links come from the
/// store or from peers (those fetched are stored: the node serves the chain in turn). At most
/// one request per peer per link: a peer that claims an epoch nobody can prove costs one
/// round of requests.
pub(super) async fn committee_chain(
    deps: &BootstrapDeps,
    views: &[PeerView],
    up_to: Epoch,
) -> Vec<Committee> {
    let mut chain = vec![deps.committee.clone()];
    while let Some(last) = chain.last()
        && last.epoch() < up_to
    {
        match epoch_end(deps, views, last).await {
            Some(next) => chain.push(next),
            None => {
                tracing::warn!(epoch = %last.epoch(), "no peer proved the end of this epoch; later checkpoints cannot be verified");
                break;
            }
        }
    }
    chain
}

/// The committee after `committee`'s epoch, from its verified epoch-ending checkpoint.
async fn epoch_end(
    deps: &BootstrapDeps,
    views: &[PeerView],
    committee: &Committee,
) -> Option<Committee> {
    let epoch = committee.epoch();
    let follows = |c: &CertifiedCheckpoint| {
        c.checkpoint.epoch == epoch
            && c.checkpoint
                .next_committee
                .as_ref()
                .is_some_and(|n| n.epoch().0 == epoch.0.saturating_add(1))
    };
    if let Ok(Some(stored)) = checkpoint_store::epoch_end(&deps.store, epoch)
        && follows(&stored)
    {
        return stored.checkpoint.next_committee;
    }
    for v in views {
        let request = Request::EpochEnd { epoch };
        let Ok(Response::Checkpoint(Some(certified))) =
            deps.outbound.request(v.peer, &request).await
        else {
            continue;
        };
        if !follows(&certified) {
            tracing::warn!(peer = %v.peer, %epoch, "answered another checkpoint than the epoch's end");
            continue;
        }
        if let Err(e) = certified.verify(committee, deps.chain_id) {
            tracing::warn!(peer = %v.peer, %epoch, error = %e, "sent an epoch-ending checkpoint that does not verify");
            continue;
        }
        if let Err(e) = checkpoint_store::save_certified(&deps.store, &certified) {
            tracing::warn!(error = %e, "cannot store an epoch-ending checkpoint");
        }
        tracing::info!(%epoch, height = %certified.checkpoint.last_height, "epoch end proven: the next committee is known");
        return certified.checkpoint.next_committee;
    }
    None
}

/// Keeps each peer's checkpoint only if it verifies against the committee of its epoch from
/// `chain`.
pub(super) fn verify_checkpoints(
    deps: &BootstrapDeps,
    views: &mut [PeerView],
    chain: &[Committee],
) {
    for v in views {
        let Some(c) = v.checkpoint.take() else {
            continue;
        };
        let committee = chain.iter().find(|k| k.epoch() == c.checkpoint.epoch);
        match committee.map(|k| c.verify(k, deps.chain_id)) {
            Some(Ok(())) => v.checkpoint = Some(c),
            Some(Err(e)) => {
                tracing::warn!(peer = %v.peer, error = %e, "peer sent a checkpoint that does not verify")
            }
            None => tracing::warn!(
                peer = %v.peer,
                epoch = %c.checkpoint.epoch,
                "peer sent a checkpoint of an epoch whose committee is not proven"
            ),
        }
    }
}
