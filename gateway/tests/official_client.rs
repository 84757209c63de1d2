//! The official Osmium JavaScript client (`osmiumchat/sdk-js`, `packages/sdk/src/client.ts`)
//! played byte for byte: its frames are written here by hand from the protobuf encoding
//! rules, as protobufjs encodes them (the fields it was given, in field-number order), and
//! what the server sends back is decoded with minimal hand-written messages that know
//! only the protocol's field numbers, as a generated client would.
//!
//! The client connects, sends `ClientMessage{id, core_initialize (19)}`, waits for
//! `RPCResult.initialized (14)`, sends `ClientMessage{id, auth_authorize (20)}`, waits for
//! `RPCResult.authorization (4)`, then sends the heartbeat `ClientMessage{id: 1}` every
//! 30 s. It resolves a pending request by `result.req_id` and treats any other result as
//! "unsolicited". Its request ids: the stored versions of `client.ts` take `Date.now() >>> 0`
//! (or the previous id + 1), so ids are large 32-bit numbers; ids from 1 are played too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{ANN, BOB, WAIT, start_with};
use futures_util::{SinkExt as _, StreamExt as _};
use osmium_gateway::{Advertise, Gateway, GatewayLimits, ServerConfig, tokens};
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::messages;
use prost::Message as _;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What a generated client knows of the server's messages: only the protocol's numbers.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerMessage {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "2")]
        pub update: Option<Update>,
        #[prost(message, optional, tag = "3")]
        pub result: Option<RpcResult>,
    }
    /// `RPCResult`: its `result` oneof arms as plain optional fields (same wire format).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcResult {
        #[prost(uint32, tag = "1")]
        pub req_id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<RpcError>,
        #[prost(message, optional, tag = "3")]
        pub sent_message: Option<SentMessage>,
        #[prost(message, optional, tag = "4")]
        pub authorization: Option<Authorization>,
        #[prost(message, optional, tag = "9")]
        pub chats: Option<Chats>,
        #[prost(message, optional, tag = "14")]
        pub initialized: Option<Initialized>,
        #[prost(string, optional, tag = "37")]
        pub trace_id: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcError {
        #[prost(uint32, tag = "1")]
        pub error_code: u32,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SentMessage {
        #[prost(fixed64, tag = "1")]
        pub message_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Initialized {
        #[prost(message, optional, tag = "1")]
        pub entrypoints: Option<Entrypoints>,
        #[prost(string, optional, tag = "2")]
        pub vapid_public_key: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entrypoints {
        #[prost(message, repeated, tag = "1")]
        pub entrypoints: Vec<Entrypoint>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entrypoint {
        #[prost(string, tag = "1")]
        pub hostname: String,
        #[prost(string, optional, tag = "2")]
        pub ip_address: Option<String>,
        #[prost(uint32, tag = "3")]
        pub port: u32,
        #[prost(uint32, tag = "4")]
        pub region: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Authorization {
        #[prost(string, tag = "1")]
        pub token: String,
        #[prost(message, optional, tag = "2")]
        pub user: Option<User>,
        #[prost(fixed64, tag = "3")]
        pub session_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct User {
        #[prost(fixed64, tag = "1")]
        pub id: u64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Chats {
        #[prost(message, repeated, tag = "1")]
        pub chats: Vec<Conversation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Conversation {
        #[prost(fixed64, tag = "2")]
        pub last_message_id: u64,
        #[prost(uint32, tag = "5")]
        pub unread_count: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Update {
        #[prost(message, optional, tag = "1")]
        pub message_created: Option<UpdateMessageCreated>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateMessageCreated {
        #[prost(message, optional, tag = "1")]
        pub message: Option<Message>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(fixed64, tag = "2")]
        pub message_id: u64,
        #[prost(fixed64, tag = "3")]
        pub author_id: u64,
        #[prost(string, tag = "4")]
        pub message: String,
    }
}

// ---- the client's frames, by hand -----------------------------------------------------

/// `ClientMessage.id` (1, varint) = 1.
const ID_1: [u8; 2] = [0x08, 0x01];
/// `ClientMessage.id` = 2,000,000,000 (a `Date.now() >>> 0` id): 5-byte varint.
const ID_2_000_000_000: [u8; 6] = [0x08, 0x80, 0xa8, 0xd6, 0xb9, 0x07];
/// `ClientMessage.id` = 2,000,000,001.
const ID_2_000_000_001: [u8; 6] = [0x08, 0x81, 0xa8, 0xd6, 0xb9, 0x07];
/// The heartbeat: `ClientMessage.create({ id: 1 })`, nothing else.
const HEARTBEAT: [u8; 2] = [0x08, 0x01];

/// `ClientMessage{<id>, core_initialize (19): Initialize{client_id: 42, device_type:
/// "@osmiumchat/sdk", device_version: "v22.11.0", app_version: "0.3.1"}}`, with
/// `no_subscribe (5) = true` appended when asked (the official client never sets it).
fn initialize_frame(id: &[u8], no_subscribe: bool) -> Vec<u8> {
    let mut initialize = vec![0x08, 0x2a]; // client_id (1, varint) = 42
    initialize.extend([0x12, 0x0f]); // device_type (2, LEN), 15 bytes
    initialize.extend(b"@osmiumchat/sdk");
    initialize.extend([0x1a, 0x08]); // device_version (3, LEN), 8 bytes
    initialize.extend(b"v22.11.0");
    initialize.extend([0x22, 0x05]); // app_version (4, LEN), 5 bytes
    initialize.extend(b"0.3.1");
    if no_subscribe {
        initialize.extend([0x28, 0x01]); // no_subscribe (5, varint) = true
    }
    assert_eq!(initialize.len(), if no_subscribe { 0x26 } else { 0x24 });
    let mut frame = id.to_vec();
    frame.extend([0x9a, 0x01, initialize.len() as u8]); // core_initialize (19, LEN): tag 154 = 0x9a 0x01
    frame.extend(initialize);
    frame
}

/// `ClientMessage{<id>, auth_authorize (20): Authorize{token (5)}}`.
fn authorize_frame(id: &[u8], token: &str) -> Vec<u8> {
    assert_eq!(token.len(), 43, "a token is 32 bytes in base64: every length below fits one byte");
    let mut frame = id.to_vec();
    frame.extend([0xa2, 0x01, 2 + 43]); // auth_authorize (20, LEN): tag 162 = 0xa2 0x01
    frame.extend([0x2a, 43]); // token (5, LEN)
    frame.extend(token.as_bytes());
    frame
}

/// `ClientMessage{id: 3, chats_get_chats (11): GetChats{}}`.
const GET_CHATS_ID_3: [u8; 4] = [0x08, 0x03, 0x5a, 0x00];

/// `ClientMessage{id: 4, messages_send_message (4): SendMessage{chat_ref: {user (1):
/// {user_id: 1002}}, message: "hi"}}`: a DM to Bob.
fn send_hi_to_bob_id_4() -> Vec<u8> {
    let mut send = vec![0x0a, 0x0b, 0x0a, 0x09, 0x09]; // chat_ref (1) { user (1) { user_id (1, fixed64)
    send.extend(BOB.get().to_le_bytes()); // = 1002 } }
    send.extend([0x12, 0x02, b'h', b'i']); // message (2) = "hi"
    let mut frame = vec![0x08, 0x04, 0x22, send.len() as u8]; // id = 4; messages_send_message (4, LEN)
    frame.extend(send);
    frame
}

/// `ClientMessage{id: 5, messages_get_unread_mentions (86): {chat_ref: {group: 7}}}`.
const GET_UNREAD_MENTIONS_ID_5: [u8; 18] = [
    0x08, 0x05, 0xb2, 0x05, 0x0d, // id = 5; field 86 (LEN): tag 690 = 0xb2 0x05, 13 bytes
    0x0a, 0x0b, 0x1a, 0x09, 0x09, 7, 0, 0, 0, 0, 0, 0, 0, // chat_ref { group (3) { group_id = 7 } }
];

// ---- a raw WebSocket connection --------------------------------------------------------

type Socket = WebSocketStream<TcpStream>;

async fn raw_connect(gateway: &Gateway) -> Socket {
    let addr = gateway.local_addr();
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.unwrap().0
}

async fn send(socket: &mut Socket, bytes: &[u8]) {
    socket.send(Frame::Binary(bytes.to_vec().into())).await.unwrap();
}

/// The next binary frame (pings skipped), as bytes.
async fn next_binary(socket: &mut Socket) -> Vec<u8> {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await.expect("a frame in time") {
            Some(Ok(Frame::Binary(bytes))) => return bytes.to_vec(),
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

async fn next_message(socket: &mut Socket) -> wire::ServerMessage {
    wire::ServerMessage::decode(next_binary(socket).await.as_slice()).unwrap()
}

/// The next server message, which must be a result: `(ServerMessage.id, RPCResult)`.
async fn next_result(socket: &mut Socket) -> (u32, wire::RpcResult) {
    let message = next_message(socket).await;
    assert_eq!(message.update, None, "expected a result, got an update: {message:?}");
    (message.id, message.result.expect("a result"))
}

/// Asserts that nothing but pings arrives for a moment.
async fn assert_nothing_but_pings(socket: &mut Socket) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Frame::Ping(_)))) => continue,
            Ok(other) => panic!("expected nothing but pings, got {other:?}"),
        }
    }
}

/// Signs in as the official client does (Initialize with id 1, Authorize with id 2) and
/// checks both answers.
async fn official_sign_in(socket: &mut Socket, token: &str, no_subscribe: bool) {
    send(socket, &initialize_frame(&ID_1, no_subscribe)).await;
    let (_, result) = next_result(socket).await;
    assert!(result.initialized.is_some(), "{result:?}");
    send(socket, &authorize_frame(&[0x08, 0x02], token)).await;
    let (_, result) = next_result(socket).await;
    assert!(result.authorization.is_some(), "{result:?}");
}

/// Closes the connections, then shuts down (an unpolled connection would never answer
/// the server's close frame, and shutdown would wait for it).
async fn stop(gateway: Gateway, sockets: Vec<Socket>) {
    drop(sockets);
    gateway.shutdown().await;
}

fn limits() -> GatewayLimits {
    GatewayLimits::default()
}

/// Short keep-alive limits for the idle tests.
fn short_idle(idle_timeout_ms: u64, ping_interval_ms: u64) -> GatewayLimits {
    GatewayLimits { idle_timeout_ms, ping_interval_ms, ..GatewayLimits::default() }
}

async fn token(dir: &Path, user: osmium_proto::ids::UserId, name: &str) -> String {
    tokens::create_token(dir, user, name).await.unwrap()
}

// ---- the tests ------------------------------------------------------------------------

#[tokio::test]
async fn official_client_signs_in_with_initialize_then_authorize_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let advertise = Advertise { host: Some("chat.example.org".into()), port: Some(443), region: 3 };
    let gateway = Gateway::start(ServerConfig { advertise, ..common::config(dir.path(), limits()) }).await.unwrap();
    let token = token(dir.path(), ANN, "ann").await;
    let mut socket = raw_connect(&gateway).await;

    send(&mut socket, &initialize_frame(&ID_1, false)).await;
    let bytes = next_binary(&mut socket).await;
    // ServerMessage.id (1) = 1, result (3, LEN) ...; inside: req_id (1) = 1, initialized (14, LEN) = 0x72.
    assert_eq!(bytes[..3], [0x08, 0x01, 0x1a], "{bytes:02x?}");
    assert_eq!(bytes[4..7], [0x08, 0x01, 0x72], "{bytes:02x?}");
    let message = wire::ServerMessage::decode(bytes.as_slice()).unwrap();
    let result = message.result.unwrap();
    assert_eq!((message.id, result.req_id, result.error, result.trace_id), (1, 1, None, None));
    let initialized = result.initialized.expect("Initialized at RPCResult field 14");
    let expected = wire::Entrypoint { hostname: "chat.example.org".into(), ip_address: None, port: 443, region: 3 };
    assert_eq!(initialized.entrypoints.unwrap().entrypoints, vec![expected]);
    assert_eq!(initialized.vapid_public_key, None);

    send(&mut socket, &authorize_frame(&[0x08, 0x02], &token)).await;
    let bytes = next_binary(&mut socket).await;
    let message = wire::ServerMessage::decode(bytes.as_slice()).unwrap();
    let result = message.result.unwrap();
    assert_eq!((message.id, result.req_id, result.error), (2, 2, None));
    let authorization = result.authorization.expect("Authorization at RPCResult field 4");
    let user = authorization.user.unwrap();
    assert_eq!((user.id, user.name.as_str()), (ANN.get(), "ann"));
    assert_eq!(authorization.token, token);
    assert_ne!(authorization.session_id, 0);
    stop(gateway, vec![socket]).await;
}

#[tokio::test]
async fn official_client_request_ids_from_its_clock_are_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), limits()).await;
    let token = token(dir.path(), ANN, "ann").await;
    let mut socket = raw_connect(&gateway).await;
    send(&mut socket, &initialize_frame(&ID_2_000_000_000, false)).await;
    let (_, result) = next_result(&mut socket).await;
    assert_eq!(result.req_id, 2_000_000_000);
    assert!(result.initialized.is_some(), "{result:?}");
    send(&mut socket, &authorize_frame(&ID_2_000_000_001, &token)).await;
    let (_, result) = next_result(&mut socket).await;
    assert_eq!(result.req_id, 2_000_000_001);
    assert!(result.authorization.is_some(), "{result:?}");
    stop(gateway, vec![socket]).await;
}

