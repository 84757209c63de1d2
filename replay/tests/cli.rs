//! The replay CLI on temporary data directories: rebuild, verify, check, dump, stats,
//! chats, and what each does with a damaged or busy directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_engine::log::ExpectedVersion;
use osmium_projections::records::{self, MemberRecord};
use osmium_projections::Table;
use osmium_proto::events::{UserUpserted, event_envelope::Event};
use osmium_proto::ids::{StreamId, UserId};
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::{chats, messages, types};
use std::io::{BufRead, BufReader};
use std::path::Path;

const ANN: UserId = UserId(1);
const BOB: UserId = UserId(2);

fn replay(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("osmium-replay").unwrap();
    command.arg("--data-dir").arg(dir);
    command
}

/// A small scripted log: two users, a DM, a group with messages and reads. Returns the group id.
fn scripted_log(dir: &Path, extra_users: u64) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = ChatEngine::open(dir, EngineConfig::default()).await.unwrap();
        for (id, name) in [(1, "ann"), (2, "bob"), (3, "cat")] {
            engine.upsert_user(types::User { id, name: name.into(), ..Default::default() }).await.unwrap();
        }
        let dm = ChatRef { r#ref: Some(Ref::User(UserRef { user_id: 2 })) };
        let send = |chat_ref: ChatRef, text: &str| messages::SendMessage {
            chat_ref: Some(chat_ref),
            message: text.into(),
            ..Default::default()
        };
        engine.send_message(ANN, send(dm, "hello bob")).await.unwrap();
        let users = vec![UserRef { user_id: 2 }, UserRef { user_id: 3 }];
        let group = engine.create_chat(ANN, chats::CreateChat { users, name: "crew".into() }).await.unwrap();
        let group_ref = ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: group.id })) };
        for n in 0..5 {
            engine.send_message(ANN, send(group_ref, &format!("group message {n}"))).await.unwrap();
        }
        engine.save_draft(BOB, group_ref, Some("draft".into())).await.unwrap();
        drop(engine);
        // Bulk directory entries, 1,000 events per append (straight to the log, which the
        // next engine folds when it opens), to give rebuilds something to chew on.
        let log = osmium_engine::EventLog::open(dir, Default::default()).unwrap();
        for chunk in 0..extra_users.div_ceil(1_000) {
            let events = (0..1_000.min(extra_users - chunk * 1_000))
                .map(|n| Event::UserUpserted(UserUpserted {
                    user: Some(types::User { id: 100, name: format!("rename {chunk}/{n}"), ..Default::default() }),
                }))
                .collect();
            log.append(StreamId::User(UserId(100)), ExpectedVersion::Any, UserId(100), events, None).await.unwrap();
        }
        group.id
    })
}

fn open_raw(dir: &Path) -> rocksdb::DB {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, names).unwrap()
}

fn served_slot(dir: &Path) -> Vec<u8> {
    let db = open_raw(dir);
    db.get_cf(db.cf_handle("meta").unwrap(), b"projection_slot").unwrap().unwrap()
}

/// Starts `rebuild` in single-event batches and SIGKILLs it once its first progress line
/// shows it has written a batch: mid-way through a log of thousands of events.
fn kill_a_rebuild_after_its_first_batch(dir: &Path) {
    let binary = assert_cmd::cargo::cargo_bin("osmium-replay");
    let mut child = std::process::Command::new(binary)
        .arg("--data-dir")
        .arg(dir)
        .args(["rebuild", "--batch-events", "1"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut first_line).unwrap();
    assert!(first_line.starts_with("rebuild: "), "{first_line}");
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "the rebuild was still running when killed");
}

#[test]
fn help_lists_every_subcommand_with_an_example() {
    let output = Command::cargo_bin("osmium-replay").unwrap().arg("--help").assert().success().get_output().stdout.clone();
    let help = String::from_utf8(output).unwrap();
    for subcommand in ["rebuild", "verify", "check", "stats", "dump", "chats", "demo"] {
        assert!(help.contains(subcommand), "{subcommand} missing from --help");
        let sub_help = Command::cargo_bin("osmium-replay").unwrap().args([subcommand, "--help"]).assert().success();
        let text = String::from_utf8(sub_help.get_output().stdout.clone()).unwrap();
        assert!(text.contains("Example: osmium-replay"), "{subcommand} --help has no example");
    }
}

