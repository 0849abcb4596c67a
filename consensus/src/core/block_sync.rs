//! Block fetching: how a replica gets the blocks it lacks, and what it accepts in reply.
//!
//! Rules:
//! - **Fetch what is certified.** A QC naming a block above the committed root that is not in
//!   the tree is a request for that block, sent to one of the QC's signers (all of them hold
//!   it); successive requests rotate over the signers, so a crashed one is not asked forever.
//!   Such a QC also asks again, from its signers, for the missing parent at the bottom of each
//!   parked chain, so a chain whose first request went to a crashed author still connects.
//! - **Park proposals, bounded.** A proposal whose parent is unknown waits, at most
//!   `max_pending` of them, while its parent is asked for from its author (unless the parent is
//!   itself waiting, in which case its own parent is already asked for).
//! - **Accept only what was asked for.** A fetch reply is filtered down to the blocks asked for
//!   and, walking back, their ancestors: each is certified (by the QC that named it, or by its
//!   child's parent QC), so a reply cannot smuggle other blocks into the tree. The set of wishes
//!   is bounded; when it overflows it is forgotten and rebuilt on demand.
//! - **Vote only through the front door.** A parked proposal that joins the tree once its
//!   parent arrives is voted for only if it is still the current round's accepted proposal,
//!   and through the same path as any proposal (timestamp and size checks, safety rules,
//!   payload validation), never directly.

use super::Core;
use crate::{
    block_tree::{BlockTree, InsertOutcome},
    interface::{Action, PayloadSource, PayloadValidator},
    leader::LeaderElection,
};
use keel_types::{Digest, QuorumCertificate, Round, SignedBlock};
use std::collections::HashSet;

/// What the core remembers about blocks it is waiting for.
#[derive(Debug, Default)]
pub(crate) struct BlockSync {
    /// Proposals waiting for their parent.
    pending: Vec<SignedBlock>,
    /// Blocks asked for (certified ones, or parents of waiting proposals): only these and their
    /// ancestors are accepted from fetch replies.
    requested: HashSet<Digest>,
    /// Fetches of certified blocks so far (picks the signer to ask).
    fetch_attempts: usize,
}

impl BlockSync {
    /// The fetches a QC calls for when its block is missing and above the committed root:
    /// the block, and again the missing parent of every parked chain (its first request, to
    /// the child's author, may have gone to a crashed validator), each from one of the QC's
    /// signers (they hold the block and its ancestors).
    pub(crate) fn fetch_certified(
        &mut self,
        qc: &QuorumCertificate,
        tree: &BlockTree,
    ) -> Vec<Action> {
        let signers = qc.signatures.signatures();
        if tree.contains(&qc.block()) || qc.round() <= tree.root().round || signers.is_empty() {
            return Vec::new();
        }
        let parked: HashSet<Digest> = self.pending.iter().map(SignedBlock::digest).collect();
        let mut missing: Vec<Digest> = vec![qc.block()];
        for b in &self.pending {
            let parent = b.block.parent();
            if !tree.contains(&parent) && !parked.contains(&parent) && !missing.contains(&parent) {
                missing.push(parent);
            }
        }
        missing
            .into_iter()
            .map(|digest| {
                // Rotate over the signers so a crashed one is not asked forever.
                self.fetch_attempts = self.fetch_attempts.wrapping_add(1);
                let (signer, _) = signers[self.fetch_attempts % signers.len()];
                self.requested.insert(digest);
                Action::FetchBlock {
                    digest,
                    from: signer,
                }
            })
            .collect()
    }

    /// Parks `block`, whose parent `parent` is missing, if there is room; returns the fetch of
    /// the parent to send, if it is not already on its way.
    fn park(&mut self, block: SignedBlock, parent: Digest, max_pending: usize) -> Option<Action> {
        let digest = block.digest();
        if self.pending.len() >= max_pending || self.pending.iter().any(|b| b.digest() == digest) {
            return None;
        }
        // Ask for the parent unless it is itself waiting for its own parent.
        let fetch = if self.pending.iter().any(|b| b.digest() == parent) {
            None
        } else {
            self.requested.insert(parent);
            Some(Action::FetchBlock {
                digest: parent,
                from: block.block.author,
            })
        };
        self.pending.push(block);
        fetch
    }

    /// The blocks of a fetch reply that were asked for, or are ancestors of those, oldest
    /// first; their missing parents become wishes in turn.
    fn accept(
        &mut self,
        mut blocks: Vec<SignedBlock>,
        tree: &BlockTree,
        max_pending: usize,
    ) -> Vec<SignedBlock> {
        blocks.sort_by_key(|b| std::cmp::Reverse(b.block.round));
        let mut accepted = Vec::new();
        for block in blocks {
            let digest = block.digest();
            if self.requested.remove(&digest) {
                if !tree.contains(&block.block.parent()) {
                    self.requested.insert(block.block.parent());
                }
                accepted.push(block);
            }
        }
        if self.requested.len() > max_pending {
            // Bounded: forget the oldest wishes; they are asked for again when needed.
            self.requested.clear();
        }
        accepted.reverse();
        accepted
    }

    /// Takes the parked blocks whose parent is now in the tree.
    fn take_ready(&mut self, tree: &BlockTree) -> Vec<SignedBlock> {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|b| tree.contains(&b.block.parent()));
        self.pending = waiting;
        ready
    }

    /// Drops parked blocks at or below the committed root's round.
    pub(crate) fn prune(&mut self, root_round: Round) {
        self.pending.retain(|b| b.block.round > root_round);
    }
}

impl<L: LeaderElection, P: PayloadSource + PayloadValidator> Core<L, P> {
    /// Inserts a block, persisting it; a block with an unknown parent waits (bounded) while
    /// the parent is fetched. Returns whether the block is now in the tree.
    pub(crate) fn insert_block(&mut self, block: SignedBlock, out: &mut Vec<Action>) -> bool {
        match self.tree.insert(block.clone()) {
            InsertOutcome::Inserted => {
                out.push(Action::PersistBlock(block));
                true
            }
            InsertOutcome::Known => true,
            InsertOutcome::MissingParent(parent) => {
                if let Some(fetch) = self.sync.park(block, parent, self.config.max_pending) {
                    out.push(fetch);
                }
                false
            }
            InsertOutcome::Stale | InsertOutcome::Full => false,
        }
    }

    /// Handles verified blocks answering a fetch: inserts those asked for, then every parked
    /// proposal whose parent is now known, voting for the current round's proposal among them.
    pub(crate) fn on_fetched(&mut self, blocks: Vec<SignedBlock>, out: &mut Vec<Action>) {
        let accepted = self
            .sync
            .accept(blocks, &self.tree, self.config.max_pending);
        for block in accepted {
            self.insert_block(block, out);
        }
        // Pending blocks whose parent is now known join the tree, repeatedly.
        let mut to_vote = Vec::new();
        loop {
            let ready = self.sync.take_ready(&self.tree);
            if ready.is_empty() {
                break;
            }
            for b in ready {
                let current_proposal = b.block.round == self.round()
                    && self.proposals_seen.get(&b.block.round) == Some(&b.digest());
                if self.insert_block(b.clone(), out) && current_proposal {
                    to_vote.push(b);
                }
            }
        }
        // Commit first: the vote then sees the committed history (and leaders) that the
        // proposer, which had the parent, saw.
        let high_qc = self.high_qc.clone();
        self.try_commit(&high_qc, out);
        for b in to_vote {
            let _ = self.vote_for(&b, out);
        }
        self.maybe_propose(out);
    }
}
