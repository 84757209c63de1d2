//! The durable event log: RocksDB column families written by one writer thread with
//! group commit, read by anyone.
//!
//! The narrow interface the rest of the system relies on is: [`EventLog::append`]
//! (with an expected stream version and an idempotency key), [`EventLog::read_all`]
//! from a position, [`EventLog::read_stream`], [`EventLog::last_position`] and the live
//! tail ([`EventLog::subscribe`], [`EventLog::watch_position`]). A replicated log could
//! stand in behind the same calls without touching the fold.
//!
//! Invariants:
//! - positions are gapless from 1 and assigned only by the writer thread, at commit;
//! - an event, its stream index entry, its idempotency entry, the projection writes it
//!   causes and the new checkpoint are in one `WriteBatch`: all durable or none;
//! - readers never see a position above the durable last position, which is published
//!   only after the batch write (and its WAL sync, in `Sync` mode) returned.

use crate::clock::{Clock, SnowflakeGenerator, SystemClock};
use crate::error::EngineError;
use crate::rocks::RocksView;
use crate::schema::{self, CF_IDEMKEY_POSITION, CF_META, CF_POSITION_EVENT, CF_STREAMID_VERSION_POSITION, ProjectionSlot};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use osmium_projections::{MemStore, Overlay, Store, StoreRead, Table, records};
use osmium_proto::events::{EventEnvelope, StreamRef, event_envelope::Event, stream_ref::Stream};
use osmium_proto::ids::{Position, StreamId, StreamVersion, UserId};
use osmium_proto::prost::Message as _;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::{broadcast, oneshot, watch};

/// Name of the lock file that keeps a second engine out of a data directory.
pub const LOCK_FILE_NAME: &str = "osmium.lock";

/// When an append is acknowledged.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Durability {
    /// The WAL is fsynced before any caller of the batch is answered: an acknowledged
    /// event survives a process crash and a power loss.
    #[default]
    Sync,
    /// The WAL is written to the OS but not fsynced: an acknowledged event survives a
    /// process crash, not a power loss or kernel crash.
    Buffered,
}

/// Settings of the log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Commands waiting for the writer before new ones get [`EngineError::Overloaded`].
    pub commit_queue_max: usize,
    /// Commands committed together in one `WriteBatch` at most.
    pub commit_batch_max: usize,
    /// Committed batches kept for slow subscribers of [`EventLog::subscribe`].
    pub tail_buffer_max: usize,
    /// Worker id of the snowflake generator (0..=1023).
    pub snowflake_worker: u16,
    /// The clock for timestamps and ids.
    pub clock: Arc<dyn Clock>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Sync,
            commit_queue_max: 16_384,
            commit_batch_max: 1_024,
            tail_buffer_max: 4_096,
            snowflake_worker: 0,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Limits on what one append may carry.
pub const APPEND_EVENTS_MAX: usize = 1_024;
/// Largest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 256;

/// What the stream's version must be for an append to go through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExpectedVersion {
    /// Whatever it is.
    Any,
    /// The stream has no event yet.
    NoStream,
    /// Exactly this version (the number of events in the stream).
    Exact(StreamVersion),
}

impl ExpectedVersion {
    fn admits(self, found: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => found == StreamVersion::EMPTY,
            ExpectedVersion::Exact(expected) => expected == found,
        }
    }
}

/// Events to append to one stream, as decided by a command.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The stream they belong to.
    pub stream: StreamId,
    /// The version the stream must be at.
    pub expected_version: ExpectedVersion,
    /// Who caused them.
    pub actor: UserId,
    /// The events, in order (1..=[`APPEND_EVENTS_MAX`]).
    pub events: Vec<Event>,
    /// A retry with the same key returns the original events and writes nothing.
    pub idempotency_key: Option<Vec<u8>>,
}

/// The outcome of an append.
#[derive(Clone, Debug)]
pub struct Appended {
    /// The recorded events with their positions, stream versions and timestamps.
    pub events: Vec<EventEnvelope>,
    /// True when the idempotency key had been used: `events` are the original ones.
    pub deduplicated: bool,
}

impl Appended {
    /// Position of the first event.
    pub fn first_position(&self) -> Position {
        self.events.first().map_or(Position::ZERO, |event| Position(event.position))
    }

