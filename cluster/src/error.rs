//! The log's errors: what a caller can act on, each naming what it is about.

use crate::ExpectedLast;
use osmium_proto::ids::{Position, StreamId};

/// Why an operation of [`crate::JetStreamLog`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The stream's last record is not where the append expected it: nothing was written.
    /// Catch up (read the stream from `found`'s record on), decide again, append with
    /// `ExpectedLast::At(found)`.
    #[error("conflict on {stream}: expected {expected}, its last record is at position {found}")]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedLast,
        /// The position of the stream's last record (0: the stream has none).
        found: Position,
    },
    /// No stream leader, no connection, or no answer within the bounded time (a leader
    /// election takes a few seconds). Retryable: an append retried with the same
    /// idempotency key is stored once.
    #[error("the log is unavailable ({operation}): {detail}")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// What the client or the server said last.
        detail: String,
    },
    /// The idempotency key was first used for an append to another stream: a caller's bug
    /// (a key names one append). Nothing was written.
    #[error(
        "idempotency key already used for an append to {original_stream} (at position {original_position})"
    )]
    Duplicate {
        /// The stream of the append that used the key first.
        original_stream: StreamId,
        /// Its position (0 while that append has not been stored).
        original_position: Position,
    },
    /// A stored record that does not decode as this crate wrote it.
    #[error("record at position {position} does not decode: {detail}")]
    Decode {
        /// The record's position (its stream sequence).
        position: Position,
        /// What is wrong with it.
        detail: String,
    },
    /// A position at or below the log's last one that the server does not have. Never in a
    /// log that never deletes: the stream was changed or damaged outside this crate.
    #[error("position {position} is missing from the log (its last position is {last})")]
    Missing {
        /// The position asked for.
        position: Position,
        /// The log's last position when asked.
        last: Position,
    },
    /// An append this log refuses before sending anything (empty, too many events, key too
    /// long, record too large).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The configuration, or a stream found on the server whose configuration differs from
    /// what this log needs (replicas, subjects, limits that would delete records).
    #[error("configuration: {0}")]
    Config(String),
    /// An answer the server gave that none of the above explains (not retryable).
    #[error("server refused {operation}: {detail}")]
    Server {
        /// What was being done.
        operation: &'static str,
        /// What the server said.
        detail: String,
    },
}

impl LogError {
    /// Whether the same call may succeed later (only [`LogError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Unavailable { .. })
    }
}
