//! Which records a search selects, and the facts it selects them by.

use clap::{Args, ValueEnum};

use super::time::{parse_since, parse_until};
use crate::audit::{AuditRecord, Decision, Outcome, SqlState, Timestamp};

/// A record's `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum EventKind {
    Connect,
    Authentication,
    Disconnect,
    Statement,
    Alert,
    Gap,
    #[value(name = "unclean_shutdown")]
    UncleanShutdown,
    Reload,
    Migration,
    #[value(name = "approval_use")]
    ApprovalUse,
}

impl EventKind {
    pub(crate) fn of(record: &AuditRecord) -> Self {
        match record {
            AuditRecord::Connect { .. } => EventKind::Connect,
            AuditRecord::Authentication { .. } => EventKind::Authentication,
            AuditRecord::Disconnect { .. } => EventKind::Disconnect,
            AuditRecord::Statement(_) => EventKind::Statement,
            AuditRecord::Alert(_) => EventKind::Alert,
            AuditRecord::Gap(_) => EventKind::Gap,
            AuditRecord::UncleanShutdown(_) => EventKind::UncleanShutdown,
            AuditRecord::Reload { .. } => EventKind::Reload,
            AuditRecord::Migration(_) => EventKind::Migration,
            AuditRecord::ApprovalUse(_) => EventKind::ApprovalUse,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Authentication => "authentication",
            EventKind::Disconnect => "disconnect",
            EventKind::Statement => "statement",
            EventKind::Alert => "alert",
            EventKind::Gap => "gap",
            EventKind::UncleanShutdown => "unclean_shutdown",
            EventKind::Reload => "reload",
            EventKind::Migration => "migration",
            EventKind::ApprovalUse => "approval_use",
        }
    }
}

/// Every decision, in the order reports list them.
pub(super) const DECISIONS: [Decision; 6] = [
    Decision::Plaintext,
    Decision::Masked,
    Decision::Pseudonym,
    Decision::Null,
    Decision::Encrypted,
    Decision::Denied,
];

/// A decision's position in [`DECISIONS`].
pub(super) fn decision_index(decision: Decision) -> usize {
    DECISIONS
        .iter()
        .position(|&d| d == decision)
        .expect("DECISIONS lists every decision")
}

fn parse_decision(text: &str) -> Result<Decision, String> {
    DECISIONS
        .into_iter()
        .find(|&d| d.name() == text)
        .ok_or_else(|| {
            let names: Vec<_> = DECISIONS.into_iter().map(Decision::name).collect();
            format!("{text:?} is not a decision ({})", names.join(", "))
        })
}

/// Which outcomes `--outcome` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutcomeFilter {
    Ok,
    /// Any error.
    Error,
    /// This SQLSTATE.
    Code(SqlState),
}

impl OutcomeFilter {
    fn matches(self, outcome: Outcome) -> bool {
        match (self, outcome) {
            (OutcomeFilter::Ok, Outcome::Ok) => true,
            (OutcomeFilter::Error, Outcome::Error(_)) => true,
            (OutcomeFilter::Code(want), Outcome::Error(code)) => want == code,
            _ => false,
        }
    }
}

fn parse_outcome(text: &str) -> Result<OutcomeFilter, String> {
    match text {
        "ok" => Ok(OutcomeFilter::Ok),
        "error" => Ok(OutcomeFilter::Error),
        code => SqlState::new(code)
            .map(OutcomeFilter::Code)
            .map_err(|_| format!("{text:?} is not ok, error or a SQLSTATE such as 42501")),
    }
}

