//! State transfer between two stores: chunks served from a snapshot are exactly the state at
//! the snapshot, received chunks are checked, the staged buckets hash to the source's, and the
//! install makes the target's state (and root) equal the source's, atomically even when the
//! process is SIGKILLed in the middle of the install.

use keel_storage::{
    BucketChunk, Column, Store, StoreConfig, WriteOp, check_chunk, lthash::bucket_of,
};
use keel_types::test_utils::{TestChild, env_knob};
use std::time::Duration;

fn key(i: u32) -> Vec<u8> {
    format!("key/{i}").into_bytes()
}

fn fill(store: &Store, range: std::ops::Range<u32>, tag: &str) {
    for chunk in range.collect::<Vec<_>>().chunks(500) {
        let mut tx = store.begin();
        for i in chunk {
            tx.put(&key(*i), format!("{tag}{i}").as_bytes()).unwrap();
        }
        tx.commit().unwrap();
    }
}

/// Copies every bucket of `source`'s snapshot into `target`'s staging in chunks of about
/// `max_bytes`, checking each chunk as a client does.
fn transfer(snapshot: &keel_storage::StateSnapshot<'_>, target: &Store, max_bytes: usize) -> usize {
    let mut chunks = 0;
    for bucket in 0..=255u8 {
        let mut after: Option<Vec<u8>> = target.staged_resume_key(bucket).unwrap();
        loop {
            let BucketChunk { entries, complete } = snapshot
                .bucket_chunk(bucket, after.as_deref(), max_bytes)
                .unwrap();
            check_chunk(bucket, after.as_deref(), &entries).unwrap();
            target.stage(bucket, &entries).unwrap();
            chunks += 1;
            if let Some((k, _)) = entries.last() {
                after = Some(k.clone());
            }
            if complete {
                break;
            }
        }
    }
    chunks
}

#[test]
fn a_snapshot_serves_the_state_as_of_it_and_an_install_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source"), &StoreConfig::default()).unwrap();
    fill(&source, 0..3_000, "v");
    let root = source.state_root().unwrap();
    let hash = source.state_hash().unwrap();
    let snapshot = source.snapshot();
    // Later writes are invisible to the snapshot.
    fill(&source, 0..100, "changed");
    fill(&source, 3_000..3_100, "new");

    let target = Store::open(dir.path().join("target"), &StoreConfig::default()).unwrap();
    fill(&target, 10_000..10_050, "old"); // a state to be replaced
    // Its root asked before the install: the root after must not reuse these checksums.
    let replaced = target.state_root().unwrap();
    assert_ne!(replaced, root);
    let chunks = transfer(&snapshot, &target, 100);
    assert!(chunks > 256, "small budgets split buckets: {chunks} chunks");
    for bucket in 0..=255u8 {
        assert_eq!(
            target.staged_bucket_hash(bucket).unwrap().checksum(),
            hash.bucket(bucket).checksum(),
            "bucket {bucket}"
        );
    }
    let marker = WriteOp {
        column: Column::Meta,
        key: b"executed".to_vec(),
        value: Some(b"height 42".to_vec()),
    };
    target.install_staged(vec![marker]).unwrap();
    assert_eq!(target.state_root().unwrap(), root);
    assert_eq!(target.recompute_state_hash().unwrap().root(), root);
    assert_eq!(target.get_state(&key(5)).unwrap().unwrap().value, b"v5");
    assert!(target.get_state(&key(10_000)).unwrap().is_none());
    assert!(target.get_state(&key(3_000)).unwrap().is_none());
    assert_eq!(
        target.get(Column::Meta, b"executed").unwrap().unwrap(),
        b"height 42"
    );
    for bucket in 0..=255u8 {
        assert_eq!(
            target.staged_resume_key(bucket).unwrap(),
            None,
            "staging is emptied"
        );
    }
    // Commits after the install work, and the hash survives a reopen.
    fill(&target, 0..10, "after");
    let after = target.state_root().unwrap();
    drop(target);
    let target = Store::open(dir.path().join("target"), &StoreConfig::default()).unwrap();
    assert_eq!(target.state_root().unwrap(), after);
    assert_eq!(target.recompute_state_hash().unwrap().root(), after);
}

#[test]
fn bad_chunks_are_refused_and_a_bucket_can_be_staged_again() {
    let b = bucket_of(b"a");
    let other = (0..u32::MAX).map(key).find(|k| bucket_of(k) != b).unwrap();
    let mut same = (0..u32::MAX).map(key).filter(|k| bucket_of(k) == b);
    let (k1, k2) = (same.next().unwrap(), same.next().unwrap());
    let (lo, hi) = if k1 < k2 { (k1, k2) } else { (k2, k1) };
    let e = |k: &[u8]| (k.to_vec(), b"v".to_vec());
    assert!(check_chunk(b, None, &[e(&lo), e(&hi)]).is_ok());
    assert!(
        check_chunk(b, None, &[e(&hi), e(&lo)])
            .unwrap_err()
            .contains("increasing")
    );
    assert!(
        check_chunk(b, Some(&hi), &[e(&lo)])
            .unwrap_err()
            .contains("increasing")
    );
    assert!(
        check_chunk(b, None, &[e(&other)])
            .unwrap_err()
            .contains("bucket")
    );
    assert!(check_chunk(b, None, &[e(b"")]).is_err());

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    store.stage(b, &[e(&lo), e(&hi)]).unwrap();
    assert_eq!(store.staged_resume_key(b).unwrap(), Some(hi.clone()));
    assert!(store.stage(b, &[e(&other)]).is_err());
    store.clear_staged_bucket(b).unwrap();
    assert_eq!(store.staged_resume_key(b).unwrap(), None);
}

