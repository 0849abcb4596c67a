//! Behaviour of optimistic transactions, the state hash and plain column access.

use keel_storage::{
    Column, Error, LATTICE_FLUSH_INTERVAL, MAX_STATE_KEY, MAX_STATE_VALUE, Store, StoreConfig,
    WriteOp,
};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), &StoreConfig::default()).unwrap()
}

fn put_all(store: &Store, pairs: &[(&[u8], &[u8])]) -> u64 {
    let mut tx = store.begin();
    for (k, v) in pairs {
        tx.put(k, v).unwrap();
    }
    tx.commit().unwrap().seq
}

fn assert_root_matches_scan(store: &Store) {
    assert_eq!(
        store.state_hash().unwrap(),
        store.recompute_state_hash().unwrap()
    );
    assert_eq!(
        store.state_root().unwrap(),
        store.recompute_state_hash().unwrap().root()
    );
}

#[test]
fn reads_see_the_snapshot_and_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let s1 = put_all(&store, &[(b"a", b"1")]);
    assert_eq!(s1, 1);

    let mut tx = store.begin();
    // Committed after tx's snapshot: invisible to tx.
    put_all(&store, &[(b"a", b"2"), (b"b", b"x")]);
    assert_eq!(tx.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(tx.get(b"b").unwrap(), None);
    tx.put(b"c", b"mine").unwrap();
    assert_eq!(tx.get(b"c").unwrap(), Some(b"mine".to_vec()));
    tx.delete(b"c").unwrap();
    assert_eq!(tx.get(b"c").unwrap(), None);
    // Another transaction never sees tx's uncommitted writes.
    assert_eq!(store.begin().get(b"c").unwrap(), None);
    assert_eq!(store.get_state(b"a").unwrap().unwrap().value, b"2");
    assert_eq!(store.get_state(b"a").unwrap().unwrap().version, 2);
}

#[test]
fn stale_read_conflicts_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put_all(&store, &[(b"k", b"0")]);
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    assert_eq!(t1.get(b"k").unwrap(), Some(b"0".to_vec()));
    assert_eq!(t2.get(b"k").unwrap(), Some(b"0".to_vec()));
    t1.put(b"k", b"1").unwrap();
    t2.put(b"other", b"2").unwrap();
    t1.commit().unwrap();
    match t2.commit() {
        Err(Error::Conflict {
            key,
            expected,
            found,
        }) => {
            assert_eq!(key, b"k");
            assert_eq!(expected, Some(1));
            assert_eq!(found, Some(2));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The failed commit wrote nothing.
    assert_eq!(store.get_state(b"other").unwrap(), None);
    assert_root_matches_scan(&store);
}

#[test]
fn blind_writes_conflict_first_committer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put_all(&store, &[(b"gone", b"x")]);
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    let mut t3 = store.begin();
    t1.put(b"w", b"1").unwrap();
    t2.put(b"w", b"2").unwrap();
    t1.commit().unwrap();
    assert!(
        matches!(t2.commit(), Err(Error::Conflict { key, expected: None, found: Some(2) }) if key == b"w")
    );

    // A key deleted after the snapshot is a conflict for a blind write too.
    let mut del = store.begin();
    del.delete(b"gone").unwrap();
    del.commit().unwrap();
    t3.put(b"gone", b"y").unwrap();
    assert!(
        matches!(t3.commit(), Err(Error::Conflict { key, expected: Some(1), found: None }) if key == b"gone")
    );
    assert_eq!(store.get_state(b"w").unwrap().unwrap().value, b"1");
}

#[test]
fn reading_an_absent_key_that_appears_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut t = store.begin();
    assert_eq!(t.get(b"new").unwrap(), None);
    t.put(b"elsewhere", b"1").unwrap();
    put_all(&store, &[(b"new", b"!")]);
    assert!(
        matches!(t.commit(), Err(Error::Conflict { key, expected: None, found: Some(1) }) if key == b"new")
    );
}

#[test]
fn disjoint_transactions_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut t1 = store.begin();
    let mut t2 = store.begin();
    t1.get(b"a").unwrap();
    t1.put(b"a", b"1").unwrap();
    t2.get(b"b").unwrap();
    t2.put(b"b", b"2").unwrap();
    assert_eq!(t1.commit().unwrap().seq, 1);
    assert_eq!(t2.commit().unwrap().seq, 2);
}

#[test]
fn size_limits_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut t = store.begin();
    assert!(matches!(
        t.put(b"", b"v"),
        Err(Error::KeySize { size: 0, .. })
    ));
    let long = vec![1u8; MAX_STATE_KEY + 1];
    assert!(matches!(t.get(&long), Err(Error::KeySize { .. })));
    let big = vec![0u8; MAX_STATE_VALUE + 1];
    let err = t.put(b"k", &big).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }));
    assert!(err.to_string().contains(&MAX_STATE_VALUE.to_string()));
}

