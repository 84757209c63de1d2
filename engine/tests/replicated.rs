//! Engine nodes over the replicated log (issue #15): each test starts its own three local
//! `nats-server` processes and two engine nodes (in this process) on them, with clients
//! on both, and checks that the nodes agree with each other and with a fold of the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_cluster::{JetStreamLog, JetStreamLogConfig, LocalCluster};
use osmium_engine::{ChatEngine, Durability, EngineConfig, EngineError, LogConfig, ReplicaConfig};
use osmium_proto::ids::{Position, UserId};
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::{auth, chats, messages, types};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Longest a test may run, in milliseconds.
const TEST_TIMEOUT_MS: u64 = 240_000;
/// Longest wait for a node to fold the whole log, in milliseconds.
const CATCH_UP_TIMEOUT_MS: u64 = 60_000;

/// One cluster at a time (two cores).
static ONE_CLUSTER: Mutex<()> = Mutex::const_new(());

struct Harness {
    cluster: LocalCluster,
    log: JetStreamLog,
    _one_at_a_time: MutexGuard<'static, ()>,
}

async fn start_cluster() -> Harness {
    let guard = ONE_CLUSTER.lock().await;
    let cluster = LocalCluster::start(3).unwrap_or_else(|error| panic!("cannot run a local NATS cluster: {error}"));
    let log = JetStreamLog::open(JetStreamLogConfig::with_servers(cluster.urls())).await.unwrap();
    Harness { cluster, log, _one_at_a_time: guard }
}

fn node_config(cluster: &LocalCluster, worker: u16) -> EngineConfig {
    EngineConfig {
        log: LogConfig { durability: Durability::Buffered, snowflake_worker: worker, ..LogConfig::default() },
        replica: Some(ReplicaConfig::with_servers(cluster.urls())),
        ..EngineConfig::default()
    }
}

async fn open_node(dir: &Path, cluster: &LocalCluster, worker: u16) -> ChatEngine {
    ChatEngine::open(dir, node_config(cluster, worker)).await.unwrap()
}

async fn bounded<T>(what: &str, test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_millis(TEST_TIMEOUT_MS), test).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {TEST_TIMEOUT_MS} ms"),
    }
}

/// Waits until `node` folded the log's last position.
async fn caught_up(log: &JetStreamLog, node: &ChatEngine) {
    let last = log.last_position().await.unwrap().get();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
    while node.folded_position().unwrap() < last {
        assert!(tokio::time::Instant::now() < deadline, "node folded {:?} of {last}", node.folded_position());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn group(id: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: id })) }
}

fn dm(peer: UserId) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer.get() })) }
}

async fn add_users(node: &ChatEngine, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        node.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
}

async fn history(node: &ChatEngine, actor: UserId, chat: ChatRef) -> Vec<(u64, String)> {
    let request = messages::GetHistory { chat_ref: Some(chat), limit: Some(1_000), offset: None };
    node.get_history(actor, request).await.unwrap().messages.into_iter().map(|m| (m.message_id, m.message)).collect()
}

async fn send(node: &ChatEngine, actor: UserId, chat: ChatRef, text: String, client_id: u64) -> Result<u64, EngineError> {
    let request = messages::SendMessage { chat_ref: Some(chat), message: text, client_id: Some(client_id), ..Default::default() };
    node.send_message(actor, request).await.map(|sent| sent.message_id)
}