    /// Position of the last event.
    pub fn last_position(&self) -> Position {
        self.events.last().map_or(Position::ZERO, |event| Position(event.position))
    }
}

/// What a command's decision can see on the writer thread: the projections as they will
/// be once everything before it in the queue is committed, the clock and the id generator.
pub struct DecideContext<'a> {
    /// Projection state, including the batch's not yet committed writes.
    pub state: &'a dyn StoreRead,
    /// The time of this commit (unix ms).
    pub now_ms: u64,
    ids: &'a mut SnowflakeGenerator,
}

impl DecideContext<'_> {
    /// A new snowflake id (strictly increasing across the whole engine).
    pub fn next_id(&mut self) -> u64 {
        self.ids.next_id()
    }
}

impl std::fmt::Debug for DecideContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecideContext").field("now_ms", &self.now_ms).finish_non_exhaustive()
    }
}

/// A command's decision, run on the writer thread against the latest state. It either
/// proposes events or refuses with an error; it must not have side effects.
pub type Decide = Box<dyn FnOnce(&mut DecideContext<'_>) -> Result<Proposal, EngineError> + Send>;

struct WriterRequest {
    decide: Decide,
    reply: oneshot::Sender<Result<Appended, EngineError>>,
}

/// Events committed by one batch, in position order; what subscribers receive.
#[derive(Clone, Debug)]
pub struct CommittedBatch {
    /// The events.
    pub events: Vec<EventEnvelope>,
}

/// The handle of column family `name`, or a corruption error if the directory lacks it.
pub(crate) fn column_family<'db>(db: &'db DB, name: &str) -> Result<&'db rocksdb::ColumnFamily, EngineError> {
    db.cf_handle(name).ok_or_else(|| EngineError::Corrupt {
        what: "column families".into(),
        expected: format!("column family {name}"),
        found: "none".into(),
    })
}

/// Every entry of a projection slot, copied into memory from one snapshot.
pub(crate) fn copy_projections(db: &DB, slot: ProjectionSlot) -> Result<MemStore, EngineError> {
    let snapshot = db.snapshot();
    let mut contents = MemStore::new();
    for table in Table::ALL {
        let mut options = rocksdb::ReadOptions::default();
        options.set_snapshot(&snapshot);
        let mut iter = db.raw_iterator_cf_opt(column_family(db, slot.column_family(table))?, options);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            contents.put(table, key.to_vec(), value.to_vec());
            iter.next();
        }
        iter.status().map_err(EngineError::storage("reading projections"))?;
    }
    Ok(contents)
}

/// State shared by the log handle, its readers and the writer thread.
pub(crate) struct LogShared {
    pub(crate) db: DB,
    pub(crate) path: PathBuf,
    pub(crate) slot: ProjectionSlot,
    durable_position: AtomicU64,
    /// Set when the log handle is dropped: background readers stop at the next event.
    closing: AtomicBool,
    _lock: File,
}

impl LogShared {
    /// Whether the log is being closed: a background task holding this must let go soon.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn durable_position(&self) -> Position {
        Position(self.durable_position.load(Ordering::Acquire))
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, EngineError> {
        column_family(&self.db, name)
    }
}

/// The event log of one data directory. Dropping it stops the writer after the commands
/// already queued are committed.
pub struct EventLog {
    shared: Arc<LogShared>,
    submit: Option<Sender<WriterRequest>>,
    writer: Option<JoinHandle<()>>,
    commit_queue_max: usize,
    position_rx: watch::Receiver<Position>,
    events_tx: broadcast::Sender<Arc<CommittedBatch>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.shared.path)
            .field("last_position", &self.last_position())
            .finish_non_exhaustive()
    }
}

/// The RocksDB options every data directory and each of its column families is opened
/// with (public so that benchmarks can open a raw baseline database the same way).
pub fn db_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_max_background_jobs(2);
    crate::storage_error::refuse_damaged_write_ahead_logs(&mut options);
    options
}

