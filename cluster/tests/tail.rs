//! The tail: every record from a position on, in order, live, across node restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bounded, chat, message, message_ids, start, wait_all_current};
use futures_util::StreamExt as _;
use osmium_cluster::{ExpectedLast, LogError, Tail};
use osmium_proto::ids::{Position, UserId};
use std::time::Duration;

const ACTOR: UserId = UserId(1);
/// Longest wait for one record from the tail, in milliseconds (a consumer lost with its
/// node is recreated within about `TAIL_PULL_EXPIRES_MS`).
const TAIL_RECORD_TIMEOUT_MS: u64 = 30_000;

async fn next_ids(tail: &mut Tail, count: usize) -> Vec<(Position, u64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let record =
            match tokio::time::timeout(Duration::from_millis(TAIL_RECORD_TIMEOUT_MS), tail.next())
                .await
            {
                Ok(Some(record)) => record.unwrap(),
                Ok(None) => panic!("the tail ended"),
                Err(_) => panic!(
                    "no record from the tail within {TAIL_RECORD_TIMEOUT_MS} ms after {seen:?}"
                ),
            };
        for id in message_ids(&record) {
            seen.push((record.position, id));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_delivers_in_order_from_a_position_then_live() {
    let harness = start().await;
    let log = &harness.log;
    bounded("tail", async {
        for id in 1..=20 {
            log.append(
                chat(id % 3),
                ExpectedLast::Any,
                ACTOR,
                vec![message(id)],
                None,
            )
            .await
            .unwrap();
        }
        let mut tail = log.tail(Position(5));
        let stored: Vec<(Position, u64)> = (5..=20).map(|id| (Position(id), id)).collect();
        assert_eq!(next_ids(&mut tail, 16).await, stored);
        for id in 21..=25 {
            log.append(
                chat(id % 3),
                ExpectedLast::Any,
                ACTOR,
                vec![message(id)],
                None,
            )
            .await
            .unwrap();
        }
        let live: Vec<(Position, u64)> = (21..=25).map(|id| (Position(id), id)).collect();
        assert_eq!(next_ids(&mut tail, 5).await, live);
    })
    .await;
}

async fn next(tail: &mut Tail) -> Result<osmium_cluster::Record, LogError> {
    let record =
        tokio::time::timeout(Duration::from_millis(TAIL_RECORD_TIMEOUT_MS), tail.next()).await;
    record.expect("a record in time").expect("the tail goes on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_resumes_after_each_node_restarts() {
    let mut harness = start().await;
    bounded("tail across restarts", async {
        let log = harness.log.clone();
        let mut tail = log.tail(Position(1));
        let mut next_id = 1;
        for node in 0..3 {
            for _ in 0..5 {
                log.append(
                    chat(1),
                    ExpectedLast::Any,
                    ACTOR,
                    vec![message(next_id)],
                    None,
                )
                .await
                .unwrap();
                next_id += 1;
            }
            harness.cluster.kill(node).unwrap();
            // Appends go on while the node is down (the others are a quorum).
            for _ in 0..5 {
                log.append(
                    chat(1),
                    ExpectedLast::Any,
                    ACTOR,
                    vec![message(next_id)],
                    None,
                )
                .await
                .unwrap();
                next_id += 1;
            }
            harness.cluster.restart(node).unwrap();
            wait_all_current(&log).await;
        }
        let expected: Vec<(Position, u64)> = (1..next_id).map(|id| (Position(id), id)).collect();
        assert_eq!(
            next_ids(&mut tail, expected.len()).await,
            expected,
            "every record once, in order"
        );
        log.append(
            chat(1),
            ExpectedLast::Any,
            ACTOR,
            vec![message(next_id)],
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            next_ids(&mut tail, 1).await,
            vec![(Position(next_id), next_id)],
            "and live again"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_is_an_error_naming_its_position_and_the_tail_goes_on() {
    let harness = start().await;
    let log = &harness.log;
    bounded("undecodable record", async {
        log.append(chat(1), ExpectedLast::Any, ACTOR, vec![message(1)], None)
            .await
            .unwrap();
        // Bytes no appender of this crate writes, on a log subject.
        let servers: Vec<async_nats::ServerAddr> = harness
            .cluster
            .urls()
            .iter()
            .map(|url| url.parse().unwrap())
            .collect();
        let js = async_nats::jetstream::new(async_nats::connect(servers).await.unwrap());
        js.publish(
            "osmium.chat.1",
            bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        log.append(chat(1), ExpectedLast::Any, ACTOR, vec![message(3)], None)
            .await
            .unwrap();

        let read = log.read(Position(1), 10).await.unwrap_err();
        assert!(
            matches!(
                read,
                LogError::Decode {
                    position: Position(2),
                    ..
                }
            ),
            "{read}"
        );
        let mut tail = log.tail(Position(1));
        assert_eq!(next(&mut tail).await.unwrap().position, Position(1));
        let undecodable = next(&mut tail).await.unwrap_err();
        assert!(
            matches!(
                undecodable,
                LogError::Decode {
                    position: Position(2),
                    ..
                }
            ),
            "{undecodable}"
        );
        assert_eq!(message_ids(&next(&mut tail).await.unwrap()), vec![3]);
    })
    .await;
}
