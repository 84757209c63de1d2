//! A full disk: sends fail with the typed `EngineError::DiskFull` (RPC 507), nothing
//! acknowledged is lost, and once space is freed a reopened engine appends again and its
//! directory checks and verifies clean.
//!
//! The disk is a real one: a 4 MiB tmpfs the test mounts (as root, which CI is), holding
//! the data directory and a 1 MiB ballast file that is deleted to free space. Where the
//! machine refuses the mount (not root, no tmpfs), the test prints why and drives the same
//! path through the `commit::before_write` crash point, which then fails a commit with
//! the error RocksDB gives for ENOSPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use osmium_state::maintenance::DataDirectory;
use osmium_state::proto::events::event_envelope::Event;
use osmium_state::proto::ids::UserId;
use osmium_state::proto::refs::{ChatRef, UserRef, chat_ref::Ref};
use osmium_state::proto::{messages, types};
use osmium_state::{ChatEngine, EngineConfig, EngineError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the file system the test fills, in MiB.
const DISK_MIB: u64 = 4;
/// Size of the file deleted to free space, in bytes.
const BALLAST_BYTES: usize = 1 << 20;
/// Text of every message (the engine's longest is 4,096 characters): a disk fills fast.
const TEXT_CHARS: usize = 4_000;
/// Sends before the test gives up on the disk filling up (4 MiB hold far fewer).
const SENDS_MAX: u64 = 10_000;

const ANN: UserId = UserId(1);

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    mount_point: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a `DISK_MIB` tmpfs, or says why it cannot.
    fn mount() -> Result<SmallDisk, String> {
        let mount_point = tempfile::tempdir().map_err(|err| format!("no temporary directory: {err}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m"), "tmpfs"])
            .arg(mount_point.path())
            .output()
            .map_err(|err| format!("`mount` did not run: {err}"))?;
        if !output.status.success() {
            return Err(format!("`mount -t tmpfs` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(SmallDisk { mount_point })
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.mount_point.path()).status();
        if !unmounted.is_ok_and(|status| status.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.mount_point.path()).status();
        }
    }
}

fn dm(peer: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: peer })) }
}

fn message(client_id: u64) -> messages::SendMessage {
    let text = format!("{client_id} {}", "x".repeat(TEXT_CHARS));
    messages::SendMessage { chat_ref: Some(dm(2)), message: text, client_id: Some(client_id), ..Default::default() }
}

async fn engine_with_users(dir: &Path) -> ChatEngine {
    let engine = ChatEngine::open(dir, EngineConfig::default()).await.unwrap();
    for id in 1..=2 {
        engine.upsert_user(types::User { id, name: format!("u{id}"), ..Default::default() }).await.unwrap();
    }
    engine
}

/// What a run of sends until the disk is full left behind.
struct Filled {
    /// Client id to message id of every acknowledged send.
    acknowledged: BTreeMap<u64, u64>,
    /// The first send refused, with its error.
    refused: (u64, EngineError),
}

/// Sends messages until one fails; returns the acknowledged ones and the failure.
async fn send_until_refused(engine: &ChatEngine) -> Filled {
    let mut acknowledged = BTreeMap::new();
    for client_id in 1..=SENDS_MAX {
        match engine.send_message(ANN, message(client_id)).await {
            Ok(sent) => {
                acknowledged.insert(client_id, sent.message_id);
            }
            Err(err) => return Filled { acknowledged, refused: (client_id, err) },
        }
    }
    panic!("{SENDS_MAX} sends of {TEXT_CHARS} characters did not fill a {DISK_MIB} MiB disk");
}

/// Client id to message id of every message in the log of a closed directory.
fn messages_in_log(dir: &Path) -> BTreeMap<u64, u64> {
    let directory = DataDirectory::open_read_only(dir).unwrap();
    let mut logged = BTreeMap::new();
    directory
        .for_each_event(1_000, |event| {
            if let Some(Event::MessageSent(sent)) = &event.event {
                let earlier = logged.insert(sent.client_id.unwrap(), sent.message_id);
                assert!(earlier.is_none(), "client id {:?} is in the log twice", sent.client_id);
            }
            Ok(())
        })
        .unwrap();
    logged
}

