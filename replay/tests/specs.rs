//! The replay CLI and the bench on temporary data directories, one module per area. One test binary (`autotests = false` in
//! Cargo.toml): each binary links RocksDB and instantiates the engine's generics again,
//! about 35 CPU-seconds apiece in the release profile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod bench;
mod cli;
mod damaged_files;
mod rebuild_kill9;
