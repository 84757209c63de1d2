//! The gateway's one error type (for the operator: starting, tokens, I/O). What a client
//! sees instead is an `RPCError` with a code from [`crate::codes`] or the engine's table.

use osmium_engine::{EngineError, OpenError};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong outside a single call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The engine could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tokens file does not parse.
    #[error("tokens file {path} is malformed: {reason}")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A command-line or API argument is out of bounds.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The OS random source failed.
    #[error("OS random source failed: {0}")]
    Random(String),
    /// A WebSocket operation failed (handshake or transport).
    #[error("websocket: {0}")]
    WebSocket(String),
}

impl GatewayError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> GatewayError {
        let path = path.into();
        move |source| GatewayError::Io { path, source }
    }
}

/// `len` bytes from the OS random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], GatewayError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| GatewayError::Random(err.to_string()))?;
    Ok(bytes)
}
