//! Issue #14, the gateway's side: sign-in attempts limited per connection and per remote
//! address, sends limited per user across connections, and every call of the chat subset
//! made with another user's ids refused without changing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{ANN, BOB, EVE, call, connect, error_code, group_ref, signed_in, start_with, user_ref};
use osmium_gateway::client::Client;
use osmium_gateway::metrics::Limit;
use osmium_gateway::{GatewayLimits, codes, tokens};
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::events::{event_envelope::Event, stream_ref::Stream};
use osmium_proto::ids::{Position, UserId};
use osmium_proto::refs::{ChatRef, RefSelf, UserRef, chat_ref::Ref};
use osmium_proto::{auth, chats, messages};
use std::time::Duration;

async fn authorize(client: &mut Client, token: &str) -> Option<u32> {
    error_code(&call(client, Call::AuthAuthorize(auth::Authorize { token: token.to_owned() })).await)
}

/// A token that was never created (43 characters, like a real one).
const WRONG_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn failed_sign_ins_over_the_per_connection_limit_get_429_even_with_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { sign_in_failures_per_connection_max: 2, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let token = tokens::create_token(dir.path(), ANN, "ann").await.unwrap();
    let mut guesser = connect(&gateway).await;
    assert_eq!(authorize(&mut guesser, WRONG_TOKEN).await, Some(codes::UNAUTHORIZED));
    assert_eq!(authorize(&mut guesser, WRONG_TOKEN).await, Some(codes::UNAUTHORIZED));
    assert_eq!(authorize(&mut guesser, &token).await, Some(codes::RATE_LIMITED), "the token is not even looked at");
    assert_eq!(gateway.metrics().rate_limited_count(Limit::SignInConnection), 1);
    // The limit is the connection's: a new one from the same address signs in.
    let mut fresh = connect(&gateway).await;
    assert_eq!(authorize(&mut fresh, &token).await, None);
    common::metrics_with(&gateway, &["osmium_gateway_rate_limited_total{limit=\"sign_in_connection\"} 1"]).await;
    common::stop(gateway, [guesser, fresh]).await;
}

#[tokio::test]
async fn failed_sign_ins_over_the_per_address_limit_get_429_on_every_connection_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let limits = GatewayLimits { sign_in_failures_per_address_per_minute_max: 3, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let token = tokens::create_token(dir.path(), ANN, "ann").await.unwrap();
    let mut signed = connect(&gateway).await;
    assert_eq!(authorize(&mut signed, &token).await, None, "successful sign-ins do not count");
    let mut guessers = Vec::new();
    for _ in 0..3 {
        let mut guesser = connect(&gateway).await;
        assert_eq!(authorize(&mut guesser, WRONG_TOKEN).await, Some(codes::UNAUTHORIZED));
        guessers.push(guesser);
    }
    // 127.0.0.1 has used its minute's worth: a new connection from it is refused too.
    let mut next = connect(&gateway).await;
    assert_eq!(authorize(&mut next, &token).await, Some(codes::RATE_LIMITED));
    assert_eq!(gateway.metrics().rate_limited_count(Limit::SignInAddress), 1);
    // A connection signed in before is not affected.
    let result = call(&mut signed, Call::ChatsGetChats(chats::GetChats::default())).await;
    assert!(matches!(result.result, Some(Answer::Chats(_))), "{result:?}");
    drop(guessers);
    common::stop(gateway, [signed, next]).await;
}

