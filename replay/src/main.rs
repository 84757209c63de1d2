//! `osmium-replay`: see `osmium-replay --help`.

use clap::{Parser, Subcommand};
use osmium_replay::demo::{self, DemoPlan};
use std::path::PathBuf;
use std::process::ExitCode;

/// Operator tool for an osmium-state data directory.
///
/// Exit codes: 0 success, 1 a check found a difference, 2 an error (bad arguments,
/// unreadable or locked directory, storage failure).
#[derive(Debug, Parser)]
#[command(name = "osmium-replay", version)]
struct Cli {
    /// The engine's data directory (a RocksDB directory).
    #[arg(long, global = true, default_value = "./data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a deterministic demo workload through the engine into the data directory.
    ///
    /// Example: osmium-replay demo --data-dir ./data --seed 7 --users 200 --messages 20000
    Demo {
        /// Seed of every random choice.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Users to create.
        #[arg(long, default_value_t = 500)]
        users: u64,
        /// Messages to send.
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        /// Groups to create.
        #[arg(long, default_value_t = 50)]
        groups: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Demo { seed, users, messages, groups } => {
            let plan = DemoPlan { seed, users, messages, groups };
            match runtime.block_on(demo::run(&cli.data_dir, &plan)) {
                Ok(summary) => {
                    let seconds = summary.elapsed.as_secs_f64();
                    println!(
                        "demo: {} commands ({} messages) in {:.2}s = {:.0} commands/s; log now holds {} events in {}",
                        summary.commands,
                        summary.messages,
                        seconds,
                        summary.commands as f64 / seconds.max(1e-9),
                        summary.last_position,
                        cli.data_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
