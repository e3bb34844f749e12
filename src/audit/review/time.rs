//! Times on the command line, the report's period, and its charts over
//! time: buckets chosen to fit the data (seconds for a burst, hours for a
//! day, days for a month), not the period asked for.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;

use crate::audit::Timestamp;

const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;

/// Parses a start time: RFC 3339 in UTC (`2026-11-25T10:00:00Z`), or a
/// date (`2026-11-25`) meaning its midnight UTC.
pub(crate) fn parse_since(text: &str) -> Result<Timestamp, String> {
    parse_time(text, Duration::ZERO)
}

/// Parses an end time: RFC 3339, or a date meaning the end of that day
/// (the next midnight UTC), so that the whole day is included.
pub(crate) fn parse_until(text: &str) -> Result<Timestamp, String> {
    parse_time(text, Duration::from_secs(DAY))
}

/// A date is taken as its midnight UTC plus `date_offset`.
fn parse_time(text: &str, date_offset: Duration) -> Result<Timestamp, String> {
    let invalid = |_| format!("{text:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)");
    if is_date(text) {
        let midnight = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).map_err(invalid)?;
        return Ok(Timestamp(midnight + date_offset));
    }
    humantime::parse_rfc3339_weak(text)
        .map(Timestamp)
        .map_err(invalid)
}

fn is_date(text: &str) -> bool {
    text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-'
}

/// The times a report covers: from `since` (included) to `until`
/// (excluded), each open when not given.
#[derive(Args, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Period {
    /// Start of the period, included: an RFC 3339 time
    /// (2026-11-25T10:00:00Z) or a date (its midnight UTC). Default: the
    /// log's first record.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Timestamp>,
    /// End of the period, excluded: an RFC 3339 time, or a date (the
    /// whole day is included). Default: after the log's last record.
    #[arg(long, value_parser = parse_until)]
    pub until: Option<Timestamp>,
}

impl Period {
    pub(crate) fn contains(&self, time: Timestamp) -> bool {
        self.since.is_none_or(|since| since <= time) && self.until.is_none_or(|until| time < until)
    }

    /// Whether no time can be in the period.
    pub(crate) fn is_empty(&self) -> bool {
        matches!((self.since, self.until), (Some(since), Some(until)) if since >= until)
    }
}

/// Bucket widths a time chart may use, shortest first.
const WIDTHS: [u64; 10] = [
    1,
    10,
    MINUTE,
    10 * MINUTE,
    HOUR,
    6 * HOUR,
    DAY,
    7 * DAY,
    28 * DAY,
    364 * DAY,
];

/// A chart has at most this many buckets: the shortest width that keeps
/// the data's span within it is chosen.
const MAX_BUCKETS: u64 = 60;

/// Above this many distinct points, a [`Series`] keeps coarser ones.
const MAX_POINTS: usize = 50_000;

/// Rows per role over time, kept at the finest width that stays within
/// [`MAX_POINTS`], until the data's span is known and [`Series::chart`]
/// chooses the buckets.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// An index into [`WIDTHS`].
    resolution: usize,
    /// Rows per role at each point (its start, in seconds).
    points: BTreeMap<u64, BTreeMap<String, u64>>,
}

impl Series {
    pub(crate) fn add(&mut self, time: Timestamp, role: &str, rows: u64) {
        let width = WIDTHS[self.resolution];
        let point = seconds(time) / width * width;
        *self
            .points
            .entry(point)
            .or_default()
            .entry(role.to_owned())
            .or_default() += rows;
        while self.points.len() > MAX_POINTS && self.resolution + 1 < WIDTHS.len() {
            self.resolution += 1;
            let width = WIDTHS[self.resolution];
            let mut coarser = BTreeMap::<u64, BTreeMap<String, u64>>::new();
            for (point, roles) in std::mem::take(&mut self.points) {
                let slot = coarser.entry(point / width * width).or_default();
                for (role, rows) in roles {
                    *slot.entry(role).or_default() += rows;
                }
            }
            self.points = coarser;
        }
    }

