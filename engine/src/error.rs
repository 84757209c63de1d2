//! The engine's error types, one per operation family (as redb does): [`OpenError`] for
//! opening a data directory (what an operator fixes), [`EngineError`] for commands and
//! reads (what a caller handles, mapped to the protocol's `RPCError`).

use osmium_projections::ProjectionError;
use osmium_proto::ids::{MessageId, Position, StreamId, StreamVersion, UserId};
use std::path::PathBuf;

use crate::stream::ExpectedVersion;

/// Why a data directory could not be opened. Nothing was changed in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another engine in this process) has the directory open.
    #[error("data directory {path} is in use by another engine (lock file held); stop it first")]
    DirectoryInUse {
        /// The directory.
        path: PathBuf,
    },
    /// The directory holds something that is not an osmium-state engine.
    #[error("{path} is not an osmium-state data directory: {reason}")]
    NotAnEngineDirectory {
        /// The directory.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The directory was written by a newer engine with a format this one cannot read.
    #[error("data directory format version {found} is newer than the supported {supported}; upgrade osmium-state")]
    NewerFormat {
        /// The directory's format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The projections were written with another schema version: rebuild them.
    #[error(
        "projection schema version {found} does not match this engine's {expected}; \
         run `osmium-replay rebuild --data-dir <dir>` to rebuild them from the log"
    )]
    ProjectionSchemaMismatch {
        /// The stored version.
        found: u32,
        /// The version this engine writes.
        expected: u32,
    },
    /// The flushed projections claim events the log does not have (the log lost its tail,
    /// e.g. a `Buffered` engine on a machine that lost power): rebuild them from the log.
    #[error(
        "projections are folded up to position {checkpoint} but the log ends at {last_position}; \
         run `osmium-replay rebuild --data-dir <dir>`"
    )]
    ProjectionsAhead {
        /// The projections' checkpoint.
        checkpoint: Position,
        /// The log's last position.
        last_position: Position,
    },
    /// A setting is out of its bounds.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidConfig {
        /// The setting, as named in the config struct.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `ChatEngine::open` was called outside a tokio runtime (it runs its update fan-out
    /// and typing expiry as tasks).
    #[error("ChatEngine::open must be called inside a tokio runtime")]
    NoRuntime,
    /// Reading or checking the directory failed (storage, corruption, a log event the
    /// fold rejects while catching the projections up).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Replicated mode: the replicated log could not be opened.
    #[error("opening the replicated log failed: {reason}")]
    ReplicatedLog {
        /// What the log said.
        reason: String,
    },
}

impl From<ProjectionError> for OpenError {
    fn from(err: ProjectionError) -> Self {
        OpenError::Engine(err.into()) // classified: a damaged file or a full disk gets its variant
    }
}

