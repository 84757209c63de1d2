//! The gateway end to end: a server on an ephemeral port, driven by WebSocket clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_engine::{Durability, EngineConfig, LogConfig};
use osmium_gateway::client::Client;
use osmium_gateway::{Gateway, GatewayLimits, ServerConfig, codes, tokens};
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::core::{ClientMessage, Initialize, RpcResult};
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::updates::{Update, update::Update as U};
use osmium_proto::{auth, chats, messages};
use prost::Message as _;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const ANN: UserId = UserId(1001);
const BOB: UserId = UserId(1002);
const WAIT: Duration = Duration::from_secs(10);

fn config(dir: &Path, limits: GatewayLimits) -> ServerConfig {
    ServerConfig {
        engine: EngineConfig {
            log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() },
            ..EngineConfig::default()
        },
        limits,
        ..ServerConfig::ephemeral(dir)
    }
}

async fn start(dir: &Path) -> Gateway {
    start_with(dir, GatewayLimits::default()).await
}

async fn start_with(dir: &Path, limits: GatewayLimits) -> Gateway {
    Gateway::start(config(dir, limits)).await.unwrap()
}

async fn connect(gateway: &Gateway) -> Client {
    Client::connect(gateway.local_addr()).await.unwrap()
}

async fn call(client: &mut Client, message: Call) -> RpcResult {
    tokio::time::timeout(WAIT, client.call(message)).await.expect("result in time").unwrap()
}

async fn next_update(client: &mut Client) -> U {
    let update: Update = tokio::time::timeout(WAIT, client.next_update()).await.expect("update in time").unwrap();
    update.update.expect("update content")
}

/// Asserts that nothing arrives for a moment.
async fn assert_quiet(client: &mut Client) {
    if client.pending_updates() > 0 {
        panic!("update left unchecked: {:?}", client.next_update().await);
    }
    let next = tokio::time::timeout(Duration::from_millis(300), client.next_frame()).await;
    assert!(next.is_err(), "unexpected frame: {next:?}");
}

async fn signed_in(gateway: &Gateway, dir: &Path, user: UserId, name: &str) -> Client {
    let token = tokens::create_token(dir, user, name).await.unwrap();
    let mut client = connect(gateway).await;
    let result = call(&mut client, Call::AuthAuthorize(auth::Authorize { token })).await;
    assert!(matches!(result.result, Some(Answer::Authorization(_))), "{result:?}");
    client
}

/// Disconnects the clients, then shuts down (a client that is not polled would never
/// answer the server's close frame, and shutdown would wait for it).
async fn stop<const N: usize>(gateway: Gateway, clients: [Client; N]) {
    drop(clients);
    gateway.shutdown().await;
}

/// The next result is error `code` for `req_id`, and the connection still answers calls.
async fn assert_refused_then_usable(client: &mut Client, req_id: u32, code: u32) {
    let result = tokio::time::timeout(WAIT, client.next_result()).await.unwrap().unwrap();
    assert_eq!((result.req_id, error_code(&result)), (req_id, Some(code)));
    let result = call(client, Call::CoreInitialize(Initialize::default())).await;
    assert!(matches!(result.result, Some(Answer::Initialized(_))));
}

fn error_code(result: &RpcResult) -> Option<u32> {
    match &result.result {
        Some(Answer::Error(error)) => Some(error.error_code),
        _ => None,
    }
}

fn group_ref(id: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: id })) }
}

fn ok_unit(result: &RpcResult) {
    assert_eq!(result.result, None, "expected an empty result, got {result:?}");
}

