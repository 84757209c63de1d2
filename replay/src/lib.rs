//! # osmium-replay
//!
//! The operator's tool for a data directory: rebuild the projections from the event log,
//! verify them against an independent fold, check the log's integrity, print statistics,
//! dump events, show a user's chat list, and drive a demo workload.
//!
//! **What it owns:** command-line parsing, output formats (text and `--json`), progress
//! reporting, and the demo workload.
//!
//! **What it must never do:** fold events by any other code than
//! `osmium_projections::apply` (it goes through `osmium_engine::maintenance`), or write to
//! a data directory that a running engine holds (rebuild takes the engine's lock).

pub mod bench;
pub mod demo;
pub mod progress;

use osmium_engine::{EngineError, OpenError};

/// What a replay subcommand can fail with: the directory does not open, or the work on it
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The data directory could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading, folding or writing failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<osmium_engine::backup::BackupError> for ReplayError {
    fn from(err: osmium_engine::backup::BackupError) -> Self {
        match err {
            osmium_engine::backup::BackupError::Open(err) => ReplayError::Open(err),
            osmium_engine::backup::BackupError::Engine(err) => ReplayError::Engine(err),
        }
    }
}

impl From<osmium_projections::ProjectionError> for ReplayError {
    fn from(err: osmium_projections::ProjectionError) -> Self {
        ReplayError::Engine(err.into())
    }
}
