//! [`JetStreamLog`]: the log's contract over one replicated JetStream stream.

use crate::config::{
    APPEND_EVENTS_MAX, IDEMPOTENCY_KEY_MAX_BYTES, IDEMPOTENCY_SCAN_RECORDS_MAX, READ_RECORDS_MAX,
};
use crate::nats::{self, Attempt, Js, Refused, Stored};
use crate::record::{self, Subjects, hex, key_hash};
use crate::tail::Tail;
use crate::{ExpectedLast, JetStreamLogConfig, LogError, Record};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, Info, RetentionPolicy, StorageType,
};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use osmium_proto::events::{EventEnvelope, event_envelope::Event};
use osmium_proto::ids::{Position, StreamId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    /// The stored record: the original one when `deduplicated`.
    pub record: Record,
    /// True when the idempotency key had been used by an earlier append (or the same
    /// publish was stored by an earlier call): `record` is that append's, nothing new was
    /// written.
    pub deduplicated: bool,
}

impl Appended {
    /// The record's position (the stream sequence of its message).
    pub fn position(&self) -> Position {
        self.record.position
    }
}

/// The replication of the log's stream, as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    /// The server name of the stream's leader (`None` during an election).
    pub leader: Option<String>,
    /// The other replicas.
    pub followers: Vec<Follower>,
    /// The log's last position.
    pub last_position: Position,
}

impl Replication {
    /// Whether there is a leader and every follower is online and current.
    pub fn all_current(&self) -> bool {
        self.leader.is_some()
            && self
                .followers
                .iter()
                .all(|follower| follower.current && !follower.offline)
    }
}

/// One follower of the log's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follower {
    /// Its server name.
    pub name: String,
    /// Whether it has every committed record.
    pub current: bool,
    /// Whether the group considers it offline.
    pub offline: bool,
    /// Operations it is behind the leader.
    pub lag: u64,
}

/// An idempotency record: the messages of `<prefix>.idem.<sha256 of key>` in the
/// `<stream>_IDEM` stream. The claim is written with expected last subject sequence 0 (the
/// first writer wins), the outcome with the claim's sequence.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
enum IdempotencyRecord {
    /// An append with this key is being made to `subject`; its record, if stored, is the
    /// first message on `subject` after `after` whose `Nats-Msg-Id` is `k-<hash>`.
    Claimed {
        key: String,
        subject: String,
        after: u64,
    },
    /// The append with this key is stored at `position`.
    Done {
        key: String,
        subject: String,
        position: u64,
    },
}

/// The event log replicated over a NATS JetStream cluster: the contract of the engine's
/// local log (append with an expected version and a durable idempotency key, gapless
/// positions, reads, a tail) with positions assigned by the stream's leader. Cheap to
/// clone; every clone shares one connection.
#[derive(Clone, Debug)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: JetStreamLogConfig,
    pub(crate) js: Js,
    pub(crate) subjects: Subjects,
    idempotency_stream: String,
}

