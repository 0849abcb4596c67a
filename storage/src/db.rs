//! The RocksDB handle: opening a data directory (lock, column families, tuning), plain reads
//! and writes of the caller-visible columns, and the recovery of the state hash at open.
//!
//! The on-disk format is [`crate::layout`]'s. At open the bucket lattices are loaded and the
//! journal written after them replayed (see [`crate::root_keeper`]), so the state hash always
//! equals the hash of the committed state, whatever moment a crash happened at.

use crate::{
    config::StoreConfig,
    error::{Error, Result},
    layout::{
        Column, DB_DIR, INTERNAL_CF, KEY_LATTICE_SEQ, KEY_SEQ, LOCK_FILE, PREFIX_JOURNAL,
        STAGING_CF, STATE_CF, journal_key, lattice_key, split_value,
    },
    lthash::{BUCKETS, LtHash, StateHash, bucket_of},
    recent::RecentWrites,
    root_keeper::{JournalEntry, Recovered, RootKeeper},
};
use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    DataBlockIndexType, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions,
};
use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicU64},
};

/// Keys the recent-writes index holds (about 64 bytes of overhead each, plus the key).
const RECENT_WRITES_CAPACITY: usize = 1 << 16;

/// A write to a caller-visible column, committed atomically with a transaction's state writes
/// ([`crate::OccTransaction::commit_with`]) or with other such writes ([`Store::write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// The column.
    pub column: Column,
    /// The key.
    pub key: Vec<u8>,
    /// The value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// What commits serialise on: the sequence counter and the options of the commit path.
pub(crate) struct CommitState {
    pub(crate) last_seq: u64,
    pub(crate) recent: RecentWrites,
    /// Journal entries of commits not yet handed to the state-root thread (handed over in
    /// batches, so the thread is woken once per batch rather than once per commit).
    pub(crate) root_pending: Vec<JournalEntry>,
    pub(crate) write_opts: WriteOptions,
    pub(crate) latest_opts: ReadOptions,
}

/// A Keel data directory: RocksDB with Keel's column families, held exclusively.
pub struct Store {
    pub(crate) db: Arc<DB>,
    path: PathBuf,
    pub(crate) commit: Mutex<CommitState>,
    /// The highest sequence whose writes are visible to new snapshots. Read *before* taking a
    /// snapshot, it is a lower bound of what the snapshot contains.
    pub(crate) visible_seq: AtomicU64,
    // Declared after `db`: dropping it joins the thread holding the other database handle.
    pub(crate) root: RootKeeper,
    // Held for the lifetime of the store; dropped last, releasing the directory.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn open_error(path: &Path, reason: impl ToString) -> Error {
    Error::Open {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Takes the directory's lock file, or reports who holds it.
fn lock_directory(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| open_error(&lock_path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                path: path.to_path_buf(),
                holder: if holder.is_empty() {
                    "holder unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(open_error(&lock_path, e)),
    }
    let pid = format!("pid {}", std::process::id());
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(pid.as_bytes()))
        .map_err(|e| open_error(&lock_path, e))?;
    Ok(file)
}

/// Column family options tuned for point lookups: bloom filters on SST files and on the
/// memtable, a hash index inside data blocks, and index/filter blocks held by the table readers
/// (not the LRU cache, whose shard locks two reader threads would otherwise fight over).
fn cf_options(cache: &Cache, compress: bool) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
    table.set_data_block_hash_ratio(0.75);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.1);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts.set_compression_type(if compress {
        DBCompressionType::Lz4
    } else {
        DBCompressionType::None
    });
    opts
}

fn internal_cf(db: &DB) -> &ColumnFamily {
    // INVARIANT: `open` creates every column family.
    db.cf_handle(INTERNAL_CF)
        .expect("INVARIANT: internal column family exists")
}

fn read_u64(db: &DB, key: &[u8]) -> Result<Option<u64>> {
    let raw = db
        .get_pinned_cf(internal_cf(db), key)
        .map_err(Error::rocks("get"))?;
    raw.map(|v| {
        <[u8; 8]>::try_from(&v[..])
            .map(u64::from_le_bytes)
            .map_err(|_| Error::Corrupt {
                what: "internal counter",
                reason: format!(
                    "{} is {} bytes, expected 8",
                    String::from_utf8_lossy(key),
                    v.len()
                ),
            })
    })
    .transpose()
}

