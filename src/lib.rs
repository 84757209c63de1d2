//! # osmium-state
//!
//! An event-sourced conversation state engine for chat backends that speak the Osmium
//! Chat Protocol. This facade is what embedders depend on: the engine ([`ChatEngine`] and
//! its configuration, errors and live updates), the protocol types ([`proto`]), offline
//! work on a data directory ([`maintenance`]), and what verification needs of the
//! projections ([`projections`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use osmium_state::{ChatEngine, EngineConfig, proto};
//! let engine = ChatEngine::open("./data", EngineConfig::default()).await?;
//! let chats = engine.get_chats(proto::ids::UserId(1), proto::chats::GetChats::default()).await?;
//! # Ok(()) }
//! ```
//!
//! It must never add behaviour of its own, and it exports nothing that writes to a data
//! directory without a command's validation: every change goes through [`ChatEngine`]
//! (the raw event log of `osmium-engine` is not re-exported).

pub use osmium_engine::chat::catch_up::CatchUp;
pub use osmium_engine::chat::updates::{Sequence, Subscription, TaggedUpdate};
pub use osmium_engine::chat::{InviteInfo, InvitePurge, Resumed, limits::{CATCH_UP_RETENTION_MS_DEFAULT, INVITE_PURGE_GRACE_MS_DEFAULT, Limits}};
pub use osmium_engine::retention::CatchUpTrim;
pub use osmium_engine::{
    ChatEngine, Clock, CommittedBatch, Durability, EngineConfig, EngineError, EngineStats, LogConfig, LogReader,
    ManualClock, OpenError, StateConfig, SystemClock,
};
pub use osmium_engine::directory::{MEMTABLES_BYTES_MAX, ROCKSDB_MEMORY_BYTES_MAX, RocksMemory};
pub use osmium_engine::log::IDEMPOTENCY_WINDOW_MS_DEFAULT;
pub use osmium_proto as proto;

/// Offline work on a data directory: rebuild the projections from the log (into the
/// unused slot), verify them, check the log, statistics. Rebuild refuses a directory an
/// engine holds; the others open it read-only.
pub mod maintenance {
    pub use osmium_engine::maintenance::*;
}

/// The fold and the projection tables, for verifying an engine against an independent
/// fold of its log ([`ProjectionState::in_memory`], [`apply`], `to_memstore`).
pub mod projections {
    pub use osmium_projections::records::{ChatRecord, MemberRecord, MessageRecord, NotifPrefs};
    pub use osmium_projections::{
        Effect, MemStore, ProjectionError, ProjectionState, StoreRead, Table, apply, event_kind, limits, stream_of,
    };
}
