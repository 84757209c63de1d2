//! What every cluster test shares: a three-node cluster of local `nats-server` processes
//! (killed on drop, also when the test fails), a log on it, events, and time bounds.
#![allow(dead_code)] // each test binary uses part of it
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_cluster::{JetStreamLog, JetStreamLogConfig, LocalCluster, LogError, Record};
use osmium_proto::events::{MessageSent, event_envelope::Event};
use osmium_proto::ids::{ChatId, Position, StreamId};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Longest a test may run, in milliseconds.
pub const TEST_TIMEOUT_MS: u64 = 180_000;
/// Longest wait for every replica to be current again after a restart, in milliseconds.
pub const CATCH_UP_TIMEOUT_MS: u64 = 60_000;

/// One cluster at a time: tests of one binary run in parallel, and three clusters on two
/// cores would make elections and timeouts depend on the machine's load.
static ONE_CLUSTER: Mutex<()> = Mutex::const_new(());

/// A running cluster and a log on it.
pub struct Harness {
    pub log: JetStreamLog,
    pub cluster: LocalCluster,
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// Starts three nodes and opens the log on them with `configure` applied to the defaults.
/// Where `nats-server` is missing, fails saying how to install it.
pub async fn start_with(configure: impl FnOnce(&mut JetStreamLogConfig)) -> Harness {
    let guard = ONE_CLUSTER.lock().await;
    let cluster = match LocalCluster::start(3) {
        Ok(cluster) => cluster,
        Err(error) => panic!("cannot run a local NATS cluster: {error}"),
    };
    let mut config = JetStreamLogConfig::with_servers(cluster.urls());
    configure(&mut config);
    let log = match JetStreamLog::open(config).await {
        Ok(log) => log,
        Err(error) => panic!("open the log: {error}\nn1's log:\n{}", cluster.log_tail(0)),
    };
    Harness {
        log,
        cluster,
        _one_at_a_time: guard,
    }
}

/// Three nodes and a log with the default settings.
pub async fn start() -> Harness {
    start_with(|_| {}).await
}

/// Runs `test` and fails when it takes longer than [`TEST_TIMEOUT_MS`].
pub async fn bounded<T>(what: &str, test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_millis(TEST_TIMEOUT_MS), test).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {TEST_TIMEOUT_MS} ms"),
    }
}

/// A message event whose `message_id` names it (so that every append can be found again).
pub fn message(id: u64) -> Event {
    Event::MessageSent(MessageSent {
        message_id: id,
        author_id: 1,
        text: format!("message {id}"),
        ..Default::default()
    })
}

/// The `message_id`s of a record's messages.
pub fn message_ids(record: &Record) -> Vec<u64> {
    record
        .events
        .iter()
        .filter_map(|envelope| match &envelope.event {
            Some(Event::MessageSent(sent)) => Some(sent.message_id),
            _ => None,
        })
        .collect()
}

pub fn chat(id: u64) -> StreamId {
    StreamId::Chat(ChatId(id))
}

/// Every record of the log, checking on the way that positions are 1, 2, 3, ...
pub async fn read_all(log: &JetStreamLog) -> Vec<Record> {
    let mut records = Vec::new();
    loop {
        let page = log
            .read(Position(records.len() as u64 + 1), 1_000)
            .await
            .expect("read the log");
        if page.is_empty() {
            break;
        }
        records.extend(page);
    }
    for (index, record) in records.iter().enumerate() {
        assert_eq!(
            record.position,
            Position(index as u64 + 1),
            "positions are gapless from 1"
        );
    }
    records
}

/// Waits until the stream has a leader and every follower is current.
pub async fn wait_all_current(log: &JetStreamLog) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
    loop {
        match log.replication().await {
            Ok(replication) if replication.all_current() => return,
            Ok(_) | Err(LogError::Unavailable { .. }) => {}
            Err(error) => panic!("replication state: {error}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas not current within {CATCH_UP_TIMEOUT_MS} ms"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
