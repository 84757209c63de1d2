//! The running engine: opens a data directory, catches the projections up with the log,
//! starts the three threads (state machine, log writer, flusher) and stops them in order.
//!
//! Opening: the directory (lock, format), the projection slot's schema version and
//! checkpoint (never ahead of the log), then every event after the checkpoint is folded
//! and flushed before anything is served, so that a crash between two flushes loses
//! nothing (the log has it) and costs at most `flush_events_max` events of folding.
//!
//! Closing: the command channel closes, the state machine decides what is queued and
//! makes a last cut, the writer writes what is queued, the flusher flushes what is queued,
//! and only then the database closes: a clean shutdown leaves nothing to fold at the next
//! open.

use crate::clock::SnowflakeGenerator;
use crate::directory::{self, DataDir};
use crate::error::{EngineError, OpenError};
use crate::log::{LogConfig, LogReader, LogWriter, Sequencer, read_events};
use crate::persist::{self, FlushState, Flusher};
use crate::schema;
use crate::state_machine::{Command, EffectBatch, FlushPolicy, LiveState, Request, StateMachine};
use crate::view::{RocksSource, RocksView, Views};
use crossbeam_channel::{Sender, TrySendError};
use osmium_projections::limits::PROJECTION_SCHEMA_VERSION;
use osmium_projections::{ProjectionState, Table, keys, records};
use osmium_proto::ids::Position;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc;

/// How the projections are kept: when they are flushed, and how much memory the state
/// machine's records may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// A flush at least this often while events come in, in milliseconds.
    pub flush_interval_ms: u64,
    /// A flush at least every this many events (also the most a crash makes the next
    /// open fold again).
    pub flush_events_max: u64,
    /// Memory for the state machine's records, in bytes: past it, the least recently used
    /// flushed records are evicted (records changed since the last flush are kept until it
    /// lands; reaching the budget with them forces a flush).
    pub state_bytes_max: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { flush_interval_ms: 1_000, flush_events_max: 20_000, state_bytes_max: 256 * 1024 * 1024 }
    }
}

/// Events read per step while catching up at open.
const RECOVERY_READ_EVENTS: usize = 10_000;

/// How long closing waits for background tasks to let go of the database, so that the
/// directory is free when the last engine handle is dropped.
pub const CLOSE_WAIT_MAX_MS: u64 = 5_000;

/// The running parts of one open engine.
pub(crate) struct Core {
    commands: Option<Sender<Request>>,
    state_machine: Option<JoinHandle<()>>,
    writer: Option<Arc<LogWriter>>,
    flusher: Option<Arc<Flusher>>,
    pub(crate) views: Arc<Views>,
    pub(crate) reader: LogReader,
    flush_state: Arc<FlushState>,
    failure: Arc<Mutex<Option<String>>>,
    commit_queue_max: usize,
    /// Replicated mode: what the node's tasks share with the engine.
    pub(crate) replica: Option<Arc<crate::replica::Link>>,
    // Declared last: dropped after every other part let go of the database.
    dir: ClosingDir,
}

/// The open directory, closed only once no background task holds its database: dropping
/// it waits (bounded by [`CLOSE_WAIT_MAX_MS`]) so that the directory is free when the last
/// engine handle's drop returns.
#[derive(Debug)]
struct ClosingDir(DataDir);

impl std::ops::Deref for ClosingDir {
    type Target = DataDir;

    fn deref(&self) -> &DataDir {
        &self.0
    }
}

