//! Counting plaintext rows against the approval limits of the policy
//! (`approval = { rows = N }`): a session's [`Meter`].
//!
//! The rows of a result arrive one message at a time, and the meter
//! counts them as they are revealed, so that row `N + 1` is never shown
//! without an approval: at that row the reveal stops, the result ends
//! with `42501` naming the approval needed, and the rest is dropped
//! (`crate::read::tap`), as for a value the policy denies. A result is
//! what the server returns for one thing the client asked for, however
//! many messages it takes (`crate::session::ledger::ResultOf`):
//!
//! - a statement of a simple Query, or an Execute of its own (COPY TO
//!   included), counted up to its end;
//! - a portal bound by the protocol, counted across every Execute with a
//!   row limit until a Bind of its name makes a new one or it ends;
//! - a cursor, counted across every `FETCH` (SQL or a protocol Execute of
//!   the cursor's portal) until a `DECLARE` of its name makes a new one,
//!   `CLOSE` (or `DISCARD ALL`) closes it, or its transaction ends (a
//!   `WITH HOLD` cursor outlives its transaction).
//!
//! With `[audit.bulk]`, the rows the session's login role read of the
//! column within the bulk window before the result (over every session
//! and whatever actor they declared) count too. A value counts once per
//! field it is in: a column read twice in a row counts twice, which errs
//! on the side of asking for an approval.
//!
//! Beyond the limit each row needs an approval (`crate::audit::approvals`)
//! for one of the session's roles, the column and the ticket it declared:
//! the first row beyond takes the whole result so far from the approval,
//! each later row one more. Rows are reserved in the approval's ledger
//! before they are shown; what a statement reserved and did not show is
//! given back when it ends, and each statement that used an approval is
//! an `approval_use` audit record.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use crate::audit::approvals::{ApprovalBook, Shortfall, Want};
use crate::audit::trail::Trail;
use crate::protect::policy::ColumnPolicy;
use crate::session::ledger::ResultOf;
use crate::sql::CursorEffect;

/// Who reads, and which result: what the meter needs of a recipient.
#[derive(Clone, Copy)]
pub(crate) struct Reading<'a> {
    /// The session's roles.
    pub(crate) roles: &'a [String],
    /// The ticket in force, if one is declared.
    pub(crate) ticket: Option<&'a str>,
    /// The session's audit trail, with audit on: the approvals and the
    /// bulk window.
    pub(crate) trail: Option<&'a Trail>,
    /// The result the value belongs to.
    pub(crate) result: ResultOf<'a>,
}

/// Counts a session's plaintext rows of columns with an approval limit.
#[derive(Default)]
pub(crate) struct Meter<'v> {
    results: HashMap<Key, Tally<'v>>,
}

/// A result, as the meter keeps it: portals and cursors by name, the
/// server's namespace for both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Statement(u64, usize),
    Named(String),
}

impl Key {
    /// The key of `result`, and the Bind that made it, for a portal.
    fn of(result: ResultOf<'_>) -> (Key, Option<u64>) {
        match result {
            ResultOf::Statement { serial, index } => (Key::Statement(serial, index), None),
            ResultOf::Portal { name, generation } => (Key::Named(name.into()), Some(generation)),
            ResultOf::Cursor(name) => (Key::Named(name.into()), None),
        }
    }
}

#[derive(Default)]
struct Tally<'v> {
    /// For a portal a Bind made, which Bind; `None` for a cursor.
    generation: Option<u64>,
    /// A cursor declared `WITH HOLD`, which outlives its transaction.
    hold: bool,
    columns: Vec<ColumnTally<'v>>,
}

struct ColumnTally<'v> {
    column: &'v ColumnPolicy,
    rows: u64,
    /// Rows read within the bulk window before this result.
    before: u64,
    /// The bulk window's length, with `[audit.bulk]`.
    window_secs: Option<u64>,
    /// The approval the result draws on, once past the limit.
    grant: Option<Grant>,
    /// Rows taken from each approval (id, ticket) since the statement
    /// began.
    used: Vec<(String, String, u64)>,
}