/// Loads the lattices and replays the journal written after them.
fn recover_state_hash(db: &DB) -> Result<Recovered> {
    let last_seq = read_u64(db, KEY_SEQ)?.unwrap_or(0);
    let lattice_seq = read_u64(db, KEY_LATTICE_SEQ)?.unwrap_or(0);
    let mut hash = StateHash::default();
    for b in 0..BUCKETS {
        let bucket = b as u8;
        let key = lattice_key(bucket);
        if let Some(raw) = db
            .get_pinned_cf(internal_cf(db), &key)
            .map_err(Error::rocks("get"))?
        {
            let lattice = LtHash::from_bytes(&raw).ok_or_else(|| Error::Corrupt {
                what: "state lattice",
                reason: format!("bucket {bucket} is {} bytes", raw.len()),
            })?;
            hash.set_bucket(bucket, lattice);
        }
    }
    let mut dirty = [false; BUCKETS];
    let start = journal_key(lattice_seq.saturating_add(1));
    let iter = db.iterator_cf(
        internal_cf(db),
        IteratorMode::From(&start, Direction::Forward),
    );
    for item in iter {
        let (key, value) = item.map_err(Error::rocks("iterate"))?;
        if !key.starts_with(PREFIX_JOURNAL) {
            break;
        }
        let entry: Vec<JournalEntry> = bcs::from_bytes(&value).map_err(|e| Error::Corrupt {
            what: "state journal",
            reason: e.to_string(),
        })?;
        for e in entry {
            e.apply(&mut hash);
            dirty[usize::from(e.bucket)] = true;
        }
    }
    Ok(Recovered {
        hash,
        dirty,
        lattice_seq,
        applied_seq: last_seq,
    })
}

impl Store {
    /// Opens (creating if needed) the data directory at `path`.
    ///
    /// Fails at once with [`Error::Locked`] if another process or handle holds it.
    pub fn open(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Store> {
        let path = path.as_ref();
        std::fs::create_dir_all(path).map_err(|e| open_error(path, e))?;
        let lock = lock_directory(path)?;

        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(config.background_jobs);
        db_opts.set_keep_log_file_num(4);
        let mut families = vec![
            ColumnFamilyDescriptor::new(STATE_CF, cf_options(&cache, false)),
            ColumnFamilyDescriptor::new(INTERNAL_CF, cf_options(&cache, false)),
            ColumnFamilyDescriptor::new(STAGING_CF, cf_options(&cache, false)),
        ];
        for c in Column::ALL {
            let compress = matches!(c, Column::Receipts | Column::Blocks | Column::Batches);
            families.push(ColumnFamilyDescriptor::new(
                c.name(),
                cf_options(&cache, compress),
            ));
        }
        let db = DB::open_cf_descriptors(&db_opts, path.join(DB_DIR), families).map_err(|e| {
            let reason = e.into_string();
            if reason.contains("LOCK") {
                Error::Locked {
                    path: path.to_path_buf(),
                    holder: "rocksdb lock".into(),
                }
            } else {
                open_error(path, reason)
            }
        })?;

        let db = Arc::new(db);
        let recovered = recover_state_hash(&db)?;
        let last_seq = recovered.applied_seq;
        let root = RootKeeper::spawn(db.clone(), recovered)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.sync_commits);
        let store = Store {
            db,
            path: path.to_path_buf(),
            commit: Mutex::new(CommitState {
                last_seq,
                recent: RecentWrites::new(last_seq, RECENT_WRITES_CAPACITY),
                root_pending: Vec::new(),
                write_opts,
                latest_opts: ReadOptions::default(),
            }),
            visible_seq: AtomicU64::new(last_seq),
            root,
            _lock: lock,
        };
        // An install a crash interrupted is finished before anything reads the state.
        store.finish_install()?;
        Ok(store)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn state_cf(&self) -> &ColumnFamily {
        // INVARIANT: `open` creates every column family.
        self.db
            .cf_handle(STATE_CF)
            .expect("INVARIANT: state column family exists")
    }

    pub(crate) fn staging_cf(&self) -> &ColumnFamily {
        // INVARIANT: `open` creates every column family.
        self.db
            .cf_handle(STAGING_CF)
            .expect("INVARIANT: staging column family exists")
    }

    pub(crate) fn internal_cf(&self) -> &ColumnFamily {
        // INVARIANT: `open` creates every column family.
        self.db
            .cf_handle(INTERNAL_CF)
            .expect("INVARIANT: internal column family exists")
    }

    pub(crate) fn cf(&self, column: Column) -> &ColumnFamily {
        // INVARIANT: `open` creates every column family.
        self.db
            .cf_handle(column.name())
            .expect("INVARIANT: column family exists")
    }

    /// The root of the committed state (after every commit that returned before this call).
    pub fn state_root(&self) -> Result<keel_types::Digest> {
        self.send_pending_journal()?;
        self.root.root()
    }

    /// The per-bucket lattices of the committed state.
    pub fn state_hash(&self) -> Result<StateHash> {
        self.send_pending_journal()?;
        self.root.state_hash()
    }

    /// Hands the journal entries commits have batched up to the state-root thread.
    fn send_pending_journal(&self) -> Result<()> {
        let mut cs = self.commit.lock();
        let pending = std::mem::take(&mut cs.root_pending);
        if !pending.is_empty() {
            self.root.apply(cs.last_seq, pending)?;
        }
        Ok(())
    }

    /// The sequence number of the latest commit (0 before the first).
    pub fn last_commit_seq(&self) -> u64 {
        self.commit.lock().last_seq
    }

    /// Recomputes the state hash from a full scan of the state, checking every entry's layout.
    /// Must equal [`Store::state_hash`]; O(state size).
    pub fn recompute_state_hash(&self) -> Result<StateHash> {
        let snapshot = self.db.snapshot();
        let mut hash = StateHash::default();
        for item in snapshot.iterator_cf(self.state_cf(), IteratorMode::Start) {
            let (key, value) = item.map_err(Error::rocks("iterate"))?;
            let (bucket, user_key) = key.split_first().ok_or_else(|| Error::Corrupt {
                what: "state key",
                reason: "empty key".into(),
            })?;
            if *bucket != bucket_of(user_key) {
                return Err(Error::Corrupt {
                    what: "state key",
                    reason: format!("key {} stored in bucket {bucket}", hex::encode(user_key)),
                });
            }
            let (_, payload) = split_value(&value)?;
            hash.bucket_mut(*bucket).insert(user_key, payload);
        }
        Ok(hash)
    }

    /// Bytes each column family holds on disk (live SST files) and in memory tables, by
    /// column family name, for metrics; the write-ahead log is not included.
    pub fn disk_usage(&self) -> Result<Vec<(&'static str, u64)>> {
        let mut families: Vec<(&'static str, &ColumnFamily)> = vec![
            (STATE_CF, self.state_cf()),
            (INTERNAL_CF, self.internal_cf()),
        ];
        families.extend(Column::ALL.iter().map(|c| (c.name(), self.cf(*c))));
        families
            .into_iter()
            .map(|(name, cf)| {
                let property = |p: &str| {
                    self.db
                        .property_int_value_cf(cf, p)
                        .map(Option::unwrap_or_default)
                        .map_err(Error::rocks("read a size property"))
                };
                Ok((
                    name,
                    property("rocksdb.live-sst-files-size")?
                        .saturating_add(property("rocksdb.size-all-mem-tables")?),
                ))
            })
            .collect()
    }

    /// Flushes every memtable to SST files and syncs the write-ahead log (for a clean shutdown,
    /// or to move freshly loaded data out of the memtables).
    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(Error::rocks("flush wal"))?;
        let mut cfs = vec![self.state_cf(), self.internal_cf()];
        cfs.extend(Column::ALL.iter().map(|c| self.cf(*c)));
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(Error::rocks("flush"))
    }

