//! What a state sync in progress keeps in the store between runs: which buckets are proven
//! (their staged content checked), carried over to a newer checkpoint, copied from the
//! installed state, or dropped (see the parent module's documentation).

use super::{BootstrapDeps, PeerView, TARGET_KEY, proven_key, summary};
use anyhow::Result;
use keel_p2p::state_sync::{BUCKETS, BucketProgress};
use keel_storage::{Column, Store, WriteOp};
use keel_types::{Checkpoint, Digest};

/// Moves an abandoned sync's staging over to a newer checkpoint whose (verified) bucket
/// checksums are `checksums`: a proven bucket whose staged content hashes to the new
/// checksum is the same bucket and stays proven; every other bucket is dropped. Returns how
/// many were kept.
pub(super) fn carry_over(store: &Store, checksums: &[Digest]) -> Result<usize> {
    let mut kept = 0;
    for b in 0..BUCKETS {
        let bucket = b as u8;
        let proven = store.get(Column::Meta, &proven_key(bucket))?.is_some();
        if proven && checksums.get(b) == Some(&store.staged_bucket_hash(bucket)?.checksum()) {
            kept += 1;
            continue;
        }
        store.write(
            vec![WriteOp {
                column: Column::Meta,
                key: proven_key(bucket),
                value: None,
            }],
            true,
        )?;
        store.clear_staged_bucket(bucket)?;
    }
    Ok(kept)
}

/// Drops an abandoned sync's records, then its staging (records first and in one write: a
/// crash in between leaves staging no record points to, which the next sync clears).
pub(super) fn forget(store: &Store) -> Result<()> {
    let mut ops = vec![WriteOp {
        column: Column::Meta,
        key: TARGET_KEY.to_vec(),
        value: None,
    }];
    for b in 0..BUCKETS {
        ops.push(WriteOp {
            column: Column::Meta,
            key: proven_key(b as u8),
            value: None,
        });
    }
    store.write(ops, true)?;
    store.clear_staging()?;
    Ok(())
}

/// Stages, as proven, every bucket not proven yet whose content in the installed state is
/// already the target's (same checksum in a peer's summary that hashes to the certified
/// root): a node that installed a checkpoint moments ago, or is a little behind, downloads
/// only what changed since. Returns how many buckets it kept.
pub(super) async fn keep_current_buckets(
    deps: &BootstrapDeps,
    views: &[PeerView],
    target: &Checkpoint,
) -> Result<usize> {
    let Some(checksums) = summary(deps, views, target).await else {
        return Ok(0);
    };
    let store = deps.store.clone();
    let batch_bytes = deps.config.chunk_bytes;
    let kept = tokio::task::spawn_blocking(move || -> Result<usize> {
        let current = store.state_hash()?;
        let mut kept = 0;
        for b in 0..BUCKETS {
            let bucket = b as u8;
            if store.get(Column::Meta, &proven_key(bucket))?.is_some()
                || checksums.get(b) != Some(&current.bucket(bucket).checksum())
            {
                continue;
            }
            store.stage_current_bucket(bucket, batch_bytes)?;
            store.put(Column::Meta, &proven_key(bucket), &[1])?;
            kept += 1;
        }
        Ok(kept)
    })
    .await??;
    tracing::info!(kept, "buckets the installed state already has are kept");
    Ok(kept)
}

/// Each bucket's progress as the store holds it: proven buckets are kept (the whole staged
/// state is checked against the root before the install); a partly staged bucket starts
/// over, since which peer served it is not known any more (a bad checksum must name its
/// server).
pub(super) fn restore_progress(store: &Store) -> Result<Vec<BucketProgress>> {
    (0..BUCKETS)
        .map(|b| {
            let bucket = b as u8;
            if store.get(Column::Meta, &proven_key(bucket))?.is_some() {
                return Ok(BucketProgress::Proven);
            }
            store.clear_staged_bucket(bucket)?;
            Ok(BucketProgress::Downloading { after: None })
        })
        .collect()
}
