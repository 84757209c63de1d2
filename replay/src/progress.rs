//! Progress of long work: a bar on a terminal, plain lines otherwise (at most one every
//! two seconds), nothing with `--json` (stdout stays machine-readable; progress goes to
//! stderr).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Reports `done` of `total` events for one named piece of work.
#[derive(Debug)]
pub struct Reporter {
    label: &'static str,
    unit: &'static str,
    bar: Option<ProgressBar>,
    plain: bool,
    last_line: Option<Instant>,
}

impl Reporter {
    /// A reporter for `label`, counting `unit`s; silent when `quiet`.
    pub fn new(label: &'static str, unit: &'static str, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (terminal && !quiet).then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {prefix} ({per_sec}, eta {eta})")
                .map(|style| style.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label);
            bar.set_prefix(unit);
            bar
        });
        Reporter { label, unit, bar, plain: !terminal && !quiet, last_line: None }
    }

    /// Records progress.
    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
        } else if self.plain && (self.last_line.is_none_or(|at| at.elapsed() >= Duration::from_secs(2)) || done == total) {
            eprintln!("{}: {done}/{total} {}", self.label, self.unit);
            self.last_line = Some(Instant::now());
        }
    }

    /// Ends the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
