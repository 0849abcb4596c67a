//! Execution: parallel equals sequential (property test), and the rules of one transaction
//! (failure consumes the nonce, discards do not, duplicates are skipped).

use keel_authority::{
    BlockOutcome, BlockToExecute, Error, Executor, ExecutorConfig, GenesisState,
    state::{self, account, object},
    test_utils::{BLOCK_TIME, CHAIN, Workload, WorkloadConfig},
};
use keel_storage::{Store, StoreConfig};
use keel_types::{
    Address, Digest, DiscardReason, Effect, ExecutionStatus, FailureReason, FeeSchedule, Height,
    Nonce, Op, SignedTransaction, TimestampMs, Transaction, test_utils::seeded_key,
};
use proptest::prelude::*;
use std::sync::Arc;

fn open(dir: &tempfile::TempDir, workers: usize, genesis: &GenesisState) -> Executor {
    open_with(dir, ExecutorConfig::with_workers(workers), genesis)
}

fn open_with(dir: &tempfile::TempDir, config: ExecutorConfig, genesis: &GenesisState) -> Executor {
    let store = Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap());
    Executor::open(store, config, genesis).unwrap()
}

/// Executes `transactions` as the block at `height`, in the executed state's epoch.
fn execute(
    executor: &mut Executor,
    height: u64,
    transactions: &[SignedTransaction],
) -> Result<BlockOutcome, Error> {
    let mut block = block_at(height, transactions);
    block.epoch = executor
        .epoch_state()
        .map(|e| e.epoch())
        .unwrap_or_default();
    executor.execute_block(&block)
}

fn block_at(height: u64, transactions: &[SignedTransaction]) -> BlockToExecute<'_> {
    BlockToExecute {
        epoch: keel_types::Epoch(0),
        height: Height(height),
        digest: Digest::of_tagged("test-block", &height),
        timestamp: BLOCK_TIME,
        transactions: transactions.iter().collect(),
    }
}