/// Takes the directory's lock file, or says who holds it.
fn lock_directory(path: &Path) -> Result<File, EngineError> {
    let io = |source| EngineError::Io { path: path.to_path_buf(), source };
    std::fs::create_dir_all(path).map_err(io)?;
    let lock = File::options().create(true).truncate(false).write(true).open(path.join(LOCK_FILE_NAME)).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(EngineError::DirectoryInUse { path: path.to_path_buf() }),
        Err(TryLockError::Error(source)) => Err(io(source)),
    }
}

/// Opens the RocksDB database of a data directory read-only, without taking the lock: a
/// running engine may hold it. Sees the state as of the open.
pub(crate) fn open_database_read_only(path: &Path) -> Result<DB, EngineError> {
    if !path.join("CURRENT").exists() {
        return Err(EngineError::NotAnEngineDirectory {
            path: path.to_path_buf(),
            reason: "it holds no RocksDB database".into(),
        });
    }
    let options = db_options();
    let existing = DB::list_cf(&options, path).map_err(EngineError::storage("listing column families"))?;
    if !existing.iter().any(|name| name == CF_META) {
        return Err(EngineError::NotAnEngineDirectory {
            path: path.to_path_buf(),
            reason: "it is a RocksDB database without the osmium-state `meta` column family".into(),
        });
    }
    DB::open_cf_for_read_only(&options, path, existing, false).map_err(crate::storage_error::opening(path, "opening the database read-only"))
}

/// Opens (creating when missing) the RocksDB database of a data directory after checking
/// that it is one, and returns it with the directory lock held.
pub(crate) fn open_database(path: &Path) -> Result<(DB, File), EngineError> {
    let io = |source| EngineError::Io { path: path.to_path_buf(), source };
    let lock = lock_directory(path)?;
    let has_rocksdb = path.join("CURRENT").exists();
    if !has_rocksdb {
        let foreign = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .find(|name| name != LOCK_FILE_NAME);
        if let Some(name) = foreign {
            return Err(EngineError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: format!("it holds {name:?} but no RocksDB database"),
            });
        }
    }
    let options = db_options();
    let mut names: Vec<String> = schema::all_column_families().into_iter().map(str::to_owned).collect();
    if has_rocksdb {
        let existing = DB::list_cf(&options, path).map_err(EngineError::storage("listing column families"))?;
        if !existing.iter().any(|name| name == CF_META) {
            return Err(EngineError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: "it is a RocksDB database without the osmium-state `meta` column family".into(),
            });
        }
        for name in existing {
            if !names.contains(&name) {
                names.push(name); // kept open (and untouched) so that RocksDB agrees to open
            }
        }
    }
    let descriptors = names.into_iter().map(|name| ColumnFamilyDescriptor::new(name, db_options()));
    let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(crate::storage_error::opening(path, "opening the database"))?;
    Ok((db, lock))
}

pub(crate) fn read_meta(db: &DB, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
    db.get_cf(column_family(db, CF_META)?, key).map_err(EngineError::storage("reading meta"))
}

