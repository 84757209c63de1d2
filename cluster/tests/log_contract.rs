//! The log's contract on a three-node cluster: order, expected positions, idempotency
//! inside and beyond the duplicate window, gapless positions under concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bounded, chat, message, message_ids, read_all, start, start_with};
use osmium_cluster::{ExpectedLast, LogError};
use osmium_proto::ids::{Position, StreamId, UserId};
use std::collections::BTreeSet;
use std::time::Duration;

const ACTOR: UserId = UserId(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_read_back_in_order_with_gapless_positions() {
    let harness = start().await;
    let log = &harness.log;
    bounded("appends and reads", async {
        let first = log
            .append(
                chat(1),
                ExpectedLast::NoStream,
                ACTOR,
                vec![message(1)],
                None,
            )
            .await
            .unwrap();
        let second = log
            .append(
                chat(2),
                ExpectedLast::NoStream,
                ACTOR,
                vec![message(2), message(3), message(4)],
                None,
            )
            .await
            .unwrap();
        let third = log
            .append(
                chat(1),
                ExpectedLast::At(first.position()),
                ACTOR,
                vec![message(5)],
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            [first.position(), second.position(), third.position()],
            [Position(1), Position(2), Position(3)]
        );
        assert!(!first.deduplicated && !second.deduplicated && !third.deduplicated);

        let records = read_all(log).await;
        assert_eq!(
            records,
            vec![
                first.record.clone(),
                second.record.clone(),
                third.record.clone()
            ]
        );
        assert_eq!(
            message_ids(&records[1]),
            vec![2, 3, 4],
            "an append's events stay together, in order"
        );
        assert!(
            records[1]
                .events
                .iter()
                .all(|event| event.position == 2 && event.actor_id == ACTOR.get())
        );
        assert_eq!(log.last_position().await.unwrap(), Position(3));
        assert_eq!(log.read(Position(2), 1).await.unwrap(), vec![second.record]);
        assert_eq!(log.read(Position(4), 10).await.unwrap(), vec![]);

        assert_eq!(
            log.stream_last_position(chat(1)).await.unwrap(),
            Position(3)
        );
        assert_eq!(
            log.stream_last_position(chat(9)).await.unwrap(),
            Position::ZERO
        );
        let chat_one = log.read_stream(chat(1), Position::ZERO, 10).await.unwrap();
        assert_eq!(chat_one, vec![first.record, third.record.clone()]);
        assert_eq!(
            log.read_stream(chat(1), Position(1), 10).await.unwrap(),
            vec![third.record]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_position_is_a_conflict_and_writes_nothing() {
    let harness = start().await;
    let log = &harness.log;
    bounded("conflicts", async {
        let first = log.append(chat(1), ExpectedLast::NoStream, ACTOR, vec![message(1)], None).await.unwrap();
        log.append(chat(2), ExpectedLast::NoStream, ACTOR, vec![message(2)], None).await.unwrap();

        let again = log.append(chat(1), ExpectedLast::NoStream, ACTOR, vec![message(3)], None).await.unwrap_err();
        assert!(
            matches!(again, LogError::Conflict { stream, expected: ExpectedLast::NoStream, found } if stream == chat(1) && found == first.position()),
            "{again}"
        );
        // Position 2 exists, but it is chat 2's: chat 1's last record is at 1.
        let stale = log.append(chat(1), ExpectedLast::At(Position(2)), ACTOR, vec![message(4)], None).await.unwrap_err();
        assert!(matches!(stale, LogError::Conflict { found: Position(1), .. }), "{stale}");
        assert!(!stale.is_retryable());
        assert_eq!(log.last_position().await.unwrap(), Position(2), "a refused append wrote nothing");

        let caught_up = log.append(chat(1), ExpectedLast::At(Position(1)), ACTOR, vec![message(5)], None).await.unwrap();
        assert_eq!(caught_up.position(), Position(3));
        assert_eq!(read_all(log).await.len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotency_key_is_stored_once_inside_the_duplicate_window() {
    let harness = start().await;
    let log = &harness.log;
    bounded("retries inside the window", async {
        let key = Some(b"send:1:42".to_vec());
        let original = log
            .append(
                chat(1),
                ExpectedLast::NoStream,
                ACTOR,
                vec![message(1)],
                key.clone(),
            )
            .await
            .unwrap();
        assert!(!original.deduplicated);
        // The retry carries the same expectation, which the stored original no longer meets:
        // the key answers first, with the original record.
        let retry = log
            .append(
                chat(1),
                ExpectedLast::NoStream,
                ACTOR,
                vec![message(1)],
                key.clone(),
            )
            .await
            .unwrap();
        assert!(retry.deduplicated);
        assert_eq!(retry.record, original.record);
        let any = log
            .append(chat(1), ExpectedLast::Any, ACTOR, vec![message(1)], key)
            .await
            .unwrap();
        assert_eq!(
            (any.deduplicated, any.position()),
            (true, original.position())
        );
        assert_eq!(read_all(log).await.len(), 1, "stored once");
    })
    .await;
}

/// Calls racing with one key in the test below.
const RACING_CALLS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_with_one_key_store_it_once() {
    let harness = start().await;
    let log = harness.log.clone();
    bounded("racing calls", async move {
        // All claim at once; the losers find the claim and either find the winner's record
        // or publish theirs with the same Nats-Msg-Id, which JetStream stores once.
        let calls: Vec<_> = (0..RACING_CALLS)
            .map(|_| {
                let log = log.clone();
                tokio::spawn(async move {
                    log.append(
                        chat(1),
                        ExpectedLast::Any,
                        ACTOR,
                        vec![message(1)],
                        Some(b"send:1:45".to_vec()),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.unwrap());
        }
        assert!(
            outcomes
                .iter()
                .all(|outcome| outcome.position() == Position(1)),
            "one position for all"
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|outcome| !outcome.deduplicated)
                .count(),
            1,
            "exactly one call stored it"
        );
        assert_eq!(read_all(&log).await.len(), 1);
    })
    .await;
}

/// Duplicate window of the test below, in milliseconds: short so that the test waits it
/// out, above `unavailable_retry_max_ms + request_timeout_ms` as the log requires.
const SHORT_DUPLICATE_WINDOW_MS: u64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotency_key_is_stored_once_beyond_the_duplicate_window() {
    let harness = start_with(|config| {
        config.duplicate_window_ms = SHORT_DUPLICATE_WINDOW_MS;
        config.request_timeout_ms = 500;
        config.unavailable_retry_max_ms = 500;
    })
    .await;
    let log = &harness.log;
    bounded("retries beyond the window", async {
        let key = Some(b"send:1:43".to_vec());
        let original = log
            .append(
                chat(1),
                ExpectedLast::Any,
                ACTOR,
                vec![message(1), message(2)],
                key.clone(),
            )
            .await
            .unwrap();
        log.append(chat(1), ExpectedLast::Any, ACTOR, vec![message(3)], None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(SHORT_DUPLICATE_WINDOW_MS * 2)).await;
        let retry = log
            .append(
                chat(1),
                ExpectedLast::Any,
                ACTOR,
                vec![message(1), message(2)],
                key,
            )
            .await
            .unwrap();
        assert!(retry.deduplicated);
        assert_eq!(retry.record, original.record);
        assert_eq!(read_all(log).await.len(), 2, "stored once");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_for_another_stream_is_a_duplicate_error() {
    let harness = start().await;
    let log = &harness.log;
    bounded("key reuse", async {
        let key = Some(b"send:1:44".to_vec());
        let original = log.append(chat(1), ExpectedLast::Any, ACTOR, vec![message(1)], key.clone()).await.unwrap();
        let reused = log.append(chat(2), ExpectedLast::Any, ACTOR, vec![message(1)], key).await.unwrap_err();
        assert!(
            matches!(reused, LogError::Duplicate { original_stream, original_position } if original_stream == chat(1) && original_position == original.position()),
            "{reused}"
        );
        assert_eq!(read_all(log).await.len(), 1);
    })
    .await;
}

/// Appenders of the concurrency test, each appending [`APPENDS_PER_TASK`] times.
const APPENDER_TASKS: u64 = 8;
const APPENDS_PER_TASK: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_gapless_positions() {
    let harness = start().await;
    let log = harness.log.clone();
    bounded("concurrent appends", async move {
        let mut tasks = Vec::new();
        for task in 0..APPENDER_TASKS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut positions = Vec::new();
                for index in 0..APPENDS_PER_TASK {
                    let id = task * 1_000 + index;
                    // Half of the tasks share chat 0 and append with an expected position,
                    // catching up after each conflict; the others append to their own chat.
                    let appended = if task % 2 == 0 {
                        loop {
                            let last = log
                                .stream_last_position(StreamId::Chat(osmium_proto::ids::ChatId(0)))
                                .await
                                .unwrap();
                            match log
                                .append(
                                    chat(0),
                                    ExpectedLast::at(last),
                                    ACTOR,
                                    vec![message(id)],
                                    None,
                                )
                                .await
                            {
                                Ok(appended) => break appended,
                                Err(LogError::Conflict { .. }) => continue,
                                Err(error) => panic!("append: {error}"),
                            }
                        }
                    } else {
                        log.append(
                            chat(100 + task),
                            ExpectedLast::Any,
                            ACTOR,
                            vec![message(id)],
                            None,
                        )
                        .await
                        .unwrap()
                    };
                    positions.push((appended.position(), id));
                }
                positions
            }));
        }
        let mut acknowledged = Vec::new();
        for task in tasks {
            acknowledged.extend(task.await.unwrap());
        }
        let total = APPENDER_TASKS * APPENDS_PER_TASK;
        let positions: BTreeSet<Position> =
            acknowledged.iter().map(|(position, _)| *position).collect();
        assert_eq!(
            positions,
            (1..=total).map(Position).collect(),
            "every position once, none missing"
        );
        let records = read_all(&log).await;
        assert_eq!(
            records.len() as u64,
            total,
            "nothing beyond the acknowledged appends"
        );
        for (position, id) in acknowledged {
            assert_eq!(
                message_ids(&records[position.get() as usize - 1]),
                vec![id],
                "position {position} holds its append"
            );
        }
    })
    .await;
}
