//! Where the engine's time goes: busy time of each thread and what it got done, counted
//! with relaxed atomics (a few nanoseconds per batch). Read through `ChatEngine::stats`;
//! the gateway exports them as metrics, the bench divides them by the events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters shared by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    /// Nanoseconds the state machine spent deciding, staging and folding.
    pub(crate) decide_ns: AtomicU64,
    /// Nanoseconds the log writer spent in RocksDB writes (syncs included).
    pub(crate) write_ns: AtomicU64,
    /// Nanoseconds the log writer spent in completions (publishing to readers, answering).
    pub(crate) complete_ns: AtomicU64,
    /// Nanoseconds the flusher spent flushing.
    pub(crate) flush_ns: AtomicU64,
    /// Events decided.
    pub(crate) events: AtomicU64,
    /// Batches handed to the writer.
    pub(crate) batches: AtomicU64,
    /// Commits of the log writer: groups of batches written with one sync (`Sync`) or one
    /// round of writes (`Buffered`).
    pub(crate) commits: AtomicU64,
    /// Projection writes flushed (puts and deletes).
    pub(crate) flushed_writes: AtomicU64,
    /// Bytes of records the state machine holds, after its last batch (a gauge).
    pub(crate) state_bytes: AtomicU64,
}

impl Meters {
    /// Adds the time since `started` to `counter`; returns it (nanoseconds).
    pub(crate) fn add_since(counter: &AtomicU64, started: Instant) -> u64 {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
        nanos
    }

    /// `average` moved toward `sample` by 1/`samples_averaged`: an average over about the
    /// last `samples_averaged` samples (the first sample, when `average` is 0).
    pub(crate) fn moving_average(average: u64, sample: u64, samples_averaged: u64) -> u64 {
        if average == 0 {
            return sample;
        }
        let samples_averaged = samples_averaged.max(1);
        average - average / samples_averaged + sample / samples_averaged
    }

    /// A copy of the counters.
    pub(crate) fn read(&self) -> MeterReadings {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MeterReadings {
            decide_ns: get(&self.decide_ns),
            write_ns: get(&self.write_ns),
            complete_ns: get(&self.complete_ns),
            flush_ns: get(&self.flush_ns),
            events: get(&self.events),
            batches: get(&self.batches),
            commits: get(&self.commits),
            flushed_writes: get(&self.flushed_writes),
            state_bytes: get(&self.state_bytes),
        }
    }
}

/// The engine's busy times and counts since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterReadings {
    /// Nanoseconds the state machine spent deciding, staging and folding commands.
    pub decide_ns: u64,
    /// Nanoseconds the log writer spent in RocksDB writes (syncs included).
    pub write_ns: u64,
    /// Nanoseconds the log writer spent publishing durable batches and answering callers.
    pub complete_ns: u64,
    /// Nanoseconds the flusher spent writing projection flushes.
    pub flush_ns: u64,
    /// Events decided.
    pub events: u64,
    /// Batches handed to the log writer.
    pub batches: u64,
    /// Commits of the log writer: groups of batches written with one sync (`Sync`) or one
    /// round of writes (`Buffered`). Events per commit is the group commit's batch.
    pub commits: u64,
    /// Projection writes flushed.
    pub flushed_writes: u64,
    /// Bytes of records the state machine holds (approximate footprints), after its last
    /// batch: at most `state_bytes_max` once every change is flushed.
    pub state_bytes: u64,
}
