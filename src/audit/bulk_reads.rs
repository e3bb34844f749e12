//! Bulk-access detection: breaches show up as one role or actor reading
//! far more personal data than usual. pgveil counts, across sessions, the
//! rows of each protected column revealed in plaintext to each (login
//! role, actor) within a sliding window; crossing the configured threshold
//! writes an alert record and a warning, once per window, and with
//! `on_bulk = "block"` the session that crossed it gets no more plaintext.
//! A statement that takes several columns over the threshold at once (a
//! `\copy` export of a whole table) raises one alert naming them all.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::BulkConfig;

/// What one window counts: the reads of one protected column by one
/// login role and actor, whatever their session.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WindowKey {
    /// The login role.
    role: Arc<str>,
    /// The actor declared in the session, if any.
    actor: Option<String>,
    /// The column read, `schema.table.column`.
    column: String,
}

/// The windows one statement took over the threshold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Crossing {
    /// The columns, in order.
    pub columns: Vec<String>,
    /// Rows within the window, the new ones included: the most of any of
    /// the columns.
    pub rows: u64,
}

#[derive(Default)]
struct Window {
    reads: VecDeque<(Instant, u64)>,
    total: u64,
    /// When an alert was last raised, so it is raised once per window.
    alerted: Option<Instant>,
}

/// Counts plaintext reads for every session of the process.
pub struct BulkWatch {
    config: BulkConfig,
    windows: Mutex<HashMap<WindowKey, Window>>,
}

impl BulkWatch {
    /// A watch with no reads counted yet.
    pub fn new(config: BulkConfig) -> Self {
        Self {
            config,
            windows: Mutex::default(),
        }
    }

    /// The thresholds and what crossing them does.
    pub fn config(&self) -> &BulkConfig {
        &self.config
    }

    /// Adds the plaintext rows one statement of `role` and `actor` read
    /// now, per column; returns the crossing when it takes the windows of
    /// one or more columns over the threshold (each column at most once
    /// per window).
    pub(crate) fn add_statement<'a>(
        &self,
        role: &Arc<str>,
        actor: Option<&str>,
        reads: impl IntoIterator<Item = (&'a str, u64)>,
        now: Instant,
    ) -> Option<Crossing> {
        let mut per_column = BTreeMap::<&str, u64>::new();
        for (column, rows) in reads {
            *per_column.entry(column).or_default() += rows;
        }
        let mut crossing: Option<Crossing> = None;
        for (column, rows) in per_column {
            let key = WindowKey {
                role: role.clone(),
                actor: actor.map(str::to_owned),
                column: column.to_owned(),
            };
            if let Some(total) = self.add(key, rows, now) {
                let crossing = crossing.get_or_insert(Crossing {
                    columns: Vec::new(),
                    rows: 0,
                });
                crossing.columns.push(column.to_owned());
                crossing.rows = crossing.rows.max(total);
            }
        }
        crossing
    }

    /// Adds `rows` plaintext rows of `key` read now; returns the rows in
    /// the window when this read takes it over the threshold and no alert
    /// was raised in the last window.
    fn add(&self, key: WindowKey, rows: u64, now: Instant) -> Option<u64> {
        let window_len = Duration::from_secs(self.config.window_secs);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, w| {
            w.reads
                .back()
                .is_some_and(|(t, _)| now.duration_since(*t) < window_len)
        });
        let window = windows.entry(key).or_default();
        window.reads.push_back((now, rows));
        window.total += rows;
        while let Some(&(t, n)) = window.reads.front() {
            if now.duration_since(t) < window_len {
                break;
            }
            window.reads.pop_front();
            window.total -= n;
        }
        let recently_alerted = window
            .alerted
            .is_some_and(|t| now.duration_since(t) < window_len);
        if window.total <= self.config.threshold_rows || recently_alerted {
            return None;
        }
        window.alerted = Some(now);
        Some(window.total)
    }

    /// Plaintext rows of `column` read by login role `role` within the
    /// window before `now`, whatever actor the sessions declared (an
    /// actor is the client's to set, so a limit must not count by it).
    pub(crate) fn rows_of(&self, role: &str, column: &str, now: Instant) -> u64 {
        let window_len = Duration::from_secs(self.config.window_secs);
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .iter()
            .filter(|(key, _)| &*key.role == role && key.column == column)
            .flat_map(|(_, window)| &window.reads)
            .filter(|(t, _)| now.duration_since(*t) < window_len)
            .map(|(_, rows)| rows)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: &str) -> WindowKey {
        WindowKey {
            role: role.into(),
            actor: None,
            column: "public.customers.email".into(),
        }
    }

    fn watch() -> BulkWatch {
        BulkWatch::new(BulkConfig {
            threshold_rows: 100,
            window_secs: 60,
            ..BulkConfig::default()
        })
    }

    #[test]
    fn fires_once_when_the_window_crosses_the_threshold() {
        let watch = watch();
        let t0 = Instant::now();
        assert_eq!(watch.add(key("a"), 60, t0), None);
        assert_eq!(
            watch.add(key("b"), 60, t0),
            None,
            "another role counts apart"
        );
        assert_eq!(watch.add(key("a"), 41, t0), Some(101));
        assert_eq!(watch.add(key("a"), 50, t0), None, "once per window");
    }

    #[test]
    fn rows_within_the_window_are_summed_over_actors() {
        let watch = watch();
        let t0 = Instant::now();
        let column = "public.customers.email";
        watch.add(key("a"), 30, t0);
        let mut other_actor = key("a");
        other_actor.actor = Some("bot".into());
        watch.add(other_actor, 20, t0);
        watch.add(key("b"), 40, t0);
        assert_eq!(watch.rows_of("a", column, t0), 50);
        assert_eq!(watch.rows_of("a", "public.customers.phone", t0), 0);
        assert_eq!(watch.rows_of("a", column, t0 + Duration::from_secs(61)), 0);
    }

    #[test]
    fn old_reads_leave_the_window() {
        let watch = watch();
        let t0 = Instant::now();
        assert_eq!(watch.add(key("a"), 90, t0), None);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(watch.add(key("a"), 90, later), None);
        assert_eq!(watch.add(key("a"), 20, later), Some(110));
    }

    fn crossing(columns: &[&str], rows: u64) -> Option<Crossing> {
        Some(Crossing {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        })
    }

    #[test]
    fn one_statement_over_several_columns_is_one_crossing() {
        let watch = watch();
        let role: Arc<str> = "app".into();
        let t0 = Instant::now();
        assert_eq!(
            watch.add_statement(&role, None, [("t.phone", 30), ("t.email", 50)], t0),
            None
        );
        // An export of the whole table: every column over the threshold.
        let export = [("t.email", 120), ("t.name", 120), ("t.phone", 120)];
        assert_eq!(
            watch.add_statement(&role, None, export, t0),
            crossing(&["t.email", "t.name", "t.phone"], 170)
        );
        assert_eq!(
            watch.add_statement(&role, None, export, t0),
            None,
            "once per window"
        );
        // A column not over the threshold yet crosses on its own later.
        assert_eq!(
            watch.add_statement(&role, None, [("t.address", 60), ("t.email", 5)], t0),
            None
        );
        assert_eq!(
            watch.add_statement(&role, None, [("t.address", 60)], t0),
            crossing(&["t.address"], 120)
        );
        // The same column twice in one statement (two decisions) counts
        // its rows together.
        assert_eq!(
            watch.add_statement(&role, Some("bot"), [("t.ssn", 60), ("t.ssn", 60)], t0),
            crossing(&["t.ssn"], 120)
        );
    }
}
