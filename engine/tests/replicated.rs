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
    let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_writer(std::io::stderr).try_init();
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

/// The whole history of `chat`, oldest first (paged backwards, 100 at a time).
async fn history(node: &ChatEngine, actor: UserId, chat: ChatRef) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    let mut offset = None;
    loop {
        let request = messages::GetHistory { chat_ref: Some(chat), limit: Some(100), offset };
        let page: Vec<(u64, String)> =
            node.get_history(actor, request).await.unwrap().messages.into_iter().map(|m| (m.message_id, m.message)).collect();
        let Some(oldest) = page.first().map(|(id, _)| *id) else { break };
        all.splice(0..0, page);
        offset = Some(messages::get_history::Offset::Before(oldest));
    }
    all
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
    // The events of the log's records that follow the record their appender expected
    // (the others are void: JetStream 2.9 may store two appends expecting one record).
    let (mut stream_events, mut void) = (0usize, 0usize);
    let mut last_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut from = Position(1);
    loop {
        let records = log.read(from, 4_096).await.unwrap();
        let Some(last) = records.last() else { break };
        from = Position(last.position.get() + 1);
        for record in &records {
            let previous = last_of.insert(record.stream.to_string(), record.position.get()).unwrap_or(0);
            if record.expected_last().is_some_and(|expected| expected != previous) {
                void += 1;
            } else {
                stream_events += record.events.len();
            }
        }
    }
    if void > 0 {
        eprintln!("{void} void records (stored after another append expecting the same record)");
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
async fn an_owner_hand_over_raced_from_both_nodes_leaves_one_owner_both_nodes_agree_on() {
    // The owner leaves on node A while the member next in line leaves on node B: whichever
    // is folded first, the group ends with bob (who joined right after that member) as its
    // only owner.
    let harness = start_cluster().await;
    bounded("owner hand-over race", async {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open_node(dir_a.path(), &harness.cluster, 1).await;
        let b = open_node(dir_b.path(), &harness.cluster, 2).await;
        add_users(&a, 1..=4).await;
        let (cat, dan) = (UserId(4), UserId(3)); // cat joins before bob, dan after bob
        let users = [cat, BOB, dan].iter().map(|user| UserRef { user_id: user.get() }).collect();
        let created = a.create_chat(ANN, chats::CreateChat { users, name: "crew".into() }).await.unwrap();
        caught_up(&harness.log, &b).await;
        let remove = |user: UserId| chats::RemoveChatMember { chat_ref: Some(group(created.id)), user_id: user.get() };
        let (node_a, node_b) = (a.clone(), b.clone());
        let (owner_leaves, request) = (remove(ANN), remove(cat));
        let owner = tokio::spawn(async move { node_a.remove_chat_member(ANN, owner_leaves).await });
        let next = tokio::spawn(async move { node_b.remove_chat_member(cat, request).await });
        owner.await.unwrap().unwrap();
        next.await.unwrap().unwrap();
        assert_nodes_agree(&harness.log, &a, &b).await;
        for node in [&a, &b] {
            for (user, expected_owner) in [(BOB, true), (dan, false)] {
                let chat = node.get_chat(user, chats::GetChat { chat_ref: Some(group(created.id)) }).await.unwrap();
                assert_eq!(chat.group.map(|group| group.owner), Some(expected_owner), "user {user}");
            }
            assert!(!node.is_member(osmium_proto::ids::ChatId(created.id), ANN).unwrap());
            assert!(!node.is_member(osmium_proto::ids::ChatId(created.id), cat).unwrap());
        }
        // The new owner can act as one on either node.
        b.add_chat_member(BOB, chats::AddChatMember { chat_ref: Some(group(created.id)), user_id: cat.get() }).await.unwrap();
        assert_nodes_agree(&harness.log, &a, &b).await;
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
        caught_up(&harness.log, &b).await;
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

/// Environment of the child node of [`a_node_killed_and_a_nats_node_killed_under_load_lose_and_double_nothing`].
const CHILD_DIR: &str = "OSMIUM_REPLICA_CHILD_DIR";
const CHILD_SERVERS: &str = "OSMIUM_REPLICA_CHILD_SERVERS";
const CHILD_CHAT: &str = "OSMIUM_REPLICA_CHILD_CHAT";
/// The child's sends: client ids from this on (the parent's are below it).
const CHILD_CLIENT_IDS_FROM: u64 = 1_000_000;

/// Sends with `client_id`, retrying (with the same `client_id`) what the log or a conflict
/// made fail: stored once whatever happened to earlier attempts.
async fn send_until_acknowledged(node: &ChatEngine, actor: UserId, chat: ChatRef, text: String, client_id: u64) -> u64 {
    loop {
        match send(node, actor, chat, text.clone(), client_id).await {
            Ok(id) => return id,
            Err(err @ (EngineError::LogUnavailable { .. } | EngineError::DecideRetriesExhausted { .. } | EngineError::Overloaded { .. })) => {
                eprintln!("send {client_id}: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => {
                // What the engine says next tells why (a failed engine names its failure).
                let next = send(node, actor, chat, text.clone(), client_id).await;
                panic!("send {client_id}: {other} (then: {next:?})")
            }
        }
    }
}

/// The child node (run by the test below in its own process, which it SIGKILLs): sends to
/// the chat forever, printing each acknowledged send. Does nothing when run on its own.
#[test]
fn replica_child_node() {
    let (Ok(dir), Ok(servers), Ok(chat)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SERVERS), std::env::var(CHILD_CHAT)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_writer(std::io::stderr).try_init();
    runtime.block_on(async move {
        let config = EngineConfig {
            log: LogConfig { durability: Durability::Buffered, snowflake_worker: 2, ..LogConfig::default() },
            replica: Some(ReplicaConfig::with_servers(servers.split(',').map(str::to_owned).collect())),
            ..EngineConfig::default()
        };
        let node = ChatEngine::open(&dir, config).await.unwrap();
        let chat = group(chat.parse().unwrap());
        for i in CHILD_CLIENT_IDS_FROM.. {
            let id = send_until_acknowledged(&node, BOB, chat, format!("b{i}"), i).await;
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "acked {id} b{i}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// The child process, killed when the test ends however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_a_nats_node_killed_under_load_lose_and_double_nothing() {
    use std::io::BufRead as _;
    let mut harness = start_cluster().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_node(dir_a.path(), &harness.cluster, 1).await;
    add_users(&a, 1..=3).await;
    let created = a.create_chat(ANN, chats::CreateChat { users: vec![UserRef { user_id: 2 }], name: "crew".into() }).await.unwrap();
    let chat = group(created.id);

    // Node B in its own process, sending from the start.
    let mut child = KillOnDrop(std::process::Command::new(std::env::current_exe().unwrap())
        .args(["replica_child_node", "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir_b.path())
        .env(CHILD_SERVERS, harness.cluster.urls().join(","))
        .env(CHILD_CHAT, created.id.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap());
    let child_acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u64, String>::new()));
    let stdout = child.0.stdout.take().unwrap();
    let reader = {
        let child_acked = child_acked.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print the test's name on the same line, before the first.
                let Some(at) = line.find("acked ") else { continue };
                let mut words = line[at..].split_whitespace();
                if words.next() == Some("acked") {
                    let (id, text) = (words.next().unwrap().parse().unwrap(), words.next().unwrap().to_owned());
                    assert!(child_acked.lock().unwrap().insert(id, text).is_none(), "{line}: a message id acknowledged twice");
                }
            }
        })
    };
    let acked_by_child = |count: usize| {
        let child_acked = child_acked.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
            while child_acked.lock().unwrap().len() < count {
                assert!(tokio::time::Instant::now() < deadline, "the child node acknowledged fewer than {count} sends");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    bounded("kills under load", async {
        // Node A sends meanwhile.
        let sender = {
            let a = a.clone();
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                for i in 0..150u64 {
                    let id = send_until_acknowledged(&a, ANN, chat, format!("a{i}"), i).await;
                    acked.insert(id, format!("a{i}"));
                }
                acked
            })
        };
        acked_by_child(20).await;
        // A NATS node killed mid-load and restarted.
        harness.cluster.kill(0).unwrap();
        let seen = child_acked.lock().unwrap().len();
        acked_by_child(seen + 20).await;
        harness.cluster.restart(0).unwrap();
        // The engine node in the child process killed mid-load (SIGKILL).
        let seen = child_acked.lock().unwrap().len();
        acked_by_child(seen + 20).await;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();
        let mut acked = sender.await.unwrap();
        let child_acked = std::mem::take(&mut *child_acked.lock().unwrap());
        let from_child = child_acked.len();
        acked.extend(child_acked);

        // Node B reopened on its directory catches up, and decides again.
        let b = open_node(dir_b.path(), &harness.cluster, 2).await;
        caught_up(&harness.log, &b).await;
        send_until_acknowledged(&b, BOB, chat, "after".into(), 1).await;
        assert_nodes_agree(&harness.log, &a, &b).await;
        let on_a = history(&a, ANN, chat).await;
        assert_eq!(on_a, history(&b, BOB, chat).await);
        let texts: std::collections::BTreeSet<&str> = on_a.iter().map(|(_, text)| text.as_str()).collect();
        assert_eq!(texts.len(), on_a.len(), "no send landed twice");
        let landed: BTreeMap<u64, String> = on_a.iter().cloned().collect();
        for (id, text) in &acked {
            assert_eq!(landed.get(id), Some(text), "acknowledged {text} ({id}) is in the history");
        }
        // Besides the acknowledged ones: "after", and at most the child's last send
        // (stored, its acknowledgement lost with the process).
        let unacknowledged = on_a.len() - acked.len() - 1;
        let extra: Vec<&String> = landed.iter().filter(|(id, _)| !acked.contains_key(id)).map(|(_, text)| text).collect();
        assert!(unacknowledged <= 1, "{unacknowledged} sends landed that nobody acknowledged: {extra:?}");
        eprintln!("{} sends from node A, {from_child} from the killed node, {unacknowledged} stored but not acknowledged", acked.len() - from_child);
    })
    .await;
}
