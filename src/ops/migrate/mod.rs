//! `pgveil migrate`: brings the values stored in the database in line with
//! the policy and the keyring, online, while the application goes on
//! working through pgveil.
//!
//! - Plaintext left in a protected column (rows written before pgveil) is
//!   encrypted.
//! - Ciphertext under an old key version of its domain, or in the other
//!   mode (randomized ↔ deterministic), is encrypted again under the
//!   domain's current key in the policy's mode.
//! - With `--decrypt`, the ciphertext of a column taken out of the policy
//!   is turned back into plaintext.
//! - Values shaped like ciphertext that do not decrypt are never changed
//!   and never shown: counted per column, reported, and the run ends with
//!   exit code 1.
//!
//! It runs on pgveil's own connections to the upstream server
//! (`[maintenance]`, `ops::maintenance`): one reads batches, the other
//! writes them. The modules, in the order a run uses them:
//!
//! - `plan`: the tables and columns, read from the catalog and checked
//!   before anything is written;
//! - `state`: the progress of an interrupted run, resumed;
//! - `scan` (with `reader`, `value`, `sql`, `params`, `db`): each table in batches of
//!   short transactions with a compare-and-set, rows changed meanwhile
//!   read again;
//! - `progress`, `counts`: what is shown and counted;
//! - `record`: the audit records, in `<[audit] dir>/migrate/`, a chain of
//!   its own (the directory itself belongs to `serve`'s writer);
//! - `guards`: the guards of the migrated columns validated at the end;
//! - `report`: what is printed, and the exit code.

mod counts;
mod db;
mod guards;
mod params;
mod plan;
mod progress;
mod reader;
mod record;
mod report;
mod scan;
mod sql;
mod state;
mod value;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use thiserror::Error;

use crate::audit::{AuditConfig, AuditHandle, AuditSink, Login};
use crate::ops::maintenance::{self, MaintenanceError};
use crate::protect::protection::Protection;
use crate::proxy::config::Config;
use db::DbError;
pub(crate) use plan::DecryptColumn;
use plan::{Plan, PlanError};
use progress::Progress;
pub(crate) use report::Report;
use report::TableReport;
use scan::{ScanOptions, Scanner};
use state::State;

/// The settings of the writing session: a row the application keeps
/// locked makes a batch fail (and be retried) after this long instead of
/// holding the batch's other rows locked behind it.
const SESSION: &str = "SET lock_timeout = '2s'";

/// The batch size when none is given.
pub(crate) const DEFAULT_BATCH_SIZE: u32 = 1000;

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Columns to turn back into plaintext.
    pub(crate) decrypt: Vec<DecryptColumn>,
    /// Report what would change and write nothing.
    pub(crate) dry_run: bool,
    /// Rows per batch (per transaction).
    pub(crate) batch_size: usize,
    /// A ceiling on rows read per second.
    pub(crate) max_rows_per_second: Option<u64>,
    /// The state file, instead of the one next to the keyring.
    pub(crate) state: Option<PathBuf>,
}