/// What a search selects. Every option given must match (AND); a record
/// without the field an option tests (a connect event has no role) does
/// not match it.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Records at or after this time: RFC 3339 in UTC
    /// (2026-11-25T10:00:00Z) or a date (its midnight UTC).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Timestamp>,
    /// Records before this time: RFC 3339 in UTC, or a date (the whole
    /// day is included).
    #[arg(long, value_parser = parse_until)]
    pub until: Option<Timestamp>,
    /// A role: the user logged in as, or the policy role that decided a
    /// protected column (`default` for the column's default rule).
    #[arg(long)]
    pub role: Option<String>,
    /// The actor the session declared.
    #[arg(long)]
    pub actor: Option<String>,
    /// The purpose the session declared.
    #[arg(long)]
    pub purpose: Option<String>,
    /// The ticket the session declared (statements and approval uses).
    #[arg(long)]
    pub ticket: Option<String>,
    /// A table touched: schema.table or table.
    #[arg(long)]
    pub table: Option<String>,
    /// A protected column read or written: schema.table.column, table.column
    /// or column.
    #[arg(long)]
    pub column: Option<String>,
    /// A decision on a protected column (on the --column one, if given):
    /// plaintext, masked, pseudonym, null, encrypted or denied.
    #[arg(long, value_parser = parse_decision)]
    pub decision: Option<Decision>,
    /// ok, error (any SQLSTATE) or a SQLSTATE such as 42501.
    #[arg(long, value_parser = parse_outcome)]
    pub outcome: Option<OutcomeFilter>,
    /// The kind of record.
    #[arg(long, value_enum)]
    pub event: Option<EventKind>,
}

impl Filter {
    pub(crate) fn matches(&self, record: &AuditRecord) -> bool {
        let facts = Facts::of(record);
        self.since.is_none_or(|since| facts.time >= since)
            && self.until.is_none_or(|until| facts.time < until)
            && self.event.is_none_or(|event| facts.event == event)
            && self.role.as_deref().is_none_or(|wanted| {
                facts.role == Some(wanted)
                    || facts.columns.iter().any(|c| c.policy_role == Some(wanted))
            })
            && same(&self.actor, facts.actor)
            && same(&self.purpose, facts.purpose)
            && same(&self.ticket, facts.ticket)
            && self
                .outcome
                .is_none_or(|o| facts.outcome.is_some_and(|f| o.matches(f)))
            && self
                .table
                .as_deref()
                .is_none_or(|wanted| facts.tables.iter().any(|table| names_match(table, wanted)))
            && self.columns_match(&facts)
    }

    /// Whether one protected column matches both `--column` and
    /// `--decision`.
    fn columns_match(&self, facts: &Facts) -> bool {
        if self.column.is_none() && self.decision.is_none() {
            return true;
        }
        facts.columns.iter().any(|column| {
            self.column
                .as_deref()
                .is_none_or(|wanted| names_match(column.name, wanted))
                && self.decision.is_none_or(|d| column.decision == Some(d))
        })
    }
}

fn same(wanted: &Option<String>, found: Option<&str>) -> bool {
    wanted.as_deref().is_none_or(|wanted| found == Some(wanted))
}

/// Whether the qualified `name` is `wanted` or ends with `.wanted`.
fn names_match(name: &str, wanted: &str) -> bool {
    name.strip_suffix(wanted)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// A protected column a record names, with the decision and the policy
/// role that took it if it has them.
pub(super) struct ColumnFact<'a> {
    pub name: &'a str,
    pub decision: Option<Decision>,
    pub policy_role: Option<&'a str>,
}

/// The fields of any record that searches test and print.
pub(super) struct Facts<'a> {
    pub event: EventKind,
    pub time: Timestamp,
    pub connection: Option<u64>,
    pub role: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub ticket: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub tables: Vec<&'a str>,
    pub columns: Vec<ColumnFact<'a>>,
    pub rows: Option<u64>,
    pub outcome: Option<Outcome>,
}

