//! A rebuild that dies while it resets the unused projection slot (crash point
//! `rebuild::after_table_reset`, after the first table) leaves no checkpoint that
//! `--from` would resume from beside emptied tables: the resume is refused and names
//! position 1, and starting over verifies. Found by `replay/tests/rebuild_kill9.rs`: the
//! checkpoint was reset last, so a resume after such a kill switched to projections
//! missing whole tables.
//!
//! A rebuild that folded the whole log and died before its switch resumes with the
//! position its refusal names, one past the log's end: it folds nothing and switches.
//! Found by `replay/tests/cli.rs` (a rebuild killed after its first progress line had
//! sometimes folded everything): the resume was refused, naming that very position.
//!
//! A rebuild writes each batch's tables as files that RocksDB ingests one table at a time
//! (`engine/src/ingest.rs`), so a batch is not one atomic write: one that dies between
//! the tables of a batch (crash point `rebuild::mid_ingest`) leaves the served
//! projections untouched, and the resume finishes that batch from its files before it
//! folds on; if the files were removed, the resume is refused (start over).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use osmium_state::EngineError;
use osmium_state::maintenance::{DataDirectory, RebuildOptions};

/// A directory of 20 sends whose rebuild folded the whole log into the unused slot, then
/// died before its switch (crash point `rebuild::before_switch`); with the log's end.
/// Call under a `FailScenario`.
async fn a_rebuild_died_before_its_switch() -> (tempfile::TempDir, DataDirectory, osmium_state::proto::ids::Position) {
    let f = fixture().await;
    for n in 0..20 {
        send(&f.engine, ANN, &dm(BOB), &format!("message {n}")).await;
    }
    drop(f.engine);
    let mut directory = DataDirectory::open_exclusive(f.dir.path()).unwrap();
    let end = directory.last_position();
    fail::cfg("rebuild::before_switch", "return").unwrap();
    assert!(directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).is_err());
    fail::remove("rebuild::before_switch");
    (f.dir, directory, end)
}

/// A resume at an impossible position is refused naming `end + 1` (`why` says why that
/// one); resuming there folds nothing, switches, and the result verifies.
fn a_wrong_from_names_one_past_the_end_and_that_resume_switches(
    directory: &mut DataDirectory,
    end: osmium_state::proto::ids::Position,
    why: &str,
) {
    let wrong = RebuildOptions { from: Some(osmium_state::proto::ids::Position(1_000_000)), ..RebuildOptions::default() };
    let refused = directory.rebuild(wrong, &mut |_, _| {});
    let named = format!("--from {} ", end.next());
    assert!(
        matches!(&refused, Err(EngineError::InvalidArgument { field: "from", reason }) if reason.contains(&named)),
        "{why}: {refused:?}"
    );
    let resume = RebuildOptions { from: Some(end.next()), ..RebuildOptions::default() };
    let report = directory.rebuild(resume, &mut |_, _| {}).unwrap();
    assert_eq!(report.events, 0, "nothing was left to fold");
    assert_eq!(directory.verify(10, &mut |_, _| {}).unwrap().1, [], "the switched-to projections verify");
}

#[tokio::test]
async fn a_rebuild_dying_in_its_slot_reset_leaves_nothing_to_resume_from() {
    let scenario = fail::FailScenario::setup();
    let (dir, mut directory, end) = a_rebuild_died_before_its_switch().await;
    // The next one dies after resetting one table of that slot.
    fail::cfg("rebuild::after_table_reset", "1*off->return").unwrap();
    let died = directory.rebuild(RebuildOptions::default(), &mut |_, _| {});
    assert!(matches!(&died, Err(EngineError::Io { source, .. }) if source.to_string().contains("after_table_reset")), "{died:?}");
    fail::remove("rebuild::after_table_reset");
    let resume = RebuildOptions { from: Some(end.next()), ..RebuildOptions::default() };
    let refused = directory.rebuild(resume, &mut |_, _| {});
    assert!(
        matches!(&refused, Err(EngineError::InvalidArgument { field: "from", reason }) if reason.contains("--from 1 ")),
        "nothing to resume from: {refused:?}"
    );
    directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(directory.verify(10, &mut |_, _| {}).unwrap().1, [], "starting over verifies");
    assert_eq!(directory.last_position(), end);
    drop(directory);
    drop(dir);
    scenario.teardown();
}

