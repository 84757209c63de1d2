//! `osmium-replay bench`: the workload benchmark. Measures the engine against raw RocksDB
//! on the same disk, in the same run, in one temporary directory, and prints one table in
//! which every row carries its ratio to the baseline it is compared with.
//!
//! Parts (numbered as in `BENCHMARKS.md`):
//! 1. raw RocksDB baselines: `WriteBatch`es of real encoded events (same value sizes, same
//!    options as the engine), WAL synced and not, at the batch sizes the group commit
//!    reached in parts 2 and 3 (events per commit of the log writer: per sync);
//!    sequential iteration plus prost decode of the log of part 7;
//! 2. durable (`Sync`) append throughput with 1, 16 and 256 concurrent submitters;
//! 3. `Buffered` append throughput, same submitters;
//! 4. `send_message` cost against group size (2, 100, 1,000, 10,000 members);
//! 5. `get_chats` (limit 50) p50/p99 for users in 10, 1,000 and 10,000 chats;
//! 6. `mark_chat_read` p50/p99 (`Buffered`, and `Sync`);
//! 7. rebuild rate of a generated log, against raw iteration plus decode, and its floor:
//!    the rebuilt projections written raw, no fold;
//! 8. peak RSS of each part and bytes on disk per event.
//!
//! Every figure is measured in the run that prints it; throughputs and latencies are the
//! median of `runs` runs. Nothing is asserted: targets are reported as met or missed.

use osmium_engine::StateConfig;
use osmium_engine::chat::catch_up::CatchUp;
use osmium_engine::chat::{ChatEngine, EngineConfig};
use osmium_engine::directory::db_options;
use osmium_engine::log::{Durability, EventLog, ExpectedVersion, LogConfig};
use crate::ReplayError;
use osmium_engine::EngineError;
use osmium_engine::maintenance::{DataDirectory, RebuildOptions};
use osmium_engine::schema::{CF_POSITION_EVENT, ProjectionSlot};
use osmium_proto::events::{self, EventEnvelope, event_envelope::Event};
use osmium_proto::ids::{ChatId, Position, StreamId, UserId};
use osmium_proto::prost::Message as _;
use osmium_proto::refs::{ChatRef, GroupRef, UserRef, chat_ref::Ref};
use osmium_proto::{chats, messages, types};
use rocksdb::{ColumnFamilyDescriptor, DB, WriteBatch, WriteOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The stated constant of issue #11's peak-RSS target, in MiB: what an opening may hold
/// above `state_bytes_max` and RocksDB's `ROCKSDB_MEMORY_BYTES_MAX` (the allocator's free
/// pages, the tables' and memtables' transients, one recovery flush's unflushed records).
/// Measured 254 to 286 MiB at 10M events and 119 to 154 at 1M (BENCHMARKS.md, 2026-12-02).
const RSS_ABOVE_BOUNDS_MIB: f64 = 320.0;

/// Concurrent submitters of the append parts (2 and 3).
pub const SUBMITTERS: [usize; 3] = [1, 16, 256];
/// Group sizes of part 4, in members (2 = a DM).
pub const GROUP_SIZES: [u64; 4] = [2, 100, 1_000, 10_000];
/// Chats per user of part 5.
pub const CHAT_COUNTS: [u64; 3] = [10, 1_000, 10_000];
/// `get_chats` page size measured.
pub const GET_CHATS_LIMIT: u32 = 50;
/// Events of the generated log per user in its directory (part 7: 1M users in 10M events).
pub const GENERATE_EVENTS_PER_USER: u64 = 10;
/// Events per append when generating the log for the rebuild (part 7).
pub const GENERATE_APPEND_EVENTS: usize = 256;
/// Events the crashed process of part 8 leaves unflushed: one short of the default
/// `flush_events_max`, the most a crash leaves to fold at the next open.
const CRASH_EVENTS: u64 = 19_999;
/// Concurrent senders of the crashed process.
const CRASH_SENDERS: u64 = 16;
/// Commands in flight when setting up users, DMs and the generated log.
const SETUP_CONCURRENCY: usize = 32;
/// How often the RSS sampler looks when the peak cannot be reset.
const RSS_SAMPLE_INTERVAL_MS: u64 = 10;

/// How much work each part does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchPlan {
    /// Name printed in the title (`--quick`, full, smoke).
    pub name: &'static str,
    /// Runs of every throughput and latency measurement; the median is printed.
    pub runs: usize,
    /// Events appended per run in `Sync` mode, per entry of [`SUBMITTERS`].
    pub sync_events: [u64; 3],
    /// Events appended per run in `Buffered` mode, per entry of [`SUBMITTERS`].
    pub buffered_events: [u64; 3],
    /// `send_message` calls per run and group size.
    pub sends: u64,
    /// `get_chats` calls per run and user.
    pub get_chats_calls: u64,
    /// `mark_chat_read` calls per run in `Buffered` mode.
    pub mark_read_calls: u64,
    /// `mark_chat_read` calls per run in `Sync` mode.
    pub mark_read_sync_calls: u64,
    /// Events of the generated log that is rebuilt.
    pub rebuild_events: u64,
    /// Rebuilds (and raw iterations) of that log; the median is printed.
    pub rebuild_runs: usize,
    /// Events in the log, none of them flushed, when the crashed process of part 8 aborts.
    pub crash_events: u64,
    /// Updates missed before each catch-up measurement (`updates_since`), smallest first.
    pub catch_up_missed: [u64; 3],
    /// `updates_since` calls per catch-up measurement.
    pub catch_up_calls: u64,
    /// Only these parts (and the baselines they are compared with); all when empty.
    pub only: Vec<u8>,
}

impl BenchPlan {
    /// `--quick`: what CI could run as a smoke test (well under 2 minutes on 2 cores).
    pub fn quick() -> BenchPlan {
        BenchPlan {
            name: "quick",
            runs: 3,
            sync_events: [300, 3_000, 10_000],
            buffered_events: [5_000, 10_000, 20_000],
            sends: 2_000,
            get_chats_calls: 1_000,
            mark_read_calls: 2_000,
            mark_read_sync_calls: 200,
            rebuild_events: 1_000_000,
            rebuild_runs: 1,
            crash_events: CRASH_EVENTS,
            catch_up_missed: [100, 1_000, 10_000],
            catch_up_calls: 30,
            only: Vec::new(),
        }
    }

    /// The full run: more of everything and a 10M-event log.
    pub fn full() -> BenchPlan {
        BenchPlan {
            name: "full",
            runs: 5,
            sync_events: [1_000, 10_000, 60_000],
            buffered_events: [20_000, 80_000, 200_000],
            sends: 10_000,
            get_chats_calls: 5_000,
            mark_read_calls: 10_000,
            mark_read_sync_calls: 1_000,
            rebuild_events: 10_000_000,
            rebuild_runs: 1,
            crash_events: CRASH_EVENTS,
            catch_up_missed: [100, 1_000, 10_000],
            catch_up_calls: 100,
            only: Vec::new(),
        }
    }

    /// A tiny run with every row, for the functional test (numbers meaningless).
    pub fn smoke() -> BenchPlan {
        BenchPlan {
            name: "smoke",
            runs: 1,
            sync_events: [5, 32, 256],
            buffered_events: [50, 160, 512],
            sends: 20,
            get_chats_calls: 20,
            mark_read_calls: 20,
            mark_read_sync_calls: 5,
            rebuild_events: 5_000,
            rebuild_runs: 1,
            crash_events: 500,
            catch_up_missed: [5, 10, 20],
            catch_up_calls: 2,
            only: Vec::new(),
        }
    }
}

/// Whether a ratio should be at least or at most a bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// `ratio >= bound`.
    AtLeast(f64),
    /// `ratio <= bound`.
    AtMost(f64),
}

impl Target {
    /// Whether `ratio` meets it.
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(bound) => ratio >= bound,
            Target::AtMost(bound) => ratio <= bound,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtLeast(bound) => format!(">= {bound}"),
            Target::AtMost(bound) => format!("<= {bound}"),
        }
    }
}

/// The unit of a row's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Events (or commands) per second.
    EventsPerSecond,
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Mebibytes.
    MiB,
    /// Bytes per event.
    BytesPerEvent,
    /// Bytes.
    Bytes,
    /// Events per committed batch.
    EventsPerBatch,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::EventsPerSecond => "events/s",
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::MiB => "MiB",
            Unit::BytesPerEvent => "B/event",
            Unit::Bytes => "B",
            Unit::EventsPerBatch => "events/batch",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Unit::EventsPerSecond | Unit::BytesPerEvent | Unit::Bytes => format!("{} {}", thousands(value), self.suffix()),
            Unit::Micros | Unit::Millis | Unit::EventsPerBatch => format!("{value:.1} {}", self.suffix()),
            Unit::MiB => format!("{value:.0} {}", self.suffix()),
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The part (1 to 8).
    pub part: u8,
    /// What was measured.
    pub measure: String,
    /// The measured value (a median over runs unless the note says otherwise).
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
    /// The row it is compared with (by measure) and the ratio value / baseline.
    pub baseline: Option<(String, f64)>,
    /// The target of the ratio, if the issue sets one.
    pub target: Option<Target>,
    /// Runs, sizes, caveats.
    pub note: String,
}

