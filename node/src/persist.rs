//! Consensus persistence in the store, and recovery from it.
//!
//! | column | key | value |
//! |---|---|---|
//! | consensus | `safety` | bcs `SafetyData` (synced write before any vote or timeout leaves) |
//! | consensus | `amnesiac` | present while the safety data may be stale (`keel run --restored-from-backup`) until peers' certificates lift the amnesia guard |
//! | consensus | `root` | bcs `CommitRoot`: the last committed block (at the start of an epoch: the epoch's genesis at the previous epoch's last height) |
//! | consensus | `epoch` | bcs `Epoch` the consensus state (root, tree, safety) belongs to (absent: the genesis epoch) |
//! | consensus | `tree/` ‖ digest | bcs `SignedBlock` not yet committed |
//! | blocks | `h/` ‖ height (big-endian) | bcs [`CommittedRecord`] |
//! | blocks | `d/` ‖ digest | height (big-endian) |
//! | blocks | `b/` ‖ batch digest | height (big-endian) of the highest committed block ordering it |
//! | meta | `retained_from` | the lowest retained height (u64 big-endian; absent: 1, nothing pruned) |
//!
//! A commit writes the committed blocks, their digest index, the batch index, the new root and
//! the removal of their `tree/` entries in one write batch, so the committed chain in the store
//! never has gaps. Every writer of committed blocks goes through [`save_commit`]: the pruner
//! relies on the batch index to keep a batch that a retained block orders again.
//!
//! The pruner (`prune.rs`) deletes heights below `retained_from` and raises it in the same write
//! batch, so a height below [`retained_from`] was pruned, and a missing height at or above it was
//! never committed here.

use anyhow::{Context, Result};
use keel_consensus::{
    CommitRoot, CommittedBlock, Election, ElectionConfig, RecoveryData, SafetyData,
};
use keel_storage::{Column, Store, WriteOp};
use keel_types::{ChainId, Committee, Digest, Epoch, Height, SignedBlock};
use serde::{Deserialize, Serialize};

const SAFETY: &[u8] = b"safety";
const AMNESIAC: &[u8] = b"amnesiac";
const ROOT: &[u8] = b"root";
const TREE: &[u8] = b"tree/";
const RETAINED_FROM: &[u8] = b"retained_from";
const EPOCH: &[u8] = b"epoch";

/// A committed block as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedRecord {
    /// Its height.
    pub height: Height,
    /// The block.
    pub block: SignedBlock,
}

fn tree_key(digest: &Digest) -> Vec<u8> {
    [TREE, &digest.0[..]].concat()
}

pub(crate) fn height_key(height: Height) -> Vec<u8> {
    [&b"h/"[..], &height.0.to_be_bytes()].concat()
}

pub(crate) fn digest_key(digest: &Digest) -> Vec<u8> {
    [&b"d/"[..], &digest.0[..]].concat()
}

/// The blocks-column key of a batch's last-ordered height.
pub(crate) fn batch_ref_key(batch: &Digest) -> Vec<u8> {
    [&b"b/"[..], &batch.0[..]].concat()
}

fn decode_height(bytes: &[u8], what: &str) -> Result<Height> {
    let raw: [u8; 8] = bytes
        .try_into()
        .with_context(|| format!("corrupt {what} in the store"))?;
    Ok(Height(u64::from_be_bytes(raw)))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // INVARIANT: consensus types always encode with bcs.
    bcs::to_bytes(value).expect("INVARIANT: bcs encodes consensus types")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    bcs::from_bytes(bytes).with_context(|| format!("corrupt {what} in the store"))
}

/// Persists safety data with a synced write.
pub fn save_safety(store: &Store, data: &SafetyData) -> Result<()> {
    store
        .put_synced(Column::Consensus, SAFETY, &encode(data))
        .context("persisting safety data")
}

/// The persisted safety data, if any.
pub fn load_safety(store: &Store) -> Result<Option<SafetyData>> {
    store
        .get(Column::Consensus, SAFETY)?
        .map(|b| decode(&b, "safety data"))
        .transpose()
}

/// Marks the safety data as possibly stale (a data directory restored from a backup): the
/// node starts amnesiac, now and after any restart, until [`clear_amnesiac`].
pub fn mark_amnesiac(store: &Store) -> Result<()> {
    store
        .put_synced(Column::Consensus, AMNESIAC, &[1])
        .context("marking the safety data as possibly stale")
}

