//! Storage benchmark (a bench binary, run with `cargo bench -p keel-storage --bench storage`).
//!
//! Prints:
//! - single-thread OCC commits/s for transactions of 2 reads + 2 writes;
//! - the same with `sync_commits` (fsync per commit), for comparison;
//! - snapshot reads/s on 2 threads over 1,000,000 keys;
//! - snapshot creation time with 1,000,000 keys present;
//! - state-root cost per changed key (lattice update), and a full root computation.
//!
//! `KEEL_BENCH_SECS` sets the duration of each timed phase (default 3).

use keel_storage::{LtHash, Store, StoreConfig};
use rand::{Rng, SeedableRng};
use std::{
    hint::black_box,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

const KEYS: u64 = 1_000_000;

fn key(i: u64) -> [u8; 12] {
    let mut k = *b"acct\0\0\0\0\0\0\0\0";
    k[4..].copy_from_slice(&i.to_be_bytes());
    k
}

fn populate(store: &Store, n: u64) {
    let value = [7u8; 64];
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut tx = store.begin();
        for i in chunk {
            tx.put(&key(*i), &value).unwrap();
        }
        tx.commit().unwrap();
    }
}

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("KEEL_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

/// Transactions that read two random keys and write both back; returns (commits/s, conflicts).
fn occ_commits(store: &Store, key_space: u64, duration: Duration) -> (f64, u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let start = Instant::now();
    let mut commits = 0u64;
    let mut conflicts = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            let a = key(rng.gen_range(0..key_space));
            let b = key(rng.gen_range(0..key_space));
            let mut tx = store.begin();
            let va = tx.get(&a).unwrap().unwrap_or_default();
            let vb = tx.get(&b).unwrap().unwrap_or_default();
            tx.put(&a, &vb).unwrap();
            tx.put(&b, &va).unwrap();
            match tx.commit() {
                Ok(_) => commits += 1,
                Err(_) => conflicts += 1,
            }
        }
    }
    (commits as f64 / start.elapsed().as_secs_f64(), conflicts)
}

fn snapshot_reads(store: &Arc<Store>, duration: Duration) -> Vec<f64> {
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + t);
                barrier.wait();
                let snapshot = store.snapshot();
                let start = Instant::now();
                let mut reads = 0u64;
                while start.elapsed() < duration {
                    for _ in 0..1024 {
                        let v = snapshot.get(&key(rng.gen_range(0..KEYS))).unwrap();
                        black_box(v);
                    }
                    reads += 1024;
                }
                reads as f64 / start.elapsed().as_secs_f64()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let duration = secs();
    println!(
        "keel-storage benchmark ({}s per phase)",
        duration.as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let t = Instant::now();
    populate(&store, KEYS);
    println!("populate: {KEYS} keys in {:.2}s", t.elapsed().as_secs_f64());

    // 1. OCC commits, single thread, 2 reads + 2 writes.
    let (rate, conflicts) = occ_commits(&store, KEYS, duration);
    println!(
        "occ commit (2 reads + 2 writes, 1 thread, 1M keys): {rate:.0} commits/s ({conflicts} conflicts)"
    );

    // 2. Snapshot reads on 2 threads: first with most keys still in the memtables (right after
    // loading), then after a flush (the steady state of a running node).
    let store = Arc::new(store);
    let in_memtable = snapshot_reads(&store, duration);
    println!(
        "snapshot reads (2 threads, 1M keys, mostly in memtables): {:.0} reads/s",
        in_memtable.iter().sum::<f64>()
    );
    store.flush().unwrap();
    let rates = snapshot_reads(&store, duration);
    println!(
        "snapshot reads (2 threads, 1M keys, flushed to SST files): {:.0} reads/s ({:.0} + {:.0})",
        rates.iter().sum::<f64>(),
        rates[0],
        rates[1]
    );

    // 3. Snapshot creation with 1M keys present.
    let n = 100_000u32;
    let start = Instant::now();
    for _ in 0..n {
        black_box(store.snapshot());
    }
    let per = start.elapsed() / n;
    println!(
        "snapshot creation (1M keys present): {:.0} ns",
        per.as_nanos()
    );
    let start = Instant::now();
    for _ in 0..n {
        black_box(store.begin());
    }
    println!(
        "transaction begin (snapshot + read options): {:.0} ns",
        (start.elapsed() / n).as_nanos()
    );

    // 4. State-root cost per changed key: remove the old element, add the new one.
    let mut lattice = LtHash::default();
    let n = 200_000u64;
    let start = Instant::now();
    for i in 0..n {
        let k = key(i);
        lattice.remove(&k, &[7u8; 64]);
        lattice.insert(&k, &i.to_le_bytes());
    }
    let per = start.elapsed() / n as u32;
    black_box(&lattice);
    println!(
        "state-root update per changed key (remove old + add new element): {:.2} us",
        per.as_secs_f64() * 1e6
    );
    let start = Instant::now();
    let root = store.state_root().unwrap();
    println!(
        "full state root from the 256 bucket lattices: {:.0} us ({})",
        start.elapsed().as_secs_f64() * 1e6,
        root.short()
    );
    let start = Instant::now();
    let recomputed = store.recompute_state_hash().unwrap();
    assert_eq!(recomputed.root(), root);
    println!(
        "state root recomputed from a full scan of 1M keys: {:.2}s",
        start.elapsed().as_secs_f64()
    );
    drop(recomputed);

    // 5. Commits with fsync, for comparison (on a fresh store).
    let dir = tempfile::tempdir().unwrap();
    let synced = Store::open(
        dir.path(),
        &StoreConfig {
            sync_commits: true,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    populate(&synced, 10_000);
    let (rate, _) = occ_commits(&synced, 10_000, duration.min(Duration::from_secs(2)));
    println!("occ commit with fsync per commit: {rate:.0} commits/s");
}
