//! Offline work on a data directory, for the replay CLI: rebuilding the projections from
//! the log, verifying them against an independent fold, checking the log's integrity,
//! and statistics.
//!
//! Rebuild needs the directory to itself (it takes the engine's lock); the other
//! operations open the database read-only and work while an engine runs.

use crate::directory::{DataDir, column_family, db_options};
use crate::error::{EngineError, OpenError};
use crate::log::{decode_event, read_events};
use crate::persist;
use crate::schema::{self, CF_META, CF_POSITION_EVENT, CF_STREAMID_VERSION_POSITION, ProjectionSlot};
use crate::view::{RocksSource, RocksView};
use osmium_projections::{MemStore, ProjectionState, Store, StoreRead, Table, keys, records};
use osmium_proto::events::EventEnvelope;
use osmium_proto::ids::{Position, StreamVersion};
use rocksdb::{WriteBatch, WriteOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Events folded between two writes of the rebuilt slot, by default (each write is a
/// batch of ingested table files with its checkpoint, redoable after a crash: where an
/// interrupted rebuild resumes; see `ingest.rs`).
pub const REBUILD_BATCH_EVENTS: usize = 200_000;
/// Events read per step.
const READ_EVENTS: usize = 10_000;
/// Memory for the records a rebuild holds (clean ones are evicted past it), in bytes: the
/// engine's default budget.
pub const REBUILD_STATE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// A data directory opened for maintenance.
#[derive(Debug)]
pub struct DataDirectory {
    dir: DataDir,
}

/// Progress of long work: `(done, total)` in events.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// How to rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildOptions {
    /// Events folded and written per batch.
    pub batch_events: usize,
    /// Resume an interrupted rebuild at this position: the unused slot must hold the fold
    /// up to the position before it. `None` (or 1) starts over.
    pub from: Option<Position>,
    /// Replace only this table; the others keep their served contents.
    pub only: Option<Table>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions { batch_events: REBUILD_BATCH_EVENTS, from: None, only: None }
    }
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events folded by this run (a resumed rebuild counts only the events after its start).
    pub events: u64,
    /// The slot now served.
    pub slot: ProjectionSlot,
}

/// One difference between the served projections and a fresh fold of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionDifference {
    /// The table.
    pub table: Table,
    /// The key, described (`chat 12 user 5`).
    pub key: String,
    /// The record field that differs (`read_seq`), or `record` when one side is absent
    /// or does not decode.
    pub field: String,
    /// What a fold of the log gives.
    pub expected: String,
    /// What the served projections hold.
    pub found: String,
}

/// A problem `check` found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityProblem {
    /// Where (a position, a stream index entry, the checkpoint).
    pub location: String,
    /// What is wrong.
    pub problem: String,
}

/// Figures about a data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Events by kind.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// First and last position (0 when empty).
    pub first_position: u64,
    /// Last position.
    pub last_position: u64,
    /// Records per projection table.
    pub records_by_table: BTreeMap<&'static str, u64>,
    /// Approximate bytes on disk per column family (SST files plus memtables).
    pub bytes_by_column_family: BTreeMap<String, u64>,
}

