//! # osmium-gateway
//!
//! The WebSocket gateway (binary `osmium-server`): serves the embedded
//! [`ChatEngine`](osmium_engine::ChatEngine) to Osmium clients, one protobuf
//! `ClientMessage` per binary frame in, `ServerMessage`s (results and pushed updates) out,
//! plus a Prometheus `GET /metrics` endpoint on a separate port.
//!
//! **What it owns:** the transport (WebSocket framing, per-connection reader, writer and
//! update forwarder), sign-in by token ([`tokens`]: the tokens file in the data
//! directory, only SHA-256 hashes stored), the mapping of calls to engine methods
//! ([`dispatch`]), the gateway's own error codes ([`codes`]), metrics ([`metrics`]),
//! graceful shutdown ([`server`]), and a minimal client for tests and the load run
//! ([`client`]).
//!
//! **What it must never do:** decide anything about conversation state (every call goes
//! to the engine, which validates it); buffer without bound for a slow client (past
//! `outbound_queue_max` the connection is closed with a reason); let a connection do
//! anything but `Initialize`/`Authorize` (and heartbeats) before it is signed in; answer
//! a heartbeat (a `ClientMessage` without a call); store a token in clear or compare one
//! in variable time.
//!
//! **Hard limits** ([`config::GatewayLimits`]): `frame_bytes_max` per frame (default
//! 1 MiB; larger frames are answered 413 and dropped, frames over
//! `frame_bytes_close_max`, default 2 MiB, close the connection), `connections_max`
//! connections (default 10,000), `outbound_queue_max` queued server messages per
//! connection (default 1,024) and `outbound_queue_bytes_max` of them (8 MiB), `calls_in_flight_max` concurrent calls per connection
//! (32), `typing_per_second_max` `SetTyping` calls per connection per second (5),
//! `socket_buffer_bytes` of WebSocket read and write buffer per connection (16 KiB),
//! `idle_timeout_ms` without any frame before a connection is closed (90 s; pings every
//! `ping_interval_ms`, 30 s), `sign_in_failures_per_connection_max` (5) and
//! `sign_in_failures_per_address_per_minute_max` (30) failed sign-ins,
//! `send_message_per_user_per_second_max` sends per user across connections (10).

pub mod client;
pub mod codes;
pub mod config;
mod connection;
pub mod dispatch;
pub mod error;
mod limiter;
pub mod metrics;
pub mod server;
pub mod tokens;

pub use config::{Advertise, GatewayLimits, ServerConfig};
pub use error::GatewayError;
pub use server::Gateway;