async fn close_frame(client: &mut Client) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(WAIT, client.next_frame()).await.expect("close in time") {
            Ok(Some(Frame::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
            Ok(Some(Frame::Binary(_) | Frame::Ping(_) | Frame::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn two_users_on_three_connections_chat_in_a_group_with_live_updates() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;

    // Sign-in: Initialize, then Authorize binds the connection and upserts the name.
    let ann_token = tokens::create_token(dir.path(), ANN, "ann").await.unwrap();
    let mut ann1 = connect(&gateway).await;
    let result = call(&mut ann1, Call::CoreInitialize(Initialize::default())).await;
    let Some(Answer::Initialized(initialized)) = result.result else { panic!("{result:?}") };
    let advertised = initialized.entrypoints.unwrap().entrypoints;
    let port = u32::from(gateway.local_addr().port());
    assert_eq!(advertised.len(), 1);
    assert_eq!((advertised[0].hostname.as_str(), advertised[0].ip_address.as_deref()), ("127.0.0.1", Some("127.0.0.1")));
    assert_eq!((advertised[0].port, advertised[0].region), (port, 0));
    assert_eq!(initialized.vapid_public_key, None);
    let result = call(&mut ann1, Call::AuthAuthorize(auth::Authorize { token: ann_token.clone() })).await;
    let Some(Answer::Authorization(authorization)) = result.result else { panic!("{result:?}") };
    let ann_user = authorization.user.clone().unwrap();
    assert_eq!((ann_user.id, ann_user.name.as_str()), (ANN.get(), "ann"));
    assert_eq!(gateway.engine().get_user(ANN).unwrap(), Some(ann_user.clone()));
    let mut ann2 = connect(&gateway).await;
    let result = call(&mut ann2, Call::AuthAuthorize(auth::Authorize { token: ann_token })).await;
    let Some(Answer::Authorization(second)) = result.result else { panic!("{result:?}") };
    assert_ne!(second.session_id, authorization.session_id);
    let mut bob = signed_in(&gateway, dir.path(), BOB, "bob").await;

    // Ann creates a group: both of her connections see it.
    let result = call(&mut ann1, Call::ChatsCreateChat(chats::CreateChat { users: vec![], name: "trip".into() })).await;
    let Some(Answer::Group(group)) = result.result else { panic!("{result:?}") };
    assert_eq!((group.name.as_str(), group.owner, group.participant_ids.clone()), ("trip", true, vec![ANN.get()]));
    let chat = group_ref(group.id);
    for client in [&mut ann1, &mut ann2] {
        let U::Group(update) = next_update(client).await else { panic!("expected UpdateGroup") };
        assert_eq!(update.group.as_ref(), Some(&group));
        assert_eq!(update.users, vec![ann_user.clone()]);
    }

    // Invite, look up and join by code.
    let result = call(
        &mut ann1,
        Call::ChatsCreateChatInvite(chats::CreateChatInvite { chat_ref: Some(chat), ..Default::default() }),
    )
    .await;
    let Some(Answer::CreatedInvite(invite)) = result.result else { panic!("{result:?}") };
    let result = call(&mut bob, Call::AuthLookupInvite(auth::LookupInvite { code: invite.code.clone() })).await;
    let Some(Answer::InvitePreview(preview)) = result.result else { panic!("{result:?}") };
    assert_eq!((preview.code.as_str(), preview.target_id, preview.creator_id), (invite.code.as_str(), group.id, ANN.get()));
    ok_unit(&call(&mut bob, Call::AuthUseInvite(auth::UseInvite { code: invite.code.clone() })).await);
    for (client, owner) in [(&mut ann1, true), (&mut ann2, true), (&mut bob, false)] {
        let U::Group(update) = next_update(client).await else { panic!("expected UpdateGroup") };
        let joined = update.group.unwrap();
        assert_eq!((joined.participant_ids, joined.owner), (vec![ANN.get(), BOB.get()], owner));
    }

    // Bob writes: everyone sees the message; only the sender's copy carries client_id.
    let send = messages::SendMessage { chat_ref: Some(chat), message: "hi".into(), client_id: Some(7), ..Default::default() };
    let result = call(&mut bob, Call::MessagesSendMessage(send)).await;
    let Some(Answer::SentMessage(sent)) = result.result else { panic!("{result:?}") };
    for (client, client_id) in [(&mut ann1, None), (&mut ann2, None), (&mut bob, Some(7))] {
        let U::MessageCreated(created) = next_update(client).await else { panic!("expected UpdateMessageCreated") };
        let message = created.message.unwrap();
        assert_eq!((message.message_id, message.author_id, message.message.as_str()), (sent.message_id, BOB.get(), "hi"));
        assert_eq!(created.client_id, client_id);
    }

    // Ann reads on one device and sees the read update on the other.
    let read = chats::MarkChatRead { chat_ref: Some(chat), message_id: sent.message_id, read_amount: None };
    ok_unit(&call(&mut ann1, Call::ChatsMarkChatRead(read)).await);
    for client in [&mut ann1, &mut ann2] {
        let U::ConversationLastRead(last_read) = next_update(client).await else { panic!("expected UpdateConversationLastRead") };
        assert_eq!((last_read.last_read_message_id, last_read.unread_count), (sent.message_id, Some(0)));
    }

    // Ann types: Bob sees it, Ann's other device does not; her message clears it.
    ok_unit(&call(&mut ann1, Call::ChatsSetTyping(chats::SetTyping { chat_ref: Some(chat), typing: true, action: None })).await);
    let U::ChatTyping(typing) = next_update(&mut bob).await else { panic!("expected UpdateChatTyping") };
    assert_eq!((typing.user_id, typing.typing), (ANN.get(), true));
    let send = messages::SendMessage { chat_ref: Some(chat), message: "hello".into(), ..Default::default() };
    let result = call(&mut ann1, Call::MessagesSendMessage(send)).await;
    let Some(Answer::SentMessage(hello)) = result.result else { panic!("{result:?}") };
    let U::ChatTyping(stopped) = next_update(&mut bob).await else { panic!("expected UpdateChatTyping") };
    assert_eq!((stopped.user_id, stopped.typing), (ANN.get(), false));
    for client in [&mut ann1, &mut ann2, &mut bob] {
        let U::MessageCreated(created) = next_update(client).await else { panic!("expected UpdateMessageCreated") };
        assert_eq!(created.message.unwrap().message_id, hello.message_id);
    }

    // Reads through the gateway.
    let history = messages::GetHistory { chat_ref: Some(chat), ..Default::default() };
    let result = call(&mut bob, Call::MessagesGetHistory(history)).await;
    let Some(Answer::Messages(page)) = result.result else { panic!("{result:?}") };
    let ids: Vec<u64> = page.messages.iter().map(|message| message.message_id).collect();
    assert_eq!(ids, vec![sent.message_id, hello.message_id]);
    let result = call(&mut ann2, Call::ChatsGetChats(chats::GetChats::default())).await;
    let Some(Answer::Chats(list)) = result.result else { panic!("{result:?}") };
    assert_eq!(list.chats.len(), 1);
    assert_eq!((list.chats[0].last_message_id, list.chats[0].unread_count), (hello.message_id, 0));
    let result = call(&mut bob, Call::ChatsGetChat(chats::GetChat { chat_ref: Some(chat) })).await;
    let Some(Answer::Chat(view)) = result.result else { panic!("{result:?}") };
    assert_eq!(view.chat.unwrap().unread_count, 1);

    // Bob leaves: Ann's devices see the smaller group; Bob is then refused.
    let leave = chats::RemoveChatMember { chat_ref: Some(chat), user_id: BOB.get() };
    ok_unit(&call(&mut bob, Call::ChatsRemoveChatMember(leave)).await);
    for client in [&mut ann1, &mut ann2] {
        let U::Group(update) = next_update(client).await else { panic!("expected UpdateGroup") };
        assert_eq!(update.group.unwrap().participant_ids, vec![ANN.get()]);
    }
    let U::Group(update) = next_update(&mut bob).await else { panic!("expected UpdateGroup") };
    assert_eq!(update.group.unwrap().participant_ids, vec![ANN.get()], "the one who left sees the group without them");
    let result = call(&mut bob, Call::ChatsGetChat(chats::GetChat { chat_ref: Some(chat) })).await;
    assert_eq!(error_code(&result), Some(404));

    for client in [&mut ann1, &mut ann2, &mut bob] {
        assert_quiet(client).await;
    }
    stop(gateway, [ann1, ann2, bob]).await;
}

#[tokio::test]
async fn dm_is_addressed_by_user_and_reaches_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut ann = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let mut bob = signed_in(&gateway, dir.path(), BOB, "bob").await;
    let to_bob = ChatRef { r#ref: Some(Ref::User(UserRef { user_id: BOB.get() })) };
    let send = messages::SendMessage { chat_ref: Some(to_bob), message: "psst".into(), ..Default::default() };
    let result = call(&mut ann, Call::MessagesSendMessage(send)).await;
    let Some(Answer::SentMessage(sent)) = result.result else { panic!("{result:?}") };
    let U::MessageCreated(created) = next_update(&mut bob).await else { panic!("expected UpdateMessageCreated") };
    let message = created.message.unwrap();
    assert_eq!(message.message_id, sent.message_id);
    assert_eq!(message.chat_ref.unwrap().r#ref, Some(Ref::User(UserRef { user_id: ANN.get() })));
    stop(gateway, [ann, bob]).await;
}

#[tokio::test]
async fn call_before_authorize_gets_401_and_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let token = tokens::create_token(dir.path(), ANN, "ann").await.unwrap();
    let mut client = connect(&gateway).await;
    let result = call(&mut client, Call::ChatsGetChats(chats::GetChats::default())).await;
    assert_eq!(error_code(&result), Some(codes::UNAUTHORIZED));
    let result = call(&mut client, Call::AuthAuthorize(auth::Authorize { token: "not-a-token".into() })).await;
    assert_eq!(error_code(&result), Some(codes::UNAUTHORIZED));
    let result = call(&mut client, Call::AuthAuthorize(auth::Authorize { token })).await;
    assert!(matches!(result.result, Some(Answer::Authorization(_))));
    let result = call(&mut client, Call::ChatsGetChats(chats::GetChats::default())).await;
    assert!(matches!(result.result, Some(Answer::Chats(_))));
    assert!(gateway.engine().last_position().get() == 1, "only the sign-in's user upsert was written");
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn undecodable_frame_gets_400_with_req_id_zero_and_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut client = connect(&gateway).await;
    client.send_frame(Frame::Binary(vec![0xff, 0xff, 0xff, 0xff].into())).await.unwrap();
    assert_refused_then_usable(&mut client, 0, codes::BAD_FRAME).await;
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn text_frame_gets_400_with_req_id_zero_and_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut client = connect(&gateway).await;
    client.send_frame(Frame::Text("hello".into())).await.unwrap();
    assert_refused_then_usable(&mut client, 0, codes::BAD_FRAME).await;
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn oversized_frame_gets_413_and_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { frame_bytes_max: 1024, frame_bytes_close_max: 8 * 1024, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let mut client = connect(&gateway).await;
    let big = ClientMessage {
        id: 42,
        message: Some(Call::ChatsCreateChat(chats::CreateChat { users: vec![], name: "x".repeat(2_000) })),
    };
    client.send_frame(Frame::Binary(big.encode_to_vec().into())).await.unwrap();
    assert_refused_then_usable(&mut client, 42, codes::FRAME_TOO_LARGE).await;
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn frame_over_the_transport_bound_closes_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { frame_bytes_max: 1024, frame_bytes_close_max: 8 * 1024, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let mut client = connect(&gateway).await;
    client.send_frame(Frame::Binary(vec![0u8; 16 * 1024].into())).await.unwrap();
    let (code, _) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Size);
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn unknown_call_gets_501_and_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    // id = 9, then field 2 (a call outside the chat subset), length-delimited, empty.
    client.send_frame(Frame::Binary(vec![0x08, 0x09, 0x12, 0x00].into())).await.unwrap();
    let result = tokio::time::timeout(WAIT, client.next_result()).await.unwrap().unwrap();
    assert_eq!((result.req_id, error_code(&result)), (9, Some(codes::UNSUPPORTED)));
    let Some(Answer::Error(error)) = &result.result else { panic!("{result:?}") };
    assert!(error.error_message.contains("ClientMessage field 2 "), "names the call's field: {error:?}");
    let result = call(&mut client, Call::ChatsGetChats(chats::GetChats::default())).await;
    assert!(matches!(result.result, Some(Answer::Chats(_))));
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn engine_error_maps_to_its_rpc_code() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let result = call(&mut client, Call::ChatsGetChat(chats::GetChat { chat_ref: Some(group_ref(12345)) })).await;
    let Some(Answer::Error(error)) = result.result else { panic!("{result:?}") };
    assert_eq!(error.error_code, 404);
    assert!(error.error_message.contains("not found"), "{error:?}");
    let result = call(&mut client, Call::AuthUseInvite(auth::UseInvite { code: "nope".into() })).await;
    assert_eq!(error_code(&result), Some(404));
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn typing_flood_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { typing_per_second_max: 3, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let result = call(&mut client, Call::ChatsCreateChat(chats::CreateChat { users: vec![], name: "g".into() })).await;
    let Some(Answer::Group(group)) = result.result else { panic!("{result:?}") };
    let typing = chats::SetTyping { chat_ref: Some(group_ref(group.id)), typing: true, action: None };
    for _ in 0..6 {
        client.send(Call::ChatsSetTyping(typing)).await.unwrap();
    }
    let mut codes_seen = Vec::new();
    for _ in 0..6 {
        let result = tokio::time::timeout(WAIT, client.next_result()).await.unwrap().unwrap();
        codes_seen.push(error_code(&result));
    }
    assert_eq!(codes_seen.iter().filter(|code| code.is_none()).count(), 3, "{codes_seen:?}");
    assert_eq!(codes_seen.iter().filter(|code| **code == Some(codes::RATE_LIMITED)).count(), 3, "{codes_seen:?}");
    stop(gateway, [client]).await;
}

/// Fills ANN's own chat with 100 messages of 4,000 characters, then asks for that history
/// (400 KB per answer) up to 300 times without reading, until the server gives up.
async fn flood_without_reading(gateway: &Gateway, client: &mut Client) {
    let own = ChatRef { r#ref: Some(Ref::Self_(osmium_proto::refs::RefSelf {})) };
    for _ in 0..100 {
        let send = messages::SendMessage { chat_ref: Some(own), message: "y".repeat(4_000), ..Default::default() };
        gateway.engine().send_message(ANN, send).await.unwrap();
    }
    let history = messages::GetHistory { chat_ref: Some(own), limit: Some(100), offset: None };
    for _ in 0..300 {
        if client.send(Call::MessagesGetHistory(history)).await.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn slow_reader_is_closed_when_its_outbound_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { outbound_queue_max: 4, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    flood_without_reading(&gateway, &mut client).await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("outbound queue full"), "{reason}");
    assert_eq!(gateway.metrics().connections_closed_slow.get(), 1);
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn slow_reader_is_closed_when_its_outbound_queue_bytes_are_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Plenty of messages allowed: only the byte bound can close this connection.
    let limits = GatewayLimits { outbound_queue_max: 100_000, outbound_queue_bytes_max: 1024 * 1024, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    flood_without_reading(&gateway, &mut client).await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!((code, reason.contains("outbound queue full")), (CloseCode::Policy, true), "{reason}");
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn revoked_token_is_refused_and_its_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let token = tokens::create_token(dir.path(), ANN, "ann").await.unwrap();
    let mut signed = connect(&gateway).await;
    let result = call(&mut signed, Call::AuthAuthorize(auth::Authorize { token: token.clone() })).await;
    assert!(matches!(result.result, Some(Answer::Authorization(_))));
    assert_eq!(tokens::revoke_tokens(dir.path(), ANN, None).unwrap(), 1);
    let mut fresh = connect(&gateway).await;
    let result = call(&mut fresh, Call::AuthAuthorize(auth::Authorize { token })).await;
    assert_eq!(error_code(&result), Some(codes::UNAUTHORIZED));
    // That Authorize re-read the file: the signed-in connection is closed without a call.
    let (code, reason) = close_frame(&mut signed).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Policy, "token revoked"));
    stop(gateway, [signed, fresh]).await;
}

#[tokio::test]
async fn revoked_token_closes_an_idle_connection_without_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut idle = signed_in(&gateway, dir.path(), ANN, "ann").await;
    assert_eq!(tokens::revoke_tokens(dir.path(), ANN, None).unwrap(), 1);
    // No call: the server notices the revocation on its tokens poll and closes on its own.
    let (code, reason) = close_frame(&mut idle).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Policy, "token revoked"));
    stop(gateway, [idle]).await;
}

#[tokio::test]
async fn token_file_stores_only_hashes_and_the_engine_accepts_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fresh");
    let token = tokens::create_token(&dir, ANN, "ann").await.unwrap();
    assert_eq!(token.len(), 43, "32 bytes in URL-safe base64 without padding");
    let stored = std::fs::read_to_string(dir.join(tokens::TOKENS_FILE_NAME)).unwrap();
    assert!(!stored.contains(&token));
    assert!(stored.contains(&tokens::token_hash(&token)));
    let gateway = start(&dir).await;
    let mut client = connect(&gateway).await;
    let result = call(&mut client, Call::AuthAuthorize(auth::Authorize { token })).await;
    assert!(matches!(result.result, Some(Answer::Authorization(_))));
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn shutdown_closes_connections_with_going_away_and_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let shutdown = tokio::spawn(gateway.shutdown());
    let (code, _) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Away);
    let _ = client.next_frame().await; // sends the close reply, ending the server's handshake
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    let reopened = osmium_engine::ChatEngine::open(dir.path(), EngineConfig::default()).await.unwrap();
    assert_eq!(reopened.get_user(ANN).unwrap().map(|user| user.name), Some("ann".to_owned()));
}

#[tokio::test]
async fn dropping_the_gateway_without_shutdown_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    drop(gateway);
    // Its tasks are aborted, not joined: the directory is free once they are gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match osmium_engine::ChatEngine::open(dir.path(), EngineConfig::default()).await {
            Ok(_) => break,
            Err(err) => assert!(tokio::time::Instant::now() < deadline, "directory still held: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
}

/// The metrics endpoint's answer, status line included.
async fn scrape_metrics(gateway: &Gateway) -> String {
    let mut http = tokio::net::TcpStream::connect(gateway.metrics_addr().unwrap()).await.unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    body
}

#[tokio::test]
async fn metrics_endpoint_serves_the_engines_memory_by_part() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    // After a sign-in the state holds the user and RocksDB's cache the memtable's charge;
    // the figures are copied every MEMORY_POLL_MS.
    let value = |body: &str, part: &str| {
        let prefix = format!("osmium_engine_memory_bytes{{part=\"{part}\"}} ");
        body.lines().find_map(|line| line.strip_prefix(prefix.as_str())).and_then(|value| value.parse::<u64>().ok())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = scrape_metrics(&gateway).await;
        let parts = ["state", "rocksdb_cache", "rocksdb_memtables"].map(|part| value(&body, part));
        if parts.iter().all(|bytes| bytes.is_some_and(|bytes| bytes > 0)) && value(&body, "rocksdb_table_readers").is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "memory parts {parts:?} in\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(gateway, [client]).await;
}

#[tokio::test]
async fn metrics_endpoint_serves_request_and_engine_counters() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut client = signed_in(&gateway, dir.path(), ANN, "ann").await;
    call(&mut client, Call::ChatsGetChats(chats::GetChats::default())).await;
    let expected = [
        "osmium_gateway_connections 1",
        "osmium_gateway_requests_total{kind=\"chats_get_chats\",result=\"ok\"} 1",
        "osmium_gateway_requests_total{kind=\"auth_authorize\",result=\"ok\"} 1",
        "osmium_gateway_request_duration_seconds_count{kind=\"chats_get_chats\"} 1",
        "osmium_engine_events_appended_total 1",
        "osmium_engine_commit_batch_events_count 1",
    ];
    // The engine counters follow the log's live tail, a moment after the commit.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = scrape_metrics(&gateway).await;
        let missing: Vec<_> = expected.iter().filter(|line| !body.lines().any(|got| got == **line)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "missing {missing:?} in\n{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(gateway, [client]).await;
}

/// The body of `GET /metrics` once every line of `expected` is in it (within `WAIT`).
async fn metrics_with(gateway: &Gateway, expected: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut http = tokio::net::TcpStream::connect(gateway.metrics_addr().unwrap()).await.unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).await.unwrap();
        let missing: Vec<_> = expected.iter().filter(|line| !body.lines().any(|got| got == **line)).collect();
        if missing.is_empty() {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "missing {missing:?} in\n{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn update_lag_is_observed_for_every_update_queued_for_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut phone = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let mut laptop = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let result = call(&mut phone, Call::ChatsCreateChat(chats::CreateChat { users: vec![], name: "g".into() })).await;
    assert!(matches!(result.result, Some(Answer::Group(_))), "{result:?}");
    for client in [&mut phone, &mut laptop] {
        assert!(matches!(next_update(client).await, U::Group(_)));
    }
    // One update per connection, each queued when the log was at its own position.
    let body = metrics_with(&gateway, &["osmium_gateway_update_lag_positions_count 2"]).await;
    assert!(body.lines().any(|line| line == "osmium_gateway_update_lag_positions_bucket{le=\"1.0\"} 2"), "{body}");
    assert!(!body.contains("projection_lag"), "{body}");
    stop(gateway, [phone, laptop]).await;
}

#[tokio::test]
async fn metrics_requests_over_the_limit_wait_until_one_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let addr = gateway.metrics_addr().unwrap();
    // Idle clients that never send a request hold every slot.
    let mut idle = Vec::new();
    for _ in 0..osmium_gateway::server::METRICS_CONNECTIONS_MAX {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut scrape = tokio::spawn(async move {
        let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).await.unwrap();
        body
    });
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut scrape).await.is_err(), "answered past the limit");
    drop(idle.pop());
    let body = tokio::time::timeout(WAIT, scrape).await.expect("answered once a slot is free").unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    drop(idle);
    stop(gateway, []).await;
}