impl Row {
    fn new(part: u8, measure: impl Into<String>, value: f64, unit: Unit, note: impl Into<String>) -> Row {
        Row { part, measure: measure.into(), value, unit, baseline: None, target: None, note: note.into() }
    }

    fn against(mut self, baseline_measure: impl Into<String>, baseline_value: f64) -> Row {
        let ratio = if baseline_value > 0.0 { self.value / baseline_value } else { f64::NAN };
        self.baseline = Some((baseline_measure.into(), ratio));
        self
    }

    fn with_target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    fn with_optional_target(mut self, target: Option<Target>) -> Row {
        self.target = target;
        self
    }

    /// `Some(true)` when the row has a target and its ratio meets it.
    pub fn met(&self) -> Option<bool> {
        match (&self.baseline, self.target) {
            (Some((_, ratio)), Some(target)) => Some(target.met(*ratio)),
            _ => None,
        }
    }
}

/// What the machine is, as far as the benchmark can tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    /// Logical CPUs available.
    pub cores: usize,
    /// Total memory, in bytes.
    pub memory_bytes: u64,
    /// The directory measured in.
    pub directory: PathBuf,
    /// Device and file system of that directory (from `/proc/mounts`).
    pub disk: String,
    /// 1-minute load average at the start and the end of the run.
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
}

/// The whole result.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// The plan that ran.
    pub plan: BenchPlan,
    /// The rows, in part order.
    pub rows: Vec<Row>,
    /// The machine.
    pub machine: Machine,
    /// How peak RSS was measured.
    pub rss_method: &'static str,
    /// Wall time of the whole run, in seconds.
    pub seconds: f64,
}

fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

impl BenchReport {
    /// The table as Markdown, ready to paste into `BENCHMARKS.md`.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        out.push_str(&format!(
            "osmium-replay bench ({} plan: medians of {} runs; rebuild and raw iteration: {} run(s); {:.0} s in all)\n\n",
            self.plan.name, self.plan.runs, self.plan.rebuild_runs, self.seconds
        ));
        out.push_str(&format!(
            "machine: {} cores, {:.1} GiB memory; directory {} on {}; load average (1 min) {} at start, {} at end; peak RSS: {}\n\n",
            m.cores,
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            m.directory.display(),
            m.disk,
            m.load_start,
            m.load_end,
            self.rss_method
        ));
        out.push_str("| part | measure | value | ratio (to) | target | notes |\n|---|---|---:|---|---|---|\n");
        for row in &self.rows {
            let ratio = row
                .baseline
                .as_ref()
                .map_or_else(String::new, |(measure, ratio)| format!("**{ratio:.2}** ({measure})"));
            let target = match (row.target, row.met()) {
                (Some(target), Some(true)) => format!("{} met", target.describe()),
                (Some(target), _) => format!("{} **missed**", target.describe()),
                (None, _) => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {ratio} | {target} | {} |\n",
                row.part,
                row.measure,
                row.unit.format(row.value),
                row.note
            ));
        }
        out
    }

    /// The report as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "part": row.part,
                    "measure": row.measure,
                    "value": row.value,
                    "unit": row.unit.suffix(),
                    "baseline": row.baseline.as_ref().map(|(measure, _)| measure),
                    "ratio": row.baseline.as_ref().map(|(_, ratio)| ratio),
                    "target": row.target.map(Target::describe),
                    "met": row.met(),
                    "note": row.note,
                })
            })
            .collect();
        serde_json::json!({
            "plan": self.plan.name,
            "runs": self.plan.runs,
            "seconds": self.seconds,
            "machine": {
                "cores": self.machine.cores,
                "memory_bytes": self.machine.memory_bytes,
                "directory": self.machine.directory,
                "disk": self.machine.disk,
                "load_start": self.machine.load_start,
                "load_end": self.machine.load_end,
            },
            "rss_method": self.rss_method,
            "rows": rows,
        })
    }
}

// ---- small helpers ----------------------------------------------------------------

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io { path: path.to_path_buf(), source }
}

fn storage(context: &'static str) -> impl FnOnce(rocksdb::Error) -> EngineError {
    move |source| EngineError::Storage { context, source }
}

fn missing_family(name: &str) -> EngineError {
    EngineError::Corrupt { what: "column families".into(), expected: format!("column family {name}"), found: "none".into() }
}

fn joined<T>(result: Result<Result<T, EngineError>, tokio::task::JoinError>) -> Result<T, EngineError> {
    result.map_err(|_| EngineError::Closed)?
}

/// Median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `quantile` (0..=1) of `sorted` by nearest rank (NaN when empty).
pub fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * quantile).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn user_ref(user: UserId) -> ChatRef {
    ChatRef { r#ref: Some(Ref::User(UserRef { user_id: user.get() })) }
}

fn group_ref(group: u64) -> ChatRef {
    ChatRef { r#ref: Some(Ref::Group(GroupRef { group_id: group })) }
}

fn message_text(n: u64) -> String {
    format!("message {n}: see you at the station at seven, bring the tickets")
}

/// Bytes of every file under `path`.
fn directory_bytes(path: &Path) -> Result<u64, EngineError> {
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(io_error(path))? {
        let entry = entry.map_err(io_error(path))?;
        let metadata = entry.metadata().map_err(io_error(&entry.path()))?;
        total += if metadata.is_dir() { directory_bytes(&entry.path())? } else { metadata.len() };
    }
    Ok(total)
}

// ---- peak RSS ---------------------------------------------------------------------

/// A `/proc/self/status` field in bytes (Linux only).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; false where unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok() && status_bytes("VmHWM:").is_some()
}

/// Peak RSS during one part: VmHWM reset at the start when the kernel allows it, otherwise
/// the largest VmRSS seen by a sampling thread.
struct PartRss {
    sampler: Option<(Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>)>,
}

impl PartRss {
    fn start() -> PartRss {
        if reset_peak_rss() {
            return PartRss { sampler: None };
        }
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(status_bytes("VmRSS:").unwrap_or(0)));
        let (thread_stop, thread_peak) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                if let Some(rss) = status_bytes("VmRSS:") {
                    thread_peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(RSS_SAMPLE_INTERVAL_MS));
            }
        });
        PartRss { sampler: Some((stop, peak, handle)) }
    }

    /// Peak RSS in bytes, if it could be read.
    fn finish(self) -> Option<u64> {
        match self.sampler {
            None => status_bytes("VmHWM:"),
            Some((stop, peak, handle)) => {
                stop.store(true, Ordering::Relaxed);
                let _ = handle.join();
                status_bytes("VmRSS:").map(|rss| rss.max(peak.load(Ordering::Relaxed)))
            }
        }
    }
}

fn rss_method() -> &'static str {
    if reset_peak_rss() {
        "VmHWM from /proc/self/status, reset per part through /proc/self/clear_refs"
    } else if status_bytes("VmRSS:").is_some() {
        "largest VmRSS sampled every 10 ms (VmHWM cannot be reset here)"
    } else {
        "unavailable (no /proc/self/status)"
    }
}

// ---- machine ----------------------------------------------------------------------

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".into())
}

fn machine(directory: &Path) -> Machine {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    let canonical = directory.canonicalize().unwrap_or_else(|_| directory.to_path_buf());
    let disk = std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|mounts| {
            mounts
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split_whitespace();
                    let (device, mount, fs) = (fields.next()?, fields.next()?, fields.next()?);
                    canonical.starts_with(mount).then(|| (mount.len(), format!("{device} ({fs}, mounted at {mount})")))
                })
                .max_by_key(|(length, _)| *length)
                .map(|(_, disk)| disk)
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        directory: canonical,
        disk,
        load_start: load_average(),
        load_end: String::new(),
    }
}

// ---- raw RocksDB baselines --------------------------------------------------------

/// A RocksDB database with the engine's options and its log column family: the storage
/// limit the engine is compared with.
struct RawDb {
    db: DB,
    next_key: u64,
}

impl RawDb {
    fn open(path: &Path) -> Result<RawDb, EngineError> {
        let family = ColumnFamilyDescriptor::new(CF_POSITION_EVENT, db_options());
        let db = DB::open_cf_descriptors(&db_options(), path, vec![family]).map_err(storage("opening the raw database"))?;
        Ok(RawDb { db, next_key: 1 })
    }

    /// Writes `events` values (cycling through `values`) under increasing 8-byte keys in
    /// `WriteBatch`es of `batch` puts, one write (synced or not) per batch; events/s.
    fn put_rate(&mut self, values: &[Vec<u8>], batch: usize, events: u64, sync: bool) -> Result<f64, EngineError> {
        let family = self.db.cf_handle(CF_POSITION_EVENT).ok_or_else(|| missing_family(CF_POSITION_EVENT))?;
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        let batch = batch.max(1) as u64;
        let started = Instant::now();
        let mut written = 0u64;
        while written < events {
            let mut write = WriteBatch::default();
            for _ in 0..batch.min(events - written) {
                let value = values.get((self.next_key as usize) % values.len().max(1)).map_or(&[][..], Vec::as_slice);
                write.put_cf(family, self.next_key.to_be_bytes(), value);
                self.next_key += 1;
                written += 1;
            }
            self.db.write_opt(write, &options).map_err(storage("writing a raw batch"))?;
        }
        Ok(written as f64 / started.elapsed().as_secs_f64().max(1e-9))
    }
}