/// Everything a command or a read can answer instead of a result.
///
/// Command errors (`NotFound` .. `Overloaded`) mean nothing was written. Storage,
/// corruption and writer errors are for the operator; [`EngineError::rpc_code`] maps
/// every variant to a protocol error code (see the table in README.md).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    // ---- command outcomes -------------------------------------------------
    /// The chat, message, user or invite does not exist for this caller (also used for
    /// groups the caller is not a member of, so that their existence does not leak).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The caller may not do this.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Which rule refused it.
        reason: String,
    },
    /// A request field is out of bounds or malformed.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The field, as named in the protocol.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream is not at the expected version: someone else appended first.
    #[error("conflict on {stream}: expected version {expected:?}, found {found}")]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual version.
        found: StreamVersion,
    },
    /// The invite code is unknown or was deleted.
    #[error("invite not found")]
    InviteNotFound,
    /// The invite is past its expiry.
    #[error("invite expired")]
    InviteExpired,
    /// The invite has reached its `max_uses`.
    #[error("invite used up")]
    InviteUsedUp,
    /// The user is already a member of the chat.
    #[error("already a member")]
    AlreadyMember,
    /// The idempotency key (`client_id`) was used for another request within the window:
    /// retries must repeat the request exactly; a new request needs a new key.
    #[error("idempotency key reused: client_id {client_id} was used for a different request {age_ms} ms ago")]
    IdempotencyKeyReused {
        /// The reused client id.
        client_id: u64,
        /// How long ago the key's first request was recorded.
        age_ms: u64,
    },
    /// A reply names a message that is not in the chat (or was deleted).
    #[error("reply to message {message_id}, which is not in this chat (or was deleted)")]
    ReplyTargetNotFound {
        /// The message replied to.
        message_id: MessageId,
    },
    /// The username belongs to another user (usernames match ASCII-case-insensitively).
    #[error("username {username:?} is taken by user {user}")]
    UsernameTaken {
        /// The username asked for.
        username: String,
        /// Who holds it.
        user: UserId,
    },
    /// The command queue is full; retry later.
    #[error("engine overloaded: {queue_max} commands already queued")]
    Overloaded {
        /// The queue's bound.
        queue_max: usize,
    },

    // ---- storage and corruption ---------------------------------------------
    /// A record at `position` does not decode.
    #[error("event at position {position} does not decode: {reason}")]
    Decode {
        /// Where the bad record is.
        position: Position,
        /// The decoder's message.
        reason: String,
    },
    /// Stored data contradicts itself.
    #[error("corrupt data directory: {what}: expected {expected}, found {found}")]
    Corrupt {
        /// What was checked.
        what: String,
        /// What it should have been.
        expected: String,
        /// What it was.
        found: String,
    },
    /// The projections could not be folded or read (a damaged file or a full disk under
    /// them is [`EngineError::CorruptFile`] or [`EngineError::DiskFull`]: see
    /// `storage_error.rs`, which converts).
    #[error(transparent)]
    Projection(ProjectionError),
    /// RocksDB failed.
    #[error("storage error while {context}: {source}")]
    Storage {
        /// What the engine was doing.
        context: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The disk (or the file system's quota) is full: the write that found it so was not
    /// acknowledged, and the writer refuses further writes until the engine is reopened
    /// after space was freed. `path` is the file RocksDB was writing, when it says.
    #[error("disk full writing {}: {detail}; free space on its file system, then reopen the engine", crate::storage_error::describe(path))]
    DiskFull {
        /// The file being written (RocksDB's WAL, a table file, the MANIFEST).
        path: Option<PathBuf>,
        /// RocksDB's message.
        detail: String,
    },
    /// A file of the database fails its checksum or does not parse. Nothing is served
    /// from it. Projections are rebuilt from the log (`osmium-replay rebuild`); a damaged
    /// log is restored from a backup (`osmium-replay restore`).
    #[error(
        "corrupt file {path}: {detail}; if it holds projections, `osmium-replay rebuild` makes them anew \
         from the log, otherwise restore the data directory from a backup (`osmium-replay restore`)"
    )]
    CorruptFile {
        /// The damaged file (a `.sst` table, a `.log` WAL, the MANIFEST).
        path: PathBuf,
        /// RocksDB's message.
        detail: String,
    },
    /// A file system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An earlier commit failed; the engine refuses further writes until reopened, because
    /// it can no longer tell what reached the disk (reopening folds the log again).
    #[error("the engine stopped writing after a failure ({reason}); reopen it")]
    WriterFailed {
        /// The failure that stopped it.
        reason: String,
    },
    /// The engine is shutting down or was dropped.
    #[error("the engine is closed")]
    Closed,
    /// Replicated mode: the command conflicted with other nodes' writes on its stream
    /// every time it was decided (`decide_retries_max`). Nothing of it was written; retry.
    #[error("the command conflicted with other nodes' writes {attempts} times; nothing was written, retry it")]
    DecideRetriesExhausted {
        /// How many times it was decided and conflicted.
        attempts: u32,
    },
    /// Replicated mode: the replicated log had no quorum or answered nothing in time.
    /// Retryable (a send with the same `client_id` is stored once).
    #[error("the replicated log is unavailable: {reason}")]
    LogUnavailable {
        /// What the log said.
        reason: String,
    },
    /// Replicated mode: the replicated log refused an append (not retryable).
    #[error("the replicated log refused the append: {reason}")]
    ReplicatedLog {
        /// What the log said.
        reason: String,
    },
}

impl EngineError {
    pub(crate) fn storage(context: &'static str) -> impl FnOnce(rocksdb::Error) -> EngineError {
        move |source| crate::storage_error::from_rocksdb(context, source)
    }

    pub(crate) fn not_found(what: impl Into<String>) -> EngineError {
        EngineError::NotFound { what: what.into() }
    }

    pub(crate) fn denied(reason: impl Into<String>) -> EngineError {
        EngineError::PermissionDenied { reason: reason.into() }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> EngineError {
        EngineError::InvalidArgument { field, reason: reason.into() }
    }

    /// The protocol error code (`RPCError.error_code`) for this error. See README.md.
    pub fn rpc_code(&self) -> u32 {
        match self {
            EngineError::InvalidArgument { .. } => 400,
            EngineError::PermissionDenied { .. } => 403,
            EngineError::NotFound { .. } => 404,
            EngineError::InviteNotFound => 404,
            EngineError::ReplyTargetNotFound { .. } => 404,
            EngineError::Conflict { .. } => 409,
            EngineError::AlreadyMember => 409,
            EngineError::IdempotencyKeyReused { .. } => 409,
            EngineError::UsernameTaken { .. } => 409,
            EngineError::InviteExpired => 410,
            EngineError::InviteUsedUp => 410,
            EngineError::DecideRetriesExhausted { .. } => 409,
            EngineError::Overloaded { .. } => 429,
            EngineError::Closed | EngineError::WriterFailed { .. } | EngineError::LogUnavailable { .. } => 503,
            EngineError::DiskFull { .. } => 507,
            _ => 500,
        }
    }

    /// The protocol's `RPCError` for this error.
    pub fn to_rpc_error(&self) -> osmium_proto::core::RpcError {
        osmium_proto::core::RpcError { error_code: self.rpc_code(), error_message: self.to_string() }
    }
}

impl OpenError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
        move |source| OpenError::Engine(EngineError::Io { path: path.to_path_buf(), source })
    }

    pub(crate) fn storage(context: &'static str) -> impl FnOnce(rocksdb::Error) -> OpenError {
        move |source| OpenError::Engine(crate::storage_error::from_rocksdb(context, source))
    }

    pub(crate) fn corrupt(what: impl Into<String>, expected: impl Into<String>, found: impl Into<String>) -> OpenError {
        OpenError::Engine(EngineError::Corrupt { what: what.into(), expected: expected.into(), found: found.into() })
    }
}
