//! The durable event log: append with an expected stream version and a durable
//! idempotency key, gapless positions, group commit, reads, and the live tail.
//!
//! It knows nothing of projections or of what events mean. Its parts:
//! - [`Sequencer`] (the one appender): positions, stream versions, idempotency, staged
//!   in a [`LogBatch`] synchronously, so that the appender can act on the events before
//!   they are durable;
//! - [`LogWriter`]: the writer thread, group commit, durability, completions in order;
//! - [`LogReader`]: reads capped at the durable position, the position watch, the tail.
//!
//! [`EventLog`] puts the three together for callers that only append (the log's own
//! contract tests, benchmarks of the log alone). The engine drives the sequencer from its
//! state machine instead, so that nothing reaches the log without a decision.
//!
//! A replicated log (NATS JetStream, issue #15) offers the same contract with the
//! positions assigned by the server: an appender publishes with the expected stream
//! version and learns the position from the acknowledgement; see ARCHITECTURE.md.
//!
//! Invariants:
//! - positions are gapless from 1, assigned only by the sequencer, written in order
//!   (asserted right before each write);
//! - an event, its stream index entry and its idempotency entry are in one `WriteBatch`;
//! - readers never see a position above the durable last position, which is published
//!   only after the batch write (and its WAL sync, in `Sync` mode) returned.

mod read;
mod sequencer;
mod writer;

pub use read::decode_event;
pub(crate) use read::read_events;
pub use sequencer::{LogBatch, Sequencer};
pub use writer::{COMMIT_NS_AVERAGED, Completion, GROUP_BATCHES_MAX, IDLE_SPIN_US, LogWriter};
pub(crate) use writer::{Published, panic_reason, recv_spinning};

pub use crate::stream::ExpectedVersion;
use crate::clock::{Clock, SystemClock};
use crate::directory::DataDir;
use crate::error::{EngineError, OpenError};
use osmium_proto::events::{EventEnvelope, event_envelope::Event};
use osmium_proto::ids::{Position, StreamId, StreamVersion, UserId};
use rocksdb::DB;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot, watch};

/// Most events in one append.
pub const APPEND_EVENTS_MAX: usize = 1_024;
/// Largest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 256;
/// How long idempotency keys are remembered by default: 24 hours (a client retries within
/// seconds or minutes; a day covers a device that was offline overnight).
pub const IDEMPOTENCY_WINDOW_MS_DEFAULT: u64 = 24 * 60 * 60 * 1_000;
/// Largest encoded event, in bytes (client-provided bytes are bounded far below it by
/// the engine's `request_bytes_max`).
pub const EVENT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Streams whose newest version the sequencer keeps in memory (past it, it forgets all
/// and reads them again from the stream index).
pub const STREAM_VERSIONS_CACHED_MAX: usize = 1_000_000;

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
    /// Commands waiting to be decided before new ones get [`EngineError::Overloaded`].
    pub commit_queue_max: usize,
    /// Commands decided together and committed in one batch at most.
    pub commit_batch_max: usize,
    /// Staged batches waiting for the writer at most (how far deciding runs ahead of the disk).
    pub writer_queue_max: usize,
    /// Committed batches kept for slow subscribers of [`LogReader::subscribe`].
    pub tail_buffer_max: usize,
    /// How long an idempotency key is remembered, in milliseconds: a retry within it gets
    /// the original result; after it the key is forgotten (and removed from disk by
    /// RocksDB's compactions) and the request runs again.
    pub idempotency_window_ms: u64,
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
            writer_queue_max: 2,
            tail_buffer_max: 4_096,
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS_DEFAULT,
            snowflake_worker: 0,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Events to append to one stream.
#[derive(Clone, Debug)]
pub struct Append {
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
    /// The fingerprint of the request, stored with the key (a retry with another
    /// fingerprint is another request reusing the key; the engine refuses it).
    pub fingerprint: Option<[u8; 16]>,
}

/// What the log knows of an earlier append with an idempotency key.
#[derive(Clone, Debug)]
pub struct Earlier {
    /// Its events.
    pub events: Vec<EventEnvelope>,
    /// When it was recorded (unix ms), when known.
    pub recorded_at_ms: Option<u64>,
    /// The request's fingerprint, when one was stored.
    pub fingerprint: Option<[u8; 16]>,
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

/// Events committed by one batch, in position order; what tail subscribers receive.
#[derive(Clone, Debug)]
pub struct CommittedBatch {
    /// The events.
    pub events: Vec<EventEnvelope>,
}

/// Reads of a log, capped at its durable position, and its live tail.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
    published: Published,
    position_rx: watch::Receiver<Position>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").field("last_position", &self.last_position()).finish_non_exhaustive()
    }
}

