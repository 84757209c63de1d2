//! Projection persistence: a frozen layer of projection writes, with the checkpoint it
//! carries, goes to RocksDB in one `WriteBatch` (the flush); the flusher thread does this
//! in order and then tells readers and the state machine that it landed.
//!
//! Architecture invariant: on disk, the projections always equal the fold of the log up
//! to their checkpoint: every flush is one atomic batch holding a whole cut of the state
//! (all writes up to a batch boundary) and the checkpoint of that boundary, written after
//! the log batch that ends at it.

use crate::directory::column_family;
use crate::error::EngineError;
use crate::schema::ProjectionSlot;
use crate::view::Views;
use crossbeam_channel::{Receiver, Sender};
use osmium_projections::limits::RECORD_BYTES_MAX;
use osmium_projections::{KvWrite, Layer};
use rocksdb::{DB, WriteBatch, WriteOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Flushes waiting for the flusher at most; past it the state machine waits before it
/// cuts again (the unflushed layers readers hold stay bounded).
pub const FLUSHES_QUEUED_MAX: usize = 4;

/// Builds the `WriteBatch` of some projection writes in `slot`.
pub(crate) fn write_batch<'a>(
    db: &DB,
    slot: ProjectionSlot,
    writes: impl IntoIterator<Item = (osmium_projections::Table, &'a [u8], Option<&'a [u8]>)>,
) -> Result<WriteBatch, EngineError> {
    let mut batch = WriteBatch::default();
    for (table, key, value) in writes {
        add_write(db, slot, &mut batch, table, key, value)?;
    }
    Ok(batch)
}

/// Adds one projection write to `batch`.
fn add_write(
    db: &DB,
    slot: ProjectionSlot,
    batch: &mut WriteBatch,
    table: osmium_projections::Table,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), EngineError> {
    let cf = column_family(db, slot.column_family(table))?;
    match value {
        Some(value) => {
            // Architecture invariant: every record written can be read back.
            assert!(value.len() <= RECORD_BYTES_MAX, "a projection record of {} bytes is over RECORD_BYTES_MAX", value.len());
            batch.put_cf(cf, key, value);
        }
        None => batch.delete_cf(cf, key),
    }
    Ok(())
}

/// Writes `writes` (a whole cut, checkpoint included) to `slot` as one batch.
pub(crate) fn flush_writes(db: &DB, slot: ProjectionSlot, writes: &[KvWrite]) -> Result<(), EngineError> {
    let batch = write_batch(db, slot, writes.iter().map(|(table, key, value)| (*table, key.as_slice(), value.as_deref())))?;
    db.write(batch).map_err(EngineError::storage("flushing projections"))
}

struct Flush {
    number: u64,
    layer: Arc<Layer>,
}

/// What the flusher shares with the state machine.
#[derive(Debug, Default)]
pub(crate) struct FlushState {
    /// Time and writes of the flushes.
    pub(crate) meters: Arc<crate::meters::Meters>,
    /// The number of the last flush that landed.
    pub(crate) landed: AtomicU64,
    /// The same, for those who wait for a flush.
    pub(crate) landed_watch: tokio::sync::watch::Sender<u64>,
    /// Why flushing stopped, if it did (the engine then refuses writes: nothing more
    /// could become clean, and reopening folds the log again).
    pub(crate) failure: Mutex<Option<String>>,
}

/// The flusher thread. Dropping it flushes what is queued, then stops it.
pub(crate) struct Flusher {
    submit: Option<Sender<Flush>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    pub(crate) fn start(
        db: Arc<DB>,
        path: PathBuf,
        slot: ProjectionSlot,
        views: Arc<Views>,
        state: Arc<FlushState>,
    ) -> Result<Flusher, EngineError> {
        let (submit, flushes) = crossbeam_channel::bounded(FLUSHES_QUEUED_MAX);
        let thread = std::thread::Builder::new()
            .name("osmium-flusher".into())
            .spawn(move || run(&db, slot, &views, &state, &flushes))
            .map_err(|source| EngineError::Io { path, source })?;
        Ok(Flusher { submit: Some(submit), thread: Some(thread) })
    }

    /// Queues flush number `number` of `layer` (waits while [`FLUSHES_QUEUED_MAX`] are queued).
    pub(crate) fn submit(&self, number: u64, layer: Arc<Layer>) {
        if let Some(submit) = &self.submit {
            let _ = submit.send(Flush { number, layer }); // gone only while dropping
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.submit.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the flusher thread panicked");
        }
    }
}

fn run(db: &DB, slot: ProjectionSlot, views: &Views, state: &FlushState, flushes: &Receiver<Flush>) {
    for flush in flushes {
        if state.failure.lock().map(|failure| failure.is_some()).unwrap_or(true) {
            continue; // stopped: the log keeps everything; reopening folds it again
        }
        let number = flush.number;
        // A panic (a bug, or a crash point) stops flushing like an error does, instead of
        // killing the thread and leaving flushes queued that never land.
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flush_one(db, slot, views, state, flush)));
        let failed = match flushed {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(panic) => Some(format!("it panicked: {}", crate::log::panic_reason(&panic))),
        };
        if let Some(reason) = failed {
            tracing::error!(%reason, flush = number, "a projection flush failed; the engine refuses further writes");
            if let Ok(mut failure) = state.failure.lock() {
                *failure = Some(format!("flush {number} failed: {reason}"));
            }
            state.landed_watch.send_modify(|_| {}); // wake whoever waits, to see the failure
        }
    }
}

fn flush_one(db: &DB, slot: ProjectionSlot, views: &Views, state: &FlushState, flush: Flush) -> Result<(), EngineError> {
    let started = std::time::Instant::now();
    let mut batch = WriteBatch::default();
    let mut added = Ok(());
    flush.layer.visit_entries(&mut |table, key, value| {
        if added.is_ok() {
            added = add_write(db, slot, &mut batch, table, key, value);
        }
    });
    added?;
    let writes = batch.len() as u64;
    fail::fail_point!("flush::before_write", |_| Err(EngineError::Io {
        path: PathBuf::from("<flush>"),
        source: std::io::Error::other("injected at flush::before_write"),
    }));
    db.write_opt(batch, &WriteOptions::default()).map_err(EngineError::storage("flushing projections"))?;
    fail::fail_point!("flush::after_write");
    state.meters.flushed_writes.fetch_add(writes, Ordering::Relaxed);
    crate::meters::Meters::add_since(&state.meters.flush_ns, started);
    views.landed(flush.number);
    state.landed.store(flush.number, Ordering::Release);
    state.landed_watch.send_replace(flush.number);
    Ok(())
}
