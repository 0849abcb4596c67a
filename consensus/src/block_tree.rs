//! The block tree: uncommitted blocks above the committed root, and the 2-chain commit.
//!
//! Rules:
//! - A block enters the tree only if its parent is the root or already in the tree, so every
//!   block in the tree descends from the root and has a known height (parent's + 1).
//! - Committing a block moves the root to it and returns the path from the old root (exclusive)
//!   to it (inclusive), in order; blocks at or below the new root's round are pruned, so forks
//!   that lost are dropped and memory stays proportional to the uncommitted rounds.
//! - The tree holds at most `max_blocks` blocks; beyond that new blocks are refused until a
//!   commit prunes (a replica that cannot commit cannot be made to grow without bound).

use keel_types::{Digest, Height, Round, SignedBlock, TimestampMs};
use std::collections::{HashMap, HashSet};

/// The last committed block (or the epoch's genesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitRoot {
    /// Its digest.
    pub digest: Digest,
    /// Its round.
    pub round: Round,
    /// Its height.
    pub height: Height,
    /// Its timestamp.
    pub timestamp: TimestampMs,
}

/// A committed block with its height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBlock {
    /// The block.
    pub block: SignedBlock,
    /// Its height (the root of the epoch is height 0).
    pub height: Height,
}

/// What inserting a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Added.
    Inserted,
    /// Already present (or it is the root).
    Known,
    /// Its parent is unknown; fetch it, then insert again.
    MissingParent(Digest),
    /// At or below the committed root's round and not the root: can never be committed.
    Stale,
    /// The tree is full.
    Full,
}

#[derive(Debug, Clone)]
struct Node {
    block: SignedBlock,
    height: Height,
}

/// Uncommitted blocks above the committed root.
#[derive(Debug, Clone)]
pub struct BlockTree {
    root: CommitRoot,
    blocks: HashMap<Digest, Node>,
    max_blocks: usize,
}

impl BlockTree {
    /// A tree holding only `root`.
    pub fn new(root: CommitRoot, max_blocks: usize) -> Self {
        BlockTree {
            root,
            blocks: HashMap::new(),
            max_blocks,
        }
    }

    /// The committed root.
    pub fn root(&self) -> CommitRoot {
        self.root
    }

    /// Whether `digest` is the root or in the tree.
    pub fn contains(&self, digest: &Digest) -> bool {
        *digest == self.root.digest || self.blocks.contains_key(digest)
    }

    /// The block with `digest`, if in the tree (the root is not stored as a block).
    pub fn get(&self, digest: &Digest) -> Option<&SignedBlock> {
        self.blocks.get(digest).map(|n| &n.block)
    }

    /// Whether `digest`'s block or any uncommitted ancestor carries payload (so that an
    /// extension is needed to commit it).
    pub fn uncommitted_payload(&self, digest: &Digest) -> bool {
        let mut next = *digest;
        // Each step moves to a lower round, so the walk ends at the root or a missing block.
        while let Some(node) = self.blocks.get(&next) {
            if !node.block.block.payload.is_empty() {
                return true;
            }
            next = node.block.block.parent();
        }
        false
    }

    /// The round of `digest` (root or tree block).
    pub fn round_of(&self, digest: &Digest) -> Option<Round> {
        if *digest == self.root.digest {
            return Some(self.root.round);
        }
        self.blocks.get(digest).map(|n| n.block.block.round)
    }

    /// The timestamp of `digest` (root or tree block).
    pub fn timestamp_of(&self, digest: &Digest) -> Option<TimestampMs> {
        if *digest == self.root.digest {
            return Some(self.root.timestamp);
        }
        self.blocks.get(digest).map(|n| n.block.block.timestamp)
    }

    /// The round of the parent of `digest`'s block (the root's own parent round counts as its
    /// round, since nothing below the root matters).
    pub fn parent_round_of(&self, digest: &Digest) -> Option<Round> {
        if *digest == self.root.digest {
            return Some(self.root.round);
        }
        self.blocks
            .get(digest)
            .map(|n| n.block.block.parent_qc.round())
    }

    /// Number of blocks held (excluding the root).
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the tree holds no block above the root.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The blocks held, in no particular order.
    pub fn blocks(&self) -> impl Iterator<Item = &SignedBlock> {
        self.blocks.values().map(|n| &n.block)
    }

    /// Inserts a verified block.
    pub fn insert(&mut self, block: SignedBlock) -> InsertOutcome {
        let digest = block.digest();
        if self.contains(&digest) {
            return InsertOutcome::Known;
        }
        if block.block.round <= self.root.round {
            return InsertOutcome::Stale;
        }
        let parent = block.block.parent();
        let parent_height = if parent == self.root.digest {
            self.root.height
        } else if let Some(p) = self.blocks.get(&parent) {
            p.height
        } else {
            return InsertOutcome::MissingParent(parent);
        };
        if self.blocks.len() >= self.max_blocks {
            return InsertOutcome::Full;
        }
        let height = Height(parent_height.0.saturating_add(1));
        self.blocks.insert(digest, Node { block, height });
        InsertOutcome::Inserted
    }

    /// The blocks from the root (exclusive) to `digest` (inclusive), if all are present.
    pub fn path_to(&self, digest: &Digest) -> Option<Vec<CommittedBlock>> {
        let mut path = Vec::new();
        let mut cursor = *digest;
        while cursor != self.root.digest {
            let node = self.blocks.get(&cursor)?;
            path.push(CommittedBlock {
                block: node.block.clone(),
                height: node.height,
            });
            cursor = node.block.block.parent();
        }
        path.reverse();
        Some(path)
    }

    /// Commits `digest` and its uncommitted ancestors; returns them in order, or `None` if the
    /// block is not in the tree.
    pub fn commit(&mut self, digest: &Digest) -> Option<Vec<CommittedBlock>> {
        let path = self.path_to(digest)?;
        let last = path.last()?;
        self.root = CommitRoot {
            digest: *digest,
            round: last.block.block.round,
            height: last.height,
            timestamp: last.block.block.timestamp,
        };
        let root_round = self.root.round;
        self.blocks.retain(|_, n| n.block.block.round > root_round);
        // Blocks above the root whose ancestry does not pass through it are pruned too. A parent
        // has a lower round than its child, so one pass in round order finds the descendants.
        let mut by_round: Vec<(Round, Digest, Digest)> = self
            .blocks
            .iter()
            .map(|(d, n)| (n.block.block.round, *d, n.block.block.parent()))
            .collect();
        by_round.sort();
        let mut keep: HashSet<Digest> = HashSet::with_capacity(by_round.len());
        for (_, d, parent) in by_round {
            if parent == self.root.digest || keep.contains(&parent) {
                keep.insert(d);
            }
        }
        self.blocks.retain(|d, _| keep.contains(d));
        Some(path)
    }
}