impl JetStreamLog {
    /// Connects to `config.servers` and creates the log's streams, or checks that the
    /// existing ones are configured as this log needs (replicas, subjects, nothing ever
    /// deleted). Waits up to `open_timeout_ms` (plus one `request_timeout_ms`) for a
    /// cluster that is still starting, then fails with [`LogError::Unavailable`].
    pub async fn open(config: JetStreamLogConfig) -> Result<JetStreamLog, LogError> {
        config.validate()?;
        let mut servers = Vec::with_capacity(config.servers.len());
        for server in &config.servers {
            servers.push(
                server
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|err| LogError::Config(format!("server {server:?}: {err}")))?,
            );
        }
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let backoff_max_ms = config.retry_backoff_max_ms.max(1);
        let client = async_nats::ConnectOptions::new()
            .name("osmium-cluster")
            .connection_timeout(request_timeout)
            .request_timeout(Some(request_timeout))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                Duration::from_millis((50 * attempts as u64).min(backoff_max_ms))
            })
            .connect(servers)
            .await
            .map_err(|err| LogError::Unavailable {
                operation: "connect",
                detail: err.to_string(),
            })?;
        let js = Js::new(client, &config);
        let subjects = Subjects::new(&config.subject_prefix);
        let idempotency_stream = config.idempotency_stream_name();
        let inner = Inner {
            js,
            subjects,
            idempotency_stream,
            config,
        };
        let deadline = Instant::now() + Duration::from_millis(inner.config.open_timeout_ms);
        inner
            .ensure_stream(inner.log_stream_config(), deadline)
            .await?;
        inner
            .ensure_stream(inner.idempotency_stream_config(), deadline)
            .await?;
        Ok(JetStreamLog {
            inner: Arc::new(inner),
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &JetStreamLogConfig {
        &self.inner.config
    }

    /// Appends `events` to `stream` as one record if the stream's last record is where
    /// `expected` says.
    ///
    /// - stream elsewhere: [`LogError::Conflict`] naming where, nothing written;
    /// - `idempotency_key` used before (ever: inside JetStream's duplicate window by
    ///   `Nats-Msg-Id`, beyond it by the durable idempotency records): the original
    ///   record, `deduplicated`, nothing written; used for another stream:
    ///   [`LogError::Duplicate`];
    /// - otherwise the record is stored on a quorum of the replicas before this returns,
    ///   at the next position. While the stream has no leader the publish is retried with
    ///   the same `Nats-Msg-Id` for up to `unavailable_retry_max_ms` (stored once), then
    ///   [`LogError::Unavailable`]: retry the call with the same key.
    pub async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedLast,
        actor: UserId,
        events: Vec<Event>,
        idempotency_key: Option<Vec<u8>>,
    ) -> Result<Appended, LogError> {
        if events.is_empty() || events.len() > APPEND_EVENTS_MAX {
            return Err(LogError::InvalidAppend(format!(
                "{} events: an append has 1 to {APPEND_EVENTS_MAX}",
                events.len()
            )));
        }
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES)
        {
            return Err(LogError::InvalidAppend(format!(
                "idempotency key of {} bytes: 1 to {IDEMPOTENCY_KEY_MAX_BYTES}",
                key.len()
            )));
        }
        if let ExpectedLast::At(Position(0)) = expected {
            return Err(LogError::InvalidAppend(
                "ExpectedLast::At(0): use ExpectedLast::NoStream".to_owned(),
            ));
        }
        let recorded_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let envelopes: Vec<EventEnvelope> = events
            .into_iter()
            .map(|event| EventEnvelope {
                position: 0,
                stream: Some(record::stream_ref(stream)),
                // The expectation travels with the record (see `Record::expected_last`).
                stream_version: expected.subject_sequence().map_or(0, |last| last + 1),
                recorded_at_ms,
                actor_id: actor.get(),
                event: Some(event),
            })
            .collect();
        let append = Pending {
            append_id: nuid::next().to_string(),
            stream,
            subject: self.inner.subjects.stream(stream),
            expected,
            payload: record::encode(&envelopes),
            envelopes,
        };
        match idempotency_key {
            None => {
                let msg_id = format!("n-{}", nuid::next());
                self.inner.publish_event(&append, &msg_id).await
            }
            Some(key) => self.inner.append_keyed(&append, &key).await,
        }
    }

    /// Up to `limit` (at most [`READ_RECORDS_MAX`]) records from position `from`
    /// (inclusive) on, in position order, up to the last position when asked. Each record is
    /// read from the stream's leader, so an acknowledged append is always seen.
    pub async fn read(&self, from: Position, limit: usize) -> Result<Vec<Record>, LogError> {
        let from = from.get().max(1);
        let limit = limit.min(READ_RECORDS_MAX) as u64;
        let last = self.last_position().await?;
        if limit == 0 || from > last.get() {
            return Ok(Vec::new());
        }
        let end = last.get().min(from + limit - 1);
        let inner = &self.inner;
        futures_util::stream::iter(from..=end)
            .map(|sequence| inner.record_at(Position(sequence), last))
            .buffered(inner.config.read_gets_in_flight_max)
            .try_collect()
            .await
    }

    /// The newest position (0 for an empty log).
    pub async fn last_position(&self) -> Result<Position, LogError> {
        let info = self.inner.js.info(&self.inner.config.stream_name).await?;
        let info = info.ok_or_else(|| {
            LogError::Config(format!("stream {} is gone", self.inner.config.stream_name))
        })?;
        Ok(Position(info.state.last_sequence))
    }

    /// The position of `stream`'s last record (0: none): what to pass as
    /// `ExpectedLast::at` after catching up.
    pub async fn stream_last_position(&self, stream: StreamId) -> Result<Position, LogError> {
        self.inner
            .stream_last(&self.inner.subjects.stream(stream))
            .await
            .map(Position)
    }

    /// Up to `limit` (at most [`READ_RECORDS_MAX`]) records of `stream` after position
    /// `after`, in position order: how a node catches up on one stream after a conflict.
    pub async fn read_stream(
        &self,
        stream: StreamId,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Record>, LogError> {
        let subject = self.inner.subjects.stream(stream);
        let mut records = Vec::new();
        let mut from = after.get() + 1;
        while records.len() < limit.min(READ_RECORDS_MAX) {
            let Some(message) = self.inner.next_on_subject(&subject, from).await? else {
                break;
            };
            from = message.sequence + 1;
            records.push(self.inner.decode(&message)?);
        }
        Ok(records)
    }

    /// Who leads the log's stream and how current its followers are (from `STREAM.INFO`,
    /// answered by the leader; retried while there is none, up to
    /// `unavailable_retry_max_ms`).
    pub async fn replication(&self) -> Result<Replication, LogError> {
        let info = self.inner.js.info(&self.inner.config.stream_name).await?;
        let info = info.ok_or_else(|| {
            LogError::Config(format!("stream {} is gone", self.inner.config.stream_name))
        })?;
        let cluster = info.cluster.unwrap_or_default();
        let followers = cluster
            .replicas
            .into_iter()
            .map(|peer| Follower {
                name: peer.name,
                current: peer.current,
                offline: peer.offline,
                lag: peer.lag.unwrap_or(0),
            })
            .collect();
        Ok(Replication {
            leader: cluster.leader,
            followers,
            last_position: Position(info.state.last_sequence),
        })
    }

    /// Every record from position `from` (inclusive) on, in position order, then each new
    /// one as it is stored; never ends. It follows an ordered consumer and recreates it
    /// from the next position when a node, the connection or the consumer goes away, so a
    /// NATS node restart only delays it. Dropping it stops it.
    pub fn tail(&self, from: Position) -> Tail {
        Tail::start(self.inner.clone(), from)
    }
}

