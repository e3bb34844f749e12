//! A [`Report`] as readable text tables, and the rows every format's
//! tables share.

use std::io::{self, Write};

use super::layout::{truncate, write_aligned};
use super::report::{Report, Tally};
use super::Head;
use crate::audit::{Decision, Timestamp};

/// Shown where a cell has nothing (no actor, no purpose).
const NONE: &str = "-";

/// At most this many refused statements and failed logins are listed in
/// text and HTML (all of them in CSV and JSON).
pub(super) const LISTED: usize = 500;

/// Statements are cut to this many characters in text tables.
const STATEMENT_CHARS: usize = 100;

/// Writes the head (verification, generation, digest), then every table.
pub(super) fn write_text(report: &Report, head: &Head, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "pgveil access review")?;
    writeln!(out)?;
    let head_rows = head_rows(report, head);
    let width = head_rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (name, value) in head_rows {
        writeln!(out, "{name:width$}  {value}")?;
    }
    section(out, "Totals")?;
    write_aligned(out, &["", "count"], &totals_rows(report))?;
    section(out, "Statements by role and user")?;
    write_aligned(out, &ACTIVITY_HEADER, &activity_rows(report))?;
    section(out, "Refused statements and failed logins")?;
    if report.incidents.is_empty() {
        writeln!(out, "none")?;
    } else {
        let mut rows = incident_rows(report);
        for row in &mut rows {
            row[5] = truncate(&row[5], STATEMENT_CHARS);
        }
        write_aligned(out, &INCIDENT_HEADER, &rows)?;
        if let Some(note) = unlisted(report) {
            writeln!(out, "{note}")?;
        }
    }
    section(out, "Reads of protected columns (rows by decision)")?;
    write_aligned(out, &READS_HEADER, &reads_rows(report))?;
    section(out, "Writes of protected columns")?;
    write_aligned(out, &WRITES_HEADER, &writes_rows(report))?;
    section(out, "Protected columns")?;
    write_aligned(out, &COLUMNS_HEADER, &column_rows(report))?;
    if let Some(chart) = &report.plaintext {
        section(
            out,
            &format!("Rows read in plaintext per {} and role", chart.unit()),
        )?;
        let rows: Vec<Vec<String>> = (0..chart.buckets)
            .flat_map(|i| {
                chart
                    .roles
                    .iter()
                    .filter(move |r| r.rows[i] > 0)
                    .map(move |r| vec![chart.label(i), r.role.clone(), r.rows[i].to_string()])
            })
            .collect();
        write_aligned(out, &["from", "role", "rows"], &rows)?;
    }
    section(out, "Alerts")?;
    if report.alerts.is_empty() {
        writeln!(out, "none")?;
    } else {
        let mut rows = alert_rows(report);
        for row in &mut rows {
            row[5] = truncate(&row[5], STATEMENT_CHARS);
        }
        write_aligned(out, &ALERT_HEADER, &rows)?;
    }
    Ok(())
}

fn section(out: &mut dyn Write, title: &str) -> io::Result<()> {
    writeln!(out, "\n{title}\n")
}

pub(super) fn time_text(time: Timestamp) -> String {
    humantime::format_rfc3339_seconds(time.0).to_string()
}

/// The period asked for and the data's span.
pub(super) fn period_text(report: &Report) -> String {
    let asked = match (report.period.since, report.period.until) {
        (None, None) => "the whole log".to_owned(),
        (since, until) => format!(
            "{} to {} (end excluded)",
            since.map_or("the first record".to_owned(), time_text),
            until.map_or("the last record".to_owned(), time_text)
        ),
    };
    match (report.first, report.last) {
        (Some(first), Some(last)) => format!(
            "{asked}: records from {} to {}",
            time_text(first),
            time_text(last)
        ),
        _ => format!("{asked}: no records"),
    }
}

/// The head of every format: name and value.
pub(super) fn head_rows(report: &Report, head: &Head) -> Vec<(&'static str, String)> {
    let v = &report.verification;
    let covered = match (v.files, v.records) {
        (Some(files), Some(records)) => format!("{files} file(s), {records} record(s)"),
        _ => NONE.to_owned(),
    };
    vec![
        ("verification", format!("{}: {}", v.status.name(), v.detail)),
        ("verified", covered),
        (
            "key fingerprint",
            v.key_fingerprint.clone().unwrap_or_else(|| NONE.to_owned()),
        ),
        ("period", period_text(report)),
        ("generated", time_text(head.generated)),
        (
            "data sha256",
            format!("{} (of the --format json output)", head.digest),
        ),
    ]
}

pub(super) fn totals_rows(report: &Report) -> Vec<Vec<String>> {
    let totals = &report.totals;
    [
        ("records", totals.records),
        ("statements", totals.statements),
        ("statements on protected columns", totals.protected),
        ("reads of protected columns", totals.reads),
        (
            "  of which without a declared purpose",
            totals.reads_without_purpose,
        ),
        ("writes of protected columns", totals.writes),
        ("refused statements", totals.refused),
        ("failed statements (any error)", totals.errors),
        ("connections", totals.connections),
        ("failed logins", totals.failed_logins),
        ("alerts", totals.alerts),
        ("records lost (not written)", totals.lost),
        ("rows migrated (pgveil migrate)", totals.migrated),
        ("undecryptable values (migrate)", totals.undecryptable),
    ]
    .into_iter()
    .map(|(name, count)| vec![name.to_owned(), count.to_string()])
    .collect()
}

/// `value`, or empty when it repeats the row above: rows grouped by role
/// (and user) show each once.
fn grouped<'a>(value: &'a str, previous: Option<&str>) -> &'a str {
    if previous == Some(value) {
        ""
    } else {
        value
    }
}

