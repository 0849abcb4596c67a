//! Execution of committed blocks: optimistic in parallel, equal to sequential by construction.
//!
//! For each block, in height order:
//! 1. **Optimistic phase** (a pool of `workers` threads): every transaction runs against the
//!    pre-block snapshot, recording the snapshot values it read; workers claim transactions in
//!    small chunks from a shared counter, so skew in cost does not leave a core idle.
//! 2. **Validation phase** (in block order, one thread): a transaction whose reads all still
//!    hold — no earlier transaction in the block wrote a different value to any key it read —
//!    keeps its optimistic result; otherwise it runs again against the snapshot plus the
//!    writes of the transactions before it. Either way its result is the one sequential
//!    execution gives at that position (see [`crate::execution`]). Re-runs read mostly from
//!    memory: every snapshot value any transaction read is kept for the block.
//! 3. **Commit**: the block's net writes, every receipt and the [`ExecutedMarker`] go to
//!    RocksDB in one write batch, so a crash leaves the store at a block boundary and
//!    execution resumes at the marker's height + 1.
//!
//! Duplicates are skipped: a transaction whose digest appears earlier in the block, or whose
//! nonce is stale because it already executed (its receipt says so). A transaction with a stale
//! nonce that never executed is discarded with a receipt. With `workers == 0` the executor runs
//! plainly in order, the reference the parallel path is tested against.

use crate::{
    cache::StateCache,
    config::ExecutorConfig,
    error::{Error, Result},
    execution::{BlockContext, StateView, TxOutcome, execute_transaction},
    genesis::{GenesisState, genesis_marker_digest, read_epoch_state, read_fees, write_genesis},
    governance::{self, EPOCH_STATE_KEY},
    state::{self, EXECUTED_KEY, ExecutedMarker, encode},
};
use keel_storage::{Column, StateSnapshot, Store, Versioned, WriteOp};
use keel_types::{
    Address, Digest, DiscardReason, Epoch, EpochState, ExecutionStatus, FeeSchedule, Height,
    Receipt, SignedTransaction, TimestampMs,
};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Transactions a worker claims at a time in the optimistic phase.
const CHUNK: usize = 8;

/// A committed block ready to execute: its position and its transactions in order.
#[derive(Debug, Clone)]
pub struct BlockToExecute<'a> {
    /// The block's height.
    pub height: Height,
    /// The block id.
    pub digest: Digest,
    /// The block's epoch: it must be the epoch the executed state is in.
    pub epoch: Epoch,
    /// The block's timestamp (transactions expiring before it are discarded).
    pub timestamp: TimestampMs,
    /// The transactions of its batches, in proof order then batch order.
    pub transactions: Vec<&'a SignedTransaction>,
}

/// What executing a block did.
#[derive(Debug, Clone)]
pub struct BlockOutcome {
    /// The marker after the block.
    pub marker: ExecutedMarker,
    /// One receipt per transaction not skipped, in block order.
    pub receipts: Vec<Receipt>,
    /// Duplicates skipped.
    pub skipped: usize,
    /// Transactions whose optimistic run was invalidated and ran again.
    pub reexecuted: usize,
    /// Where the time went.
    pub timings: Timings,
    /// The next epoch's record, when this block ended the epoch (it is already written).
    pub epoch_end: Option<EpochState>,
}

/// Time spent in each phase of a block's execution.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Optimistic runs on the worker pool.
    pub optimistic: Duration,
    /// In-order validation and re-execution.
    pub validate: Duration,
    /// Building and writing the block's write batch.
    pub commit: Duration,
}

/// Executes committed blocks into a store; the only writer of its state.
pub struct Executor {
    store: Arc<Store>,
    config: ExecutorConfig,
    marker: ExecutedMarker,
    cache: StateCache,
    /// The executed state's epoch record (`None` on a chain without one).
    epoch: Option<EpochState>,
    /// The chain's fees, from the executed state.
    fees: FeeSchedule,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("workers", &self.config.workers)
            .field("marker", &self.marker)
            .finish()
    }
}

/// One transaction's optimistic run.
struct Run {
    digest: Digest,
    sender: Address,
    outcome: TxOutcome,
    /// The snapshot values it read.
    reads: Vec<(Vec<u8>, Option<Versioned>)>,
}

impl Executor {
    /// Opens execution on `store`, writing `genesis` if the store is new. A store holding
    /// another genesis is refused.
    pub fn open(store: Arc<Store>, config: ExecutorConfig, genesis: &GenesisState) -> Result<Self> {
        let marker = match state::executed_marker(&store)? {
            Some(marker) => {
                let found = genesis_marker_digest(&store)?;
                if found != Some(genesis.digest) {
                    return Err(Error::GenesisMismatch {
                        expected: genesis.digest,
                        found: found.unwrap_or_default(),
                    });
                }
                marker
            }
            None => write_genesis(&store, genesis)?,
        };
        let epoch = read_epoch_state(&store)?;
        let fees = read_fees(&store)?;
        Ok(Executor {
            store,
            cache: StateCache::new(config.cache_entries),
            config,
            marker,
            epoch,
            fees,
        })
    }

