//! The figures for BENCHMARKS.md (not run by `cargo test`: they take a minute and want a
//! quiet machine). Run:
//!
//! ```sh
//! cargo test --release -p osmium-cluster --test figures -- --ignored --nocapture --test-threads 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bounded, chat, message, start, wait_all_current};
use futures_util::StreamExt as _;
use osmium_cluster::{ExpectedLast, JetStreamLog};
use osmium_proto::ids::{Position, UserId};
use std::time::{Duration, Instant};

const ACTOR: UserId = UserId(1);
/// Appends of the pipelined runs.
const PIPELINED_APPENDS: u64 = 20_000;
/// Appends awaited concurrently in the pipelined runs.
const PIPELINED_IN_FLIGHT_MAX: usize = 256;
/// Appends of the one-at-a-time runs.
const SEQUENTIAL_APPENDS: u64 = 2_000;
/// Chats the appends go to.
const CHATS: u64 = 100;
/// Sequential appends after the leader is killed, at most.
const APPENDS_AFTER_KILL_MAX: u64 = 200_000;
/// How long appends go on after the leader is killed, in milliseconds.
const LOAD_AFTER_KILL_MS: u64 = 10_000;

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

async fn pipelined(log: &JetStreamLog, keyed: bool, base: u64) -> f64 {
    let started = Instant::now();
    futures_util::stream::iter(0..PIPELINED_APPENDS)
        .map(|index| {
            let id = base + index;
            let key = keyed.then(|| format!("figure:{id}").into_bytes());
            async move {
                log.append(
                    chat(index % CHATS),
                    ExpectedLast::Any,
                    ACTOR,
                    vec![message(id)],
                    key,
                )
                .await
                .unwrap()
            }
        })
        .buffer_unordered(PIPELINED_IN_FLIGHT_MAX)
        .for_each(|_| async {})
        .await;
    PIPELINED_APPENDS as f64 / started.elapsed().as_secs_f64()
}

async fn sequential(log: &JetStreamLog, keyed: bool, expected: bool, base: u64) -> f64 {
    let started = Instant::now();
    let mut last = vec![Position::ZERO; CHATS as usize];
    for index in 0..SEQUENTIAL_APPENDS {
        let id = base + index;
        let key = keyed.then(|| format!("figure:{id}").into_bytes());
        let stream = (index % CHATS) as usize;
        let expectation = if expected {
            if last[stream] == Position::ZERO {
                last[stream] = log.stream_last_position(chat(stream as u64)).await.unwrap();
            }
            ExpectedLast::at(last[stream])
        } else {
            ExpectedLast::Any
        };
        let appended = log
            .append(
                chat(stream as u64),
                expectation,
                ACTOR,
                vec![message(id)],
                key,
            )
            .await
            .unwrap();
        last[stream] = appended.position();
    }
    SEQUENTIAL_APPENDS as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures: run explicitly on a quiet machine"]
async fn figure_appends_per_second() {
    let harness = start().await;
    let log = &harness.log;
    bounded("append figures", async {
        wait_all_current(log).await;
        println!("load average before: {}", load_average());
        println!(
            "one at a time, no key, Any:        {:>8.0} appends/s",
            sequential(log, false, false, 1_000_000).await
        );
        println!(
            "one at a time, no key, expected:   {:>8.0} appends/s",
            sequential(log, false, true, 2_000_000).await
        );
        println!(
            "one at a time, key, expected:      {:>8.0} appends/s",
            sequential(log, true, true, 3_000_000).await
        );
        println!(
            "one at a time, key, Any:           {:>8.0} appends/s",
            sequential(log, true, false, 4_000_000).await
        );
        println!(
            "pipelined ({PIPELINED_IN_FLIGHT_MAX} in flight), no key: {:>8.0} appends/s",
            pipelined(log, false, 5_000_000).await
        );
        println!(
            "pipelined ({PIPELINED_IN_FLIGHT_MAX} in flight), key:    {:>8.0} appends/s",
            pipelined(log, true, 6_000_000).await
        );
        let records = log.last_position().await.unwrap();
        println!("records: {records}");
        let started = Instant::now();
        let mut from = Position(1);
        while from <= records {
            let page = log
                .read(from, osmium_cluster::READ_RECORDS_MAX)
                .await
                .unwrap();
            from = Position(from.get() + page.len() as u64);
        }
        println!(
            "read (STREAM.MSG.GET, 64 in flight):   {:>8.0} records/s",
            records.get() as f64 / started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let mut tail = log.tail(Position(1));
        for _ in 0..records.get() {
            tail.next().await.unwrap().unwrap();
        }
        println!(
            "tail from 1 (ordered consumer):     {:>8.0} records/s",
            records.get() as f64 / started.elapsed().as_secs_f64()
        );
        println!("load average after: {}", load_average());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures: run explicitly on a quiet machine"]
async fn figure_unavailability_when_the_leader_is_killed() {
    let mut harness = start().await;
    let log = harness.log.clone();
    bounded("leader kill figure", async {
        wait_all_current(&log).await;
        println!("load average before: {}", load_average());
        for id in 0..1_000 {
            log.append(chat(id % CHATS), ExpectedLast::Any, ACTOR, vec![message(id)], None).await.unwrap();
        }
        let leader = log.replication().await.unwrap().leader.unwrap();
        harness.cluster.kill(harness.cluster.index_of(&leader).unwrap()).unwrap();
        let killed_at = Instant::now();
        let mut longest = Duration::ZERO;
        let mut first_after_kill = None;
        for id in 1_000..APPENDS_AFTER_KILL_MAX {
            let started = Instant::now();
            log.append(chat(id % CHATS), ExpectedLast::Any, ACTOR, vec![message(id)], None).await.unwrap();
            longest = longest.max(started.elapsed());
            first_after_kill.get_or_insert_with(|| killed_at.elapsed());
            if killed_at.elapsed() > Duration::from_millis(LOAD_AFTER_KILL_MS) {
                break;
            }
        }
        let replication = log.replication().await.unwrap();
        println!(
            "leader {leader} killed: first append after the kill acknowledged after {} ms, longest append {} ms (retried with the same Msg-Id), new leader {:?}",
            first_after_kill.unwrap_or_default().as_millis(),
            longest.as_millis(),
            replication.leader
        );
        println!("load average after: {}", load_average());
    })
    .await;
}
