//! `osmium-replay`: see `osmium-replay --help`.

use clap::{Parser, Subcommand};

/// mimalloc: the engine allocates records and effects on its state machine thread and
/// frees many of them on others (the writer, the fan-out), a pattern glibc's allocator
/// handles poorly (arena locks, consolidation).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use osmium_engine::EngineError;
use osmium_replay::ReplayError;
use osmium_engine::maintenance::{DataDirectory, RebuildOptions};
use osmium_projections::query::{self, ChatListPage};
use osmium_projections::records::{load_chat, load_member, load_message};
use osmium_proto::ids::{ChatId, Position, UserId};
use osmium_replay::bench::{self, BenchPlan};
use osmium_replay::demo::{self, DemoPlan};
use osmium_replay::progress::Reporter;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Operator tool for an osmium-state data directory: rebuild and verify the projections
/// from the event log, check the log, inspect it, run a demo workload, and benchmark the
/// engine against raw RocksDB.
///
/// Exit codes: 0 success; 1 `verify` or `check` found a difference or a problem;
/// 2 an error (bad arguments, a directory that is missing, locked or not an engine's,
/// a storage failure).
#[derive(Debug, Parser)]
#[command(name = "osmium-replay", version, after_help = "Example: osmium-replay --data-dir ./data verify")]
struct Cli {
    /// The engine's data directory (a RocksDB directory).
    #[arg(long, global = true, default_value = "./data")]
    data_dir: PathBuf,
    /// Machine-readable output: one JSON document (JSON lines for `dump`); no progress.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fold the whole log into the unused projection slot, then switch to it atomically.
    ///
    /// Needs the directory to itself: refuses while an engine runs on it. Interrupted
    /// (Ctrl-C, kill -9, disk full), it leaves the served projections untouched; running
    /// it again starts over, or resumes with --from. Each batch is written as sorted table
    /// files that wait in <data-dir>/rebuild-ingest/ until RocksDB has taken them in (a
    /// resume finishes a batch left there). Prints the rate (events/s) and the total time.
    #[command(after_help = "Example: osmium-replay --data-dir ./data rebuild")]
    Rebuild {
        /// Replace only this projection table (e.g. chatid_userid_member); the others keep
        /// their served contents. The whole log is still folded: tables depend on each other.
        #[arg(long, value_parser = parse_table)]
        projection: Option<osmium_projections::Table>,
        /// Resume an interrupted rebuild at this position (the error of a wrong value says
        /// the right one). Without it, a rebuild starts over.
        #[arg(long)]
        from: Option<u64>,
        /// Events folded and written per batch (bounds memory; smaller = finer progress).
        #[arg(long, default_value_t = osmium_engine::maintenance::REBUILD_BATCH_EVENTS)]
        batch_events: usize,
    },
    /// Fold the log independently in memory and compare with the served projections.
    ///
    /// Exit 0 when they match; exit 1 and print the first differences (table, key,
    /// expected, found) when they do not. Works while an engine runs (read-only).
    #[command(after_help = "Example: osmium-replay --data-dir ./data verify --limit 20")]
    Verify {
        /// Differences to print at most.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Check the log's integrity: gapless positions, every record decodes, the per-chat
    /// index agrees with the log, the checkpoint is not ahead of the log. Exit 1 on a problem.
    #[command(after_help = "Example: osmium-replay --data-dir ./data check")]
    Check {
        /// Problems to print at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Back the data directory up into a new directory: a point-in-time copy of the log
    /// and the projections, itself a data directory that `check` and `verify` read.
    ///
    /// Works while an engine runs on --data-dir (then it copies a read-only view; with
    /// the directory free it takes a RocksDB checkpoint). Refuses a target that exists and
    /// is not empty. Prints the last position the backup holds.
    #[command(after_help = "Example: osmium-replay --data-dir ./data backup --to /backups/osmium-2026-11-30")]
    Backup {
        /// The backup's directory: new, or empty (its parent must exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into --data-dir, which must not exist or be empty.
    ///
    /// Copies the backup's files, then checks that the copy opens and holds the backup's
    /// last position. Start the engine on --data-dir afterwards.
    #[command(after_help = "Example: osmium-replay --data-dir ./data-restored restore --from /backups/osmium-2026-11-30")]
    Restore {
        /// The backup (a directory written by `backup`).
        #[arg(long)]
        from: PathBuf,
    },
    /// Events by kind, records per projection table, positions, bytes on disk per column family.
    #[command(after_help = "Example: osmium-replay --data-dir ./data stats --json")]
    Stats,
    /// Print events as readable lines (or JSON lines with --json).
    #[command(after_help = "Example: osmium-replay --data-dir ./data dump --chat 912899 --kind message_sent --limit 20")]
    Dump {
        /// First position to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Events to print at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only events of this chat.
        #[arg(long)]
        chat: Option<u64>,
        /// Only events of this kind (e.g. message_sent, chat_marked_read).
        #[arg(long)]
        kind: Option<String>,
    },
    /// A user's chat list as `get_chats` returns it: unread counts and last messages.
    #[command(after_help = "Example: osmium-replay --data-dir ./data chats --user 1000001 --limit 10")]
    Chats {
        /// The user.
        #[arg(long)]
        user: u64,
        /// Conversations to print at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Drive a realistic workload through the engine, then rebuild and verify.
    ///
    /// DMs and groups of mixed sizes (two with up to 2,000 members when there are enough
    /// users), Zipf-skewed activity, reads, drafts, mutes, edits, deletions, invites
    /// created, used, expired and deleted, and members leaving. The script is
    /// deterministic for a seed. The defaults take about a minute on 2 cores.
    #[command(after_help = "Example: osmium-replay --data-dir ./data demo --seed 7 --users 2000 --messages 50000")]
    Demo {
        /// Seed of every random choice.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Users in the directory.
        #[arg(long, default_value_t = 2_000)]
        users: u64,
        /// Messages to send (reads, drafts, invites... are added in proportion).
        #[arg(long, default_value_t = 40_000)]
        messages: u64,
        /// Commands in flight at once.
        #[arg(long, default_value_t = 32)]
        workers: usize,
    },
    /// Measure the engine against raw RocksDB on the same disk, in one run (BENCHMARKS.md).
    ///
    /// Works in a new temporary directory (under --dir; --data-dir is not used) that is
    /// removed afterwards. Prints one Markdown table, ready to paste: raw RocksDB baselines,
    /// durable and buffered append throughput with 1, 16 and 256 submitters, send cost
    /// against group size, get_chats and mark_chat_read latencies, the rebuild rate, peak
    /// RSS per part and bytes on disk per event, every row with its ratio to its baseline.
    /// Numbers are reported, never asserted. Progress goes to stderr.
    #[command(after_help = "Example: osmium-replay bench --quick > bench.md")]
    Bench {
        /// The short plan (1M-event rebuild, 3 runs; under 2 minutes on 2 cores) instead of
        /// the full one (10M-event rebuild, 5 runs).
        #[arg(long)]
        quick: bool,
        /// Directory in which to create the temporary one (chooses the disk measured).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Runs of each measurement, whose median is printed (default: 3 quick, 5 full).
        #[arg(long)]
        runs: Option<usize>,
        /// Events of the log that is rebuilt (default: 1M quick, 10M full).
        #[arg(long, hide = true)]
        events: Option<u64>,
        /// A tiny plan that prints every row in seconds (for tests; numbers meaningless).
        #[arg(long, hide = true)]
        smoke: bool,
        /// Only these parts, comma-separated (2,3: appends; 4,5,6: sends, chat lists,
        /// reads; 7: rebuild), each with the baselines it is compared with.
        #[arg(long, value_delimiter = ',')]
        only: Vec<u8>,
    },
    /// (For `bench`: the process it crashes.) Sends `events` messages into the data
    /// directory without flushing the projections, then aborts.
    #[command(hide = true)]
    BenchCrashChild {
        /// Events in the log when the process aborts.
        #[arg(long)]
        events: u64,
    },
    /// (For `bench`: the process whose peak RSS is the opening's.) Opens an engine on the
    /// data directory with the default configuration, closes it, and prints its seconds
    /// and peak RSS as JSON.
    #[command(hide = true)]
    BenchOpenChild,
}

/// For a damaged table file of `dir`: its column family and what to do about it. `None`
/// for other errors, and where the directory does not open far enough to list its files.
fn damaged_column_family(dir: &Path, err: &ReplayError) -> Option<(String, &'static str)> {
    let (ReplayError::Engine(EngineError::CorruptFile { path, .. })
    | ReplayError::Open(osmium_engine::OpenError::Engine(EngineError::CorruptFile { path, .. }))) = err
    else {
        return None;
    };
    let directory = DataDirectory::open_read_only(dir).ok()?;
    let file = directory.table_files().ok()?.into_iter().find(|file| &file.path == path)?;
    let projection = osmium_projections::Table::ALL
        .iter()
        .any(|table| osmium_engine::schema::ProjectionSlot::ALL.iter().any(|slot| slot.column_family(*table) == file.column_family));
    let advice = if projection {
        "projections: `osmium-replay rebuild` makes them anew from the log"
    } else {
        "the log: restore the data directory from a backup (`osmium-replay restore`)"
    };
    Some((file.column_family, advice))
}

/// A run's outcome: success, a difference found, or an error.
enum Outcome {
    Clean,
    Differences,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(1),
        Err(err) => {
            let damaged = damaged_column_family(&cli.data_dir, &err);
            if cli.json {
                match damaged {
                    Some((column_family, _)) => println!("{}", json!({ "error": err.to_string(), "column_family": column_family })),
                    None => println!("{}", json!({ "error": err.to_string() })),
                }
            } else {
                eprintln!("error: {err}");
                if let Some((column_family, advice)) = damaged {
                    eprintln!("the damaged file holds column family {column_family}: {advice}");
                }
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<Outcome, ReplayError> {
    let dir = cli.data_dir.as_path();
    match &cli.command {
        Command::Rebuild { projection, from, batch_events } => {
            let options = RebuildOptions { batch_events: *batch_events, from: from.map(Position), only: *projection };
            rebuild(dir, options, cli.json).map(|()| Outcome::Clean)
        }
        Command::Verify { limit } => verify(dir, *limit, cli.json),
        Command::Check { limit } => check(dir, *limit, cli.json),
        Command::Backup { to } => backup(dir, to, cli.json).map(|()| Outcome::Clean),
        Command::Restore { from } => restore(from, dir, cli.json).map(|()| Outcome::Clean),
        Command::Stats => stats(dir, cli.json).map(|()| Outcome::Clean),
        Command::Dump { from, limit, chat, kind } => dump(dir, *from, *limit, *chat, kind.as_deref(), cli.json),
        Command::Chats { user, limit } => chats(dir, UserId(*user), *limit, cli.json),
        Command::Bench { quick, dir, runs, events, smoke, only } => {
            let mut plan = if *smoke {
                BenchPlan::smoke()
            } else if *quick {
                BenchPlan::quick()
            } else {
                BenchPlan::full()
            };
            if let Some(runs) = runs {
                plan.runs = (*runs).max(1);
            }
            if let Some(events) = events {
                plan.rebuild_events = *events;
            }
            plan.only.clone_from(only);
            let parent = dir.clone().unwrap_or_else(std::env::temp_dir);
            bench(&plan, &parent, cli.json).map(|()| Outcome::Clean)
        }
        Command::BenchCrashChild { events } => bench::crash_child(dir, *events).map(|()| Outcome::Clean),
        Command::BenchOpenChild => bench::open_child(dir).map(|()| Outcome::Clean),
        Command::Demo { seed, users, messages, workers } => {
            let plan = DemoPlan { seed: *seed, users: *users, messages: *messages, workers: *workers };
            demo(dir, &plan, cli.json)
        }
    }
}

fn parse_table(name: &str) -> Result<osmium_projections::Table, String> {
    osmium_projections::Table::from_name(name).ok_or_else(|| {
        let names: Vec<_> = osmium_projections::Table::ALL.iter().map(|table| table.name()).collect();
        format!("unknown projection {name:?}; one of: {}", names.join(", "))
    })
}

fn rebuild(dir: &Path, options: RebuildOptions, json_output: bool) -> Result<(), ReplayError> {
    let mut directory = DataDirectory::open_exclusive(dir)?;
    let mut reporter = Reporter::new("rebuild", "events", json_output);
    let started = Instant::now();
    let report = directory.rebuild(options, &mut |done, total| reporter.update(done, total))?;
    reporter.finish();
    let seconds = started.elapsed().as_secs_f64();
    let rate = report.events as f64 / seconds.max(1e-9);
    if json_output {
        println!("{}", json!({ "events": report.events, "seconds": seconds, "events_per_second": rate }));
    } else {
        println!("rebuilt projections from {} events in {seconds:.2}s ({rate:.0} events/s); now serving them", report.events);
    }
    Ok(())
}

fn verify(dir: &Path, limit: usize, json_output: bool) -> Result<Outcome, ReplayError> {
    let directory = DataDirectory::open_read_only(dir)?;
    let mut reporter = Reporter::new("verify", "events", json_output);
    let (checkpoint, differences) = directory.verify(limit, &mut |done, total| reporter.update(done, total))?;
    reporter.finish();
    let events = checkpoint.get();
    let logged = directory.last_position().get();
    if json_output {
        let listed: Vec<_> = differences
            .iter()
            .map(|d| json!({ "table": d.table.name(), "key": d.key, "field": d.field, "expected": d.expected, "found": d.found }))
            .collect();
        println!(
            "{}",
            json!({ "events": events, "checkpoint": events, "log_last_position": logged, "matches": differences.is_empty(), "differences": listed })
        );
    } else if differences.is_empty() {
        println!("projections match a fold of the log up to their checkpoint ({events} of {logged} events)");
    } else {
        println!("projections differ from a fold of the log up to their checkpoint ({events} of {logged} events); first differences:");
        for difference in &differences {
            println!(
                "  {} {} field {}: expected {}, found {}",
                difference.table.name(),
                difference.key,
                difference.field,
                difference.expected,
                difference.found
            );
        }
    }
    Ok(if differences.is_empty() { Outcome::Clean } else { Outcome::Differences })
}

fn check(dir: &Path, limit: usize, json_output: bool) -> Result<Outcome, ReplayError> {
    let directory = DataDirectory::open_read_only(dir)?;
    let mut reporter = Reporter::new("check", "events", json_output);
    let problems = directory.check(limit, &mut |done, total| reporter.update(done, total))?;
    reporter.finish();
    let events = directory.last_position().get();
    if json_output {
        let listed: Vec<_> = problems.iter().map(|p| json!({ "location": p.location, "problem": p.problem })).collect();
        println!("{}", json!({ "events": events, "ok": problems.is_empty(), "problems": listed }));
    } else if problems.is_empty() {
        println!("log is intact: {events} events, gapless, all decode, index and checkpoint agree; every file reads back");
    } else {
        println!("log has problems:");
        for problem in &problems {
            println!("  {}: {}", problem.location, problem.problem);
        }
    }
    Ok(if problems.is_empty() { Outcome::Clean } else { Outcome::Differences })
}

fn backup(dir: &Path, to: &Path, json_output: bool) -> Result<(), ReplayError> {
    let started = Instant::now();
    let report = osmium_engine::backup::backup(dir, to)?;
    print_copy("backed up", dir, to, &report, started, json_output);
    Ok(())
}

fn restore(from: &Path, dir: &Path, json_output: bool) -> Result<(), ReplayError> {
    let started = Instant::now();
    let report = osmium_engine::backup::restore(from, dir)?;
    print_copy("restored", from, dir, &report, started, json_output);
    Ok(())
}

fn print_copy(verb: &str, from: &Path, to: &Path, report: &osmium_engine::backup::BackupReport, started: Instant, json_output: bool) {
    let seconds = started.elapsed().as_secs_f64();
    if json_output {
        println!(
            "{}",
            json!({
                "from": from.display().to_string(),
                "to": to.display().to_string(),
                "last_position": report.last_position.get(),
                "method": report.method.name(),
                "files": report.files,
                "bytes": report.bytes,
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "{verb} {} into {}: events 1..={}, {} files, {:.1} MiB, {} in {seconds:.2}s",
            from.display(),
            to.display(),
            report.last_position,
            report.files,
            report.bytes as f64 / (1024.0 * 1024.0),
            report.method.name().replace('_', " ")
        );
    }
}

fn stats(dir: &Path, json_output: bool) -> Result<(), ReplayError> {
    let directory = DataDirectory::open_read_only(dir)?;
    let stats = directory.stats()?;
    let total_bytes: u64 = stats.bytes_by_column_family.values().sum();
    if json_output {
        println!(
            "{}",
            json!({
                "first_position": stats.first_position,
                "last_position": stats.last_position,
                "events_by_kind": stats.events_by_kind,
                "records_by_table": stats.records_by_table,
                "bytes_by_column_family": stats.bytes_by_column_family,
                "bytes_total": total_bytes,
            })
        );
        return Ok(());
    }
    println!("positions {}..={}", stats.first_position, stats.last_position);
    println!("events by kind:");
    for (kind, count) in &stats.events_by_kind {
        println!("  {kind:<26} {count:>10}");
    }
    println!("projection records (chats, members, messages, invites, users, ...):");
    for (table, count) in &stats.records_by_table {
        println!("  {table:<34} {count:>10}");
    }
    println!("bytes on disk by column family (SST files + memtables):");
    for (name, bytes) in stats.bytes_by_column_family.iter().filter(|(_, bytes)| **bytes > 0) {
        println!("  {name:<34} {bytes:>12}");
    }
    println!("  {:<34} {total_bytes:>12}", "total");
    Ok(())
}

fn dump(
    dir: &Path,
    from: u64,
    limit: usize,
    chat: Option<u64>,
    kind: Option<&str>,
    json_output: bool,
) -> Result<Outcome, ReplayError> {
    let directory = DataDirectory::open_read_only(dir)?;
    let mut printed = 0usize;
    let mut next = Position(from.max(1));
    while printed < limit {
        let events = directory.read_events(next, 4_096)?;
        let Some(last) = events.last() else { break };
        next = Position(last.position + 1);
        for event in &events {
            let stream = osmium_projections::stream_of(event)?;
            let event_kind = event.event.as_ref().map_or("none", osmium_projections::event_kind);
            let in_chat = chat.is_none_or(|chat| stream == osmium_proto::ids::StreamId::Chat(ChatId(chat)));
            if !in_chat || kind.is_some_and(|kind| kind != event_kind) {
                continue;
            }
            if json_output {
                let line = serde_json::to_string(event).map_err(|err| EngineError::Decode {
                    position: Position(event.position),
                    reason: err.to_string(),
                })?;
                println!("{line}");
            } else {
                let body = event.event.as_ref().map(|e| format!("{e:?}")).unwrap_or_default();
                println!(
                    "{:>10} {stream} v{} {event_kind} actor={} at={} {body}",
                    event.position, event.stream_version, event.actor_id, event.recorded_at_ms
                );
            }
            printed += 1;
            if printed >= limit {
                break;
            }
        }
    }
    Ok(Outcome::Clean)
}

fn chats(dir: &Path, user: UserId, limit: usize, json_output: bool) -> Result<Outcome, ReplayError> {
    let directory = DataDirectory::open_read_only(dir)?;
    let rows = directory.with_projections(|view| -> Result<Vec<serde_json::Value>, EngineError> {
        let page = ChatListPage { limit, max_id: None, min_id: None };
        let mut rows = Vec::new();
        for (_, chat_id) in query::chat_list(view, user, page)? {
            let (Some(chat), Some(member)) = (load_chat(view, chat_id)?, load_member(view, chat_id, user)?) else {
                continue;
            };
            let conversation = query::conversation(view, user, chat_id, &chat, &member)?;
            let last_text = if chat.has_messages(chat_id) {
                load_message(view, chat_id, chat.last_message_id)?.map(|message| message.text).unwrap_or_default()
            } else {
                String::new()
            };
            let name = chat.group().map_or_else(|| "direct".to_owned(), |group| format!("group {:?}", group.name));
            rows.push(json!({
                "chat": chat_id.get(),
                "kind": name,
                "last_message_id": conversation.last_message_id,
                "last_read_message_id": conversation.last_read_message_id,
                "unread_count": conversation.unread_count,
                "unread_mentions_count": conversation.unread_mentions_count,
                "notif_prefs": osmium_proto::types::NotifPrefs::try_from(conversation.notif_prefs)
                    .map_or("unknown", |prefs| prefs.as_str_name()),
                "draft": conversation.draft,
                "last_message": last_text,
            }));
        }
        Ok(rows)
    })?;
    if json_output {
        println!("{}", json!({ "user": user.get(), "chats": rows }));
    } else {
        println!("chat list of user {user} (newest first):");
        for row in &rows {
            println!(
                "  chat {} ({}) unread={} mentions={} last_message={} notif_prefs={} draft={} text={}",
                row["chat"], row["kind"].as_str().unwrap_or(""), row["unread_count"], row["unread_mentions_count"],
                row["last_message_id"], row["notif_prefs"].as_str().unwrap_or(""), row["draft"], row["last_message"]
            );
        }
    }
    Ok(Outcome::Clean)
}

fn demo(dir: &Path, plan: &DemoPlan, json_output: bool) -> Result<Outcome, ReplayError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|source| EngineError::Io {
        path: PathBuf::from("<tokio runtime>"),
        source,
    })?;
    let mut reporter = Reporter::new("demo", "chats", json_output);
    let summary = runtime.block_on(demo::run(dir, plan, &mut |done, total| reporter.update(done, total)))?;
    reporter.finish();
    drop(runtime); // closes the engine before the offline work below
    let workload_seconds = summary.elapsed.as_secs_f64();
    let commands_per_second = (summary.accepted + summary.refused) as f64 / workload_seconds.max(1e-9);

    let mut directory = DataDirectory::open_exclusive(dir)?;
    let mut rebuild_reporter = Reporter::new("rebuild", "events", json_output);
    let rebuild_started = Instant::now();
    let rebuilt = directory.rebuild(RebuildOptions::default(), &mut |done, total| rebuild_reporter.update(done, total))?;
    rebuild_reporter.finish();
    let rebuild_seconds = rebuild_started.elapsed().as_secs_f64();
    let mut verify_reporter = Reporter::new("verify", "events", json_output);
    let (_, differences) = directory.verify(5, &mut |done, total| verify_reporter.update(done, total))?;
    verify_reporter.finish();
    let bytes: u64 = directory.stats()?.bytes_by_column_family.values().sum();

    if json_output {
        println!(
            "{}",
            json!({
                "accepted_commands": summary.accepted,
                "refused_commands": summary.refused,
                "messages": summary.messages,
                "groups": summary.groups,
                "large_groups": summary.large_groups,
                "events": summary.last_position,
                "workload_seconds": workload_seconds,
                "commands_per_second": commands_per_second,
                "rebuild_events_per_second": rebuilt.events as f64 / rebuild_seconds.max(1e-9),
                "verified": differences.is_empty(),
                "device_updates": summary.device_updates,
                "device_read_updates": summary.device_read_updates,
                "bytes_on_disk": bytes,
            })
        );
    } else {
        println!("demo into {}:", dir.display());
        println!(
            "  workload: {} commands accepted, {} refused as the script expects (expired or used-up invites, and later actions of users they did not admit), {} messages, {} groups ({} with up to 2,000 members)",
            summary.accepted, summary.refused, summary.messages, summary.groups, summary.large_groups
        );
        println!("  {:.1}s at {commands_per_second:.0} commands/s with {} concurrent workers (durable, fsync per group commit)", workload_seconds, plan.workers);
        println!(
            "  live updates: {} delivered to 2 devices of each of the {} busiest users ({} of them read positions)",
            summary.device_updates,
            demo::DEMO_USERS_WITH_DEVICES,
            summary.device_read_updates
        );
        println!("  log: {} events, {:.1} MiB on disk", summary.last_position, bytes as f64 / (1024.0 * 1024.0));
        println!("  rebuild: {} events in {rebuild_seconds:.2}s ({:.0} events/s)", rebuilt.events, rebuilt.events as f64 / rebuild_seconds.max(1e-9));
        if differences.is_empty() {
            println!("  verify: projections match a fold of the log");
        } else {
            println!("  verify: {} differences, first: {:?}", differences.len(), differences[0]);
        }
        println!("next: osmium-replay --data-dir {} stats | chats --user {} | dump --limit 20", dir.display(), summary.first_user);
    }
    Ok(if differences.is_empty() { Outcome::Clean } else { Outcome::Differences })
}

fn bench(plan: &BenchPlan, parent: &Path, json_output: bool) -> Result<(), ReplayError> {
    let progress = |line: String| {
        if !json_output {
            eprintln!("bench: {line}");
        }
    };
    let report = bench::run(plan, parent, &progress)?;
    if json_output {
        println!("{}", report.json());
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}
