//! The figures of engine nodes over the replicated log for BENCHMARKS.md (issue #15), in
//! one run: sends per second and send-to-update latency with the embedded log, one engine
//! node and two; how long sends stall when the stream's leader is killed. Not run by
//! `cargo test` (about a minute, and they want a quiet machine):
//!
//! ```sh
//! cargo test --release -p osmium-engine --test replicated_figures -- --ignored --nocapture --test-threads 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_cluster::{JetStreamLog, JetStreamLogConfig, LocalCluster};
use osmium_engine::{ChatEngine, Durability, EngineConfig, LogConfig, ReplicaConfig};
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, UserRef, chat_ref::Ref};
use osmium_proto::{messages, types};
use std::time::{Duration, Instant};

/// Senders, each to its own DM (so that sends never conflict on a stream).
const SENDERS: u64 = 64;
/// Sends per sender in a throughput run.
const SENDS_PER_SENDER: u64 = 40;
/// Sequential sends whose update latency is measured.
const LATENCY_SENDS: usize = 200;
/// How long sends go on after the leader is killed, in milliseconds.
const LOAD_AFTER_KILL_MS: u64 = 15_000;
/// The user every sender writes to; subscribed for the latency runs.
const READER: UserId = UserId(1);

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "?".to_owned(), |text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn dm(peer: UserId) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer.get() })) }
}

fn node_config(cluster: &LocalCluster, worker: u16) -> EngineConfig {
    EngineConfig {
        log: LogConfig { durability: Durability::Buffered, snowflake_worker: worker, ..LogConfig::default() },
        replica: Some(ReplicaConfig::with_servers(cluster.urls())),
        ..EngineConfig::default()
    }
}

fn embedded_config() -> EngineConfig {
    EngineConfig { log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() }, ..EngineConfig::default() }
}

async fn send(node: &ChatEngine, from: UserId, text: String) {
    let request = messages::SendMessage { chat_ref: Some(dm(READER)), message: text, ..Default::default() };
    node.send_message(from, request).await.unwrap();
}

/// Users, and each sender's DM with the reader opened, through `node`.
async fn prepare(node: &ChatEngine) {
    for id in 1..=SENDERS + 1 {
        node.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
    }
    for sender in 2..=SENDERS + 1 {
        send(node, UserId(sender), "hello".into()).await;
    }
}

/// Sends per second: `SENDERS` concurrent senders, sender `i` through `nodes[i % len]`.
async fn throughput(nodes: &[ChatEngine]) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in 2..=SENDERS + 1 {
        let node = nodes[(sender as usize) % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..SENDS_PER_SENDER {
                send(&node, UserId(sender), format!("m{n}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (SENDERS * SENDS_PER_SENDER) as f64 / started.elapsed().as_secs_f64()
}

/// (p50, p99) in ms from a send through `sender_node` to its update on a subscription of
/// the reader on `reader_node`.
async fn update_latency(sender_node: &ChatEngine, reader_node: &ChatEngine) -> (f64, f64) {
    let mut subscription = reader_node.subscribe(READER);
    let mut samples = Vec::with_capacity(LATENCY_SENDS);
    for n in 0..LATENCY_SENDS {
        let started = Instant::now();
        send(sender_node, UserId(2), format!("latency {n}")).await;
        loop {
            let update = tokio::time::timeout(Duration::from_secs(30), subscription.next()).await.unwrap().unwrap();
            if let Some(osmium_proto::updates::update::Update::MessageCreated(created)) = update.update.update
                && created.message.is_some_and(|message| message.message == format!("latency {n}"))
            {
                break;
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1_000.0);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[(samples.len() * 99 / 100).min(samples.len() - 1)])
}

async fn caught_up(log: &JetStreamLog, node: &ChatEngine) {
    let last = log.last_position().await.unwrap().get();
    while node.folded_position().unwrap() < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures: run explicitly on a quiet machine"]
async fn figure_sends_and_update_latency_embedded_one_node_two_nodes() {
    println!("load average before: {}", load_average());
    let embedded_dir = tempfile::tempdir().unwrap();
    let embedded = ChatEngine::open(embedded_dir.path(), embedded_config()).await.unwrap();
    prepare(&embedded).await;
    let rate = throughput(std::slice::from_ref(&embedded)).await;
    let (p50, p99) = update_latency(&embedded, &embedded).await;
    println!("embedded log (Buffered):   {rate:>8.0} sends/s ({SENDERS} senders); send to update p50 {p50:.2} ms, p99 {p99:.2} ms");
    drop(embedded);

    let cluster = LocalCluster::start(3).unwrap();
    let log = JetStreamLog::open(JetStreamLogConfig::with_servers(cluster.urls())).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ChatEngine::open(dir_a.path(), node_config(&cluster, 1)).await.unwrap();
    prepare(&a).await;
    let rate = throughput(std::slice::from_ref(&a)).await;
    let (p50, p99) = update_latency(&a, &a).await;
    println!("one engine node:           {rate:>8.0} sends/s; send to update on the same node p50 {p50:.2} ms, p99 {p99:.2} ms");
    let b = ChatEngine::open(dir_b.path(), node_config(&cluster, 2)).await.unwrap();
    caught_up(&log, &b).await;
    let rate = throughput(&[a.clone(), b.clone()]).await;
    let (p50, p99) = update_latency(&a, &b).await;
    println!("two engine nodes:          {rate:>8.0} sends/s (senders split); send on A to update on B p50 {p50:.2} ms, p99 {p99:.2} ms");

    let leader = log.replication().await.unwrap().leader.unwrap();
    let mut cluster = cluster;
    cluster.kill(cluster.index_of(&leader).unwrap()).unwrap();
    let killed_at = Instant::now();
    let (mut last_ok, mut longest_gap, mut sends, mut refused) = (Instant::now(), Duration::ZERO, 0u64, 0u64);
    while killed_at.elapsed() < Duration::from_millis(LOAD_AFTER_KILL_MS) {
        let request = messages::SendMessage { chat_ref: Some(dm(READER)), message: format!("after kill {sends}"), ..Default::default() };
        match a.send_message(UserId(3), request).await {
            Ok(_) => {
                longest_gap = longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
                sends += 1;
            }
            Err(_) => refused += 1, // retryable (the log unavailable): the client would retry
        }
    }
    println!(
        "stream leader {leader} killed: in the next {} s, {sends} sequential sends on A acknowledged, {refused} refused as unavailable; longest time without an acknowledgement {} ms",
        LOAD_AFTER_KILL_MS / 1_000,
        longest_gap.as_millis()
    );
    println!("load average after: {}", load_average());
}
