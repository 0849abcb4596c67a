//! Range deletes, batched point reads and manual compaction of the caller-visible columns:
//! what a pruner needs to drop old data cheaply and get its disk space back.
//!
//! A range delete writes one tombstone for a whole key range (cheap to write however many keys
//! it covers); point deletes in the same write batch cover keys that are not contiguous. Both
//! only hide data: the bytes leave the disk when compaction rewrites the files holding them,
//! which [`Store::compact_range`] forces for a range. The write-ahead log still holding the
//! deleted values is dropped only once every column with data in it is flushed: a caller that
//! wants the space back calls [`Store::flush`] before compacting.

use crate::{
    db::{Store, WriteOp},
    error::{Error, Result},
    layout::Column,
};
use rocksdb::{WriteBatch, WriteOptions};

/// A key range of one caller-visible column: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The column.
    pub column: Column,
    /// First key in the range.
    pub start: Vec<u8>,
    /// First key after the range.
    pub end: Vec<u8>,
}

impl Store {
    /// Deletes every key in `ranges` and applies `ops`, in one write batch: after a crash
    /// either all of it happened or none. With `sync`, fsyncs before returning.
    pub fn delete_ranges_with(
        &self,
        ranges: &[KeyRange],
        ops: Vec<WriteOp>,
        sync: bool,
    ) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut batch = WriteBatch::default();
        for r in ranges {
            if r.start < r.end {
                batch.delete_range_cf(self.cf(r.column), &r.start, &r.end);
            }
        }
        self.add_ops(&mut batch, ops);
        self.db
            .write_opt(batch, &opts)
            .map_err(Error::rocks("range delete"))
    }

    /// Reads several keys of one column at once (faster than one `get` each); one answer per
    /// key, in order.
    pub fn multi_get(&self, column: Column, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .batched_multi_get_cf(self.cf(column), keys, false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|v| v.to_vec()))
                    .map_err(Error::rocks("multi get"))
            })
            .collect()
    }

    /// Compacts `range` of its column (`None`: the whole column), so that deleted data in it
    /// leaves the disk (the column's memtable is flushed first if it overlaps the range).
    /// Blocks until done; RocksDB reports no error from a manual compaction (a failed one
    /// leaves the data to automatic compaction).
    pub fn compact_range(&self, column: Column, range: Option<(&[u8], &[u8])>) {
        let cf = self.cf(column);
        match range {
            Some((start, end)) => self.db.compact_range_cf(cf, Some(start), Some(end)),
            None => self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>),
        }
    }
}
