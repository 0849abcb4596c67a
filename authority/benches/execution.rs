//! Execution throughput: blocks of 1,000 signed single-transfer transactions over 100,000 funded
//! accounts, with low conflict (distinct senders, random recipients) and with one hot account
//! (every transfer pays account 0), executed plainly in order and with 1, 2 and 4 optimistic
//! workers. Each figure includes the block's commit (one RocksDB write batch) and waits for the
//! state root. `cargo bench -p keel-authority --bench execution`.

use keel_authority::{
    BlockToExecute, Executor, ExecutorConfig,
    test_utils::{BLOCK_TIME, Workload, WorkloadConfig},
};
use keel_storage::{Store, StoreConfig};
use keel_types::{Digest, Height, SignedTransaction};
use std::{sync::Arc, time::Instant};

const ACCOUNTS: usize = 100_000;
const BLOCK: usize = 1_000;
const WARMUP_BLOCKS: usize = 5;
const BLOCKS: usize = 40;

fn run(workers: usize, config: &WorkloadConfig) -> (f64, usize, [f64; 3]) {
    let mut workload = Workload::new(1, config.clone());
    let genesis = workload.genesis();
    let blocks: Vec<Vec<SignedTransaction>> = (0..WARMUP_BLOCKS + BLOCKS)
        .map(|_| workload.block(BLOCK))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap());
    let mut executor =
        Executor::open(store, ExecutorConfig::with_workers(workers), &genesis).unwrap();
    let mut reexecuted = 0;
    let mut phases = [0f64; 3];
    let mut start = Instant::now();
    for (i, txs) in blocks.iter().enumerate() {
        if i == WARMUP_BLOCKS {
            start = Instant::now();
            reexecuted = 0;
            phases = [0.0; 3];
        }
        let block = BlockToExecute {
            epoch: executor
                .epoch_state()
                .map(|e| e.epoch())
                .unwrap_or_default(),
            height: Height(i as u64 + 1),
            digest: Digest::of_tagged("bench-block", &i),
            timestamp: BLOCK_TIME,
            transactions: txs.iter().collect(),
        };
        let outcome = executor.execute_block(&block).unwrap();
        assert_eq!(outcome.receipts.len(), BLOCK);
        reexecuted += outcome.reexecuted;
        let t = outcome.timings;
        for (sum, d) in phases.iter_mut().zip([t.optimistic, t.validate, t.commit]) {
            *sum += d.as_secs_f64() * 1e3 / BLOCKS as f64;
        }
    }
    executor.store().state_root().unwrap();
    let secs = start.elapsed().as_secs_f64();
    ((BLOCKS * BLOCK) as f64 / secs, reexecuted / BLOCKS, phases)
}

fn main() {
    let low = WorkloadConfig::transfers(ACCOUNTS);
    let hot = WorkloadConfig {
        hot_accounts: 1,
        hot_probability: 1.0,
        ..WorkloadConfig::transfers(ACCOUNTS)
    };
    // Optional filters: `-- <workload substring> <workers>`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    for (name, config) in [("low conflict", &low), ("one hot account", &hot)] {
        if args.first().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        for workers in [0, 1, 2, 4] {
            if args.get(1).is_some_and(|w| *w != workers.to_string()) {
                continue;
            }
            let (tps, reexecuted, [optimistic, validate, commit]) = run(workers, config);
            let mode = if workers == 0 {
                "sequential".to_string()
            } else {
                format!("{workers} workers")
            };
            println!(
                "execution, {name}, {mode}: {tps:.0} tx/s ({reexecuted} of {BLOCK} re-executed per block; \
                 per block: optimistic {optimistic:.2} ms, validate {validate:.2} ms, commit {commit:.2} ms)"
            );
        }
    }
}
