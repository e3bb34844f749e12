//! The access review of a period, aggregated from the records in it.
//!
//! Who is counted is a *role* and a *user*: the role is the policy role
//! that decided a protected-column access (recorded on each column
//! access), or the login role where the record names none (records from
//! before pgveil recorded it, failed logins, statements on no protected
//! column); the user is the login role. A statement whose columns were
//! decided under several policy roles counts once under each.
//!
//! Everything is kept in sorted maps while the records are read and
//! turned into the sorted lists of [`Report`] at the end, so that the
//! same log and period always give the same report data, byte for byte
//! (its digest, [`Report::digest`], is printed in every format).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::filter::{decision_index, time_of, DECISIONS};
use super::time::{Chart, Period, Series};
use super::verified::{hex, Verification};
use super::ReviewError;
use crate::audit::{
    Access, AlertRecord, AuditRecord, ColumnAccess, Decision, Outcome, StatementRecord, Timestamp,
};
use crate::wire::sqlstate::{FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, IO_ERROR};

/// SQLSTATEs of statements pgveil or PostgreSQL refused: feature not
/// supported (pgveil's refusal of what it cannot protect), insufficient
/// privilege, and the audit log being unavailable.
const REFUSED: [&str; 3] = [FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, IO_ERROR];

/// Statements and the rows they returned or affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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

/// A [`Count`] per decision; as JSON, an object keyed by decision name.
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

impl Serialize for Tally {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(DECISIONS.len()))?;
        for (decision, count) in self.iter() {
            map.serialize_entry(decision.name(), &count)?;
        }
        map.end()
    }
}

/// The whole period at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Totals {
    pub records: u64,
    pub statements: u64,
    /// Statements that read or wrote a protected column.
    pub protected: u64,
    /// Statements that read a protected column.
    pub reads: u64,
    /// Statements that wrote a protected column.
    pub writes: u64,
    /// Statements that read a protected column without a declared purpose.
    pub reads_without_purpose: u64,
    pub refused: u64,
    /// Statements that ended in any error, refusals included.
    pub errors: u64,
    pub connections: u64,
    pub failed_logins: u64,
    pub alerts: u64,
    /// Records the log says it could not write (gap records).
    pub lost: u64,
    /// Rows whose stored value `pgveil migrate` changed (migration
    /// records, in a `migrate/` directory).
    pub migrated: u64,
    /// Values `pgveil migrate` found shaped like ciphertext that does not
    /// decrypt.
    pub undecryptable: u64,
    /// Reads: statements and rows by decision, per protected column read.
    pub read_decisions: Tally,
}

/// What one login user did under one role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Activity {
    pub role: String,
    pub user: String,
    pub statements: u64,
    /// Statements that read a protected column decided under the role.
    pub reads: u64,
    /// Statements that wrote a protected column.
    pub writes: u64,
    /// Of the reads, those of sessions that declared no purpose.
    pub reads_without_purpose: u64,
    pub refused: u64,
    /// Statements that ended in an error other than a refusal.
    pub errors: u64,
    pub failed_logins: u64,
}

/// Who used one protected column: role, login user, declared actor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AccessKey {
    pub role: String,
    pub user: String,
    pub actor: Option<String>,
    /// `schema.table.column`.
    pub column: String,
}

/// How one role, user and actor read one protected column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Reads {
    pub role: String,
    pub user: String,
    pub actor: Option<String>,
    pub column: String,
    /// Statements and rows by the decision made on the column.
    pub decisions: Tally,
    /// Statements that read the column.
    pub statements: u64,
    /// Of those, statements of sessions that declared no purpose.
    pub without_purpose: u64,
    /// The purposes the sessions declared.
    pub purposes: BTreeSet<String>,
}

/// How one role, user and actor wrote one protected column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Writes {
    pub role: String,
    pub user: String,
    pub actor: Option<String>,
    pub column: String,
    /// Statements that wrote the column, and the rows they affected.
    pub written: Count,
    /// Of those statements, the refused ones.
    pub refused: u64,
}

/// One protected column over all roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ColumnTotals {
    pub column: String,
    pub reads: Tally,
    pub writes: Count,
}

/// What a listed incident was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IncidentKind {
    RefusedStatement,
    FailedLogin,
}

impl IncidentKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            IncidentKind::RefusedStatement => "refused statement",
            IncidentKind::FailedLogin => "failed login",
        }
    }
}

/// A refused statement or a failed login, with who and when; never a
/// value (the statement is the normalized text the log holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Incident {
    pub time: Timestamp,
    pub kind: IncidentKind,
    pub user: String,
    /// The roles it is counted under, joined by `, `.
    pub role: String,
    pub connection: u64,
    pub sqlstate: String,
    /// The normalized statement; for a failed login, the database.
    pub statement: String,
}

/// A bulk-access alert, with the statement that raised it when the log
/// links them (the next statement record of the alert's connection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Alert {
    #[serde(flatten)]
    pub record: AlertRecord,
    pub statement: Option<String>,
}

