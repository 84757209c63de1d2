//! A data directory: its lock, its RocksDB database with every column family of
//! [`crate::schema`], and the checks that it is an osmium-state directory of a format
//! this build reads. Everything else (the log, the projections) is opened on top.
//!
//! Architecture invariant: one process writes a directory at a time (an OS file lock,
//! [`LOCK_FILE_NAME`]); read-only opens take no lock and see the state as of the open.

use crate::error::OpenError;
use crate::schema::{self, CF_META, CF_POSITION_EVENT, ProjectionSlot};
use osmium_proto::ids::Position;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Name of the lock file that keeps a second engine out of a data directory.
pub const LOCK_FILE_NAME: &str = "osmium.lock";

/// How long an open waits for the directory's lock before answering
/// [`OpenError::DirectoryInUse`]. A child process spawned by any thread of this process
/// holds an inherited copy of the lock's descriptor from its fork until its `exec` closes
/// it, and a `flock` lasts while any copy does: a directory closed in that window looks
/// in use for that long (a loaded machine: milliseconds).
pub const LOCK_WAIT_MAX_MS: u64 = 1_000;

/// How often a waiting open tries the lock again.
const LOCK_RETRY_INTERVAL_MS: u64 = 2;

/// RocksDB's memory in this process, in bytes: one LRU cache holds the data blocks, the
/// index and filter blocks of every table file, and (charged through one write buffer
/// manager) the memtables of every database the process opens. Without the charge,
/// memtables came on top of the cache; without the index blocks in it, the table
/// readers' memory grew with the directory (21 MiB at 10M events, issue #11).
pub const ROCKSDB_MEMORY_BYTES_MAX: usize = 192 * 1024 * 1024;
/// Of [`ROCKSDB_MEMORY_BYTES_MAX`], what the memtables of all databases and column
/// families together may hold, in bytes: past it RocksDB flushes the largest (without a
/// bound, each of the 26 column families could hold 64 MiB, and a rebuild fills all the
/// projection families at once). Blocks get at least the rest.
pub const MEMTABLES_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The one block cache of the process, which the memtables are charged to.
fn block_cache() -> &'static rocksdb::Cache {
    static CACHE: std::sync::OnceLock<rocksdb::Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| rocksdb::Cache::new_lru_cache(ROCKSDB_MEMORY_BYTES_MAX))
}

/// The one write buffer manager of the process: bounds the memtables of every database
/// together and charges them to [`block_cache`]. Writes never stall on it (RocksDB
/// flushes instead), so the bound holds up to the memtables being flushed.
fn write_buffer_manager() -> &'static rocksdb::WriteBufferManager {
    static MANAGER: std::sync::OnceLock<rocksdb::WriteBufferManager> = std::sync::OnceLock::new();
    MANAGER.get_or_init(|| rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(MEMTABLES_BYTES_MAX, false, block_cache().clone()))
}

/// RocksDB's memory as RocksDB counts it (for metrics: see [`DataDir::rocksdb_memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RocksMemory {
    /// This directory's memtables, mutable and immutable (also charged to the cache).
    pub memtables_bytes: u64,
    /// The process's one cache: data blocks, index and filter blocks, and the charge of
    /// every database's memtables. At most about [`ROCKSDB_MEMORY_BYTES_MAX`].
    pub cache_bytes: u64,
    /// Table readers' memory outside the cache (small: index and filter blocks are in it).
    pub table_readers_bytes: u64,
}

/// The RocksDB options every data directory and each of its column families is opened
/// with (public so that benchmarks can open a raw baseline database the same way).
/// RocksDB's own memory is bounded by [`ROCKSDB_MEMORY_BYTES_MAX`].
pub fn db_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_max_background_jobs(2);
    options.set_write_buffer_manager(write_buffer_manager());
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(block_cache());
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    options.set_block_based_table_factory(&table);
    crate::storage_error::refuse_damaged_write_ahead_logs(&mut options);
    options
}

/// Idempotency keys older than this (by the wall clock) are dropped by compactions: the
/// engine's `idempotency_window_ms` may not exceed it.
pub const IDEMPOTENCY_KEYS_KEPT_MS: u64 = 7 * 24 * 60 * 60 * 1_000;

