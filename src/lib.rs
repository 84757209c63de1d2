//! # osmium-state
//!
//! An event-sourced conversation state engine for chat backends that speak the Osmium
//! Chat Protocol. This facade is what embedders depend on: it re-exports the engine
//! ([`ChatEngine`], [`EventLog`]), the protocol types ([`proto`]) and the projections
//! ([`projections`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), osmium_state::EngineError> {
//! use osmium_state::{ChatEngine, EngineConfig, proto};
//! let engine = ChatEngine::open("./data", EngineConfig::default()).await?;
//! let chats = engine.get_chats(proto::ids::UserId(1), proto::chats::GetChats::default()).await?;
//! # Ok(()) }
//! ```
//!
//! It must never add behaviour of its own: everything lives in the member crates.

pub use osmium_engine::chat::{ChatEngine, EngineConfig, InviteInfo, limits::Limits, updates::{Subscription, TaggedUpdate}};
pub use osmium_engine::{Clock, Durability, EngineError, EventLog, LogConfig, ManualClock, SystemClock};
pub use osmium_engine as engine;
pub use osmium_projections as projections;
pub use osmium_proto as proto;