/// The access review of a period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    /// The period asked for (open ends when not given).
    pub period: Period,
    /// The first and last record in it.
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub verification: Verification,
    pub totals: Totals,
    /// Per role and user, sorted.
    pub activity: Vec<Activity>,
    /// Per role, user, actor and column, sorted.
    pub reads: Vec<Reads>,
    pub writes: Vec<Writes>,
    pub columns: Vec<ColumnTotals>,
    /// Refused statements and failed logins, in log order.
    pub incidents: Vec<Incident>,
    pub alerts: Vec<Alert>,
    /// Rows returned in plaintext, per role, over the data's span.
    pub plaintext: Option<Chart>,
}

impl Report {
    /// Aggregates the records within `period`.
    pub(crate) fn build(
        records: impl IntoIterator<Item = Result<AuditRecord, ReviewError>>,
        period: Period,
        verification: Verification,
    ) -> Result<Self, ReviewError> {
        if period.is_empty() {
            return Err(ReviewError::EmptyPeriod);
        }
        let mut builder = Builder::default();
        for record in records {
            let record = record?;
            if period.contains(time_of(&record)) {
                builder.add(record);
            }
        }
        Ok(builder.finish(period, verification))
    }

    /// The report's data as JSON: what `--format json` writes, and what
    /// [`Report::digest`] is the hash of.
    pub(crate) fn json(&self) -> String {
        let mut json = serde_json::to_string(self).expect("report data serializes");
        json.push('\n');
        json
    }