/// Executes `blocks` with `workers`; returns each block's encoded receipts and state root.
fn run(
    config: ExecutorConfig,
    genesis: &GenesisState,
    blocks: &[Vec<SignedTransaction>],
) -> (Vec<(Vec<u8>, Digest)>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open_with(&dir, config, genesis);
    let mut reexecuted = 0;
    let per_block = blocks
        .iter()
        .enumerate()
        .map(|(i, txs)| {
            let outcome = execute(&mut executor, i as u64 + 1, txs).unwrap();
            reexecuted += outcome.reexecuted;
            let root = executor.store().state_root().unwrap();
            (bcs::to_bytes(&outcome.receipts).unwrap(), root)
        })
        .collect();
    let store = executor.store();
    assert_eq!(
        store.state_root().unwrap(),
        store.recompute_state_hash().unwrap().root(),
        "incremental root differs from a full recomputation"
    );
    (per_block, reexecuted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random blocks over few accounts and keys (transfers, puts, deletes, compare-and-swaps,
    /// bad nonces, overdrafts, expired and duplicated transactions): 1, 2 and 4 workers give
    /// byte-identical receipts and the same state root after every block as plain sequential
    /// execution without a state cache (2 workers run with a cache small enough to evict).
    #[test]
    fn parallel_execution_equals_sequential(
        seed in any::<u64>(),
        sizes in proptest::collection::vec(1usize..160, 1..5),
    ) {
        let mut workload = Workload::new(seed, WorkloadConfig::adversarial());
        let genesis = workload.genesis();
        let blocks: Vec<_> = sizes.iter().map(|n| workload.block(*n)).collect();
        let reference = ExecutorConfig { workers: 0, cache_entries: 0 };
        let (sequential, _) = run(reference, &genesis, &blocks);
        for (workers, cache_entries) in [(1, 1 << 20), (2, 8), (4, 1 << 20)] {
            let (parallel, _) = run(ExecutorConfig { workers, cache_entries }, &genesis, &blocks);
            for (height, (p, s)) in parallel.iter().zip(&sequential).enumerate() {
                prop_assert!(p.0 == s.0, "receipts differ at height {} with {} workers (seed {})", height + 1, workers, seed);
                prop_assert_eq!(p.1, s.1, "root differs at height {} with {} workers", height + 1, workers);
            }
        }
    }
}

#[test]
fn the_property_workload_really_conflicts_fails_and_discards() {
    // Guards the property test against a workload too tame to test anything.
    let mut workload = Workload::new(11, WorkloadConfig::adversarial());
    let genesis = workload.genesis();
    let blocks: Vec<_> = (0..4).map(|_| workload.block(150)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(&dir, 2, &genesis);
    let (mut reexecuted, mut skipped) = (0, 0);
    let mut statuses = [0usize; 3];
    let (mut votes_counted, mut votes_refused, mut epoch_ends) = (0, 0, 0);
    for (i, txs) in blocks.iter().enumerate() {
        let outcome = execute(&mut executor, i as u64 + 1, txs).unwrap();
        reexecuted += outcome.reexecuted;
        skipped += outcome.skipped;
        epoch_ends += usize::from(outcome.epoch_end.is_some());
        for r in &outcome.receipts {
            if r.effects
                .iter()
                .any(|e| matches!(e, Effect::GovernanceVote { .. }))
            {
                votes_counted += 1;
            }
            if matches!(
                r.status,
                ExecutionStatus::Failed(FailureReason::GovernanceRefused { .. })
            ) {
                votes_refused += 1;
            }
        }
        for r in &outcome.receipts {
            statuses[match r.status {
                ExecutionStatus::Success => 0,
                ExecutionStatus::Failed(_) => 1,
                ExecutionStatus::Discarded(_) => 2,
            }] += 1;
        }
    }
    assert!(reexecuted > 50, "only {reexecuted} re-executions");
    assert!(skipped > 5, "only {skipped} duplicates skipped");
    assert!(
        statuses.iter().all(|n| *n > 10),
        "success/failed/discarded = {statuses:?}"
    );
    assert!(
        votes_counted > 2 && votes_refused > 2 && epoch_ends >= 1,
        "governance votes counted {votes_counted}, refused {votes_refused}, epoch ends {epoch_ends}"
    );
}

fn transfer(key: &keel_types::KeyPair, nonce: u64, to: Address, amount: u64) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN,
        sender: key.public(),
        nonce: Nonce(nonce),
        expiry: TimestampMs(BLOCK_TIME.0 + 1_000),
        ops: vec![Op::Transfer { to, amount }],
    }
    .sign(key)
}

fn addr(key: &keel_types::KeyPair) -> Address {
    Address::from_public_key(&key.public())
}

fn two_accounts() -> (keel_types::KeyPair, keel_types::KeyPair, GenesisState) {
    let (a, b) = (seeded_key("exec", 0), seeded_key("exec", 1));
    let genesis = GenesisState {
        digest: Digest::of_tagged("test-genesis", &0u8),
        accounts: vec![(addr(&a), 100), (addr(&b), 5)],
        epoch: None,
        fees: FeeSchedule::default(),
    };
    (a, b, genesis)
}

#[test]
fn a_failed_transaction_consumes_its_nonce_and_changes_nothing_else() {
    let (a, b, genesis) = two_accounts();
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(&dir, 2, &genesis);
    let pay = transfer(&a, 0, addr(&b), 30);
    let overdraw = transfer(&b, 0, addr(&a), 500);
    let outcome = execute(&mut executor, 1, &[pay.clone(), overdraw.clone()]).unwrap();
    let [ok, failed] = &outcome.receipts[..] else {
        panic!("two receipts expected: {:?}", outcome.receipts)
    };
    assert_eq!(ok.status, ExecutionStatus::Success);
    assert_eq!(
        failed.status,
        ExecutionStatus::Failed(FailureReason::InsufficientBalance {
            op_index: 0,
            needed: 500,
            available: 35,
        })
    );
    assert_eq!(
        failed.effects,
        vec![Effect::Account {
            address: addr(&b),
            balance: 35,
            nonce: Nonce(1)
        }]
    );
    let store = executor.store();
    assert_eq!(account(store, &addr(&a)).unwrap().balance, 70);
    assert_eq!(account(store, &addr(&b)).unwrap().nonce, Nonce(1));
    assert_eq!(
        state::receipt(store, &overdraw.digest())
            .unwrap()
            .unwrap()
            .position,
        1
    );
    assert_eq!(outcome.marker.executed_transactions, 2);
}

#[test]
fn duplicates_are_skipped_and_stale_or_future_nonces_discarded() {
    let (a, b, genesis) = two_accounts();
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(&dir, 2, &genesis);
    let first = transfer(&a, 0, addr(&b), 1);
    let outcome = execute(&mut executor, 1, &[first.clone(), first.clone()]).unwrap();
    assert_eq!((outcome.receipts.len(), outcome.skipped), (1, 1));

    // The same transaction again in a later block: skipped, its receipt untouched.
    let other_with_old_nonce = transfer(&a, 0, addr(&b), 2);
    let future = transfer(&a, 5, addr(&b), 1);
    let outcome = execute(
        &mut executor,
        2,
        &[first.clone(), other_with_old_nonce.clone(), future.clone()],
    )
    .unwrap();
    assert_eq!(outcome.skipped, 1);
    let statuses: Vec<_> = outcome.receipts.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        vec![
            ExecutionStatus::Discarded(DiscardReason::StaleNonce {
                nonce: Nonce(0),
                next: Nonce(1)
            }),
            ExecutionStatus::Discarded(DiscardReason::FutureNonce {
                nonce: Nonce(5),
                next: Nonce(1)
            }),
        ]
    );
    let store = executor.store();
    assert_eq!(
        state::receipt(store, &first.digest())
            .unwrap()
            .unwrap()
            .height,
        Height(1)
    );
    assert_eq!(account(store, &addr(&a)).unwrap().balance, 99);
    assert_eq!(outcome.marker.executed_transactions, 1);
}

