//! The gateway's own `RPCError.error_code`s. Engine errors keep the engine's codes
//! (`EngineError::to_rpc_error`, table in the root README); the full table is in
//! `gateway/README.md`.

use osmium_proto::core::RpcError;

/// A frame that does not decode as a `ClientMessage`, or a text frame.
pub const BAD_FRAME: u32 = 400;
/// A call other than `Initialize`/`Authorize` before `Authorize`, or an unknown or
/// revoked token.
pub const UNAUTHORIZED: u32 = 401;
/// `Authorize` on a connection that is already signed in.
pub const ALREADY_AUTHORIZED: u32 = 409;
/// A frame over `frame_bytes_max`.
pub const FRAME_TOO_LARGE: u32 = 413;
/// Over a rate limit: `SetTyping` (`typing_per_second_max`), `SendMessage`
/// (`send_message_per_user_per_second_max`), failed sign-ins
/// (`sign_in_failures_per_connection_max`, `sign_in_failures_per_address_per_minute_max`).
pub const RATE_LIMITED: u32 = 429;
/// A `ClientMessage` call the gateway does not serve: outside the chat subset.
pub const UNSUPPORTED: u32 = 501;
/// The gateway failed internally (it could not read its tokens file, or a call panicked).
pub const INTERNAL: u32 = 500;

/// An `RPCError` with `code` and `message`.
pub fn error(code: u32, message: impl Into<String>) -> RpcError {
    RpcError { error_code: code, error_message: message.into() }
}

/// The metrics label of a result: `ok` or the error code.
pub fn result_label(code: Option<u32>) -> &'static str {
    match code {
        None => "ok",
        Some(400) => "400",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(409) => "409",
        Some(410) => "410",
        Some(413) => "413",
        Some(429) => "429",
        Some(500) => "500",
        Some(501) => "501",
        Some(503) => "503",
        Some(_) => "other",
    }
}
