//! # osmium-cluster
//!
//! The event log replicated over a NATS JetStream cluster (issue #15): [`JetStreamLog`]
//! offers the contract of the engine's local log (append with an expected stream version
//! and a durable idempotency key, gapless positions, reads, a live tail) over one
//! JetStream stream with three replicas, and [`LocalCluster`] runs three `nats-server`
//! processes on loopback for tests, figures and trying it out. See `cluster/README.md`
//! for the mapping (streams to subjects, versions to expected last subject sequences,
//! idempotency beyond the duplicate window, positions) and the failure behaviour.
//!
//! **What it owns:** the layout of the log in JetStream (stream and subject names, the
//! record's bytes: one message per append carrying its envelopes, the idempotency
//! records) and the client side of every failure (bounded timeouts, bounded in-flight
//! acknowledgements, retries with the same `Nats-Msg-Id`).
//!
//! **What it must never do:** delete, purge or roll up a record (its streams have no
//! limits and deny deletes and purges: positions stay gapless); acknowledge an append
//! before JetStream acknowledged it (stored on a quorum of replicas); retry a publish
//! under a different `Nats-Msg-Id`; decide anything about what events mean (the engine
//! does); change another crate.

mod config;
mod error;
mod local;
mod log;
mod nats;
mod record;
mod tail;

pub use config::{
    APPEND_EVENTS_MAX, IDEMPOTENCY_KEY_MAX_BYTES, IDEMPOTENCY_SCAN_RECORDS_MAX, JetStreamLogConfig,
    READ_RECORDS_MAX, RETRY_BACKOFF_MIN_MS,
};
pub use error::LogError;
pub use local::{ClusterError, LocalCluster, MAX_PAYLOAD_BYTES, NATS_READY_TIMEOUT_MS};
pub use log::{Appended, Follower, JetStreamLog, Replication};
pub use record::{EventBatch, ExpectedLast, Record};
pub use tail::{TAIL_PULL_EXPIRES_MS, TAIL_STALL_CHECK_MS, Tail};
