//! A [`Report`] as readable text tables, or as CSV.

use std::io::{self, Write};

use super::filter::DECISIONS;
use super::layout::{write_aligned, write_csv_row};
use super::report::{AccessKey, Report};

/// Shown where a role has no declared actor.
const NO_ACTOR: &str = "-";

/// Writes the totals, the decisions, the access per role, actor and
/// column, and the alerts.
pub(super) fn write_text(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "pgveil access review: {}", period_text(report))?;
    writeln!(out, "{}", UNVERIFIED)?;
    section(out, "Totals")?;
    write_aligned(out, &["", "count"], &totals_rows(report))?;
    section(out, "Protected columns by decision (statements / rows)")?;
    write_aligned(out, &column_header(), &column_rows(report))?;
    section(out, "Access by role, actor and column (rows by decision)")?;
    write_aligned(out, &access_header(), &access_rows(report))?;
    section(out, "Alerts")?;
    if report.alerts.is_empty() {
        writeln!(out, "none")?;
    } else {
        write_aligned(out, &ALERT_HEADER, &alert_rows(report))?;
    }
    Ok(())
}

/// Writes one row per role, actor, column and decision with statements
/// and rows, for decisions that occurred.
pub(super) fn write_csv(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    write_csv_row(
        out,
        &["role", "actor", "column", "decision", "statements", "rows"],
    )?;
    for (key, usage) in &report.access {
        for (decision, count) in usage.decisions.iter().filter(|(_, c)| c.statements > 0) {
            write_csv_row(
                out,
                &[
                    key.role.as_str(),
                    key.actor.as_deref().unwrap_or_default(),
                    &key.column,
                    decision.name(),
                    &count.statements.to_string(),
                    &count.rows.to_string(),
                ],
            )?;
        }
    }
    Ok(())
}

/// The warning every report carries.
pub(super) const UNVERIFIED: &str =
    "Read without verifying the log: run `pgveil audit verify` on the same directory.";

pub(super) fn period_text(report: &Report) -> String {
    format!(
        "{} to {} (end excluded)",
        humantime::format_rfc3339_seconds(report.period.since.0),
        humantime::format_rfc3339_seconds(report.period.until.0)
    )
}

fn section(out: &mut dyn Write, title: &str) -> io::Result<()> {
    writeln!(out, "\n{title}\n")
}

pub(super) fn totals_rows(report: &Report) -> Vec<Vec<String>> {
    let totals = &report.totals;
    [
        ("statements", totals.statements),
        ("statements on protected columns", totals.protected),
        ("refused statements", totals.refused),
        ("failed statements (any error)", totals.errors),
        ("connections", totals.connections),
        ("failed logins", totals.failed_logins),
        ("alerts", report.alerts.len() as u64),
        ("records lost (not written)", totals.lost),
        ("rows migrated (pgveil migrate)", totals.migrated),
        ("undecryptable values (migrate)", totals.undecryptable),
    ]
    .into_iter()
    .map(|(name, count)| vec![name.to_owned(), count.to_string()])
    .collect()
}

/// Per column, `statements / rows` under each decision.
pub(super) fn column_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .columns
        .iter()
        .map(|(column, tally)| {
            let mut row = vec![column.clone()];
            row.extend(
                tally
                    .iter()
                    .map(|(_, c)| format!("{} / {}", c.statements, c.rows)),
            );
            row
        })
        .collect()
}

/// `before`, the decision names, then `after`: a header for rows that
/// hold a cell per decision.
fn with_decisions(before: &[&'static str], after: &[&'static str]) -> Vec<&'static str> {
    let mut header = before.to_vec();
    header.extend(DECISIONS.map(|d| d.name()));
    header.extend(after);
    header
}

pub(super) fn column_header() -> Vec<&'static str> {
    with_decisions(&["column"], &[])
}

pub(super) fn access_header() -> Vec<&'static str> {
    with_decisions(
        &["role", "actor", "column"],
        &["statements", "refused", "purposes"],
    )
}

/// Per role, actor and column: rows under each decision, statements,
/// refused statements and purposes.
pub(super) fn access_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .access
        .iter()
        .map(
            |(
                AccessKey {
                    role,
                    actor,
                    column,
                },
                usage,
            )| {
                let mut row = vec![
                    role.clone(),
                    actor.as_deref().unwrap_or(NO_ACTOR).to_owned(),
                    column.clone(),
                ];
                row.extend(usage.decisions.iter().map(|(_, c)| c.rows.to_string()));
                row.push(usage.statements.to_string());
                row.push(usage.refused.to_string());
                row.push(
                    usage
                        .purposes
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                row
            },
        )
        .collect()
}

pub(super) const ALERT_HEADER: [&str; 7] = [
    "time",
    "role",
    "actor",
    "column",
    "rows",
    "threshold",
    "window",
];

pub(super) fn alert_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .alerts
        .iter()
        .map(|alert| {
            vec![
                humantime::format_rfc3339_seconds(alert.time.0).to_string(),
                alert.role.clone(),
                alert.actor.as_deref().unwrap_or(NO_ACTOR).to_owned(),
                alert.column.clone(),
                alert.rows.to_string(),
                alert.threshold.to_string(),
                format!("{} s", alert.window_secs),
            ]
        })
        .collect()
}
