//! Settings of a [`crate::JetStreamLog`]; every limit named with its unit last.

use crate::LogError;

/// Most events in one append (the same bound as the engine's local log).
pub const APPEND_EVENTS_MAX: usize = 1_024;
/// Largest idempotency key, in bytes (the same bound as the engine's local log).
pub const IDEMPOTENCY_KEY_MAX_BYTES: usize = 256;
/// Most records one [`crate::JetStreamLog::read`] returns.
pub const READ_RECORDS_MAX: usize = 4_096;
/// Most records of a stream looked through when a retry of an append whose idempotency
/// claim has no outcome recorded searches the stream for its record (see README).
pub const IDEMPOTENCY_SCAN_RECORDS_MAX: usize = 100_000;
/// First pause before retrying an unavailable operation, in milliseconds (doubling up to
/// [`JetStreamLogConfig::retry_backoff_max_ms`]).
pub const RETRY_BACKOFF_MIN_MS: u64 = 50;

/// Where the log lives and how long it waits.
#[derive(Clone, Debug)]
pub struct JetStreamLogConfig {
    /// NATS servers to connect to (`nats://127.0.0.1:4222`, ...): all of the cluster's
    /// nodes, so that the client reconnects to another one when its node goes away.
    pub servers: Vec<String>,
    /// The JetStream stream holding the log (`[A-Za-z0-9_-]`). Its idempotency records go
    /// to the stream `<stream_name>_IDEM`.
    pub stream_name: String,
    /// First token of every subject: `<prefix>.chat.<id>`, `<prefix>.user.<id>`,
    /// `<prefix>.idem.<sha256 of key>`.
    pub subject_prefix: String,
    /// Copies of every record (JetStream's `num_replicas`; 3 tolerates one node down).
    pub replicas: usize,
    /// JetStream's duplicate window (`Nats-Msg-Id`), in milliseconds. Must exceed
    /// `unavailable_retry_max_ms + request_timeout_ms`, so that every retry of one append
    /// falls inside it; retries after it are caught by the durable idempotency records.
    pub duplicate_window_ms: u64,
    /// Longest wait for one publish acknowledgement or API answer, in milliseconds.
    pub request_timeout_ms: u64,
    /// Longest time one operation keeps retrying while the log is unavailable (a leader
    /// election, a reconnect), in milliseconds; then it fails with `Unavailable`.
    pub unavailable_retry_max_ms: u64,
    /// Longest pause between two retries, in milliseconds.
    pub retry_backoff_max_ms: u64,
    /// Publishes awaiting their acknowledgement at most; further appends wait for room
    /// (async-nats' `max_ack_inflight` with `backpressure_on_inflight`).
    pub acks_in_flight_max: usize,
    /// Records one read fetches concurrently at most.
    pub read_gets_in_flight_max: usize,
    /// Records a tail buffers ahead of its reader at most.
    pub tail_buffer_records_max: usize,
    /// Longest wait for the first connection and for the streams to be created or
    /// found, in milliseconds (a cluster that just started elects its leaders first).
    pub open_timeout_ms: u64,
}

impl Default for JetStreamLogConfig {
    fn default() -> Self {
        JetStreamLogConfig {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            stream_name: "OSMIUM_LOG".to_owned(),
            subject_prefix: "osmium".to_owned(),
            replicas: 3,
            duplicate_window_ms: 120_000,
            request_timeout_ms: 2_000,
            unavailable_retry_max_ms: 30_000,
            retry_backoff_max_ms: 1_000,
            acks_in_flight_max: 4_096,
            read_gets_in_flight_max: 64,
            tail_buffer_records_max: 1_024,
            open_timeout_ms: 30_000,
        }
    }
}

impl JetStreamLogConfig {
    /// The default settings on these servers.
    pub fn with_servers(servers: Vec<String>) -> Self {
        JetStreamLogConfig {
            servers,
            ..JetStreamLogConfig::default()
        }
    }

    /// The idempotency records' stream.
    pub fn idempotency_stream_name(&self) -> String {
        format!("{}_IDEM", self.stream_name)
    }

    pub(crate) fn validate(&self) -> Result<(), LogError> {
        let fail = |reason: String| Err(LogError::Config(reason));
        if self.servers.is_empty() {
            return fail("no server given".to_owned());
        }
        let name_ok = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&self.stream_name) {
            return fail(format!(
                "stream_name {:?}: use letters, digits, '_' and '-'",
                self.stream_name
            ));
        }
        if !name_ok(&self.subject_prefix) {
            return fail(format!(
                "subject_prefix {:?}: use one token of letters, digits, '_' and '-'",
                self.subject_prefix
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return fail(format!(
                "replicas {}: JetStream allows 1 to 5",
                self.replicas
            ));
        }
        if self.request_timeout_ms == 0
            || self.acks_in_flight_max == 0
            || self.read_gets_in_flight_max == 0
            || self.tail_buffer_records_max == 0
        {
            return fail("request_timeout_ms, acks_in_flight_max, read_gets_in_flight_max and tail_buffer_records_max must be above 0".to_owned());
        }
        if self.duplicate_window_ms
            <= self
                .unavailable_retry_max_ms
                .saturating_add(self.request_timeout_ms)
        {
            return fail(format!(
                "duplicate_window_ms ({}) must exceed unavailable_retry_max_ms + request_timeout_ms ({}): every retry of one append must fall inside the window",
                self.duplicate_window_ms,
                self.unavailable_retry_max_ms
                    .saturating_add(self.request_timeout_ms)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duplicate_window_must_cover_every_retry_of_one_append() {
        let mut config = JetStreamLogConfig::default();
        assert!(config.validate().is_ok());
        config.duplicate_window_ms = config.unavailable_retry_max_ms + config.request_timeout_ms;
        let error = config.validate().unwrap_err();
        assert!(
            matches!(&error, LogError::Config(reason) if reason.contains("duplicate_window_ms")),
            "{error}"
        );
    }

    #[test]
    fn names_that_are_not_one_subject_token_are_refused() {
        for (stream_name, subject_prefix) in [
            ("OSMIUM.LOG", "osmium"),
            ("OSMIUM_LOG", "osmium.chat"),
            ("", "osmium"),
            ("OSMIUM_LOG", "a*"),
        ] {
            let config = JetStreamLogConfig {
                stream_name: stream_name.to_owned(),
                subject_prefix: subject_prefix.to_owned(),
                ..JetStreamLogConfig::default()
            };
            assert!(
                matches!(config.validate(), Err(LogError::Config(_))),
                "{stream_name:?} {subject_prefix:?}"
            );
        }
    }
}
