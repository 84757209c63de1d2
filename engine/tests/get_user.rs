//! `ChatEngine::get_user`: the directory entry as upserted, `None` for unknown users.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_engine::{ChatEngine, EngineConfig};
use osmium_proto::ids::UserId;
use osmium_proto::types::User;

#[tokio::test]
async fn get_user_returns_the_upserted_entry_and_none_for_unknown_users() {
    let dir = tempfile::tempdir().unwrap();
    let engine = ChatEngine::open(dir.path(), EngineConfig::default()).await.unwrap();
    let ann = User { id: 7, name: "ann".into(), username: Some("ann7".into()), ..User::default() };
    engine.upsert_user(ann.clone()).await.unwrap();
    assert_eq!(engine.get_user(UserId(7)).unwrap(), Some(ann));
    assert_eq!(engine.get_user(UserId(8)).unwrap(), None);
}