#[tokio::test]
async fn a_rebuild_that_died_before_its_switch_after_folding_everything_resumes_with_the_position_its_refusal_names() {
    let scenario = fail::FailScenario::setup();
    let (dir, mut directory, end) = a_rebuild_died_before_its_switch().await;
    a_wrong_from_names_one_past_the_end_and_that_resume_switches(&mut directory, end, "names one past the log's end");
    drop(directory);
    drop(dir);
    scenario.teardown();
}

/// A directory whose rebuild died ingesting the tables of its last batch, after the
/// first one (crash point `rebuild::mid_ingest`): a rebuild that folded the whole log and
/// died before its switch, five more sends, then a resume folding those as one batch over
/// a slot whose checkpoint is the old end. With the log's end and the slot served.
/// Call under a `FailScenario`.
async fn a_rebuild_died_between_the_tables_of_a_batch() -> (tempfile::TempDir, DataDirectory, osmium_state::proto::ids::Position) {
    let (dir, directory, end) = a_rebuild_died_before_its_switch().await;
    drop(directory);
    let clock = osmium_state::ManualClock::new(START_MS);
    let engine = osmium_state::ChatEngine::open(dir.path(), config(&clock)).await.unwrap();
    for n in 0..5 {
        send(&engine, BOB, &dm(ANN), &format!("later {n}")).await;
    }
    drop(engine);
    let mut directory = DataDirectory::open_exclusive(dir.path()).unwrap();
    let served = directory.slot();
    fail::cfg("rebuild::mid_ingest", "return").unwrap();
    let resume = RebuildOptions { from: Some(end.next()), ..RebuildOptions::default() };
    let died = directory.rebuild(resume, &mut |_, _| {});
    assert!(matches!(&died, Err(EngineError::Io { source, .. }) if source.to_string().contains("mid_ingest")), "{died:?}");
    fail::remove("rebuild::mid_ingest");
    assert_eq!(directory.slot(), served, "still serving the projections from before");
    assert_eq!(directory.verify(10, &mut |_, _| {}).unwrap().1, [], "which still verify");
    let end = directory.last_position();
    (dir, directory, end)
}

#[tokio::test]
async fn a_rebuild_dying_between_the_tables_of_a_batch_has_that_batch_finished_by_the_resume() {
    let scenario = fail::FailScenario::setup();
    let (dir, mut directory, end) = a_rebuild_died_between_the_tables_of_a_batch().await;
    assert!(dir.path().join("rebuild-ingest/READY").exists(), "the batch's files wait to be ingested");
    a_wrong_from_names_one_past_the_end_and_that_resume_switches(
        &mut directory,
        end,
        "the half-ingested batch was finished, so the resume starts after it",
    );
    assert!(!dir.path().join("rebuild-ingest").exists(), "no table file is left behind");
    drop(directory);
    drop(dir);
    scenario.teardown();
}

#[tokio::test]
async fn a_batch_ingested_half_way_whose_files_were_removed_is_refused_for_resuming() {
    let scenario = fail::FailScenario::setup();
    let (dir, mut directory, end) = a_rebuild_died_between_the_tables_of_a_batch().await;
    std::fs::remove_dir_all(dir.path().join("rebuild-ingest")).unwrap();
    let resume = RebuildOptions { from: Some(end.next()), ..RebuildOptions::default() };
    let refused = directory.rebuild(resume, &mut |_, _| {});
    assert!(
        matches!(&refused, Err(EngineError::InvalidArgument { field: "from", reason }) if reason.contains("start over with --from 1")),
        "{refused:?}"
    );
    directory.rebuild(RebuildOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(directory.verify(10, &mut |_, _| {}).unwrap().1, [], "starting over verifies");
    drop(directory);
    drop(dir);
    scenario.teardown();
}