/// The engine's directory at `path` opened read-only by RocksDB itself, every column
/// family with the engine's options.
fn open_read_only(path: &Path) -> Result<DB, EngineError> {
    let options = db_options();
    let names = DB::list_cf(&options, path).map_err(storage("listing column families"))?;
    DB::open_cf_for_read_only(&options, path, names, false).map_err(storage("opening the directory read-only"))
}

/// Sequential iteration of the log column family with a prost decode of every record,
/// on a read-only open of the engine's directory: (events, seconds).
fn raw_iterate(path: &Path) -> Result<(u64, f64), EngineError> {
    let db = open_read_only(path)?;
    let family = db.cf_handle(CF_POSITION_EVENT).ok_or_else(|| missing_family(CF_POSITION_EVENT))?;
    let started = Instant::now();
    let mut iter = db.raw_iterator_cf(family);
    iter.seek_to_first();
    let mut events = 0u64;
    while let Some(value) = iter.value() {
        let envelope = EventEnvelope::decode(value)
            .map_err(|err| EngineError::Decode { position: Position(events + 1), reason: err.to_string() })?;
        std::hint::black_box(&envelope);
        events += 1;
        iter.next();
    }
    iter.status().map_err(storage("iterating the log"))?;
    Ok((events, started.elapsed().as_secs_f64()))
}

/// Records read into memory per table file when writing a rebuilt slot raw.
const RAW_OUTPUT_FILE_KEYS_MAX: usize = 1 << 20;

/// A record read from a table: key and value.
type Record = (Box<[u8]>, Box<[u8]>);

/// What writing a rebuilt slot's records raw took: a floor for any rebuild that
/// produces that slot.
struct RawOutput {
    keys: u64,
    bytes: u64,
    seconds: f64,
}

/// Writes every record of `slot` in the directory at `path` (read beforehand, table by
/// table, in files of at most [`RAW_OUTPUT_FILE_KEYS_MAX`] keys; the reading untimed) as
/// sorted table files with the engine's options, each ingested into a scratch database
/// at `scratch`, on one thread: the rebuild's output written once, no fold, no
/// rewrites between batches.
fn write_slot_raw(path: &Path, slot: ProjectionSlot, scratch: &Path) -> Result<RawOutput, EngineError> {
    let options = db_options();
    let source = open_read_only(path)?;
    let tables: Vec<&str> = osmium_projections::Table::ALL.iter().map(|&table| slot.column_family(table)).collect();
    let files = scratch.join("files");
    std::fs::create_dir_all(&files).map_err(io_error(&files))?;
    let target = DB::open_cf(&options, scratch.join("db"), &tables).map_err(storage("opening the scratch database"))?;
    let mut output = RawOutput { keys: 0, bytes: 0, seconds: 0.0 };
    let mut records: Vec<Record> = Vec::with_capacity(RAW_OUTPUT_FILE_KEYS_MAX);
    for (number, name) in tables.iter().enumerate() {
        let family = source.cf_handle(name).ok_or_else(|| missing_family(name))?;
        let mut iter = source.raw_iterator_cf(family);
        iter.seek_to_first();
        loop {
            records.clear();
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                records.push((key.into(), value.into()));
                iter.next();
                if records.len() == RAW_OUTPUT_FILE_KEYS_MAX {
                    break;
                }
            }
            iter.status().map_err(storage("reading a rebuilt table"))?;
            if records.is_empty() {
                break;
            }
            let file_path = files.join(format!("{number}-{}.sst", output.keys));
            let started = Instant::now();
            let mut file = rocksdb::SstFileWriter::create(&options);
            file.open(&file_path).map_err(storage("creating a table file"))?;
            for (key, value) in &records {
                file.put(key, value).map_err(storage("writing a table file"))?;
            }
            file.finish().map_err(storage("finishing a table file"))?;
            let mut ingest = rocksdb::IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            let family = target.cf_handle(name).ok_or_else(|| missing_family(name))?;
            target.ingest_external_file_cf_opts(family, &ingest, vec![&file_path]).map_err(storage("ingesting a table file"))?;
            output.seconds += started.elapsed().as_secs_f64();
            output.keys += records.len() as u64;
            output.bytes += records.iter().map(|(key, value)| (key.len() + value.len()) as u64).sum::<u64>();
        }
    }
    Ok(output)
}

// ---- the event log directly: appends and generation -------------------------------

/// Creates the group `chat` of `owner` + `members` by appending its `group_created` event.
async fn create_group_event(log: &EventLog, chat: ChatId, owner: UserId, members: Vec<u64>) -> Result<(), EngineError> {
    let created = events::GroupCreated { owner_id: owner.get(), name: format!("group of {owner}"), member_ids: members };
    log.append(StreamId::Chat(chat), ExpectedVersion::NoStream, owner, vec![Event::GroupCreated(created)], None).await.map(drop)
}

/// Appends `count` `message_sent` events by `author` to `chat` in one append, with ids
/// from `ids` (increasing: each chat is appended to by one task only).
async fn append_messages(log: &EventLog, chat: ChatId, author: UserId, first_n: u64, count: usize, ids: &AtomicU64) -> Result<(), EngineError> {
    let events = (0..count as u64)
        .map(|offset| {
            Event::MessageSent(events::MessageSent {
                message_id: ids.fetch_add(1, Ordering::Relaxed),
                author_id: author.get(),
                text: message_text(first_n + offset),
                ..Default::default()
            })
        })
        .collect();
    log.append(StreamId::Chat(chat), ExpectedVersion::Any, author, events, None).await.map(drop)
}

/// One append run: `events` sends (no `client_id`: one `message_sent` event each) by
/// `submitters` concurrent tasks, each in its own group. Returns (events/s, mean events
/// per commit of the log writer: per sync in `Sync` mode, the group commit's batch).
async fn append_run(engine: &ChatEngine, chats: &[(ChatRef, UserId)], submitters: usize, events: u64) -> Result<(f64, f64), EngineError> {
    let meters_before = engine.stats().meters;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(submitters);
    for submitter in 0..submitters {
        let share = events / submitters as u64 + u64::from((submitter as u64) < events % submitters as u64);
        let (chat, author) = chats[submitter % chats.len()];
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..share {
                let request = messages::SendMessage { chat_ref: Some(chat), message: message_text(n), ..Default::default() };
                engine.send_message(author, request).await?;
            }
            Ok::<(), EngineError>(())
        }));
    }
    for task in tasks {
        joined(task.await)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let meters = engine.stats().meters;
    let commits = (meters.commits - meters_before.commits).max(1);
    let per_event = |after: u64, before: u64| (after - before) as f64 / 1_000.0 / events.max(1) as f64;
    eprintln!(
        "append run, {submitters} submitters: per event decide {:.2} µs, write {:.2} µs, complete {:.2} µs, flush {:.2} µs; wall {:.2} µs",
        per_event(meters.decide_ns, meters_before.decide_ns),
        per_event(meters.write_ns, meters_before.write_ns),
        per_event(meters.complete_ns, meters_before.complete_ns),
        per_event(meters.flush_ns, meters_before.flush_ns),
        seconds * 1e6 / events.max(1) as f64
    );
    Ok((events as f64 / seconds.max(1e-9), events as f64 / commits as f64))
}

/// The encoded bytes of up to `limit` stored events from `from`: the raw baselines' values.
fn stored_values(log: &osmium_engine::LogReader, from: Position, limit: usize) -> Result<Vec<Vec<u8>>, EngineError> {
    Ok(log.read_all(from, limit)?.iter().map(|event| event.encode_to_vec()).collect())
}

struct AppendResult {
    submitters: usize,
    events: u64,
    rate: f64,
    batch: f64,
    raw_rate: f64,
    raw_batch: usize,
}