/// Checks the format version (writing it into a new directory when `writable`) and returns
/// the active projection slot and the last position, cross-checked against the log itself.
pub(crate) fn check_format(db: &DB, path: &Path, writable: bool) -> Result<(ProjectionSlot, Position), EngineError> {
    let last_in_log = {
        let mut iter = db.raw_iterator_cf(column_family(db, CF_POSITION_EVENT)?);
        iter.seek_to_last();
        iter.status().map_err(EngineError::storage("reading the last event"))?;
        match iter.key() {
            None => Position::ZERO,
            Some(key) => Position(schema::parse_u64(key).ok_or_else(|| EngineError::Corrupt {
                what: "event key".into(),
                expected: "8 bytes".into(),
                found: format!("{} bytes", key.len()),
            })?),
        }
    };
    match read_meta(db, schema::META_FORMAT_VERSION)? {
        None if last_in_log == Position::ZERO && !writable => {
            return Err(EngineError::NotAnEngineDirectory {
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
            db.write_opt(batch, &sync).map_err(EngineError::storage("initialising the directory"))?;
        }
        None => {
            return Err(EngineError::NotAnEngineDirectory {
                path: path.to_path_buf(),
                reason: "it has events but no format version".into(),
            });
        }
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice()).map(u32::from_be_bytes).map_err(|_| {
                EngineError::Corrupt {
                    what: "format version".into(),
                    expected: "4 bytes".into(),
                    found: format!("{} bytes", bytes.len()),
                }
            })?;
            if found > schema::FORMAT_VERSION {
                return Err(EngineError::NewerFormat { found, supported: schema::FORMAT_VERSION });
            }
            if found < schema::FORMAT_VERSION {
                return Err(EngineError::Corrupt {
                    what: "format version (no migration from older formats exists yet)".into(),
                    expected: schema::FORMAT_VERSION.to_string(),
                    found: found.to_string(),
                });
            }
        }
    }
    let recorded_last = read_meta(db, schema::META_LAST_POSITION)?
        .map(|bytes| {
            schema::parse_u64(&bytes).map(Position).ok_or_else(|| EngineError::Corrupt {
                what: "meta last_position".into(),
                expected: "8 bytes".into(),
                found: format!("{} bytes", bytes.len()),
            })
        })
        .transpose()?
        .unwrap_or(Position::ZERO);
    if recorded_last != last_in_log {
        return Err(EngineError::Corrupt {
            what: "last position (meta vs. newest event)".into(),
            expected: recorded_last.to_string(),
            found: last_in_log.to_string(),
        });
    }
    let slot = match read_meta(db, schema::META_PROJECTION_SLOT)? {
        None => ProjectionSlot::A,
        Some(tag) => ProjectionSlot::from_tag(&tag).ok_or_else(|| EngineError::Corrupt {
            what: "projection slot".into(),
            expected: "a or b".into(),
            found: format!("{tag:?}"),
        })?,
    };
    Ok((slot, last_in_log))
}

/// Decodes a stored record, checking that it is the one its key says.
pub fn decode_event(position: Position, bytes: &[u8]) -> Result<EventEnvelope, EngineError> {
    let envelope =
        EventEnvelope::decode(bytes).map_err(|err| EngineError::Decode { position, reason: err.to_string() })?;
    if envelope.position != position.get() {
        return Err(EngineError::Corrupt {
            what: format!("envelope position of the record stored at {position}"),
            expected: position.to_string(),
            found: envelope.position.to_string(),
        });
    }
    Ok(envelope)
}

