//! Prometheus metrics, served as text (OpenMetrics format, which Prometheus reads) on
//! `GET /metrics` of the metrics address.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `osmium_gateway_connections` | gauge | WebSocket connections open |
//! | `osmium_gateway_connections_accepted_total` | counter | connections accepted |
//! | `osmium_gateway_connections_closed_slow_total` | counter | connections closed because their outbound queue was full |
//! | `osmium_gateway_connections_closed_idle_total` | counter | connections closed because nothing arrived for `idle_timeout_ms` |
//! | `osmium_gateway_heartbeats_total` | counter | heartbeats received (a `ClientMessage` with no call; never answered) |
//! | `osmium_gateway_rate_limited_total{limit}` | counter | calls answered 429, by limit: `typing`, `send_message_user`, `sign_in_connection`, `sign_in_address` |
//! | `osmium_gateway_requests_total{kind,result}` | counter | frames answered, by call kind and result (`ok` or the error code) |
//! | `osmium_gateway_request_duration_seconds{kind}` | histogram | call latency, from decoded frame to queued result |
//! | `osmium_engine_events_appended_total` | counter | events committed to the log |
//! | `osmium_engine_commit_batch_events` | histogram | events per group-commit batch |
//! | `osmium_engine_fold_lag_positions` | gauge | replicated mode (`--log nats://...`): positions of the replicated log this node has not folded yet (the log's last position minus the last folded one; 0 with the embedded log) |
//! | `osmium_engine_memory_bytes{part}` | gauge | what the engine holds, polled every [`MEMORY_POLL_MS`]: `state` (projection records in memory, bounded by `state_bytes_max`), `rocksdb_cache` (RocksDB's one cache: blocks, index blocks and the memtables' charge, bounded by `ROCKSDB_MEMORY_BYTES_MAX`), `rocksdb_memtables`, `rocksdb_table_readers` |
//! | `osmium_gateway_update_lag_positions` | histogram | per update queued for a connection: log positions committed after the update's own position by then (how far the engine's update fan-out plus the gateway's forwarding run behind the log) |
//!
//! "Projection lag" in the sense of reads behind the log is always 0 here: a command's
//! effects are visible to reads when it is answered (the projections reach RocksDB later,
//! at cuts, which reads do not wait for). What can lag is the update fan-out, so that is
//! what `osmium_gateway_update_lag_positions` measures, at the point where updates reach
//! a connection's queue. Typing updates, which are not logged, carry the position
//! current when they were made and so count as lag 0 at once.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type RequestLabels = [(&'static str, &'static str); 2];
type KindLabel = [(&'static str, &'static str); 1];
type LimitLabel = [(&'static str, &'static str); 1];
type PartLabel = [(&'static str, &'static str); 1];

/// How often the server copies the engine's memory figures into the metrics.
pub const MEMORY_POLL_MS: u64 = 1_000;

/// Which rate limit refused a call (the `limit` label of `rate_limited_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `typing_per_second_max`.
    Typing,
    /// `send_message_per_user_per_second_max`.
    SendMessageUser,
    /// `sign_in_failures_per_connection_max`.
    SignInConnection,
    /// `sign_in_failures_per_address_per_minute_max`.
    SignInAddress,
}