struct Grant {
    id: String,
    ticket: String,
    /// Rows reserved in its ledger and not shown yet.
    reserved: u64,
}

/// How a statement ended, for what it leaves of its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// CommandComplete or EmptyQueryResponse.
    Completed,
    /// PortalSuspended: the portal goes on at its next Execute.
    Suspended,
    /// ErrorResponse.
    Failed,
}

/// Rows of an approval one statement used, for its audit record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Used {
    pub(crate) approval: String,
    pub(crate) column: String,
    pub(crate) ticket: String,
    pub(crate) rows: u64,
}

/// Why a row beyond the limit cannot be shown.
#[derive(Debug)]
pub(crate) struct Needed {
    column: String,
    limit: u64,
    window_secs: Option<u64>,
    roles: String,
    ticket: Option<String>,
    why: Why,
}

#[derive(Debug)]
enum Why {
    NoTicket,
    NoApprovals,
    Short(Shortfall),
}

impl fmt::Display for Needed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let within = match self.window_secs {
            Some(secs) => format!(" or within {secs} s"),
            None => String::new(),
        };
        let ticket = self.ticket.as_deref().unwrap_or("TICKET");
        write!(
            f,
            "pgveil: reading more than {limit} plaintext rows of column {column} in one \
             statement{within} needs an approval for role {roles} and the session's ticket \
             (pgveil approve --role {role} --column {column} --rows N --ticket {ticket}): ",
            limit = self.limit,
            column = self.column,
            roles = self.roles,
            role = self.roles.split(" or ").next().unwrap_or_default(),
        )?;
        match &self.why {
            Why::NoTicket => f.write_str("the session has declared no ticket (SET pgveil.ticket)"),
            Why::NoApprovals => {
                f.write_str("pgveil has no approvals directory ([audit] approvals)")
            }
            Why::Short(shortfall) => shortfall.fmt(f),
        }
    }
}

impl<'v> Meter<'v> {
    /// Counts one plaintext value of `column` for `reader`: `Err` when it
    /// is beyond the column's limit and no approval serves it.
    pub(crate) fn count(
        &mut self,
        reader: Reading<'_>,
        column: &'v ColumnPolicy,
        limit: u64,
    ) -> Result<(), Box<Needed>> {
        let (key, generation) = Key::of(reader.result);
        let tally = self.results.entry(key).or_default();
        if generation.is_some() && tally.generation != generation {
            // A new portal of that name.
            *tally = Tally {
                generation,
                ..Tally::default()
            };
        }
        let at = match tally
            .columns
            .iter()
            .position(|c| std::ptr::eq(c.column, column))
        {
            Some(at) => at,
            None => {
                let window = reader
                    .trail
                    .and_then(|t| t.window_rows(&column.qualified_name()));
                tally.columns.push(ColumnTally {
                    column,
                    rows: 0,
                    before: window.map_or(0, |(_, rows)| rows),
                    window_secs: window.map(|(secs, _)| secs),
                    grant: None,
                    used: Vec::new(),
                });
                tally.columns.len() - 1
            }
        };
        let counted = &mut tally.columns[at];
        counted.rows += 1;
        if counted.grant.is_none() && counted.rows.saturating_add(counted.before) <= limit {
            return Ok(());
        }
        let window_secs = counted.window_secs;
        let needed = |why| {
            Box::new(Needed {
                column: column.qualified_name(),
                limit,
                window_secs,
                roles: roles_of(column, reader.roles),
                ticket: reader.ticket.map(str::to_owned),
                why,
            })
        };
        let Some(ticket) = reader.ticket else {
            return Err(needed(Why::NoTicket));
        };
        let Some(book) = reader.trail.and_then(Trail::approvals) else {
            return Err(needed(Why::NoApprovals));
        };
        if let Some(grant) = counted
            .grant
            .as_mut()
            .filter(|g| g.ticket == ticket && g.reserved > 0)
        {
            grant.reserved -= 1;
            add_use(&mut counted.used, &grant.id, ticket, 1);
            return Ok(());
        }
        // The first row beyond the limit takes the result's rows so far.
        let rows = if counted.grant.is_none() {
            counted.rows
        } else {
            1
        };
        let prior = counted.grant.take();
        if let Some(prior) = &prior {
            book.release(&prior.id, prior.reserved);
        }
        let want = Want {
            id: prior.as_ref().map(|g| g.id.as_str()),
            roles: reader.roles,
            column: &column.qualified_name(),
            ticket,
            rows,
        };
        let reservation = book
            .reserve(want, SystemTime::now())
            .map_err(|shortfall| needed(Why::Short(shortfall)))?;
        add_use(&mut counted.used, &reservation.id, ticket, rows);
        counted.grant = Some(Grant {
            reserved: reservation.rows - rows,
            id: reservation.id,
            ticket: ticket.into(),
        });
        Ok(())
    }