impl EventLog {
    /// Opens the data directory at `path` (created when missing) and starts the writer.
    ///
    /// Errors: [`EngineError::DirectoryInUse`] when another engine has it open,
    /// [`EngineError::NotAnEngineDirectory`], [`EngineError::NewerFormat`],
    /// [`EngineError::Corrupt`] when meta and log disagree, and
    /// [`EngineError::ProjectionSchemaMismatch`] / [`EngineError::ProjectionsBehind`] when the
    /// projections must be rebuilt before the engine can serve them.
    pub fn open(path: impl AsRef<Path>, config: LogConfig) -> Result<EventLog, EngineError> {
        let path = path.as_ref();
        let (db, lock) = open_database(path)?;
        let (slot, last_position) = check_format(&db, path, true)?;
        let shared = Arc::new(LogShared {
            db,
            path: path.to_path_buf(),
            slot,
            durable_position: AtomicU64::new(last_position.get()),
            closing: AtomicBool::new(false),
            _lock: lock,
        });
        let view = RocksView::latest(&shared.db, slot);
        let checkpoint = records::load_checkpoint(&view)?;
        if let Some(found) = records::load_schema_version(&view)? {
            let expected = osmium_projections::limits::PROJECTION_SCHEMA_VERSION;
            if found != expected {
                return Err(EngineError::ProjectionSchemaMismatch { found, expected });
            }
        }
        if checkpoint != last_position {
            return Err(EngineError::ProjectionsBehind { checkpoint, last_position });
        }
        let mut ids = SnowflakeGenerator::new(config.clock.clone(), config.snowflake_worker);
        let floor = read_meta(&shared.db, schema::META_SNOWFLAKE_FLOOR)?;
        ids.advance_past(floor.as_deref().and_then(schema::parse_u64).unwrap_or(0));
        drop(view);

        let (submit, requests) = crossbeam_channel::bounded(config.commit_queue_max);
        let (position_tx, position_rx) = watch::channel(last_position);
        let (events_tx, _) = broadcast::channel(config.tail_buffer_max.max(1));
        let mut write_options = WriteOptions::default();
        write_options.set_sync(config.durability == Durability::Sync);
        let writer = Writer {
            shared: shared.clone(),
            clock: config.clock.clone(),
            ids,
            last_position,
            write_options,
            failure: None,
            requests,
            commit_batch_max: config.commit_batch_max.max(1),
            position_tx,
            events_tx: events_tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("osmium-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
        Ok(EventLog {
            shared,
            submit: Some(submit),
            writer: Some(handle),
            commit_queue_max: config.commit_queue_max,
            position_rx,
            events_tx,
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The projection slot being served.
    pub fn projection_slot(&self) -> ProjectionSlot {
        self.shared.slot
    }

    pub(crate) fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }

    /// Appends `events` to `stream` if it is at `expected_version`.
    ///
    /// - version mismatch: [`EngineError::Conflict`], nothing written;
    /// - `idempotency_key` seen before (ever, not within a window): the original events,
    ///   nothing written, `deduplicated = true`;
    /// - otherwise the events get the next gapless positions and are acknowledged once
    ///   durable per the configured [`Durability`].
    pub async fn append(
        &self,
        stream: StreamId,
        expected_version: ExpectedVersion,
        actor: UserId,
        events: Vec<Event>,
        idempotency_key: Option<Vec<u8>>,
    ) -> Result<Appended, EngineError> {
        let proposal = Proposal { stream, expected_version, actor, events, idempotency_key };
        self.submit(Box::new(move |_| Ok(proposal))).await
    }

    /// Runs `decide` on the writer thread against the latest state and commits what it proposes.
    pub async fn submit(&self, decide: Decide) -> Result<Appended, EngineError> {
        let (reply, answer) = oneshot::channel();
        let submit = self.submit.as_ref().ok_or(EngineError::Closed)?;
        submit.try_send(WriterRequest { decide, reply }).map_err(|err| match err {
            TrySendError::Full(_) => EngineError::Overloaded { queue_max: self.commit_queue_max },
            TrySendError::Disconnected(_) => EngineError::Closed,
        })?;
        answer.await.map_err(|_| EngineError::Closed)?
    }

    /// The newest durable position (0 for an empty log).
    pub fn last_position(&self) -> Position {
        self.shared.durable_position()
    }

    /// Up to `limit` events from position `from` (inclusive) on, in position order.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
        read_all(&self.shared, from, limit)
    }

    /// Up to `limit` events of `stream` from version `from_version` (1 = the first event).
    pub fn read_stream(
        &self,
        stream: StreamId,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, EngineError> {
        let shared = &self.shared;
        let index = shared.cf(CF_STREAMID_VERSION_POSITION)?;
        let prefix = stream.key_prefix();
        let mut positions = Vec::new();
        let mut iter = shared.db.raw_iterator_cf(index);
        iter.seek(schema::stream_index_key(stream, from_version.max(StreamVersion(1))));
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(&prefix) || positions.len() >= limit {
                break;
            }
            let position = schema::parse_u64(value).map(Position).ok_or_else(|| EngineError::Corrupt {
                what: format!("stream index entry of {stream}"),
                expected: "an 8-byte position".into(),
                found: format!("{} bytes", value.len()),
            })?;
            if position > shared.durable_position() {
                break;
            }
            positions.push(position);
            iter.next();
        }
        iter.status().map_err(EngineError::storage("reading the stream index"))?;
        positions.into_iter().map(|position| read_one(shared, position)).collect()
    }

    /// Every entry of the served projection slot, copied into memory (for verification:
    /// compare with a fold of the log into a fresh [`MemStore`]).
    pub fn projection_contents(&self) -> Result<MemStore, EngineError> {
        copy_projections(&self.shared.db, self.shared.slot)
    }

    /// The newest durable position, as a `watch` that changes after every commit.
    pub fn watch_position(&self) -> watch::Receiver<Position> {
        self.position_rx.clone()
    }

    /// Every batch committed from now on. A subscriber that falls more than
    /// `tail_buffer_max` batches behind gets `Lagged` and should catch up with `read_all`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.events_tx.subscribe()
    }
}

/// How long dropping the log waits for a background task (the update fan-out) to let go of
/// the database, so that the directory is free when the drop returns.
pub const CLOSE_WAIT_MAX_MS: u64 = 5_000;

impl Drop for EventLog {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.submit.take(); // the writer drains the queue, then stops
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the log writer thread panicked");
        }
        // Background tasks hold the database only while working on one event and check
        // `closing` before the next, so this wait is short; without it the directory lock
        // could outlive the last handle and an immediate reopen fail with DirectoryInUse.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(CLOSE_WAIT_MAX_MS);
        while Arc::strong_count(&self.shared) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if Arc::strong_count(&self.shared) > 1 {
            tracing::warn!(wait_ms = CLOSE_WAIT_MAX_MS, "a background task still holds the database; it closes when that task ends");
        }
    }
}

