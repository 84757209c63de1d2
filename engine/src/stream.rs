//! What an append expects of its stream: the one piece of the log's contract that its
//! errors name too (kept apart so that `error` and `log` do not import each other).

use osmium_proto::ids::StreamVersion;

/// What the stream's version must be for an append to go through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExpectedVersion {
    /// Whatever it is.
    Any,
    /// The stream has no event yet.
    NoStream,
    /// Exactly this version (the number of events in the stream).
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream at version `found` satisfies the expectation.
    pub fn admits(self, found: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => found == StreamVersion::EMPTY,
            ExpectedVersion::Exact(expected) => expected == found,
        }
    }
}