/// Parts 2 and 3 for one durability, with their raw baselines: for every submitter count,
/// `runs` times an engine run and then a raw run at the batch size the engine's group
/// commit reached in it, in events per commit (interleaved, so that both see the same
/// disk conditions).
/// Returns the medians and the mean size of the values written.
async fn append_part(
    dir: &Path,
    raw: &mut RawDb,
    durability: Durability,
    events_per_run: &[u64; 3],
    runs: usize,
    say: &(dyn Fn(String) + Sync),
) -> Result<(Vec<AppendResult>, f64), ReplayError> {
    let config = EngineConfig { log: LogConfig { durability, ..LogConfig::default() }, ..EngineConfig::default() };
    let engine = ChatEngine::open(dir, config).await?;
    let owners = SUBMITTERS[2] as u64;
    upsert_users(&engine, 1_000..=1_000 + 2 * owners).await?;
    let mut creations = Vec::with_capacity(SUBMITTERS[2]);
    for index in 0..owners {
        let (engine, owner) = (engine.clone(), UserId(1_000 + 2 * index));
        creations.push(tokio::spawn(async move {
            let users = vec![UserRef { user_id: owner.get() + 1 }];
            let group = engine.create_chat(owner, chats::CreateChat { users, name: format!("group of {owner}") }).await?;
            Ok::<_, EngineError>((group_ref(group.id), owner))
        }));
    }
    let mut chats = Vec::with_capacity(SUBMITTERS[2]);
    for creation in creations {
        chats.push(joined(creation.await)?);
    }
    let first = engine.last_position().next();
    let sync = durability == Durability::Sync;
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut results = Vec::new();
    for (submitters, &events) in SUBMITTERS.into_iter().zip(events_per_run) {
        let (mut rates, mut batches, mut raw_rates) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            say(format!("{durability:?} append: {submitters} submitters, run {}/{runs}, and its raw baseline", run + 1));
            let (rate, batch) = append_run(&engine, &chats, submitters, events).await?;
            if values.is_empty() {
                values = stored_values(engine.log(), first, 1_024)?;
            }
            rates.push(rate);
            batches.push(batch);
            raw_rates.push(raw.put_rate(&values, batch.round().max(1.0) as usize, events, sync)?);
        }
        let batch = median(&batches);
        results.push(AppendResult {
            submitters,
            events,
            rate: median(&rates),
            batch,
            raw_rate: median(&raw_rates),
            raw_batch: batch.round().max(1.0) as usize,
        });
    }
    let value_bytes = values.iter().map(Vec::len).sum::<usize>() as f64 / values.len().max(1) as f64;
    Ok((results, value_bytes))
}

// ---- the chat engine: sends, chat lists, reads ------------------------------------

async fn upsert_users(engine: &ChatEngine, ids: std::ops::RangeInclusive<u64>) -> Result<(), EngineError> {
    let ids: Vec<u64> = ids.collect();
    let mut tasks = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(SETUP_CONCURRENCY).max(1)) {
        let (engine, chunk) = (engine.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                engine.upsert_user(types::User { id, name: format!("user {id}"), ..Default::default() }).await?;
            }
            Ok::<(), EngineError>(())
        }));
    }
    for task in tasks {
        joined(task.await)?;
    }
    Ok(())
}

/// `hub` sends one DM to each of `peers` (concurrently): it is then in that many chats.
async fn open_dms(engine: &ChatEngine, hub: UserId, peers: &[u64]) -> Result<(), EngineError> {
    let mut tasks = Vec::new();
    for chunk in peers.chunks(peers.len().div_ceil(SETUP_CONCURRENCY).max(1)) {
        let (engine, chunk) = (engine.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for peer in chunk {
                let request = messages::SendMessage { chat_ref: Some(user_ref(UserId(peer))), message: "hi".into(), ..Default::default() };
                engine.send_message(hub, request).await?;
            }
            Ok::<(), EngineError>(())
        }));
    }
    for task in tasks {
        joined(task.await)?;
    }
    Ok(())
}

/// Latencies (µs, sorted) of `calls` sequential calls of `call(n)`.
async fn latencies<F, Fut>(calls: u64, mut call: F) -> Result<Vec<f64>, EngineError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), EngineError>>,
{
    let mut samples = Vec::with_capacity(calls as usize);
    for n in 0..calls {
        let started = Instant::now();
        call(n).await?;
        samples.push(micros(started.elapsed()));
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// Median over `runs` of (p50, p99) of `calls` calls.
async fn latency_runs<F, Fut>(runs: usize, calls: u64, mut call: F) -> Result<(f64, f64), EngineError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), EngineError>>,
{
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for run in 0..runs as u64 {
        let samples = latencies(calls, |n| call(run * calls + n)).await?;
        p50s.push(percentile(&samples, 0.50));
        p99s.push(percentile(&samples, 0.99));
    }
    Ok((median(&p50s), median(&p99s)))
}

const PEERS_FIRST: u64 = 1;
const HUB_FIRST: u64 = 100_001;

/// Part 4: µs per `send_message` for each group size; the runs go round the sizes, so
/// that background work (flushes, compactions) does not favour one size.
async fn send_part(engine: &ChatEngine, plan: &BenchPlan, say: &(dyn Fn(String) + Sync)) -> Result<Vec<(u64, f64)>, EngineError> {
    let sender = UserId(PEERS_FIRST);
    let mut targets = Vec::new();
    for size in GROUP_SIZES {
        let chat_ref = if size == 2 {
            user_ref(UserId(PEERS_FIRST + 1))
        } else {
            let users = (PEERS_FIRST + 1..PEERS_FIRST + size).map(|user_id| UserRef { user_id }).collect();
            let group = engine.create_chat(sender, chats::CreateChat { users, name: format!("{size} members") }).await?;
            group_ref(group.id)
        };
        targets.push((size, chat_ref, Vec::new()));
    }
    let mut client_id = 1u64;
    let mut send = |chat_ref: ChatRef, text: String| {
        client_id += 1;
        let request = messages::SendMessage { chat_ref: Some(chat_ref), message: text, client_id: Some(client_id), ..Default::default() };
        engine.send_message(sender, request)
    };
    for (_, chat_ref, _) in &targets {
        send(*chat_ref, "warm-up (creates the DM)".into()).await?;
    }
    for run in 0..plan.runs {
        for (size, chat_ref, costs) in &mut targets {
            say(format!("send_message, {size} members, run {}/{}", run + 1, plan.runs));
            let started = Instant::now();
            for n in 0..plan.sends {
                send(*chat_ref, message_text(n)).await?;
            }
            costs.push(micros(started.elapsed()) / plan.sends.max(1) as f64);
        }
    }
    Ok(targets.into_iter().map(|(size, _, costs)| (size, median(&costs))).collect())
}

/// Part 5: (chats, p50 µs, p99 µs) of `get_chats` for a user in each of [`CHAT_COUNTS`] chats.
async fn get_chats_part(engine: &ChatEngine, plan: &BenchPlan, say: &(dyn Fn(String) + Sync)) -> Result<Vec<(u64, f64, f64)>, EngineError> {
    let mut results = Vec::new();
    for (index, count) in CHAT_COUNTS.into_iter().enumerate() {
        let hub = UserId(HUB_FIRST + index as u64);
        say(format!("get_chats: opening {count} DMs for user {hub}"));
        let peers: Vec<u64> = (PEERS_FIRST..PEERS_FIRST + count).collect();
        open_dms(engine, hub, &peers).await?;
        // Steady state: the setup's chat-list changes flushed (a user whose chats all moved
        // within the last flush interval pays for each such chat; see BENCHMARKS.md).
        engine.flush().await?;
        say(format!("get_chats: user in {count} chats, {} runs", plan.runs));
        let (p50, p99) = latency_runs(plan.runs, plan.get_chats_calls, |_| {
            let request = chats::GetChats { limit: Some(GET_CHATS_LIMIT), ..Default::default() };
            async move { engine.get_chats(hub, request).await.map(drop) }
        })
        .await?;
        results.push((count, p50, p99));
    }
    Ok(results)
}

/// Members of each large group of part 5: above `CHAT_LIST_FANOUT_MAX`, so the groups are
/// listed through the large-chat index and placed by their chat record at query time.
const LARGE_GROUP_MEMBERS: u64 = 258;
/// First user id of the large groups' members.
const LARGE_MEMBERS_FIRST: u64 = 200_001;

/// Part 5: what a user in [`CHAT_COUNTS`]`[1]` groups of [`LARGE_GROUP_MEMBERS`] members
/// (the same members in each) waits for.
struct LargeGroups {
    /// (p50 µs, p99 µs) of `get_chats`.
    get_chats: (f64, f64),
    /// (p50 µs, p99 µs) of `updates_since` after [`BenchPlan::catch_up_missed`]`[0]`
    /// messages sent round-robin across the groups (a seek per group: each has its own
    /// catch-up sequence).
    catch_up: (f64, f64),
}

/// Part 5: [`LargeGroups`].
async fn large_groups_part(engine: &ChatEngine, plan: &BenchPlan, say: &(dyn Fn(String) + Sync)) -> Result<LargeGroups, EngineError> {
    let hub = UserId(HUB_FIRST + CHAT_COUNTS.len() as u64);
    let groups = CHAT_COUNTS[1];
    say(format!("get_chats: user in {groups} groups of {LARGE_GROUP_MEMBERS} members"));
    upsert_users(engine, LARGE_MEMBERS_FIRST..=LARGE_MEMBERS_FIRST + LARGE_GROUP_MEMBERS).await?;
    let users: Vec<UserRef> = (LARGE_MEMBERS_FIRST..LARGE_MEMBERS_FIRST + LARGE_GROUP_MEMBERS - 1).map(|user_id| UserRef { user_id }).collect();
    let mut tasks = Vec::new();
    for chunk in 0..SETUP_CONCURRENCY as u64 {
        let (engine, users) = (engine.clone(), users.clone());
        tasks.push(tokio::spawn(async move {
            let mut created = chunk;
            let mut ids = Vec::new();
            while created < groups {
                let request = chats::CreateChat { users: users.clone(), name: format!("large {created}") };
                let group = engine.create_chat(hub, request).await?;
                let text = messages::SendMessage { chat_ref: Some(group_ref(group.id)), message: "hello".into(), ..Default::default() };
                engine.send_message(hub, text).await?;
                ids.push(group.id);
                created += SETUP_CONCURRENCY as u64;
            }
            Ok::<Vec<u64>, EngineError>(ids)
        }));
    }
    let mut senders = Vec::new();
    for task in tasks {
        senders.extend(joined(task.await)?.into_iter().map(|id| (UserId(LARGE_MEMBERS_FIRST), group_ref(id))));
    }
    engine.flush().await?;
    let get_chats = latency_runs(plan.runs, plan.get_chats_calls, |_| {
        let request = chats::GetChats { limit: Some(GET_CHATS_LIMIT), ..Default::default() };
        async move { engine.get_chats(hub, request).await.map(drop) }
    })
    .await?;
    let missed = plan.catch_up_missed[0];
    say(format!("catch-up: {missed} updates missed by a user in {groups} groups of {LARGE_GROUP_MEMBERS} members"));
    let catch_up = missed_then_caught_up(engine, hub, &senders, missed, plan.catch_up_calls).await?;
    Ok(LargeGroups { get_chats, catch_up })
}

/// Part 5: (missed, p50 µs, p99 µs) of `updates_since` for the user in
/// [`CHAT_COUNTS`]`[1]` DMs (opened by [`get_chats_part`]), after each of
/// `plan.catch_up_missed` messages sent to it round-robin across those DMs.
async fn catch_up_part(engine: &ChatEngine, plan: &BenchPlan, say: &(dyn Fn(String) + Sync)) -> Result<Vec<(u64, f64, f64)>, EngineError> {
    let hub = UserId(HUB_FIRST + 1);
    let senders = dm_senders(hub, PEERS_FIRST..PEERS_FIRST + CHAT_COUNTS[1]);
    let mut results = Vec::new();
    for missed in plan.catch_up_missed {
        say(format!("catch-up: {missed} updates missed by a user in {} chats", senders.len()));
        let (p50, p99) = missed_then_caught_up(engine, hub, &senders, missed, plan.catch_up_calls).await?;
        results.push((missed, p50, p99));
    }
    Ok(results)
}

/// Each of `peers` sending to `hub` in their DM.
fn dm_senders(hub: UserId, peers: impl Iterator<Item = u64>) -> Vec<(UserId, ChatRef)> {
    peers.map(|peer| (UserId(peer), user_ref(hub))).collect()
}

/// (p50 µs, p99 µs) of `updates_since` for `hub` after `missed` messages sent round-robin
/// by `senders` (each a member of its chat, as is `hub`), flushed: `calls` calls, each
/// checked to answer exactly those updates.
async fn missed_then_caught_up(engine: &ChatEngine, hub: UserId, senders: &[(UserId, ChatRef)], missed: u64, calls: u64) -> Result<(f64, f64), EngineError> {
    let token = engine.read_position();
    for n in 0..missed {
        let (sender, chat_ref) = senders[(n % senders.len() as u64) as usize];
        let request = messages::SendMessage { chat_ref: Some(chat_ref), message: message_text(n), ..Default::default() };
        engine.send_message(sender, request).await?;
    }
    engine.flush().await?;
    let samples = latencies(calls, |_| async move {
        match engine.updates_since(hub, token, missed as usize)? {
            CatchUp::Updates { updates, complete: true, .. } if updates.len() as u64 == missed => Ok(()),
            other => Err(EngineError::Corrupt {
                what: "a catch-up in the benchmark".into(),
                expected: format!("{missed} updates, complete"),
                found: format!("{:?}", std::mem::discriminant(&other)),
            }),
        }
    })
    .await?;
    Ok((percentile(&samples, 0.50), percentile(&samples, 0.99)))
}

/// Updates missed, and the chats they are spread over, in the catch-up measured on part
/// 7's large log (the case: 1,000 missed by a user in 1,000 chats, 10M events).
const BIG_LOG_CATCH_UP_MISSED: u64 = 1_000;

/// Part 7: (p50 µs, p99 µs) of a catch-up of [`BIG_LOG_CATCH_UP_MISSED`] updates on the
/// generated log of `users` users, for user 1 with as many DMs (or one per other user, if
/// fewer) opened with users 2 and up.
async fn big_log_catch_up(engine: &ChatEngine, users: u64, calls: u64) -> Result<(f64, f64), EngineError> {
    let hub = UserId(1);
    let peers: Vec<u64> = (2..2 + BIG_LOG_CATCH_UP_MISSED.min(users.saturating_sub(1)).max(1)).collect();
    open_dms(engine, hub, &peers).await?;
    missed_then_caught_up(engine, hub, &dm_senders(hub, peers.into_iter()), BIG_LOG_CATCH_UP_MISSED, calls).await
}

/// Part 8: bytes the process wrote (`wchar` of `/proc/self/io`: WAL, flushes, table files)
/// per `message_sent`, over `sends` sends to a DM followed by a projection flush.
async fn bytes_per_send(engine: &ChatEngine, sends: u64) -> Result<Option<f64>, EngineError> {
    let (sender, peer) = (UserId(PEERS_FIRST), UserId(PEERS_FIRST + 1));
    engine.flush().await?;
    let before = written_bytes();
    for n in 0..sends {
        let request = messages::SendMessage { chat_ref: Some(user_ref(peer)), message: message_text(n), ..Default::default() };
        engine.send_message(sender, request).await?;
    }
    engine.flush().await?;
    Ok(before.zip(written_bytes()).map(|(before, after)| (after - before) as f64 / sends.max(1) as f64))
}

/// `wchar` of `/proc/self/io`: bytes this process passed to write calls so far.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|line| line.strip_prefix("wchar:")).and_then(|value| value.trim().parse().ok())
}