/// Clears [`mark_amnesiac`]'s mark (once the guard is lifted and the raised safety data is
/// persisted).
pub fn clear_amnesiac(store: &Store) -> Result<()> {
    store
        .delete(Column::Consensus, AMNESIAC)
        .context("clearing the amnesia mark")
}

/// Persists an uncommitted block.
pub fn save_block(store: &Store, block: &SignedBlock) -> Result<()> {
    store
        .put(
            Column::Consensus,
            &tree_key(&block.digest()),
            &encode(block),
        )
        .context("persisting a block")
}

/// Records committed blocks and the new root, atomically.
pub fn save_commit(store: &Store, blocks: &[CommittedBlock]) -> Result<()> {
    if blocks.is_empty() {
        return Ok(());
    }
    store
        .write(commit_ops(blocks), false)
        .context("persisting a commit")
}

/// The writes recording committed blocks (non-empty) and the new root.
pub fn commit_ops(blocks: &[CommittedBlock]) -> Vec<WriteOp> {
    let Some(last) = blocks.last() else {
        return Vec::new();
    };
    let mut ops = Vec::with_capacity(blocks.len() * 3 + 1);
    for b in blocks {
        let digest = b.block.digest();
        ops.push(WriteOp {
            column: Column::Blocks,
            key: height_key(b.height),
            value: Some(encode(&CommittedRecord {
                height: b.height,
                block: b.block.clone(),
            })),
        });
        ops.push(WriteOp {
            column: Column::Blocks,
            key: digest_key(&digest),
            value: Some(b.height.0.to_be_bytes().to_vec()),
        });
        ops.push(WriteOp {
            column: Column::Consensus,
            key: tree_key(&digest),
            value: None,
        });
        for proof in &b.block.block.payload {
            ops.push(WriteOp {
                column: Column::Blocks,
                key: batch_ref_key(&proof.info.digest),
                value: Some(b.height.0.to_be_bytes().to_vec()),
            });
        }
    }
    let root = CommitRoot {
        digest: last.block.digest(),
        round: last.block.block.round,
        height: last.height,
        timestamp: last.block.block.timestamp,
    };
    ops.push(WriteOp {
        column: Column::Consensus,
        key: ROOT.to_vec(),
        value: Some(encode(&root)),
    });
    ops
}

/// The committed block at `height`.
pub fn committed_at(store: &Store, height: Height) -> Result<Option<CommittedRecord>> {
    store
        .get(Column::Blocks, &height_key(height))?
        .map(|b| decode(&b, "committed block"))
        .transpose()
}

/// The lowest retained committed height: heights below it were pruned (1 when nothing was).
/// What the API and block sync tell "pruned" from "never existed" by.
pub fn retained_from(store: &Store) -> Result<Height> {
    match store.get(Column::Meta, RETAINED_FROM)? {
        Some(b) => decode_height(&b, "lowest retained height"),
        None => Ok(Height(1)),
    }
}

/// The write recording `height` as the lowest retained one (in the pruner's write batch).
pub(crate) fn retained_from_op(height: Height) -> WriteOp {
    WriteOp {
        column: Column::Meta,
        key: RETAINED_FROM.to_vec(),
        value: Some(height.0.to_be_bytes().to_vec()),
    }
}

/// The write recording `epoch` as the epoch of the stored consensus state (with a state
/// sync's install: the installed block's epoch; if the installed state is already in the next
/// epoch, start-up then moves consensus there with [`start_epoch`]).
pub(crate) fn consensus_epoch_op(epoch: Epoch) -> WriteOp {
    WriteOp {
        column: Column::Consensus,
        key: EPOCH.to_vec(),
        value: Some(encode(&epoch)),
    }
}

/// The highest committed height whose block orders `batch` (absent for batches ordered before
/// the index existed, or never).
pub(crate) fn batch_ordered_at(store: &Store, batch: &Digest) -> Result<Option<Height>> {
    store
        .get(Column::Blocks, &batch_ref_key(batch))?
        .map(|b| decode_height(&b, "batch index"))
        .transpose()
}