#[test]
fn token_commands_create_list_and_revoke_from_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_osmium-server"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let token = run(&["token", "create", "--user", "1001", "--name", "ann"]);
    assert_eq!(token.trim().len(), 43);
    let listed = run(&["token", "list"]);
    assert!(listed.contains("user 1001 name \"ann\""), "{listed}");
    assert!(!listed.contains(token.trim()));
    assert_eq!(run(&["token", "revoke", "--user", "1001"]).trim(), "revoked 1 token(s)");
    assert_eq!(run(&["token", "list"]), "");
}

#[tokio::test]
async fn draft_and_mute_changes_reach_every_connection_of_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut phone = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let mut laptop = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let result = call(&mut phone, Call::ChatsCreateChat(chats::CreateChat { users: vec![], name: "notes".into() })).await;
    let Some(Answer::Group(group)) = result.result else { panic!("{result:?}") };
    for client in [&mut phone, &mut laptop] {
        assert!(matches!(next_update(client).await, U::Group(_)));
    }
    // Drafts and mute have no call on the wire; the embedding backend sets them.
    gateway.engine().save_draft(ANN, group_ref(group.id), Some("half a thought".into())).await.unwrap();
    gateway.engine().set_muted(ANN, group_ref(group.id), true).await.unwrap();
    for client in [&mut phone, &mut laptop] {
        let U::Chat(update) = next_update(client).await else { panic!("expected UpdateChat") };
        assert_eq!(update.chat.unwrap().chat.unwrap().draft.as_deref(), Some("half a thought"));
        let U::Chat(update) = next_update(client).await else { panic!("expected UpdateChat") };
        assert_eq!(update.chat.unwrap().chat.unwrap().notif_prefs, osmium_proto::types::NotifPrefs::None as i32, "muted is NONE");
    }
    stop(gateway, [phone, laptop]).await;
}

