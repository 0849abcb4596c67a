//! Property test: concurrent optimistic transactions on threads over a small key space are
//! serialisable in commit order, and every abort names a key that a later commit changed.

use keel_storage::{Error, Store, StoreConfig};
use proptest::{prelude::*, test_runner::TestRunner};
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Barrier,
        atomic::{AtomicUsize, Ordering},
    },
};

const KEYS: u8 = 5;

fn key(i: u8) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// A transaction: read two keys, then write two keys with values derived from what was read.
#[derive(Debug, Clone)]
struct Spec {
    reads: [u8; 2],
    writes: [u8; 2],
    delete_second: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0..KEYS, 0..KEYS, 0..KEYS, 0..KEYS, any::<bool>()).prop_map(|(r1, r2, w1, w2, d)| Spec {
        reads: [r1, r2],
        writes: [w1, w2],
        delete_second: d && w1 != w2,
    })
}

#[derive(Debug)]
enum Outcome {
    Committed {
        seq: u64,
        observed: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        written: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    Aborted {
        snapshot_seq: u64,
        key: Vec<u8>,
        touched: Vec<Vec<u8>>,
    },
}

fn run(store: &Store, id: usize, spec: &Spec) -> Outcome {
    let mut tx = store.begin();
    let snapshot_seq = tx.snapshot_seq();
    let mut observed = Vec::new();
    for r in spec.reads {
        let v = tx.get(&key(r)).unwrap();
        observed.push((key(r), v));
        std::thread::yield_now();
    }
    let digest = blake3::hash(format!("{id}{observed:?}").as_bytes());
    let mut written = Vec::new();
    for (n, w) in spec.writes.iter().enumerate() {
        if n == 1 && spec.delete_second {
            tx.delete(&key(*w)).unwrap();
            written.push((key(*w), None));
        } else {
            let value = format!("{id}:{}", &digest.to_hex()[..8]).into_bytes();
            tx.put(&key(*w), &value).unwrap();
            written.push((key(*w), Some(value)));
        }
    }
    // A key written twice keeps its last value.
    let touched: Vec<Vec<u8>> = tx
        .read_set()
        .map(|(k, _)| k.to_vec())
        .chain(tx.write_set().map(<[u8]>::to_vec))
        .collect();
    match tx.commit() {
        Ok(info) => Outcome::Committed {
            seq: info.seq,
            observed,
            written,
        },
        Err(Error::Conflict { key, .. }) => Outcome::Aborted {
            snapshot_seq,
            key,
            touched,
        },
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Runs one workload and checks it; returns (commits, aborts).
fn check_workload(threads: Vec<Vec<Spec>>) -> Result<(usize, usize), TestCaseError> {
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), &StoreConfig::default()).unwrap());
        // Start from a known state.
        let mut init = store.begin();
        for i in 0..KEYS {
            init.put(&key(i), b"init").unwrap();
        }
        init.commit().unwrap();

        let barrier = Arc::new(Barrier::new(threads.len()));
        let handles: Vec<_> = threads
            .iter()
            .enumerate()
            .map(|(t, specs)| {
                let store = store.clone();
                let barrier = barrier.clone();
                let specs = specs.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    specs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| run(&store, t * 1000 + i, s))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let outcomes: Vec<Outcome> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();

        let mut committed: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Committed {
                    seq,
                    observed,
                    written,
                } => Some((*seq, observed, written)),
                Outcome::Aborted { .. } => None,
            })
            .collect();
        committed.sort_by_key(|(seq, _, _)| *seq);
        // Sequences are consecutive after the initial commit.
        for (n, (seq, _, _)) in committed.iter().enumerate() {
            prop_assert_eq!(*seq, n as u64 + 2);
        }

        // Replaying the committed transactions serially in commit order gives every one the
        // values it observed, and ends in the store's final state.
        let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (0..KEYS)
            .map(|i| (key(i), Some(b"init".to_vec())))
            .collect();
        let mut writers: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        for (seq, observed, written) in &committed {
            for (k, v) in observed.iter() {
                prop_assert_eq!(
                    model.get(k).cloned().flatten(),
                    v.clone(),
                    "tx {} read {:?}",
                    seq,
                    k
                );
            }
            for (k, v) in written.iter() {
                model.insert(k.clone(), v.clone());
                writers.entry(k.clone()).or_default().push(*seq);
            }
        }
        for (k, v) in &model {
            prop_assert_eq!(store.get_state(k).unwrap().map(|x| x.value), v.clone());
        }

        // Every abort names a key it touched that a commit after its snapshot wrote.
        for o in &outcomes {
            if let Outcome::Aborted {
                snapshot_seq,
                key,
                touched,
            } = o
            {
                prop_assert!(
                    touched.contains(key),
                    "conflict key {:?} not in its read/write set",
                    key
                );
                let later = writers
                    .get(key)
                    .is_some_and(|s| s.iter().any(|seq| seq > snapshot_seq));
                prop_assert!(
                    later,
                    "conflict on {:?} but no commit after snapshot {} wrote it",
                    key,
                    snapshot_seq
                );
            }
        }
        prop_assert_eq!(
            store.state_hash().unwrap(),
            store.recompute_state_hash().unwrap()
        );
        let aborts = outcomes.len() - committed.len();
        Ok((committed.len(), aborts))
    }
}

#[test]
fn concurrent_transactions_are_serialisable() {
    let commits = AtomicUsize::new(0);
    let aborts = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let workload = prop::collection::vec(prop::collection::vec(spec(), 1..40), 2..5);
    runner
        .run(&workload, |threads| {
            let (c, a) = check_workload(threads)?;
            commits.fetch_add(c, Ordering::Relaxed);
            aborts.fetch_add(a, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let (c, a) = (commits.into_inner(), aborts.into_inner());
    println!("{c} commits, {a} aborts over 48 workloads");
    // The workloads really interleave: some transactions conflicted.
    assert!(
        a > 0,
        "no transaction ever conflicted; the test exercises nothing concurrent"
    );
    assert!(c > 0);
}
