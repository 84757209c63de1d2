//! The projections crate's one error type.

use crate::tables::Table;

/// What can go wrong while folding or reading projections. Every variant means the
/// stored data (or the event fed in) is not what the fold expects: the fold never
/// fails on a valid log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A stored record does not decode.
    #[error("projection record in {table:?} under key {key_hex} does not decode: {reason}")]
    Decode {
        /// The table it was read from.
        table: Table,
        /// The key, hex-encoded.
        key_hex: String,
        /// The decoder's message.
        reason: String,
    },
    /// A key has the wrong length or shape for its table.
    #[error("malformed key in {table:?}: expected {expected}, found {found}")]
    MalformedKey {
        /// The table.
        table: Table,
        /// What the layout requires.
        expected: String,
        /// What was found.
        found: String,
    },
    /// An event refers to state the fold does not have (the log and the projections disagree).
    #[error("event at position {position} cannot be folded: {reason}")]
    Inconsistent {
        /// Position of the event.
        position: u64,
        /// What is missing or contradictory.
        reason: String,
    },
    /// An envelope without an event, or with a stream that does not fit its event.
    #[error("event at position {position} is malformed: {reason}")]
    MalformedEvent {
        /// Position of the event.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The underlying store failed.
    #[error("projection store: {0}")]
    Store(String),
}

/// Hex form of a key, for error messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