/// The migration could not start: nothing was written.
#[derive(Debug, Error)]
pub(crate) enum MigrateError {
    #[error(transparent)]
    Connect(#[from] MaintenanceError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot set up the maintenance session: {0}")]
    Session(DbError),
    #[error("cannot open the migration's audit log: {0}")]
    Audit(String),
}

/// Runs the migration `options` asks for with `protection` on the
/// database `config` names. `stop`, once set, ends the run after the
/// batch under way (resumable). Errors before anything is written are
/// returned; an error while migrating is in the report, with what was
/// done before it.
pub(crate) async fn run(
    config: &Config,
    protection: &Protection,
    options: &Options,
    stop: &AtomicBool,
) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let (write, upstream) = maintenance::connect(config).await?;
    let plan = Plan::read(&write, protection, &options.decrypt, !options.dry_run).await?;
    let (read, _) = maintenance::connect(config).await?;
    write
        .batch_execute(SESSION)
        .await
        .map_err(|e| MigrateError::Session(DbError::new(e)))?;
    let login = Login {
        database: upstream.database.as_str().into(),
        role: upstream.user.as_str().into(),
    };
    let mut report = Report::new(upstream.clone(), options.dry_run);
    let audit = match options.dry_run {
        true => None,
        false => start_audit(config)?,
    };
    report.audit = audit.as_ref().map(|(_, dir)| (dir.clone(), 0));
    let state = match options.dry_run {
        true => None,
        false => {
            let path = match (&options.state, &config.keyring) {
                (Some(path), _) => path.clone(),
                (None, Some(keyring)) => State::default_path(keyring),
                (None, None) => unreachable!("a protection has a keyring"),
            };
            let (state, note) = State::open(&path, &plan.fingerprint(&upstream));
            report.notes.extend(note);
            Some(state)
        }
    };
    let mut scanner = Scanner {
        keyring: &protection.keyring,
        write: &write,
        read: Some(read),
        options: ScanOptions {
            batch_size: options.batch_size,
            dry_run: options.dry_run,
            max_rows_per_second: options.max_rows_per_second,
        },
        stop,
        progress: Progress::new(options.dry_run),
        state,
        throttle: (0, Instant::now()),
    };
    for line in &report.notes {
        scanner.progress.note(line);
    }
    for table in &plan.tables {
        let name = format!("{}.{}", table.schema, table.table);
        if scanner.state.as_ref().is_some_and(|s| s.is_done(&name)) {
            scanner
                .progress
                .note(&format!("{name}: done by an earlier run"));
            report.tables.push(TableReport {
                plan: table.clone(),
                result: None,
            });
            continue;
        }
        let (result, outcome) = scanner.table(table).await;
        if let Some((handle, _)) = &audit {
            for record in record::records(table, &result, &login, outcome.is_err()) {
                match handle.record(record) {
                    Ok(()) => report.audited(),
                    Err(e) => report.fail(format!("the audit log cannot take a record: {e}")),
                }
            }
        }
        // Resumed later, the table's next records count only the rest.
        if (result.interrupted || outcome.is_err()) && audit.is_some() {
            if let Some(Err(e)) = scanner.state.as_mut().map(State::recorded) {
                report.fail(e.to_string());
            }
        }
        let finished = outcome.is_ok() && !result.interrupted;
        report.interrupted |= result.interrupted;
        report.tables.push(TableReport {
            plan: table.clone(),
            result: Some(result),
        });
        if let Err(e) = outcome {
            report.fail(e.to_string());
            break;
        }
        if !finished {
            break;
        }
        if let Some(state) = &mut scanner.state {
            if let Err(e) = state.finish(&name) {
                report.fail(e.to_string());
                break;
            }
        }
    }
    let complete = report.error.is_none() && !report.interrupted;
    report.guards = guards::validate(&write, &plan, complete && !options.dry_run).await;
    if complete {
        if let Some(state) = scanner.state.take() {
            if let Err(e) = state.remove() {
                report.notes.push(e.to_string());
            }
        }
    }
    if let Some((handle, _)) = audit {
        if let Err(e) = handle.shutdown().await {
            report.fail(format!("the audit log could not be sealed: {e}"));
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Starts the migration's audit log, in `<[audit] dir>/migrate/`, with the
/// keys and settings of the proxy's: `None` without `[audit]`.
fn start_audit(config: &Config) -> Result<Option<(AuditHandle, PathBuf)>, MigrateError> {
    let keys = config.audit_keys().map_err(MigrateError::Audit)?;
    let (Some(audit), Some(keys)) = (&config.audit, keys) else {
        return Ok(None);
    };
    let dir = audit.dir.join("migrate");
    let audit = AuditConfig {
        dir: dir.clone(),
        bulk: None,
        ..audit.clone()
    };
    let (handle, _writer) =
        AuditSink::start(&audit, keys).map_err(|e| MigrateError::Audit(e.to_string()))?;
    Ok(Some((handle, dir)))
}
