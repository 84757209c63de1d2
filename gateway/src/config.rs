//! How a [`crate::Gateway`] is started: addresses, data directory, engine settings and
//! the per-connection limits.

use osmium_engine::EngineConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The default WebSocket address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7070";
/// The default metrics address.
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:7071";

/// Per-connection bounds. Every one is enforced before memory is spent on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Largest frame served, in bytes; a larger one is answered with 413 and dropped.
    pub frame_bytes_max: usize,
    /// Largest frame the transport reads at all, in bytes; a larger one closes the
    /// connection (1009). Must be at least `frame_bytes_max`; it is what one connection
    /// may hold of one incoming frame.
    pub frame_bytes_close_max: usize,
    /// Connections served at once; further ones wait in the listen backlog until one
    /// closes.
    pub connections_max: usize,
    /// Server messages (results and updates) queued for one connection before it is
    /// closed as too slow (1008).
    pub outbound_queue_max: usize,
    /// Encoded bytes of the server messages queued for one connection before it is
    /// closed as too slow (1008); a single larger message is still queued when the queue
    /// is empty. Bounds what a client that never reads costs, whatever the answers' size.
    pub outbound_queue_bytes_max: usize,
    /// The WebSocket read buffer and write batch of one connection, in bytes each
    /// (tungstenite's default is 128 KiB: 256 MiB of buffers at 1,000 connections).
    pub socket_buffer_bytes: usize,
    /// Calls of one connection running at once; further frames wait (backpressure).
    pub calls_in_flight_max: usize,
    /// `SetTyping` calls per connection per second; more are answered with 429.
    pub typing_per_second_max: u32,
    /// How long the WebSocket handshake may take, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// How long shutdown waits for connections to finish their calls, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// A connection from which nothing arrived (no frame, no pong, no heartbeat) for this
    /// long is closed (1001, "idle timeout"), in milliseconds. Well above the official
    /// client's 30 s heartbeat; must be above `ping_interval_ms`.
    pub idle_timeout_ms: u64,
    /// How often the server sends a WebSocket ping on every connection, in milliseconds,
    /// so that a live client answers (pong) even when it sends nothing, and a dead peer
    /// is found by `idle_timeout_ms`.
    pub ping_interval_ms: u64,
    /// Failed `Authorize` calls (unknown or revoked token) one connection may make; after
    /// that every `Authorize` on it is answered with 429 without looking at the token.
    pub sign_in_failures_per_connection_max: u32,
    /// Failed `Authorize` calls per remote address (an IPv4 address, or an IPv6 /64) per
    /// minute, as a token bucket that holds a minute's worth; over it, every `Authorize`
    /// from that address is answered with 429 without looking at the token.
    pub sign_in_failures_per_address_per_minute_max: u32,
    /// `SendMessage` calls per user per second, across all of the user's connections, as
    /// a token bucket that holds a second's worth; more are answered with 429.
    pub send_message_per_user_per_second_max: u32,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            frame_bytes_max: 1024 * 1024,
            frame_bytes_close_max: 2 * 1024 * 1024,
            connections_max: 10_000,
            outbound_queue_max: 1_024,
            outbound_queue_bytes_max: 8 * 1024 * 1024,
            socket_buffer_bytes: 16 * 1024,
            calls_in_flight_max: 32,
            typing_per_second_max: 5,
            handshake_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            idle_timeout_ms: 90_000,
            ping_interval_ms: 30_000,
            sign_in_failures_per_connection_max: 5,
            sign_in_failures_per_address_per_minute_max: 30,
            send_message_per_user_per_second_max: 10,
        }
    }
}

/// What `Initialized.entrypoints` tells clients about this server: where to connect.
/// Unset parts default to the address the server listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advertise {
    /// `Entrypoint.hostname` (a DNS name or an IP address); default: the listen IP.
    pub host: Option<String>,
    /// `Entrypoint.port`; default: the port actually bound.
    pub port: Option<u16>,
    /// `Entrypoint.region`.
    pub region: u32,
}

/// Everything [`crate::Gateway::start`] needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// WebSocket address (port 0: an ephemeral port, see [`crate::Gateway::local_addr`]).
    pub listen: SocketAddr,
    /// Metrics address; `None` serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// The engine's data directory (also holds the tokens file).
    pub data_dir: PathBuf,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Per-connection bounds.
    pub limits: GatewayLimits,
    /// The entrypoint advertised in `Initialized`.
    pub advertise: Advertise,
}

impl ServerConfig {
    /// Ephemeral ports on loopback for both listeners, default engine and limits.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> ServerConfig {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            listen: loopback,
            metrics_listen: Some(loopback),
            data_dir: data_dir.into(),
            engine: EngineConfig::default(),
            limits: GatewayLimits::default(),
            advertise: Advertise::default(),
        }
    }
}