    /// The chart from `first` to `last` (the data's span).
    pub(crate) fn chart(&self, first: Timestamp, last: Timestamp) -> Chart {
        let (first, last) = (seconds(first), seconds(last).max(seconds(first)));
        let bucket_secs = WIDTHS[self.resolution..]
            .iter()
            .copied()
            .find(|width| last / width - first / width < MAX_BUCKETS)
            .unwrap_or(WIDTHS[WIDTHS.len() - 1]);
        let start = first / bucket_secs * bucket_secs;
        let buckets = ((last - start) / bucket_secs + 1) as usize;
        let mut roles = BTreeMap::<&str, Vec<u64>>::new();
        for (point, rows) in &self.points {
            let index = (point.saturating_sub(start) / bucket_secs) as usize;
            for (role, n) in rows {
                let series = roles.entry(role).or_insert_with(|| vec![0; buckets]);
                series[index.min(buckets - 1)] += n;
            }
        }
        Chart {
            start: Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(start)),
            bucket_secs,
            buckets,
            roles: roles
                .into_iter()
                .map(|(role, rows)| RoleSeries {
                    role: role.to_owned(),
                    rows,
                })
                .collect(),
        }
    }
}

/// Rows per role in equal, aligned time buckets that cover the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Chart {
    /// The first bucket's start.
    pub start: Timestamp,
    pub bucket_secs: u64,
    pub buckets: usize,
    pub roles: Vec<RoleSeries>,
}

/// One role's rows in each bucket of a [`Chart`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RoleSeries {
    pub role: String,
    pub rows: Vec<u64>,
}

impl Chart {
    /// The rows of every role in bucket `index`.
    pub(crate) fn total(&self, index: usize) -> u64 {
        self.roles.iter().map(|r| r.rows[index]).sum()
    }

    /// What one bucket is: `hour`, `10 seconds`, `day`...
    pub(crate) fn unit(&self) -> String {
        let (count, unit) = match self.bucket_secs {
            s if s % (7 * DAY) == 0 => (s / (7 * DAY), "week"),
            s if s % DAY == 0 => (s / DAY, "day"),
            s if s % HOUR == 0 => (s / HOUR, "hour"),
            s if s % MINUTE == 0 => (s / MINUTE, "minute"),
            s => (s, "second"),
        };
        match count {
            1 => unit.to_owned(),
            n => format!("{n} {unit}s"),
        }
    }

    /// Bucket `index`'s start in full: `2026-11-25 10:00:00` (no seconds
    /// from a minute up, no time of day from a day up).
    pub(crate) fn label(&self, index: usize) -> String {
        let text = self.start_text(index);
        if self.bucket_secs >= DAY {
            text[..10].to_owned()
        } else if self.bucket_secs >= MINUTE {
            format!("{} {}", &text[..10], &text[11..16])
        } else {
            format!("{} {}", &text[..10], &text[11..19])
        }
    }

    /// A short label for an axis: the date from a day up, else the time
    /// of day, with the date when it is not the date of the `previous`
    /// label (or there is none).
    pub(crate) fn axis_label(&self, index: usize, previous: Option<usize>) -> String {
        let text = self.start_text(index);
        let new_day = previous.is_none_or(|p| self.start_text(p)[..10] != text[..10]);
        match self.bucket_secs {
            s if s >= DAY => text[..10].to_owned(),
            s if s >= MINUTE && new_day => format!("{} {}", &text[5..10], &text[11..16]),
            s if s >= MINUTE => text[11..16].to_owned(),
            _ if new_day => format!("{} {}", &text[5..10], &text[11..19]),
            _ => text[11..19].to_owned(),
        }
    }

    fn start_text(&self, index: usize) -> String {
        let start = self.start.0 + Duration::from_secs(index as u64 * self.bucket_secs);
        humantime::format_rfc3339_seconds(start).to_string()
    }
}

fn seconds(time: Timestamp) -> u64 {
    time.0
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