#[tokio::test]
async fn heartbeats_get_no_answer_before_or_after_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), limits()).await;
    let token = token(dir.path(), ANN, "ann").await;
    let mut socket = raw_connect(&gateway).await;
    send(&mut socket, &HEARTBEAT).await;
    send(&mut socket, &initialize_frame(&ID_1, false)).await;
    send(&mut socket, &HEARTBEAT).await;
    send(&mut socket, &authorize_frame(&[0x08, 0x02], &token)).await;
    for _ in 0..3 {
        send(&mut socket, &HEARTBEAT).await;
    }
    send(&mut socket, &GET_CHATS_ID_3).await;
    // ServerMessage.id counts every message the server sends on the connection: 1, 2, 3
    // are the three answers, so nothing was sent for the five heartbeats.
    let (id, result) = next_result(&mut socket).await;
    assert_eq!((id, result.req_id), (1, 1));
    assert!(result.initialized.is_some(), "{result:?}");
    let (id, result) = next_result(&mut socket).await;
    assert_eq!((id, result.req_id), (2, 2));
    assert!(result.authorization.is_some(), "{result:?}");
    let (id, result) = next_result(&mut socket).await;
    assert_eq!((id, result.req_id), (3, 3));
    assert_eq!(result.chats.map(|chats| chats.chats.len()), Some(0));
    assert_nothing_but_pings(&mut socket).await;
    assert_eq!(gateway.metrics().heartbeats.get(), 5);
    common::metrics_with(&gateway, &["osmium_gateway_heartbeats_total 5"]).await;
    stop(gateway, vec![socket]).await;
}

