//! `pgveil audit search`: the records a [`Filter`] selects, as a table,
//! JSON lines or CSV.

use std::io::Write;
use std::path::Path;

use clap::ValueEnum;

use super::filter::{Facts, Filter};
use super::layout::{truncate, write_aligned, write_csv_row};
use super::read::Records;
use super::ReviewError;
use crate::audit::{AuditRecord, MigrationRecord, Outcome};

/// How `search` prints records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum SearchFormat {
    /// Aligned columns, statements shortened.
    #[default]
    Table,
    /// One record per line as stored, without `seq` and `mac`.
    Json,
    /// CSV with a header row, statements in full.
    Csv,
}

/// The columns of table and CSV output.
const HEADER: [&str; 11] = [
    "time",
    "event",
    "conn",
    "role",
    "actor",
    "purpose",
    "kind",
    "outcome",
    "rows",
    "columns",
    "statement",
];

/// Statements in table output are cut to this many characters.
const TABLE_STATEMENT_CHARS: usize = 60;

/// Writes the records of `dir` that `filter` selects to `out`.
pub(crate) fn search(
    dir: &Path,
    filter: &Filter,
    format: SearchFormat,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    let selected = Records::open(dir)?.filter(|r| r.as_ref().map_or(true, |r| filter.matches(r)));
    match format {
        SearchFormat::Json => {
            for record in selected {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&record?).expect("records serialize")
                )?;
            }
        }
        SearchFormat::Csv => {
            write_csv_row(out, &HEADER)?;
            for record in selected {
                write_csv_row(out, &cells(&record?))?;
            }
        }
        SearchFormat::Table => {
            let rows = selected
                .map(|record| record.map(|r| table_row(&r)))
                .collect::<Result<Vec<_>, _>>()?;
            write_aligned(out, &HEADER, &rows)?;
        }
    }
    Ok(())
}

fn table_row(record: &AuditRecord) -> Vec<String> {
    let mut cells = cells(record);
    let statement = cells.last_mut().expect("a statement cell");
    *statement = truncate(statement, TABLE_STATEMENT_CHARS);
    cells
}

/// A record's cells under [`HEADER`], for tests.
#[cfg(test)]
pub(super) fn cells_of(record: &AuditRecord) -> Vec<String> {
    cells(record)
}

/// A record's cells under [`HEADER`]; empty where it has no such field.
fn cells(record: &AuditRecord) -> Vec<String> {
    let facts = Facts::of(record);
    let text = |field: Option<&str>| field.unwrap_or_default().to_owned();
    let number = |field: Option<u64>| field.map(|n| n.to_string()).unwrap_or_default();
    let columns: Vec<String> = facts
        .columns
        .iter()
        .map(|c| match (c.decision, c.policy_role) {
            (Some(decision), Some(role)) => format!("{}:{}({role})", c.name, decision.name()),
            (Some(decision), None) => format!("{}:{}", c.name, decision.name()),
            (None, _) => c.name.to_owned(),
        })
        .collect();
    vec![
        humantime::format_rfc3339_seconds(facts.time.0).to_string(),
        facts.event.name().to_owned(),
        number(facts.connection),
        text(facts.role),
        text(facts.actor),
        text(facts.purpose),
        text(facts.kind),
        facts.outcome.map(outcome_text).unwrap_or_default(),
        number(facts.rows),
        columns.join(" "),
        detail(record),
    ]
}

/// The statement text, or what else a record tells.
pub(super) fn detail(record: &AuditRecord) -> String {
    match record {
        AuditRecord::Statement(s) => s.statement.as_str().to_owned(),
        AuditRecord::Connect { peer, .. } => format!("from {}", peer.client),
        AuditRecord::Authentication { peer, login, .. } => {
            format!("database {} from {}", login.database, peer.client)
        }
        AuditRecord::Disconnect { statements, .. } => format!("{statements} statements"),
        AuditRecord::Alert(alert) => {
            format!("over {} rows in {} s", alert.threshold, alert.window_secs)
        }
        AuditRecord::Gap(gap) => format!("{} records lost ({})", gap.lost, gap.cause.name()),
        AuditRecord::UncleanShutdown(end) => format!(
            "the previous run ended without a clean shutdown after seq {} ({}{}); \
             records it still held in memory are lost, how many is unknown",
            end.last_seq,
            end.file,
            if end.torn {
                ", a partly written record cut off"
            } else {
                ""
            }
        ),
        AuditRecord::Reload { reason: None, .. } => "policy and keyring reloaded".to_owned(),
        AuditRecord::Reload {
            reason: Some(reason),
            ..
        } => format!("reload refused: {reason}"),
        AuditRecord::Migration(m) => migration_detail(m),
        AuditRecord::ApprovalUse(used) => format!(
            "approval {} for role {} ticket {}: {} row(s) left",
            used.approval, used.policy_role, used.ticket, used.rows_left
        ),
    }
}

/// What a migration record tells: the key versions and mode, and the
/// values left as they were.
fn migration_detail(m: &MigrationRecord) -> String {
    let from = match m.from_versions.as_slice() {
        [] => "plaintext".to_owned(),
        versions => {
            let versions: Vec<String> = versions.iter().map(u32::to_string).collect();
            format!("key version {}", versions.join(","))
        }
    };
    let to = match (m.to_version, m.mode) {
        (Some(version), Some(mode)) => format!("key version {version} ({mode:?})").to_lowercase(),
        (Some(version), None) => format!("key version {version}"),
        _ => "plaintext".to_owned(),
    };
    let mut detail = format!("{} {from} -> {to}, domain {}", m.action.name(), m.domain);
    if m.undecryptable > 0 {
        detail.push_str(&format!(", {} undecryptable", m.undecryptable));
    }
    if m.refused > 0 {
        detail.push_str(&format!(", {} refused by the database", m.refused));
    }
    if m.resumed {
        detail.push_str(", resumed");
    }
    detail
}

fn outcome_text(outcome: Outcome) -> String {
    match outcome {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Error(code) => code.as_str().to_owned(),
    }
}