/// One append on its way.
struct Pending {
    /// This call's id, in the record's `Osmium-Append-Id` header.
    append_id: String,
    stream: StreamId,
    subject: String,
    expected: ExpectedLast,
    envelopes: Vec<EventEnvelope>,
    payload: Bytes,
}

impl Inner {
    fn log_stream_config(&self) -> StreamConfig {
        self.stream_config(
            self.config.stream_name.clone(),
            self.subjects.log_filters(),
            "osmium event log (osmium-cluster)",
        )
    }

    fn idempotency_stream_config(&self) -> StreamConfig {
        self.stream_config(
            self.idempotency_stream.clone(),
            self.subjects.idempotency_filters(),
            "osmium idempotency records (osmium-cluster)",
        )
    }

    /// Never deletes: no age, count or size limit, deletes and purges denied; file
    /// storage; `replicas` copies.
    fn stream_config(
        &self,
        name: String,
        subjects: Vec<String>,
        description: &str,
    ) -> StreamConfig {
        StreamConfig {
            name,
            description: Some(description.to_owned()),
            subjects,
            retention: RetentionPolicy::Limits,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_age: Duration::ZERO,
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            duplicate_window: Duration::from_millis(self.config.duplicate_window_ms),
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            ..StreamConfig::default()
        }
    }