/// Makes compactions of the idempotency-key family drop entries recorded more than
/// [`IDEMPOTENCY_KEYS_KEPT_MS`] ago, so that the keys of a day's sends cost disk for a
/// week, not forever. Entries without a time (format 1) and unreadable ones are kept.
fn forget_expired_idempotency_keys(options: &mut Options) {
    options.set_compaction_filter("osmium-expired-idempotency-keys", |_level: u32, _key: &[u8], value: &[u8]| {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        match schema::parse_idempotency_value(value).and_then(|entry| entry.recorded_at_ms) {
            Some(recorded_at_ms) if recorded_at_ms.saturating_add(IDEMPOTENCY_KEYS_KEPT_MS) < now_ms => {
                rocksdb::compaction_filter::Decision::Remove
            }
            _ => rocksdb::compaction_filter::Decision::Keep,
        }
    });
}

/// An open data directory.
pub struct DataDir {
    /// The database (shared by the log, the projections and their readers).
    pub(crate) db: Arc<DB>,
    pub(crate) path: PathBuf,
    /// The projection slot being served.
    pub(crate) slot: ProjectionSlot,
    /// The newest position of the log at the open.
    pub(crate) last_position: Position,
    /// Held while the directory is open for writing.
    pub(crate) lock: Option<File>,
    /// Catch-up index entries of positions below this are trimmed (`META_CATCH_UP_FLOOR`;
    /// shared with the compaction filters that drop them, see [`crate::retention`]).
    pub(crate) catch_up_floor: Arc<AtomicU64>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("path", &self.path)
            .field("slot", &self.slot)
            .field("last_position", &self.last_position)
            .finish_non_exhaustive()
    }
}

impl DataDir {
    /// Opens (creating when missing) the directory at `path` for writing: takes its lock,
    /// opens the database, checks (or, for a new directory, writes) the format version.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, OpenError> {
        let path = path.as_ref();
        let (db, lock, catch_up_floor) = open_database(path)?;
        let (slot, last_position) = check_format(&db, path, true)?;
        load_catch_up_floor(&db, &catch_up_floor)?;
        Ok(DataDir { db: Arc::new(db), path: path.to_path_buf(), slot, last_position, lock: Some(lock), catch_up_floor })
    }

    /// RocksDB's memory now; zeros where RocksDB cannot tell (a failed property read
    /// costs a metric, not the caller's operation).
    pub fn rocksdb_memory(&self) -> RocksMemory {
        match rocksdb::perf::get_memory_usage_stats(Some(&[&*self.db]), Some(&[block_cache()])) {
            Ok(stats) => RocksMemory {
                memtables_bytes: stats.mem_table_total,
                cache_bytes: stats.cache_total,
                table_readers_bytes: stats.mem_table_readers_total,
            },
            Err(_) => RocksMemory::default(),
        }
    }

    /// Opens an existing directory for writing, refusing to create one.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<DataDir, OpenError> {
        let path = path.as_ref();
        if !path.join("CURRENT").exists() {
            return Err(OpenError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: "it holds no RocksDB database".into(),
            });
        }
        let (db, lock, catch_up_floor) = open_database(path)?;
        let (slot, last_position) = check_format(&db, path, false)?;
        load_catch_up_floor(&db, &catch_up_floor)?;
        Ok(DataDir { db: Arc::new(db), path: path.to_path_buf(), slot, last_position, lock: Some(lock), catch_up_floor })
    }

    /// Opens the directory read-only (works while an engine runs; sees the state as of now).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<DataDir, OpenError> {
        let path = path.as_ref();
        let db = open_database_read_only(path)?;
        let (slot, last_position) = check_format(&db, path, false)?;
        let catch_up_floor = Arc::new(AtomicU64::new(0));
        load_catch_up_floor(&db, &catch_up_floor)?;
        Ok(DataDir { db: Arc::new(db), path: path.to_path_buf(), slot, last_position, lock: None, catch_up_floor })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The projection slot being served.
    pub fn slot(&self) -> ProjectionSlot {
        self.slot
    }

    /// The newest position of the log when the directory was opened.
    pub fn last_position(&self) -> Position {
        self.last_position
    }
}

/// The handle of column family `name`, or a corruption error if the directory lacks it.
pub(crate) fn column_family<'db>(db: &'db DB, name: &str) -> Result<&'db rocksdb::ColumnFamily, crate::EngineError> {
    db.cf_handle(name).ok_or_else(|| crate::EngineError::Corrupt {
        what: "column families".into(),
        expected: format!("column family {name}"),
        found: "none".into(),
    })
}

