//! Nodes killed under load: nothing acknowledged is lost or doubled, positions stay
//! gapless, and appends are unavailable only while the stream elects a new leader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, bounded, chat, message, message_ids, read_all, start, wait_all_current};
use osmium_cluster::{ExpectedLast, JetStreamLog, JetStreamLogConfig, LogError};
use osmium_proto::ids::{Position, UserId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ACTOR: UserId = UserId(1);
/// Load before a node is killed, in milliseconds.
const LOAD_BEFORE_KILL_MS: u64 = 1_000;
/// How long the killed follower stays down, in milliseconds.
const FOLLOWER_DOWN_MS: u64 = 2_000;
/// Load after the follower is back, in milliseconds.
const LOAD_AFTER_RESTART_MS: u64 = 1_500;
/// Load after the leader is killed, in milliseconds: the election (about 5 s) and appends
/// succeeding again after it.
const LOAD_AFTER_LEADER_KILL_MS: u64 = 12_000;
/// Longest time one append may stay unavailable (retried by its caller with the same key)
/// after the stream leader is killed, in milliseconds.
const LEADER_FAILOVER_MAX_MS: u64 = 20_000;

/// What one appender got acknowledged, and how long its longest unavailable append took.
#[derive(Default)]
struct Acknowledged {
    positions: Vec<(u64, Position)>,
    failures: usize,
    longest_unavailable: Duration,
    longest_gap: Duration,
}

/// Appends one message at a time to chat `task` until `stop`. Keyed appends that fail as
/// unavailable are retried by this caller with the same key (bounded by
/// [`LEADER_FAILOVER_MAX_MS`]); an unkeyed append must never fail (the log retries it with
/// the same `Nats-Msg-Id`).
async fn appender(
    log: JetStreamLog,
    task: u64,
    keyed: bool,
    stop: Arc<AtomicBool>,
) -> Acknowledged {
    let mut acknowledged = Acknowledged::default();
    let mut last_ack = Instant::now();
    for index in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = task * 1_000_000 + index;
        let key = keyed.then(|| format!("load:{id}").into_bytes());
        let started = Instant::now();
        let mut first_failure: Option<Instant> = None;
        let position = loop {
            match log
                .append(
                    chat(task),
                    ExpectedLast::Any,
                    ACTOR,
                    vec![message(id)],
                    key.clone(),
                )
                .await
            {
                Ok(appended) => break appended.position(),
                Err(error @ LogError::Unavailable { .. }) if keyed => {
                    acknowledged.failures += 1;
                    first_failure.get_or_insert_with(Instant::now);
                    assert!(
                        started.elapsed() < Duration::from_millis(LEADER_FAILOVER_MAX_MS),
                        "append {id} unavailable for more than {LEADER_FAILOVER_MAX_MS} ms: {error}"
                    );
                }
                Err(error) => panic!("append {id} (keyed: {keyed}): {error}"),
            }
        };
        if let Some(failed_at) = first_failure {
            acknowledged.longest_unavailable =
                acknowledged.longest_unavailable.max(failed_at.elapsed());
        }
        acknowledged.longest_gap = acknowledged.longest_gap.max(last_ack.elapsed());
        last_ack = Instant::now();
        acknowledged.positions.push((id, position));
    }
    acknowledged
}

/// Every acknowledged append is in the log once, at its position; nothing else is.
async fn check_log(log: &JetStreamLog, acknowledged: &[&Acknowledged]) {
    let records = read_all(log).await; // checks gaplessness
    let mut found: BTreeMap<u64, Vec<Position>> = BTreeMap::new();
    for record in &records {
        for id in message_ids(record) {
            found.entry(id).or_default().push(record.position);
        }
    }
    let doubled: Vec<_> = found
        .iter()
        .filter(|(_, positions)| positions.len() > 1)
        .collect();
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    let mut total = 0;
    for appender in acknowledged {
        for (id, position) in &appender.positions {
            assert_eq!(
                found.get(id),
                Some(&vec![*position]),
                "acknowledged append {id} at {position}"
            );
            total += 1;
        }
    }
    assert_eq!(
        records.len(),
        total,
        "nothing stored beyond the acknowledged appends"
    );
}

