//! The running server: the engine, the WebSocket accept loop, the metrics endpoint, the
//! live-tail task that feeds the engine metrics, the tokens file poll, and graceful
//! shutdown (stop accepting, finish in-flight calls, drain queues, close every connection
//! with 1001 going away, close the engine).

use crate::connection::{self, Shared};
use crate::config::Advertise;
use crate::error::GatewayError;
use crate::limiter::{KeyedBuckets, Rate};
use crate::metrics::Metrics;
use crate::tokens::{TOKENS_POLL_INTERVAL_MS, TokenStore};
use crate::{GatewayLimits, ServerConfig};
use osmium_engine::ChatEngine;
use osmium_proto::types::Entrypoint;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Largest HTTP request head the metrics endpoint reads, in bytes.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Metrics requests answered at once; further ones wait in the listen backlog.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// How long one metrics request may take, from accept to the last byte written, in
/// milliseconds.
pub const METRICS_ANSWER_TIMEOUT_MS: u64 = 5_000;

/// Remote addresses whose failed sign-ins are remembered at once (each for at most a
/// minute); past that the table is cleared (logged) rather than grown.
pub const SIGN_IN_ADDRESSES_TRACKED_MAX: usize = 100_000;
/// Users whose send rate is remembered at once (each for at most a second).
pub const SEND_USERS_TRACKED_MAX: usize = 100_000;

/// What `Initialized.entrypoints` says for a server bound to `local`.
pub fn entrypoint(advertise: &Advertise, local: SocketAddr) -> Entrypoint {
    let (hostname, ip_address) = match &advertise.host {
        Some(host) => (host.clone(), host.parse::<IpAddr>().ok().map(|ip| ip.to_string())),
        None => (local.ip().to_string(), Some(local.ip().to_string())),
    };
    Entrypoint { hostname, ip_address, port: u32::from(advertise.port.unwrap_or(local.port())), region: advertise.region }
}

/// Refuses limits that would make the server unusable (every call refused, or every
/// live connection closed).
fn check_limits(limits: &GatewayLimits) -> Result<(), GatewayError> {
    let invalid = |field: &'static str, reason: &str| Err(GatewayError::InvalidArgument { field, reason: reason.into() });
    if limits.frame_bytes_close_max < limits.frame_bytes_max {
        return invalid("frame_bytes_close_max", "must be at least frame_bytes_max");
    }
    if limits.ping_interval_ms == 0 {
        return invalid("ping_interval_ms", "must be at least 1");
    }
    if limits.idle_timeout_ms <= limits.ping_interval_ms {
        return invalid(
            "idle_timeout_ms",
            "must be above ping_interval_ms (a client that only answers pings would be closed as idle)",
        );
    }
    if limits.sign_in_failures_per_connection_max == 0 {
        return invalid("sign_in_failures_per_connection_max", "must be at least 1");
    }
    if limits.sign_in_failures_per_address_per_minute_max == 0 {
        return invalid("sign_in_failures_per_address_per_minute_max", "must be at least 1");
    }
    if limits.send_message_per_user_per_second_max == 0 {
        return invalid("send_message_per_user_per_second_max", "must be at least 1");
    }
    Ok(())
}

/// A running gateway. Dropping it without [`Gateway::shutdown`] aborts its tasks.
#[derive(Debug)]
pub struct Gateway {
    engine: ChatEngine,
    metrics: Arc<Metrics>,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Opens the engine on `config.data_dir` and starts listening.
    pub async fn start(config: ServerConfig) -> Result<Gateway, GatewayError> {
        check_limits(&config.limits)?;
        let engine = ChatEngine::open(&config.data_dir, config.engine.clone()).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| GatewayError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind { addr: config.listen, source })?;
        let metrics = Arc::new(Metrics::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tokens = TokenStore::new(&config.data_dir);
        tokens.refresh()?;
        let entrypoint = entrypoint(&config.advertise, local_addr);
        if config.advertise.host.is_none() && local_addr.ip().is_unspecified() {
            tracing::warn!(%local_addr, "advertising an unspecified address to clients: set --advertise-host");
        }
        let advertised = format!("{}:{}", entrypoint.hostname, entrypoint.port);
        let limits = &config.limits;
        let sign_in_rate = Rate { max: limits.sign_in_failures_per_address_per_minute_max, period: Duration::from_secs(60) };
        let send_rate = Rate { max: limits.send_message_per_user_per_second_max, period: Duration::from_secs(1) };
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            tokens,
            metrics: metrics.clone(),
            limits: config.limits.clone(),
            shutdown: shutdown_rx.clone(),
            entrypoint,
            sign_in_failures: KeyedBuckets::new(sign_in_rate, SIGN_IN_ADDRESSES_TRACKED_MAX),
            sends: KeyedBuckets::new(send_rate, SEND_USERS_TRACKED_MAX),
        });
        let mut background = vec![
            tokio::spawn(tail(engine.log().subscribe(), metrics.clone())),
            tokio::spawn(poll_tokens(shared.clone())),
            tokio::spawn(purge_invites(engine.clone())),
            tokio::spawn(engine_memory(engine.clone(), metrics.clone())),
        ];
        if engine.fold_lag().is_some() {
            background.push(tokio::spawn(fold_lag(engine.clone(), metrics.clone())));
        }
        let mut metrics_addr = None;
        if let Some(addr) = config.metrics_listen {
            let metrics_listener =
                TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, source })?;
            metrics_addr = Some(metrics_listener.local_addr().map_err(|source| GatewayError::Bind { addr, source })?);
            background.push(tokio::spawn(serve_metrics(metrics_listener, metrics.clone())));
        }
        let accept = tokio::spawn(accept_loop(listener, shared, shutdown_rx, config.limits));
        tracing::info!(
            %local_addr,
            ?metrics_addr,
            %advertised,
            region = config.advertise.region,
            data_dir = %config.data_dir.display(),
            "osmium-server listening"
        );
        Ok(Gateway { engine, metrics, local_addr, metrics_addr, shutdown, accept: Some(accept), background })
    }

    /// The WebSocket address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics address actually bound, if metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The engine served (for in-process tools and tests).
    pub fn engine(&self) -> &ChatEngine {
        &self.engine
    }

    /// The metrics (the same ones `/metrics` shows).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Graceful shutdown: stops accepting, lets every connection finish its calls in
    /// flight and drain its queue, closes them with 1001 (going away), then closes the
    /// engine (releasing the data directory's lock) before returning.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        for task in self.background.drain(..) {
            task.abort();
            let _ = task.await;
        }
        tracing::info!("osmium-server stopped");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        for task in &self.background {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>, limits: GatewayLimits) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < limits.connections_max.max(1) => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection::serve(shared.clone(), stream, peer));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, "waiting for connections to finish");
    }
    // Each connection has the grace period for its calls and again for its writer.
    let grace = Duration::from_millis(limits.shutdown_grace_ms.saturating_mul(2).saturating_add(1_000));
    let _ = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Feeds the engine metrics from the log's live tail.