#[tokio::test]
async fn heartbeats_alone_keep_a_connection_open_past_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), short_idle(500, 100)).await;
    let token = token(dir.path(), ANN, "ann").await;
    let mut socket = raw_connect(&gateway).await;
    official_sign_in(&mut socket, &token, false).await;
    // Three idle timeouts long, reading nothing (so no pong is sent): only heartbeats arrive.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&mut socket, &HEARTBEAT).await;
    }
    assert_nothing_but_pings(&mut socket).await;
    send(&mut socket, &GET_CHATS_ID_3).await;
    let (_, result) = next_result(&mut socket).await;
    assert_eq!(result.req_id, 3);
    assert_eq!(gateway.metrics().connections_closed_idle.get(), 0);
    stop(gateway, vec![socket]).await;
}

#[tokio::test]
async fn silent_connection_is_closed_with_1001_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), short_idle(300, 100)).await;
    let token = token(dir.path(), ANN, "ann").await;
    let mut socket = raw_connect(&gateway).await;
    official_sign_in(&mut socket, &token, false).await;
    // Neither a frame nor a pong (nothing is read, so pings go unanswered) for 1 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let close = loop {
        match tokio::time::timeout(WAIT, socket.next()).await.expect("a frame in time") {
            Some(Ok(Frame::Ping(_))) => continue,
            Some(Ok(Frame::Close(Some(close)))) => break close,
            other => panic!("expected pings, then a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "idle timeout: nothing received for 300 ms");
    assert_eq!(gateway.metrics().connections_closed_idle.get(), 1);
    common::metrics_with(&gateway, &["osmium_gateway_connections_closed_idle_total 1"]).await;
    stop(gateway, vec![socket]).await;
}

#[tokio::test]
async fn peer_that_answers_pings_stays_open_past_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), short_idle(500, 100)).await;
    let token = token(dir.path(), ANN, "ann").await;
    let mut socket = raw_connect(&gateway).await;
    official_sign_in(&mut socket, &token, false).await;
    // Read for over three idle timeouts, sending nothing but the pongs the WebSocket
    // layer answers every ping with.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Frame::Ping(_)))) => pings += 1,
            Ok(other) => panic!("expected nothing but pings, got {other:?}"),
        }
    }
    assert!(pings >= 3, "{pings} pings in 1.5 s at a 100 ms interval");
    send(&mut socket, &GET_CHATS_ID_3).await;
    let (_, result) = next_result(&mut socket).await;
    assert_eq!(result.req_id, 3);
    assert_eq!(gateway.metrics().connections_closed_idle.get(), 0);
    stop(gateway, vec![socket]).await;
}