    /// The executed state's epoch record.
    pub fn epoch_state(&self) -> Option<&EpochState> {
        self.epoch.as_ref()
    }

    /// Reloads the epoch record from the store (after state sync installed another state).
    pub fn reload(&mut self) -> Result<()> {
        self.epoch = read_epoch_state(&self.store)?;
        self.fees = read_fees(&self.store)?;
        if let Some(marker) = state::executed_marker(&self.store)? {
            self.marker = marker;
        }
        self.cache = StateCache::new(self.config.cache_entries);
        Ok(())
    }

    /// How far execution has got.
    pub fn marker(&self) -> &ExecutedMarker {
        &self.marker
    }

    /// The store executed into.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Executes the block at the next height and commits it.
    pub fn execute_block(&mut self, block: &BlockToExecute<'_>) -> Result<BlockOutcome> {
        let expected = Height(self.marker.height.0.saturating_add(1));
        if block.height != expected {
            return Err(Error::OutOfOrder {
                expected,
                found: block.height,
            });
        }
        if let Some(epoch) = &self.epoch
            && epoch.epoch() != block.epoch
        {
            return Err(Error::WrongEpoch {
                height: block.height,
                expected: epoch.epoch(),
                found: block.epoch,
            });
        }
        let context = BlockContext {
            height: block.height,
            timestamp: block.timestamp,
            fees: self.fees,
        };
        let started = Instant::now();
        let mut timings = Timings::default();
        let mut txn = self.store.begin();
        let pre = PreBlock {
            snapshot: txn.snapshot(),
            cache: &self.cache,
        };
        let runs = if self.config.workers == 0 {
            Vec::new()
        } else {
            optimistic_phase(&pre, block, context, self.config.workers)?
        };
        let mut runs = runs.into_iter().map(Some);
        timings.optimistic = started.elapsed();

        let mut overlay: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut base: HashMap<Vec<u8>, Option<Versioned>> = HashMap::new();
        let mut seen: HashSet<Digest> = HashSet::with_capacity(block.transactions.len());
        let mut receipts = Vec::with_capacity(block.transactions.len());
        let (mut skipped, mut reexecuted, mut executed) = (0usize, 0usize, 0u64);

        for (position, tx) in block.transactions.iter().enumerate() {
            let run = runs.next().flatten();
            let (digest, sender) = match &run {
                Some(run) => (run.digest, run.sender),
                None => (tx.digest(), tx.transaction.sender_address()),
            };
            if !seen.insert(digest) {
                skipped += 1;
                continue;
            }
            let outcome = match run {
                Some(run) if still_valid(&run.reads, &overlay) => {
                    for (key, found) in run.reads {
                        base.entry(key).or_insert(found);
                    }
                    run.outcome
                }
                other => {
                    if let Some(run) = other {
                        reexecuted += 1;
                        for (key, found) in run.reads {
                            base.entry(key).or_insert(found);
                        }
                    }
                    let mut view = OverlayView {
                        overlay: &overlay,
                        base: &mut base,
                        pre: &pre,
                    };
                    execute_transaction(&tx.transaction, sender, context, &mut view)?
                }
            };
            let (status, effects, fee) = match outcome {
                TxOutcome::Executed {
                    status,
                    fee,
                    writes,
                    effects,
                } => {
                    overlay.extend(writes);
                    executed += 1;
                    (status, effects, fee)
                }
                TxOutcome::Discarded(reason) => (ExecutionStatus::Discarded(reason), Vec::new(), 0),
                TxOutcome::Stale { next } => {
                    let earlier = state::receipt(&self.store, &digest)?;
                    if earlier.is_some_and(|r| r.status.is_executed()) {
                        skipped += 1;
                        continue;
                    }
                    let reason = DiscardReason::StaleNonce {
                        nonce: tx.transaction.nonce,
                        next,
                    };
                    (ExecutionStatus::Discarded(reason), Vec::new(), 0)
                }
            };
            receipts.push(Receipt {
                transaction: digest,
                sender,
                nonce: tx.transaction.nonce,
                status,
                effects,
                height: block.height,
                block: block.digest,
                position: u32::try_from(position).unwrap_or(u32::MAX),
                fee,
            });
        }

        // The epoch record after the block, and the next epoch's if the block ends this one.
        let mut epoch = self.epoch.clone();
        if let Some(Some(bytes)) = overlay.get(EPOCH_STATE_KEY) {
            epoch = Some(state::decode(bytes, "epoch state")?);
        }
        let epoch_end = epoch
            .as_ref()
            .filter(|e| e.ends_with(block.height))
            .map(|e| governance::next_epoch(e, block.height));
        if let Some(next) = &epoch_end {
            overlay.insert(EPOCH_STATE_KEY.to_vec(), Some(encode(next)));
            epoch = Some(next.clone());
        }
        timings.validate = started.elapsed() - timings.optimistic;
        let marker = ExecutedMarker {
            height: block.height,
            block: block.digest,
            executed_transactions: self.marker.executed_transactions.saturating_add(executed),
        };
        for (key, value) in &overlay {
            match base.get(key) {
                Some(found) => txn.record_read(key, found.as_ref())?,
                None => {
                    txn.get_versioned(key)?;
                }
            }
            match value {
                Some(value) => txn.put(key, value)?,
                None => txn.delete(key)?,
            }
        }
        let mut extra = Vec::with_capacity(receipts.len() + 1);
        for receipt in &receipts {
            extra.push(WriteOp {
                column: Column::Receipts,
                key: receipt.transaction.0.to_vec(),
                value: Some(encode(receipt)),
            });
        }
        // Key order makes RocksDB's memtable insertions cheaper (each starts near the last).
        extra.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        extra.push(WriteOp {
            column: Column::Meta,
            key: EXECUTED_KEY.to_vec(),
            value: Some(encode(&marker)),
        });
        let info = txn.commit_with(extra)?;
        // The cache now follows the commit: snapshot values read, then this block's writes.
        for (key, found) in base {
            if !overlay.contains_key(&key) {
                self.cache.insert(key, found);
            }
        }
        for (key, value) in overlay {
            let value = value.map(|value| Versioned {
                version: info.seq,
                value,
            });
            self.cache.insert(key, value);
        }
        timings.commit = started.elapsed() - timings.optimistic - timings.validate;
        self.marker = marker.clone();
        self.epoch = epoch;
        Ok(BlockOutcome {
            marker,
            receipts,
            skipped,
            reexecuted,
            timings,
            epoch_end,
        })
    }
}

