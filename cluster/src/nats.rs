//! The few JetStream calls the log makes, each bounded in time, classified into "retry"
//! (no leader, no connection, no answer) and "fail", and retried with a bounded backoff.

use crate::config::RETRY_BACKOFF_MIN_MS;
use crate::{JetStreamLogConfig, LogError};
use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishErrorKind, RequestErrorKind};
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{Info, RawMessage};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use serde::Deserialize;
use std::error::Error as _;
use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

/// Header naming the call that published a record (a nuid): tells a call's own record from
/// an earlier call's with the same idempotency key (same `Nats-Msg-Id`, maybe same bytes).
pub(crate) const APPEND_ID_HEADER: &str = "Osmium-Append-Id";
/// JetStream's error code for a wrong expected last (subject) sequence.
const WRONG_LAST_SEQUENCE_ERROR_CODE: u64 = 10071;
/// JetStream's error code for "no message found".
const NO_MESSAGE_FOUND_ERROR_CODE: u64 = 10037;
/// JetStream's error code for "stream not found".
const STREAM_NOT_FOUND_ERROR_CODE: u64 = 10059;
/// JetStream's error code for "JetStream cluster not available" (no meta leader yet).
const CLUSTER_NOT_AVAILABLE_ERROR_CODE: u64 = 10008;
/// JetStream's error code for "no suitable peers for placement": a cluster that has just
/// started does not know all of its peers yet (seen creating a stream of 3 replicas on a
/// cluster of 3 nodes moments after they started).
const CLUSTER_NO_PEERS_ERROR_CODE: u64 = 10005;
/// HTTP-like status JetStream answers while it cannot serve (no leader, catching up).
const UNAVAILABLE_STATUS: usize = 503;

/// One try of an operation: succeed, try again, or give up.
pub(crate) enum Attempt<E> {
    /// Transient: the log is unavailable right now (what was said).
    Retry(String),
    /// Final.
    Fail(E),
}

/// A publish the server took: the stream sequence and whether it is a duplicate of a
/// message with the same `Nats-Msg-Id` inside the duplicate window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) duplicate: bool,
}

/// Why a publish was not stored.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The subject's last message is not the expected one; `found` as the server said it.
    WrongLast { found: Option<u64> },
    /// Anything else.
    Failed(LogError),
}

impl From<LogError> for Refused {
    fn from(error: LogError) -> Self {
        Refused::Failed(error)
    }
}

#[derive(Deserialize)]
struct GetResponse {
    message: RawMessage,
}

/// The JetStream context with the log's timeouts and retry bounds.
#[derive(Clone, Debug)]
pub(crate) struct Js {
    pub(crate) context: Context,
    retry_max: Duration,
    backoff_max: Duration,
}

impl Js {
    pub(crate) fn new(client: async_nats::Client, config: &JetStreamLogConfig) -> Js {
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .max_ack_inflight(config.acks_in_flight_max)
            .backpressure_on_inflight(true)
            .build(client);
        Js {
            context,
            retry_max: Duration::from_millis(config.unavailable_retry_max_ms),
            backoff_max: Duration::from_millis(
                config.retry_backoff_max_ms.max(RETRY_BACKOFF_MIN_MS),
            ),
        }
    }

    /// Runs `attempt` until it succeeds or fails, retrying for at most `retry_max` in all.
    pub(crate) async fn retrying<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<T, E>
    where
        E: From<LogError>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt<E>>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Fail(error)) => return Err(error),
                Err(Attempt::Retry(detail)) => {
                    if started.elapsed() + backoff > self.retry_max {
                        return Err(LogError::Unavailable { operation, detail }.into());
                    }
                    tracing::debug!(operation, %detail, backoff_ms = backoff.as_millis() as u64, "unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.backoff_max);
                }
            }
        }
    }

    /// Publishes `payload` to `subject` with `Nats-Msg-Id: msg_id` and, when given,
    /// `Nats-Expected-Last-Subject-Sequence` and [`APPEND_ID_HEADER`]; retried with the
    /// same headers (so stored once, inside the duplicate window) while the stream has no
    /// leader or no answer comes.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        expected_last: Option<u64>,
        append_id: Option<&str>,
        payload: Bytes,
    ) -> Result<Stored, Refused> {
        self.retrying("publish", || {
            let mut message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(msg_id);
            if let Some(sequence) = expected_last {
                message = message.expected_last_subject_sequence(sequence);
            }
            if let Some(append_id) = append_id {
                message = message.header(APPEND_ID_HEADER, append_id);
            }
            let subject = subject.to_owned();
            async move {
                let ack = match self.context.send_publish(subject, message).await {
                    Ok(future) => future.into_future().await,
                    Err(error) => Err(error),
                };
                match ack {
                    Ok(ack) => Ok(Stored {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    }),
                    Err(error) => Err(classify_publish(&error)),
                }
            }
        })
        .await
    }

    /// `STREAM.MSG.GET` (answered by the stream's leader, so it sees every acknowledged
    /// publish): `None` when there is no such message.
    pub(crate) async fn get(
        &self,
        stream_name: &str,
        request: serde_json::Value,
    ) -> Result<Option<StreamMessage>, LogError> {
        let subject = format!("STREAM.MSG.GET.{stream_name}");
        self.retrying("get a record", || async {
            let response: Response<GetResponse> = self
                .context
                .request(subject.clone(), &request)
                .await
                .map_err(|error| classify_request(&error))?;
            match response {
                Response::Ok(found) => {
                    StreamMessage::try_from(found.message)
                        .map(Some)
                        .map_err(|error| {
                            Attempt::Fail(LogError::Server {
                                operation: "get a record",
                                detail: format!("undecodable answer: {error}"),
                            })
                        })
                }
                Response::Err { error } if error.error_code().0 == NO_MESSAGE_FOUND_ERROR_CODE => {
                    Ok(None)
                }
                Response::Err { error } => Err(classify_api("get a record", &error)),
            }
        })
        .await
    }

    /// `STREAM.INFO`; `None` when the stream does not exist.
    pub(crate) async fn info(&self, stream_name: &str) -> Result<Option<Info>, LogError> {
        self.retrying("stream info", || self.info_once(stream_name))
            .await
    }

    /// `STREAM.INFO` once.
    pub(crate) async fn info_once(
        &self,
        stream_name: &str,
    ) -> Result<Option<Info>, Attempt<LogError>> {
        let subject = format!("STREAM.INFO.{stream_name}");
        let response: Response<Info> = self
            .context
            .request(subject, &())
            .await
            .map_err(|error| classify_request(&error))?;
        match response {
            Response::Ok(info) => Ok(Some(info)),
            Response::Err { error } if error.error_code().0 == STREAM_NOT_FOUND_ERROR_CODE => {
                Ok(None)
            }
            Response::Err { error } => Err(classify_api("stream info", &error)),
        }
    }

    /// `STREAM.CREATE` once (no retry: the caller looks again and decides).
    pub(crate) async fn create(
        &self,
        config: &jetstream::stream::Config,
    ) -> Result<Info, Attempt<LogError>> {
        let subject = format!("STREAM.CREATE.{}", config.name);
        let response: Response<Info> = self
            .context
            .request(subject, config)
            .await
            .map_err(|error| classify_request(&error))?;
        match response {
            Response::Ok(info) => Ok(info),
            Response::Err { error } => Err(classify_api("create the stream", &error)),
        }
    }
}