#[test]
fn rebuild_produces_projections_equal_to_the_live_ones_and_switches_slot() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 0);
    let before = osmium_engine::maintenance::DataDirectory::open_read_only(dir.path()).unwrap();
    let live = before.projection_contents(before.slot()).unwrap();
    drop(before);
    replay(dir.path()).arg("rebuild").assert().success().stdout(predicates::str::contains("events/s"));
    assert_eq!(served_slot(dir.path()), b"b");
    let after = osmium_engine::maintenance::DataDirectory::open_read_only(dir.path()).unwrap();
    assert_eq!(after.projection_contents(after.slot()).unwrap(), live);
    replay(dir.path()).arg("verify").assert().success();
}

#[test]
fn verify_passes_on_a_good_directory_and_names_a_planted_difference() {
    let dir = tempfile::tempdir().unwrap();
    let group = scripted_log(dir.path(), 0);
    replay(dir.path()).arg("verify").assert().success().stdout(predicates::str::contains("match"));
    let member = {
        let db = open_raw(dir.path());
        let cf = db.cf_handle("chatid_userid_member#a").unwrap();
        let key = osmium_projections::keys::member(osmium_proto::ids::ChatId(group), BOB);
        let stored = db.get_cf(cf, &key).unwrap().unwrap();
        let mut member: MemberRecord = records::decode(Table::ChatidUseridMember, &key, &stored).unwrap();
        member.read_seq += 3;
        db.put_cf(cf, &key, records::encode(&member)).unwrap();
        member
    };
    let assert = replay(dir.path()).arg("verify").assert().code(1);
    let output = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(output.contains("chatid_userid_member"), "{output}");
    assert!(output.contains(&format!("chat {group} user 2")), "{output}");
    let expected_line = format!("chat {group} user 2 field read_seq: expected {}, found {}", member.read_seq - 3, member.read_seq);
    assert!(output.contains(&expected_line), "{output}");
}

#[test]
fn a_rebuild_killed_half_way_leaves_projections_that_verify_clean() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 20_000);
    kill_a_rebuild_after_its_first_batch(dir.path());
    assert_eq!(served_slot(dir.path()), b"a", "the old projections are still served");
    replay(dir.path()).arg("verify").assert().success();
    replay(dir.path()).arg("rebuild").assert().success();
    replay(dir.path()).arg("verify").assert().success();
}

#[test]
fn rebuild_refuses_a_directory_in_use_by_an_engine_and_read_only_commands_still_work() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = runtime.block_on(ChatEngine::open(dir.path(), EngineConfig::default())).unwrap();
    replay(dir.path()).arg("rebuild").assert().code(2).stderr(predicates::str::contains("in use"));
    replay(dir.path()).arg("verify").assert().success();
    replay(dir.path()).arg("stats").assert().success();
    drop(engine);
}

#[test]
fn check_finds_a_gap_planted_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 0);
    replay(dir.path()).arg("check").assert().success().stdout(predicates::str::contains("intact"));
    {
        let db = open_raw(dir.path());
        db.delete_cf(db.cf_handle("position_event").unwrap(), 3u64.to_be_bytes()).unwrap();
    }
    let assert = replay(dir.path()).arg("check").assert().code(1);
    let output = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(output.contains("position 3") && output.contains("missing"), "{output}");
}

#[test]
fn dump_prints_events_filtered_by_chat_and_kind_as_lines_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let group = scripted_log(dir.path(), 0);
    let assert = replay(dir.path()).args(["dump", "--kind", "message_sent", "--chat", &group.to_string()]).assert().success();
    let output = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert_eq!(output.lines().count(), 5, "{output}");
    assert!(output.lines().all(|line| line.contains("message_sent") && line.contains(&format!("chat:{group}"))));
    let assert = replay(dir.path()).args(["--json", "dump", "--limit", "3"]).assert().success();
    let output = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let positions: Vec<u64> = output
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3]);
}