/// Whether every value `reads` saw in the snapshot is still the value before this position.
fn still_valid(
    reads: &[(Vec<u8>, Option<Versioned>)],
    overlay: &HashMap<Vec<u8>, Option<Vec<u8>>>,
) -> bool {
    reads.iter().all(|(key, found)| match overlay.get(key) {
        None => true,
        Some(now) => now.as_deref() == found.as_ref().map(|v| v.value.as_slice()),
    })
}

/// The state before the block: the cache in front of the snapshot.
struct PreBlock<'a, 's> {
    snapshot: &'a StateSnapshot<'s>,
    cache: &'a StateCache,
}

impl PreBlock<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        match self.cache.get(key) {
            Some(found) => Ok(found.clone()),
            None => Ok(self.snapshot.get(key)?),
        }
    }
}

fn optimistic_phase(
    pre: &PreBlock<'_, '_>,
    block: &BlockToExecute<'_>,
    context: BlockContext,
    workers: usize,
) -> Result<Vec<Run>> {
    let n = block.transactions.len();
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<(usize, Run)>> {
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= n {
                return Ok(out);
            }
            for (i, tx) in block
                .transactions
                .iter()
                .enumerate()
                .take((start + CHUNK).min(n))
                .skip(start)
            {
                let sender = tx.transaction.sender_address();
                let mut view = SnapshotView {
                    pre,
                    reads: Vec::new(),
                };
                let outcome = execute_transaction(&tx.transaction, sender, context, &mut view)?;
                out.push((
                    i,
                    Run {
                        digest: tx.digest(),
                        sender,
                        outcome,
                        reads: view.reads,
                    },
                ));
            }
        }
    };
    let parts: Vec<Result<Vec<(usize, Run)>>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers.min(n.div_ceil(CHUNK)).max(1))
            .map(|_| scope.spawn(work))
            .collect();
        let mut parts = vec![work()];
        for helper in helpers {
            // A worker only panics on a broken invariant of ours; carry the panic on.
            parts.push(
                helper
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        parts
    });
    let mut slots: Vec<Option<Run>> = (0..n).map(|_| None).collect();
    for part in parts {
        for (i, run) in part? {
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(run);
            }
        }
    }
    // INVARIANT: the chunks cover 0..n exactly once.
    Ok(slots
        .into_iter()
        .map(|r| r.expect("INVARIANT: every transaction ran"))
        .collect())
}

/// The pre-block snapshot, recording what it returns.
struct SnapshotView<'a, 'b, 's> {
    pre: &'a PreBlock<'b, 's>,
    reads: Vec<(Vec<u8>, Option<Versioned>)>,
}

impl StateView for SnapshotView<'_, '_, '_> {
    fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let found = self.pre.get(key)?;
        let value = found.as_ref().map(|v| v.value.clone());
        self.reads.push((key.to_vec(), found));
        Ok(value)
    }
}

/// The snapshot plus the writes of the block's earlier transactions.
struct OverlayView<'a, 'b, 's> {
    overlay: &'a HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Snapshot values already read during this block.
    base: &'a mut HashMap<Vec<u8>, Option<Versioned>>,
    pre: &'a PreBlock<'b, 's>,
}

impl StateView for OverlayView<'_, '_, '_> {
    fn read(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(now) = self.overlay.get(key) {
            return Ok(now.clone());
        }
        if let Some(found) = self.base.get(key) {
            return Ok(found.as_ref().map(|v| v.value.clone()));
        }
        let found = self.pre.get(key)?;
        let value = found.as_ref().map(|v| v.value.clone());
        self.base.insert(key.to_vec(), found);
        Ok(value)
    }
}

impl Executor {
    /// The fees transactions pay.
    pub fn fees(&self) -> FeeSchedule {
        self.fees
    }
}