#[tokio::test]
async fn no_subscribe_connection_gets_results_but_no_updates_while_another_of_the_same_user_does() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), limits()).await;
    let ann_token = token(dir.path(), ANN, "ann").await;
    let mut results_only = raw_connect(&gateway).await;
    official_sign_in(&mut results_only, &ann_token, true).await;
    let mut phone = raw_connect(&gateway).await;
    official_sign_in(&mut phone, &ann_token, false).await;
    let mut bob = common::signed_in(&gateway, dir.path(), BOB, "bob").await;

    // Ann writes to Bob from the results-only connection: she gets the result there, and
    // the update only on her other connection (and Bob on his).
    send(&mut results_only, &send_hi_to_bob_id_4()).await;
    let (id, result) = next_result(&mut results_only).await;
    assert_eq!((id, result.req_id), (3, 4), "messages 1 and 2 were the sign-in answers; no update before");
    let sent = result.sent_message.expect("SentMessage at RPCResult field 3").message_id;
    for socket in [&mut phone] {
        let created = next_message(socket).await.update.and_then(|update| update.message_created).unwrap();
        let message = created.message.unwrap();
        assert_eq!((message.message_id, message.author_id, message.message.as_str()), (sent, ANN.get(), "hi"));
    }
    let osmium_proto::updates::update::Update::MessageCreated(created) =
        tokio::time::timeout(WAIT, bob.next_update()).await.unwrap().unwrap().update.unwrap()
    else {
        panic!("expected UpdateMessageCreated")
    };
    assert_eq!(created.message.unwrap().message_id, sent);

    // Bob answers: Ann's phone gets it, the results-only connection does not.
    let to_ann = messages::SendMessage { chat_ref: Some(common::user_ref(ANN)), message: "yo".into(), ..Default::default() };
    let result = common::call(&mut bob, Call::MessagesSendMessage(to_ann)).await;
    let Some(Answer::SentMessage(reply)) = result.result else { panic!("{result:?}") };
    let created = next_message(&mut phone).await.update.and_then(|update| update.message_created).unwrap();
    assert_eq!(created.message.unwrap().message_id, reply.message_id);
    assert_nothing_but_pings(&mut results_only).await;

    // Results still come: the chat list shows Bob's reply, unread.
    send(&mut results_only, &GET_CHATS_ID_3).await;
    let (id, result) = next_result(&mut results_only).await;
    assert_eq!((id, result.req_id), (4, 3));
    let chats = result.chats.unwrap().chats;
    assert_eq!(chats.iter().map(|chat| (chat.last_message_id, chat.unread_count)).collect::<Vec<_>>(), vec![(reply.message_id, 1)]);
    drop((results_only, phone));
    common::stop(gateway, [bob]).await;
}

