//! The log's writer thread: writes staged batches in order, several at a time with one
//! WAL sync (group commit), publishes the new durable position and the live tail, then
//! runs each batch's completion in order. It knows nothing of what the events mean.

use super::{CommittedBatch, Durability, LogBatch};
use crate::error::EngineError;
use crate::meters::Meters;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use osmium_proto::ids::Position;
use rocksdb::{DB, WriteOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use tokio::sync::{broadcast, watch};

/// What runs once a batch is durable (`Ok`) or will never be (`Err`), on the writer thread.
pub type Completion = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

/// Staged batches written in one group at most (one sync covers them all).
pub const GROUP_BATCHES_MAX: usize = 64;

/// Commits over which [`LogWriter::commit_ns`] averages (each weighs 1/this).
pub const COMMIT_NS_AVERAGED: u64 = 8;

struct Job {
    batch: LogBatch,
    done: Completion,
}

/// Where the writer publishes what became durable.
#[derive(Clone)]
pub(crate) struct Published {
    pub(crate) durable: Arc<AtomicU64>,
    pub(crate) position_tx: Arc<watch::Sender<Position>>,
    pub(crate) tail: broadcast::Sender<Arc<CommittedBatch>>,
}

/// The handle of the writer thread. Dropping it writes what is queued, then stops it.
pub struct LogWriter {
    submit: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Batches submitted and not yet written (queued or in the write under way).
    unwritten: Arc<AtomicUsize>,
    /// Nanoseconds a commit took lately (a moving average; syncs included).
    commit_ns: Arc<AtomicU64>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Starts the writer of `db`; at most `queue_max` staged batches wait for it.
    pub(crate) fn start(
        db: Arc<DB>,
        path: PathBuf,
        durability: Durability,
        published: Published,
        queue_max: usize,
        meters: Arc<Meters>,
    ) -> Result<LogWriter, EngineError> {
        let (submit, jobs) = crossbeam_channel::bounded(queue_max.max(1));
        let unwritten = Arc::new(AtomicUsize::new(0));
        let commit_ns = Arc::new(AtomicU64::new(0));
        let thread = Thread {
            db,
            path: path.clone(),
            durability,
            published,
            failure: None,
            jobs,
            meters,
            unwritten: unwritten.clone(),
            commit_ns: commit_ns.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("osmium-log-writer".into())
            .spawn(move || thread.run())
            .map_err(|source| EngineError::Io { path, source })?;
        Ok(LogWriter { submit: Some(submit), thread: Some(handle), unwritten, commit_ns })
    }

    /// Queues `batch` behind those already queued (waits while the queue is full: the
    /// appender runs at most `queue_max` batches ahead of the disk). `done` runs once the
    /// batch is durable, or with the reason it never will be.
    pub fn submit(&self, batch: LogBatch, done: Completion) -> Result<(), EngineError> {
        let submit = self.submit.as_ref().ok_or(EngineError::Closed)?;
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        submit.send(Job { batch, done }).map_err(|_| {
            self.unwritten.fetch_sub(1, Ordering::AcqRel);
            EngineError::Closed
        })
    }

    /// Whether every submitted batch is written: the writer waits for work (its
    /// completions may still be running). A batch submitted now is written at once.
    pub fn is_idle(&self) -> bool {
        self.unwritten.load(Ordering::Acquire) == 0
    }

    /// Nanoseconds a commit (a group's writes and its sync) took lately: a moving average
    /// over about the last [`COMMIT_NS_AVERAGED`] commits, 0 before the first.
    pub fn commit_ns(&self) -> u64 {
        self.commit_ns.load(Ordering::Relaxed)
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.submit.take(); // the thread drains the queue, then stops
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the log writer thread panicked");
        }
    }
}

struct Thread {
    db: Arc<DB>,
    /// Named by injected failures (crash points).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    path: PathBuf,
    durability: Durability,
    published: Published,
    failure: Option<String>,
    jobs: Receiver<Job>,
    meters: Arc<Meters>,
    unwritten: Arc<AtomicUsize>,
    commit_ns: Arc<AtomicU64>,
}

impl Thread {
    fn run(mut self) {
        while let Ok(first) = recv_spinning(&self.jobs, None) {
            let mut group = Vec::with_capacity(GROUP_BATCHES_MAX);
            group.push(first);
            while group.len() < GROUP_BATCHES_MAX {
                match self.jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            // A panic (a completion's bug) must not kill the thread: batches queued meanwhile
            // would wait forever. Every later batch is refused instead.
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_group(group)));
            if let Err(panic) = written {
                let reason = panic_reason(&panic);
                tracing::error!(%reason, "a commit panicked; the log writer refuses further writes");
                self.failure = Some(format!("a commit panicked: {reason}"));
            }
        }
    }

    fn write_group(&mut self, mut group: Vec<Job>) {
        if let Some(reason) = &self.failure {
            self.unwritten.fetch_sub(group.len(), Ordering::AcqRel);
            for job in group {
                (job.done)(Err(crate::storage_error::writer_failed(reason)));
            }
            return;
        }
        let started = std::time::Instant::now();
        let written = self.write(&mut group);
        self.unwritten.fetch_sub(group.len(), Ordering::AcqRel);
        let took_ns = Meters::add_since(&self.meters.write_ns, started);
        if matches!(written, Ok(Some(_))) {
            let average = Meters::moving_average(self.commit_ns.load(Ordering::Relaxed), took_ns, COMMIT_NS_AVERAGED);
            self.commit_ns.store(average, Ordering::Relaxed);
        }
        let started = std::time::Instant::now();
        match written {
            Ok(last) => {
                if let Some(last) = last {
                    self.meters.commits.fetch_add(1, Ordering::Relaxed);
                    fail::fail_point!("commit::after_write");
                    self.published.durable.store(last.get(), Ordering::Release);
                    self.published.position_tx.send_replace(last);
                }
                let mut committed = Vec::new();
                for job in group {
                    if !job.batch.is_empty() {
                        committed.push(Arc::new(CommittedBatch { events: job.batch.events }));
                    }
                    (job.done)(Ok(()));
                }
                Meters::add_since(&self.meters.complete_ns, started);
                if last.is_some() {
                    fail::fail_point!("commit::after_ack");
                }
                for batch in committed {
                    let _ = self.published.tail.send(batch); // nobody listening is fine
                }
            }
            Err(err) => {
                let reason = err.to_string();
                tracing::error!(%reason, "commit failed; the log writer refuses further writes");
                self.failure = Some(reason.clone());
                for job in group {
                    (job.done)(Err(crate::storage_error::writer_failed(&reason)));
                }
            }
        }
    }

    /// Writes the group's batches in order, syncing once after the last (in `Sync` mode).
    /// Returns the new last position, if any event was written.
    fn write(&mut self, group: &mut [Job]) -> Result<Option<Position>, EngineError> {
        fail::fail_point!("commit::before_write", |payload| Err(crate::storage_error::injected(
            &self.path,
            "commit::before_write",
            payload
        )));
        let last_written = group.iter().rposition(|job| !job.batch.is_empty());
        let Some(last_written) = last_written else { return Ok(None) };
        let mut last = None;
        for (index, job) in group.iter_mut().enumerate() {
            if job.batch.is_empty() {
                continue;
            }
            // Architecture invariant: the log stays gapless; checked right before each write.
            let durable = self.published.durable.load(Ordering::Acquire);
            let follows = last.map_or(durable, |last: Position| last.get()) + 1;
            assert_eq!(job.batch.first_position().get(), follows, "batches are written in position order, without gaps");
            let mut options = WriteOptions::default();
            options.set_sync(self.durability == Durability::Sync && index == last_written);
            let batch = std::mem::take(&mut job.batch.write_batch);
            self.db.write_opt(batch, &options).map_err(EngineError::storage("committing a batch"))?;
            last = Some(job.batch.last_position());
        }
        Ok(last)
    }
}

/// How long the state machine and the writer poll for their next request before they
/// sleep: callers answered by a commit queue their next commands within tens of
/// microseconds, and waking a sleeping thread costs more than that (on this project's
/// 2-core VM a `Buffered` send took about 24 µs with it, 110 µs without: BENCHMARKS.md).
/// Each of the two threads spends at most this much CPU per idle period, yielding to any
/// thread ready to run on its core.
pub const IDLE_SPIN_US: u64 = 50;

/// The next message of `receiver`: polled for [`IDLE_SPIN_US`], then waited for (up to
/// `wait`, or for as long as it takes).
pub(crate) fn recv_spinning<T>(receiver: &Receiver<T>, wait: Option<std::time::Duration>) -> Result<T, RecvTimeoutError> {
    let spinning = std::time::Instant::now();
    while spinning.elapsed() < std::time::Duration::from_micros(IDLE_SPIN_US) {
        match receiver.try_recv() {
            Ok(message) => return Ok(message),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            // Yielding, not spinning: a thread ready to run on this core (a caller's task
            // queueing the next command) runs first.
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    match wait {
        Some(wait) => receiver.recv_timeout(wait),
        None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
    }
}

pub(crate) fn panic_reason(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