#[tokio::test]
async fn send_message_over_the_per_user_limit_gets_429_across_connections() {
    let dir = tempfile::tempdir().unwrap();
    // One send per second: the second one within the same second is over, whichever
    // connection of the user makes it.
    let limits = GatewayLimits { send_message_per_user_per_second_max: 1, ..GatewayLimits::default() };
    let gateway = start_with(dir.path(), limits).await;
    let mut phone = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let mut laptop = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let mut bob = signed_in(&gateway, dir.path(), BOB, "bob").await;
    let own = ChatRef { r#ref: Some(Ref::Self_(RefSelf {})) };
    let send = |text: &str| messages::SendMessage { chat_ref: Some(own), message: text.into(), ..Default::default() };
    let result = call(&mut phone, Call::MessagesSendMessage(send("one"))).await;
    assert!(matches!(result.result, Some(Answer::SentMessage(_))), "{result:?}");
    let result = call(&mut laptop, Call::MessagesSendMessage(send("two"))).await;
    let Some(Answer::Error(error)) = result.result else { panic!("{result:?}") };
    assert_eq!(error.error_code, codes::RATE_LIMITED);
    assert!(error.error_message.contains("per user"), "{error:?}");
    assert_eq!(gateway.metrics().rate_limited_count(Limit::SendMessageUser), 1);
    // Another user has a bucket of their own.
    let result = call(&mut bob, Call::MessagesSendMessage(send("three"))).await;
    assert!(matches!(result.result, Some(Answer::SentMessage(_))), "{result:?}");
    // The refused send wrote nothing.
    let history = messages::GetHistory { chat_ref: Some(own), ..Default::default() };
    let result = call(&mut phone, Call::MessagesGetHistory(history)).await;
    let Some(Answer::Messages(page)) = result.result else { panic!("{result:?}") };
    assert_eq!(page.messages.iter().map(|message| message.message.as_str()).collect::<Vec<_>>(), vec!["one"]);
    common::stop(gateway, [phone, laptop, bob]).await;
}

/// Reads whatever the server still sends until it has been quiet for a moment.
async fn drain(client: &mut Client) {
    while client.pending_updates() > 0 {
        client.next_update().await.unwrap();
    }
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), client.next_frame()).await {
        frame.unwrap().expect("the connection stays open");
    }
}

fn sent(result: osmium_proto::core::RpcResult) -> u64 {
    let Some(Answer::SentMessage(sent)) = result.result else { panic!("{result:?}") };
    sent.message_id
}

fn group(result: osmium_proto::core::RpcResult) -> u64 {
    let Some(Answer::Group(group)) = result.result else { panic!("{result:?}") };
    group.id
}

fn invite(result: osmium_proto::core::RpcResult) -> String {
    let Some(Answer::CreatedInvite(invite)) = result.result else { panic!("{result:?}") };
    invite.code
}

/// The chat id of the DM between `a` and `b`, from the log (the protocol never shows it).
fn direct_chat_id(gateway: &osmium_gateway::Gateway, a: UserId, b: UserId) -> u64 {
    let events = gateway.engine().log().read_all(Position(1), 10_000).unwrap();
    events
        .iter()
        .find_map(|envelope| match (&envelope.event, envelope.stream.as_ref().and_then(|stream| stream.stream)) {
            (Some(Event::DirectChatCreated(created)), Some(Stream::ChatId(chat)))
                if [created.user_a, created.user_b] == [a.get(), b.get()] || [created.user_a, created.user_b] == [b.get(), a.get()] =>
            {
                Some(chat)
            }
            _ => None,
        })
        .expect("the DM was created")
}

