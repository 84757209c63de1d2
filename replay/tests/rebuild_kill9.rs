//! `osmium-replay rebuild` killed with SIGKILL at random moments (fixed seed): the served
//! projections never change before the switch and still verify after every kill; a
//! killed rebuild resumes with `--from` (the position its error names) or starts over, and
//! the rebuild that finishes verifies. Cycles: `REBUILD_KILL_CYCLES` (default 6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_engine::log::{Durability, LogConfig};
use osmium_engine::maintenance::DataDirectory;
use osmium_engine::schema::ProjectionSlot;
use osmium_proto::ids::UserId;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::{chats, messages, types};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Users of the generated log; each sends `SENDS_PER_USER` messages.
const USERS: u64 = 64;
/// About 60,000 events in all: a rebuild of a second or two on 2 cores.
const SENDS_PER_USER: u64 = 900;
/// Events per rebuild batch: small enough that a kill lands between many of them.
const BATCH_EVENTS: &str = "2000";

fn replay() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("osmium-replay"))
}

/// A log of DMs and groups written through `ChatEngine` in `Buffered` durability.
fn generate_log(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = EngineConfig { log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() }, ..EngineConfig::default() };
        let engine = ChatEngine::open(dir, config).await.unwrap();
        for id in 1..=USERS {
            engine.upsert_user(types::User { id, name: format!("user{id}"), ..Default::default() }).await.unwrap();
        }
        let mut groups = Vec::new();
        for first in (1..=USERS).step_by(8) {
            let users = (first + 1..first + 8).map(|user_id| UserRef { user_id }).collect();
            let group = engine.create_chat(UserId(first), chats::CreateChat { users, name: format!("g{first}") }).await.unwrap();
            groups.push(group.id);
        }
        let senders: Vec<_> = (1..=USERS)
            .map(|user| {
                let engine = engine.clone();
                let group = groups[((user - 1) / 8) as usize];
                tokio::spawn(async move {
                    for n in 0..SENDS_PER_USER {
                        let chat = if n % 2 == 0 {
                            Ref::Group(GroupRef { group_id: group })
                        } else {
                            Ref::User(UserRef { user_id: 1 + (user + n) % USERS })
                        };
                        let request = messages::SendMessage {
                            chat_ref: Some(ChatRef { r#ref: Some(chat) }),
                            message: format!("message {n} from {user}"),
                            ..Default::default()
                        };
                        engine.send_message(UserId(user), request).await.unwrap();
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
    });
}

fn served_slot(dir: &Path) -> ProjectionSlot {
    DataDirectory::open_read_only(dir).unwrap().slot()
}

fn assert_served_projections_verify(dir: &Path, when: &str) {
    let directory = DataDirectory::open_read_only(dir).unwrap();
    assert_eq!(directory.check(10, &mut |_, _| {}).unwrap(), [], "{when}: the log checks clean");
    assert_eq!(directory.verify(10, &mut |_, _| {}).unwrap().1, [], "{when}: the served projections equal a fold of the log");
}

/// The position a killed rebuild resumes at, as the error of an impossible `--from` names
/// it; `None` when it has to start over (nothing folded yet, or everything folded but not
/// switched to: `--from` past the log's end is refused).
fn resume_position(dir: &Path) -> Option<u64> {
    let output = replay().arg("--data-dir").arg(dir).args(["rebuild", "--from", "999999999"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "an impossible --from is refused");
    let message = String::from_utf8(output.stderr).unwrap();
    let from: u64 = message
        .split("--from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no position in {message}"));
    let last_position = DataDirectory::open_read_only(dir).unwrap().last_position().get();
    (from > 1 && from <= last_position).then_some(from)
}

/// Runs `rebuild` (resuming at `from` when given) to its end; returns how long it took.
fn rebuild_to_the_end(dir: &Path, from: Option<u64>) -> Duration {
    let started = Instant::now();
    let mut command = replay();
    command.arg("--data-dir").arg(dir).args(["rebuild", "--batch-events", BATCH_EVENTS]);
    if let Some(from) = from {
        command.args(["--from", &from.to_string()]);
    }
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "the rebuild finished: {status}");
    started.elapsed()
}

#[test]
fn a_rebuild_killed_at_random_moments_never_changes_the_served_projections_and_resumes_to_a_verified_result() {
    let cycles: u64 = std::env::var("REBUILD_KILL_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    generate_log(dir.path());
    // One whole rebuild first: how long one takes bounds the random kill delays.
    let whole = rebuild_to_the_end(dir.path(), None);
    let mut delays = rand::rngs::StdRng::seed_from_u64(0x0b11d);
    let (mut killed, mut finished, mut resumed) = (0, 0, 0);
    for cycle in 1..=cycles {
        let served = served_slot(dir.path());
        // Every other cycle resumes the rebuild killed before it, the others start over.
        let from = if cycle % 2 == 0 { resume_position(dir.path()) } else { None };
        resumed += u64::from(from.is_some());
        let mut command = replay();
        command.arg("--data-dir").arg(dir.path()).args(["rebuild", "--batch-events", BATCH_EVENTS]);
        if let Some(from) = from {
            command.args(["--from", &from.to_string()]);
        }
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let delay_ms = delays.random_range(0..=whole.as_millis() as u64);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let done_before_the_kill = child.try_wait().unwrap();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let switched = served_slot(dir.path()) != served;
        match done_before_the_kill {
            Some(status) => {
                assert!(status.success(), "cycle {cycle}: the rebuild failed on its own: {status}");
                assert!(switched, "cycle {cycle}: a finished rebuild serves the other slot");
                finished += 1;
            }
            None => {
                assert!(!status.success(), "cycle {cycle}: killed");
                killed += 1;
            }
        }
        assert_served_projections_verify(dir.path(), &format!("cycle {cycle}, killed after {delay_ms} ms (switched: {switched})"));
    }
    let served = served_slot(dir.path());
    rebuild_to_the_end(dir.path(), resume_position(dir.path()));
    assert_ne!(served_slot(dir.path()), served, "the last rebuild switched");
    assert_served_projections_verify(dir.path(), "after the last rebuild");
    println!(
        "rebuild_kill9: {cycles} cycles ({killed} killed mid-way, {finished} finished first, {resumed} resumed with --from); a whole rebuild took {:.2} s",
        whole.as_secs_f64()
    );
}
