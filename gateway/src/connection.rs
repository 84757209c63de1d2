//! One WebSocket connection: this task reads and decodes frames and dispatches calls
//! (at most `calls_in_flight_max` at once, in a `JoinSet` that dies with the connection);
//! one writer task drains the bounded outbound queue; once signed in, one forwarder task
//! moves the user's engine updates into the same queue, bounded both in messages and in
//! encoded bytes (one history page can be megabytes). Whoever finds the queue full
//! closes the connection (1008, with a reason): memory per connection stays bounded.
//!
//! Keep-alive: the writer pings every `ping_interval_ms`; the reader closes the
//! connection (1001, "idle timeout") when nothing at all (frame, pong, heartbeat) arrived
//! for `idle_timeout_ms`. A `ClientMessage` without a call is the official client's
//! heartbeat: counted, never answered (an answer with its `req_id` 1 would look like the
//! answer to the client's own request 1).

use crate::codes;
use crate::error::random_bytes;
use crate::limiter::{KeyedBuckets, address_key};
use crate::metrics::{Limit, Metrics};
use crate::tokens::{TokenHash, TokenStore};
use crate::{GatewayLimits, dispatch};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use osmium_engine::ChatEngine;
use osmium_engine::chat::Resumed;
use osmium_engine::chat::updates::{Sequence, Subscription, TaggedUpdate};
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::core::{
    ClientMessage, Entrypoints, Initialize, Initialized, RpcError, RpcResult, ServerMessage, UpdatesResumed, server_message,
};
use osmium_proto::ids::{Position, UserId};
use osmium_proto::{auth, types};
use prost::Message as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame};

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) engine: ChatEngine,
    pub(crate) tokens: TokenStore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: GatewayLimits,
    /// `true` once the server shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// This server, as `Initialized.entrypoints` advertises it.
    pub(crate) entrypoint: types::Entrypoint,
    /// Failed sign-ins per remote address (`sign_in_failures_per_address_per_minute_max`).
    pub(crate) sign_in_failures: KeyedBuckets<IpAddr>,
    /// `SendMessage` calls per user (`send_message_per_user_per_second_max`).
    pub(crate) sends: KeyedBuckets<UserId>,
}

/// Why the writer must close at once (without draining the queue).
type Abort = watch::Sender<Option<(CloseCode, String)>>;

/// The close frame to send once the queue is drained (when none was set: 1000, or 1001
/// during shutdown).
type FinalReason = Arc<std::sync::Mutex<Option<(CloseCode, String)>>>;

/// How long a closing connection keeps reading for the client's close reply, in
/// milliseconds (so that the socket is not reset under unread data).
const CLOSE_LINGER_MS: u64 = 2_000;

/// The osmium-state extension fields of a logged update (`ServerMessage` 1300-1302).
#[derive(Clone, Copy, Debug)]
struct UpdateTags {
    position: u64,
    previous: u64,
    chat: Option<u64>,
}

impl UpdateTags {
    fn of(update: &TaggedUpdate) -> Option<UpdateTags> {
        let position = update.position.get();
        match update.sequence {
            Sequence::Unlogged => None,
            Sequence::User { previous } => Some(UpdateTags { position, previous: previous.get(), chat: None }),
            Sequence::Chat { chat, previous } => Some(UpdateTags { position, previous: previous.get(), chat: Some(chat.get()) }),
        }
    }
}

/// One message of the outbound queue: the message, its update's extension fields, and
/// the bytes it was counted as in `queued_bytes`.
type Queued = (server_message::Message, Option<UpdateTags>, usize);

/// The sending side of the outbound queue.
#[derive(Clone, Debug)]
struct Outbound {
    /// Each message with the bytes it was counted as in `queued_bytes`.
    queue: mpsc::Sender<Queued>,
    /// Encoded bytes of the messages in `queue` (the writer subtracts what it takes).
    queued_bytes: Arc<AtomicUsize>,
    queued_bytes_max: usize,
    abort: Arc<Abort>,
    final_reason: FinalReason,
    metrics: Arc<Metrics>,
}

