//! Crash test: acknowledged events survive `kill -9`.
//!
//! Run by `cargo test`, this binary is the parent: each cycle it starts itself again as a
//! child (`OSMIUM_CRASH_CHILD_DIR` set), which sends messages through the engine from two
//! threads in `Sync` durability and prints `sending <id>` before and `acked <id> <message>`
//! after each send. After a random 20-500 ms (fixed seed) the parent SIGKILLs it, reopens
//! the directory and checks the events the cycle added, from the previous cycle's last
//! position on: positions gapless from there, every send acknowledged in the cycle there
//! with its id, no client id ever logged twice, nothing logged that was neither
//! acknowledged nor in flight, and the projection checkpoint at the log's end. Every
//! `CRASH_FULL_CHECK_EVERY` cycles (default 50) and after the last, a full check: the whole
//! log checks clean, the projections equal a fold of it, and its client ids are exactly the
//! ones the cycles tracked. A cycle's cost does not grow with the log but for the full
//! checks. Cycles: `CRASH_CYCLES` (default 100); `scripts/soak.sh` runs thousands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_state::maintenance::DataDirectory;
use osmium_state::proto::events::event_envelope::Event;
use osmium_state::proto::ids::{Position, UserId};
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

/// What the cycles so far have established about the log.
#[derive(Default)]
struct Tracked {
    /// The log's last position after the previous cycle.
    end: u64,
    /// Client id to message id of every message in the log.
    logged: BTreeMap<u64, u64>,
    /// Sends acknowledged over all cycles.
    acknowledged: usize,
    /// Cycles killed with events in the log beyond the flushed projections' checkpoint.
    unflushed_cycles: u64,
}

fn parent() {
    let cycles: u64 = std::env::var("CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
    let full_check_every: u64 = std::env::var("CRASH_FULL_CHECK_EVERY").ok().and_then(|c| c.parse().ok()).unwrap_or(50).max(1);
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut delays = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut tracked = Tracked::default();
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
        check_cycle(dir.path(), cycle, &in_flight, &acked, &mut tracked);
        if cycle % full_check_every == 0 || cycle == cycles {
            full_check(dir.path(), cycle, &tracked);
        }
        if cycle % 500 == 0 {
            eprintln!("crash_kill9: {cycle}/{cycles} cycles, {} events, {:.0} s", tracked.end, started.elapsed().as_secs_f64());
        }
    }
    println!(
        "crash_kill9: {cycles} kill -9 cycles ({} of them with events not yet in the flushed projections), {} events, \
         {} acknowledged sends, lost 0, doubled 0, full checks every {full_check_every} cycles, {:.0} s",
        tracked.unflushed_cycles,
        tracked.end,
        tracked.acknowledged,
        started.elapsed().as_secs_f64()
    );
    assert!(tracked.unflushed_cycles > 0, "no cycle left events to fold at the next open: the test did not exercise recovery");
    println!("{cycles} passed, 0 failed");
}

/// The events the cycle added, from the previous cycle's end on.
fn check_cycle(dir: &std::path::Path, cycle: u64, in_flight: &BTreeSet<u64>, acked: &BTreeMap<u64, u64>, tracked: &mut Tracked) {
    let directory = DataDirectory::open_exclusive(dir).unwrap();
    let new_end = directory.last_position().get();
    assert!(new_end >= tracked.end, "cycle {cycle}: the log shrank from {} to {new_end}", tracked.end);
    let mut expected = tracked.end + 1;
    let mut added: BTreeMap<u64, u64> = BTreeMap::new();
    while expected <= new_end {
        let events = directory.read_events(Position(expected), 10_000).unwrap();
        assert!(!events.is_empty(), "cycle {cycle}: no event at {expected}, the log ends at {new_end}");
        for event in &events {
            assert_eq!(event.position, expected, "cycle {cycle}: positions are gapless from the previous end");
            expected += 1;
            if let Some(Event::MessageSent(sent)) = &event.event {
                let client_id = sent.client_id.unwrap();
                assert!(!tracked.logged.contains_key(&client_id) && !added.contains_key(&client_id), "cycle {cycle}: client id {client_id} is in the log twice");
                added.insert(client_id, sent.message_id);
            }
        }
    }
    for (client_id, message_id) in acked {
        assert_eq!(added.get(client_id), Some(message_id), "cycle {cycle}: acknowledged send {client_id} was lost");
    }
    for client_id in added.keys() {
        assert!(
            acked.contains_key(client_id) || in_flight.contains(client_id),
            "cycle {cycle}: {client_id} is in the log but was not sent in this cycle"
        );
    }
    // Projections are flushed every second: a kill leaves acknowledged events that only the
    // log holds (the next open folds them), but the checkpoint is never ahead of the log.
    let checkpoint = directory.checkpoint().unwrap();
    assert!(checkpoint.get() <= new_end, "cycle {cycle}: the projection checkpoint {checkpoint} is ahead of the log's end {new_end}");
    if checkpoint.get() < new_end {
        tracked.unflushed_cycles += 1;
    }
    tracked.end = new_end;
    tracked.logged.extend(added);
    tracked.acknowledged += acked.len();
}

/// The whole directory: the log checks clean, an engine opened on it folds the log's tail
/// into the projections, which then equal a fold of the whole log, and its client ids are
/// the tracked ones.
fn full_check(dir: &std::path::Path, cycle: u64, tracked: &Tracked) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async { drop(ChatEngine::open(dir, EngineConfig::default()).await.unwrap()) });
    let directory = DataDirectory::open_read_only(dir).unwrap();
    assert_eq!(directory.checkpoint().unwrap(), directory.last_position(), "cycle {cycle}: an open folds the whole log");
    let problems = directory.check(10, &mut |_, _| {}).unwrap();
    assert!(problems.is_empty(), "cycle {cycle}: the log has problems: {problems:?}");
    let (_, differences) = directory.verify(10, &mut |_, _| {}).unwrap();
    assert!(differences.is_empty(), "cycle {cycle}: projections differ from the log: {differences:?}");
    let mut logged: BTreeMap<u64, u64> = BTreeMap::new();
    directory
        .for_each_event(10_000, |event| {
            if let Some(Event::MessageSent(sent)) = &event.event {
                logged.insert(sent.client_id.unwrap(), sent.message_id);
            }
            Ok(())
        })
        .unwrap();
    assert!(logged == tracked.logged, "cycle {cycle}: the log's messages are not the ones the cycles tracked");
}