const CHILD_ENV: &str = "KEEL_INSTALL_CHILD_DIR";
type Entry = (Vec<u8>, Vec<u8>);
const KEYS: u32 = 60_000;

/// The child: stages a state of `KEYS` keys (once), then installs it with a marker write,
/// printing `installing` first.
#[test]
#[ignore = "helper process for a_killed_install_is_finished_at_open"]
fn install_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&dir, &StoreConfig::default()).unwrap();
    println!("ready");
    let mut by_bucket: std::collections::BTreeMap<u8, Vec<Entry>> = Default::default();
    for i in 0..KEYS {
        let k = key(i);
        by_bucket
            .entry(bucket_of(&k))
            .or_default()
            .push((k, format!("new{i}").into_bytes()));
    }
    for (bucket, mut entries) in by_bucket {
        entries.sort();
        store.stage(bucket, &entries).unwrap();
    }
    println!("installing");
    store
        .install_staged(vec![WriteOp {
            column: Column::Meta,
            key: b"installed".to_vec(),
            value: Some(b"yes".to_vec()),
        }])
        .unwrap();
    println!("installed");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_install_is_finished_at_open() {
    let rounds: usize = env_knob("KEEL_INSTALL_ROUNDS").unwrap_or(6);
    let mut outcomes = (0, 0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
            fill(&store, 0..2_000, "old");
        }
        let child = TestChild::spawn("install_child", &[(CHILD_ENV, dir.path())]);
        child.wait_for_line("installing", Duration::from_secs(120));
        // Kill at once, or a little later: in the middle of rewriting the buckets.
        std::thread::sleep(Duration::from_millis(round as u64 * 15));
        let lines = child.kill();
        let finished = lines.iter().any(|l| l == "installed");
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let root = store.state_root().unwrap();
        assert_eq!(store.recompute_state_hash().unwrap().root(), root);
        if store.get(Column::Meta, b"installed").unwrap().is_none() {
            // Killed before the install began: the old state, whole, staging kept.
            assert_eq!(store.get_state(&key(1)).unwrap().unwrap().value, b"old1");
            assert!(store.get_state(&key(KEYS - 1)).unwrap().is_none());
            let staged = (0..=255u8).filter(|b| store.staged_resume_key(*b).unwrap().is_some());
            assert_eq!(staged.count(), 256, "round {round}: staging was lost");
            outcomes.2 += 1;
            continue;
        }
        // Otherwise, after open the install is complete: the new state, the install's write.
        assert_eq!(store.get_state(&key(1)).unwrap().unwrap().value, b"new1");
        assert_eq!(
            store.get_state(&key(KEYS - 1)).unwrap().unwrap().value,
            format!("new{}", KEYS - 1).into_bytes()
        );
        assert!(store.get_state(&key(KEYS + 1)).unwrap().is_none());
        if finished {
            outcomes.1 += 1;
        } else {
            outcomes.0 += 1;
        }
    }
    println!(
        "killed during the install {} times, after it {} times, before it {} times",
        outcomes.0, outcomes.1, outcomes.2
    );
}

#[test]
fn a_bucket_staged_from_the_current_state_installs_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path().join("source"), &StoreConfig::default()).unwrap();
    fill(&source, 0..2_000, "v");
    let target = Store::open(dir.path().join("target"), &StoreConfig::default()).unwrap();
    fill(&target, 0..2_000, "v");
    // The target differs from the source in the buckets of keys 0..20 only.
    fill(&target, 0..20, "stale");
    fill(&target, 5_000..5_001, "extra");
    let want = source.state_hash().unwrap();
    let have = target.state_hash().unwrap();
    let snapshot = source.snapshot();
    let (mut copied, mut downloaded) = (0, 0);
    for bucket in 0..=255u8 {
        if have.bucket(bucket).checksum() == want.bucket(bucket).checksum() {
            // Something staged before is replaced; a tiny batch budget writes many batches.
            let junk = (0..)
                .map(|n| format!("junk/{n}").into_bytes())
                .find(|k| bucket_of(k) == bucket)
                .unwrap();
            target.stage(bucket, &[(junk, b"x".to_vec())]).unwrap();
            target.stage_current_bucket(bucket, 64).unwrap();
            copied += 1;
        } else {
            let chunk = snapshot.bucket_chunk(bucket, None, usize::MAX).unwrap();
            target.stage(bucket, &chunk.entries).unwrap();
            downloaded += 1;
        }
        assert_eq!(
            target.staged_bucket_hash(bucket).unwrap().checksum(),
            want.bucket(bucket).checksum(),
            "bucket {bucket}"
        );
    }
    assert!(
        copied > 200 && downloaded > 0,
        "{copied} copied, {downloaded} downloaded"
    );
    target.install_staged(Vec::new()).unwrap();
    assert_eq!(target.state_root().unwrap(), source.state_root().unwrap());
    assert_eq!(target.get_state(&key(3)).unwrap().unwrap().value, b"v3");
    assert!(target.get_state(&key(5_000)).unwrap().is_none());
}
