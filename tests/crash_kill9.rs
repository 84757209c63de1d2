//! Crash test: acknowledged events survive `kill -9`.
//!
//! Run by `cargo test`, this binary is the parent: each cycle it starts itself again as a
//! child (`OSMIUM_CRASH_CHILD_DIR` set), which sends messages through the engine from two
//! threads in `Sync` durability and prints `sending <id>` before and `acked <id> <message>`
//! after each send. After a random 20-500 ms (fixed seed) the parent SIGKILLs it, reopens
//! the directory and checks: every acknowledged message is in the log with its id, no
//! client id is in the log twice, nothing is in the log that was neither acknowledged nor
//! in flight, positions are gapless with the checkpoint not ahead, and the projections
//! equal a fold of the log. Cycles: `CRASH_CYCLES` (default 100).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_state::maintenance::DataDirectory;
use osmium_state::proto::events::event_envelope::Event;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::{ChatRef, UserRef, chat_ref::Ref};
use osmium_state::proto::{messages, types};
use osmium_state::{ChatEngine, Durability, EngineConfig};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_DIR: &str = "OSMIUM_CRASH_CHILD_DIR";
const CHILD_CYCLE: &str = "OSMIUM_CRASH_CHILD_CYCLE";
/// Client ids of one cycle start at `cycle * CYCLE_STRIDE`, one thread's at +`THREAD_STRIDE`.
const CYCLE_STRIDE: u64 = 1_000_000;
const THREAD_STRIDE: u64 = 500_000;

fn main() {
    match std::env::var(CHILD_DIR) {
        Ok(dir) => child(&dir, std::env::var(CHILD_CYCLE).unwrap().parse().unwrap()),
        Err(_) => parent(),
    }
}

fn child(dir: &str, cycle: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let config = EngineConfig::default(); // Sync durability
        assert_eq!(config.log.durability, Durability::Sync);
        let engine = ChatEngine::open(dir, config).await.unwrap();
        for id in 1..=4 {
            engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
        }
        let senders: Vec<_> = (0..2u64)
            .map(|thread| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let (author, peer) = (UserId(1 + thread * 2), 2 + thread * 2);
                    let first = cycle * CYCLE_STRIDE + thread * THREAD_STRIDE;
                    for client_id in first.. {
                        println!("sending {client_id}");
                        let request = messages::SendMessage {
                            chat_ref: Some(ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer })) }),
                            message: format!("m{client_id}"),
                            client_id: Some(client_id),
                            ..Default::default()
                        };
                        let sent = engine.send_message(author, request).await.unwrap();
                        println!("acked {client_id} {}", sent.message_id);
                        std::io::stdout().flush().unwrap();
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
    });
}

fn parent() {
    let cycles: u64 = std::env::var("CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut delays = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut acknowledged_total = 0usize;
    for cycle in 1..=cycles {
        let mut child = Command::new(&exe)
            .env(CHILD_DIR, dir.path())
            .env(CHILD_CYCLE, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut in_flight, mut acked) = (BTreeSet::new(), BTreeMap::new());
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["sending", id] => {
                        in_flight.insert(id.parse::<u64>().unwrap());
                    }
                    ["acked", id, message] => {
                        acked.insert(id.parse::<u64>().unwrap(), message.parse::<u64>().unwrap());
                    }
                    _ => {} // a line cut by the kill
                }
            }
            (in_flight, acked)
        });
        std::thread::sleep(Duration::from_millis(delays.random_range(20..=500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (in_flight, acked) = reader.join().unwrap();
        acknowledged_total += acked.len();
        check_after_crash(dir.path(), cycle, &in_flight, &acked);
    }
    println!("crash_kill9: {cycles} kill -9 cycles, {acknowledged_total} acknowledged sends, none lost or doubled");
    println!("{cycles} passed, 0 failed");
}

fn check_after_crash(dir: &std::path::Path, cycle: u64, in_flight: &BTreeSet<u64>, acked: &BTreeMap<u64, u64>) {
    let directory = DataDirectory::open_exclusive(dir).unwrap();
    let problems = directory.check(10, &mut |_, _| {}).unwrap();
    assert!(problems.is_empty(), "cycle {cycle}: the log has problems: {problems:?}");
    let (_, differences) = directory.verify(10, &mut |_, _| {}).unwrap();
    assert!(differences.is_empty(), "cycle {cycle}: projections differ from the log: {differences:?}");
    let mut logged: BTreeMap<u64, u64> = BTreeMap::new();
    directory
        .for_each_event(10_000, |event| {
            if let Some(Event::MessageSent(sent)) = &event.event {
                let client_id = sent.client_id.unwrap();
                let earlier = logged.insert(client_id, sent.message_id);
                assert!(earlier.is_none(), "cycle {cycle}: client id {client_id} is in the log twice");
            }
            Ok(())
        })
        .unwrap();
    for (client_id, message_id) in acked {
        assert_eq!(logged.get(client_id), Some(message_id), "cycle {cycle}: acknowledged send {client_id} was lost");
    }
    let this_cycle = cycle * CYCLE_STRIDE..(cycle + 1) * CYCLE_STRIDE;
    for client_id in logged.keys().filter(|id| this_cycle.contains(id)) {
        assert!(
            acked.contains_key(client_id) || in_flight.contains(client_id),
            "cycle {cycle}: {client_id} is in the log but was never sent"
        );
    }
}