/// Part 6: (p50, p99) of `mark_chat_read` by the user of 1,000 chats, round-robin over them.
async fn mark_read_part(engine: &ChatEngine, runs: usize, calls: u64) -> Result<(f64, f64), EngineError> {
    let reader = UserId(HUB_FIRST + 1);
    let chats = CHAT_COUNTS[1];
    latency_runs(runs, calls, |n| {
        let request = chats::MarkChatRead {
            chat_ref: Some(user_ref(UserId(PEERS_FIRST + n % chats))),
            message_id: u64::MAX,
            read_amount: None,
        };
        async move { engine.mark_chat_read(reader, request).await }
    })
    .await
}

// ---- recovery after a crash ------------------------------------------------------

/// The crashed process: an engine that never flushes by time (by count only, at the
/// default `flush_events_max`), `events` events in its log, then `abort()` (no destructor
/// runs, as after `kill -9`).
pub fn crash_child(dir: &Path, events: u64) -> Result<(), ReplayError> {
    let runtime = multi_thread_runtime()?;
    runtime.block_on(async {
        let mut config = EngineConfig { log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() }, ..EngineConfig::default() };
        config.state.flush_interval_ms = 3_600_000;
        let engine = ChatEngine::open(dir, config).await?;
        upsert_users(&engine, 1..=2 * CRASH_SENDERS).await?;
        let sent = Arc::new(AtomicU64::new(engine.last_position().get()));
        let mut tasks = Vec::new();
        for sender in 0..CRASH_SENDERS {
            let (engine, sent) = (engine.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let (author, peer) = (UserId(1 + 2 * sender), UserId(2 + 2 * sender));
                while sent.fetch_add(1, Ordering::Relaxed) < events.saturating_sub(CRASH_SENDERS) {
                    let request = messages::SendMessage { chat_ref: Some(user_ref(peer)), message: "before the crash".into(), ..Default::default() };
                    engine.send_message(author, request).await?;
                }
                Ok::<(), EngineError>(())
            }));
        }
        for task in tasks {
            joined(task.await)?;
        }
        // With the engine still open: no flush, no close, what a crash leaves.
        std::process::abort();
    })
}