impl<'a> Facts<'a> {
    pub(super) fn of(record: &'a AuditRecord) -> Self {
        let mut facts = Self::at(EventKind::of(record), time_of(record));
        match record {
            AuditRecord::Connect { peer, .. } => facts.connection = Some(peer.connection),
            AuditRecord::Authentication {
                peer,
                login,
                outcome,
                ..
            } => {
                facts.connection = Some(peer.connection);
                facts.role = Some(&login.role);
                facts.outcome = Some(*outcome);
            }
            AuditRecord::Disconnect { peer, rows, .. } => {
                facts.connection = Some(peer.connection);
                facts.rows = Some(*rows);
            }
            AuditRecord::Reload { outcome, .. } => facts.outcome = Some(*outcome),
            AuditRecord::Statement(s) => {
                facts.connection = Some(s.session.peer.connection);
                facts.role = Some(&s.session.login.role);
                facts.actor = s.session.actor.as_deref();
                facts.purpose = s.session.purpose.as_deref();
                facts.ticket = s.session.ticket.as_deref();
                facts.kind = Some(&s.kind);
                facts.tables = s.tables.iter().map(String::as_str).collect();
                facts.columns = s
                    .columns
                    .iter()
                    .map(|c| ColumnFact {
                        name: &c.column,
                        decision: Some(c.decision),
                        policy_role: c.policy_role.as_deref(),
                    })
                    .collect();
                facts.rows = Some(s.rows);
                facts.outcome = Some(s.outcome);
            }
            AuditRecord::Alert(alert) => {
                facts.connection = alert.connection;
                facts.role = Some(&alert.role);
                facts.actor = alert.actor.as_deref();
                let mut tables: Vec<&str> = alert
                    .columns
                    .iter()
                    .filter_map(|c| c.rsplit_once('.').map(|(t, _)| t))
                    .collect();
                tables.sort_unstable();
                tables.dedup();
                facts.tables = tables;
                facts.columns = alert
                    .columns
                    .iter()
                    .map(|name| ColumnFact {
                        name,
                        decision: None,
                        policy_role: None,
                    })
                    .collect();
                facts.rows = Some(alert.rows);
            }
            AuditRecord::Migration(m) => {
                facts.role = Some(&m.login.role);
                facts.kind = Some(m.action.name());
                facts.tables = vec![&m.table];
                facts.columns = vec![ColumnFact {
                    name: &m.column,
                    decision: None,
                    policy_role: None,
                }];
                facts.rows = Some(m.rows);
                facts.outcome = Some(m.outcome);
            }
            AuditRecord::ApprovalUse(used) => {
                facts.connection = Some(used.peer.connection);
                facts.role = Some(&used.login.role);
                facts.ticket = Some(&used.ticket);
                facts.tables = used
                    .column
                    .rsplit_once('.')
                    .map(|(t, _)| t)
                    .into_iter()
                    .collect();
                facts.columns = vec![ColumnFact {
                    name: &used.column,
                    decision: Some(Decision::Plaintext),
                    policy_role: Some(&used.policy_role),
                }];
                facts.rows = Some(used.rows);
            }
            AuditRecord::Gap(_) | AuditRecord::UncleanShutdown(_) => {}
        }
        facts
    }

    fn at(event: EventKind, time: Timestamp) -> Self {
        Self {
            event,
            time,
            connection: None,
            role: None,
            actor: None,
            purpose: None,
            ticket: None,
            kind: None,
            tables: Vec::new(),
            columns: Vec::new(),
            rows: None,
            outcome: None,
        }
    }
}

/// When a record happened.
pub(super) fn time_of(record: &AuditRecord) -> Timestamp {
    match record {
        AuditRecord::Connect { time, .. }
        | AuditRecord::Authentication { time, .. }
        | AuditRecord::Disconnect { time, .. }
        | AuditRecord::Reload { time, .. } => *time,
        AuditRecord::Statement(s) => s.time,
        AuditRecord::Alert(alert) => alert.time,
        AuditRecord::Gap(gap) => gap.time,
        AuditRecord::UncleanShutdown(end) => end.time,
        AuditRecord::Migration(m) => m.time,
        AuditRecord::ApprovalUse(used) => used.time,
    }
}