fn describe_key(table: Table, key: &[u8]) -> String {
    let word = |offset: usize| key.get(offset..offset + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let text = |offset: usize| key.get(offset..).map(|b| String::from_utf8_lossy(b).into_owned());
    let parts = match table {
        Table::ChatidChat => word(0).map(|chat| format!("chat {chat}")),
        Table::ChatidUseridMember => word(0).zip(word(8)).map(|(chat, user)| format!("chat {chat} user {user}")),
        Table::UseridLastmsgidChatidChatlist => {
            word(0).zip(word(8)).zip(word(16)).map(|((user, last), chat)| format!("user {user} chat {chat} last_message {last}"))
        }
        Table::UseridChatidLargechat | Table::UseridChatidChatsequence => {
            word(0).zip(word(8)).map(|(user, chat)| format!("user {user} chat {chat}"))
        }
        Table::ChatidMsgidMessage => word(0).zip(word(8)).map(|(chat, message)| format!("chat {chat} message {message}")),
        Table::ChatidSeqDeleted => word(0).zip(word(8)).map(|(chat, seq)| format!("chat {chat} deleted seq {seq}")),
        Table::UseridUseridDm => word(0).zip(word(8)).map(|(a, b)| format!("users {a} and {b}")),
        Table::CodeInvite => text(0).map(|code| format!("invite {code}")),
        Table::ChatidCodeInvite => word(0).zip(text(8)).map(|(chat, code)| format!("chat {chat} invite {code}")),
        Table::UseridUser => word(0).map(|user| format!("user {user}")),
        Table::ChatidUseridSeqMention => word(0).zip(word(8)).zip(word(16)).map(|((chat, user), seq)| format!("chat {chat} user {user} mention seq {seq}")),
        Table::UsernameUserid => text(0).map(|name| format!("username {name}")),
        Table::ChatidUseridOverride => word(0).zip(word(8)).map(|(chat, user)| format!("chat {chat} user {user} (not a member)")),
        Table::UseridPositionUpdate => word(0).zip(word(8)).map(|(user, position)| format!("user {user} update at position {position}")),
        Table::ChatidPositionUpdate => word(0).zip(word(8)).map(|(chat, position)| format!("chat {chat} update at position {position}")),
        Table::PositionEffect => word(0).map(|position| format!("effects of position {position}")),
        Table::ProjectionMeta => text(0),
    };
    parts.unwrap_or_else(|| format!("key {key:02x?}"))
}

/// A stored value as JSON: the decoded record for record tables, the bytes otherwise.
fn value_as_json(table: Table, key: &[u8], value: &[u8]) -> Result<serde_json::Value, String> {
    fn json<T: serde::de::DeserializeOwned + serde::Serialize>(table: Table, key: &[u8], value: &[u8]) -> Result<serde_json::Value, String> {
        let record: T = records::decode(table, key, value).map_err(|err| err.to_string())?;
        serde_json::to_value(&record).map_err(|err| err.to_string())
    }
    match table {
        Table::ChatidChat => json::<records::ChatRecord>(table, key, value),
        Table::ChatidUseridMember => json::<records::MemberRecord>(table, key, value),
        Table::ChatidMsgidMessage => json::<records::MessageRecord>(table, key, value),
        Table::CodeInvite => json::<records::InviteRecord>(table, key, value),
        Table::UseridUser => json::<records::UserRecord>(table, key, value),
        _ => Ok(serde_json::Value::String(format!("{value:02x?}"))),
    }
}

/// The differences between two stored values of one key, field by field where both decode.
fn field_differences(table: Table, key: &[u8], expected: Option<&[u8]>, found: Option<&[u8]>) -> Vec<(String, String, String)> {
    let describe = |value: Option<&[u8]>| match value {
        None => "absent".to_owned(),
        Some(value) => value_as_json(table, key, value).map_or_else(|err| format!("undecodable ({err})"), |v| v.to_string()),
    };
    let decoded = |value: Option<&[u8]>| value.and_then(|value| value_as_json(table, key, value).ok());
    match (decoded(expected), decoded(found)) {
        (Some(serde_json::Value::Object(want)), Some(serde_json::Value::Object(have))) => want
            .iter()
            .filter(|(field, value)| have.get(*field) != Some(value))
            .map(|(field, value)| {
                let found = have.get(field).map_or_else(|| "absent".to_owned(), ToString::to_string);
                (field.clone(), value.to_string(), found)
            })
            .collect(),
        _ => vec![("record".to_owned(), describe(expected), describe(found))],
    }
}

/// Lists where `expected` and `found` differ, at most `limit` differences.
pub fn diff_projections(expected: &MemStore, found: &MemStore, limit: usize) -> Vec<ProjectionDifference> {
    let mut differences = Vec::new();
    for table in Table::ALL {
        let expected: BTreeMap<&[u8], &[u8]> = expected.entries(table).collect();
        let found: BTreeMap<&[u8], &[u8]> = found.entries(table).collect();
        let keys: std::collections::BTreeSet<&[u8]> = expected.keys().chain(found.keys()).copied().collect();
        for key in keys {
            let (want, have) = (expected.get(key).copied(), found.get(key).copied());
            if want == have {
                continue;
            }
            for (field, expected, found) in field_differences(table, key, want, have) {
                differences.push(ProjectionDifference { table, key: describe_key(table, key), field, expected, found });
                if differences.len() >= limit {
                    return differences;
                }
            }
        }
    }
    differences
}

impl DataDirectory {
    /// Opens the directory for exclusive work (rebuild). Fails with
    /// [`OpenError::DirectoryInUse`] while an engine runs on it.
    pub fn open_exclusive(path: impl AsRef<Path>) -> Result<DataDirectory, OpenError> {
        Ok(DataDirectory { dir: DataDir::open_existing(path)? })
    }

    /// Opens the directory read-only (works while an engine runs; sees the state as of now).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<DataDirectory, OpenError> {
        Ok(DataDirectory { dir: DataDir::open_read_only(path)? })
    }

    /// The newest position in the log.
    pub fn last_position(&self) -> Position {
        self.dir.last_position
    }

    /// The projection slot being served.
    pub fn slot(&self) -> ProjectionSlot {
        self.dir.slot
    }

    /// Read access to the served projections (for queries such as a user's chat list).
    pub fn with_projections<T>(&self, read: impl FnOnce(&dyn StoreRead) -> T) -> T {
        read(&RocksView::snapshot(&self.dir.db, self.dir.slot))
    }

    /// The position the served projections are folded to (an engine flushes them every
    /// `flush_interval_ms`; it folds the rest of the log when it opens).
    pub fn checkpoint(&self) -> Result<Position, EngineError> {
        Ok(self.with_projections(|view| records::load_checkpoint(view))?)
    }

    /// Up to `limit` events from `from` on.
    pub fn read_events(&self, from: Position, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
        read_events(&self.dir.db, from, self.dir.last_position, limit)
    }

    /// Visits every event from position 1 in order, `batch` at a time.
    pub fn for_each_event(
        &self,
        batch: usize,
        mut visit: impl FnMut(&EventEnvelope) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut from = Position(1);
        loop {
            let events = self.read_events(from, batch.max(1))?;
            let Some(last) = events.last() else { return Ok(()) };
            from = Position(last.position + 1);
            for event in &events {
                visit(event)?;
            }
        }
    }

    /// Every entry of a projection slot, in memory.
    pub fn projection_contents(&self, slot: ProjectionSlot) -> Result<MemStore, EngineError> {
        let snapshot = RocksView::snapshot(&self.dir.db, slot);
        let mut contents = MemStore::new();
        for table in Table::ALL {
            snapshot.scan(table, osmium_projections::ScanRange::prefix(&[]), &mut |key, value| {
                contents.put(table, key.to_vec(), value.to_vec());
                std::ops::ControlFlow::Continue(())
            })?;
        }
        Ok(contents)
    }

    /// Folds the log up to `up_to` into memory, independently of the stored projections.
    pub fn fold_in_memory(&self, up_to: Position, progress: Progress<'_>) -> Result<MemStore, EngineError> {
        let mut state = ProjectionState::in_memory();
        let mut from = Position(1);
        while from <= up_to {
            let events = read_events(&self.dir.db, from, up_to, READ_EVENTS)?;
            let Some(last) = events.last() else { break };
            from = Position(last.position + 1);
            for event in &events {
                osmium_projections::apply(&mut state, event)?;
            }
            progress(last.position, up_to.get());
        }
        Ok(state.to_memstore()?)
    }

    /// Compares the served projections with a fresh fold of the log up to their
    /// checkpoint; at most `limit` differences. Returns the checkpoint verified too.
    pub fn verify(&self, limit: usize, progress: Progress<'_>) -> Result<(Position, Vec<ProjectionDifference>), EngineError> {
        let found = self.projection_contents(self.dir.slot)?;
        let checkpoint = records::load_checkpoint(&found)?;
        if checkpoint > self.dir.last_position {
            return Err(EngineError::Corrupt {
                what: "projection checkpoint".into(),
                expected: format!("at most the log's last position {}", self.dir.last_position),
                found: checkpoint.to_string(),
            });
        }
        let mut expected = self.fold_in_memory(checkpoint, progress)?;
        // The catch-up index below the floor is trimmed on purpose (or about to be).
        let floor = self.dir.catch_up_floor.load(std::sync::atomic::Ordering::Acquire);
        let mut found = found;
        crate::retention::without_trimmed(&mut expected, floor);
        crate::retention::without_trimmed(&mut found, floor);
        Ok((checkpoint, diff_projections(&expected, &found, limit)))
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, EngineError> {
        column_family(&self.dir.db, name)
    }

    /// The database, to create or drop column families (nothing else may hold it then).
    fn db_mut(&mut self) -> Result<&mut rocksdb::DB, EngineError> {
        std::sync::Arc::get_mut(&mut self.dir.db).ok_or_else(|| EngineError::Corrupt {
            what: "maintenance".into(),
            expected: "the database held by this rebuild alone while it changes column families".into(),
            found: "another holder".into(),
        })
    }

    /// Rebuilds every projection from the log into the slot not being served, in batches
    /// of `batch_events` (see [`REBUILD_BATCH_EVENTS`]), then serves it by flipping `meta.projection_slot` in one
    /// synced write. Until that write, the old projections stay served and untouched, so an
    /// interrupted rebuild (Ctrl-C, kill -9, disk full) changes nothing; running it again
    /// starts over.
    ///
    /// With `options.from` it resumes an interrupted rebuild instead of starting over; with
    /// `options.only` it replaces one table and carries the others over as served.
    pub fn rebuild(&mut self, options: RebuildOptions, progress: Progress<'_>) -> Result<RebuildReport, EngineError> {
        if self.dir.lock.is_none() {
            return Err(EngineError::PermissionDenied { reason: "rebuild needs the directory opened exclusively".into() });
        }
        let target = self.dir.slot.other();
        let last_position = self.dir.last_position;
        let mut from = options.from.unwrap_or(Position(1)).max(Position(1));
        if from == Position(1) {
            self.reset_slot(target)?;
            crate::ingest::remove_ingest_dir(self.dir.db.path())?;
        } else {
            // A batch the previous rebuild died ingesting is finished first (or refused).
            crate::ingest::finish_interrupted(&self.dir.db, target)?;
            let shadow = RocksView::latest(&self.dir.db, target);
            let reached = records::load_checkpoint(&shadow)?;
            let schema = records::load_schema_version(&shadow)?;
            let resumable = schema == Some(osmium_projections::limits::PROJECTION_SCHEMA_VERSION);
            // `from` one past the log's end resumes a rebuild that folded all of it but died
            // before its switch: nothing is left to fold, the switch remains.
            if !resumable || reached.next() != from || from > last_position.next() {
                return Err(EngineError::InvalidArgument {
                    field: "from",
                    reason: format!(
                        "the unused projection slot holds the fold up to position {reached}; resume with --from {} \
                         (the log ends at {last_position}), or omit --from to start over",
                        reached.next(),
                    ),
                });
            }
        }
        let resumed_at = from.get() - 1;
        let source = RocksSource { db: self.dir.db.clone(), slot: target };
        let mut state = ProjectionState::new(source, REBUILD_STATE_BYTES_MAX);
        state.load_checkpoint()?;
        let batch_events = options.batch_events.max(1) as u64;
        let (mut folded, mut unwritten) = (0u64, 0u64);
        let reader = EventReader::start(self.dir.db.clone(), from, last_position);
        // Batches are written on a thread of their own while the next one folds; at most
        // one waits. A batch's records count as written (evictable) once it landed, and
        // progress reports the events of the batches landed (what a resume keeps).
        let (landed, landed_events) = (AtomicU64::new(0), AtomicU64::new(0));
        let (batches, to_write) = crossbeam_channel::bounded::<(u64, u64, Vec<osmium_projections::KvWrite>)>(1);
        let db = &self.dir.db;
        std::thread::scope(|scope| -> Result<(), EngineError> {
            let writer = std::thread::Builder::new().name("osmium-rebuild-write".into()).spawn_scoped(scope, || -> Result<(), EngineError> {
                for (cut, events, writes) in to_write {
                    crate::ingest::ingest_writes(db, target, writes)?;
                    landed_events.store(events, Ordering::Release);
                    landed.store(cut, Ordering::Release);
                }
                Ok(())
            }).map_err(|source| EngineError::Io { path: db.path().to_path_buf(), source })?;
            let mut reported = 0;
            let folding = (|| -> Result<(), EngineError> {
                for events in reader.batches() {
                    let events = events?;
                    for event in &events {
                        osmium_projections::apply(&mut state, event)?;
                    }
                    folded += events.len() as u64;
                    unwritten += events.len() as u64;
                    from = Position(resumed_at + folded + 1);
                    if unwritten >= batch_events || from > last_position || state.over_budget() {
                        let writes = state.take_writes(true)?;
                        if batches.send((state.cuts(), folded, writes.into_all())).is_err() {
                            return Ok(()); // the writer stopped: its error is reported below
                        }
                        state.mark_persisted(landed.load(Ordering::Acquire));
                        state.evict();
                        unwritten = 0;
                        let written = landed_events.load(Ordering::Acquire);
                        if written > reported {
                            reported = written;
                            progress(resumed_at + written, last_position.get());
                        }
                    }
                }
                Ok(())
            })();
            drop(batches);
            let written = writer.join().unwrap_or_else(|_| {
                Err(EngineError::Io { path: db.path().to_path_buf(), source: std::io::Error::other("the rebuild's writer thread panicked") })
            });
            folding.and(written)
        })?;
        drop(reader);
        drop(state);
        if let Some(only) = options.only {
            self.carry_over_all_but(only, target)?;
        }
        fail::fail_point!("rebuild::before_switch", |_| Err(EngineError::Io {
            path: self.dir.path.clone(),
            source: std::io::Error::other("injected at rebuild::before_switch"),
        }));
        let mut flip = WriteBatch::default();
        flip.put_cf(self.cf(CF_META)?, schema::META_PROJECTION_SLOT, [target.tag()]);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.dir.db.flush_wal(true).map_err(EngineError::storage("syncing rebuilt projections"))?;
        self.dir.db.write_opt(flip, &sync).map_err(EngineError::storage("switching to the rebuilt projections"))?;
        let previous = self.dir.slot;
        self.dir.slot = target;
        self.reset_slot(previous)?; // reclaims the old projections' space
        progress(last_position.get(), last_position.get());
        Ok(RebuildReport { events: folded, slot: target })
    }

    /// Replaces every table of `target` but `kept` (and the checkpoint) with the served one.
    fn carry_over_all_but(&mut self, kept: Table, target: ProjectionSlot) -> Result<(), EngineError> {
        for table in Table::ALL.into_iter().filter(|&table| table != kept && table != Table::ProjectionMeta) {
            let name = target.column_family(table);
            let db = self.db_mut()?;
            db.drop_cf(name).map_err(EngineError::storage("dropping a rebuilt table"))?;
            db.create_cf(name, &db_options()).map_err(EngineError::storage("creating a projection table"))?;
            let db = &self.dir.db;
            let mut iter = db.raw_iterator_cf(self.cf(self.dir.slot.column_family(table))?);
            iter.seek_to_first();
            let mut batch = WriteBatch::default();
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                batch.put_cf(self.cf(name)?, key, value);
                if batch.len() >= READ_EVENTS {
                    db.write(std::mem::take(&mut batch)).map_err(EngineError::storage("copying a table"))?;
                }
                iter.next();
            }
            iter.status().map_err(EngineError::storage("reading a served table"))?;
            db.write(batch).map_err(EngineError::storage("copying a table"))?;
        }
        Ok(())
    }

    /// Drops and recreates the column families of `slot` (never the served one).
    fn reset_slot(&mut self, slot: ProjectionSlot) -> Result<(), EngineError> {
        assert_ne!(slot, self.dir.slot, "the served projection slot is never reset");
        // The checkpoint goes first: a reset killed half-way must not leave a checkpoint
        // beside emptied tables, which `--from` would resume from (found by rebuild_kill9).
        let meta_first = std::iter::once(Table::ProjectionMeta).chain(Table::ALL.into_iter().filter(|&t| t != Table::ProjectionMeta));
        for table in meta_first {
            let name = slot.column_family(table);
            let db = self.db_mut()?;
            if db.cf_handle(name).is_some() {
                db.drop_cf(name).map_err(EngineError::storage("dropping a stale projection slot"))?;
            }
            db.create_cf(name, &db_options()).map_err(EngineError::storage("creating a projection slot"))?;
            fail::fail_point!("rebuild::after_table_reset", |_| Err(EngineError::Io {
                path: self.dir.path.clone(),
                source: std::io::Error::other("injected at rebuild::after_table_reset"),
            }));
        }
        let version = osmium_projections::limits::PROJECTION_SCHEMA_VERSION.to_be_bytes().to_vec();
        persist::flush_writes(&self.dir.db, slot, &[(Table::ProjectionMeta, keys::META_SCHEMA_VERSION.to_vec(), Some(version))])
    }

    /// Checks the log: positions gapless from 1, every record decodes and sits under its
    /// own position, the per-stream index agrees with the log, and the checkpoint is not
    /// ahead of the log; then every file is read back with its checksums verified
    /// ([`DataDirectory::read_every_file`]). Returns at most `limit` problems.
    pub fn check(&self, limit: usize, progress: Progress<'_>) -> Result<Vec<IntegrityProblem>, EngineError> {
        let mut problems = Vec::new();
        let mut report = |location: String, problem: String| {
            if problems.len() < limit {
                problems.push(IntegrityProblem { location, problem });
            }
        };
        let events = self.cf(CF_POSITION_EVENT)?;
        let index = self.cf(CF_STREAMID_VERSION_POSITION)?;
        let mut expected = 1u64;
        let mut iter = self.dir.db.raw_iterator_cf(events);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            match schema::parse_u64(key) {
                None => report(format!("event key {key:02x?}"), "not an 8-byte position".into()),
                Some(position) => {
                    if position != expected {
                        report(format!("position {expected}"), format!("missing: the next record is at {position}"));
                    }
                    expected = position + 1;
                    match decode_event(Position(position), value) {
                        Err(err) => report(format!("position {position}"), err.to_string()),
                        Ok(envelope) => match osmium_projections::stream_of(&envelope) {
                            Err(err) => report(format!("position {position}"), err.to_string()),
                            Ok(stream) => {
                                let index_key = schema::stream_index_key(stream, StreamVersion(envelope.stream_version));
                                let indexed = self.dir.db.get_cf(index, index_key).map_err(EngineError::storage("reading the stream index"))?;
                                if indexed.as_deref().and_then(schema::parse_u64) != Some(position) {
                                    report(
                                        format!("{stream} version {}", envelope.stream_version),
                                        format!("stream index points at {indexed:?} instead of position {position}"),
                                    );
                                }
                            }
                        },
                    }
                    if position % REBUILD_BATCH_EVENTS as u64 == 0 {
                        progress(position, self.dir.last_position.get());
                    }
                }
            }
            iter.next();
        }
        iter.status().map_err(EngineError::storage("reading the log"))?;
        let logged = expected - 1;
        let mut indexed = 0u64;
        let mut index_iter = self.dir.db.raw_iterator_cf(index);
        index_iter.seek_to_first();
        while index_iter.valid() {
            indexed += 1;
            index_iter.next();
        }
        index_iter.status().map_err(EngineError::storage("reading the stream index"))?;
        if indexed != logged {
            report("stream index".into(), format!("{indexed} entries for {logged} events"));
        }
        let checkpoint = self.with_projections(|view| records::load_checkpoint(view))?;
        if checkpoint > self.dir.last_position {
            report(
                "projection checkpoint".into(),
                format!("at {checkpoint}, ahead of the log's last position {}", self.dir.last_position),
            );
        }
        self.read_every_file()?; // a damaged file anywhere is an error naming it
        progress(self.dir.last_position.get(), self.dir.last_position.get());
        Ok(problems)
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<DirectoryStats, EngineError> {
        let mut stats = DirectoryStats { last_position: self.dir.last_position.get(), ..DirectoryStats::default() };
        self.for_each_event(REBUILD_BATCH_EVENTS, |event| {
            if stats.first_position == 0 {
                stats.first_position = event.position;
            }
            if let Some(kind) = &event.event {
                *stats.events_by_kind.entry(osmium_projections::event_kind(kind)).or_default() += 1;
            }
            Ok(())
        })?;
        for table in Table::ALL {
            let mut iter = self.dir.db.raw_iterator_cf(self.cf(self.dir.slot.column_family(table))?);
            iter.seek_to_first();
            let mut count = 0u64;
            while iter.valid() {
                count += 1;
                iter.next();
            }
            stats.records_by_table.insert(table.name(), count);
        }
        for name in schema::all_column_families() {
            let cf = self.cf(name)?;
            let size = |property: &str| self.dir.db.property_int_value_cf(cf, property).ok().flatten().unwrap_or(0);
            let bytes = size("rocksdb.total-sst-files-size") + size("rocksdb.cur-size-all-mem-tables");
            stats.bytes_by_column_family.insert(name.to_owned(), bytes);
        }
        Ok(stats)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The database, for the maintenance work kept in other files (`scrub.rs`, `backup.rs`).
    pub(crate) fn database(&self) -> &rocksdb::DB {
        &self.dir.db
    }
}

/// Reads and decodes events on a thread of its own, so that a rebuild folds one chunk
/// while the next is read (2 chunks in flight at most).
struct EventReader {
    chunks: crossbeam_channel::Receiver<Result<Vec<EventEnvelope>, EngineError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventReader {
    fn start(db: std::sync::Arc<rocksdb::DB>, from: Position, to: Position) -> EventReader {
        let (sender, chunks) = crossbeam_channel::bounded(2);
        let thread = std::thread::Builder::new().name("osmium-rebuild-read".into()).spawn(move || {
            let mut from = from;
            while from <= to {
                let read = read_events(&db, from, to, READ_EVENTS);
                let next = read.as_ref().ok().and_then(|events| events.last()).map(|last| Position(last.position + 1));
                let stop = read.is_err() || next.is_none();
                if sender.send(read).is_err() || stop {
                    return;
                }
                from = next.unwrap_or(from);
            }
        });
        match thread {
            Ok(thread) => EventReader { chunks, thread: Some(thread) },
            Err(err) => {
                let (sender, chunks) = crossbeam_channel::bounded(1);
                let _ = sender.send(Err(EngineError::Io { path: "<rebuild reader thread>".into(), source: err }));
                EventReader { chunks, thread: None }
            }
        }
    }

    fn batches(&self) -> impl Iterator<Item = Result<Vec<EventEnvelope>, EngineError>> + '_ {
        self.chunks.iter().filter(|chunk| chunk.as_ref().is_ok_and(|events| !events.is_empty()) || chunk.is_err())
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        // Unblock the thread if the rebuild stopped early, then wait for it.
        while self.chunks.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let (_, replacement) = crossbeam_channel::bounded(0);
            let chunks = std::mem::replace(&mut self.chunks, replacement);
            drop(chunks);
            let _ = thread.join();
        }
    }

}