fn spawn_appenders(
    harness: &Harness,
    logs: &[(JetStreamLog, bool)],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acknowledged>> {
    let _ = harness;
    logs.iter()
        .enumerate()
        .map(|(task, (log, keyed))| {
            tokio::spawn(appender(log.clone(), task as u64 + 1, *keyed, stop.clone()))
        })
        .collect()
}

async fn leader_index(harness: &Harness) -> usize {
    let replication = harness.log.replication().await.unwrap();
    let leader = replication.leader.expect("a leader");
    harness
        .cluster
        .index_of(&leader)
        .expect("the leader is one of the nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_load_and_restarted_loses_and_doubles_nothing() {
    let mut harness = start().await;
    bounded("follower killed under load", async {
        wait_all_current(&harness.log).await;
        let follower = (leader_index(&harness).await + 1) % 3;
        let stop = Arc::new(AtomicBool::new(false));
        let logs = [
            (harness.log.clone(), false),
            (harness.log.clone(), true),
            (harness.log.clone(), false),
            (harness.log.clone(), true),
        ];
        let appenders = spawn_appenders(&harness, &logs, &stop);
        tokio::time::sleep(Duration::from_millis(LOAD_BEFORE_KILL_MS)).await;
        harness.cluster.kill(follower).unwrap();
        tokio::time::sleep(Duration::from_millis(FOLLOWER_DOWN_MS)).await;
        harness.cluster.restart(follower).unwrap();
        tokio::time::sleep(Duration::from_millis(LOAD_AFTER_RESTART_MS)).await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for appender in appenders {
            results.push(appender.await.unwrap());
        }
        wait_all_current(&harness.log).await;
        let counts: Vec<usize> = results
            .iter()
            .map(|result| result.positions.len())
            .collect();
        println!("acknowledged per appender: {counts:?}");
        assert!(
            counts.iter().all(|count| *count > 0),
            "every appender made progress: {counts:?}"
        );
        check_log(&harness.log, &results.iter().collect::<Vec<_>>()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_appends_fail_for_a_bounded_time_then_retries_succeed_once() {
    let mut harness = start().await;
    bounded("leader killed under load", async {
        wait_all_current(&harness.log).await;
        // A second log on the same streams that gives up quickly, so that its caller sees
        // the unavailability and retries with the same key.
        let mut impatient = JetStreamLogConfig::with_servers(harness.cluster.urls());
        impatient.request_timeout_ms = 500;
        impatient.unavailable_retry_max_ms = 1_000;
        let impatient = JetStreamLog::open(impatient).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let logs = [(impatient.clone(), true), (harness.log.clone(), false), (harness.log.clone(), true)];
        let appenders = spawn_appenders(&harness, &logs, &stop);
        tokio::time::sleep(Duration::from_millis(LOAD_BEFORE_KILL_MS)).await;
        let leader = leader_index(&harness).await;
        harness.cluster.kill(leader).unwrap();
        let killed_at = Instant::now();
        tokio::time::sleep(Duration::from_millis(LOAD_AFTER_LEADER_KILL_MS)).await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for appender in appenders {
            results.push(appender.await.unwrap());
        }
        let new_leader = leader_index(&harness).await;
        assert_ne!(new_leader, leader, "a new leader was elected");
        for (task, result) in results.iter().enumerate() {
            println!(
                "appender {task}: {} acknowledged, {} unavailable answers, longest unavailable append {} ms, longest gap between acknowledgements {} ms (kill at +{} ms)",
                result.positions.len(),
                result.failures,
                result.longest_unavailable.as_millis(),
                result.longest_gap.as_millis(),
                killed_at.elapsed().as_millis(),
            );
            assert!(result.longest_gap < Duration::from_millis(LEADER_FAILOVER_MAX_MS), "appender {task} stalled");
        }
        let impatient_result = &results[0];
        assert!(
            impatient_result.failures > 0,
            "a caller that gives up after 1 s saw the election (JetStream's raft waits at least 4 s before electing)"
        );
        harness.cluster.restart(leader).unwrap();
        wait_all_current(&harness.log).await;
        check_log(&harness.log, &results.iter().collect::<Vec<_>>()).await;
    })
    .await;
}