impl Outbound {
    /// Queues a server message; on a full queue (by count, or by bytes unless the queue
    /// is empty: one large message alone is always taken) closes the connection and says
    /// `false`.
    fn push(&self, message: server_message::Message) -> bool {
        self.push_tagged(message, None)
    }

    /// Queues a server message with the catch-up fields of the update it carries (the
    /// osmium-state extension), like [`Self::push`].
    fn push_tagged(&self, message: server_message::Message, tags: Option<UpdateTags>) -> bool {
        let bytes = message.encoded_len() + if tags.is_some() { 3 * 11 } else { 0 };
        let max = self.queued_bytes_max;
        let reserved = self.queued_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            (queued == 0 || queued.saturating_add(bytes) <= max).then(|| queued.saturating_add(bytes))
        });
        if reserved.is_err() {
            self.close_slow();
            return false;
        }
        match self.queue.try_send((message, tags, bytes)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.close_slow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                false
            }
        }
    }

    /// Closes as too slow, counted before the writer can see the close (so that whoever
    /// receives the close frame also finds it in the metrics).
    fn close_slow(&self) {
        let metrics = &self.metrics;
        self.abort.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            metrics.connections_closed_slow.inc();
            *current = Some((CloseCode::Policy, "outbound queue full: the client reads too slowly".to_owned()));
            true
        });
    }

    fn result(&self, req_id: u32, result: Option<Answer>) -> bool {
        self.push(server_message::Message::Result(RpcResult { req_id, result, trace_id: None }))
    }

    fn error(&self, req_id: u32, error: RpcError) -> bool {
        self.result(req_id, Some(Answer::Error(error)))
    }

    /// Closes with `code` and `reason` after everything queued is written.
    fn close_after_queue(&self, code: CloseCode, reason: &str) {
        if let Ok(mut final_reason) = self.final_reason.lock() {
            final_reason.get_or_insert_with(|| (code, reason.to_owned()));
        }
    }
}

/// Asks the writer to close the connection now; `false` if it was already asked.
fn close_now(abort: &Abort, code: CloseCode, reason: &str) -> bool {
    close_now_and(abort, code, reason, || {})
}

/// [`close_now`], running `count` first when this is the close that happens (so that
/// whoever receives the close frame also finds it in the metrics).
fn close_now_and(abort: &Abort, code: CloseCode, reason: &str, count: impl FnOnce()) -> bool {
    abort.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        count();
        *current = Some((code, reason.to_owned()));
        true
    })
}

/// The signed-in state of a connection.
#[derive(Debug)]
struct Session {
    user: UserId,
    token_hash: TokenHash,
    tokens_generation: u64,
}

/// Who the client said it is in `Initialize` (for the sign-in log line), each string cut
/// to [`CLIENT_INFO_LOG_CHARS_MAX`].
#[derive(Debug, Default)]
struct ClientInfo {
    client_id: u32,
    device_type: String,
    app_version: String,
}

/// Characters of a client-given string written to the log.
const CLIENT_INFO_LOG_CHARS_MAX: usize = 64;

impl ClientInfo {
    fn of(initialize: &Initialize) -> ClientInfo {
        let cut = |text: &str| text.chars().take(CLIENT_INFO_LOG_CHARS_MAX).collect();
        ClientInfo {
            client_id: initialize.client_id,
            device_type: cut(&initialize.device_type),
            app_version: cut(&initialize.app_version),
        }
    }
}

/// At most `max` calls per one-second window.
#[derive(Debug)]
struct RateWindow {
    max: u32,
    started: Instant,
    count: u32,
}

impl RateWindow {
    fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            self.started = now;
            self.count = 0;
        }
        if self.count >= self.max {
            return false;
        }
        self.count += 1;
        true
    }
}

