//! Times on the command line, the report's period and its time buckets.

use std::time::{Duration, SystemTime};

use clap::Args;

use crate::audit::Timestamp;

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
/// (excluded).
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Period {
    /// Start of the period, included: an RFC 3339 time
    /// (2026-11-25T10:00:00Z) or a date (its midnight UTC).
    #[arg(long, value_parser = parse_since)]
    pub since: Timestamp,
    /// End of the period, excluded: an RFC 3339 time, or a date (the
    /// whole day is included).
    #[arg(long, value_parser = parse_until)]
    pub until: Timestamp,
}

impl Period {
    pub(crate) fn contains(&self, time: Timestamp) -> bool {
        self.since <= time && time < self.until
    }

    /// How charts divide the period: hourly up to three days, else daily.
    pub(crate) fn buckets(&self) -> Buckets {
        let length = seconds(self.until).saturating_sub(seconds(self.since));
        let width = if length <= 3 * DAY { HOUR } else { DAY };
        let start = seconds(self.since) / width * width;
        let count = (seconds(self.until) - start).div_ceil(width) as usize;
        Buckets {
            start,
            width,
            count,
        }
    }
}

/// Equal, aligned slices of a period: hours or UTC days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Buckets {
    /// The first bucket's start, in seconds since the epoch.
    start: u64,
    width: u64,
    pub count: usize,
}

impl Buckets {
    pub(crate) fn hourly(&self) -> bool {
        self.width == HOUR
    }

    /// The bucket holding `time`, which must be in the period.
    pub(crate) fn index(&self, time: Timestamp) -> usize {
        ((seconds(time) - self.start) / self.width) as usize
    }

    /// A bucket's label: `2026-11-25 10:00` or `2026-11-25`.
    pub(crate) fn label(&self, index: usize) -> String {
        let start =
            SystemTime::UNIX_EPOCH + Duration::from_secs(self.start + index as u64 * self.width);
        let text = humantime::format_rfc3339_seconds(start).to_string();
        if self.hourly() {
            format!("{} {}", &text[..10], &text[11..16])
        } else {
            text[..10].to_owned()
        }
    }
}

fn seconds(time: Timestamp) -> u64 {
    time.0
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
