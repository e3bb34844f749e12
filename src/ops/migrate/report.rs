//! What a run prints when it ends, and its exit code: per table its rows,
//! time and rate and per column what was found and done (or, in a dry
//! run, would be), the guards, the audit records, and what is left.
//!
//! Exit codes: 0 when every value is as the policy asks and every guard
//! is valid; 1 when something is left (undecryptable values, rows the
//! database refused or that kept changing, a guard that failed to
//! validate, a run interrupted); 2 when the run stopped on an error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::guards::{GuardOutcome, GuardResult};
use super::plan::{TablePlan, Target, Walk};
use super::scan::TableResult;
use crate::ops::maintenance::Target as Upstream;

/// A table of a run: `result` is `None` when an earlier run finished it.
pub(crate) struct TableReport {
    pub(super) plan: TablePlan,
    pub(super) result: Option<TableResult>,
}

/// What a run did.
pub(crate) struct Report {
    upstream: Upstream,
    dry_run: bool,
    pub(super) tables: Vec<TableReport>,
    pub(super) guards: Vec<GuardResult>,
    /// The migration's audit directory and the records written to it.
    pub(super) audit: Option<(PathBuf, u64)>,
    pub(super) notes: Vec<String>,
    pub(super) interrupted: bool,
    /// What stopped the run.
    pub(super) error: Option<String>,
    pub(super) elapsed: Duration,
}

impl Report {
    pub(super) fn new(upstream: Upstream, dry_run: bool) -> Self {
        Report {
            upstream,
            dry_run,
            tables: Vec::new(),
            guards: Vec::new(),
            audit: None,
            notes: Vec::new(),
            interrupted: false,
            error: None,
            elapsed: Duration::ZERO,
        }
    }

    /// One more audit record written.
    pub(super) fn audited(&mut self) {
        if let Some((_, records)) = &mut self.audit {
            *records += 1;
        }
    }

    /// The run stopped (or the audit log failed): `error` is why.
    pub(super) fn fail(&mut self, error: String) {
        match &mut self.error {
            Some(first) => {
                first.push('\n');
                first.push_str(&error);
            }
            None => self.error = Some(error),
        }
    }

    /// Rows read over every table by this run.
    pub(crate) fn rows(&self) -> u64 {
        self.results().map(|r| r.read).sum()
    }

    fn results(&self) -> impl Iterator<Item = &TableResult> {
        self.tables.iter().filter_map(|t| t.result.as_ref())
    }

    /// What is left: undecryptable values, refused or busy rows.
    fn left(&self) -> Vec<String> {
        let mut left = Vec::new();
        for table in &self.tables {
            let Some(result) = &table.result else {
                continue;
            };
            for (column, counts) in table.plan.columns.iter().zip(&result.counts) {
                let name = format!("{}.{}.{}", table.plan.schema, table.plan.table, column.name);
                for (count, what) in [
                    (
                        counts.undecryptable,
                        "undecryptable values (never changed or shown)",
                    ),
                    (counts.refused, "values the database refused"),
                    (counts.busy, "values in rows that kept changing"),
                ] {
                    if count > 0 {
                        left.push(format!("{name}: {count} {what}"));
                    }
                }
            }
            if result.unsettled > 0 {
                left.push(format!(
                    "{}.{}: {} rows still changing after the last pass",
                    table.plan.schema, table.plan.table, result.unsettled
                ));
            }
        }
        for guard in &self.guards {
            if let GuardOutcome::Failed(why) = &guard.outcome {
                left.push(format!(
                    "{}: the guard did not validate: {why}",
                    guard.column
                ));
            }
        }
        left
    }

