//! # osmium-engine
//!
//! The durable core of osmium-state: the data directory ([`directory`]), the event log
//! ([`log`]: one appender, group commit, reads, tail), the state machine that decides
//! commands against the projections in memory and folds every event
//! (`state_machine`), projection persistence (`persist`: flushed with their checkpoint
//! every `flush_interval_ms` / `flush_events_max`), what readers see (`view`), the
//! catch-up index's retention ([`retention`]), offline work on a directory
//! ([`maintenance`]), and the async [`ChatEngine`] a backend embeds ([`chat`]).
//!
//! **What it owns:** the data directory (its lock, format version, column families, see
//! [`schema`]), position assignment, durability, idempotency, the clock and the id
//! generator, the validation of every command against current state, and when the
//! projections are flushed.
//!
//! **What it must never do:** decide what an event means for conversation state (that is
//! [`osmium_projections::apply`], called on the state machine thread); append an event
//! that no decision produced; acknowledge a command before its events are durable; let a
//! reader see a position that is not durable yet; flush projections other than as a whole
//! cut with its checkpoint.
//!
//! **Hard limits:** [`log::APPEND_EVENTS_MAX`] events per append,
//! [`log::IDEMPOTENCY_KEY_MAX_BYTES`] per idempotency key, `commit_queue_max` queued
//! commands (then [`EngineError::Overloaded`]), `commit_batch_max` commands per batch,
//! `writer_queue_max` batches ahead of the disk, [`persist::FLUSHES_QUEUED_MAX`] flushes
//! queued, `state_bytes_max` of records in memory.

pub mod backup;
pub mod chat;
pub mod clock;
pub mod directory;
pub mod error;
mod ingest;
pub mod log;
pub mod maintenance;
mod meters;
pub mod retention;
pub mod persist;
mod runtime;
pub mod schema;
pub mod scrub;
mod replica;
mod state_machine;
mod storage_error;
mod stream;
mod view;

pub use chat::{ChatEngine, EngineConfig, EngineStats};
pub use clock::{Clock, ManualClock, SnowflakeGenerator, SystemClock};
pub use error::{EngineError, OpenError};
pub use meters::MeterReadings;
pub use log::{Appended, CommittedBatch, Durability, EventLog, ExpectedVersion, LogConfig, LogReader};
pub use replica::{DECIDE_RETRIES_MAX_DEFAULT, FOLD_LAG_POLL_MS, OPEN_CATCH_UP_TIMEOUT_MS_DEFAULT, ReplicaConfig};
pub use runtime::{CLOSE_WAIT_MAX_MS, StateConfig};
pub use state_machine::Output;