    /// Whether nothing is counted: the server tap skips the lookups.
    pub(crate) fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// The statement answering `result` ended: its reservations are given
    /// back to `book`, what it used is returned for the audit log, and
    /// what ends with it (the statement's own result; a portal that
    /// completed or failed; the cursors it declared again or closed, if
    /// it completed) is forgotten.
    pub(crate) fn statement_ended(
        &mut self,
        result: ResultOf<'_>,
        ended: Ended,
        cursors: &[CursorEffect],
        book: Option<&ApprovalBook>,
    ) -> Vec<Used> {
        let used = self.release(book);
        let (key, generation) = Key::of(result);
        let finished = match &key {
            Key::Statement(..) => true,
            Key::Named(_) => generation.is_some() && ended != Ended::Suspended,
        };
        if finished {
            self.results.remove(&key);
        }
        if ended == Ended::Completed {
            for effect in cursors {
                match effect {
                    CursorEffect::Declare { name, hold } => {
                        let fresh = Tally {
                            hold: *hold,
                            ..Tally::default()
                        };
                        self.results.insert(Key::Named(name.clone()), fresh);
                    }
                    CursorEffect::Close(Some(name)) => {
                        self.results.remove(&Key::Named(name.clone()));
                    }
                    CursorEffect::Close(None) => self
                        .results
                        .retain(|key, _| matches!(key, Key::Statement(..))),
                    CursorEffect::Fetch(_) => {}
                }
            }
        }
        used
    }

    /// The server is outside a transaction: every portal and cursor but
    /// those declared `WITH HOLD` is gone.
    pub(crate) fn idle(&mut self, book: Option<&ApprovalBook>) {
        self.release(book);
        self.results
            .retain(|key, tally| matches!(key, Key::Named(_)) && tally.hold);
    }

    /// Gives back every reservation; the rows used since the last time.
    pub(crate) fn release(&mut self, book: Option<&ApprovalBook>) -> Vec<Used> {
        let mut used = Vec::new();
        for counted in self.results.values_mut().flat_map(|t| &mut t.columns) {
            if let Some(grant) = &mut counted.grant {
                if let Some(book) = book {
                    book.release(&grant.id, grant.reserved);
                }
                grant.reserved = 0;
            }
            for (approval, ticket, rows) in counted.used.drain(..) {
                used.push(Used {
                    approval,
                    column: counted.column.qualified_name(),
                    ticket,
                    rows,
                });
            }
        }
        used
    }
}

fn add_use(used: &mut Vec<(String, String, u64)>, id: &str, ticket: &str, rows: u64) {
    match used.iter_mut().find(|(u, t, _)| u == id && t == ticket) {
        Some((_, _, n)) => *n += rows,
        None => used.push((id.into(), ticket.into(), rows)),
    }
}

/// The session's roles an approval may name for `column`: those the
/// policy grants its plaintext, or (plaintext by the column's default)
/// all of them.
fn roles_of(column: &ColumnPolicy, roles: &[String]) -> String {
    let granted = column.plaintext_roles(roles);
    if granted.is_empty() {
        roles.join(" or ")
    } else {
        granted.join(" or ")
    }
}

#[cfg(test)]
mod tests;
