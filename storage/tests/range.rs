//! Range deletes with point deletes in the same write batch, batched reads, and compaction
//! returning the deleted data's disk space; all of it survives a reopen.

use keel_storage::{Column, KeyRange, Store, StoreConfig, WriteOp};

fn height_key(h: u64) -> Vec<u8> {
    [&b"h/"[..], &h.to_be_bytes()].concat()
}

fn column_bytes(store: &Store, column: Column) -> u64 {
    store
        .disk_usage()
        .unwrap()
        .into_iter()
        .find(|(name, _)| *name == column.name())
        .unwrap()
        .1
}

/// Incompressible filler, so sizes on disk follow what was written.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn a_range_delete_and_compaction_drop_the_range_and_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    for h in 0..2_000u64 {
        store
            .put(Column::Blocks, &height_key(h), &filler(h, 2_000))
            .unwrap();
        store
            .put(Column::Receipts, &h.to_le_bytes(), &filler(h + 7, 500))
            .unwrap();
    }
    store.flush().unwrap();
    let blocks_before = column_bytes(&store, Column::Blocks);
    let receipts_before = column_bytes(&store, Column::Receipts);
    assert!(blocks_before > 2_000 * 1_500, "{blocks_before}");

    // Heights 0..1,800 go with one range tombstone; their receipts (keys not contiguous) by
    // point deletes; a meta value records it, all in one batch.
    let ops = (0..1_800u64)
        .map(|h| WriteOp {
            column: Column::Receipts,
            key: h.to_le_bytes().to_vec(),
            value: None,
        })
        .chain([WriteOp {
            column: Column::Meta,
            key: b"retained_from".to_vec(),
            value: Some(1_800u64.to_be_bytes().to_vec()),
        }])
        .collect();
    let range = KeyRange {
        column: Column::Blocks,
        start: height_key(0),
        end: height_key(1_800),
    };
    store.delete_ranges_with(&[range], ops, false).unwrap();
    assert_eq!(store.get(Column::Blocks, &height_key(0)).unwrap(), None);
    assert_eq!(store.get(Column::Blocks, &height_key(1_799)).unwrap(), None);
    assert!(
        store
            .get(Column::Blocks, &height_key(1_800))
            .unwrap()
            .is_some()
    );
    let keys: Vec<Vec<u8>> = [5u64, 1_799, 1_800, 1_999, 5_000]
        .iter()
        .map(|h| h.to_le_bytes().to_vec())
        .collect();
    let found = store.multi_get(Column::Receipts, &keys).unwrap();
    assert_eq!(
        found.iter().map(Option::is_some).collect::<Vec<_>>(),
        [false, false, true, true, false]
    );
    assert_eq!(found[2].as_deref(), Some(&filler(1_807, 500)[..]));

    store.flush().unwrap();
    store.compact_range(
        Column::Blocks,
        Some((&height_key(0)[..], &height_key(1_800)[..])),
    );
    store.compact_range(Column::Receipts, None);
    let blocks_after = column_bytes(&store, Column::Blocks);
    let receipts_after = column_bytes(&store, Column::Receipts);
    assert!(
        blocks_after * 5 < blocks_before,
        "blocks column {blocks_before} -> {blocks_after} bytes"
    );
    assert!(
        receipts_after * 5 < receipts_before,
        "receipts column {receipts_before} -> {receipts_after} bytes"
    );

    // Durable: a reopened store sees the same.
    drop(store);
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    assert_eq!(store.get(Column::Blocks, &height_key(10)).unwrap(), None);
    assert!(
        store
            .get(Column::Blocks, &height_key(1_999))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.get(Column::Meta, b"retained_from").unwrap(),
        Some(1_800u64.to_be_bytes().to_vec())
    );
}

#[test]
fn an_empty_or_reversed_range_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    store.put(Column::Blocks, &height_key(3), b"x").unwrap();
    let reversed = KeyRange {
        column: Column::Blocks,
        start: height_key(9),
        end: height_key(1),
    };
    store
        .delete_ranges_with(&[reversed], Vec::new(), true)
        .unwrap();
    assert!(store.get(Column::Blocks, &height_key(3)).unwrap().is_some());
    assert_eq!(
        store.multi_get(Column::Blocks, &[]).unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
}