/// Both nodes folded the whole log, their projections are equal, each equals a fold of
/// its local log from scratch, and that log holds every event of the replicated log once.
async fn assert_nodes_agree(log: &JetStreamLog, a: &ChatEngine, b: &ChatEngine) {
    caught_up(log, a).await;
    caught_up(log, b).await;
    assert_eq!(a.folded_position(), b.folded_position());
    let mut stream_events = 0usize;
    let mut from = Position(1);
    loop {
        let records = log.read(from, 4_096).await.unwrap();
        let Some(last) = records.last() else { break };
        from = Position(last.position.get() + 1);
        stream_events += records.iter().map(|record| record.events.len()).sum::<usize>();
    }
    for node in [a, b] {
        node.flush().await.unwrap();
        assert_eq!(node.read_position().get() as usize, stream_events, "the local log holds each record's events once");
        let mut rebuilt = osmium_projections::ProjectionState::in_memory();
        let events = node.log().read_all(Position(1), stream_events + 1).unwrap();
        for event in &events {
            osmium_projections::apply(&mut rebuilt, event).unwrap();
        }
        let rebuilt = rebuilt.to_memstore().unwrap();
        let live = node.projection_contents().unwrap();
        for table in osmium_projections::Table::ALL {
            let live_entries: Vec<_> = live.entries(table).collect();
            let rebuilt_entries: Vec<_> = rebuilt.entries(table).collect();
            assert_eq!(live_entries, rebuilt_entries, "table {table:?} differs from a fold of the log");
        }
    }
    let (left, right) = (a.projection_contents().unwrap(), b.projection_contents().unwrap());
    for table in osmium_projections::Table::ALL {
        assert!(left.entries(table).eq(right.entries(table)), "table {table:?} differs between the nodes");
    }
}

