//! Where checkpoints are kept: keys of the store's meta column.
//!
//! | meta key | value |
//! |---|---|
//! | [`CERTIFIED_PREFIX`] ‖ sequence (u64 big-endian) | bcs [`CertifiedCheckpoint`] |
//! | [`LATEST_CERTIFIED_KEY`] | bcs `u64`: the latest certified sequence |
//! | [`OWN_KEY`] | bcs [`CheckpointSignature`]: this validator's latest own signature |
//! | [`EPOCH_END_PREFIX`] ‖ epoch (u64 big-endian) | bcs `u64`: the sequence of the certified checkpoint that ends that epoch |
//!
//! Certified checkpoints are never pruned, so the epoch-ending ones (the chain that proves
//! each epoch's committee from genesis) are kept forever.
//!
//! Invariants: a certified checkpoint and the latest pointer are written in one atomic batch,
//! and the pointer only moves forward, so after a crash the pointer names a stored certificate.
//! Big-endian sequences make the certified keys iterate in sequence order (for pruning).
//! Nothing here is fsynced: a lost certificate is certified again from peers' signatures or
//! fetched, and a lost own signature is rebuilt identically from execution.

use crate::{
    error::Result,
    state::{decode, encode},
};
use keel_storage::{Column, Store, WriteOp};
use keel_types::{CertifiedCheckpoint, CheckpointSignature, Epoch};

/// Prefix of certified checkpoints by sequence.
pub const CERTIFIED_PREFIX: &[u8] = b"checkpoint/certified/";
/// The latest certified sequence.
pub const LATEST_CERTIFIED_KEY: &[u8] = b"checkpoint/latest";
/// This validator's latest own signature.
pub const OWN_KEY: &[u8] = b"checkpoint/own";
/// Prefix of the epoch → epoch-ending checkpoint index.
pub const EPOCH_END_PREFIX: &[u8] = b"checkpoint/epoch-end/";

fn epoch_end_key(epoch: Epoch) -> Vec<u8> {
    [EPOCH_END_PREFIX, &epoch.0.to_be_bytes()].concat()
}

/// The meta key of certified checkpoint `sequence`.
pub fn certified_key(sequence: u64) -> Vec<u8> {
    [CERTIFIED_PREFIX, &sequence.to_be_bytes()].concat()
}

/// Stores a certified checkpoint, moving the latest pointer if it is newer.
pub fn save_certified(store: &Store, certified: &CertifiedCheckpoint) -> Result<()> {
    let sequence = certified.checkpoint.sequence;
    let mut ops = vec![WriteOp {
        column: Column::Meta,
        key: certified_key(sequence),
        value: Some(encode(certified)),
    }];
    if certified.checkpoint.next_committee.is_some() {
        ops.push(WriteOp {
            column: Column::Meta,
            key: epoch_end_key(certified.checkpoint.epoch),
            value: Some(encode(&sequence)),
        });
    }
    if latest_sequence(store)?.is_none_or(|latest| latest < sequence) {
        ops.push(WriteOp {
            column: Column::Meta,
            key: LATEST_CERTIFIED_KEY.to_vec(),
            value: Some(encode(&sequence)),
        });
    }
    store.write(ops, false)?;
    Ok(())
}

/// The latest certified sequence, if any.
pub fn latest_sequence(store: &Store) -> Result<Option<u64>> {
    store
        .get(Column::Meta, LATEST_CERTIFIED_KEY)?
        .map(|b| decode(&b, "latest checkpoint sequence"))
        .transpose()
}

/// The certified checkpoint `sequence`, if stored.
pub fn certified(store: &Store, sequence: u64) -> Result<Option<CertifiedCheckpoint>> {
    store
        .get(Column::Meta, &certified_key(sequence))?
        .map(|b| decode(&b, "certified checkpoint"))
        .transpose()
}

/// The certified checkpoint that ends `epoch` (it names the next committee), if stored.
pub fn epoch_end(store: &Store, epoch: Epoch) -> Result<Option<CertifiedCheckpoint>> {
    let Some(sequence) = store
        .get(Column::Meta, &epoch_end_key(epoch))?
        .map(|b| decode::<u64>(&b, "epoch-ending checkpoint sequence"))
        .transpose()?
    else {
        return Ok(None);
    };
    certified(store, sequence)
}

/// The latest certified checkpoint, if any.
pub fn latest_certified(store: &Store) -> Result<Option<CertifiedCheckpoint>> {
    match latest_sequence(store)? {
        Some(sequence) => certified(store, sequence),
        None => Ok(None),
    }
}

/// Stores this validator's latest own signature.
pub fn save_own(store: &Store, own: &CheckpointSignature) -> Result<()> {
    store.put(Column::Meta, OWN_KEY, &encode(own))?;
    Ok(())
}

/// This validator's latest own signature, if any.
pub fn own(store: &Store) -> Result<Option<CheckpointSignature>> {
    store
        .get(Column::Meta, OWN_KEY)?
        .map(|b| decode(&b, "own checkpoint signature"))
        .transpose()
}

/// What a [`crate::CheckpointMachine`] resumes from.
pub fn restore(store: &Store) -> Result<crate::checkpoints::Restored> {
    Ok(crate::checkpoints::Restored {
        certified: latest_certified(store)?,
        own: own(store)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_storage::StoreConfig;
    use keel_types::{
        ChainId, Checkpoint, Digest, Epoch, Height, MultiSignature, ValidatorIndex,
        test_utils::committee,
    };

    fn certified_at(sequence: u64) -> CertifiedCheckpoint {
        let (_, keys) = committee(4);
        let checkpoint = Checkpoint {
            sequence,
            last_height: Height(sequence * 10),
            ..Checkpoint::genesis(Epoch(1), Digest::ZERO, Digest::of_bytes(b"root"))
        };
        let signatures = (0..3u32)
            .map(|i| {
                (
                    ValidatorIndex(i),
                    checkpoint.sign(&keys[i as usize], ChainId(7)),
                )
            })
            .collect();
        CertifiedCheckpoint {
            checkpoint,
            signatures: MultiSignature::from_signatures(signatures),
        }
    }

    #[test]
    fn certified_checkpoints_survive_a_reopen_and_the_latest_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            assert_eq!(restore(&store).unwrap(), Default::default());
            save_certified(&store, &certified_at(2)).unwrap();
            save_certified(&store, &certified_at(5)).unwrap();
            // An older one arriving late is stored but does not move the pointer back.
            save_certified(&store, &certified_at(4)).unwrap();
            let (_, keys) = committee(4);
            let own = CheckpointSignature::new(
                certified_at(6).checkpoint,
                ValidatorIndex(0),
                &keys[0],
                ChainId(7),
            );
            save_own(&store, &own).unwrap();
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        assert_eq!(latest_sequence(&store).unwrap(), Some(5));
        assert_eq!(latest_certified(&store).unwrap(), Some(certified_at(5)));
        assert_eq!(certified(&store, 4).unwrap(), Some(certified_at(4)));
        assert_eq!(certified(&store, 3).unwrap(), None);
        let restored = restore(&store).unwrap();
        assert_eq!(restored.own.unwrap().checkpoint.sequence, 6);
        assert!(
            certified_key(255) < certified_key(256),
            "keys sort by sequence"
        );
    }
}