#[test]
fn objects_follow_put_delete_and_compare_and_swap() {
    let (a, _, genesis) = two_accounts();
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(&dir, 4, &genesis);
    let tx = |nonce: u64, ops: Vec<Op>| {
        Transaction {
            chain_id: CHAIN,
            sender: a.public(),
            nonce: Nonce(nonce),
            expiry: TimestampMs(BLOCK_TIME.0),
            ops,
        }
        .sign(&a)
    };
    let k = b"k".to_vec();
    let txs = vec![
        tx(
            0,
            vec![Op::CompareAndSwap {
                key: k.clone(),
                expected_version: 0,
                value: b"one".to_vec(),
            }],
        ),
        tx(
            1,
            vec![
                Op::Put {
                    key: k.clone(),
                    value: b"two".to_vec(),
                },
                Op::CompareAndSwap {
                    key: k.clone(),
                    expected_version: 1,
                    value: b"never".to_vec(),
                },
            ],
        ),
        tx(
            2,
            vec![Op::CompareAndSwap {
                key: k.clone(),
                expected_version: 1,
                value: b"three".to_vec(),
            }],
        ),
    ];
    let outcome = execute(&mut executor, 1, &txs).unwrap();
    let statuses: Vec<_> = outcome.receipts.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        vec![
            ExecutionStatus::Success,
            // Nonce 1's put stamps version 1 × 32 + 0 + 1.
            ExecutionStatus::Failed(FailureReason::VersionMismatch {
                op_index: 1,
                expected: 1,
                found: 33
            }),
            ExecutionStatus::Success,
        ]
    );
    let stored = object(executor.store(), &addr(&a), &k).unwrap().unwrap();
    assert_eq!(
        (stored.version, stored.value.as_slice()),
        (65, &b"three"[..])
    );

    let delete = vec![tx(3, vec![Op::Delete { key: k.clone() }])];
    execute(&mut executor, 2, &delete).unwrap();
    assert_eq!(object(executor.store(), &addr(&a), &k).unwrap(), None);

    // Created again: a compare-and-swap holding a version of the deleted incarnation fails
    // (with versions counted from 1 per incarnation it would succeed: ABA).
    let again = vec![
        tx(
            4,
            vec![Op::Put {
                key: k.clone(),
                value: b"reborn".to_vec(),
            }],
        ),
        tx(
            5,
            vec![Op::CompareAndSwap {
                key: k.clone(),
                expected_version: 1,
                value: b"stale writer".to_vec(),
            }],
        ),
    ];
    let outcome = execute(&mut executor, 3, &again).unwrap();
    assert_eq!(
        outcome.receipts[1].status,
        ExecutionStatus::Failed(FailureReason::VersionMismatch {
            op_index: 0,
            expected: 1,
            found: 4 * 32 + 1
        })
    );
    let stored = object(executor.store(), &addr(&a), &k).unwrap().unwrap();
    assert_eq!(
        (stored.version, stored.value.as_slice()),
        (129, &b"reborn"[..])
    );
}

