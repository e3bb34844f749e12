//! The check's report, as a table for people and as JSON for tools.

use std::io::{self, Write};

use serde::Serializer;

use super::{Guard, Report, Severity};
use crate::protect::policy::Location;

/// Writes a location as `"file:line"`.
pub(super) fn location<S: Serializer>(at: &Option<Location>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&at.to_string()),
        None => s.serialize_none(),
    }
}

/// The report as one JSON object.
pub(crate) fn print_json(report: &Report, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// The report as an aligned table of the columns, then the findings.
pub(crate) fn print_table(report: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "policy check against {}\n", report.target)?;
    let width = report
        .columns
        .iter()
        .map(|c| c.column.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let type_width = report
        .columns
        .iter()
        .filter_map(|c| c.type_name.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:type_width$}  {:13}  {:>3}  {:13}  {:>9}  {:>9}  {:>7}  {:>10}  {:>7}",
        "COLUMN",
        "TYPE",
        "ENCRYPTION",
        "KEY",
        "GUARD",
        "VALUES",
        "PLAINTEXT",
        "OLD KEY",
        "OTHER MODE",
        "UNKNOWN"
    )?;
    for c in &report.columns {
        let key = c.key_version.map_or("-".into(), |v| format!("v{v}"));
        let guard = match c.guard {
            None => "-",
            Some(Guard::Missing) => "missing",
            Some(Guard::NotValidated) => "not validated",
            Some(Guard::Validated) => "validated",
        };
        let counts = match &c.rows {
            Some(r) => {
                [r.values, r.plaintext, r.old(), r.other_mode, r.unknown].map(|n| n.to_string())
            }
            None => std::array::from_fn(|_| "-".to_owned()),
        };
        writeln!(
            out,
            "{:width$}  {:type_width$}  {:13}  {key:>3}  {guard:13}  {:>9}  {:>9}  {:>7}  {:>10}  {:>7}",
            c.column,
            c.type_name.as_deref().unwrap_or("-"),
            c.encryption,
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            counts[4],
        )?;
    }
    let errors = count(report, Severity::Error);
    let warnings = count(report, Severity::Warning);
    if report.findings.is_empty() {
        writeln!(out, "\nok: the policy matches the database")?;
        return Ok(());
    }
    writeln!(out, "\n{errors} error(s), {warnings} warning(s):")?;
    for finding in &report.findings {
        let label = match finding.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(out, "{label}: {finding}")?;
    }
    Ok(())
}

fn count(report: &Report, severity: Severity) -> usize {
    report
        .findings
        .iter()
        .filter(|f| f.severity == severity)
        .count()
}