#[test]
fn server_binary_shuts_down_gracefully_on_sigterm() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_osmium-server"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--durability", "buffered", "--data-dir"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(server.stderr.take().unwrap());
    let addr: std::net::SocketAddr = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "server exited before listening");
        if let Some(rest) = line.split("local_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(addr).await.unwrap();
        let result = call(&mut client, Call::CoreInitialize(Initialize::default())).await;
        assert!(matches!(result.result, Some(Answer::Initialized(_))));
        // The shell's builtin `kill`: present wherever `sh` is, unlike procps' /usr/bin/kill.
        let kill = format!("kill -TERM {}", server.id());
        let status = std::process::Command::new("sh").args(["-c", &kill]).status().unwrap();
        assert!(status.success());
        let (code, _) = close_frame(&mut client).await;
        assert_eq!(code, CloseCode::Away);
        let _ = client.next_frame().await;
    });
    // Bounded: a shutdown that hangs fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + 3 * WAIT;
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("server still running {:?} after SIGTERM", 3 * WAIT);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn every_remaining_chat_call_is_served_with_its_result_variant() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path()).await;
    let mut bob = signed_in(&gateway, dir.path(), BOB, "bob").await;
    let mut ann = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let result = call(&mut ann, Call::ChatsCreateChat(chats::CreateChat { users: vec![], name: "g".into() })).await;
    let Some(Answer::Group(group)) = result.result else { panic!("{result:?}") };
    let chat = group_ref(group.id);
    let edit = chats::EditChat { chat_ref: Some(chat), name: Some("renamed".into()), ..Default::default() };
    let result = call(&mut ann, Call::ChatsEditChat(edit)).await;
    let Some(Answer::Chat(edited)) = result.result else { panic!("{result:?}") };
    assert_eq!(edited.group.unwrap().name, "renamed");
    ok_unit(&call(&mut ann, Call::ChatsAddChatMember(chats::AddChatMember { chat_ref: Some(chat), user_id: BOB.get() })).await);
    let result = call(&mut ann, Call::ChatsCreateChatInvite(chats::CreateChatInvite { chat_ref: Some(chat), ..Default::default() })).await;
    let Some(Answer::CreatedInvite(invite)) = result.result else { panic!("{result:?}") };
    let result = call(&mut ann, Call::ChatsListChatInvites(chats::ListChatInvites { chat_ref: Some(chat) })).await;
    let Some(Answer::InviteList(list)) = result.result else { panic!("{result:?}") };
    assert_eq!(list.invites.iter().map(|invite| invite.code.as_str()).collect::<Vec<_>>(), vec![invite.code.as_str()]);
    ok_unit(&call(&mut ann, Call::ChatsDeleteChatInvite(chats::DeleteChatInvite { code: invite.code })).await);
    let send = messages::SendMessage { chat_ref: Some(chat), message: "tpyo".into(), ..Default::default() };
    let result = call(&mut bob, Call::MessagesSendMessage(send)).await;
    let Some(Answer::SentMessage(sent)) = result.result else { panic!("{result:?}") };
    let edit = messages::EditMessage { chat_ref: Some(chat), message_id: sent.message_id, message: Some("typo".into()), ..Default::default() };
    ok_unit(&call(&mut bob, Call::MessagesEditMessage(edit)).await);
    let delete = messages::DeleteMessage { chat_ref: Some(chat), message_ids: vec![sent.message_id] };
    ok_unit(&call(&mut ann, Call::MessagesDeleteMessage(delete)).await);
    let result = call(&mut bob, Call::MessagesGetHistory(messages::GetHistory { chat_ref: Some(chat), ..Default::default() })).await;
    let Some(Answer::Messages(page)) = result.result else { panic!("{result:?}") };
    assert!(page.messages.is_empty(), "{page:?}");
    stop(gateway, [ann, bob]).await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), GatewayLimits { connections_max: 1, ..GatewayLimits::default() }).await;
    let first = connect(&gateway).await;
    let addr = gateway.local_addr();
    let mut second = tokio::spawn(async move { Client::connect(addr).await.unwrap() });
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut second).await.is_err(), "served past the limit");
    drop(first);
    let mut second = tokio::time::timeout(WAIT, second).await.expect("served once the first closed").unwrap();
    let result = call(&mut second, Call::CoreInitialize(Initialize::default())).await;
    assert!(matches!(result.result, Some(Answer::Initialized(_))));
    stop(gateway, [second]).await;
}