#[test]
fn blocks_must_come_in_height_order_and_genesis_must_match() {
    let (a, b, genesis) = two_accounts();
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(&dir, 2, &genesis);
    let txs = [transfer(&a, 0, addr(&b), 1)];
    let err = execute(&mut executor, 2, &txs).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfOrder {
                expected: Height(1),
                found: Height(2)
            }
        ),
        "{err}"
    );
    let BlockOutcome { marker, .. } = execute(&mut executor, 1, &txs).unwrap();
    assert!(execute(&mut executor, 1, &txs).is_err());
    let store = executor.store().clone();
    drop(executor);

    // Reopened: the marker is where execution stopped.
    let reopened = Executor::open(store.clone(), ExecutorConfig::default(), &genesis).unwrap();
    assert_eq!(reopened.marker(), &marker);
    drop(reopened);
    let other = GenesisState {
        digest: Digest::of_tagged("test-genesis", &1u8),
        ..genesis
    };
    let err = Executor::open(store, ExecutorConfig::default(), &other).unwrap_err();
    assert!(err.to_string().contains("genesis"), "{err}");
}

#[test]
fn fees_are_charged_kept_on_failure_and_an_unpayable_transaction_changes_nothing() {
    let (a, b, genesis) = two_accounts();
    let genesis = GenesisState {
        fees: FeeSchedule {
            per_op: 10,
            per_byte: 1,
        },
        ..genesis
    };
    let dir = tempfile::tempdir().unwrap();
    let mut executor = open(&dir, 2, &genesis);
    assert_eq!(executor.fees(), genesis.fees);
    let put = Transaction {
        chain_id: CHAIN,
        sender: b.public(),
        nonce: Nonce(0),
        expiry: TimestampMs(BLOCK_TIME.0),
        // 10 + 1 × (1 + 20) = 31, more than b's 25.
        ops: vec![Op::Put {
            key: b"k".to_vec(),
            value: vec![1; 20],
        }],
    }
    .sign(&b);
    let txs = vec![
        transfer(&a, 0, addr(&b), 20),
        transfer(&a, 1, addr(&b), 1_000),
        put,
    ];
    let outcome = execute(&mut executor, 1, &txs).unwrap();
    let fees: Vec<u64> = outcome.receipts.iter().map(|r| r.fee).collect();
    assert_eq!(fees, vec![10, 10, 0]);
    assert_eq!(outcome.receipts[0].status, ExecutionStatus::Success);
    assert!(matches!(
        outcome.receipts[1].status,
        ExecutionStatus::Failed(FailureReason::InsufficientBalance { .. })
    ));
    assert_eq!(
        outcome.receipts[2].status,
        ExecutionStatus::Discarded(DiscardReason::CannotPayFee {
            fee: 31,
            balance: 25
        })
    );
    let store = executor.store();
    // a paid 10 + 20, then 10 for the failed transfer; both nonces are used.
    let a_now = account(store, &addr(&a)).unwrap();
    assert_eq!((a_now.balance, a_now.nonce), (60, Nonce(2)));
    // b received 20 and paid nothing; its put left no object and no used nonce.
    let b_now = account(store, &addr(&b)).unwrap();
    assert_eq!((b_now.balance, b_now.nonce), (25, Nonce(0)));
    assert_eq!(object(store, &addr(&b), b"k").unwrap(), None);
}