#[test]
fn stats_counts_events_by_kind_and_records_by_table() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 0);
    let assert = replay(dir.path()).args(["--json", "stats"]).assert().success();
    let stats: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(stats["events_by_kind"]["message_sent"], 6);
    assert_eq!(stats["events_by_kind"]["user_upserted"], 3);
    assert_eq!(stats["records_by_table"]["chatid_chat"], 2);
    assert_eq!(stats["records_by_table"]["chatid_userid_member"], 5);
    assert_eq!(stats["first_position"], 1);
    assert!(stats["bytes_total"].as_u64().unwrap() > 0);
}

#[test]
fn chats_shows_a_users_list_with_unread_counts_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 0);
    let assert = replay(dir.path()).args(["--json", "chats", "--user", "2"]).assert().success();
    let listed: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let chats = listed["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0]["unread_count"], 5);
    assert_eq!(chats[0]["draft"], "draft");
    assert_eq!(chats[0]["last_message"], "group message 4");
    assert_eq!(chats[1]["unread_count"], 1);
}

#[test]
fn a_directory_that_is_not_an_engines_is_an_error_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    replay(dir.path()).arg("verify").assert().code(2).stderr(predicates::str::contains("not an osmium-state data directory"));
}

#[test]
fn rebuild_of_one_projection_replaces_that_table_and_carries_the_others_over() {
    let dir = tempfile::tempdir().unwrap();
    let group = scripted_log(dir.path(), 0);
    {
        let db = open_raw(dir.path());
        let members = db.cf_handle("chatid_userid_member#a").unwrap();
        let key = osmium_projections::keys::member(osmium_proto::ids::ChatId(group), BOB);
        db.put_cf(members, &key, b"garbage").unwrap();
        let users = db.cf_handle("userid_user#a").unwrap();
        db.put_cf(users, osmium_projections::keys::user(UserId(77)), b"stray").unwrap();
    }
    replay(dir.path()).args(["rebuild", "--projection", "chatid_userid_member"]).assert().success();
    let assert = replay(dir.path()).arg("verify").assert().code(1);
    let output = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(output.contains("userid_user user 77"), "the other table was carried over as served: {output}");
    assert!(!output.contains("chatid_userid_member"), "the named table was rebuilt: {output}");
    replay(dir.path()).args(["rebuild", "--projection", "no_such_table"]).assert().code(2);
}

#[test]
fn an_interrupted_rebuild_resumes_from_the_position_its_error_names() {
    let dir = tempfile::tempdir().unwrap();
    scripted_log(dir.path(), 20_000);
    kill_a_rebuild_after_its_first_batch(dir.path());

    let assert = replay(dir.path()).args(["rebuild", "--from", "999999999"]).assert().code(2);
    let message = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let resume_at: u64 = message
        .split("--from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no position in {message}"));
    assert!(resume_at > 1, "the killed rebuild had folded something: {message}");
    let assert = replay(dir.path()).args(["--json", "rebuild", "--from", &resume_at.to_string()]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let total = osmium_engine::maintenance::DataDirectory::open_read_only(dir.path()).unwrap().last_position().get();
    assert_eq!(report["events"].as_u64().unwrap(), total - (resume_at - 1), "only the rest was folded");
    replay(dir.path()).arg("verify").assert().success();
}

/// Regression: demo workers numbered `client_id`s per worker, so the same sender reused
/// one, and the engine (rightly) answered with the earlier message instead of sending:
/// the demo reported 38,759 messages for 32,465 `message_sent` events.
#[test]
fn demo_messages_are_each_one_event_and_the_result_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let assert = replay(dir.path()).args(["--json", "demo", "--users", "60", "--messages", "600", "--workers", "8"]).assert().success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["verified"], true);
    let assert = replay(dir.path()).args(["--json", "stats"]).assert().success();
    let stats: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["messages"], stats["events_by_kind"]["message_sent"]);
    assert_eq!(summary["events"], stats["last_position"]);
}
