//! Crash recovery of execution with a real process: a child executes a long, seeded block
//! sequence and is SIGKILLed at random moments; each restart resumes at the executed marker's
//! height + 1. After every kill the store sits at a block boundary with the state root an
//! uncrashed run had at that height; at the end every receipt and the root equal the uncrashed
//! run's.
//!
//! `KEEL_EXEC_CRASH_ROUNDS` sets the number of kills (default 8); `KEEL_EXEC_CRASH_SEED`
//! replays a run (the seed is printed).

use keel_authority::{
    BlockToExecute, Executor, ExecutorConfig,
    state::{self},
    test_utils::{BLOCK_TIME, Workload, WorkloadConfig},
};
use keel_storage::{Store, StoreConfig};
use keel_types::test_utils::{TestChild, env_knob};
use keel_types::{Digest, Height, SignedTransaction};
use rand::{Rng, SeedableRng};
use std::{sync::Arc, time::Duration};

const CHILD_ENV: &str = "KEEL_EXEC_CRASH_CHILD_DIR";
const WORKLOAD_SEED: u64 = 42;
const BLOCKS: usize = 200;
const BLOCK_SIZE: usize = 200;

fn workload() -> (keel_authority::GenesisState, Vec<Vec<SignedTransaction>>) {
    let config = WorkloadConfig {
        accounts: 64,
        ..WorkloadConfig::adversarial()
    };
    let mut workload = Workload::new(WORKLOAD_SEED, config);
    let blocks = (0..BLOCKS).map(|_| workload.block(BLOCK_SIZE)).collect();
    (workload.genesis(), blocks)
}

fn block_at(height: usize, transactions: &[SignedTransaction]) -> BlockToExecute<'_> {
    BlockToExecute {
        epoch: keel_types::Epoch(0),
        height: Height(height as u64),
        digest: Digest::of_tagged("crash-block", &height),
        timestamp: BLOCK_TIME,
        transactions: transactions.iter().collect(),
    }
}

/// Executes the block at `height` in the executed state's epoch.
fn run_block(executor: &mut Executor, height: usize, transactions: &[SignedTransaction]) {
    let mut block = block_at(height, transactions);
    block.epoch = executor
        .epoch_state()
        .map(|e| e.epoch())
        .unwrap_or_default();
    executor.execute_block(&block).unwrap();
}

fn open(dir: &std::path::Path) -> Executor {
    let (genesis, _) = workload();
    let store = Arc::new(Store::open(dir, &StoreConfig::default()).unwrap());
    Executor::open(store, ExecutorConfig::with_workers(2), &genesis).unwrap()
}

/// The child: execute from the marker to the end of the sequence, announcing each height.
#[test]
#[ignore = "helper process for execution_resumes_after_sigkill_with_identical_results"]
fn execution_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (_, blocks) = workload();
    let mut executor = open(std::path::Path::new(&dir));
    let start = executor.marker().height.0 as usize + 1;
    println!("ready at {start}");
    for height in start..=BLOCKS {
        run_block(&mut executor, height, &blocks[height - 1]);
        println!("executed {height}");
    }
    println!("done");
}

/// Per height: the state root after it; and every receipt of the run, encoded.
fn reference(blocks: &[Vec<SignedTransaction>]) -> (Vec<Digest>, Vec<Option<Vec<u8>>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(dir.path());
    let mut roots = vec![executor.store().state_root().unwrap()];
    for (i, txs) in blocks.iter().enumerate() {
        run_block(&mut executor, i + 1, txs);
        roots.push(executor.store().state_root().unwrap());
    }
    (roots, receipts(executor.store(), blocks))
}

fn receipts(store: &Store, blocks: &[Vec<SignedTransaction>]) -> Vec<Option<Vec<u8>>> {
    blocks
        .iter()
        .flatten()
        .map(|tx| {
            state::receipt(store, &tx.digest())
                .unwrap()
                .map(|r| bcs::to_bytes(&r).unwrap())
        })
        .collect()
}

#[test]
fn execution_resumes_after_sigkill_with_identical_results() {
    let rounds: usize = env_knob("KEEL_EXEC_CRASH_ROUNDS").unwrap_or(8);
    let seed: u64 = env_knob("KEEL_EXEC_CRASH_SEED").unwrap_or_else(rand::random);
    println!(
        "execution crash seed {seed} ({rounds} kills); replay with KEEL_EXEC_CRASH_SEED={seed}"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (_, blocks) = workload();
    let (roots, expected_receipts) = reference(&blocks);
    let dir = tempfile::tempdir().unwrap();

    let mut kills = 0;
    let mut killed_mid_run = 0;
    loop {
        let child = TestChild::spawn("execution_crash_child", &[(CHILD_ENV, dir.path())]);
        child.wait_for_line("ready at", Duration::from_secs(120));
        let finished;
        if kills < rounds {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..60)));
            let lines = child.kill(); // SIGKILL
            kills += 1;
            finished = lines.iter().any(|l| l == "done");
            if !finished {
                killed_mid_run += 1;
            }
            let acked = lines
                .iter()
                .filter_map(|l| l.strip_prefix("executed ")?.parse::<u64>().ok())
                .max();
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            let marker = state::executed_marker(&store).unwrap().unwrap();
            let height = marker.height.0;
            assert!(
                acked.is_none_or(|a| height >= a),
                "acknowledged height {acked:?} lost: the store is at {height}"
            );
            assert_eq!(
                store.state_root().unwrap(),
                roots[height as usize],
                "after kill {kills} at height {height}: root differs from the uncrashed run"
            );
            println!("kill {kills}: store at height {height}");
        } else {
            let (status, lines) = child.wait(Duration::from_secs(300));
            assert!(status.success(), "final child failed: {status}");
            finished = lines.iter().any(|l| l == "done");
            assert!(finished, "final child did not finish");
        }
        if finished {
            break;
        }
    }

    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let marker = state::executed_marker(&store).unwrap().unwrap();
    assert_eq!(marker.height, Height(BLOCKS as u64));
    assert_eq!(store.state_root().unwrap(), roots[BLOCKS]);
    assert_eq!(
        store.state_root().unwrap(),
        store.recompute_state_hash().unwrap().root()
    );
    let got = receipts(&store, &blocks);
    let differing = got
        .iter()
        .zip(&expected_receipts)
        .filter(|(g, e)| g != e)
        .count();
    assert_eq!(
        differing, 0,
        "{differing} receipts differ from the uncrashed run"
    );
    println!(
        "{kills} kills ({killed_mid_run} mid-run), {} receipts equal, final root equal",
        got.iter().flatten().count()
    );
    assert!(killed_mid_run > 0, "no kill interrupted execution");
}
