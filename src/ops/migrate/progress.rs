//! Showing a migration as it goes, on standard error: on a terminal, a
//! progress bar per column of the table under way (rows done of the
//! table's rows, rate, time left, and what was done to the column's
//! values), drawn by `indicatif`; otherwise plain lines, one every few
//! seconds and one per column when its table is done. Only names and
//! counts are shown.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::counts::Counts;

/// How often a plain line is written.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The progress display of a run.
pub(super) struct Progress {
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
    terminal: bool,
    dry_run: bool,
    table: String,
    columns: Vec<String>,
    total: u64,
    done: u64,
    /// Rows done when the table (or pass) started here.
    done_at_start: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Bars if standard error is a terminal, lines otherwise.
    pub(super) fn new(dry_run: bool) -> Self {
        Progress {
            bars: None,
            terminal: std::io::stderr().is_terminal(),
            dry_run,
            table: String::new(),
            columns: Vec::new(),
            total: 0,
            done: 0,
            done_at_start: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// A table (or a new pass over one) starts: `total` rows (an
    /// estimate), `done` of them already done by an earlier run.
    pub(super) fn start(&mut self, table: &str, columns: &[String], total: u64, done: u64) {
        self.table = table.into();
        self.columns = columns.to_vec();
        self.total = total.max(done);
        self.done = done;
        self.done_at_start = done;
        self.started = Instant::now();
        self.last_line = Instant::now();
        if !self.terminal {
            return;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = columns.iter().map(String::len).max().unwrap_or(0) + table.len() + 1;
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:{width}}} [{{bar:30}}] {{pos}}/{{len}} rows {{rate}} ETA {{eta}} {{msg}}"
        ))
        .expect("a valid template")
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} rows/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        let bars = columns
            .iter()
            .map(|column| {
                let bar = multi.add(ProgressBar::new(self.total));
                bar.set_style(style.clone());
                bar.set_prefix(format!("{table}.{column}"));
                bar.set_position(done);
                bar.reset_eta();
                bar
            })
            .collect();
        self.bars = Some((multi, bars));
    }

    /// `rows` more rows are done; `counts` are the columns' counts so far.
    pub(super) fn advance(&mut self, rows: u64, counts: &[Counts]) {
        self.done += rows;
        if self.done > self.total {
            self.total = self.done;
        }
        if let Some((_, bars)) = &self.bars {
            for (bar, counts) in bars.iter().zip(counts) {
                bar.set_length(self.total);
                bar.set_position(self.done);
                bar.set_message(counts.describe(self.dry_run));
            }
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// The table (or pass) is done, or `interrupted`.
    pub(super) fn finish(&mut self, counts: &[Counts], interrupted: bool) {
        if let Some((multi, bars)) = self.bars.take() {
            for (bar, counts) in bars.iter().zip(counts) {
                if interrupted {
                    bar.abandon_with_message(format!(
                        "{} (interrupted)",
                        counts.describe(self.dry_run)
                    ));
                } else {
                    bar.set_length(self.done);
                    bar.finish_with_message(counts.describe(self.dry_run));
                }
            }
            drop(multi);
            return;
        }
        let how = if interrupted { "interrupted" } else { "done" };
        for (column, counts) in self.columns.iter().zip(counts) {
            eprintln!(
                "{}.{column}: {how}, {} values: {}",
                self.table,
                counts.seen,
                counts.describe(self.dry_run)
            );
        }
    }

    /// A line of its own (above the bars, on a terminal).
    pub(super) fn note(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// `table: done/total rows (p%), r rows/s, ETA s`.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (self.done - self.done_at_start) as f64 / secs;
        let percent = self.done * 100 / self.total.max(1);
        let eta = if rate > 0.0 {
            format!(
                "{:.0} s",
                self.total.saturating_sub(self.done) as f64 / rate
            )
        } else {
            "unknown".into()
        };
        format!(
            "{}: {}/{} rows ({percent}%), {rate:.0} rows/s, ETA {eta}",
            self.table, self.done, self.total
        )
    }
}
