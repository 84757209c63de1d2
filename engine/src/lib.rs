//! # osmium-engine
//!
//! The durable core of osmium-state: the RocksDB event log with its single writer and
//! group commit ([`log`]), and (built on it) command handling and the async
//! [`ChatEngine`](crate) handle that a backend embeds.
//!
//! **What it owns:** the data directory (its lock, format version, column families, see
//! [`schema`]), position assignment, durability, idempotency, the clock and the id
//! generator, and the validation of every command against current state.
//!
//! **What it must never do:** decide what an event means for conversation state (that is
//! [`osmium_projections::apply`], called inside the commit batch); write projections in
//! any other way than in the same `WriteBatch` as the events they fold; acknowledge an
//! append before it is durable; let a reader see a position that is not durable yet.
//!
//! **Hard limits:** [`log::APPEND_EVENTS_MAX`] events per append,
//! [`log::IDEMPOTENCY_KEY_MAX_BYTES`] per idempotency key, `commit_queue_max` queued
//! commands (then [`EngineError::Overloaded`]), `commit_batch_max` commands per batch.

pub mod backup;
pub mod chat;
pub mod clock;
pub mod error;
pub mod log;
pub mod maintenance;
mod rocks;
pub mod scrub;
pub mod schema;
mod storage_error;

pub use clock::{Clock, ManualClock, SnowflakeGenerator, SystemClock};
pub use error::EngineError;
pub use chat::{ChatEngine, EngineConfig};
pub use log::{Appended, CommittedBatch, Durability, EventLog, ExpectedVersion, LogConfig};
