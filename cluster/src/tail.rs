//! [`Tail`]: the records of the log in position order from a given position, live.

use crate::config::RETRY_BACKOFF_MIN_MS;
use crate::log::Inner;
use crate::{LogError, Record};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::{Stream, StreamExt as _};
use osmium_proto::ids::Position;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest pull request of the tail's ordered consumer, in milliseconds. Its idle
/// heartbeat is half of it, and two missed heartbeats make the consumer be recreated: a
/// consumer lost with its node is noticed within about this time.
pub const TAIL_PULL_EXPIRES_MS: u64 = 5_000;

/// A tail that received nothing for this long asks the stream for its last position, and
/// recreates its consumer when the stream holds the position it waits for: the client's
/// heartbeat check alone was seen to leave a consumer lost with its node stalled for more
/// than a minute (regression test: the engine's
/// `a_node_killed_and_a_nats_node_killed_under_load_lose_and_double_nothing`, which failed
/// 2 runs in 4 without this check).
pub const TAIL_STALL_CHECK_MS: u64 = TAIL_PULL_EXPIRES_MS;

/// The log's records from a position on, in position order, as they are stored; never
/// ends by itself. An item is an error only for a record that does not decode
/// ([`LogError::Decode`], naming its position); the tail then goes on with the next one.
/// Dropping it stops its task.
#[derive(Debug)]
pub struct Tail {
    records: mpsc::Receiver<Result<Record, LogError>>,
    task: JoinHandle<()>,
}

impl Tail {
    pub(crate) fn start(inner: Arc<Inner>, from: Position) -> Tail {
        let (sender, records) = mpsc::channel(inner.config.tail_buffer_records_max);
        let task = tokio::spawn(follow(inner, Position(from.get().max(1)), sender));
        Tail { records, task }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for Tail {
    type Item = Result<Record, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.records.poll_recv(cx)
    }
}

/// Follows the stream from `next` with an ordered consumer (no acknowledgements, one
/// replica, in memory: recreated by the client when it sees a gap or misses heartbeats),
/// and recreates it from the next undelivered position whenever it fails or ends.
async fn follow(
    inner: Arc<Inner>,
    mut next: Position,
    sender: mpsc::Sender<Result<Record, LogError>>,
) {
    let stream_name = inner.config.stream_name.clone();
    let backoff_max =
        Duration::from_millis(inner.config.retry_backoff_max_ms.max(RETRY_BACKOFF_MIN_MS));
    let mut backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
    loop {
        let config = pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: next.get(),
            },
            max_expires: Duration::from_millis(TAIL_PULL_EXPIRES_MS),
            ..pull::OrderedConfig::default()
        };
        let messages = match inner
            .js
            .context
            .create_consumer_on_stream(config, stream_name.as_str())
            .await
        {
            Ok(consumer) => consumer.messages().await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match messages {
            Err(detail) => tracing::debug!(%detail, %next, "tail: no consumer yet; retrying"),
            Ok(mut messages) => loop {
                let stall_check = tokio::time::sleep(Duration::from_millis(TAIL_STALL_CHECK_MS));
                let item = tokio::select! {
                    item = messages.next() => item,
                    () = sender.closed() => return,
                    () = stall_check => {
                        if stalled(&inner, next).await {
                            tracing::warn!(%next, "tail: nothing delivered though the stream holds the next position; recreating the consumer");
                            break;
                        }
                        continue;
                    }
                };
                let message = match item {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, %next, "tail: consumer failed; recreating");
                        break;
                    }
                    None => break,
                };
                let sequence = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(err) => {
                        tracing::debug!(error = %err, %next, "tail: message without stream sequence; recreating");
                        break;
                    }
                };
                if sequence < next.get() {
                    continue; // delivered again after a recreation
                }
                if sequence > next.get() {
                    tracing::warn!(%next, sequence, "tail: position skipped by the consumer; recreating from the missing one");
                    break;
                }
                let record = crate::record::decode(
                    &inner.subjects,
                    next,
                    message.subject.as_str(),
                    &message.payload,
                );
                if sender.send(record).await.is_err() {
                    return;
                }
                next = next.next();
                backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
            },
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = sender.closed() => return,
        }
        backoff = (backoff * 2).min(backoff_max);
    }
}

/// Whether the stream holds position `next`, which the tail has waited
/// [`TAIL_STALL_CHECK_MS`] for (a stream it cannot ask counts as not: the consumer's own
/// errors then recreate it).
async fn stalled(inner: &Inner, next: Position) -> bool {
    match inner.js.info_once(&inner.config.stream_name).await {
        Ok(Some(info)) => info.state.last_sequence >= next.get(),
        Ok(None) | Err(_) => false,
    }
}