/// Part 8: seconds from opening a directory a crash left with `events` unflushed events
/// until the engine serves, and the events it folded.
fn recovery_after_crash(root: &Path, runtime: &tokio::runtime::Runtime, events: u64) -> Result<(f64, u64), ReplayError> {
    let dir = root.join("crash");
    let exe = std::env::current_exe().map_err(io_error(root))?;
    let status = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(&dir)
        .args(["bench-crash-child", "--events", &events.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(io_error(&dir))?;
    if status.success() {
        return Err(EngineError::Corrupt { what: "the crashed process".into(), expected: "an abort".into(), found: "a clean exit".into() }.into());
    }
    let unflushed = {
        let directory = DataDirectory::open_read_only(&dir)?;
        directory.last_position().get() - directory.checkpoint()?.get()
    };
    let started = Instant::now();
    let engine = runtime.block_on(ChatEngine::open(&dir, EngineConfig::default()))?;
    let seconds = started.elapsed().as_secs_f64();
    drop(engine);
    Ok((seconds, unflushed))
}

/// The child process of part 7's opening (`bench-open-child`): opens an engine on `dir`
/// with the default configuration (folding what its projections lack), closes it, and
/// prints `{"seconds": s, "peak_rss_bytes": n}`. A process of its own, so that its peak
/// RSS holds nothing of the parts before it (heap the allocator kept from them).
pub fn open_child(dir: &Path) -> Result<(), ReplayError> {
    let runtime = multi_thread_runtime()?;
    let opening = Instant::now();
    drop(runtime.block_on(ChatEngine::open(dir, EngineConfig::default()))?);
    let seconds = opening.elapsed().as_secs_f64();
    drop(runtime);
    println!("{}", serde_json::json!({ "seconds": seconds, "peak_rss_bytes": status_bytes("VmHWM:") }));
    Ok(())
}

/// Runs [`open_child`] on `dir` in a child process: its seconds and peak RSS in bytes.
fn open_in_child(dir: &Path) -> Result<(f64, Option<u64>), ReplayError> {
    let exe = std::env::current_exe().map_err(io_error(dir))?;
    let output = std::process::Command::new(exe)
        .arg("--data-dir")
        .arg(dir)
        .arg("bench-open-child")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(io_error(dir))?;
    let found = String::from_utf8_lossy(&output.stdout).into_owned();
    let report: Option<serde_json::Value> = serde_json::from_str(found.trim()).ok();
    let seconds = report.as_ref().and_then(|report| report["seconds"].as_f64());
    match (output.status.success(), seconds) {
        (true, Some(seconds)) => Ok((seconds, report.and_then(|report| report["peak_rss_bytes"].as_u64()))),
        _ => Err(EngineError::Corrupt {
            what: "the opening child process".into(),
            expected: "a clean exit and a line {\"seconds\": .., \"peak_rss_bytes\": ..}".into(),
            found: format!("{} and {found:?}", output.status),
        }
        .into()),
    }
}

/// A multi-threaded tokio runtime with its I/O and time drivers, as every part uses.
fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| EngineError::Io { path: PathBuf::from("<tokio runtime>"), source })
}

// ---- the run ----------------------------------------------------------------------

/// Which parts a run measures (`--only`): all when empty.
fn wants(plan: &BenchPlan, parts: &[u8]) -> bool {
    plan.only.is_empty() || parts.iter().any(|part| plan.only.contains(part))
}

/// What one section of the run measured: its rows and the peak RSS of its parts.
#[derive(Default)]
struct Section {
    rows: Vec<Row>,
    rss: Vec<(String, Option<u64>)>,
}

