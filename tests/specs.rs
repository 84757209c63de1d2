//! The engine's behaviour through its public API, one module per area. One test binary
//! (`autotests = false` in Cargo.toml): each binary links RocksDB and instantiates the
//! engine's generics again, about 35 CPU-seconds apiece in the release profile.
//! Tests that configure fail points (process-wide) or kill their process have binaries
//! of their own: `crash_points`, `rebuild_crash_points`, `disk_full`, `crash_kill9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod bad_input;
mod catch_up;
mod catch_up_model;
mod catch_up_retention;
mod chat_list;
mod corruption;
mod groups_and_invites;
mod idempotency;
mod invite_purge;
mod media;
mod memory_budget;
mod mentions;
mod messages;
mod notifications;
mod opening_dms;
mod read_state;
mod read_state_model;
mod reopen;
mod replies_and_edits;
