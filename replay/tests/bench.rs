//! `osmium-replay bench` runs end to end and prints every row of its table (on a tiny
//! plan: the numbers are not looked at, only that each one is there).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

#[test]
fn bench_prints_every_row_and_cleans_up() {
    let parent = tempfile::tempdir().unwrap();
    let output = Command::cargo_bin("osmium-replay")
        .unwrap()
        .args(["bench", "--smoke", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let table = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<&str> = table.lines().filter(|line| line.starts_with("| ") && !line.starts_with("| part")).collect();
    let expected = [
        "| 1 | raw WriteBatch, WAL synced, batch ",
        "| 1 | raw WriteBatch, WAL not synced, batch ",
        "| 1 | raw iteration + prost decode of the log",
        "| 2 | durable (Sync) append, 1 submitter ",
        "| 2 | durable (Sync) append, 16 submitters",
        "| 2 | durable (Sync) append, 256 submitters",
        "| 3 | Buffered append, 1 submitter ",
        "| 3 | Buffered append, 16 submitters",
        "| 3 | Buffered append, 256 submitters",
        "| 3 | Buffered throughput, 256 submitters against 16",
        "| 4 | send_message to a DM",
        "| 4 | send_message to a group of 100 members",
        "| 4 | send_message to a group of 1,000 members",
        "| 4 | send_message to a group of 10,000 members",
        "| 5 | get_chats p50, user in 10 chats",
        "| 5 | get_chats p99, user in 10 chats",
        "| 5 | get_chats p50, user in 1,000 chats",
        "| 5 | get_chats p99, user in 1,000 chats",
        "| 5 | get_chats p50, user in 10,000 chats",
        "| 5 | get_chats p99, user in 10,000 chats",
        "| 5 | get_chats p99, user in 1,000 groups of 258 members",
        "| 6 | mark_chat_read p50 (Buffered)",
        "| 6 | mark_chat_read p99 (Buffered)",
        "| 6 | mark_chat_read p50 (Sync)",
        "| 6 | mark_chat_read p99 (Sync)",
        "| 7 | rebuild of 5,000 events",
        "| 7 | the rebuilt projections of those 5,000 events written raw",
        "| 7 | generating those 5,000 events",
        "| 7 | opening an engine on the 5,000 events",
        "| 7 | updates_since p50, 1,000 updates missed, on the 5,000-event log",
        "| 7 | updates_since p99, 1,000 updates missed, on the 5,000-event log",
        "| 8 | peak RSS: Sync appends and their raw baselines",
        "| 8 | peak RSS: Buffered appends and their raw baselines",
        "| 5 | updates_since p50, 5 updates missed",
        "| 5 | updates_since p50, 10 updates missed",
        "| 5 | updates_since p99, 10 updates missed",
        "| 5 | updates_since p50, 20 updates missed",
        "| 5 | updates_since p50, 5 updates missed, user in 1,000 groups of 258 members",
        "| 8 | peak RSS: send_message, get_chats, mark_chat_read",
        "| 8 | peak RSS: generating the log",
        "| 8 | peak RSS: raw iteration + decode",
        "| 8 | peak RSS: rebuild",
        "| 8 | bytes on disk per event",
        "| 8 | bytes written per message_sent",
        "| 8 | recovery after a crash at the default flush limits",
        "| 8 | peak RSS: opening the 5,000-event directory",
        "| 8 | encoded event (message_sent envelope)",
    ];
    for prefix in expected {
        assert!(rows.iter().any(|row| row.starts_with(prefix)), "no row starting with {prefix:?} in:\n{table}");
    }
    assert_eq!(rows.len(), expected.len() + 4, "{table}"); // the raw synced and unsynced prefixes match three rows each
    // Every row with a baseline shows a ratio, every targeted row says met or missed.
    for row in &rows {
        assert!(!row.contains("NaN") && !row.contains("inf"), "{row}");
    }
    for part in ["| 2 |", "| 3 |", "| 4 |", "| 5 |", "| 7 | rebuild"] {
        assert!(rows.iter().filter(|row| row.starts_with(part)).all(|row| row.contains("**")), "{part} without ratio:\n{table}");
    }
    assert_eq!(table.matches(" met |").count() + table.matches("**missed**").count(), 11, "{table}");
    // The temporary directory is gone.
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}