/// The number of the first field of a decoded `ClientMessage` frame other than `id` (1),
/// or `None` when it has no other field: a heartbeat. Frames reaching here decoded as a
/// `ClientMessage`, so their fields are well-formed; a field that still cannot be
/// skipped counts as a call (it is not a heartbeat).
fn call_field(bytes: &[u8]) -> Option<u32> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut rest) else { return Some(0) };
        let field = u32::try_from(key >> 3).unwrap_or(u32::MAX);
        if field != 1 {
            return Some(field);
        }
        let skipped = match key & 0x07 {
            0 => prost::encoding::decode_varint(&mut rest).is_ok(),
            1 => rest.len() >= 8 && {
                rest = &rest[8..];
                true
            },
            2 => match prost::encoding::decode_varint(&mut rest).ok().and_then(|len| usize::try_from(len).ok()) {
                Some(len) if len <= rest.len() => {
                    rest = &rest[len..];
                    true
                }
                _ => false,
            },
            5 => rest.len() >= 4 && {
                rest = &rest[4..];
                true
            },
            _ => false,
        };
        if !skipped {
            return Some(field);
        }
    }
    None
}

/// The `id` of a frame that does not decode as a whole, when its first field is it.
fn leading_id(bytes: &[u8]) -> u32 {
    let mut rest = bytes;
    if rest.first() != Some(&0x08) {
        return 0; // not field 1 as a varint
    }
    rest = &rest[1..];
    prost::encoding::decode_varint(&mut rest).ok().and_then(|id| u32::try_from(id).ok()).unwrap_or(0)
}

/// Runs a call; its engine error becomes the `RPCError`, and a panic in it a 500, so that
/// the call is answered either way (a panicked task would otherwise leave its `req_id`
/// without a result forever).
async fn answer_of(call: impl Future<Output = Result<Option<Answer>, RpcError>>) -> Result<Option<Answer>, RpcError> {
    match std::panic::AssertUnwindSafe(call).catch_unwind().await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::error!("a call panicked; answered with 500");
            Err(codes::error(codes::INTERNAL, "internal error: the call failed"))
        }
    }
}

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let limits = &shared.limits;
    let config = WebSocketConfig::default()
        .read_buffer_size(limits.socket_buffer_bytes)
        .write_buffer_size(limits.socket_buffer_bytes)
        .max_message_size(Some(limits.frame_bytes_close_max))
        .max_frame_size(Some(limits.frame_bytes_close_max));
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let socket = match tokio::time::timeout(Duration::from_millis(limits.handshake_timeout_ms), handshake).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "websocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return;
        }
    };
    shared.metrics.connections.inc();
    shared.metrics.connections_accepted.inc();
    tracing::debug!(%peer, "connection open");
    let (sink, frames) = socket.split();
    let (queue, queue_rx) = mpsc::channel(limits.outbound_queue_max.max(1));
    let (abort, abort_rx) = watch::channel(None);
    let final_reason = FinalReason::default();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let outbound = Outbound {
        queue,
        queued_bytes: queued_bytes.clone(),
        queued_bytes_max: limits.outbound_queue_bytes_max,
        abort: Arc::new(abort),
        final_reason: final_reason.clone(),
        metrics: shared.metrics.clone(),
    };
    // In a `JoinSet` so that it dies with this task even when this task is aborted (a
    // writer blocked on a client that reads nothing would otherwise hold its socket).
    let mut writer = JoinSet::new();
    let ping_interval = Duration::from_millis(limits.ping_interval_ms.max(1));
    writer.spawn(write_loop(
        sink,
        (queue_rx, queued_bytes),
        abort_rx.clone(),
        final_reason,
        shared.shutdown.clone(),
        ping_interval,
    ));
    let mut frames = frames;
    let mut connection = Connection {
        shared: shared.clone(),
        outbound,
        peer,
        session: None,
        subscribe: true,
        updates_on: false,
        client: None,
        sign_in_failures: 0,
        forwarder: JoinSet::new(),
        calls: JoinSet::new(),
        typing: RateWindow { max: limits.typing_per_second_max, started: Instant::now(), count: 0 },
    };
    connection.read_loop(&mut frames, abort_rx).await;
    // Finish the calls in flight (shutdown: within the grace period), then let the writer
    // drain the queue and close.
    let grace = Duration::from_millis(shared.limits.shutdown_grace_ms);
    let _ = tokio::time::timeout(grace, async {
        while connection.calls.join_next().await.is_some() {}
    })
    .await;
    connection.calls.abort_all();
    connection.forwarder.abort_all();
    drop(connection);
    if tokio::time::timeout(grace, writer.join_next()).await.is_err() {
        writer.abort_all(); // the client reads nothing at all: drop it
    }
    // The closing handshake: read (and drop) what the client still sends until its close
    // reply, so that the socket is not reset under data it has not read yet.
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_LINGER_MS), async {
        while let Some(Ok(_)) = frames.next().await {}
    })
    .await;
    shared.metrics.connections.dec();
    tracing::debug!(%peer, "connection closed");
}

