//! The audit records of a table's migration: per column, one record for
//! its main action (encrypting plaintext, or decrypting), with the values
//! left as they were, and one for the values encrypted again if there
//! were any. They hold names, counts, key versions and the mode, never a
//! value.
//!
//! A table's records are written when it is finished, or when a signal
//! stops the run; each counts what no earlier record of the table did. A
//! run killed outright writes none, and the run that resumes it counts
//! what the killed run committed too (the state carries it), with
//! `resumed` set.

use crate::audit::{
    AuditRecord, Login, MigrationAction, MigrationRecord, Outcome, SqlState, Timestamp,
};

use super::counts::Counts;
use super::plan::{TablePlan, Target};
use super::scan::TableResult;

/// `query_canceled`: a run stopped by a signal.
const INTERRUPTED: &str = "57014";
/// `data_corrupted`: values shaped like ciphertext that do not decrypt.
const UNDECRYPTABLE: &str = "XX001";
/// `serialization_failure`: rows that kept changing under the migration.
const BUSY: &str = "40001";
/// `connection_failure`: a run that stopped on an error.
const STOPPED: &str = "08006";

/// The records of `table`'s migration; `stopped` if it ended on an error.
pub(super) fn records(
    table: &TablePlan,
    result: &TableResult,
    login: &Login,
    stopped: bool,
) -> Vec<AuditRecord> {
    let name = format!("{}.{}", table.schema, table.table);
    let mut records = Vec::new();
    for ((column, counts), recorded) in table
        .columns
        .iter()
        .zip(&result.counts)
        .zip(&result.recorded)
    {
        let counts = &counts.since(recorded);
        let outcome = outcome(result, counts, stopped);
        let record = |action, rows, from_versions: Vec<u32>, left: bool| {
            let (to_version, mode) = match &column.target {
                Target::Encrypt { key, mode, .. } => (Some(key.version), Some(*mode)),
                Target::Decrypt { .. } => (None, None),
            };
            AuditRecord::Migration(Box::new(MigrationRecord {
                time: Timestamp::now(),
                login: login.clone(),
                table: name.clone(),
                column: format!("{name}.{}", column.name),
                action,
                domain: column.target.domain().to_owned(),
                rows,
                from_versions,
                to_version,
                mode,
                undecryptable: if left { counts.undecryptable } else { 0 },
                refused: if left { counts.refused } else { 0 },
                resumed: result.resumed,
                outcome,
            }))
        };
        let versions: Vec<u32> = counts.from_versions.keys().copied().collect();
        match column.target {
            Target::Encrypt { .. } => {
                records.push(record(
                    MigrationAction::Encrypt,
                    counts.encrypted,
                    Vec::new(),
                    true,
                ));
                let again = counts.old_key + counts.other_mode;
                if again > 0 {
                    records.push(record(MigrationAction::ReEncrypt, again, versions, false));
                }
            }
            Target::Decrypt { .. } => {
                records.push(record(
                    MigrationAction::Decrypt,
                    counts.decrypted,
                    versions,
                    true,
                ));
            }
        }
    }
    records
}

/// How a column's migration ended.
fn outcome(result: &TableResult, counts: &Counts, stopped: bool) -> Outcome {
    let code = if stopped {
        STOPPED
    } else if result.interrupted {
        INTERRUPTED
    } else if counts.undecryptable > 0 {
        UNDECRYPTABLE
    } else if counts.refused > 0 {
        result.refusal_code.as_deref().unwrap_or(UNDECRYPTABLE)
    } else if counts.busy > 0 || result.unsettled > 0 {
        BUSY
    } else {
        return Outcome::Ok;
    };
    let internal = || SqlState::new("XX000").expect("a valid SQLSTATE");
    Outcome::Error(SqlState::new(code).unwrap_or_else(|_| internal()))
}
