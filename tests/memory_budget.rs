//! A working set larger than the engine's memory budget: records are evicted once their
//! flush landed and read again when needed, so every answer stays right and the records
//! held stay within the budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::{chats, types};
use osmium_state::{ChatEngine, StateConfig};

const BUDGET_BYTES: usize = 64 * 1024;
const PEERS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_set_larger_than_the_budget_answers_right_and_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = osmium_state::ManualClock::new(START_MS);
    let mut config = config(&clock);
    config.state = StateConfig { state_bytes_max: BUDGET_BYTES, ..StateConfig::default() };
    let engine = ChatEngine::open(dir.path(), config.clone()).await.unwrap();
    let hub = UserId(1);
    engine.upsert_user(types::User { id: 1, name: "hub".into(), ..Default::default() }).await.unwrap();
    for peer in 100..100 + PEERS {
        engine.upsert_user(types::User { id: peer, name: format!("peer {peer}"), ..Default::default() }).await.unwrap();
        for n in 0..3 {
            send(&engine, UserId(peer), &dm(hub), &format!("message {n} from {peer}")).await;
        }
    }
    engine.flush().await.unwrap();
    // One more command lets the state machine evict what the flush made clean.
    send(&engine, hub, &dm(UserId(100)), "reply").await;
    let held = engine.stats().meters.state_bytes;
    assert!(held <= BUDGET_BYTES as u64, "{held} bytes held, over the {BUDGET_BYTES}-byte budget");

    // Every conversation is right, read through evicted and reloaded records.
    let mut seen = 0;
    let mut page = chats::GetChats { limit: Some(100), ..Default::default() };
    loop {
        let listed = engine.get_chats(hub, page).await.unwrap();
        let Some(last) = listed.chats.last() else { break };
        for conversation in &listed.chats {
            // The hub answered peer 100 only: that conversation is read, the others have 3.
            let expected = if conversation.chat_ref == Some(dm(UserId(100))) { 0 } else { 3 };
            assert_eq!(conversation.unread_count, expected, "{conversation:?}");
        }
        seen += listed.chats.len();
        page.max_id = Some(last.last_message_id);
    }
    assert_eq!(seen, PEERS as usize);
    assert_projections_equal_a_fold_of_the_log(&engine).await;
}
