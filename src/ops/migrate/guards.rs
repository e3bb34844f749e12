//! The ciphertext guards of the migrated columns, at the end: each guard
//! added `NOT VALID` (`pgveil guard`) is validated now that the rows it
//! did not check are migrated (`ALTER TABLE ... VALIDATE CONSTRAINT`,
//! which lets reads and writes go on), and the result of each is
//! reported. A column without a guard is reported too; it is not an
//! error. A validation that cannot have its lock within `lock_timeout` is
//! tried again a few times.

use tokio_postgres::Client;

use std::time::Duration;

use super::db::{DbError, Failure};
use super::plan::{Plan, Target};
use super::sql::{ident, table_name};

/// What became of one migrated column's guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GuardOutcome {
    /// The column has no guard.
    Missing,
    /// It was valid already.
    Valid,
    /// It was validated now.
    Validated,
    /// Not validated (a dry run, or a run that did not finish).
    Skipped,
    /// Validation failed: rows the guard refuses are left.
    Failed(String),
}

/// A migrated column's guard and what became of it.
#[derive(Clone, Debug)]
pub(crate) struct GuardResult {
    /// `schema.table.column`.
    pub(crate) column: String,
    /// The constraint, if there is one.
    pub(crate) guard: Option<String>,
    pub(crate) outcome: GuardOutcome,
}

/// Validates the guards of the columns migrated to ciphertext (with
/// `validate` false, only reports them).
pub(super) async fn validate(client: &Client, plan: &Plan, validate: bool) -> Vec<GuardResult> {
    let mut results = Vec::new();
    for table in &plan.tables {
        for column in &table.columns {
            let Target::Encrypt { .. } = column.target else {
                continue;
            };
            let qualified = format!("{}.{}.{}", table.schema, table.table, column.name);
            let Some((guard, valid)) = &column.guard else {
                results.push(GuardResult {
                    column: qualified,
                    guard: None,
                    outcome: GuardOutcome::Missing,
                });
                continue;
            };
            let outcome = if *valid {
                GuardOutcome::Valid
            } else if !validate {
                GuardOutcome::Skipped
            } else {
                let sql = format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                    table_name(table),
                    ident(guard)
                );
                validate_one(client, &sql).await
            };
            results.push(GuardResult {
                column: qualified,
                guard: Some(guard.clone()),
                outcome,
            });
        }
    }
    results
}

/// How many times a validation that could not have its lock in time
/// (`lock_timeout`: a long transaction, a vacuum) is tried.
const ATTEMPTS: u32 = 5;

/// Runs one `VALIDATE CONSTRAINT`, again after a lock timeout.
async fn validate_one(client: &Client, sql: &str) -> GuardOutcome {
    for attempt in 1.. {
        let error = match client.batch_execute(sql).await {
            Ok(()) => return GuardOutcome::Validated,
            Err(e) => DbError::new(e),
        };
        if error.failure != Failure::Retry || attempt >= ATTEMPTS {
            return GuardOutcome::Failed(error.reason);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    unreachable!("the loop returns")
}