/// Takes the directory's lock file (waiting up to [`LOCK_WAIT_MAX_MS`]), or says who holds it.
fn lock_directory(path: &Path) -> Result<File, OpenError> {
    std::fs::create_dir_all(path).map_err(OpenError::io(path))?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join(LOCK_FILE_NAME))
        .map_err(OpenError::io(path))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MAX_MS);
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_INTERVAL_MS));
            }
            Err(TryLockError::WouldBlock) => return Err(OpenError::DirectoryInUse { path: path.to_path_buf() }),
            Err(TryLockError::Error(source)) => return Err(OpenError::io(path)(source)),
        }
    }
}

fn require_meta_family(path: &Path, existing: &[String]) -> Result<(), OpenError> {
    if existing.iter().any(|name| name == CF_META) {
        return Ok(());
    }
    Err(OpenError::NotAnEngineDirectory {
        path: path.to_path_buf(),
        reason: "it is a RocksDB database without the osmium-state `meta` column family".into(),
    })
}

/// Opens the RocksDB database of a data directory read-only, without taking the lock: a
/// running engine may hold it. Sees the state as of the open.
pub(crate) fn open_database_read_only(path: &Path) -> Result<DB, OpenError> {
    if !path.join("CURRENT").exists() {
        return Err(OpenError::NotAnEngineDirectory {
            path: path.to_path_buf(),
            reason: "it holds no RocksDB database".into(),
        });
    }
    let options = db_options();
    let existing = DB::list_cf(&options, path).map_err(OpenError::storage("listing column families"))?;
    require_meta_family(path, &existing)?;
    DB::open_cf_for_read_only(&options, path, existing, false)
        .map_err(|err| OpenError::Engine(crate::storage_error::opening(path, "opening the database read-only")(err)))
}

/// Opens (creating when missing) the RocksDB database of a data directory after checking
/// that it is one, and returns it with the directory lock held.
pub(crate) fn open_database(path: &Path) -> Result<(DB, File, Arc<AtomicU64>), OpenError> {
    let lock = lock_directory(path)?;
    let has_rocksdb = path.join("CURRENT").exists();
    if !has_rocksdb {
        let foreign = std::fs::read_dir(path)
            .map_err(OpenError::io(path))?
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .find(|name| name != LOCK_FILE_NAME);
        if let Some(name) = foreign {
            return Err(OpenError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: format!("it holds {name:?} but no RocksDB database"),
            });
        }
    }
    let options = db_options();
    let mut names: Vec<String> = schema::all_column_families().into_iter().map(str::to_owned).collect();
    if has_rocksdb {
        let existing = DB::list_cf(&options, path).map_err(OpenError::storage("listing column families"))?;
        require_meta_family(path, &existing)?;
        for name in existing {
            if !names.contains(&name) {
                names.push(name); // kept open (and untouched) so that RocksDB agrees to open
            }
        }
    }
    let catch_up_floor = Arc::new(AtomicU64::new(0));
    let catch_up_families = crate::retention::catch_up_column_families();
    let descriptors = names.into_iter().map(|name| {
        let mut family_options = db_options();
        if name == schema::CF_IDEMKEY_POSITION {
            forget_expired_idempotency_keys(&mut family_options);
        }
        if catch_up_families.contains(&name.as_str()) {
            crate::retention::drop_trimmed_catch_up_keys(&mut family_options, catch_up_floor.clone());
        }
        ColumnFamilyDescriptor::new(name, family_options)
    });
    let db = DB::open_cf_descriptors(&options, path, descriptors)
        .map_err(|err| OpenError::Engine(crate::storage_error::opening(path, "opening the database")(err)))?;
    Ok((db, lock, catch_up_floor))
}

pub(crate) fn read_meta(db: &DB, key: &[u8]) -> Result<Option<Vec<u8>>, crate::EngineError> {
    db.get_cf(column_family(db, CF_META)?, key).map_err(crate::EngineError::storage("reading meta"))
}

/// Loads `META_CATCH_UP_FLOOR` (absent: 0, nothing trimmed) into `floor`.
fn load_catch_up_floor(db: &DB, floor: &AtomicU64) -> Result<(), OpenError> {
    if let Some(bytes) = read_meta(db, schema::META_CATCH_UP_FLOOR).map_err(OpenError::Engine)? {
        floor.store(parse_position("the catch-up floor", &bytes)?.get(), std::sync::atomic::Ordering::Release);
    }
    Ok(())
}