type FrameStream = futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<TcpStream>>;
type FrameSink = futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<TcpStream>, Frame>;

async fn write_loop(
    mut sink: FrameSink,
    (mut queue, queued_bytes): (mpsc::Receiver<Queued>, Arc<AtomicUsize>),
    mut abort: watch::Receiver<Option<(CloseCode, String)>>,
    final_reason: FinalReason,
    shutdown: watch::Receiver<bool>,
    ping_interval: Duration,
) {
    let mut sequence: u32 = 0;
    let mut abort_open = true;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut close = loop {
        tokio::select! {
            biased;
            changed = abort.changed(), if abort_open => {
                if changed.is_err() {
                    abort_open = false; // every sender gone: drain the queue, then close
                    continue;
                }
                let reason = abort.borrow().clone();
                if reason.is_some() {
                    break reason;
                }
            }
            next = queue.recv() => match next {
                Some((message, tags, queued)) => {
                    queued_bytes.fetch_sub(queued, Ordering::AcqRel);
                    sequence = sequence.wrapping_add(1);
                    let bytes = ServerMessage {
                        id: sequence,
                        message: Some(message),
                        osmium_update_position: tags.map(|tags| tags.position),
                        osmium_update_previous: tags.map(|tags| tags.previous),
                        osmium_update_sequence_chat: tags.and_then(|tags| tags.chat),
                    }
                    .encode_to_vec();
                    if sink.feed(Frame::Binary(bytes.into())).await.is_err() {
                        return;
                    }
                    if queue.is_empty() && sink.flush().await.is_err() {
                        return;
                    }
                }
                None => break None,
            },
            _ = ping.tick() => {
                if sink.send(Frame::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    };
    if close.is_none() {
        close = final_reason.lock().ok().and_then(|reason| reason.clone());
    }
    if close.is_none() && *shutdown.borrow() {
        close = Some((CloseCode::Away, "server shutting down".into()));
    }
    let (code, reason) = close.unwrap_or((CloseCode::Normal, String::new()));
    let close = async {
        let _ = sink.send(Frame::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_LINGER_MS), close).await;
}

struct Connection {
    shared: Arc<Shared>,
    outbound: Outbound,
    peer: SocketAddr,
    session: Option<Session>,
    /// Whether the client wants live updates on this connection (`Initialize.no_subscribe`
    /// false, the default).
    subscribe: bool,
    /// Whether a forwarder of the signed-in user's updates runs.
    updates_on: bool,
    /// Who the client said it is (`Initialize`), for the sign-in log line.
    client: Option<ClientInfo>,
    /// Failed `Authorize` calls on this connection.
    sign_in_failures: u32,
    /// The update forwarder: at most one running (an aborted one may still be ending); in
    /// a `JoinSet` so that it dies with the connection even when the connection's task is
    /// aborted (it holds an engine handle).
    forwarder: JoinSet<()>,
    calls: JoinSet<()>,
    typing: RateWindow,
}

impl Connection {
    async fn read_loop(&mut self, frames: &mut FrameStream, mut abort: watch::Receiver<Option<(CloseCode, String)>>) {
        let mut shutdown = self.shared.shutdown.clone();
        let mut tokens = self.shared.tokens.watch();
        let idle_timeout_ms = self.shared.limits.idle_timeout_ms;
        let idle_timeout = Duration::from_millis(idle_timeout_ms);
        let mut idle_deadline = tokio::time::Instant::now() + idle_timeout;
        loop {
            if *shutdown.borrow() || abort.borrow().is_some() {
                return;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = abort.changed() => return,
                Ok(()) = tokens.changed(), if self.session.is_some() => {
                    if self.revoked() {
                        self.outbound.close_after_queue(CloseCode::Policy, "token revoked");
                        return;
                    }
                }
                Some(_) = self.calls.join_next(), if !self.calls.is_empty() => {}
                Some(_) = self.forwarder.join_next(), if !self.forwarder.is_empty() => {}
                () = tokio::time::sleep_until(idle_deadline) => {
                    let metrics = &self.shared.metrics;
                    let reason = format!("idle timeout: nothing received for {idle_timeout_ms} ms");
                    close_now_and(&self.outbound.abort, CloseCode::Away, &reason, || {
                        metrics.connections_closed_idle.inc();
                    });
                    return;
                }
                frame = frames.next() => match frame {
                    None => return,
                    Some(Ok(frame)) => {
                        idle_deadline = tokio::time::Instant::now() + idle_timeout;
                        if !self.on_frame(frame).await {
                            return;
                        }
                    }
                    Some(Err(tungstenite::Error::Capacity(err))) => {
                        close_now(
                            &self.outbound.abort,
                            CloseCode::Size,
                            &format!("frame over {} bytes: {err}", self.shared.limits.frame_bytes_close_max),
                        );
                        return;
                    }
                    Some(Err(err)) => {
                        tracing::debug!(%err, "websocket read failed");
                        return;
                    }
                },
            }
        }
    }

    /// Handles one frame; `false` ends the connection.
    async fn on_frame(&mut self, frame: Frame) -> bool {
        let metrics = &self.shared.metrics;
        match frame {
            Frame::Binary(bytes) => {
                if bytes.len() > self.shared.limits.frame_bytes_max {
                    metrics.request("frame", Some(codes::FRAME_TOO_LARGE), None);
                    let message =
                        format!("frame of {} bytes is over frame_bytes_max ({})", bytes.len(), self.shared.limits.frame_bytes_max);
                    return self.outbound.error(leading_id(&bytes), codes::error(codes::FRAME_TOO_LARGE, message));
                }
                match ClientMessage::decode(&bytes[..]) {
                    Ok(message) => self.on_message(message, &bytes).await,
                    Err(err) => {
                        metrics.request("frame", Some(codes::BAD_FRAME), None);
                        let error = codes::error(codes::BAD_FRAME, format!("frame does not decode as a ClientMessage: {err}"));
                        self.outbound.error(leading_id(&bytes), error)
                    }
                }
            }
            Frame::Text(_) => {
                metrics.request("frame", Some(codes::BAD_FRAME), None);
                self.outbound.error(0, codes::error(codes::BAD_FRAME, "text frames are not served: send one protobuf ClientMessage per binary frame"))
            }
            Frame::Close(_) => false,
            Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => true,
        }
    }

    /// Handles one decoded `ClientMessage` (`bytes`: the frame it came from).
    async fn on_message(&mut self, message: ClientMessage, bytes: &[u8]) -> bool {
        let req_id = message.id;
        let metrics = self.shared.metrics.clone();
        let Some(call) = message.message else {
            let Some(field) = call_field(bytes) else {
                metrics.heartbeats.inc(); // a heartbeat: never answered
                return true;
            };
            metrics.request("unsupported", Some(codes::UNSUPPORTED), None);
            let message = format!("unsupported call: ClientMessage field {field} is not part of the chat subset this server serves");
            return self.outbound.error(req_id, codes::error(codes::UNSUPPORTED, message));
        };
        let kind = dispatch::kind(&call);
        let started = Instant::now();
        match call {
            Call::CoreInitialize(initialize) => {
                self.subscribe = !initialize.no_subscribe;
                self.client = Some(ClientInfo::of(&initialize));
                if let Some(user) = self.session.as_ref().map(|session| session.user) {
                    self.apply_subscription(user);
                }
                metrics.request(kind, None, Some(started.elapsed().as_secs_f64()));
                let initialized = Initialized {
                    entrypoints: Some(Entrypoints { entrypoints: vec![self.shared.entrypoint.clone()] }),
                    vapid_public_key: None,
                };
                self.outbound.result(req_id, Some(Answer::Initialized(initialized)))
            }
            Call::OsmiumResumeUpdates(resume) => {
                let Some(user) = self.session.as_ref().map(|session| session.user) else {
                    metrics.request(kind, Some(codes::UNAUTHORIZED), None);
                    return self.outbound.error(req_id, codes::error(codes::UNAUTHORIZED, "not signed in: send Authorize first"));
                };
                let queued = self.resume_updates(req_id, user, resume.token);
                metrics.request(kind, None, Some(started.elapsed().as_secs_f64()));
                queued
            }
            Call::AuthAuthorize(authorize) => {
                let answer = self.authorize(&authorize.token).await;
                let code = match &answer {
                    Err(error) => Some(error.error_code),
                    Ok(_) => None,
                };
                metrics.request(kind, code, Some(started.elapsed().as_secs_f64()));
                match answer {
                    Ok(authorization) => self.outbound.result(req_id, Some(Answer::Authorization(authorization))),
                    Err(error) => self.outbound.error(req_id, error),
                }
            }
            call => {
                let Some(session) = &self.session else {
                    metrics.request(kind, Some(codes::UNAUTHORIZED), None);
                    return self.outbound.error(req_id, codes::error(codes::UNAUTHORIZED, "not signed in: send Authorize first"));
                };
                let user = session.user;
                if self.revoked() {
                    metrics.request(kind, Some(codes::UNAUTHORIZED), None);
                    self.outbound.error(req_id, codes::error(codes::UNAUTHORIZED, "token revoked"));
                    self.outbound.close_after_queue(CloseCode::Policy, "token revoked");
                    return false;
                }
                if matches!(call, Call::ChatsSetTyping(_)) && !self.typing.allow(started) {
                    metrics.request(kind, Some(codes::RATE_LIMITED), None);
                    metrics.rate_limited(Limit::Typing);
                    let message =
                        format!("SetTyping is limited to {} calls per second", self.shared.limits.typing_per_second_max);
                    return self.outbound.error(req_id, codes::error(codes::RATE_LIMITED, message));
                }
                if matches!(call, Call::MessagesSendMessage(_)) && !self.shared.sends.take(user, started) {
                    metrics.request(kind, Some(codes::RATE_LIMITED), None);
                    metrics.rate_limited(Limit::SendMessageUser);
                    let message = format!(
                        "SendMessage is limited to {} per second per user, across all of the user's connections: retry later",
                        self.shared.limits.send_message_per_user_per_second_max
                    );
                    return self.outbound.error(req_id, codes::error(codes::RATE_LIMITED, message));
                }
                // Bounded concurrency: wait for a call to finish before starting another.
                while self.calls.len() >= self.shared.limits.calls_in_flight_max.max(1) {
                    let _ = self.calls.join_next().await;
                }
                let engine = self.shared.engine.clone();
                let outbound = self.outbound.clone();
                self.calls.spawn(async move {
                    let result = answer_of(dispatch::call(&engine, user, call)).await;
                    let seconds = started.elapsed().as_secs_f64();
                    match result {
                        Ok(answer) => {
                            metrics.request(kind, None, Some(seconds));
                            outbound.result(req_id, answer);
                        }
                        Err(error) => {
                            metrics.request(kind, Some(error.error_code), Some(seconds));
                            outbound.error(req_id, error);
                        }
                    }
                });
                true
            }
        }
    }

    /// Whether the signed-in token is gone from the tokens file (checked only when the
    /// file was re-read since the last check).
    fn revoked(&mut self) -> bool {
        let Some(session) = &mut self.session else { return false };
        let generation = self.shared.tokens.generation();
        if generation == session.tokens_generation {
            return false;
        }
        if !self.shared.tokens.still_stored(&session.token_hash) {
            return true;
        }
        session.tokens_generation = generation;
        false
    }

    /// Starts or stops forwarding `user`'s updates as `self.subscribe` says.
    fn apply_subscription(&mut self, user: UserId) {
        if self.subscribe && !self.updates_on {
            self.start_updates(user);
        } else if !self.subscribe && self.updates_on {
            self.forwarder.abort_all();
            self.updates_on = false;
        }
    }

    /// Forwards `user`'s live updates into the outbound queue from now on.
    fn start_updates(&mut self, user: UserId) {
        let updates = self.shared.engine.subscribe(user);
        self.forward(updates);
    }

    /// Forwards a subscription's updates into the outbound queue (each with its catch-up
    /// fields); when the subscription falls behind, closes with 1013 naming the token to
    /// resume from.
    fn forward(&mut self, mut updates: Subscription) {
        let engine = self.shared.engine.clone();
        let outbound = self.outbound.clone();
        self.forwarder.spawn(async move {
            while let Some(tagged) = updates.next().await {
                outbound.metrics.update_queued(engine.last_position().get(), tagged.position.get());
                let tags = UpdateTags::of(&tagged);
                if !outbound.push_tagged(server_message::Message::Update(tagged.update), tags) {
                    return;
                }
            }
            let reason = match updates.resume_token() {
                Some(token) => format!("update stream fell behind: resume from token {token} (ResumeUpdates)"),
                None => "update stream fell behind: reconnect and resync".to_owned(),
            };
            close_now(&outbound.abort, CloseCode::Again, &reason);
        });
        self.updates_on = true;
    }

    /// `ResumeUpdates` (osmium-state extension): replaces the live updates with the ones
    /// missed after `token`, then live ones; answered before the first of them.
    fn resume_updates(&mut self, req_id: u32, user: UserId, token: u64) -> bool {
        self.forwarder.abort_all();
        self.updates_on = false;
        let engine = self.shared.engine.clone();
        let resumed = match engine.subscribe_from(user, Position(token)) {
            Ok(Resumed::Subscribed(subscription)) => Ok((UpdatesResumed { too_far_behind: false, resume_token: token }, subscription)),
            Ok(Resumed::TooFarBehind { resume_token }) => match engine.subscribe_from(user, resume_token) {
                Ok(Resumed::Subscribed(subscription)) => {
                    Ok((UpdatesResumed { too_far_behind: true, resume_token: resume_token.get() }, subscription))
                }
                Ok(Resumed::TooFarBehind { .. }) => Err(codes::error(codes::INTERNAL, "too far behind the engine's own position")),
                Err(err) => Err(err.to_rpc_error()),
            },
            Err(err) => Err(err.to_rpc_error()),
        };
        match resumed {
            Ok((answer, subscription)) => {
                let queued = self.outbound.result(req_id, Some(Answer::OsmiumUpdatesResumed(answer)));
                self.subscribe = true;
                self.forward(subscription);
                queued
            }
            Err(error) => self.outbound.error(req_id, error),
        }
    }

    /// Refuses a sign-in over a failure limit (429, counted), before the token is looked
    /// at: over the limit, a valid token is refused like any other.
    fn sign_in_allowed(&self, address: IpAddr, now: Instant) -> Result<(), RpcError> {
        let limits = &self.shared.limits;
        let metrics = &self.shared.metrics;
        if self.sign_in_failures >= limits.sign_in_failures_per_connection_max {
            metrics.rate_limited(Limit::SignInConnection);
            let message = format!(
                "too many failed sign-ins on this connection ({}): connect again with a valid token",
                limits.sign_in_failures_per_connection_max
            );
            return Err(codes::error(codes::RATE_LIMITED, message));
        }
        if !self.shared.sign_in_failures.has_token(address, now) {
            metrics.rate_limited(Limit::SignInAddress);
            let message = format!(
                "too many failed sign-ins from this address (over {} per minute): retry later",
                limits.sign_in_failures_per_address_per_minute_max
            );
            return Err(codes::error(codes::RATE_LIMITED, message));
        }
        Ok(())
    }

    /// Signs the connection in: checks the failure limits and the token, keeps the user's
    /// directory entry in step with the token's name, subscribes to the user's updates
    /// (unless `Initialize.no_subscribe`).
    async fn authorize(&mut self, token: &str) -> Result<auth::Authorization, RpcError> {
        if self.session.is_some() {
            return Err(codes::error(codes::ALREADY_AUTHORIZED, "this connection is already signed in"));
        }
        let address = address_key(self.peer.ip());
        let now = Instant::now();
        self.sign_in_allowed(address, now)?;
        let internal = |err: &dyn std::fmt::Display| {
            tracing::error!(%err, "sign-in failed");
            codes::error(codes::INTERNAL, format!("sign-in failed: {err}"))
        };
        // Read before the lookup: a re-read in between makes the session check again.
        let tokens_generation = self.shared.tokens.generation();
        let (grant, token_hash) = match self.shared.tokens.lookup(token) {
            Ok(Some(found)) => found,
            Ok(None) => {
                self.sign_in_failures = self.sign_in_failures.saturating_add(1);
                self.shared.sign_in_failures.take(address, now);
                return Err(codes::error(codes::UNAUTHORIZED, "unknown or revoked token"));
            }
            Err(err) => return Err(internal(&err)),
        };
        let engine = &self.shared.engine;
        let user = match engine.get_user(grant.user).map_err(|err| err.to_rpc_error())? {
            Some(user) if user.name == grant.name => user,
            existing => {
                let user = types::User { id: grant.user.get(), name: grant.name.clone(), ..existing.unwrap_or_default() };
                engine.upsert_user(user.clone()).await.map_err(|err| err.to_rpc_error())?;
                user
            }
        };
        let session_id = random_bytes::<8>().map(u64::from_le_bytes).map_err(|err| internal(&err))?;
        // Subscribe before answering, so that no update after the answer is missed.
        self.apply_subscription(grant.user);
        self.session = Some(Session { user: grant.user, token_hash, tokens_generation });
        let client = self.client.as_ref();
        tracing::info!(
            user = %grant.user,
            session_id,
            peer = %self.peer,
            updates = self.subscribe,
            client_id = client.map(|client| client.client_id),
            device_type = client.map(|client| client.device_type.as_str()),
            app_version = client.map(|client| client.app_version.as_str()),
            "signed in"
        );
        Ok(auth::Authorization { token: token.to_owned(), user: Some(user), session_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_field_is_none_for_a_heartbeat_and_the_call_number_otherwise() {
        assert_eq!(call_field(&[0x08, 0x01]), None, "the official client's heartbeat");
        assert_eq!(call_field(&[]), None, "an empty ClientMessage");
        assert_eq!(call_field(&[0x08, 0x00]), None, "id 0 written explicitly");
        assert_eq!(call_field(&[0x08, 0x09, 0x12, 0x00]), Some(2));
        // id, then field 200 (LEN, empty): tag 1602 as varint.
        assert_eq!(call_field(&[0x08, 0x01, 0xc2, 0x0c, 0x00]), Some(200));
    }

    #[test]
    fn leading_id_reads_field_one_varint() {
        assert_eq!(leading_id(&[0x08, 0x96, 0x01, 0xff]), 150);
        assert_eq!(leading_id(&[0x22, 0x00]), 0);
        assert_eq!(leading_id(&[]), 0);
    }

    #[tokio::test]
    async fn panicking_call_is_answered_with_500() {
        let answer = answer_of(async { panic!("engine bug") }).await;
        assert_eq!(answer.map_err(|error| error.error_code), Err(codes::INTERNAL));
    }

    #[test]
    fn rate_window_allows_max_per_second() {
        let start = Instant::now();
        let mut window = RateWindow { max: 2, started: start, count: 0 };
        assert!(window.allow(start));
        assert!(window.allow(start));
        assert!(!window.allow(start));
        assert!(window.allow(start + Duration::from_secs(1)));
    }
}
