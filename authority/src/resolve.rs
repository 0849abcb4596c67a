//! Batches at rest: storing them under their digest, and resolving a committed block's proofs
//! to batches for execution — from the local store, else fetched from a validator that signed
//! the proof (a proof carries signatures from more than 1/3 of the stake, so at least one
//! honest signer holds the batch). A fetched answer is untrusted: it counts only if its digest
//! is the one the proof names.

use crate::{
    error::{Error, Result},
    state,
};
use keel_storage::{Column, Store};
use keel_types::{Batch, Digest, ProofOfAvailability, ValidatorIndex};

/// How a missing batch is fetched from peers (the node's transport).
pub trait BatchFetcher {
    /// Asks `holders` (in turn) for a batch; blocks until one answers or every one failed.
    /// The answer is untrusted.
    fn fetch_batch(&self, digest: &Digest, holders: &[ValidatorIndex]) -> Result<Batch, String>;
}

/// Stores a batch under its digest (the node's `StoreBatch` action).
pub fn store_batch(store: &Store, batch: &Batch) -> Result<()> {
    store.put(Column::Batches, &batch.digest().0, &state::encode(batch))?;
    Ok(())
}

/// Stores a batch this node acknowledges (a peer's, or its own) with its ledger entry (see
/// [`crate::batch_ledger`]), in one write synced to disk: an acknowledgement is this
/// validator's signed word that it holds the batch, which must survive a power loss, not
/// only a crash of the process.
pub fn store_acknowledged_batch(
    store: &Store,
    batch: &Batch,
    entry: &crate::LedgerEntry,
) -> Result<()> {
    store_batch_with_entry(store, batch, entry, true)
}

/// Stores a peer's batch this node holds without acknowledging it (it was not designated to
/// verify it) with its ledger entry, unsynced: nothing was promised, and a batch lost to a
/// power cut is fetched from a holder if a block orders it.
pub fn store_held_batch(store: &Store, batch: &Batch, entry: &crate::LedgerEntry) -> Result<()> {
    store_batch_with_entry(store, batch, entry, false)
}

fn store_batch_with_entry(
    store: &Store,
    batch: &Batch,
    entry: &crate::LedgerEntry,
    sync: bool,
) -> Result<()> {
    let digest = batch.digest();
    let ops = vec![
        keel_storage::WriteOp {
            column: Column::Batches,
            key: digest.0.to_vec(),
            value: Some(state::encode(batch)),
        },
        keel_storage::WriteOp {
            column: Column::Meta,
            key: crate::ledger_key(&digest),
            value: Some(state::encode(entry)),
        },
    ];
    store.write(ops, sync)?;
    Ok(())
}

/// The batches a committed block's proofs name, in order: from the local store, else fetched
/// from the proof's signers (an answer counts only if its digest matches, and is then stored).
pub fn resolve_batches(
    store: &Store,
    fetcher: &impl BatchFetcher,
    proofs: &[ProofOfAvailability],
) -> Result<Vec<Batch>> {
    proofs
        .iter()
        .map(|proof| {
            let digest = proof.info.digest;
            if let Some(bytes) = store.get(Column::Batches, &digest.0)? {
                return state::decode(&bytes, "batch");
            }
            let holders: Vec<ValidatorIndex> = proof.signatures.signers().collect();
            let batch = fetcher
                .fetch_batch(&digest, &holders)
                .map_err(|reason| Error::MissingBatch { digest, reason })?;
            if batch.digest() != digest {
                return Err(Error::MissingBatch {
                    digest,
                    reason: "the peer answered with another batch".into(),
                });
            }
            store_batch(store, &batch)?;
            Ok(batch)
        })
        .collect()
}
