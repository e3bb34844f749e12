//! A [`Report`] as one CSV table (RFC 4180) for spreadsheets: every part
//! of the review is a row with its `section` in the first column, and
//! each section fills the columns it needs (see [`HEADER`] and
//! `docs/operations.md`, section 8). The head (verification, generation, digest) comes
//! first.

use std::io::{self, Write};

use super::layout::write_csv_row;
use super::report::{IncidentKind, Report};
use super::text::time_text;
use super::Head;

/// The columns, in order.
pub(super) const HEADER: [&str; 16] = [
    "section",
    "time",
    "role",
    "user",
    "actor",
    "column",
    "access",
    "decision",
    "sqlstate",
    "statement",
    "statements",
    "rows",
    "threshold",
    "window_secs",
    "name",
    "value",
];

/// One row, by column name; the others are empty.
#[derive(Default)]
struct Row<'a> {
    cells: [&'a str; HEADER.len()],
    owned: Vec<(usize, String)>,
}

impl<'a> Row<'a> {
    fn new(section: &'a str) -> Self {
        let mut row = Self::default();
        row.cells[0] = section;
        row
    }

    fn set(mut self, column: &str, value: &'a str) -> Self {
        self.cells[index(column)] = value;
        self
    }

    fn put(mut self, column: &str, value: impl ToString) -> Self {
        self.owned.push((index(column), value.to_string()));
        self
    }

    fn write(self, out: &mut dyn Write) -> io::Result<()> {
        let mut cells: Vec<&str> = self.cells.to_vec();
        for (i, value) in &self.owned {
            cells[*i] = value;
        }
        write_csv_row(out, &cells)
    }
}

fn index(column: &str) -> usize {
    HEADER
        .iter()
        .position(|&c| c == column)
        .expect("a column of HEADER")
}

/// Writes the header and every section.
pub(super) fn write_csv(report: &Report, head: &Head, out: &mut dyn Write) -> io::Result<()> {
    write_csv_row(out, &HEADER)?;
    write_head(report, head, out)?;
    let totals = serde_json::to_value(&report.totals).expect("totals serialize");
    for (name, value) in totals.as_object().into_iter().flatten() {
        if let Some(n) = value.as_u64() {
            Row::new("totals")
                .set("name", name)
                .put("value", n)
                .write(out)?;
        }
    }
    for a in &report.activity {
        for (name, n) in [
            ("statements", a.statements),
            ("reads", a.reads),
            ("reads_without_purpose", a.reads_without_purpose),
            ("writes", a.writes),
            ("refused", a.refused),
            ("errors", a.errors),
            ("failed_logins", a.failed_logins),
        ] {
            Row::new("activity")
                .set("role", &a.role)
                .set("user", &a.user)
                .set("name", name)
                .put("value", n)
                .write(out)?;
        }
    }
    for r in &report.reads {
        let row = || {
            Row::new("read")
                .set("role", &r.role)
                .set("user", &r.user)
                .set("actor", r.actor.as_deref().unwrap_or_default())
                .set("column", &r.column)
                .set("access", "read")
        };
        for (decision, count) in r.decisions.iter().filter(|(_, c)| c.statements > 0) {
            row()
                .set("decision", decision.name())
                .put("statements", count.statements)
                .put("rows", count.rows)
                .write(out)?;
        }
        if r.without_purpose > 0 {
            row()
                .set("name", "without_purpose")
                .put("statements", r.without_purpose)
                .write(out)?;
        }
    }
    for w in &report.writes {
        Row::new("write")
            .set("role", &w.role)
            .set("user", &w.user)
            .set("actor", w.actor.as_deref().unwrap_or_default())
            .set("column", &w.column)
            .set("access", "write")
            .put("statements", w.written.statements)
            .put("rows", w.written.rows)
            .set("name", "refused")
            .put("value", w.refused)
            .write(out)?;
    }
    for i in &report.incidents {
        let section = match i.kind {
            IncidentKind::RefusedStatement => "refused_statement",
            IncidentKind::FailedLogin => "failed_login",
        };
        Row::new(section)
            .put("time", time_text(i.time))
            .set("role", &i.role)
            .set("user", &i.user)
            .set("sqlstate", &i.sqlstate)
            .set("statement", &i.statement)
            .set("name", "connection")
            .put("value", i.connection)
            .write(out)?;
    }
    for alert in &report.alerts {
        let a = &alert.record;
        Row::new("alert")
            .put("time", time_text(a.time))
            .set("user", &a.role)
            .set("actor", a.actor.as_deref().unwrap_or_default())
            .put("column", a.columns.join(" "))
            .set("statement", alert.statement.as_deref().unwrap_or_default())
            .put("rows", a.rows)
            .put("threshold", a.threshold)
            .put("window_secs", a.window_secs)
            .set("name", "connection")
            .put(
                "value",
                a.connection.map(|c| c.to_string()).unwrap_or_default(),
            )
            .write(out)?;
    }
    if let Some(chart) = &report.plaintext {
        for i in 0..chart.buckets {
            for series in chart.roles.iter().filter(|r| r.rows[i] > 0) {
                Row::new("plaintext_rows")
                    .put("time", chart.label(i))
                    .set("role", &series.role)
                    .put("rows", series.rows[i])
                    .set("name", "bucket_secs")
                    .put("value", chart.bucket_secs)
                    .write(out)?;
            }
        }
    }
    Ok(())
}

/// The `report` rows: verification, period, generation and digest.
fn write_head(report: &Report, head: &Head, out: &mut dyn Write) -> io::Result<()> {
    let v = &report.verification;
    let optional = |t: Option<crate::audit::Timestamp>| t.map(time_text).unwrap_or_default();
    let items = [
        ("verification", v.status.name().to_owned()),
        ("verification_detail", v.detail.clone()),
        (
            "verified_files",
            v.files.map(|n| n.to_string()).unwrap_or_default(),
        ),
        (
            "verified_records",
            v.records.map(|n| n.to_string()).unwrap_or_default(),
        ),
        (
            "key_fingerprint",
            v.key_fingerprint.clone().unwrap_or_default(),
        ),
        ("since", optional(report.period.since)),
        ("until", optional(report.period.until)),
        ("first_record", optional(report.first)),
        ("last_record", optional(report.last)),
        ("generated", time_text(head.generated)),
        ("data_sha256", head.digest.clone()),
    ];
    for (name, value) in items {
        Row::new("report")
            .set("name", name)
            .put("value", value)
            .write(out)?;
    }
    Ok(())
}