pub(super) const ACTIVITY_HEADER: [&str; 9] = [
    "role",
    "user",
    "statements",
    "reads",
    "without purpose",
    "writes",
    "refused",
    "other errors",
    "failed logins",
];

/// Per role and user, with the role shown once per group.
pub(super) fn activity_rows(report: &Report) -> Vec<Vec<String>> {
    let mut previous = None;
    report
        .activity
        .iter()
        .map(|a| {
            let role = grouped(&a.role, previous).to_owned();
            previous = Some(&a.role);
            let mut row = vec![role, a.user.clone()];
            row.extend(
                [
                    a.statements,
                    a.reads,
                    a.reads_without_purpose,
                    a.writes,
                    a.refused,
                    a.errors,
                    a.failed_logins,
                ]
                .map(|n| n.to_string()),
            );
            row
        })
        .collect()
}

pub(super) const INCIDENT_HEADER: [&str; 6] =
    ["time", "what", "user", "role", "SQLSTATE", "statement"];

/// The first [`LISTED`] refused statements and failed logins.
pub(super) fn incident_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .incidents
        .iter()
        .take(LISTED)
        .map(|i| {
            vec![
                time_text(i.time),
                i.kind.name().to_owned(),
                i.user.clone(),
                i.role.clone(),
                i.sqlstate.clone(),
                i.statement.clone(),
            ]
        })
        .collect()
}

/// What the listing leaves out, if anything.
pub(super) fn unlisted(report: &Report) -> Option<String> {
    let more = report.incidents.len().checked_sub(LISTED)?;
    (more > 0).then(|| {
        format!(
            "... and {more} more: all are in --format csv or json, \
             or `pgveil audit search --outcome error`"
        )
    })
}

/// Rows per decision taken, as one cell: `plaintext 21, masked 4`; a
/// denial, which returns no rows, by its statements.
pub(super) fn decisions_text(tally: &Tally) -> String {
    let parts: Vec<String> = tally
        .iter()
        .filter(|(_, c)| c.statements > 0)
        .map(|(decision, c)| match decision {
            Decision::Denied => format!("denied in {} statement(s)", c.statements),
            _ => format!("{} {}", decision.name(), c.rows),
        })
        .collect();
    parts.join(", ")
}

/// Statements without a declared purpose, flagged: `! 3 of 5`.
pub(super) fn without_purpose_text(without: u64, statements: u64) -> String {
    if without == 0 {
        NONE.to_owned()
    } else {
        format!("! {without} of {statements}")
    }
}

pub(super) const READS_HEADER: [&str; 8] = [
    "role",
    "user",
    "actor",
    "column",
    "statements",
    "rows by decision",
    "without purpose",
    "purposes",
];

/// Per role, user, actor and column read.
pub(super) fn reads_rows(report: &Report) -> Vec<Vec<String>> {
    let mut previous: Option<(&str, &str)> = None;
    report
        .reads
        .iter()
        .map(|r| {
            let (role, user) = match previous {
                Some((role, user)) if role == r.role => {
                    (String::new(), grouped(&r.user, Some(user)).to_owned())
                }
                _ => (r.role.clone(), r.user.clone()),
            };
            previous = Some((&r.role, &r.user));
            let purposes: Vec<&str> = r.purposes.iter().map(String::as_str).collect();
            vec![
                role,
                user,
                r.actor.as_deref().unwrap_or(NONE).to_owned(),
                r.column.clone(),
                r.statements.to_string(),
                decisions_text(&r.decisions),
                without_purpose_text(r.without_purpose, r.statements),
                if purposes.is_empty() {
                    NONE.to_owned()
                } else {
                    purposes.join(", ")
                },
            ]
        })
        .collect()
}

pub(super) const WRITES_HEADER: [&str; 7] = [
    "role",
    "user",
    "actor",
    "column",
    "statements",
    "rows",
    "refused",
];

/// Per role, user, actor and column written.
pub(super) fn writes_rows(report: &Report) -> Vec<Vec<String>> {
    let mut previous: Option<(&str, &str)> = None;
    report
        .writes
        .iter()
        .map(|w| {
            let (role, user) = match previous {
                Some((role, user)) if role == w.role => {
                    (String::new(), grouped(&w.user, Some(user)).to_owned())
                }
                _ => (w.role.clone(), w.user.clone()),
            };
            previous = Some((&w.role, &w.user));
            vec![
                role,
                user,
                w.actor.as_deref().unwrap_or(NONE).to_owned(),
                w.column.clone(),
                w.written.statements.to_string(),
                w.written.rows.to_string(),
                w.refused.to_string(),
            ]
        })
        .collect()
}

pub(super) const COLUMNS_HEADER: [&str; 5] = [
    "column",
    "reads",
    "rows read by decision",
    "writes",
    "rows written",
];

/// Per protected column: reads (statements, rows by decision) and writes.
pub(super) fn column_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .columns
        .iter()
        .map(|c| {
            vec![
                c.column.clone(),
                c.reads.statements().to_string(),
                decisions_text(&c.reads),
                c.writes.statements.to_string(),
                c.writes.rows.to_string(),
            ]
        })
        .collect()
}

pub(super) const ALERT_HEADER: [&str; 6] = [
    "time",
    "user",
    "actor",
    "columns",
    "rows in window",
    "statement",
];

pub(super) fn alert_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .alerts
        .iter()
        .map(|alert| {
            let record = &alert.record;
            vec![
                time_text(record.time),
                record.role.clone(),
                record.actor.as_deref().unwrap_or(NONE).to_owned(),
                record.columns.join(", "),
                format!(
                    "{} (over {} in {} s)",
                    record.rows, record.threshold, record.window_secs
                ),
                alert.statement.clone().unwrap_or_else(|| NONE.to_owned()),
            ]
        })
        .collect()
}