fn read_one(shared: &LogShared, position: Position) -> Result<EventEnvelope, EngineError> {
    let bytes = shared
        .db
        .get_cf(shared.cf(CF_POSITION_EVENT)?, schema::event_key(position))
        .map_err(EngineError::storage("reading an event"))?
        .ok_or_else(|| EngineError::Corrupt {
            what: "event log".into(),
            expected: format!("an event at position {position}"),
            found: "nothing".into(),
        })?;
    decode_event(position, &bytes)
}

pub(crate) fn read_all(shared: &LogShared, from: Position, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
    read_events(&shared.db, from, shared.durable_position(), limit)
}

/// Up to `limit` events from `from` to `durable` (inclusive), checking that positions are
/// gapless and that every record decodes.
pub(crate) fn read_events(
    db: &DB,
    from: Position,
    durable: Position,
    limit: usize,
) -> Result<Vec<EventEnvelope>, EngineError> {
    let from = from.max(Position(1));
    let mut events = Vec::with_capacity(limit.min(4_096));
    let mut iter = db.raw_iterator_cf(column_family(db, CF_POSITION_EVENT)?);
    iter.seek(schema::event_key(from));
    let mut expected = from;
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if events.len() >= limit || expected > durable {
            break;
        }
        let position = schema::parse_u64(key).map(Position).ok_or_else(|| EngineError::Corrupt {
            what: "event key".into(),
            expected: "8 bytes".into(),
            found: format!("{} bytes", key.len()),
        })?;
        if position != expected {
            return Err(EngineError::Corrupt {
                what: "event log positions (gap)".into(),
                expected: expected.to_string(),
                found: position.to_string(),
            });
        }
        events.push(decode_event(position, value)?);
        expected = expected.next();
        iter.next();
    }
    iter.status().map_err(EngineError::storage("reading the log"))?;
    Ok(events)
}

struct Writer {
    shared: Arc<LogShared>,
    clock: Arc<dyn Clock>,
    ids: SnowflakeGenerator,
    last_position: Position,
    write_options: WriteOptions,
    failure: Option<String>,
    requests: Receiver<WriterRequest>,
    commit_batch_max: usize,
    position_tx: watch::Sender<Position>,
    events_tx: broadcast::Sender<Arc<CommittedBatch>>,
}

/// One staged request's answer, sent after the batch is durable.
type Outcome = (oneshot::Sender<Result<Appended, EngineError>>, Result<Appended, EngineError>);

