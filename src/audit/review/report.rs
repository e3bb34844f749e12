//! The access review of a period, aggregated from the records in it.

use std::collections::{BTreeMap, BTreeSet};

use super::filter::{decision_index, time_of, DECISIONS};
use super::time::{Buckets, Period};
use super::ReviewError;
use crate::audit::{AlertRecord, AuditRecord, Decision, Outcome, StatementRecord};
use crate::wire::sqlstate::{FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, IO_ERROR};

/// SQLSTATEs of statements pgveil or PostgreSQL refused: feature not
/// supported (pgveil's refusal of what it cannot protect), insufficient
/// privilege, and the audit log being unavailable.
const REFUSED: [&str; 3] = [FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, IO_ERROR];

/// Statements and the rows they returned or affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Count {
    pub statements: u64,
    pub rows: u64,
}

impl Count {
    fn add(&mut self, rows: u64) {
        self.statements += 1;
        self.rows += rows;
    }
}

/// A [`Count`] per decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally([Count; DECISIONS.len()]);

impl Tally {
    /// The count of one decision.
    #[cfg(test)]
    pub(crate) fn get(&self, decision: Decision) -> Count {
        self.0[decision_index(decision)]
    }

    /// The decisions with their counts, in report order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Decision, Count)> + '_ {
        DECISIONS.into_iter().zip(self.0.iter().copied())
    }

    /// Statements over all decisions.
    pub(crate) fn statements(&self) -> u64 {
        self.0.iter().map(|c| c.statements).sum()
    }

    fn add(&mut self, decision: Decision, rows: u64) {
        self.0[decision_index(decision)].add(rows);
    }
}

/// Who accessed which protected column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AccessKey {
    pub role: String,
    pub actor: Option<String>,
    /// `schema.table.column`.
    pub column: String,
}

/// How one role and actor used one protected column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ColumnUse {
    /// Statements and rows by the decision made on the column.
    pub decisions: Tally,
    /// Statements that read or wrote the column.
    pub statements: u64,
    /// Of those, the statements refused (see [`is_refused`]).
    pub refused: u64,
    /// The purposes the sessions declared.
    pub purposes: BTreeSet<String>,
}

/// The whole period at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub statements: u64,
    /// Statements that read or wrote a protected column.
    pub protected: u64,
    pub refused: u64,
    /// Statements that ended in any error, refusals included.
    pub errors: u64,
    pub connections: u64,
    pub failed_logins: u64,
    /// Records the log says it could not write (gap records).
    pub lost: u64,
    /// Rows whose stored value `pgveil migrate` changed (migration
    /// records, in a `migrate/` directory).
    pub migrated: u64,
    /// Values `pgveil migrate` found shaped like ciphertext that does not
    /// decrypt.
    pub undecryptable: u64,
    /// Statements and rows by decision, per protected column touched.
    pub decisions: Tally,
}

/// The access review of a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub period: Period,
    pub totals: Totals,
    pub access: BTreeMap<AccessKey, ColumnUse>,
    /// Per protected column, over all roles.
    pub columns: BTreeMap<String, Tally>,
    pub alerts: Vec<AlertRecord>,
    pub buckets: Buckets,
    /// Rows of statements that returned a protected column in plaintext,
    /// per role and time bucket.
    pub plaintext: BTreeMap<String, BTreeMap<usize, u64>>,
}

impl Report {
    /// Aggregates the records within `period`.
    pub(crate) fn build(
        records: impl IntoIterator<Item = Result<AuditRecord, ReviewError>>,
        period: Period,
    ) -> Result<Self, ReviewError> {
        if period.since >= period.until {
            return Err(ReviewError::EmptyPeriod);
        }
        let mut report = Self {
            period,
            totals: Totals::default(),
            access: BTreeMap::new(),
            columns: BTreeMap::new(),
            alerts: Vec::new(),
            buckets: period.buckets(),
            plaintext: BTreeMap::new(),
        };
        for record in records {
            let record = record?;
            if period.contains(time_of(&record)) {
                report.add(record);
            }
        }
        Ok(report)
    }

    fn add(&mut self, record: AuditRecord) {
        match record {
            AuditRecord::Connect { .. } => self.totals.connections += 1,
            AuditRecord::Authentication {
                outcome: Outcome::Error(_),
                ..
            } => self.totals.failed_logins += 1,
            AuditRecord::Statement(statement) => self.add_statement(&statement),
            AuditRecord::Alert(alert) => self.alerts.push(alert),
            AuditRecord::Gap(gap) => self.totals.lost += gap.lost,
            AuditRecord::Migration(m) => {
                self.totals.migrated += m.rows;
                self.totals.undecryptable += m.undecryptable;
            }
            AuditRecord::Authentication { .. }
            | AuditRecord::Disconnect { .. }
            | AuditRecord::UncleanShutdown(_)
            | AuditRecord::Reload { .. } => {}
        }
    }

    fn add_statement(&mut self, statement: &StatementRecord) {
        let refused = is_refused(statement);
        let totals = &mut self.totals;
        totals.statements += 1;
        totals.protected += u64::from(!statement.columns.is_empty());
        totals.refused += u64::from(refused);
        totals.errors += u64::from(statement.outcome != Outcome::Ok);
        let session = &statement.session;
        let key = |column: &str| AccessKey {
            role: session.login.role.to_string(),
            actor: session.actor.clone(),
            column: column.to_owned(),
        };
        for column in distinct(statement.columns.iter().map(|c| c.column.as_str())) {
            let usage = self.access.entry(key(column)).or_default();
            usage.statements += 1;
            usage.refused += u64::from(refused);
            usage.purposes.extend(session.purpose.clone());
        }
        let decisions = distinct(
            statement
                .columns
                .iter()
                .map(|c| (c.column.as_str(), decision_index(c.decision))),
        );
        for (column, index) in decisions {
            let decision = DECISIONS[index];
            let usage = self.access.get_mut(&key(column)).expect("added above");
            usage.decisions.add(decision, statement.rows);
            let tally = self.columns.entry(column.to_owned()).or_default();
            tally.add(decision, statement.rows);
            self.totals.decisions.add(decision, statement.rows);
        }
        if statement
            .columns
            .iter()
            .any(|c| c.decision == Decision::Plaintext)
        {
            let bucket = self.buckets.index(statement.time);
            *self
                .plaintext
                .entry(session.login.role.to_string())
                .or_default()
                .entry(bucket)
                .or_default() += statement.rows;
        }
    }
}

/// Whether a statement was refused: a refusal SQLSTATE, or a protected
/// column denied.
pub(crate) fn is_refused(statement: &StatementRecord) -> bool {
    let refused_code = match statement.outcome {
        Outcome::Error(code) => REFUSED.contains(&code.as_str()),
        Outcome::Ok => false,
    };
    refused_code
        || statement
            .columns
            .iter()
            .any(|c| c.decision == Decision::Denied)
}

/// The distinct items, sorted.
fn distinct<T: Ord>(items: impl Iterator<Item = T>) -> BTreeSet<T> {
    items.collect()
}