/// A block by digest: committed or still in the tree.
pub fn block_by_digest(store: &Store, digest: &Digest) -> Result<Option<SignedBlock>> {
    if let Some(b) = store.get(Column::Consensus, &tree_key(digest))? {
        return decode(&b, "block").map(Some);
    }
    let Some(h) = store.get(Column::Blocks, &digest_key(digest))? else {
        return Ok(None);
    };
    let height = Height(u64::from_be_bytes(
        h.as_slice().try_into().context("corrupt height index")?,
    ));
    Ok(committed_at(store, height)?.map(|r| r.block))
}

/// The last committed block, if any block was committed.
pub fn commit_root(store: &Store) -> Result<Option<CommitRoot>> {
    store
        .get(Column::Consensus, ROOT)?
        .map(|b| decode(&b, "commit root"))
        .transpose()
}

/// What the consensus core restarts from: persisted safety data, the last committed block and
/// the uncommitted blocks above it (stale tree entries are deleted).
pub fn recover(store: &Store, committee: &Committee, chain_id: ChainId) -> Result<RecoveryData> {
    // No safety data: wiped, new, or restored without it. The core then signs nothing until
    // peers' certificates tell it which rounds it may have signed in (the amnesia guard).
    // Safety data restored from a backup may be stale: the same guard applies until lifted.
    let mut recovery = RecoveryData::amnesiac(committee, chain_id);
    if let Some(safety) = load_safety(store)? {
        recovery.amnesiac = store.get(Column::Consensus, AMNESIAC)?.is_some();
        // Safety data of an earlier epoch: this replica signed nothing in this one yet (it
        // persists before its first signature here), so it starts fresh in this epoch.
        if safety.epoch >= committee.epoch() {
            recovery.safety = safety;
        }
    }
    if let Some(root) = commit_root(store)? {
        recovery.root = root;
    }
    for (key, value) in store.scan_prefix(Column::Consensus, TREE)? {
        let block: SignedBlock = decode(&value, "block")?;
        if block.block.round <= recovery.root.round {
            store.delete(Column::Consensus, &key)?;
        } else {
            recovery.blocks.push(block);
        }
    }
    Ok(recovery)
}

/// The epoch the stored consensus state belongs to (the genesis epoch when never recorded).
pub fn consensus_epoch(store: &Store, genesis: Epoch) -> Result<Epoch> {
    Ok(store
        .get(Column::Consensus, EPOCH)?
        .map(|b| decode(&b, "consensus epoch"))
        .transpose()?
        .unwrap_or(genesis))
}

/// Moves the stored consensus state to the start of `committee`'s epoch, which follows the
/// block at `started_after`: committed blocks above it (the previous epoch's, committed
/// past its end and never executed) and the uncommitted tree are deleted, and the root becomes
/// the epoch's genesis at that height. Safety data stays: [`recover`] ignores an older epoch's.
pub fn start_epoch(
    store: &Store,
    committee: &Committee,
    chain_id: ChainId,
    started_after: Height,
) -> Result<CommitRoot> {
    let last = committed_at(store, started_after)?;
    let root = CommitRoot {
        digest: keel_types::genesis_digest(committee.epoch(), chain_id),
        round: keel_types::Round(0),
        height: started_after,
        timestamp: last.map(|r| r.block.block.timestamp).unwrap_or_default(),
    };
    let mut ops = Vec::new();
    // Heights are contiguous: walk up from the epoch's start until a gap.
    let mut height = Height(started_after.0.saturating_add(1));
    while let Some(record) = committed_at(store, height)? {
        if record.block.block.epoch < committee.epoch() {
            ops.push(WriteOp {
                column: Column::Blocks,
                key: height_key(height),
                value: None,
            });
            ops.push(WriteOp {
                column: Column::Blocks,
                key: digest_key(&record.block.digest()),
                value: None,
            });
        }
        height = Height(height.0.saturating_add(1));
    }
    for (key, _) in store.scan_prefix(Column::Consensus, TREE)? {
        ops.push(WriteOp {
            column: Column::Consensus,
            key,
            value: None,
        });
    }
    ops.push(WriteOp {
        column: Column::Consensus,
        key: ROOT.to_vec(),
        value: Some(encode(&root)),
    });
    ops.push(WriteOp {
        column: Column::Consensus,
        key: EPOCH.to_vec(),
        value: Some(encode(&committee.epoch())),
    });
    store.write(ops, true).context("starting an epoch")?;
    Ok(root)
}