/// Runs `plan` in a new temporary directory under `parent` (removed afterwards).
/// `progress` gets one line per step.
pub fn run(plan: &BenchPlan, parent: &Path, progress: &(dyn Fn(String) + Sync)) -> Result<BenchReport, ReplayError> {
    let started = Instant::now();
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let temp = tempfile::Builder::new().prefix("osmium-bench-").tempdir_in(parent).map_err(io_error(parent))?;
    let root = temp.path().to_path_buf();
    let mut machine = machine(&root);
    let runtime = multi_thread_runtime()?;
    let mut sections = Vec::new();
    if wants(plan, &[1, 2, 3]) {
        sections.push(append_section(plan, &root, &runtime, progress)?);
    }
    if wants(plan, &[4, 5, 6]) {
        sections.push(chat_section(plan, &root, &runtime, progress)?);
    }
    if wants(plan, &[1, 7, 8]) {
        sections.push(rebuild_section(plan, &root, runtime, progress)?);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut rss = Vec::new();
    for section in sections {
        rows.extend(section.rows);
        rss.extend(section.rss);
    }
    rows.extend(rss.into_iter().map(|(part, peak): (String, Option<u64>)| {
        let value = peak.map_or(f64::NAN, |bytes| bytes as f64 / (1u64 << 20) as f64);
        Row::new(8, format!("peak RSS: {part}"), value, Unit::MiB, "")
    }));
    rows.sort_by_key(|row| row.part);
    machine.load_end = load_average();
    let report = BenchReport { plan: plan.clone(), rows, machine, rss_method: rss_method(), seconds: started.elapsed().as_secs_f64() };
    temp.close().map_err(io_error(&root))?;
    Ok(report)
}

/// Parts 2 and 3, with their raw baselines (part 1).
fn append_section(plan: &BenchPlan, root: &Path, runtime: &tokio::runtime::Runtime, progress: &(dyn Fn(String) + Sync)) -> Result<Section, ReplayError> {
    let mut section = Section::default();
    let mut raw = RawDb::open(&root.join("raw"))?;
    let mut append_rows = Vec::new();
    let mut baseline_rows = Vec::new();
    // Issue #11's targets, per entry of SUBMITTERS (none where it sets none).
    for (durability, events, part, targets) in [
        (Durability::Sync, &plan.sync_events, 2u8, [None, Some(Target::AtLeast(0.7)), Some(Target::AtLeast(0.5))]),
        (Durability::Buffered, &plan.buffered_events, 3u8, [None, None, Some(Target::AtLeast(0.25))]),
    ] {
        let meter = PartRss::start();
        let dir = root.join(format!("append-{durability:?}").to_lowercase());
        let (results, value_bytes) = runtime.block_on(append_part(&dir, &mut raw, durability, events, plan.runs, progress))?;
        section.rss.push((format!("{durability:?} appends and their raw baselines (parts 2, 3)"), meter.finish()));
        let sync = durability == Durability::Sync;
        let wal = if sync { "WAL synced" } else { "WAL not synced" };
        for (result, target) in results.iter().zip(targets) {
            let raw_measure = format!("raw WriteBatch, {wal}, batch {}", result.raw_batch);
            baseline_rows.push(Row::new(
                1,
                raw_measure.clone(),
                result.raw_rate,
                Unit::EventsPerSecond,
                format!("{} puts of real encoded events (mean {value_bytes:.0} B) per run, runs interleaved with part {part}", result.events),
            ));
            let mode = if sync { "durable (Sync)" } else { "Buffered" };
            let plural = if result.submitters == 1 { "" } else { "s" };
            append_rows.push(
                Row::new(
                    part,
                    format!("{mode} append, {} submitter{plural}", result.submitters),
                    result.rate,
                    Unit::EventsPerSecond,
                    format!("{} sends (one event each) per run; group commit reached {:.1} events per commit", result.events, result.batch),
                )
                .against(raw_measure, result.raw_rate)
                .with_optional_target(target),
            );
        }
        if !sync && let (Some(sixteen), Some(most)) = (results.get(1), results.get(2)) {
            append_rows.push(
                Row::new(
                    part,
                    format!("Buffered throughput, {} submitters against {}", most.submitters, sixteen.submitters),
                    most.rate,
                    Unit::EventsPerSecond,
                    "throughput must not fall as load grows (the writer's CPU per event, not the disk, was the limit)",
                )
                .against(format!("Buffered append, {} submitters", sixteen.submitters), sixteen.rate)
                .with_target(Target::AtLeast(1.0)),
            );
        }
    }

    section.rows.extend(baseline_rows);
    section.rows.extend(append_rows);
    Ok(section)
}

/// Parts 4, 5 and 6 on one engine (Buffered, to see the engine's own cost rather than the
/// disk's sync latency; part 6 adds Sync).
fn chat_section(plan: &BenchPlan, root: &Path, runtime: &tokio::runtime::Runtime, progress: &(dyn Fn(String) + Sync)) -> Result<Section, ReplayError> {
    let mut section = Section::default();
    let chat_dir = root.join("chat");
    let meter = PartRss::start();
    let buffered = EngineConfig { log: LogConfig { durability: Durability::Buffered, ..LogConfig::default() }, ..EngineConfig::default() };
    let (sends, lists, marks, large, written, catch_ups) = runtime.block_on(async {
        let engine = ChatEngine::open(&chat_dir, buffered.clone()).await?;
        progress(format!("creating {} users", GROUP_SIZES[3]));
        upsert_users(&engine, PEERS_FIRST..=PEERS_FIRST + GROUP_SIZES[3]).await?;
        upsert_users(&engine, HUB_FIRST..=HUB_FIRST + CHAT_COUNTS.len() as u64).await?;
        let sends = send_part(&engine, plan, progress).await?;
        let lists = get_chats_part(&engine, plan, progress).await?;
        let large = large_groups_part(&engine, plan, progress).await?;
        let written = bytes_per_send(&engine, plan.sends).await?;
        progress("mark_chat_read (Buffered)".into());
        let marks = mark_read_part(&engine, plan.runs, plan.mark_read_calls).await?;
        let catch_ups = (catch_up_part(&engine, plan, progress).await?, engine.last_position().get());
        Ok::<_, ReplayError>((sends, lists, marks, large, written, catch_ups))
    })?;
    let marks_sync = runtime.block_on(async {
        progress("mark_chat_read (Sync)".into());
        let sync = EngineConfig { log: LogConfig { durability: Durability::Sync, ..LogConfig::default() }, ..EngineConfig::default() };
        let engine = ChatEngine::open(&chat_dir, sync).await?;
        Ok::<_, ReplayError>(mark_read_part(&engine, plan.runs, plan.mark_read_sync_calls).await?)
    })?;
    section.rss.push(("send_message, get_chats, mark_chat_read (parts 4 to 6)".into(), meter.finish()));
    let dm_cost = sends.first().map_or(f64::NAN, |(_, cost)| *cost);
    let send_rows: Vec<Row> = sends
        .iter()
        .map(|&(size, cost)| {
            let what = if size == 2 { "a DM".to_owned() } else { format!("a group of {} members", thousands(size as f64)) };
            let row = Row::new(
                4,
                format!("send_message to {what}"),
                cost,
                Unit::Micros,
                format!("{} sequential sends per run, Buffered, with client_id, no subscribers", plan.sends),
            )
            .against("send to a DM", dm_cost);
            if size == GROUP_SIZES[1] || size == GROUP_SIZES[3] { row.with_target(Target::AtMost(2.0)) } else { row }
        })
        .collect();
    let p99_small = lists.first().map_or(f64::NAN, |(_, _, p99)| *p99);
    let p50_small = lists.first().map_or(f64::NAN, |(_, p50, _)| *p50);
    let mut list_rows = Vec::new();
    let p99_mid = lists.get(1).map_or(f64::NAN, |(_, _, p99)| *p99);
    for &(count, p50, p99) in &lists {
        let shown = (count as usize).min(GET_CHATS_LIMIT as usize);
        let mut note = format!("{} calls per run; DMs; page of {shown} conversations", plan.get_chats_calls);
        if count == CHAT_COUNTS[2] {
            note.push_str(&format!("; p99 {:.2}x that at 1,000 chats (same page size)", p99 / p99_mid));
        }
        let label = thousands(count as f64);
        list_rows.push(Row::new(5, format!("get_chats p50, user in {label} chats"), p50, Unit::Micros, format!("{} calls per run; DMs; page of {shown} conversations", plan.get_chats_calls)).against("p50 at 10 chats", p50_small));
        let p99_row = Row::new(5, format!("get_chats p99, user in {label} chats"), p99, Unit::Micros, note).against("p99 at 10 chats", p99_small);
        list_rows.push(if count == CHAT_COUNTS[2] { p99_row.with_target(Target::AtMost(1.5)) } else { p99_row });
    }
    let dms_p99 = lists.get(1).map_or(f64::NAN, |(_, _, p99)| *p99);
    list_rows.push(
        Row::new(
            5,
            format!("get_chats p99, user in {} groups of {LARGE_GROUP_MEMBERS} members", thousands(CHAT_COUNTS[1] as f64)),
            large.get_chats.1,
            Unit::Micros,
            format!("{} calls per run; groups above the fan-out limit (placed by their chat record at query time); page of 50; p50 {:.1} µs", plan.get_chats_calls, large.get_chats.0),
        )
        .against("p99, user in 1,000 DMs", dms_p99)
        .with_target(Target::AtMost(1.5)),
    );
    let (catch_ups, log_events) = catch_ups;
    let catch_up_small = catch_ups.first().map_or(f64::NAN, |(_, p50, _)| *p50);
    let catch_up_small_p99 = catch_ups.first().map_or(f64::NAN, |(_, _, p99)| *p99);
    for &(missed, p50, p99) in &catch_ups {
        let note = format!(
            "{} calls; user in {} DMs, the updates missed spread across them; log of {} events (part 7 measures 1,000 missed on its large log); flushed; p99 {:.1} µs",
            plan.catch_up_calls,
            thousands(CHAT_COUNTS[1] as f64),
            thousands(log_events as f64),
            p99,
        );
        list_rows.push(
            Row::new(5, format!("updates_since p50, {} updates missed", thousands(missed as f64)), p50, Unit::Micros, note)
                .against(format!("p50 at {} missed", thousands(plan.catch_up_missed[0] as f64)), catch_up_small),
        );
        if missed == plan.catch_up_missed[1] {
            list_rows.push(Row::new(
                5,
                format!("updates_since p99, {} updates missed", thousands(missed as f64)),
                p99,
                Unit::Micros,
                format!("{} calls; user in {} DMs; log of {} events (part 7: on its large log)", plan.catch_up_calls, thousands(CHAT_COUNTS[1] as f64), thousands(log_events as f64)),
            )
            .against(format!("p99 at {} missed", thousands(plan.catch_up_missed[0] as f64)), catch_up_small_p99));
        }
    }
    list_rows.push(
        Row::new(
            5,
            format!(
                "updates_since p50, {} updates missed, user in {} groups of {LARGE_GROUP_MEMBERS} members",
                thousands(plan.catch_up_missed[0] as f64),
                thousands(CHAT_COUNTS[1] as f64)
            ),
            large.catch_up.0,
            Unit::Micros,
            format!(
                "{} calls; each group has its own catch-up sequence (more than 32 members), read with a seek per group; flushed; p99 {:.1} µs",
                plan.catch_up_calls, large.catch_up.1
            ),
        )
        .against(format!("p50 at {} missed, user in {} DMs", thousands(plan.catch_up_missed[0] as f64), thousands(CHAT_COUNTS[1] as f64)), catch_up_small),
    );
    let mark_note = |calls: u64| format!("{calls} calls per run, user in 1,000 chats, round-robin");
    let mark_rows = vec![
        Row::new(6, "mark_chat_read p50 (Buffered)", marks.0, Unit::Micros, mark_note(plan.mark_read_calls)),
        Row::new(6, "mark_chat_read p99 (Buffered)", marks.1, Unit::Micros, mark_note(plan.mark_read_calls)),
        Row::new(6, "mark_chat_read p50 (Sync)", marks_sync.0, Unit::Micros, mark_note(plan.mark_read_sync_calls)),
        Row::new(6, "mark_chat_read p99 (Sync)", marks_sync.1, Unit::Micros, mark_note(plan.mark_read_sync_calls)),
    ];

    section.rows.extend(send_rows);
    section.rows.extend(list_rows);
    section.rows.extend(mark_rows);
    progress("recovery after a crash".into());
    let (recovery_seconds, unflushed) = recovery_after_crash(root, runtime, plan.crash_events)?;
    section.rows.push(
        Row::new(
            8,
            "recovery after a crash at the default flush limits (open until serving)",
            recovery_seconds * 1_000.0,
            Unit::Millis,
            format!("a process aborted with {unflushed} events past the flushed checkpoint (default flush_events_max: 20,000); ChatEngine::open folds and flushes them"),
        )
        .against("1 s", 1_000.0)
        .with_target(Target::AtMost(1.0)),
    );
    section.rows.push(Row::new(
        8,
        "bytes written per message_sent",
        written.unwrap_or(f64::NAN),
        Unit::Bytes,
        format!("wchar of /proc/self/io over {} sends to a DM and a projection flush (WAL of the log and of the flush; table files if RocksDB wrote any)", plan.sends),
    ));
    Ok(section)
}

/// Part 7: generate the log, then iterate it raw (a part 1 baseline) and rebuild it; part
/// 8's sizes.
fn rebuild_section(plan: &BenchPlan, root: &Path, runtime: tokio::runtime::Runtime, progress: &(dyn Fn(String) + Sync)) -> Result<Section, ReplayError> {
    let mut section = Section::default();
    let rebuild_dir = root.join("rebuild");
    let meter = PartRss::start();
    progress(format!("generating a log of {} events", thousands(plan.rebuild_events as f64)));
    let generated = runtime.block_on(generate_log(&rebuild_dir, plan.rebuild_events))?;
    section.rss.push(("generating the log (part 7)".into(), meter.finish()));
    drop(runtime);

    let meter = PartRss::start();
    let mut iterate_rates = Vec::new();
    for run in 0..plan.rebuild_runs {
        progress(format!("raw iteration + decode, run {}/{}", run + 1, plan.rebuild_runs));
        let (events, seconds) = raw_iterate(&rebuild_dir)?;
        iterate_rates.push(events as f64 / seconds.max(1e-9));
    }
    section.rss.push(("raw iteration + decode (part 1)".into(), meter.finish()));
    // The generated log was written around an engine: its projections are empty, so an
    // engine opening it folds every event, with the default memory budget.
    progress(format!("opening an engine on it in a child process (folds all {} events)", thousands(plan.rebuild_events as f64)));
    if let Some(keep) = std::env::var_os("OSMIUM_BENCH_KEEP") { let _ = std::process::Command::new("cp").arg("-a").arg(&rebuild_dir).arg(keep).status(); }
    let (open_seconds, open_rss) = open_in_child(&rebuild_dir)?;
    let budget_mib = StateConfig::default().state_bytes_max as f64 / (1u64 << 20) as f64;
    let meter = PartRss::start();
    let mut rebuild_rates = Vec::new();
    let mut rebuilt_events = 0;
    let mut rebuilt_slot = ProjectionSlot::A;
    for run in 0..plan.rebuild_runs {
        progress(format!("rebuild, run {}/{}", run + 1, plan.rebuild_runs));
        let mut directory = DataDirectory::open_exclusive(&rebuild_dir)?;
        let rebuild_started = Instant::now();
        let report = directory.rebuild(RebuildOptions::default(), &mut |_, _| {})?;
        rebuild_rates.push(report.events as f64 / rebuild_started.elapsed().as_secs_f64().max(1e-9));
        rebuilt_events = report.events;
        rebuilt_slot = report.slot;
    }
    section.rss.push(("rebuild (part 7)".into(), meter.finish()));
    progress("the rebuilt projections written raw as table files (the rebuild's floor)".into());
    let scratch = root.join("rebuild-output-raw");
    let raw_output = write_slot_raw(&rebuild_dir, rebuilt_slot, &scratch)?;
    std::fs::remove_dir_all(&scratch).map_err(io_error(&scratch))?;
    let disk_bytes = directory_bytes(&rebuild_dir)?;
    let big_missed = thousands(BIG_LOG_CATCH_UP_MISSED as f64);
    progress(format!("catch-up of {big_missed} updates on the {}-event log", thousands(rebuilt_events as f64)));
    let catch_up_runtime = multi_thread_runtime()?;
    let (big_p50, big_p99) = catch_up_runtime.block_on(async {
        let engine = ChatEngine::open(&rebuild_dir, EngineConfig::default()).await?;
        big_log_catch_up(&engine, generated.users, plan.catch_up_calls).await.map_err(ReplayError::from)
    })?;
    drop(catch_up_runtime);
    let raw_iterate_rate = median(&iterate_rates);
    let events_label = thousands(rebuilt_events as f64);
    section.rows.push(Row::new(
        1,
        "raw iteration + prost decode of the log",
        raw_iterate_rate,
        Unit::EventsPerSecond,
        format!("{events_label} events, read-only open of the directory of part 7"),
    ));
    let rebuild_rows = vec![
        Row::new(7, format!("rebuild of {events_label} events"), median(&rebuild_rates), Unit::EventsPerSecond, format!("DataDirectory::rebuild, default batches; {} run(s)", plan.rebuild_runs))
            .against("raw iteration + decode", raw_iterate_rate)
            .with_target(Target::AtLeast(0.5)),
        Row::new(
            7,
            format!("the rebuilt projections of those {events_label} events written raw (a floor for any rebuild)"),
            rebuilt_events as f64 / raw_output.seconds.max(1e-9),
            Unit::EventsPerSecond,
            format!(
                "{:.1} keys and {:.0} bytes of records per event, as sorted table files ingested, one thread, no fold; read beforehand, untimed",
                raw_output.keys as f64 / rebuilt_events.max(1) as f64,
                raw_output.bytes as f64 / rebuilt_events.max(1) as f64,
            ),
        )
        .against("raw iteration + decode", raw_iterate_rate),
        Row::new(
            7,
            format!("generating those {events_label} events"),
            generated.rate,
            Unit::EventsPerSecond,
            format!(
                "Buffered EventLog appends of {GENERATE_APPEND_EVENTS} message_sent events, {} groups of 2 to 8 members; {:.1} s, once",
                generated.chats, generated.seconds
            ),
        ),
    ];

    section.rows.extend(rebuild_rows);
    for (percentile_name, value) in [("p50", big_p50), ("p99", big_p99)] {
        section.rows.push(Row::new(
            7,
            format!("updates_since {percentile_name}, {big_missed} updates missed, on the {events_label}-event log"),
            value,
            Unit::Micros,
            format!(
                "{} calls; user 1 of this log in up to {big_missed} DMs (opened after the rebuilds) and the log's groups, the updates missed spread across the DMs; flushed",
                plan.catch_up_calls
            ),
        ));
    }
    section.rows.push(Row::new(
        7,
        format!("opening an engine on the {events_label} events (all folded at open)"),
        rebuilt_events as f64 / open_seconds.max(1e-9),
        Unit::EventsPerSecond,
        format!(
            "{open_seconds:.1} s in a child process; the recovery path (fold, flush every flush_events_max = {} events) with the default budget",
            thousands(StateConfig::default().flush_events_max as f64)
        ),
    ));
    let rocksdb_mib = (osmium_engine::directory::ROCKSDB_MEMORY_BYTES_MAX >> 20) as f64;
    let rss_bound_mib = budget_mib + rocksdb_mib + RSS_ABOVE_BOUNDS_MIB;
    section.rows.push(
        Row::new(
            8,
            format!("peak RSS: opening the {events_label}-event directory of part 7 ({} users), default budget", thousands((rebuilt_events / GENERATE_EVENTS_PER_USER) as f64)),
            open_rss.map_or(f64::NAN, |bytes| bytes as f64 / (1u64 << 20) as f64),
            Unit::MiB,
            format!(
                "VmHWM of a child process that only opens it, against state_bytes_max {budget_mib:.0} MiB + RocksDB {rocksdb_mib:.0} MiB (memtables at most {} MiB of it) + {RSS_ABOVE_BOUNDS_MIB:.0} MiB (allocator, transients, the unflushed records of one recovery flush)",
                osmium_engine::directory::MEMTABLES_BYTES_MAX >> 20,
            ),
        )
        .against(format!("{rss_bound_mib:.0} MiB"), rss_bound_mib)
        .with_target(Target::AtMost(1.0)),
    );
    section.rows.push(Row::new(
        8,
        "bytes on disk per event",
        disk_bytes as f64 / rebuilt_events.max(1) as f64,
        Unit::BytesPerEvent,
        format!(
            "whole data directory of part 7 after its rebuilds (log, stream index, projections, WAL): {:.0} MiB",
            disk_bytes as f64 / (1u64 << 20) as f64
        ),
    ));
    section.rows.push(Row::new(8, "encoded event (message_sent envelope)", generated.mean_event_bytes, Unit::Bytes, "mean protobuf size in the log of part 7"));
    Ok(section)
}

struct Generated {
    rate: f64,
    seconds: f64,
    chats: u64,
    /// Users 1 to `users` have directory entries.
    users: u64,
    mean_event_bytes: f64,
}

/// Part 7's log: `events` events (groups, then `message_sent` in appends of
/// [`GENERATE_APPEND_EVENTS`]) through the event log in `Buffered` mode.
async fn generate_log(dir: &Path, events: u64) -> Result<Generated, ReplayError> {
    let config = LogConfig { durability: Durability::Buffered, ..LogConfig::default() };
    let log = Arc::new(EventLog::open(dir, config)?);
    let started = Instant::now();
    // One user per GENERATE_EVENTS_PER_USER events (1M users in a 10M-event log), in
    // appends of GENERATE_APPEND_EVENTS directory entries.
    let users = (events / GENERATE_EVENTS_PER_USER).max(10);
    for first in (1..=users).step_by(GENERATE_APPEND_EVENTS) {
        let last = (first + GENERATE_APPEND_EVENTS as u64 - 1).min(users);
        for user in first..=last {
            let upserted = Event::UserUpserted(events::UserUpserted {
                user: Some(types::User { id: user, name: format!("user {user}"), ..Default::default() }),
            });
            log.append(StreamId::User(UserId(user)), ExpectedVersion::Any, UserId(user), vec![upserted], None).await?;
        }
    }
    let chat_count = (events / 1_000).clamp(1, 10_000);
    // Chat and message ids from one counter above every user id: increasing in each chat,
    // because each chat is appended to by one task only.
    let ids = Arc::new(AtomicU64::new(users + 1_000_000));
    let mut chats = Vec::with_capacity(chat_count as usize);
    for index in 0..chat_count {
        let owner = UserId(1 + (index * 13) % users);
        let members = (1..2 + index % 7).map(|offset| 1 + (owner.get() + offset) % users).collect();
        let chat = ChatId(ids.fetch_add(1, Ordering::Relaxed));
        create_group_event(&log, chat, owner, members).await?;
        chats.push((chat, owner));
    }
    let messages = events.saturating_sub(chat_count + users);
    let appends = messages.div_ceil(GENERATE_APPEND_EVENTS as u64);
    let chats = Arc::new(chats);
    const TASKS: u64 = 4;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (log, chats, ids) = (log.clone(), chats.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            // Task `task` makes appends task, task + TASKS, ...; append n goes to chat n % chats,
            // so with as many chats as a multiple of TASKS each chat has one task.
            let mut append = task;
            while append < appends {
                let first = append * GENERATE_APPEND_EVENTS as u64;
                let count = (messages - first).min(GENERATE_APPEND_EVENTS as u64) as usize;
                let slot = (append / TASKS) % (chats.len() as u64 / TASKS).max(1) * TASKS + task;
                let (chat, author) = chats[(slot % chats.len() as u64) as usize];
                append_messages(&log, chat, author, first, count, &ids).await?;
                append += TASKS;
            }
            Ok::<(), EngineError>(())
        }));
    }
    for task in tasks {
        joined(task.await)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sample = stored_values(log.reader(), Position(chat_count + 1), 1_024)?;
    let mean_event_bytes = sample.iter().map(Vec::len).sum::<usize>() as f64 / sample.len().max(1) as f64;
    let total = log.last_position().get();
    Ok(Generated { rate: total as f64 / seconds.max(1e-9), seconds, chats: chat_count, users, mean_event_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
    }
}