    /// The SHA-256 (hex) of [`Report::json`].
    pub(crate) fn digest(&self) -> String {
        hex(&Sha256::digest(self.json().as_bytes()))
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

/// The role a column access is reviewed under: the policy role that
/// decided it, or else the login role.
fn role_of<'a>(access: &'a ColumnAccess, login: &'a str) -> &'a str {
    access.policy_role.as_deref().unwrap_or(login)
}

/// The counts while the records are read.
#[derive(Default)]
struct Builder {
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    totals: Totals,
    /// Keyed by role, then user.
    activity: BTreeMap<(String, String), Activity>,
    reads: BTreeMap<AccessKey, Reads>,
    writes: BTreeMap<AccessKey, Writes>,
    columns: BTreeMap<String, ColumnTotals>,
    incidents: Vec<Incident>,
    alerts: Vec<Alert>,
    /// Alerts waiting for their connection's next statement.
    unlinked: HashMap<u64, Vec<usize>>,
    plaintext: Series,
}

impl Builder {
    fn add(&mut self, record: AuditRecord) {
        let time = time_of(&record);
        self.first = Some(self.first.map_or(time, |t| t.min(time)));
        self.last = Some(self.last.map_or(time, |t| t.max(time)));
        self.totals.records += 1;
        match record {
            AuditRecord::Connect { .. } => self.totals.connections += 1,
            AuditRecord::Authentication {
                time,
                peer,
                login,
                outcome: Outcome::Error(code),
            } => {
                self.totals.failed_logins += 1;
                let user = login.role.to_string();
                self.activity(&user, &user).failed_logins += 1;
                self.incidents.push(Incident {
                    time,
                    kind: IncidentKind::FailedLogin,
                    role: user.clone(),
                    user,
                    connection: peer.connection,
                    sqlstate: code.as_str().to_owned(),
                    statement: format!("login to database {}", login.database),
                });
            }
            AuditRecord::Statement(statement) => self.add_statement(&statement),
            AuditRecord::Alert(record) => {
                self.totals.alerts += 1;
                if let Some(connection) = record.connection {
                    self.unlinked
                        .entry(connection)
                        .or_default()
                        .push(self.alerts.len());
                }
                self.alerts.push(Alert {
                    record,
                    statement: None,
                });
            }
            AuditRecord::Gap(gap) => self.totals.lost += gap.lost,
            AuditRecord::Migration(m) => {
                self.totals.migrated += m.rows;
                self.totals.undecryptable += m.undecryptable;
            }
            AuditRecord::Authentication { .. }
            | AuditRecord::Disconnect { .. }
            | AuditRecord::Reload { .. }
            | AuditRecord::UncleanShutdown(_)
            | AuditRecord::ApprovalUse(_) => {}
        }
    }

    fn activity(&mut self, role: &str, user: &str) -> &mut Activity {
        self.activity
            .entry((role.to_owned(), user.to_owned()))
            .or_insert_with(|| Activity {
                role: role.to_owned(),
                user: user.to_owned(),
                ..Activity::default()
            })
    }

    fn add_statement(&mut self, statement: &StatementRecord) {
        let session = &statement.session;
        let user: &str = &session.login.role;
        if let Some(alerts) = self.unlinked.remove(&session.peer.connection) {
            for i in alerts {
                self.alerts[i].statement = Some(statement.statement.as_str().to_owned());
            }
        }
        let refused = is_refused(statement);
        let failed = statement.outcome != Outcome::Ok;
        let unpurposed = session.purpose.is_none();
        let reads_any = statement.columns.iter().any(|c| c.access == Access::Read);
        let writes_any = statement.columns.iter().any(|c| c.access == Access::Write);
        let totals = &mut self.totals;
        totals.statements += 1;
        totals.protected += u64::from(!statement.columns.is_empty());
        totals.reads += u64::from(reads_any);
        totals.writes += u64::from(writes_any);
        totals.reads_without_purpose += u64::from(reads_any && unpurposed);
        totals.refused += u64::from(refused);
        totals.errors += u64::from(failed);

        let mut roles: BTreeSet<&str> =
            statement.columns.iter().map(|c| role_of(c, user)).collect();
        if roles.is_empty() {
            roles.insert(user);
        }
        for &role in &roles {
            let of_role = |access: Access| {
                statement
                    .columns
                    .iter()
                    .any(|c| c.access == access && role_of(c, user) == role)
            };
            let (reads, writes) = (of_role(Access::Read), of_role(Access::Write));
            let activity = self.activity(role, user);
            activity.statements += 1;
            activity.reads += u64::from(reads);
            activity.writes += u64::from(writes);
            activity.reads_without_purpose += u64::from(reads && unpurposed);
            activity.refused += u64::from(refused);
            activity.errors += u64::from(failed && !refused);
        }
        if refused {
            self.incidents.push(Incident {
                time: statement.time,
                kind: IncidentKind::RefusedStatement,
                user: user.to_owned(),
                role: roles.iter().copied().collect::<Vec<_>>().join(", "),
                connection: session.peer.connection,
                sqlstate: statement.outcome.as_str().to_owned(),
                statement: statement.statement.as_str().to_owned(),
            });
        }
        self.add_columns(statement, refused);
    }

    /// Counts each protected column once per statement, access and
    /// decision.
    fn add_columns(&mut self, statement: &StatementRecord, refused: bool) {
        let session = &statement.session;
        let user: &str = &session.login.role;
        let key = |access: &ColumnAccess| AccessKey {
            role: role_of(access, user).to_owned(),
            user: user.to_owned(),
            actor: session.actor.clone(),
            column: access.column.clone(),
        };
        let read: BTreeSet<(AccessKey, usize)> = statement
            .columns
            .iter()
            .filter(|c| c.access == Access::Read)
            .map(|c| (key(c), decision_index(c.decision)))
            .collect();
        let written: BTreeSet<AccessKey> = statement
            .columns
            .iter()
            .filter(|c| c.access == Access::Write)
            .map(key)
            .collect();
        let rows = statement.rows;
        let mut plaintext_roles = BTreeSet::new();
        for (key, index) in &read {
            let decision = DECISIONS[*index];
            self.column(&key.column).reads.add(decision, rows);
            self.totals.read_decisions.add(decision, rows);
            if decision == Decision::Plaintext {
                plaintext_roles.insert(key.role.as_str());
            }
            let reads = self.reads.entry(key.clone()).or_insert_with(|| Reads {
                role: key.role.clone(),
                user: key.user.clone(),
                actor: key.actor.clone(),
                column: key.column.clone(),
                ..Reads::default()
            });
            reads.decisions.add(decision, rows);
        }
        let keys: BTreeSet<&AccessKey> = read.iter().map(|(key, _)| key).collect();
        for key in keys {
            let reads = self.reads.get_mut(key).expect("added above");
            reads.statements += 1;
            reads.without_purpose += u64::from(session.purpose.is_none());
            reads.purposes.extend(session.purpose.clone());
        }
        for key in written {
            self.column(&key.column).writes.add(rows);
            let writes = self.writes.entry(key.clone()).or_insert_with(|| Writes {
                role: key.role,
                user: key.user,
                actor: key.actor,
                column: key.column,
                ..Writes::default()
            });
            writes.written.add(rows);
            writes.refused += u64::from(refused);
        }
        for role in plaintext_roles {
            self.plaintext.add(statement.time, role, rows);
        }
    }

    fn column(&mut self, name: &str) -> &mut ColumnTotals {
        self.columns
            .entry(name.to_owned())
            .or_insert_with(|| ColumnTotals {
                column: name.to_owned(),
                ..ColumnTotals::default()
            })
    }

    fn finish(mut self, period: Period, verification: Verification) -> Report {
        self.incidents.sort_by_key(|i| i.time);
        let plaintext = match (self.first, self.last) {
            (Some(first), Some(last)) => Some(self.plaintext.chart(first, last)),
            _ => None,
        };
        Report {
            period,
            first: self.first,
            last: self.last,
            verification,
            totals: self.totals,
            activity: self.activity.into_values().collect(),
            reads: self.reads.into_values().collect(),
            writes: self.writes.into_values().collect(),
            columns: self.columns.into_values().collect(),
            incidents: self.incidents,
            alerts: self.alerts,
            plaintext,
        }
    }
}