#[tokio::test]
async fn revoke_with_a_name_keeps_the_users_other_tokens() {
    let dir = tempfile::tempdir().unwrap();
    tokens::create_token(dir.path(), ANN, "phone").await.unwrap();
    tokens::create_token(dir.path(), ANN, "laptop").await.unwrap();
    tokens::create_token(dir.path(), BOB, "phone").await.unwrap();
    assert_eq!(tokens::revoke_tokens(dir.path(), ANN, Some("phone")).unwrap(), 1);
    let left: Vec<(u64, String)> =
        tokens::list_tokens(dir.path()).unwrap().into_iter().map(|entry| (entry.user_id, entry.name)).collect();
    assert_eq!(left, vec![(ANN.get(), "laptop".to_owned()), (BOB.get(), "phone".to_owned())]);
}

#[tokio::test]
async fn malformed_tokens_file_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    tokens::create_token(dir.path(), ANN, "ann").await.unwrap();
    std::fs::write(dir.path().join(tokens::TOKENS_FILE_NAME), b"{ not json").unwrap();
    let started = Gateway::start(config(dir.path(), GatewayLimits::default())).await;
    assert!(matches!(started, Err(osmium_gateway::GatewayError::TokensFile { .. })), "{started:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_token_creates_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    tokens::create_token(dir.path(), ANN, "first").await.unwrap();
    let creates = (0..8).map(|index| {
        let dir = dir.path().to_owned();
        tokio::spawn(async move { tokens::create_token(&dir, UserId(2_000 + index), "device").await.unwrap() })
    });
    for create in creates.collect::<Vec<_>>() {
        create.await.unwrap();
    }
    assert_eq!(tokens::list_tokens(dir.path()).unwrap().len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_token_creates_on_a_fresh_directory_all_succeed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fresh");
    let creates = (0..8).map(|index| {
        let dir = dir.clone();
        tokio::spawn(async move { tokens::create_token(&dir, UserId(2_000 + index), "device").await })
    });
    for create in creates.collect::<Vec<_>>() {
        create.await.unwrap().unwrap();
    }
    assert_eq!(tokens::list_tokens(&dir).unwrap().len(), 8);
}

#[tokio::test]
async fn an_idle_timeout_not_above_the_ping_interval_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { idle_timeout_ms: 1_000, ping_interval_ms: 1_000, ..GatewayLimits::default() };
    let started = Gateway::start(config(dir.path(), limits)).await;
    let Err(osmium_gateway::GatewayError::InvalidArgument { field, .. }) = started else { panic!("{started:?}") };
    assert_eq!(field, "idle_timeout_ms");
}

#[tokio::test]
async fn a_zero_rate_limit_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { send_message_per_user_per_second_max: 0, ..GatewayLimits::default() };
    let started = Gateway::start(config(dir.path(), limits)).await;
    let Err(osmium_gateway::GatewayError::InvalidArgument { field, .. }) = started else { panic!("{started:?}") };
    assert_eq!(field, "send_message_per_user_per_second_max");
}
