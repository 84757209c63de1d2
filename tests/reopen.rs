//! Closing an engine (dropping its last handle) releases the data directory before the
//! drop returns, so the same directory can be opened again right away, whatever the
//! background tasks were doing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::{chats, types};

/// Members of the busy group: above the fan-out limit, so every update fans out widely.
const BUSY_GROUP_MEMBERS: u64 = 300;

/// Regression: dropping the engine while the update fan-out was still working through
/// committed batches left the database open in that task, and reopening the directory
/// right away failed with `DirectoryInUse` (found by the model-based test, with a typing
/// indicator making the fan-out work). Now the drop tells the fan-out to stop and waits
/// for it to let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_right_after_dropping_a_busy_engine_finds_the_directory_free() {
    let mut f = fixture().await;
    let members: Vec<UserId> = (100..100 + BUSY_GROUP_MEMBERS).map(UserId).collect();
    for user in &members {
        f.engine.upsert_user(types::User { id: user.get(), name: format!("u{user}"), ..Default::default() }).await.unwrap();
    }
    let chat = create_group(&f.engine, ANN, &members).await;
    for round in 0..5 {
        let _listener = f.engine.subscribe(members[0]);
        let typing = chats::SetTyping { chat_ref: Some(group(chat)), typing: true, action: None };
        f.engine.set_typing(members[1], typing).await.unwrap();
        let sends: Vec<_> = (0..64)
            .map(|i| {
                let engine = f.engine.clone();
                tokio::spawn(async move { send(&engine, ANN, &group(chat), &format!("r{round} m{i}")).await })
            })
            .collect();
        for sent in sends {
            sent.await.unwrap();
        }
        f = f.reopen().await; // DirectoryInUse here before the fix
    }
    assert_projections_equal_a_fold_of_the_log(&f.engine).await;
}