impl LogReader {
    /// The reader of the log in `db`, whose last position is `last`.
    pub(crate) fn new(db: Arc<DB>, last: Position, tail_buffer_max: usize) -> LogReader {
        let (position_tx, position_rx) = watch::channel(last);
        let (tail, _) = broadcast::channel(tail_buffer_max.max(1));
        let published = Published { durable: Arc::new(AtomicU64::new(last.get())), position_tx: Arc::new(position_tx), tail };
        LogReader { db, published, position_rx }
    }

    pub(crate) fn published(&self) -> &Published {
        &self.published
    }

    /// The newest durable position (0 for an empty log).
    pub fn last_position(&self) -> Position {
        Position(self.published.durable.load(Ordering::Acquire))
    }

    /// Up to `limit` events from position `from` (inclusive) on, in position order.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
        read::read_events(&self.db, from, self.last_position(), limit)
    }

    /// Up to `limit` events of `stream` from version `from_version` (1 = the first event).
    pub fn read_stream(&self, stream: StreamId, from_version: StreamVersion, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
        read::read_stream(&self.db, stream, from_version, self.last_position(), limit)
    }

    /// The durable event at `position`: one point read, where [`Self::read_all`] opens an
    /// iterator (catch-up reads one event per missed message this way).
    pub(crate) fn read_one(&self, position: Position) -> Result<EventEnvelope, EngineError> {
        if position == Position::ZERO || position > self.last_position() {
            return Err(EngineError::invalid("position", format!("{position} is not a durable position of the log")));
        }
        read::read_one(&self.db, position)
    }

    /// The newest durable position, as a `watch` that changes after every commit.
    pub fn watch_position(&self) -> watch::Receiver<Position> {
        self.position_rx.clone()
    }

    /// Every batch committed from now on. A subscriber that falls more than
    /// `tail_buffer_max` batches behind gets `Lagged` and should catch up with `read_all`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.published.tail.subscribe()
    }
}

/// A log on its own: appends go straight to the sequencer and the writer (group commit
/// across concurrent appenders). For the log's contract tests and benchmarks; an engine
/// directory is appended to only through `ChatEngine`, whose projections must see every
/// event.
pub struct EventLog {
    reader: LogReader,
    sequencer: Mutex<Sequencer>,
    // Dropped before `dir`: the writer stops (writing what is queued) before the database closes.
    writer: LogWriter,
    clock: Arc<dyn Clock>,
    dir: DataDir,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("path", &self.dir.path()).field("last_position", &self.last_position()).finish()
    }
}

impl EventLog {
    /// Opens the data directory at `path` (created when missing) and starts the writer.
    pub fn open(path: impl AsRef<Path>, config: LogConfig) -> Result<EventLog, OpenError> {
        let dir = DataDir::open(path)?;
        let reader = LogReader::new(dir.db.clone(), dir.last_position, config.tail_buffer_max);
        let sequencer = Sequencer::new(dir.db.clone(), dir.last_position, reader.published.durable.clone());
        let writer = LogWriter::start(
            dir.db.clone(),
            dir.path.clone(),
            config.durability,
            reader.published.clone(),
            config.writer_queue_max.max(GROUP_BATCHES_MAX),
            Arc::default(),
        )?;
        Ok(EventLog { reader, sequencer: Mutex::new(sequencer), writer, clock: config.clock, dir })
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
        let (reply, answer) = oneshot::channel();
        {
            let mut sequencer = self.sequencer.lock().map_err(|_| EngineError::Closed)?;
            if let Some(key) = &idempotency_key
                && let Some(earlier) = sequencer.earlier(key)?
            {
                return Ok(Appended { events: earlier.events, deduplicated: true });
            }
            let mut batch = sequencer.batch();
            let append = Append { stream, expected_version, actor, events, idempotency_key, fingerprint: None };
            let events = sequencer.stage(append, self.clock.now_ms(), &mut batch)?;
            sequencer.seal(&mut batch, None)?;
            // Submitted under the lock, so that batches reach the writer in position order.
            self.writer.submit(
                batch,
                Box::new(move |written| {
                    let _ = reply.send(written.map(|()| Appended { events, deduplicated: false }));
                }),
            )?;
        }
        answer.await.map_err(|_| EngineError::Closed)?
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The reads and the tail.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// The newest durable position (0 for an empty log).
    pub fn last_position(&self) -> Position {
        self.reader.last_position()
    }

    /// Up to `limit` events from position `from` (inclusive) on, in position order.
    pub fn read_all(&self, from: Position, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
        self.reader.read_all(from, limit)
    }

    /// Up to `limit` events of `stream` from version `from_version` (1 = the first event).
    pub fn read_stream(&self, stream: StreamId, from_version: StreamVersion, limit: usize) -> Result<Vec<EventEnvelope>, EngineError> {
        self.reader.read_stream(stream, from_version, limit)
    }

    /// The newest durable position, as a `watch` that changes after every commit.
    pub fn watch_position(&self) -> watch::Receiver<Position> {
        self.reader.watch_position()
    }

    /// Every batch committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.reader.subscribe()
    }
}