    async fn ensure_stream(&self, wanted: StreamConfig, deadline: Instant) -> Result<(), LogError> {
        loop {
            let attempt = match self.js.info_once(&wanted.name).await {
                Ok(Some(info)) => return check_stream(&wanted, &info),
                Ok(None) => match self.js.create(&wanted).await {
                    Ok(info) => return check_stream(&wanted, &info),
                    // Created meanwhile by another node: look again.
                    Err(Attempt::Fail(LogError::Server { detail, .. }))
                        if detail.contains("already in use") =>
                    {
                        Attempt::Retry(detail)
                    }
                    Err(other) => other,
                },
                Err(attempt) => attempt,
            };
            match attempt {
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(detail) if Instant::now() >= deadline => {
                    return Err(LogError::Unavailable {
                        operation: "open the log's streams",
                        detail,
                    });
                }
                Attempt::Retry(detail) => {
                    tracing::debug!(stream = %wanted.name, %detail, "waiting for the cluster");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    pub(crate) fn decode(&self, message: &StreamMessage) -> Result<Record, LogError> {
        record::decode(
            &self.subjects,
            Position(message.sequence),
            message.subject.as_str(),
            &message.payload,
        )
    }

    async fn record_at(&self, position: Position, last: Position) -> Result<Record, LogError> {
        match self
            .js
            .get(&self.config.stream_name, json!({ "seq": position.get() }))
            .await?
        {
            Some(message) => self.decode(&message),
            None => Err(LogError::Missing { position, last }),
        }
    }

    async fn next_on_subject(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<Option<StreamMessage>, LogError> {
        self.js
            .get(
                &self.config.stream_name,
                json!({ "seq": from, "next_by_subj": subject }),
            )
            .await
    }

    async fn stream_last(&self, subject: &str) -> Result<u64, LogError> {
        let message = self
            .js
            .get(&self.config.stream_name, json!({ "last_by_subj": subject }))
            .await?;
        Ok(message.map_or(0, |message| message.sequence))
    }

    /// What was stored at `stored`: ours (`deduplicated: false`) when it carries this
    /// call's `Osmium-Append-Id`, else the earlier call's record.
    async fn outcome(&self, append: &Pending, stored: Stored) -> Result<crate::Appended, LogError> {
        let position = Position(stored.sequence);
        if !stored.duplicate {
            return Ok(Appended {
                record: ours(append, position),
                deduplicated: false,
            });
        }
        let message = self
            .js
            .get(&self.config.stream_name, json!({ "seq": stored.sequence }))
            .await?;
        let message = message.ok_or(LogError::Missing {
            position,
            last: position,
        })?;
        if nats::append_id(&message.headers) == Some(append.append_id.as_str()) {
            return Ok(Appended {
                record: ours(append, position),
                deduplicated: false,
            });
        }
        Ok(Appended {
            record: self.decode(&message)?,
            deduplicated: true,
        })
    }

    /// Publishes the append's record with `msg_id`. A conflict may be this call's own
    /// earlier attempt (stored, its acknowledgement lost, then the duplicate window
    /// checked after the expected sequence): the record right after the expected one is
    /// then ours.
    async fn publish_event(&self, append: &Pending, msg_id: &str) -> Result<Appended, LogError> {
        let expected = append.expected.subject_sequence();
        match self
            .js
            .publish(
                &append.subject,
                msg_id,
                expected,
                Some(&append.append_id),
                append.payload.clone(),
            )
            .await
        {
            Ok(stored) => self.outcome(append, stored).await,
            Err(Refused::Failed(error)) => Err(error),
            Err(Refused::WrongLast { found }) => {
                let after = expected.unwrap_or(0);
                if let Some(next) = self.next_on_subject(&append.subject, after + 1).await?
                    && nats::msg_id(&next.headers) == Some(msg_id)
                {
                    return self
                        .outcome(
                            append,
                            Stored {
                                sequence: next.sequence,
                                duplicate: true,
                            },
                        )
                        .await;
                }
                let found = match found {
                    Some(found) => found,
                    None => self.stream_last(&append.subject).await?,
                };
                Err(LogError::Conflict {
                    stream: append.stream,
                    expected: append.expected,
                    found: Position(found),
                })
            }
        }
    }

    /// An append with an idempotency key: claim the key (first writer wins), publish, record
    /// the outcome. A key already claimed is resolved: its outcome, or a search of the
    /// stream for the record of the claim's append, or (not stored) a publish now.
    async fn append_keyed(&self, append: &Pending, key: &[u8]) -> Result<Appended, LogError> {
        let hash = key_hash(key);
        let key_subject = self.subjects.idempotency(&hash);
        let msg_id = format!("k-{hash}");
        let after = match append.expected {
            ExpectedLast::At(position) => position.get(),
            ExpectedLast::NoStream => 0,
            ExpectedLast::Any => self.stream_last(&append.subject).await?,
        };
        let claim = IdempotencyRecord::Claimed {
            key: hex(key),
            subject: append.subject.clone(),
            after,
        };
        match self
            .publish_key_record(&key_subject, &format!("c-{hash}"), 0, &claim)
            .await
        {
            Ok(stored) if !stored.duplicate => {
                let appended = self.publish_event(append, &msg_id).await?;
                self.complete(
                    &key_subject,
                    &hash,
                    stored.sequence,
                    key,
                    append,
                    appended.position(),
                )
                .await;
                Ok(appended)
            }
            // Claimed before (by an earlier call, or by this one before a lost acknowledgement).
            Ok(_) | Err(Refused::WrongLast { .. }) => {
                self.resolve(append, key, &hash, &key_subject, &msg_id)
                    .await
            }
            Err(Refused::Failed(error)) => Err(error),
        }
    }

    async fn resolve(
        &self,
        append: &Pending,
        key: &[u8],
        hash: &str,
        key_subject: &str,
        msg_id: &str,
    ) -> Result<Appended, LogError> {
        let message = self
            .js
            .get(
                &self.idempotency_stream,
                json!({ "last_by_subj": key_subject }),
            )
            .await?;
        let message = message.ok_or_else(|| LogError::Server {
            operation: "resolve an idempotency key",
            detail: format!("{key_subject} refused a first claim but has no record"),
        })?;
        let claim_sequence = message.sequence;
        let found: IdempotencyRecord =
            serde_json::from_slice(&message.payload).map_err(|err| LogError::Server {
                operation: "resolve an idempotency key",
                detail: format!("idempotency record {key_subject} at {claim_sequence}: {err}"),
            })?;
        let (found_key, subject) = match &found {
            IdempotencyRecord::Claimed { key, subject, .. }
            | IdempotencyRecord::Done { key, subject, .. } => (key, subject),
        };
        if *found_key != hex(key) {
            return Err(LogError::Server {
                operation: "resolve an idempotency key",
                detail: format!("SHA-256 collision of two idempotency keys on {key_subject}"),
            });
        }
        if *subject != append.subject {
            let original_stream =
                self.subjects
                    .parse_stream(subject)
                    .ok_or_else(|| LogError::Server {
                        operation: "resolve an idempotency key",
                        detail: format!(
                            "idempotency record {key_subject} names subject {subject:?}"
                        ),
                    })?;
            let original_position = match found {
                IdempotencyRecord::Done { position, .. } => Position(position),
                IdempotencyRecord::Claimed { .. } => Position::ZERO,
            };
            return Err(LogError::Duplicate {
                original_stream,
                original_position,
            });
        }
        match found {
            IdempotencyRecord::Done { position, .. } => {
                self.outcome(
                    append,
                    Stored {
                        sequence: position,
                        duplicate: true,
                    },
                )
                .await
            }
            IdempotencyRecord::Claimed { after, .. } => {
                let appended = match self.search(&append.subject, after, msg_id).await? {
                    Some(sequence) => {
                        self.outcome(
                            append,
                            Stored {
                                sequence,
                                duplicate: true,
                            },
                        )
                        .await?
                    }
                    None => self.publish_event(append, msg_id).await?,
                };
                self.complete(
                    key_subject,
                    hash,
                    claim_sequence,
                    key,
                    append,
                    appended.position(),
                )
                .await;
                Ok(appended)
            }
        }
    }

    /// The first record on `subject` after `after` published with `msg_id`.
    async fn search(
        &self,
        subject: &str,
        after: u64,
        msg_id: &str,
    ) -> Result<Option<u64>, LogError> {
        let mut from = after + 1;
        for _ in 0..IDEMPOTENCY_SCAN_RECORDS_MAX {
            let Some(message) = self.next_on_subject(subject, from).await? else {
                return Ok(None);
            };
            if nats::msg_id(&message.headers) == Some(msg_id) {
                return Ok(Some(message.sequence));
            }
            from = message.sequence + 1;
        }
        Err(LogError::Server {
            operation: "resolve an idempotency key",
            detail: format!(
                "more than {IDEMPOTENCY_SCAN_RECORDS_MAX} records on {subject} after the claim at {after}: not searched further"
            ),
        })
    }

    /// Records the outcome of a claimed key. Best effort: the append is stored whatever
    /// happens here, and a later retry finds it by searching the stream.
    async fn complete(
        &self,
        key_subject: &str,
        hash: &str,
        claim_sequence: u64,
        key: &[u8],
        append: &Pending,
        position: Position,
    ) {
        let done = IdempotencyRecord::Done {
            key: hex(key),
            subject: append.subject.clone(),
            position: position.get(),
        };
        match self
            .publish_key_record(key_subject, &format!("d-{hash}"), claim_sequence, &done)
            .await
        {
            Ok(_) | Err(Refused::WrongLast { .. }) => {}
            Err(Refused::Failed(error)) => {
                tracing::warn!(%key_subject, %position, %error, "idempotency outcome not recorded (a retry will search the stream)");
            }
        }
    }

    async fn publish_key_record(
        &self,
        key_subject: &str,
        msg_id: &str,
        expected_last: u64,
        record: &IdempotencyRecord,
    ) -> Result<Stored, Refused> {
        let payload = serde_json::to_vec(record).map_err(|err| LogError::Server {
            operation: "encode an idempotency record",
            detail: err.to_string(),
        })?;
        self.js
            .publish(
                key_subject,
                msg_id,
                Some(expected_last),
                None,
                Bytes::from(payload),
            )
            .await
    }
}

fn ours(append: &Pending, position: Position) -> Record {
    let mut events = append.envelopes.clone();
    for event in &mut events {
        event.position = position.get();
    }
    Record {
        position,
        stream: append.stream,
        events,
    }
}

/// The stream found on the server keeps what this log needs.
fn check_stream(wanted: &StreamConfig, info: &Info) -> Result<(), LogError> {
    let found = &info.config;
    let mut problems = Vec::new();
    let mut found_subjects = found.subjects.clone();
    let mut wanted_subjects = wanted.subjects.clone();
    found_subjects.sort();
    wanted_subjects.sort();
    if found_subjects != wanted_subjects {
        problems.push(format!(
            "subjects {found_subjects:?}, wanted {wanted_subjects:?}"
        ));
    }
    if found.num_replicas != wanted.num_replicas {
        problems.push(format!(
            "{} replicas, wanted {}",
            found.num_replicas, wanted.num_replicas
        ));
    }
    let unlimited = |value: i64| value <= 0;
    if !unlimited(found.max_messages)
        || !unlimited(found.max_bytes)
        || !unlimited(found.max_messages_per_subject)
        || !found.max_age.is_zero()
    {
        problems.push(
            "limits that delete records (max_msgs, max_bytes, max_msgs_per_subject or max_age set)"
                .to_owned(),
        );
    }
    if found.retention != RetentionPolicy::Limits {
        problems.push(format!("retention {:?}, wanted Limits", found.retention));
    }
    if !found.deny_delete || !found.deny_purge {
        problems
            .push("deletes or purges allowed (deny_delete and deny_purge must be set)".to_owned());
    }
    if found.duplicate_window < wanted.duplicate_window {
        problems.push(format!(
            "duplicate window {:?}, wanted at least {:?}",
            found.duplicate_window, wanted.duplicate_window
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LogError::Config(format!(
            "stream {} exists with {}",
            wanted.name,
            problems.join("; ")
        )))
    }
}