fn assert_checks_and_verifies_clean(dir: &Path) {
    let directory = DataDirectory::open_read_only(dir).unwrap();
    assert_eq!(directory.check(10, &mut |_, _| {}).unwrap(), [], "the log checks clean");
    assert_eq!(directory.verify(10, &mut |_, _| {}).unwrap().1, [], "projections equal a fold of the log");
}

fn assert_disk_full(result: &Result<impl std::fmt::Debug, EngineError>, what: &str) {
    match result {
        Err(err @ EngineError::DiskFull { .. }) => assert_eq!(err.rpc_code(), 507, "{what}: {err}"),
        other => panic!("{what}: expected DiskFull, got {other:?}"),
    }
}

/// Everything after the first refused send: later sends refused too, nothing acknowledged
/// lost, nothing in the log that was not sent, and a reopened engine appends again.
async fn assert_full_disk_handled(dir: &Path, engine: ChatEngine, filled: Filled, free_space: impl FnOnce()) {
    let (refused_id, refused) = filled.refused;
    println!("disk_full: {} sends acknowledged, then refused with: {refused}", filled.acknowledged.len());
    assert_disk_full(&Err::<(), _>(refused), "the send that found the disk full");
    assert!(!filled.acknowledged.is_empty(), "some sends were acknowledged before the disk filled");
    let later = engine.send_message(ANN, message(refused_id + 1)).await;
    assert_disk_full(&later, "a send after the disk filled");
    drop(engine);

    free_space();
    let engine = ChatEngine::open(dir, EngineConfig::default()).await.unwrap();
    let again = engine.send_message(ANN, message(refused_id + 2)).await;
    assert!(again.is_ok(), "appends work again once space is freed: {again:?}");
    drop(engine);

    let logged = messages_in_log(dir);
    for (client_id, message_id) in &filled.acknowledged {
        assert_eq!(logged.get(client_id), Some(message_id), "acknowledged send {client_id} was lost");
    }
    let unacknowledged: Vec<_> =
        logged.keys().filter(|id| !filled.acknowledged.contains_key(id) && ![refused_id, refused_id + 1, refused_id + 2].contains(id)).collect();
    assert_eq!(unacknowledged, Vec::<&u64>::new(), "only sends that were made are in the log");
    assert_checks_and_verifies_clean(dir);
}

#[tokio::test]
async fn a_full_disk_refuses_sends_with_disk_full_loses_nothing_acknowledged_and_recovers_once_space_is_freed() {
    let disk = match SmallDisk::mount() {
        Ok(disk) => disk,
        Err(why) => {
            println!("disk_full: cannot mount a {DISK_MIB} MiB tmpfs ({why}); failing a commit with ENOSPC through the commit::before_write crash point instead");
            return full_disk_injected_at_the_commit().await;
        }
    };
    let ballast: PathBuf = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; BALLAST_BYTES]).unwrap();
    let dir = disk.path().join("data");
    let engine = engine_with_users(&dir).await;
    let filled = send_until_refused(&engine).await;
    if let EngineError::DiskFull { path: Some(path), .. } = &filled.refused.1 {
        assert!(path.starts_with(&dir), "the error names a file of the data directory: {}", path.display());
    }
    assert_full_disk_handled(&dir, engine, filled, || std::fs::remove_file(&ballast).unwrap()).await;
}

/// The fallback of the test above where no file system can be mounted.
async fn full_disk_injected_at_the_commit() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_users(dir.path()).await;
    let mut acknowledged = BTreeMap::new();
    for client_id in 1..=20 {
        acknowledged.insert(client_id, engine.send_message(ANN, message(client_id)).await.unwrap().message_id);
    }
    fail::cfg("commit::before_write", "return(disk_full)").unwrap();
    let refused = engine.send_message(ANN, message(21)).await.unwrap_err();
    let filled = Filled { acknowledged, refused: (21, refused) };
    assert_full_disk_handled(dir.path(), engine, filled, || fail::remove("commit::before_write")).await;
    scenario.teardown();
}