impl Drop for ClosingDir {
    fn drop(&mut self) {
        let deadline = Instant::now() + std::time::Duration::from_millis(CLOSE_WAIT_MAX_MS);
        while Arc::strong_count(&self.0.db) > 1 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if Arc::strong_count(&self.0.db) > 1 {
            tracing::warn!(wait_ms = CLOSE_WAIT_MAX_MS, "a background task still holds the database; it closes when that task ends");
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("dir", &self.dir).field("views", &self.views).finish_non_exhaustive()
    }
}

/// What `Core::open` hands to the update fan-out.
pub(crate) type Effects = mpsc::UnboundedReceiver<EffectBatch>;

impl Core {
    /// Opens the directory, catches up, starts the threads.
    /// `replica_retries`: replicated mode, with at most that many decisions again after
    /// conflicts (`None`: the embedded log).
    pub(crate) fn open(
        path: &Path,
        log: &LogConfig,
        state_config: &StateConfig,
        replica_retries: Option<u32>,
    ) -> Result<(Core, Effects), OpenError> {
        if state_config.flush_events_max == 0 || state_config.flush_interval_ms == 0 {
            return Err(OpenError::InvalidConfig {
                setting: "state.flush_events_max / state.flush_interval_ms",
                reason: "must be at least 1".into(),
            });
        }
        if log.idempotency_window_ms == 0 || log.idempotency_window_ms > crate::directory::IDEMPOTENCY_KEYS_KEPT_MS {
            return Err(OpenError::InvalidConfig {
                setting: "log.idempotency_window_ms",
                reason: format!(
                    "must be between 1 and {} (keys are kept on disk for 7 days), got {}",
                    crate::directory::IDEMPOTENCY_KEYS_KEPT_MS,
                    log.idempotency_window_ms
                ),
            });
        }
        let dir = DataDir::open(path)?;
        let (state, recovered) = recover(&dir, state_config)?;
        if recovered > 0 {
            tracing::info!(events = recovered, "folded the log's tail into the projections at open");
        }
        let reader = LogReader::new(dir.db.clone(), dir.last_position, log.tail_buffer_max);
        let active = Arc::new(osmium_projections::Layer::new());
        let views = Arc::new(Views::new(dir.db.clone(), dir.slot, state.cuts(), dir.last_position, active.clone()));
        let flush_state = Arc::new(FlushState::default());
        flush_state.landed.store(state.cuts(), std::sync::atomic::Ordering::Release);
        flush_state.landed_watch.send_replace(state.cuts());
        let meters = flush_state.meters.clone();
        let writer = Arc::new(LogWriter::start(
            dir.db.clone(),
            dir.path.clone(),
            log.durability,
            reader.published().clone(),
            log.writer_queue_max,
            meters.clone(),
        )?);
        let flusher = Arc::new(Flusher::start(dir.db.clone(), dir.path.clone(), dir.slot, views.clone(), flush_state.clone())?);
        let mut ids = SnowflakeGenerator::new(log.clock.clone(), log.snowflake_worker);
        let floor = directory::read_meta(&dir.db, schema::META_SNOWFLAKE_FLOOR)?;
        ids.advance_past(floor.as_deref().and_then(schema::parse_u64).unwrap_or(0));
        let (effects_tx, effects_rx) = mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        let (commands, queue) = crossbeam_channel::bounded(log.commit_queue_max.max(1));
        let (replica, link) = match replica_retries {
            None => (None, None),
            Some(retries) => {
                let (replica, link) = crate::replica::open(dir.db.clone(), &views, commands.clone(), retries)?;
                (Some(replica), Some(link))
            }
        };
        let machine = StateMachine {
            state,
            sequencer: Sequencer::new(dir.db.clone(), dir.last_position, reader.published().durable.clone()),
            ids,
            clock: log.clock.clone(),
            writer: writer.clone(),
            flusher: flusher.clone(),
            flush_state: flush_state.clone(),
            views: views.clone(),
            effects: effects_tx,
            policy: FlushPolicy { interval_ms: state_config.flush_interval_ms, events_max: state_config.flush_events_max },
            batch_max: log.commit_batch_max,
            submit_when_writer_idle: log.durability == crate::log::Durability::Sync,
            command_ns: 0,
            idempotency_window_ms: log.idempotency_window_ms,
            failure: failure.clone(),
            meters,
            active,
            batch_seq: 0,
            replica,
        };
        let state_machine = std::thread::Builder::new()
            .name("osmium-state".into())
            .spawn(move || machine.run(queue))
            .map_err(OpenError::io(path))?;
        let core = Core {
            commands: Some(commands),
            state_machine: Some(state_machine),
            writer: Some(writer),
            flusher: Some(flusher),
            views,
            reader,
            flush_state,
            failure,
            commit_queue_max: log.commit_queue_max,
            replica: link,
            dir: ClosingDir(dir),
        };
        Ok((core, effects_rx))
    }

    /// Queues a command for the state machine.
    pub(crate) fn submit(&self, command: Command) -> Result<(), EngineError> {
        self.request(Request::Command(command))
    }

    fn request(&self, request: Request) -> Result<(), EngineError> {
        let commands = self.commands.as_ref().ok_or(EngineError::Closed)?;
        commands.try_send(request).map_err(|err| match err {
            TrySendError::Full(_) => EngineError::Overloaded { queue_max: self.commit_queue_max },
            TrySendError::Disconnected(_) => EngineError::Closed,
        })
    }