const ANN: UserId = UserId(1);
const BOB: UserId = UserId(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_on_two_nodes_land_once_and_both_nodes_agree() {
    let harness = start_cluster().await;
    bounded("two nodes", async {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open_node(dir_a.path(), &harness.cluster, 1).await;
        let b = open_node(dir_b.path(), &harness.cluster, 2).await;
        add_users(&a, 1..=4).await;
        let created = a.create_chat(ANN, chats::CreateChat { users: vec![UserRef { user_id: 2 }], name: "crew".into() }).await.unwrap();
        let chat = group(created.id);
        // Read-your-writes on A; B sees it once it folded the record.
        assert_eq!(history(&a, ANN, chat).await.len(), 0);
        caught_up(&harness.log, &b).await;
        assert!(b.is_member(osmium_proto::ids::ChatId(created.id), BOB).unwrap());

        const SENDS_PER_NODE: u64 = 40;
        let mut tasks = Vec::new();
        for (node, actor, tag) in [(a.clone(), ANN, "a"), (b.clone(), BOB, "b")] {
            for i in 0..SENDS_PER_NODE {
                let node = node.clone();
                tasks.push(tokio::spawn(async move {
                    let text = format!("{tag}{i}");
                    let id = send(&node, actor, chat, text.clone(), 1_000 + i).await.unwrap();
                    // Read-your-writes: the sender's node shows the message at once.
                    assert!(history(&node, actor, chat).await.iter().any(|(m, t)| *m == id && *t == text), "{text} not visible on its node");
                    (id, text)
                }));
            }
        }
        let mut sent = BTreeMap::new();
        for task in tasks {
            let (id, text) = task.await.unwrap();
            assert!(sent.insert(id, text).is_none(), "message ids are unique across nodes");
        }
        // A retry with the same client_id on the other node is the same message.
        let again = send(&b, ANN, chat, "a0".into(), 1_000).await.unwrap();
        assert_eq!(sent.get(&again).map(String::as_str), Some("a0"));

        assert_nodes_agree(&harness.log, &a, &b).await;
        let on_a = history(&a, ANN, chat).await;
        let on_b = history(&b, BOB, chat).await;
        assert_eq!(on_a, on_b);
        assert_eq!(on_a.len() as u64, 2 * SENDS_PER_NODE);
        let landed: BTreeMap<u64, String> = on_a.into_iter().collect();
        assert_eq!(landed, sent, "every acknowledged send landed once, nothing else");
        let ids: Vec<u64> = history(&a, ANN, chat).await.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "a chat's message ids increase in log order");
        let chats_a = a.get_chats(ANN, chats::GetChats::default()).await.unwrap();
        let chats_b = b.get_chats(ANN, chats::GetChats::default()).await.unwrap();
        assert_eq!(chats_a, chats_b);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_and_a_dm_raced_from_both_nodes_stay_race_free() {
    let harness = start_cluster().await;
    bounded("invite race", async {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open_node(dir_a.path(), &harness.cluster, 1).await;
        let b = open_node(dir_b.path(), &harness.cluster, 2).await;
        add_users(&a, 1..=13).await;
        let created = a.create_chat(ANN, chats::CreateChat { users: Vec::new(), name: "club".into() }).await.unwrap();
        const MAX_USES: u32 = 3;
        let invite = chats::CreateChatInvite { chat_ref: Some(group(created.id)), expires_at: None, max_uses: Some(MAX_USES) };
        let code = a.create_chat_invite(ANN, invite).await.unwrap().code;
        caught_up(&harness.log, &b).await;
        let mut tasks = Vec::new();
        for user in 2..=13u64 {
            let node = if user % 2 == 0 { a.clone() } else { b.clone() };
            let code = code.clone();
            tasks.push(tokio::spawn(async move { node.use_invite(UserId(user), auth::UseInvite { code }).await }));
        }
        let (mut admitted, mut used_up) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => admitted += 1,
                Err(EngineError::InviteUsedUp) => used_up += 1,
                Err(other) => panic!("unexpected: {other}"),
            }
        }
        assert_eq!((admitted, used_up), (MAX_USES, 12 - MAX_USES));

        // The same DM opened from both sides on both nodes at once: one chat.
        let (ann, bob) = (a.clone(), b.clone());
        let from_a = tokio::spawn(async move { ann.get_chat(ANN, chats::GetChat { chat_ref: Some(dm(BOB)) }).await });
        let from_b = tokio::spawn(async move { bob.get_chat(BOB, chats::GetChat { chat_ref: Some(dm(ANN)) }).await });
        let (from_a, from_b) = (from_a.await.unwrap().unwrap(), from_b.await.unwrap().unwrap());
        let id = |chat: &chats::Chat| chat.chat.as_ref().map(|conversation| conversation.last_message_id); // the chat id: no message yet
        assert_eq!(id(&from_a), id(&from_b), "one DM for the pair");

        assert_nodes_agree(&harness.log, &a, &b).await;
        let members = |node: &ChatEngine| {
            (1..=13u64).filter(|user| node.is_member(osmium_proto::ids::ChatId(created.id), UserId(*user)).unwrap()).count()
        };
        assert_eq!(members(&a), 1 + MAX_USES as usize);
        assert_eq!(members(&b), 1 + MAX_USES as usize);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_closed_and_reopened_catches_up() {
    let harness = start_cluster().await;
    bounded("node restart", async {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open_node(dir_a.path(), &harness.cluster, 1).await;
        let b = open_node(dir_b.path(), &harness.cluster, 2).await;
        add_users(&a, 1..=3).await;
        let created = a.create_chat(ANN, chats::CreateChat { users: vec![UserRef { user_id: 2 }], name: "crew".into() }).await.unwrap();
        let chat = group(created.id);
        send(&b, BOB, chat, "before".into(), 1).await.unwrap();
        caught_up(&harness.log, &b).await;
        drop(b);
        for i in 0..30 {
            send(&a, ANN, chat, format!("while down {i}"), 100 + i).await.unwrap();
        }
        let b = open_node(dir_b.path(), &harness.cluster, 2).await;
        assert_nodes_agree(&harness.log, &a, &b).await;
        assert_eq!(history(&b, BOB, chat).await.len(), 31);
        // The reopened node decides again: its send lands after everything it folded.
        let id = send(&b, BOB, chat, "after".into(), 2).await.unwrap();
        assert_eq!(history(&b, BOB, chat).await.last().map(|(m, _)| *m), Some(id));
        assert_nodes_agree(&harness.log, &a, &b).await;
    })
    .await;
}