impl Writer {
    fn run(mut self) {
        while let Ok(first) = self.requests.recv() {
            let mut requests = Vec::with_capacity(self.commit_batch_max);
            requests.push(first);
            while requests.len() < self.commit_batch_max {
                match self.requests.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            // A panic in a batch (a decision, the fold) must not kill the writer: requests
            // queued meanwhile would wait forever in the channel. The batch's callers see
            // `Closed` (outcome unknown); every later command gets `WriterFailed`.
            let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(requests)));
            if let Err(panic) = committed {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(%reason, "a commit panicked; the log writer refuses further writes");
                self.failure = Some(format!("a commit panicked: {reason}"));
            }
        }
    }

    fn commit(&mut self, requests: Vec<WriterRequest>) {
        if let Some(reason) = &self.failure {
            for request in requests {
                let _ = request.reply.send(Err(crate::storage_error::writer_failed(reason)));
            }
            return;
        }
        let shared = self.shared.clone();
        let base = RocksView::latest(&shared.db, shared.slot);
        let mut batch = StagedBatch {
            shared: &shared,
            overlay: Overlay::new(&base),
            write_batch: WriteBatch::default(),
            next_position: self.last_position.next(),
            stream_versions: HashMap::new(),
            idempotency: HashMap::new(),
            committed: Vec::new(),
        };
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(requests.len());
        for request in requests {
            let now_ms = self.clock.now_ms();
            let mut context = DecideContext { state: &batch.overlay, now_ms, ids: &mut self.ids };
            let outcome = (request.decide)(&mut context).and_then(|proposal| batch.stage(proposal, now_ms));
            outcomes.push((request.reply, outcome));
        }
        let last_position = Position(batch.next_position.get() - 1);
        let committed = std::mem::take(&mut batch.committed);
        let written = if committed.is_empty() {
            Ok(())
        } else {
            let injected = || -> Result<(), EngineError> {
                fail::fail_point!("commit::before_write", |payload| Err(crate::storage_error::injected(&self.shared.path, "commit::before_write", payload)));
                Ok(())
            };
            injected().and_then(|()| batch.write(last_position, self.ids.last_id(), &self.write_options))
        };
        match written {
            Ok(()) => {
                fail::fail_point!("commit::after_write");
                self.last_position = last_position;
                self.shared.durable_position.store(last_position.get(), Ordering::Release);
                for (reply, outcome) in outcomes {
                    let _ = reply.send(outcome); // the caller may have gone away; the events stay committed
                }
                fail::fail_point!("commit::after_ack");
                if !committed.is_empty() {
                    self.position_tx.send_replace(last_position);
                    let _ = self.events_tx.send(Arc::new(CommittedBatch { events: committed }));
                }
            }
            Err(err) => {
                let reason = err.to_string();
                tracing::error!(%reason, "commit failed; the log writer refuses further writes");
                self.failure = Some(reason.clone());
                for (reply, outcome) in outcomes {
                    let answer = match outcome {
                        Ok(_) => Err(crate::storage_error::writer_failed(&reason)),
                        refused => refused,
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

struct StagedBatch<'a> {
    shared: &'a LogShared,
    overlay: Overlay<'a, RocksView<'a>>,
    write_batch: WriteBatch,
    next_position: Position,
    stream_versions: HashMap<StreamId, StreamVersion>,
    idempotency: HashMap<Vec<u8>, (Position, u32)>,
    committed: Vec<EventEnvelope>,
}

impl StagedBatch<'_> {
    fn stream_version(&self, stream: StreamId) -> Result<StreamVersion, EngineError> {
        if let Some(version) = self.stream_versions.get(&stream) {
            return Ok(*version);
        }
        let index = self.shared.cf(CF_STREAMID_VERSION_POSITION)?;
        let prefix = stream.key_prefix();
        let mut iter = self.shared.db.raw_iterator_cf(index);
        iter.seek_for_prev(schema::stream_index_key(stream, StreamVersion(u64::MAX)));
        iter.status().map_err(EngineError::storage("reading a stream version"))?;
        Ok(match iter.key() {
            Some(key) if key.starts_with(&prefix) => {
                StreamVersion(schema::parse_u64(&key[9..]).ok_or_else(|| EngineError::Corrupt {
                    what: format!("stream index key of {stream}"),
                    expected: "17 bytes".into(),
                    found: format!("{} bytes", key.len()),
                })?)
            }
            _ => StreamVersion::EMPTY,
        })
    }

    fn earlier_append(&self, key: &[u8]) -> Result<Option<(Position, u32)>, EngineError> {
        if let Some(found) = self.idempotency.get(key) {
            return Ok(Some(*found));
        }
        let stored = self
            .shared
            .db
            .get_cf(self.shared.cf(CF_IDEMKEY_POSITION)?, key)
            .map_err(EngineError::storage("reading an idempotency key"))?;
        stored
            .map(|value| {
                schema::parse_idempotency_value(&value).ok_or_else(|| EngineError::Corrupt {
                    what: "idempotency entry".into(),
                    expected: "12 bytes".into(),
                    found: format!("{} bytes", value.len()),
                })
            })
            .transpose()
    }

    /// Validates a proposal against the log, folds its events into the overlay and stages
    /// the log writes. On error nothing of the proposal is staged.
    fn stage(&mut self, proposal: Proposal, now_ms: u64) -> Result<Appended, EngineError> {
        if proposal.events.is_empty() || proposal.events.len() > APPEND_EVENTS_MAX {
            return Err(EngineError::invalid("events", format!("1 to {APPEND_EVENTS_MAX} events per append")));
        }
        if let Some(key) = &proposal.idempotency_key {
            if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES {
                return Err(EngineError::invalid("idempotency_key", format!("1 to {IDEMPOTENCY_KEY_MAX_BYTES} bytes")));
            }
            if let Some((first, count)) = self.earlier_append(key)? {
                return Ok(Appended { events: self.read_earlier(first, count)?, deduplicated: true });
            }
        }
        let found = self.stream_version(proposal.stream)?;
        if !proposal.expected_version.admits(found) {
            return Err(EngineError::Conflict { stream: proposal.stream, expected: proposal.expected_version, found });
        }
        let stream_ref = StreamRef {
            stream: Some(match proposal.stream {
                StreamId::Chat(chat) => Stream::ChatId(chat.get()),
                StreamId::User(user) => Stream::UserId(user.get()),
            }),
        };
        let first_position = self.next_position;
        let envelopes: Vec<EventEnvelope> = proposal
            .events
            .into_iter()
            .enumerate()
            .map(|(offset, event)| EventEnvelope {
                position: first_position.get() + offset as u64,
                stream: Some(stream_ref),
                stream_version: found.get() + 1 + offset as u64,
                recorded_at_ms: now_ms,
                actor_id: proposal.actor.get(),
                event: Some(event),
            })
            .collect();
        let mut fold = Overlay::new(&self.overlay);
        for envelope in &envelopes {
            osmium_projections::apply(&mut fold, envelope)?;
        }
        let folded = fold.into_pending();
        self.overlay.absorb(folded);

        let events_cf = self.shared.cf(CF_POSITION_EVENT)?;
        let index_cf = self.shared.cf(CF_STREAMID_VERSION_POSITION)?;
        for envelope in &envelopes {
            let position = Position(envelope.position);
            self.write_batch.put_cf(events_cf, schema::event_key(position), envelope.encode_to_vec());
            let version = StreamVersion(envelope.stream_version);
            self.write_batch.put_cf(index_cf, schema::stream_index_key(proposal.stream, version), position.to_be_bytes());
        }
        let count = envelopes.len() as u32;
        if let Some(key) = proposal.idempotency_key {
            let value = schema::idempotency_value(first_position, count);
            self.write_batch.put_cf(self.shared.cf(CF_IDEMKEY_POSITION)?, &key, value);
            self.idempotency.insert(key, (first_position, count));
        }
        self.stream_versions.insert(proposal.stream, StreamVersion(found.get() + u64::from(count)));
        self.next_position = Position(first_position.get() + u64::from(count));
        self.committed.extend(envelopes.iter().cloned());
        Ok(Appended { events: envelopes, deduplicated: false })
    }

    /// The events of an earlier append, from this batch or from the log.
    fn read_earlier(&self, first: Position, count: u32) -> Result<Vec<EventEnvelope>, EngineError> {
        let in_batch: Vec<EventEnvelope> = self
            .committed
            .iter()
            .filter(|event| event.position >= first.get() && event.position < first.get() + u64::from(count))
            .cloned()
            .collect();
        if !in_batch.is_empty() {
            return Ok(in_batch);
        }
        read_all(self.shared, first, count as usize)
    }

    fn write(mut self, last_position: Position, snowflake_floor: u64, write_options: &WriteOptions) -> Result<(), EngineError> {
        for (table, key, value) in self.overlay.pending().iter() {
            let cf = self.shared.cf(self.shared.slot.column_family(table))?;
            match value {
                Some(value) => self.write_batch.put_cf(cf, key, value),
                None => self.write_batch.delete_cf(cf, key),
            }
        }
        let meta = self.shared.cf(CF_META)?;
        self.write_batch.put_cf(meta, schema::META_LAST_POSITION, last_position.to_be_bytes());
        self.write_batch.put_cf(meta, schema::META_SNOWFLAKE_FLOOR, snowflake_floor.to_be_bytes());
        self.shared.db.write_opt(self.write_batch, write_options).map_err(EngineError::storage("committing a batch"))
    }
}
