//! # osmium-projections
//!
//! The fold of the event log into per-user `Conversation` views, and everything it
//! stores: the projection tables' key layouts ([`keys`]), their record encodings
//! ([`records`], serde + bincode), the fold itself ([`fold::apply`]) and the reads that
//! shape the tables into protocol views ([`query`]).
//!
//! **What it owns:** the meaning of every event for conversation state: read positions,
//! unread counts (derived, never stored), chat-list order, drafts, mute, permission
//! overrides, invites and their use counters.
//!
//! **What it must never do:** perform I/O, read a clock or generate ids (the fold is a
//! pure function of the state and the event: the live engine and the replay CLI must
//! get byte-identical projections from the same log), validate commands (that is the
//! engine's job, before events exist), or depend on RocksDB (it sees only the
//! [`store::Store`] trait).
//!
//! **Hard limits:** chats above [`limits::CHAT_LIST_FANOUT_MAX`] members are listed
//! through a per-user set sorted at query time, so a user's `get_chats` costs grow
//! with the number of such large chats they are in.

pub mod error;
pub mod fold;
pub mod keys;
pub mod limits;
pub mod query;
pub mod records;
pub mod store;

pub use error::ProjectionError;
pub use fold::{apply, event_kind, stream_of};
pub use store::{MemStore, Overlay, PendingWrites, ScanRange, Store, StoreRead, Table};
