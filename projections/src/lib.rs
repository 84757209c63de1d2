//! # osmium-projections
//!
//! The fold of the event log into per-user `Conversation` views, and everything it
//! keeps: the projections in memory ([`state`]: typed records loaded on demand, changed
//! by the fold, reported as key-value writes per batch, evicted when clean within a
//! budget), the fold itself ([`fold::apply`]), what it means for live updates
//! ([`effects`]), the derived chat-list index ([`chat_list`]), the tables' key layouts
//! ([`keys`]) and record encodings ([`records`], serde + bincode), what readers see of
//! not yet flushed writes ([`layers`]), and the reads that shape the tables into
//! protocol views ([`query`]).
//!
//! **What it owns:** the meaning of every event for conversation state: read positions,
//! unread counts and unread mention counts (derived, never stored), chat-list order,
//! drafts, notification preferences, permission overrides, invites and their use
//! counters, the username index; and who must be told about each event.
//!
//! **What it must never do:** perform I/O (the state reads flushed records only through
//! the [`store::StoreRead`] it is given), read a clock or generate ids (the fold is a pure
//! function of the state and the event: the live engine and the replay CLI must get
//! byte-identical projections from the same log), validate commands (that is the
//! engine's job, before events exist), or depend on RocksDB.
//!
//! **It is not** a cache of RocksDB in general, nor a database: the engine decides when
//! to flush, what the budget is, and where the writes go.
//!
//! **Hard limits:** chats above [`limits::CHAT_LIST_FANOUT_MAX`] members are listed
//! through a per-user set placed by the chat record at query time, so a user's
//! `get_chats` costs grow with the number of such large chats they are in.

pub mod catch_up;
pub mod chat_list;
pub mod effects;
pub mod error;
pub mod fold;
pub mod keys;
pub mod layers;
pub mod limits;
pub mod query;
pub mod read_caches;
pub mod records;
mod sharded;
pub mod state;
pub mod store;
pub mod tables;

pub use effects::Effect;
pub use error::ProjectionError;
pub use fold::{apply, apply_with_effects, event_kind, stream_of};
pub use layers::{KvWrite, Layer, LayeredView};
pub use state::{BatchWrites, ProjectionState};
pub use store::{MemStore, ScanRange, Store, StoreRead};
pub use tables::Table;
