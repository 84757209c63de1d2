//! The engine crate's own contracts (the event log, user lookups), one module per area.
//! One test binary (`autotests = false` in Cargo.toml): each binary links RocksDB and instantiates the engine's generics again,
//! about 35 CPU-seconds apiece in the release profile.
//! The replicated-mode tests, each with its own NATS cluster, are binaries of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod event_log;
mod get_user;