/// The last `count` committed blocks up to `root` (fewer where the chain is shorter or pruned),
/// of `root`'s epoch only, in height order: the history a rebuilt leader election is fed
/// ([`keel_consensus::Election::history_len`]).
pub fn recent_committed(
    store: &Store,
    root: &CommitRoot,
    epoch: Epoch,
    count: usize,
) -> Result<Vec<CommittedBlock>> {
    let first = root
        .height
        .0
        .saturating_sub(count as u64)
        .saturating_add(1)
        .max(retained_from(store)?.0);
    let mut blocks = Vec::with_capacity(count);
    for h in first..=root.height.0 {
        if let Some(record) = committed_at(store, Height(h))?
            && record.block.block.epoch == epoch
        {
            blocks.push(CommittedBlock {
                block: record.block,
                height: record.height,
            });
        }
    }
    Ok(blocks)
}

/// The configured leader election for `committee`, fed the committed blocks it needs up to
/// `root` (a core built at start-up or rebuilt after range sync computes the same leaders as
/// replicas that never stopped). Fewer blocks (pruned below the election's history, a node
/// that joined by state sync, a store that cannot be read, which is logged) leave its history
/// incomplete: it is not final and follows round robin, so it may vote for or propose as a
/// leader the others do not share (wasted rounds, never a safety question) until about
/// `history_len` more blocks are committed.
pub fn election(
    store: &Store,
    config: &ElectionConfig,
    committee: &Committee,
    root: &CommitRoot,
) -> Election {
    let mut election = Election::new(config, committee);
    let recent = recent_committed(store, root, committee.epoch(), election.history_len())
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the committed history for leader election");
            Vec::new()
        });
    election.recover(root.height, &recent);
    election
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{Round, test_utils::committee};

    #[test]
    fn missing_or_restored_safety_data_starts_amnesiac_until_the_mark_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let (committee, _) = committee(4);
        let chain = ChainId(7);
        // A new or wiped store: amnesiac.
        assert!(recover(&store, &committee, chain).unwrap().amnesiac);
        let safety = SafetyData {
            epoch: committee.epoch(),
            last_voted_round: Round(42),
            ..SafetyData::default()
        };
        save_safety(&store, &safety).unwrap();
        let recovered = recover(&store, &committee, chain).unwrap();
        assert!(!recovered.amnesiac);
        assert_eq!(recovered.safety, safety);
        // Restored from a backup: the (possibly stale) data is kept, and the guard applies,
        // across restarts, until the mark is cleared.
        mark_amnesiac(&store).unwrap();
        for _ in 0..2 {
            let recovered = recover(&store, &committee, chain).unwrap();
            assert!(recovered.amnesiac);
            assert_eq!(recovered.safety.last_voted_round, Round(42));
        }
        clear_amnesiac(&store).unwrap();
        assert!(!recover(&store, &committee, chain).unwrap().amnesiac);
    }

    #[test]
    fn a_new_epoch_starts_fresh_safety_data_at_the_previous_epochs_last_height() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let (committee, _) = committee(4);
        let chain = ChainId(7);
        let old = SafetyData {
            epoch: committee.epoch(),
            last_voted_round: Round(42),
            ..SafetyData::default()
        };
        save_safety(&store, &old).unwrap();
        let next = Committee::new(
            Epoch(committee.epoch().0 + 1),
            committee.validators().to_vec(),
        )
        .unwrap();
        assert_eq!(
            consensus_epoch(&store, committee.epoch()).unwrap(),
            committee.epoch()
        );
        let root = start_epoch(&store, &next, chain, Height(7)).unwrap();
        assert_eq!(root.height, Height(7));
        assert_eq!(root.digest, keel_types::genesis_digest(next.epoch(), chain));
        assert_eq!(
            consensus_epoch(&store, committee.epoch()).unwrap(),
            next.epoch()
        );
        let recovered = recover(&store, &next, chain).unwrap();
        assert!(
            !recovered.amnesiac,
            "an older epoch's data proves the store was not wiped"
        );
        assert_eq!(recovered.safety.epoch, next.epoch());
        assert_eq!(recovered.safety.last_voted_round, Round(0));
        assert_eq!(recovered.root, root);
        // Data of the current epoch is kept as it is.
        let current = SafetyData {
            last_voted_round: Round(3),
            ..recovered.safety
        };
        save_safety(&store, &current).unwrap();
        assert_eq!(recover(&store, &next, chain).unwrap().safety, current);
    }
}