    /// Reads a key of a caller-visible column.
    pub fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(column), key)
            .map_err(Error::rocks("get"))
    }

    /// Writes a key of a caller-visible column, without fsync.
    pub fn put(&self, column: Column, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_cf(self.cf(column), key, value)
            .map_err(Error::rocks("put"))
    }

    /// Writes a key and fsyncs the write-ahead log before returning: once this returns, the
    /// value survives a crash of the process or of the machine. Consensus safety data goes
    /// through here before any vote or timeout leaves the node.
    pub fn put_synced(&self, column: Column, key: &[u8], value: &[u8]) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(column), key, value);
        self.db
            .write_opt(batch, &opts)
            .map_err(Error::rocks("synced put"))
    }

    /// Writes several keys of caller-visible columns atomically (all or none survive a
    /// crash); with `sync`, fsyncs before returning.
    pub fn write(&self, ops: Vec<WriteOp>, sync: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut batch = WriteBatch::default();
        self.add_ops(&mut batch, ops);
        self.db
            .write_opt(batch, &opts)
            .map_err(Error::rocks("write"))
    }

    /// Adds caller-visible column writes to a write batch.
    pub(crate) fn add_ops(&self, batch: &mut WriteBatch, ops: Vec<WriteOp>) {
        for op in ops {
            match op.value {
                Some(v) => batch.put_cf(self.cf(op.column), op.key, v),
                None => batch.delete_cf(self.cf(op.column), op.key),
            }
        }
    }

    /// Iterates a caller-visible column's keys starting with `prefix`, in key order.
    pub fn scan_prefix(&self, column: Column, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(column),
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(Error::rocks("scan"))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes a key of a caller-visible column.
    pub fn delete(&self, column: Column, key: &[u8]) -> Result<()> {
        self.db
            .delete_cf(self.cf(column), key)
            .map_err(Error::rocks("delete"))
    }
}
