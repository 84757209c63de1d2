//! osmium-server's behaviour over WebSocket, one module per area. One test binary (`autotests = false` in
//! Cargo.toml): each binary links RocksDB and instantiates the engine's generics again,
//! about 35 CPU-seconds apiece in the release profile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod current_protocol;
mod gateway;
mod official_client;
mod resume;
mod security;