    /// 0 all done and guards valid, 1 something left, 2 stopped by an
    /// error.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.error.is_some() {
            2
        } else if self.interrupted || !self.left().is_empty() {
            1
        } else {
            0
        }
    }

    /// Writes the report.
    pub(crate) fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let mode = if self.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        };
        writeln!(out, "pgveil migrate: {}{mode}", self.upstream)?;
        for note in &self.notes {
            writeln!(out, "note: {note}")?;
        }
        for table in &self.tables {
            self.print_table(out, table)?;
        }
        self.print_guards(out)?;
        if self.dry_run {
            writeln!(out, "\naudit: a dry run writes no audit record")?;
        } else {
            match &self.audit {
                Some((dir, records)) => writeln!(
                    out,
                    "\naudit: {records} migration records in {} (verify with `pgveil audit verify {} --config ...`)",
                    dir.display(),
                    dir.display()
                )?,
                None => writeln!(
                    out,
                    "\naudit: the configuration has no [audit] section, so no audit record was written"
                )?,
            }
        }
        let secs = self.elapsed.as_secs_f64().max(0.001);
        writeln!(
            out,
            "\n{} {} rows in {secs:.1} s ({:.0} rows/s)",
            if self.dry_run { "read" } else { "migrated" },
            self.rows(),
            self.rows() as f64 / secs
        )?;
        let left = self.left();
        for line in &left {
            writeln!(out, "left: {line}")?;
        }
        if self.interrupted {
            writeln!(
                out,
                "interrupted: run pgveil migrate again to go on from here"
            )?;
        }
        if let Some(error) = &self.error {
            writeln!(out, "stopped: {error}")?;
            writeln!(
                out,
                "what was committed stays; run pgveil migrate again to go on"
            )?;
        } else if left.is_empty() && !self.interrupted && !self.dry_run {
            writeln!(out, "done: every value is as the policy asks")?;
        }
        Ok(())
    }

    fn print_table(&self, out: &mut dyn Write, table: &TableReport) -> io::Result<()> {
        let plan = &table.plan;
        let walk = match &plan.walk {
            Walk::Key(keys) => {
                let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                format!("primary key {}", names.join(", "))
            }
            Walk::Ctid => "ctid".to_owned(),
        };
        let Some(result) = &table.result else {
            return writeln!(
                out,
                "\n{}.{}: done by an earlier run",
                plan.schema, plan.table
            );
        };
        let secs = result.elapsed.as_secs_f64().max(0.001);
        let passes = match result.passes {
            0 | 1 => String::new(),
            n => format!(", {n} passes"),
        };
        let resumed = match result.resumed {
            true => format!(
                ", resumed after {} rows done by an earlier run",
                result.carried
            ),
            false => String::new(),
        };
        writeln!(
            out,
            "\n{}.{} (by {walk}{passes}): {} rows; this run read {} in {secs:.1} s \
             ({:.0} rows/s){resumed}{}",
            plan.schema,
            plan.table,
            result.rows,
            result.read,
            result.read as f64 / secs,
            if result.interrupted {
                ", interrupted"
            } else {
                ""
            },
        )?;
        let header: &[&str] = if self.dry_run {
            &[
                "column",
                "target",
                "values",
                "plaintext",
                "old version",
                "other mode",
                "to decrypt",
                "undecryptable",
                "current",
            ]
        } else {
            &[
                "column",
                "target",
                "values",
                "encrypted",
                "re-encrypted (old version)",
                "re-encrypted (other mode)",
                "decrypted",
                "undecryptable",
                "refused",
                "current",
            ]
        };
        let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        for (column, counts) in plan.columns.iter().zip(&result.counts) {
            let target = match &column.target {
                Target::Encrypt { mode, key, .. } => {
                    format!("{} v{}", format!("{mode:?}").to_lowercase(), key.version)
                }
                Target::Decrypt { .. } => "plaintext".to_owned(),
            };
            let mut row = vec![
                column.name.clone(),
                target,
                counts.seen.to_string(),
                counts.encrypted.to_string(),
                counts.old_key.to_string(),
                counts.other_mode.to_string(),
                counts.decrypted.to_string(),
                counts.undecryptable.to_string(),
            ];
            if !self.dry_run {
                row.push((counts.refused + counts.busy).to_string());
            }
            row.push(counts.current.to_string());
            rows.push(row);
        }
        write_aligned(out, &rows)?;
        for (reason, count) in &result.refusals {
            writeln!(out, "  refused {count} rows: {reason}")?;
        }
        Ok(())
    }

    fn print_guards(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.guards.is_empty() {
            return Ok(());
        }
        writeln!(out, "\nguards:")?;
        for guard in &self.guards {
            let name = guard.guard.as_deref().unwrap_or_default();
            let what = match &guard.outcome {
                GuardOutcome::Missing => {
                    "no ciphertext guard (add it: pgveil guard --policy POLICY | psql)".to_owned()
                }
                GuardOutcome::Valid => format!("{name} valid"),
                GuardOutcome::Validated => format!("{name} validated"),
                GuardOutcome::Skipped => format!("{name} not validated yet"),
                GuardOutcome::Failed(why) => format!("{name} failed to validate: {why}"),
            };
            writeln!(out, "  {}: {what}", guard.column)?;
        }
        Ok(())
    }
}

/// Writes rows with their columns aligned, indented.
fn write_aligned(out: &mut dyn Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| match i {
                0 | 1 => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        writeln!(out, "  {}", cells.join("  ").trim_end())?;
    }
    Ok(())
}