async fn tail(mut batches: broadcast::Receiver<Arc<osmium_engine::CommittedBatch>>, metrics: Arc<Metrics>) {
    loop {
        match batches.recv().await {
            Ok(batch) => metrics.batch_committed(batch.events.len()),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "metrics tail fell behind; some batches were not counted");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Replicated mode: copies the engine's fold lag into the metrics every
/// [`osmium_engine::FOLD_LAG_POLL_MS`].
async fn fold_lag(engine: ChatEngine, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_millis(osmium_engine::FOLD_LAG_POLL_MS));
    loop {
        tick.tick().await;
        let lag = engine.fold_lag().unwrap_or(0);
        metrics.fold_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
}

/// Copies the engine's memory figures into the metrics every
/// [`crate::metrics::MEMORY_POLL_MS`].
async fn engine_memory(engine: ChatEngine, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_millis(crate::metrics::MEMORY_POLL_MS));
    loop {
        tick.tick().await;
        metrics.engine_memory(&engine.stats());
    }
}

async fn poll_tokens(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(TOKENS_POLL_INTERVAL_MS));
    loop {
        tick.tick().await;
        if let Err(err) = shared.tokens.refresh() {
            tracing::warn!(%err, "could not re-read the tokens file");
        }
    }
}

/// How often the server purges invites expired or used up for the engine's
/// `invite_purge_grace_ms` (each round looks at `invite_purge_scan_max` invites) and trims
/// the catch-up index of updates older than `catch_up_retention_ms`.
pub const INVITE_PURGE_INTERVAL_MS: u64 = 60 * 60 * 1000;

async fn purge_invites(engine: ChatEngine) {
    let mut tick = tokio::time::interval(Duration::from_millis(INVITE_PURGE_INTERVAL_MS));
    loop {
        tick.tick().await;
        match engine.purge_invites().await {
            Ok(purge) if purge.purged > 0 => tracing::info!(purged = purge.purged, scanned = purge.scanned, "invites purged"),
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not purge invites"),
        }
        match engine.trim_catch_up().await {
            Ok(trim) if trim.floor > trim.previous_floor => {
                tracing::info!(floor = trim.floor.get(), previous = trim.previous_floor.get(), "catch-up index trimmed")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not trim the catch-up index"),
        }
    }
}

/// Answers metrics requests, at most [`METRICS_CONNECTIONS_MAX`] at once (in a `JoinSet`
/// that dies with this task).
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    let mut answers = JoinSet::new();
    loop {
        while answers.len() >= METRICS_CONNECTIONS_MAX {
            let _ = answers.join_next().await;
        }
        let accepted = tokio::select! {
            Some(_) = answers.join_next(), if !answers.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        answers.spawn(async move {
            let timeout = Duration::from_millis(METRICS_ANSWER_TIMEOUT_MS);
            let _ = tokio::time::timeout(timeout, answer_metrics(stream, &metrics)).await;
        });
    }
}

/// A minimal HTTP/1.1 responder: `GET /metrics` gets the exposition, anything else 404.
async fn answer_metrics(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < METRICS_REQUEST_BYTES_MAX {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let request_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if request_line.starts_with(b"GET /metrics ") || request_line == b"GET /metrics" {
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "not found: try GET /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