impl Limit {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Typing => "typing",
            Limit::SendMessageUser => "send_message_user",
            Limit::SignInConnection => "sign_in_connection",
            Limit::SignInAddress => "sign_in_address",
        }
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// The gateway's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections open.
    pub connections: Gauge,
    /// Connections accepted.
    pub connections_accepted: Counter,
    /// Connections closed because their outbound queue was full.
    pub connections_closed_slow: Counter,
    /// Connections closed because nothing arrived for `idle_timeout_ms`.
    pub connections_closed_idle: Counter,
    /// Heartbeats received (`ClientMessage`s without a call).
    pub heartbeats: Counter,
    rate_limited: Family<LimitLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Events committed to the log.
    pub events_appended: Counter,
    /// Events per group-commit batch.
    pub commit_batch_events: Histogram,
    update_lag: Histogram,
    /// Replicated mode: positions of the replicated log not folded yet by this node.
    pub fold_lag: Gauge,
    memory: Family<PartLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        let connections_accepted = Counter::default();
        let connections_closed_slow = Counter::default();
        let connections_closed_idle = Counter::default();
        let heartbeats = Counter::default();
        let rate_limited = Family::<LimitLabel, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let events_appended = Counter::default();
        let commit_batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let update_lag = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let fold_lag = Gauge::default();
        let memory = Family::<PartLabel, Gauge>::default();
        registry.register("osmium_engine_memory_bytes", "What the engine holds in memory, by part", memory.clone());
        registry.register(
            "osmium_engine_fold_lag_positions",
            "Positions of the replicated log this node has not folded yet (0 with the embedded log)",
            fold_lag.clone(),
        );
        registry.register("osmium_gateway_connections", "WebSocket connections open", connections.clone());
        registry.register(
            "osmium_gateway_connections_accepted",
            "WebSocket connections accepted",
            connections_accepted.clone(),
        );
        registry.register(
            "osmium_gateway_connections_closed_slow",
            "Connections closed because their outbound queue was full",
            connections_closed_slow.clone(),
        );
        registry.register(
            "osmium_gateway_connections_closed_idle",
            "Connections closed because nothing arrived for idle_timeout_ms",
            connections_closed_idle.clone(),
        );
        registry.register(
            "osmium_gateway_heartbeats",
            "Heartbeats received (ClientMessages without a call; never answered)",
            heartbeats.clone(),
        );
        registry.register("osmium_gateway_rate_limited", "Calls answered with 429, by limit", rate_limited.clone());
        registry.register("osmium_gateway_requests", "Frames answered, by call kind and result", requests.clone());
        registry.register(
            "osmium_gateway_request_duration_seconds",
            "Call latency from decoded frame to queued result",
            latency.clone(),
        );
        registry.register("osmium_engine_events_appended", "Events committed to the log", events_appended.clone());
        registry.register("osmium_engine_commit_batch_events", "Events per group-commit batch", commit_batch_events.clone());
        registry.register(
            "osmium_gateway_update_lag_positions",
            "Log positions committed after an update's own position when it was queued for a connection",
            update_lag.clone(),
        );
        Metrics {
            registry,
            connections,
            connections_accepted,
            connections_closed_slow,
            connections_closed_idle,
            heartbeats,
            rate_limited,
            requests,
            latency,
            events_appended,
            commit_batch_events,
            update_lag,
            fold_lag,
            memory,
        }
    }

    /// Copies the engine's memory figures into `osmium_engine_memory_bytes`.
    pub fn engine_memory(&self, stats: &osmium_engine::EngineStats) {
        let rocksdb = &stats.rocksdb_memory;
        for (part, bytes) in [
            ("state", stats.meters.state_bytes),
            ("rocksdb_cache", rocksdb.cache_bytes),
            ("rocksdb_memtables", rocksdb.memtables_bytes),
            ("rocksdb_table_readers", rocksdb.table_readers_bytes),
        ] {
            self.memory.get_or_create(&[("part", part)]).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Counts one answered frame (`code` `None` = success).
    pub fn request(&self, kind: &'static str, code: Option<u32>, seconds: Option<f64>) {
        self.requests.get_or_create(&[("kind", kind), ("result", crate::codes::result_label(code))]).inc();
        if let Some(seconds) = seconds {
            self.latency.get_or_create(&[("kind", kind)]).observe(seconds);
        }
    }

    /// Counts a call refused by `limit`.
    pub fn rate_limited(&self, limit: Limit) {
        self.rate_limited.get_or_create(&[("limit", limit.label())]).inc();
    }

    /// Calls refused by `limit` so far.
    pub fn rate_limited_count(&self, limit: Limit) -> u64 {
        self.rate_limited.get_or_create(&[("limit", limit.label())]).get()
    }

    /// Records a committed batch seen on the live tail.
    pub fn batch_committed(&self, events: usize) {
        self.events_appended.inc_by(events as u64);
        self.commit_batch_events.observe(events as f64);
    }

    /// Records an update queued for a connection: `log_position` is the log's durable
    /// end then, `update_position` the position the update reflects.
    pub fn update_queued(&self, log_position: u64, update_position: u64) {
        self.update_lag.observe(log_position.saturating_sub(update_position) as f64);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