#[tokio::test]
async fn a_later_initialize_without_no_subscribe_turns_live_updates_on() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), limits()).await;
    let mut socket = raw_connect(&gateway).await;
    official_sign_in(&mut socket, &token(dir.path(), ANN, "ann").await, true).await;
    let mut bob = common::signed_in(&gateway, dir.path(), BOB, "bob").await;
    let to_ann = || messages::SendMessage { chat_ref: Some(common::user_ref(ANN)), message: "yo".into(), ..Default::default() };
    let result = common::call(&mut bob, Call::MessagesSendMessage(to_ann())).await;
    assert!(matches!(result.result, Some(Answer::SentMessage(_))), "{result:?}");
    assert_nothing_but_pings(&mut socket).await;

    send(&mut socket, &initialize_frame(&[0x08, 0x03], false)).await;
    let (_, result) = next_result(&mut socket).await;
    assert_eq!(result.req_id, 3);
    assert!(result.initialized.is_some(), "{result:?}");
    let result = common::call(&mut bob, Call::MessagesSendMessage(to_ann())).await;
    let Some(Answer::SentMessage(second)) = result.result else { panic!("{result:?}") };
    let created = next_message(&mut socket).await.update.and_then(|update| update.message_created).unwrap();
    assert_eq!(created.message.unwrap().message_id, second.message_id);
    drop(socket);
    common::stop(gateway, [bob]).await;
}

#[tokio::test]
async fn get_unread_mentions_is_served_by_the_engine_not_501() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), limits()).await;
    let mut socket = raw_connect(&gateway).await;
    official_sign_in(&mut socket, &token(dir.path(), ANN, "ann").await, false).await;
    send(&mut socket, &GET_UNREAD_MENTIONS_ID_5).await;
    let (_, result) = next_result(&mut socket).await;
    let error = result.error.expect("an RPCError: Ann is in no group 7");
    assert_eq!((result.req_id, error.error_code), (5, 404), "{error:?}");
    assert_eq!(error.error_message, "not found: chat");
    stop(gateway, vec![socket]).await;
}