fn parse_position(what: &str, bytes: &[u8]) -> Result<Position, OpenError> {
    schema::parse_u64(bytes).map(Position).ok_or_else(|| OpenError::corrupt(what, "8 bytes", format!("{} bytes", bytes.len())))
}

/// Checks the format version (writing it into a new directory when `writable`) and returns
/// the active projection slot and the last position, cross-checked against the log itself.
pub(crate) fn check_format(db: &DB, path: &Path, writable: bool) -> Result<(ProjectionSlot, Position), OpenError> {
    let last_in_log = {
        let mut iter = db.raw_iterator_cf(column_family(db, CF_POSITION_EVENT)?);
        iter.seek_to_last();
        iter.status().map_err(OpenError::storage("reading the last event"))?;
        match iter.key() {
            None => Position::ZERO,
            Some(key) => parse_position("event key", key)?,
        }
    };
    match read_meta(db, schema::META_FORMAT_VERSION)? {
        None if last_in_log == Position::ZERO && !writable => {
            return Err(OpenError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: "it was never initialised by an engine".into(),
            });
        }
        None if last_in_log == Position::ZERO => {
            let cf = column_family(db, CF_META)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(cf, schema::META_FORMAT_VERSION, schema::FORMAT_VERSION.to_be_bytes());
            batch.put_cf(cf, schema::META_PROJECTION_SLOT, [ProjectionSlot::A.tag()]);
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            db.write_opt(batch, &sync).map_err(OpenError::storage("initialising the directory"))?;
        }
        None => {
            return Err(OpenError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: "it has events but no format version".into(),
            });
        }
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| OpenError::corrupt("format version", "4 bytes", format!("{} bytes", bytes.len())))?;
            if found > schema::FORMAT_VERSION {
                return Err(OpenError::NewerFormat { found, supported: schema::FORMAT_VERSION });
            }
            if found < schema::FORMAT_VERSION {
                return Err(OpenError::corrupt(
                    "format version (no migration from older formats exists yet)",
                    schema::FORMAT_VERSION.to_string(),
                    found.to_string(),
                ));
            }
        }
    }
    let recorded_last = read_meta(db, schema::META_LAST_POSITION)?
        .map(|bytes| parse_position("meta last_position", &bytes))
        .transpose()?
        .unwrap_or(Position::ZERO);
    if recorded_last != last_in_log {
        return Err(OpenError::corrupt(
            "last position (meta vs. newest event)",
            recorded_last.to_string(),
            last_in_log.to_string(),
        ));
    }
    let slot = match read_meta(db, schema::META_PROJECTION_SLOT)? {
        None => ProjectionSlot::A,
        Some(tag) => ProjectionSlot::from_tag(&tag)
            .ok_or_else(|| OpenError::corrupt("projection slot", "a or b", format!("{tag:?}")))?,
    };
    Ok((slot, last_in_log))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema::{CF_IDEMKEY_POSITION, IdempotencyEntry, idempotency_value};

    fn entry(recorded_at_ms: Option<u64>) -> Vec<u8> {
        idempotency_value(&IdempotencyEntry { first: Position(1), count: 1, recorded_at_ms, fingerprint: Some([1; 16]) })
    }

    #[test]
    fn compactions_drop_idempotency_keys_recorded_more_than_a_week_ago() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(temp.path()).unwrap();
        let family = column_family(&dir.db, CF_IDEMKEY_POSITION).unwrap();
        let now_ms = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
        dir.db.put_cf(family, b"expired", entry(Some(now_ms - IDEMPOTENCY_KEYS_KEPT_MS - 60_000))).unwrap();
        dir.db.put_cf(family, b"recent", entry(Some(now_ms - IDEMPOTENCY_KEYS_KEPT_MS + 60_000))).unwrap();
        dir.db.put_cf(family, b"undated", entry(None)).unwrap();
        dir.db.flush_cf(family).unwrap();
        dir.db.compact_range_cf(family, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(dir.db.get_cf(family, b"expired").unwrap(), None);
        assert!(dir.db.get_cf(family, b"recent").unwrap().is_some());
        assert!(dir.db.get_cf(family, b"undated").unwrap().is_some());
    }
}