/// The `Nats-Msg-Id` of a stored message.
pub(crate) fn msg_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|value| value.as_str())
}

/// The [`APPEND_ID_HEADER`] of a stored message.
pub(crate) fn append_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(APPEND_ID_HEADER).map(|value| value.as_str())
}

fn classify_publish(error: &jetstream::context::PublishError) -> Attempt<Refused> {
    match error.kind() {
        PublishErrorKind::WrongLastSequence => Attempt::Fail(Refused::WrongLast {
            found: found_sequence(&error.to_string()),
        }),
        // No responders: nobody listens on the subject, which in a cluster means the
        // stream has no leader right now (the stream exists: `open` made sure).
        PublishErrorKind::StreamNotFound => {
            Attempt::Retry("no responders (no stream leader)".to_owned())
        }
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => Attempt::Retry(error.to_string()),
        PublishErrorKind::MaxPayloadExceeded => Attempt::Fail(Refused::Failed(
            LogError::InvalidAppend(format!("record too large: {error}")),
        )),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::Other => match error
            .source()
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
        {
            Some(api) if api.error_code().0 == WRONG_LAST_SEQUENCE_ERROR_CODE => {
                Attempt::Fail(Refused::WrongLast {
                    found: found_sequence(&api.to_string()),
                })
            }
            Some(api) => match classify_api("publish", api) {
                Attempt::Retry(detail) => Attempt::Retry(detail),
                Attempt::Fail(failure) => Attempt::Fail(Refused::Failed(failure)),
            },
            // The connection went away under the request: transient.
            None => Attempt::Retry(error.to_string()),
        },
    }
}

fn classify_request(error: &jetstream::context::RequestError) -> Attempt<LogError> {
    match error.kind() {
        // No answer, nobody listening (no leader), or the connection went away under the request.
        RequestErrorKind::TimedOut | RequestErrorKind::NoResponders | RequestErrorKind::Other => {
            Attempt::Retry(error.to_string())
        }
        RequestErrorKind::InvalidSubject => Attempt::Fail(LogError::Server {
            operation: "request",
            detail: error.to_string(),
        }),
    }
}

fn classify_api(operation: &'static str, error: &jetstream::Error) -> Attempt<LogError> {
    if error.code() == UNAVAILABLE_STATUS
        || error.error_code().0 == CLUSTER_NOT_AVAILABLE_ERROR_CODE
        || error.error_code().0 == CLUSTER_NO_PEERS_ERROR_CODE
    {
        Attempt::Retry(error.to_string())
    } else {
        Attempt::Fail(LogError::Server {
            operation,
            detail: error.to_string(),
        })
    }
}

/// The sequence in JetStream's "wrong last sequence: N" (error 10071).
fn found_sequence(message: &str) -> Option<u64> {
    let (_, rest) = message.rsplit_once("wrong last sequence: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{Attempt, classify_api, found_sequence};

    fn api_error(code: usize, err_code: u64, description: &str) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({ "code": code, "err_code": err_code, "description": description }))
            .unwrap()
    }

    /// Regression: CI once failed opening a log on a cluster started a moment before.
    #[test]
    fn no_suitable_peers_for_placement_is_retried_as_a_cluster_still_forming() {
        let error = api_error(400, 10005, "no suitable peers for placement");
        assert!(matches!(classify_api("create the stream", &error), Attempt::Retry(_)));
    }

    #[test]
    fn a_request_the_server_refuses_for_good_fails_at_once() {
        let error = api_error(400, 10058, "stream name already in use with a different configuration");
        assert!(matches!(classify_api("create the stream", &error), Attempt::Fail(_)));
    }

    #[test]
    fn the_found_sequence_is_read_from_the_servers_message() {
        assert_eq!(
            found_sequence(
                "wrong last sequence: wrong last sequence: 17 (code 400, error code 10071)"
            ),
            Some(17)
        );
        assert_eq!(found_sequence("wrong last sequence: 0"), Some(0));
        assert_eq!(found_sequence("wrong last sequence"), None);
    }
}
