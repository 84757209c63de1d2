//! An appender that crashed between claiming an idempotency key and recording the outcome
//! leaves a claim without outcome; a retry of the append, even beyond the duplicate window,
//! finds the stored record (or stores it now) and stores nothing twice.
//!
//! The crashed appender's leftovers are written here by hand, as README.md describes them:
//! the claim `{"state":"claimed","key":<hex>,"subject":<subject>,"after":<position>}` on
//! `<prefix>.idem.<sha256 of key>`, and the record with `Nats-Msg-Id: k-<sha256 of key>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use common::{bounded, chat, message, message_ids, read_all, start_with};
use osmium_cluster::{EventBatch, ExpectedLast, JetStreamLogConfig};
use osmium_proto::events::{EventEnvelope, StreamRef, stream_ref};
use osmium_proto::ids::{Position, UserId};
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::time::Duration;

const ACTOR: UserId = UserId(1);
/// Duplicate window of these tests, in milliseconds (waited out).
const SHORT_DUPLICATE_WINDOW_MS: u64 = 1_500;

fn short_window(config: &mut JetStreamLogConfig) {
    config.duplicate_window_ms = SHORT_DUPLICATE_WINDOW_MS;
    config.request_timeout_ms = 500;
    config.unavailable_retry_max_ms = 500;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Publishes `message` and waits for its acknowledgement. A new connection may reach a
/// server that does not know the streams yet (their assignment is still spreading through
/// the cluster, slowly on a loaded machine: `StreamNotFound`); that is retried for up to
/// 10 s with the same message (a `Nats-Msg-Id` or expected sequence keeps it single).
async fn publish_acked(js: &async_nats::jetstream::Context, subject: String, message: PublishMessage) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let acked = match js.send_publish(subject.clone(), message.clone()).await {
            Ok(ack) => ack.await.map(drop),
            Err(err) => Err(err),
        };
        match acked {
            Ok(()) => return,
            Err(err) if std::time::Instant::now() < deadline && err.kind() == PublishErrorKind::StreamNotFound => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("publishing to {subject}: {err}"),
        }
    }
}

/// Publishes what a crashed appender of `key` left: its claim, and when `stored`, its record
/// of message `id` on chat 1.
async fn crashed_append(urls: &[String], key: &[u8], after: u64, stored: Option<u64>) {
    let servers: Vec<async_nats::ServerAddr> =
        urls.iter().map(|url| url.parse().unwrap()).collect();
    let client = async_nats::connect(servers).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let hash = hex(&Sha256::digest(key));
    let claim = serde_json::json!({ "state": "claimed", "key": hex(key), "subject": "osmium.chat.1", "after": after });
    let claim = PublishMessage::build()
        .payload(serde_json::to_vec(&claim).unwrap().into())
        .expected_last_subject_sequence(0);
    publish_acked(&js, format!("osmium.idem.{hash}"), claim).await;
    if let Some(id) = stored {
        let envelope = EventEnvelope {
            stream: Some(StreamRef {
                stream: Some(stream_ref::Stream::ChatId(1)),
            }),
            actor_id: ACTOR.get(),
            event: Some(message(id)),
            ..Default::default()
        };
        let body = EventBatch {
            events: vec![envelope],
        }
        .encode_to_vec();
        let record = PublishMessage::build().payload(body.into()).message_id(format!("k-{hash}"));
        publish_acked(&js, "osmium.chat.1".to_string(), record).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_record_was_stored_is_resolved_to_that_record() {
    let harness = start_with(short_window).await;
    let log = &harness.log;
    bounded("resolve a stored claim", async {
        log.append(
            chat(1),
            ExpectedLast::NoStream,
            ACTOR,
            vec![message(1)],
            None,
        )
        .await
        .unwrap();
        crashed_append(&harness.cluster.urls(), b"send:1:7", 1, Some(7)).await;
        log.append(chat(1), ExpectedLast::Any, ACTOR, vec![message(8)], None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(SHORT_DUPLICATE_WINDOW_MS * 2)).await;

        let retry = log
            .append(
                chat(1),
                ExpectedLast::At(Position(3)),
                ACTOR,
                vec![message(7)],
                Some(b"send:1:7".to_vec()),
            )
            .await
            .unwrap();
        assert!(retry.deduplicated);
        assert_eq!(retry.position(), Position(2));
        assert_eq!(message_ids(&retry.record), vec![7]);
        let again = log
            .append(
                chat(1),
                ExpectedLast::Any,
                ACTOR,
                vec![message(7)],
                Some(b"send:1:7".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(
            (again.deduplicated, again.position()),
            (true, Position(2)),
            "the outcome is recorded now"
        );
        assert_eq!(read_all(log).await.len(), 3, "nothing stored twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_record_was_never_stored_is_appended_once_on_retry() {
    let harness = start_with(short_window).await;
    let log = &harness.log;
    bounded("resolve an unstored claim", async {
        log.append(
            chat(1),
            ExpectedLast::NoStream,
            ACTOR,
            vec![message(1)],
            None,
        )
        .await
        .unwrap();
        crashed_append(&harness.cluster.urls(), b"send:1:9", 1, None).await;
        tokio::time::sleep(Duration::from_millis(SHORT_DUPLICATE_WINDOW_MS * 2)).await;

        let retry = log
            .append(
                chat(1),
                ExpectedLast::At(Position(1)),
                ACTOR,
                vec![message(9)],
                Some(b"send:1:9".to_vec()),
            )
            .await
            .unwrap();
        assert!(!retry.deduplicated, "not stored before: stored now");
        assert_eq!(retry.position(), Position(2));
        let again = log
            .append(
                chat(1),
                ExpectedLast::Any,
                ACTOR,
                vec![message(9)],
                Some(b"send:1:9".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!((again.deduplicated, again.position()), (true, Position(2)));
        assert_eq!(read_all(log).await.len(), 2);
    })
    .await;
}