    /// Cuts the state and waits until that flush landed: then the flushed projections
    /// hold everything acknowledged before the call.
    pub(crate) async fn flush(&self) -> Result<u64, EngineError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let mut landed = self.flush_state.landed_watch.subscribe();
        self.request(Request::Flush(reply))?;
        let number = answer.await.map_err(|_| self.failed())?;
        loop {
            if *landed.borrow_and_update() >= number {
                return Ok(number);
            }
            if self.failure().is_some() {
                return Err(self.failed());
            }
            landed.changed().await.map_err(|_| EngineError::Closed)?;
        }
    }

    fn failed(&self) -> EngineError {
        self.failure().map_or(EngineError::Closed, |reason| EngineError::WriterFailed { reason })
    }

    /// The data directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Why the engine refuses writes, if it does.
    pub(crate) fn failure(&self) -> Option<String> {
        let own = self.failure.lock().ok().and_then(|failure| failure.clone());
        own.or_else(|| self.flush_state.failure.lock().ok().and_then(|failure| failure.clone()))
    }

    /// Busy times and counts of the engine's threads.
    pub(crate) fn meters(&self) -> crate::meters::MeterReadings {
        self.flush_state.meters.read()
    }

    /// RocksDB's memory now.
    pub(crate) fn rocksdb_memory(&self) -> crate::directory::RocksMemory {
        self.dir.rocksdb_memory()
    }

    /// The catch-up floor (see [`crate::retention`]).
    pub(crate) fn catch_up_floor(&self) -> u64 {
        self.dir.catch_up_floor.load(std::sync::atomic::Ordering::Acquire)
    }

    /// What a catch-up trim needs, owned (see [`crate::retention::Trimmer`]).
    pub(crate) fn trimmer(&self) -> crate::retention::Trimmer {
        crate::retention::Trimmer {
            db: self.dir.db.clone(),
            slot: self.dir.slot,
            reader: self.reader.clone(),
            floor: self.dir.catch_up_floor.clone(),
        }
    }

    /// The number of the last flush that landed.
    pub(crate) fn flushes_landed(&self) -> u64 {
        self.flush_state.landed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(link) = &self.replica {
            link.close(); // the node's tasks let go of the queue
        }
        self.commands.take(); // the state machine decides what is queued, cuts, and stops
        if let Some(thread) = self.state_machine.take()
            && thread.join().is_err()
        {
            tracing::error!("the state machine thread panicked");
        }
        drop(self.writer.take()); // writes what is queued (and runs its completions)
        drop(self.flusher.take()); // flushes what is queued
        // The remaining fields drop in order; `dir` last waits for background tasks.
    }
}

/// Checks the served projections and folds the log's events after their checkpoint into
/// a fresh state, flushing them. Returns the state and the number of events folded.
fn recover(dir: &DataDir, config: &StateConfig) -> Result<(LiveState, u64), OpenError> {
    let view = RocksView::latest(&dir.db, dir.slot);
    match records::load_schema_version(&view)? {
        Some(found) if found != PROJECTION_SCHEMA_VERSION => {
            return Err(OpenError::ProjectionSchemaMismatch { found, expected: PROJECTION_SCHEMA_VERSION });
        }
        Some(_) => {}
        None => {
            let schema_version =
                (Table::ProjectionMeta, keys::META_SCHEMA_VERSION.to_vec(), Some(PROJECTION_SCHEMA_VERSION.to_be_bytes().to_vec()));
            persist::flush_writes(&dir.db, dir.slot, &[schema_version])?;
        }
    }
    drop(view);
    let mut state = ProjectionState::new(RocksSource { db: dir.db.clone(), slot: dir.slot }, config.state_bytes_max);
    let checkpoint = state.load_checkpoint()?;
    if checkpoint > dir.last_position {
        return Err(OpenError::ProjectionsAhead { checkpoint, last_position: dir.last_position });
    }
    let mut from = checkpoint.next();
    let (mut folded, mut unflushed) = (0u64, 0u64);
    while from <= dir.last_position {
        let events = read_events(&dir.db, from, dir.last_position, RECOVERY_READ_EVENTS)?;
        let Some(last) = events.last() else { break };
        from = Position(last.position + 1);
        for event in &events {
            osmium_projections::apply(&mut state, event)?;
        }
        folded += events.len() as u64;
        unflushed += events.len() as u64;
        // A long catch-up (projections far behind) flushes as it goes, every
        // `flush_events_max` events like the live path: what is unflushed (records, which
        // are never evicted dirty, and catch-up index writes) stays small.
        if from > dir.last_position || state.over_budget() || unflushed >= config.flush_events_max {
            let writes = state.take_writes(true)?;
            persist::flush_writes(&dir.db, dir.slot, &writes.into_all())?;
            state.mark_persisted(state.cuts());
            state.evict();
            unflushed = 0;
        }
    }
    Ok((state, folded))
}