#[tokio::test]
async fn every_chat_call_with_another_users_ids_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), GatewayLimits::default()).await;
    let mut ann = signed_in(&gateway, dir.path(), ANN, "ann").await;
    let mut bob = signed_in(&gateway, dir.path(), BOB, "bob").await;
    let mut eve = signed_in(&gateway, dir.path(), EVE, "eve").await;

    // Ann's group with Bob (Eve is not in it), with a message and an invite; Ann's DM
    // with Bob; and Ann's group with Eve (Eve is a member, not the owner), with a message
    // and an invite.
    let bob_user = UserRef { user_id: BOB.get() };
    let eve_user = UserRef { user_id: EVE.get() };
    let theirs = group(call(&mut ann, Call::ChatsCreateChat(chats::CreateChat { users: vec![bob_user], name: "theirs".into() })).await);
    let theirs_ref = group_ref(theirs);
    let say = |chat: ChatRef, text: &str| messages::SendMessage { chat_ref: Some(chat), message: text.into(), ..Default::default() };
    let in_theirs = sent(call(&mut ann, Call::MessagesSendMessage(say(theirs_ref, "private"))).await);
    let invite_theirs = chats::CreateChatInvite { chat_ref: Some(theirs_ref), ..Default::default() };
    let theirs_code = invite(call(&mut ann, Call::ChatsCreateChatInvite(invite_theirs)).await);
    let in_dm = sent(call(&mut ann, Call::MessagesSendMessage(say(user_ref(BOB), "between us"))).await);
    let dm_as_group = group_ref(direct_chat_id(&gateway, ANN, BOB));
    let shared = group(call(&mut ann, Call::ChatsCreateChat(chats::CreateChat { users: vec![eve_user], name: "shared".into() })).await);
    let shared_ref = group_ref(shared);
    let in_shared = sent(call(&mut ann, Call::MessagesSendMessage(say(shared_ref, "mine"))).await);
    let invite_shared = chats::CreateChatInvite { chat_ref: Some(shared_ref), ..Default::default() };
    let shared_code = invite(call(&mut ann, Call::ChatsCreateChatInvite(invite_shared)).await);
    for client in [&mut ann, &mut bob, &mut eve] {
        drain(client).await;
    }
    let position = gateway.engine().last_position();
    let projections = gateway.engine().projection_contents().unwrap();

    let own = ChatRef { r#ref: Some(Ref::Self_(RefSelf {})) };
    let edit = |chat: ChatRef, message_id: u64| {
        Call::MessagesEditMessage(messages::EditMessage { chat_ref: Some(chat), message_id, message: Some("pwned".into()), ..Default::default() })
    };
    let delete = |chat: ChatRef, message_id: u64| {
        Call::MessagesDeleteMessage(messages::DeleteMessage { chat_ref: Some(chat), message_ids: vec![message_id] })
    };
    let history = |chat: ChatRef| Call::MessagesGetHistory(messages::GetHistory { chat_ref: Some(chat), ..Default::default() });
    let read = |chat: ChatRef, message_id: u64| {
        Call::ChatsMarkChatRead(chats::MarkChatRead { chat_ref: Some(chat), message_id, read_amount: None })
    };
    let typing = |chat: ChatRef| Call::ChatsSetTyping(chats::SetTyping { chat_ref: Some(chat), typing: true, action: None });
    let rename = |chat: ChatRef| Call::ChatsEditChat(chats::EditChat { chat_ref: Some(chat), name: Some("pwned".into()), ..Default::default() });
    let add = |chat: ChatRef, user: UserId| Call::ChatsAddChatMember(chats::AddChatMember { chat_ref: Some(chat), user_id: user.get() });
    let remove =
        |chat: ChatRef, user: UserId| Call::ChatsRemoveChatMember(chats::RemoveChatMember { chat_ref: Some(chat), user_id: user.get() });
    let create_invite = |chat: ChatRef| Call::ChatsCreateChatInvite(chats::CreateChatInvite { chat_ref: Some(chat), ..Default::default() });
    let list_invites = |chat: ChatRef| Call::ChatsListChatInvites(chats::ListChatInvites { chat_ref: Some(chat) });
    let delete_invite = |code: &str| Call::ChatsDeleteChatInvite(chats::DeleteChatInvite { code: code.to_owned() });
    let get = |chat: ChatRef| Call::ChatsGetChat(chats::GetChat { chat_ref: Some(chat) });

    // Every call of the chat subset that takes an id, with ids that are not Eve's to use.
    // (GetChats takes none and LookupInvite/UseInvite take an invite code, whose holder
    // the protocol lets look and join; CreateChat only makes a group of Eve's own.)
    let attempts: Vec<(&str, Call, u32)> = vec![
        ("GetChat of a group she is not in", get(theirs_ref), 404),
        ("GetChat of a DM between two others, by its chat id", get(dm_as_group), 404),
        ("GetHistory of a group she is not in", history(theirs_ref), 404),
        ("GetHistory of a DM between two others", history(dm_as_group), 404),
        ("SendMessage to a group she is not in", Call::MessagesSendMessage(say(theirs_ref, "hi")), 404),
        ("SendMessage to a DM between two others", Call::MessagesSendMessage(say(dm_as_group, "hi")), 404),
        ("EditMessage of another's message in a group she is not in", edit(theirs_ref, in_theirs), 404),
        ("EditMessage of another's message in a DM between two others", edit(dm_as_group, in_dm), 404),
        ("EditMessage of another's message in a group she is in", edit(shared_ref, in_shared), 403),
        ("EditMessage of another's message through her own chat", edit(own, in_theirs), 404),
        ("DeleteMessage of another's message in a group she is not in", delete(theirs_ref, in_theirs), 404),
        ("DeleteMessage of another's message in a DM between two others", delete(dm_as_group, in_dm), 404),
        ("DeleteMessage of another's message in a group she is in", delete(shared_ref, in_shared), 403),
        ("DeleteMessage of another's message through her own chat", delete(own, in_theirs), 404),
        ("MarkChatRead in a group she is not in", read(theirs_ref, in_theirs), 404),
        ("MarkChatRead in a DM between two others", read(dm_as_group, in_dm), 404),
        ("SetTyping in a group she is not in", typing(theirs_ref), 404),
        ("SetTyping in a DM between two others", typing(dm_as_group), 404),
        ("EditChat of a group she is not in", rename(theirs_ref), 404),
        ("EditChat of a group she is in but does not own", rename(shared_ref), 403),
        ("AddChatMember of herself to a group she is not in", add(theirs_ref, EVE), 404),
        ("AddChatMember to a group she does not own", add(shared_ref, BOB), 403),
        ("RemoveChatMember from a group she is not in", remove(theirs_ref, BOB), 404),
        ("RemoveChatMember of the owner from a group she does not own", remove(shared_ref, ANN), 403),
        ("CreateChatInvite for a group she is not in", create_invite(theirs_ref), 404),
        ("CreateChatInvite for a group she does not own", create_invite(shared_ref), 403),
        ("ListChatInvites of a group she is not in", list_invites(theirs_ref), 404),
        ("ListChatInvites of a group she does not own", list_invites(shared_ref), 403),
        ("DeleteChatInvite of a group she is not in", delete_invite(&theirs_code), 404),
        ("DeleteChatInvite of a group she does not own", delete_invite(&shared_code), 403),
    ];
    let mut wrong = Vec::new();
    for (what, attempt, expected) in attempts {
        let result = call(&mut eve, attempt).await;
        if error_code(&result) != Some(expected) {
            wrong.push(format!("{what}: expected {expected}, got {result:?}"));
        }
    }
    assert!(wrong.is_empty(), "not refused as expected:\n{}", wrong.join("\n"));

    // Her chat list holds only her own chat.
    let result = call(&mut eve, Call::ChatsGetChats(chats::GetChats { max_id: Some(u64::MAX), ..Default::default() })).await;
    let Some(Answer::Chats(list)) = result.result else { panic!("{result:?}") };
    assert_eq!(list.chats.iter().map(|chat| chat.chat_ref).collect::<Vec<_>>(), vec![Some(shared_ref)]);

    // Nothing changed: no event, the same projections, no update to anyone.
    assert_eq!(gateway.engine().last_position(), position);
    assert!(gateway.engine().projection_contents().unwrap() == projections, "projections changed");
    for client in [&mut ann, &mut bob, &mut eve] {
        common::assert_quiet(client).await;
    }
    common::stop(gateway, [ann, bob, eve]).await;
}