#[test]
fn extra_writes_commit_atomically_with_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put_all(&store, &[(b"k", b"0")]);
    let mut t1 = store.begin();
    t1.get(b"k").unwrap();
    t1.put(b"k", b"1").unwrap();
    let mut t2 = store.begin();
    t2.get(b"k").unwrap();
    t2.put(b"k", b"2").unwrap();
    let receipt = |v: &[u8]| {
        vec![WriteOp {
            column: Column::Receipts,
            key: b"r".to_vec(),
            value: Some(v.to_vec()),
        }]
    };
    t1.commit_with(receipt(b"one")).unwrap();
    assert!(t2.commit_with(receipt(b"two")).is_err());
    assert_eq!(
        store.get(Column::Receipts, b"r").unwrap(),
        Some(b"one".to_vec())
    );
}

#[test]
fn state_hash_survives_reopen_across_lattice_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let commits = LATTICE_FLUSH_INTERVAL * 2 + 37;
    let root = {
        let store = open(&dir);
        for i in 0..commits {
            let mut tx = store.begin();
            let k = format!("key{}", i % 300);
            tx.get(k.as_bytes()).unwrap();
            if i % 7 == 0 {
                tx.delete(k.as_bytes()).unwrap();
            } else {
                tx.put(k.as_bytes(), &i.to_le_bytes()).unwrap();
            }
            tx.commit().unwrap();
        }
        assert_root_matches_scan(&store);
        store.state_root().unwrap()
    };
    let store = open(&dir);
    assert_eq!(store.last_commit_seq(), commits);
    assert_eq!(store.state_root().unwrap(), root);
    assert_root_matches_scan(&store);
}

#[test]
fn the_root_asked_after_every_commit_follows_each_changed_bucket() {
    // The state-root thread recomputes only the checksums of buckets changed since the last
    // root query; asking after every commit exercises that bookkeeping bucket by bucket.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0u32..60 {
        let mut tx = store.begin();
        for j in 0..=(i % 3) {
            let k = format!("acct{}", (i * 7 + j) % 40);
            if i % 11 == 10 {
                tx.delete(k.as_bytes()).unwrap();
            } else {
                tx.put(k.as_bytes(), &i.to_le_bytes()).unwrap();
            }
        }
        tx.commit().unwrap();
        let root = store.state_root().unwrap();
        assert_eq!(
            root,
            store.recompute_state_hash().unwrap().root(),
            "commit {i}"
        );
    }
}

#[test]
fn equal_states_have_equal_roots_whatever_the_history() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let sa = open(&a);
    let sb = open(&b);
    put_all(&sa, &[(b"x", b"1"), (b"y", b"2")]);
    put_all(&sb, &[(b"y", b"9"), (b"z", b"3")]);
    put_all(&sb, &[(b"x", b"1"), (b"y", b"2")]);
    let mut d = sb.begin();
    d.delete(b"z").unwrap();
    d.commit().unwrap();
    assert_eq!(sa.state_root().unwrap(), sb.state_root().unwrap());
    put_all(&sb, &[(b"x", b"changed")]);
    assert_ne!(sa.state_root().unwrap(), sb.state_root().unwrap());
}

#[test]
fn synced_and_plain_column_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store
            .put_synced(Column::Consensus, b"safety", b"round 7")
            .unwrap();
        store.put(Column::Blocks, b"b1", b"block").unwrap();
        store.delete(Column::Blocks, b"b1").unwrap();
    }
    let store = open(&dir);
    assert_eq!(
        store.get(Column::Consensus, b"safety").unwrap(),
        Some(b"round 7".to_vec())
    );
    assert_eq!(store.get(Column::Blocks, b"b1").unwrap(), None);
}

#[test]
fn a_second_handle_in_the_same_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir);
    let err = Store::open(dir.path(), &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn disk_usage_reports_every_column_family_and_grows_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let before: std::collections::HashMap<_, _> = store.disk_usage().unwrap().into_iter().collect();
    for name in [
        "state",
        "internal",
        "receipts",
        "blocks",
        "batches",
        "consensus",
        "meta",
    ] {
        assert!(before.contains_key(name), "{name} missing from {before:?}");
    }
    let value = vec![7u8; 4096];
    for i in 0..256u32 {
        store
            .put(keel_storage::Column::Batches, &i.to_be_bytes(), &value)
            .unwrap();
    }
    store.flush().unwrap();
    let after: std::collections::HashMap<_, _> = store.disk_usage().unwrap().into_iter().collect();
    assert!(
        after["batches"] > before["batches"],
        "batches did not grow: {before:?} -> {after:?}"
    );
    assert_eq!(
        after["receipts"], before["receipts"],
        "{before:?} -> {after:?}"
    );
}
