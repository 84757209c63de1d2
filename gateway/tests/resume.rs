//! The osmium-state extension for resuming after a disconnect (issue #13, field numbers
//! 1300-1399): updates carry their position and the previous position of their sequence
//! (`ServerMessage` 1300-1302); `ResumeUpdates` (1310) answers `UpdatesResumed` (1311),
//! then the updates missed after the token, then live ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]


use crate::common::{ANN, BOB, WAIT, call, connect, config, user_ref};
use osmium_engine::EngineConfig;
use osmium_engine::chat::limits::Limits;
use osmium_gateway::client::Client;
use osmium_gateway::{Gateway, GatewayLimits, tokens};
use osmium_proto::auth;
use osmium_proto::core::client_message::Message as Call;
use osmium_proto::core::rpc_result::Result as Answer;
use osmium_proto::core::{Initialize, ResumeUpdates, ServerMessage, UpdatesResumed, server_message};
use osmium_proto::ids::UserId;
use osmium_proto::messages;
use osmium_proto::updates::update::Update as U;
use std::path::Path;

async fn start(dir: &Path, limits: Limits) -> Gateway {
    let mut server = config(dir, GatewayLimits::default());
    server.engine = EngineConfig { limits, ..server.engine };
    Gateway::start(server).await.unwrap()
}

/// Signed in as `user`; live updates only when `live`.
async fn sign_in(gateway: &Gateway, dir: &Path, user: UserId, live: bool) -> Client {
    let token = tokens::create_token(dir, user, &format!("user{}", user.get())).await.unwrap();
    let mut client = connect(gateway).await;
    let initialize = Initialize { no_subscribe: !live, ..Default::default() };
    call(&mut client, Call::CoreInitialize(initialize)).await;
    let result = call(&mut client, Call::AuthAuthorize(auth::Authorize { token })).await;
    assert!(matches!(result.result, Some(Answer::Authorization(_))), "{result:?}");
    client
}

async fn send(client: &mut Client, peer: UserId, text: &str) {
    let request = messages::SendMessage { chat_ref: Some(user_ref(peer)), message: text.into(), ..Default::default() };
    let result = call(client, Call::MessagesSendMessage(request)).await;
    assert!(matches!(result.result, Some(Answer::SentMessage(_))), "{result:?}");
}

/// The next update message, with its extension fields.
async fn next_update(client: &mut Client) -> ServerMessage {
    let message = tokio::time::timeout(WAIT, client.next_message()).await.expect("update in time").unwrap();
    assert!(matches!(message.message, Some(server_message::Message::Update(_))), "{message:?}");
    message
}

fn text(message: &ServerMessage) -> String {
    match &message.message {
        Some(server_message::Message::Update(update)) => match update.update.as_ref().unwrap() {
            U::MessageCreated(created) => created.message.as_ref().unwrap().message.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_resumes_with_its_last_position_gets_what_it_missed_then_live_updates() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), Limits::default()).await;
    let mut bob = sign_in(&gateway, dir.path(), BOB, false).await;
    let mut ann = sign_in(&gateway, dir.path(), ANN, true).await;
    send(&mut bob, ANN, "before").await;
    let before = next_update(&mut ann).await;
    assert_eq!(text(&before), "before");
    let token = before.osmium_update_position.expect("a logged update carries its position");
    assert!(before.osmium_update_previous.unwrap() < token);
    assert_eq!(before.osmium_update_sequence_chat, None, "a DM is in the user's own sequence");
    drop(ann); // disconnected
    for n in 0..5 {
        send(&mut bob, ANN, &format!("missed {n}")).await;
    }
    let mut ann = sign_in(&gateway, dir.path(), ANN, false).await;
    let resumed = call(&mut ann, Call::OsmiumResumeUpdates(ResumeUpdates { token })).await;
    let Some(Answer::OsmiumUpdatesResumed(answer)) = resumed.result else { panic!("{resumed:?}") };
    assert_eq!(answer, UpdatesResumed { too_far_behind: false, resume_token: token });
    let mut previous = token;
    for n in 0..5 {
        let missed = next_update(&mut ann).await;
        assert_eq!(text(&missed), format!("missed {n}"));
        assert_eq!(missed.osmium_update_previous, Some(previous), "no gap");
        previous = missed.osmium_update_position.unwrap();
    }
    send(&mut bob, ANN, "live").await;
    let live = next_update(&mut ann).await;
    assert_eq!(text(&live), "live");
    assert_eq!(live.osmium_update_previous, Some(previous), "live updates follow the caught-up ones");
    drop((ann, bob));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_client_too_far_behind_is_told_to_refetch_and_gets_the_updates_after_the_resume_token() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), Limits { catch_up_updates_max: 3, ..Limits::default() }).await;
    let mut bob = sign_in(&gateway, dir.path(), BOB, false).await;
    let mut ann = sign_in(&gateway, dir.path(), ANN, false).await;
    for n in 0..5 {
        send(&mut bob, ANN, &format!("missed {n}")).await;
    }
    let resumed = call(&mut ann, Call::OsmiumResumeUpdates(ResumeUpdates { token: 1 })).await;
    let Some(Answer::OsmiumUpdatesResumed(answer)) = resumed.result else { panic!("{resumed:?}") };
    assert!(answer.too_far_behind);
    assert!(answer.resume_token > 1);
    send(&mut bob, ANN, "live").await;
    let live = next_update(&mut ann).await;
    assert_eq!(text(&live), "live");
    assert!(live.osmium_update_position.unwrap() > answer.resume_token);
    drop((ann, bob));
    gateway.shutdown().await;
}
