//! What a session has declared about itself, exactly as the server has
//! it: `pgveil.purpose`, `pgveil.actor` and `pgveil.ticket`, and the statements it prepared
//! with SQL `PREPARE` (the parameter slots whose `EXECUTE` arguments go to
//! protected columns).
//!
//! **Start.** The values in force when the session logged in (`-c
//! pgveil.purpose=...` in the startup options, a `pgveil.purpose` startup
//! parameter, `ALTER ROLE` / `ALTER DATABASE ... SET`, the server's
//! configuration) are read on the session's connection before the client
//! is let in; they are also what `RESET` and `SET ... TO DEFAULT` return
//! to.
//!
//! **In order.** A change takes effect when the server has run the
//! statement that makes it, not when the client sends it: the client tap
//! queues what each Query, Execute and Sync will do ([`Ledger::query`],
//! [`Ledger::execute`], [`Ledger::sync`]) and the server tap applies it
//! as the answers come, in the same order ([`Ledger::completed`],
//! [`Ledger::failed`], [`Ledger::ready`]). So rows of a statement sent
//! before a `SET` are revealed under the values before it, however the
//! client pipelines, a prepared statement that is never executed changes
//! nothing, and a statement that fails changes nothing.
//!
//! **Scope**, as PostgreSQL's: a `SET LOCAL` lasts until its transaction
//! ends; a plain `SET` is undone when its transaction rolls back (an
//! explicit `ROLLBACK`, the `COMMIT` of a failed transaction, an error in
//! an implicit one); `ROLLBACK TO SAVEPOINT` undoes what was set after the
//! savepoint, `RELEASE` keeps it. A transaction ends at a `COMMIT` or
//! `ROLLBACK` command tag, or at a ReadyForQuery that says idle.
//!
//! **SQL-prepared statements** are not transactional, as in PostgreSQL: a
//! `PREPARE` that completed stays after a rollback, and so does a
//! `DEALLOCATE`. A `PREPARE` of a name replaces its slots, a `DEALLOCATE
//! name`, `DEALLOCATE ALL` or `DISCARD ALL` forgets them, once the server
//! has completed the statement: one that fails (in an aborted
//! transaction, or a `PREPARE` of a name that exists) changes nothing.
//! The slots [`Ledger::prepared`] gives for encrypting an `EXECUTE` are
//! those, with the slots of every `PREPARE` sent and not yet answered: a
//! pipelined `EXECUTE` may follow it before the server answers, and
//! encrypting an argument too many is safe, one too few is not.
//!
//! **COPY FROM STDIN.** The server ignores the Syncs a client sends while
//! it is in copy-in mode. Each queued Sync notes how many CopyDone and
//! CopyFail messages the client had sent before it; when the server
//! starts a COPY FROM STDIN (CopyInResponse), the Syncs sent between that
//! statement and the end of its data are dropped from the queue.

mod parsed;

use std::collections::VecDeque;

use parsed::Parsed;
pub(crate) use parsed::Statement as ParsedStatement;

use crate::sql::{
    merge_slots, CursorEffect, Effect, ParamSlot, Prepared, PreparedSlots, SettingChange,
};
use crate::wire::tags::transaction;

/// The values in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values {
    /// `pgveil.purpose`: why the session reads customers' data.
    pub purpose: Option<String>,
    /// `pgveil.actor`: the person the session acts for.
    pub actor: Option<String>,
    /// `pgveil.ticket`: the business need (a support case, a request) the
    /// session's access is tied to.
    pub ticket: Option<String>,
}

impl Values {
    /// The slot of a setting, `None` for a name that is not pgveil's.
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            "purpose" => Some(&mut self.purpose),
            "actor" => Some(&mut self.actor),
            "ticket" => Some(&mut self.ticket),
            _ => None,
        }
    }
}

/// A prepared statement or portal by name, with the generation of that
/// name: how many Parses (or Binds) of it the client had sent, so that
/// what the server said of it is never applied to one made again since.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Named {
    pub(crate) name: String,
    pub(crate) generation: u64,
}

/// What a Describe asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Described {
    Statement(Named),
    Portal(Named),
}

/// Where the rows of an Execute come from: its portal, and the statement
/// it was bound from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rows {
    pub(crate) portal: Named,
    pub(crate) statement: Option<Named>,
}

/// Which result the rows arriving now belong to, for counting the rows
/// of one result across the messages that bring them
/// (`crate::read::meter`): the server's portals and cursors share one
/// namespace, so a SQL `FETCH` and a protocol Execute of a portal never
/// bound both read the cursor of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultOf<'a> {
    /// A statement of its own: statement `index` of the Query or Execute
    /// numbered `serial` (pgveil's count of them in the session).
    Statement {
        /// The Query or Execute.
        serial: u64,
        /// The statement of a Query.
        index: usize,
    },
    /// A portal made by a protocol Bind, the `generation`-th Bind of the
    /// session: a Bind of its name again makes a new one.
    Portal {
        /// The portal's name.
        name: &'a str,
        /// Which Bind made it.
        generation: u64,
    },
    /// The cursor of this name: a SQL `FETCH`, or an Execute of a portal
    /// no Bind made.
    Cursor(&'a str),
}

impl Default for ResultOf<'_> {
    fn default() -> Self {
        ResultOf::Statement {
            serial: 0,
            index: 0,
        }
    }
}

/// The values of a transaction or savepoint when it started.
#[derive(Clone, Debug)]
struct Snapshot {
    session: Values,
    current: Values,
}

/// A statement or Sync sent and not yet answered.
#[derive(Debug)]
enum Unit {
    /// A simple Query: the effects of its statements, in order.
    Query {
        serial: u64,
        effects: Vec<Vec<Effect>>,
        /// Statements completed so far.
        done: usize,
        /// An error ended it: the rest did not run.
        failed: bool,
        copy_ends: u64,
    },
    Execute {
        serial: u64,
        effects: Vec<Effect>,
        copy_ends: u64,
        /// The portal it runs and the statement behind it, for the shape
        /// of its rows; `None` for pgveil's own refusals.
        rows: Option<Rows>,
    },
    /// A Describe of a statement or portal: answered by a RowDescription
    /// or NoData.
    Describe {
        target: Described,
        copy_ends: u64,
        /// Sent by pgveil, not the client: its answer is pgveil's.
        ours: bool,
    },
    /// A Parse (answered by ParseComplete) and a Close (CloseComplete) of
    /// a prepared statement, with their version ([`parsed`]).
    Parse {
        name: String,
        id: u64,
        copy_ends: u64,
    },
    Close {
        name: String,
        id: u64,
        copy_ends: u64,
    },
    Sync {
        copy_ends: u64,
        /// Whether an Execute or FunctionCall came before it in its batch.
        ran: bool,
    },
}

impl Unit {
    /// The effects still to come of a unit not failed.
    fn pending(&self) -> impl Iterator<Item = &Effect> {
        let effects: &[Vec<Effect>] = match self {
            Unit::Query {
                effects,
                failed: false,
                ..
            } => effects,
            Unit::Execute { effects, .. } => std::slice::from_ref(effects),
            _ => &[],
        };
        effects.iter().flatten()
    }

    fn copy_ends(&self) -> u64 {
        match self {
            Unit::Query { copy_ends, .. }
            | Unit::Execute { copy_ends, .. }
            | Unit::Describe { copy_ends, .. }
            | Unit::Parse { copy_ends, .. }
            | Unit::Close { copy_ends, .. }
            | Unit::Sync { copy_ends, .. } => *copy_ends,
        }
    }
}

/// A session's declarations, their scopes, and the statements whose
/// answers will change them.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// At login; what RESET returns to.
    initial: Values,
    /// What stays when the transaction commits.
    session: Values,
    /// In force now: `session`, or a `SET LOCAL` value.
    current: Values,
    /// The values when the transaction in progress started; taken at its
    /// first change or savepoint.
    transaction: Option<Snapshot>,
    savepoints: Vec<(String, Snapshot)>,
    /// An error aborted the transaction in progress.
    failed: bool,
    units: VecDeque<Unit>,
    /// An error in an extended-protocol batch: the server skips every
    /// message up to its Sync, Queries too.
    to_sync: bool,
    /// CopyDone and CopyFail messages sent to the server so far.
    copy_ends: u64,
    /// The server is in copy-in mode for data that ends after this many
    /// CopyDone/CopyFail messages.
    copying: Option<u64>,
    /// The slots of the statements prepared with SQL `PREPARE` that the
    /// server has, for those that have any.
    prepared: PreparedSlots,
    /// The statements prepared with a protocol Parse.
    parsed: Parsed,
    /// Queries and Executes sent so far.
    serial: u64,
}

impl Ledger {
    /// A session that logged in with these values.
    pub(crate) fn new(initial: Values) -> Self {
        Self {
            session: initial.clone(),
            current: initial.clone(),
            initial,
            ..Self::default()
        }
    }

    /// Whether the server has answered everything sent to it that could
    /// have changed a setting it reports (every Query, and every batch
    /// that executed something, has had its ReadyForQuery, before which
    /// the server reports what changed). A batch that only prepared,
    /// described or closed statements changes nothing.
    pub(crate) fn settled(&self) -> bool {
        self.units.iter().all(|unit| {
            matches!(
                unit,
                Unit::Sync { ran: false, .. }
                    | Unit::Describe { .. }
                    | Unit::Parse { .. }
                    | Unit::Close { .. }
            )
        })
    }

    /// The values in force now.
    pub(crate) fn current(&self) -> &Values {
        &self.current
    }

    /// The parameter slots of the SQL-prepared statement `name`: those the
    /// server has, with those of `PREPARE`s of it not answered yet.
    pub(crate) fn prepared_slots(&self, name: &str) -> Vec<ParamSlot> {
        let mut slots = self.prepared.get(name).cloned().unwrap_or_default();
        for prepared in self.pending_prepares().filter(|p| p.name == name) {
            merge_slots(&mut slots, &prepared.params);
        }
        slots
    }

    /// Whether any SQL-prepared statement, on the server or not answered
    /// yet, has parameter slots.
    pub(crate) fn has_prepared_slots(&self) -> bool {
        self.prepared.values().any(|params| !params.is_empty())
            || self.pending_prepares().any(|p| !p.params.is_empty())
    }

    fn pending_prepares(&self) -> impl Iterator<Item = &Prepared> {
        self.units
            .iter()
            .flat_map(Unit::pending)
            .filter_map(|effect| match effect {
                Effect::Prepare(prepared) => Some(prepared),
                _ => None,
            })
    }

    // The client tap, as messages go to the server.

    /// A Query, with the effects of each of its statements, or a
    /// FunctionCall (no effects): answered up to a ReadyForQuery.
    pub(crate) fn query(&mut self, effects: Vec<Vec<Effect>>) {
        let copy_ends = self.copy_ends;
        self.serial += 1;
        self.units.push_back(Unit::Query {
            serial: self.serial,
            effects,
            done: 0,
            failed: false,
            copy_ends,
        });
    }

    /// An Execute, with the effects of its statement and where its rows
    /// come from.
    pub(crate) fn execute(&mut self, effects: Vec<Effect>, rows: Option<Rows>) {
        let copy_ends = self.copy_ends;
        self.serial += 1;
        self.units.push_back(Unit::Execute {
            serial: self.serial,
            effects,
            copy_ends,
            rows,
        });
    }

    /// A Parse of `name` in the client's `batch` (Syncs sent before it).
    pub(crate) fn parse(&mut self, name: &str, batch: u64, statement: ParsedStatement) {
        let id = self.parsed.parse(name, batch, statement);
        let copy_ends = self.copy_ends;
        self.units.push_back(Unit::Parse {
            name: name.to_owned(),
            id,
            copy_ends,
        });
    }

    /// A Close of the prepared statement `name`.
    pub(crate) fn close(&mut self, name: &str) {
        let id = self.parsed.close_id();
        let copy_ends = self.copy_ends;
        self.units.push_back(Unit::Close {
            name: name.to_owned(),
            id,
            copy_ends,
        });
    }

    /// What a Bind of the protocol-prepared statement `name`, in the
    /// client's `batch`, must assume it is ([`parsed`]).
    pub(crate) fn parsed(&self, name: &str, batch: u64) -> ParsedStatement {
        self.parsed.statement(name, batch)
    }

    /// Whether any protocol-prepared statement may have slots.
    pub(crate) fn has_parsed_slots(&self) -> bool {
        self.parsed.any_slots()
    }

    /// ParseComplete: the Parse at the front took effect.
    pub(crate) fn parse_complete(&mut self) {
        if let Some(Unit::Parse { .. }) = self.units.front() {
            if let Some(Unit::Parse { name, id, .. }) = self.units.pop_front() {
                self.parsed.confirmed(&name, id);
            }
        }
    }

    /// CloseComplete: the Close at the front took effect.
    pub(crate) fn close_complete(&mut self) {
        if let Some(Unit::Close { .. }) = self.units.front() {
            if let Some(Unit::Close { name, id, .. }) = self.units.pop_front() {
                self.parsed.closed(&name, id);
            }
        }
    }

    /// A Describe, sent by the client or, if `ours`, by pgveil.
    pub(crate) fn describe(&mut self, target: Described, ours: bool) {
        let copy_ends = self.copy_ends;
        self.units.push_back(Unit::Describe {
            target,
            copy_ends,
            ours,
        });
    }

    // The server tap, as answers come.

    /// A RowDescription or NoData: what the Describe at the front asked
    /// about, now answered, and whether pgveil sent it; `None` when the
    /// description belongs to a
    /// statement of a simple Query (or a FETCH) instead.
    pub(crate) fn described(&mut self) -> Option<(Described, bool)> {
        match self.units.front() {
            Some(Unit::Describe { .. }) => match self.units.pop_front() {
                Some(Unit::Describe { target, ours, .. }) => Some((target, ours)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Where the rows arriving now come from, when they answer an Execute.
    pub(crate) fn executing(&self) -> Option<&Rows> {
        match self.units.front() {
            Some(Unit::Execute { rows, .. }) => rows.as_ref(),
            _ => None,
        }
    }

    /// Which result the rows arriving now belong to.
    pub(crate) fn result(&self) -> ResultOf<'_> {
        fn fetched(effects: &[Effect]) -> Option<ResultOf<'_>> {
            effects.iter().find_map(|effect| match effect {
                Effect::Cursor(CursorEffect::Fetch(name)) => Some(ResultOf::Cursor(name)),
                _ => None,
            })
        }
        match self.units.front() {
            Some(Unit::Query {
                serial,
                effects,
                done,
                ..
            }) => effects
                .get(*done)
                .and_then(|e| fetched(e))
                .unwrap_or(ResultOf::Statement {
                    serial: *serial,
                    index: *done,
                }),
            Some(Unit::Execute {
                serial,
                effects,
                rows,
                ..
            }) => fetched(effects).unwrap_or(match rows {
                Some(Rows {
                    portal,
                    statement: Some(_),
                }) => ResultOf::Portal {
                    name: &portal.name,
                    generation: portal.generation,
                },
                Some(Rows { portal, .. }) => ResultOf::Cursor(&portal.name),
                None => ResultOf::Statement {
                    serial: *serial,
                    index: 0,
                },
            }),
            _ => ResultOf::default(),
        }
    }

    /// What the statement answering now does to cursors, for when it
    /// completes.
    pub(crate) fn cursor_effects(&self) -> Vec<CursorEffect> {
        let effects: &[Effect] = match self.units.front() {
            Some(Unit::Query { effects, done, .. }) => effects.get(*done).map_or(&[], |e| e),
            Some(Unit::Execute { effects, .. }) => effects,
            _ => &[],
        };
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Cursor(cursor) => Some(cursor.clone()),
                _ => None,
            })
            .collect()
    }

    /// A Sync, after an Execute or FunctionCall in its batch if `ran`.
    pub(crate) fn sync(&mut self, ran: bool) {
        if self.copying != Some(self.copy_ends) {
            let copy_ends = self.copy_ends;
            self.units.push_back(Unit::Sync { copy_ends, ran });
        }
    }

    /// A CopyDone or CopyFail.
    pub(crate) fn copy_ended(&mut self) {
        self.copy_ends += 1;
    }

    /// CommandComplete (with its tag), EmptyQueryResponse or
    /// PortalSuspended (with an empty tag).
    pub(crate) fn completed(&mut self, tag: &[u8]) {
        self.copying = None;
        let effects = match self.units.front_mut() {
            Some(Unit::Query {
                effects,
                done,
                failed: false,
                ..
            }) => {
                let these = effects.get_mut(*done).map(std::mem::take);
                *done += 1;
                these.unwrap_or_default()
            }
            Some(Unit::Execute { .. }) => match self.units.pop_front() {
                Some(Unit::Execute { effects, .. }) => effects,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let rolled_back_to = effects.iter().any(|e| matches!(e, Effect::RollbackTo(_)));
        for effect in effects {
            self.apply(effect);
        }
        match tag {
            b"COMMIT" | b"PREPARE TRANSACTION" => self.end_transaction(true),
            b"ROLLBACK" if !rolled_back_to => self.end_transaction(false),
            _ => {}
        }
    }

    /// An ErrorResponse: the statement failed, and with it the transaction.
    pub(crate) fn failed(&mut self) {
        self.copying = None;
        self.failed = true;
        match self.units.front_mut() {
            Some(Unit::Query { failed, .. }) => *failed = true,
            Some(Unit::Execute { .. } | Unit::Describe { .. } | Unit::Close { .. }) => {
                self.units.pop_front();
                self.to_sync = true;
            }
            Some(Unit::Parse { .. }) => {
                if let Some(Unit::Parse { name, id, .. }) = self.units.pop_front() {
                    self.parsed.failed(&name, id);
                }
                self.to_sync = true;
            }
            _ => {}
        }
    }

    /// A CopyInResponse: the server ignores Syncs until the data ends.
    pub(crate) fn copy_started(&mut self) {
        let Some(copy_ends) = self.units.front().map(Unit::copy_ends) else {
            return;
        };
        self.copying = Some(copy_ends);
        self.units
            .retain(|unit| !matches!(unit, Unit::Sync { copy_ends: c, .. } if *c == copy_ends));
    }

    /// ReadyForQuery with this transaction status (`I` idle, `T` in a
    /// transaction, `E` in a failed one): a Query or a batch has been
    /// answered; the statements of a batch left after an error did not
    /// run.
    pub(crate) fn ready(&mut self, status: u8) {
        if let (Some(Unit::Query { .. }), false) = (self.units.front(), self.to_sync) {
            self.units.pop_front();
        } else {
            self.to_sync = false;
            // What was left of the batch did not run.
            while let Some(unit) = self.units.pop_front() {
                match unit {
                    Unit::Sync { .. } => break,
                    Unit::Parse { name, id, .. } => self.parsed.failed(&name, id),
                    _ => {}
                }
            }
        }
        if status == transaction::IDLE {
            self.end_transaction(!self.failed);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            session: self.session.clone(),
            current: self.current.clone(),
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        self.session = snapshot.session;
        self.current = snapshot.current;
    }

    /// Notes the values before the first change of a transaction.
    fn begin(&mut self) {
        if self.transaction.is_none() {
            self.transaction = Some(self.snapshot());
        }
    }

    fn apply(&mut self, effect: Effect) {
        // Prepared statements are not transactional: no snapshot for them;
        // cursors are followed by the meter.
        if !matches!(
            effect,
            Effect::Prepare(_) | Effect::Deallocate(_) | Effect::Cursor(_)
        ) {
            self.begin();
        }
        match effect {
            Effect::Cursor(_) => {}
            Effect::Prepare(prepared) if prepared.params.is_empty() => {
                self.prepared.remove(&prepared.name);
            }
            Effect::Prepare(prepared) => {
                self.prepared.insert(prepared.name, prepared.params);
            }
            Effect::Deallocate(Some(name)) => {
                self.parsed.deallocated(Some(&name));
                self.prepared.remove(&name);
            }
            Effect::Deallocate(None) => {
                self.parsed.deallocated(None);
                self.prepared.clear();
            }
            Effect::Set(change) => self.set(&change),
            Effect::ResetAll => {
                self.session = self.initial.clone();
                self.current = self.initial.clone();
            }
            Effect::Savepoint(name) => {
                let snapshot = self.snapshot();
                self.savepoints.push((name, snapshot));
            }
            Effect::Release(name) => {
                if let Some(at) = self.savepoint(&name) {
                    self.savepoints.truncate(at);
                }
            }
            Effect::RollbackTo(name) => {
                if let Some(at) = self.savepoint(&name) {
                    self.savepoints.truncate(at + 1);
                    self.restore(self.savepoints[at].1.clone());
                    self.failed = false;
                }
            }
        }
    }

    /// The innermost savepoint of that name.
    fn savepoint(&self, name: &str) -> Option<usize> {
        self.savepoints.iter().rposition(|(n, _)| n == name)
    }

    fn set(&mut self, change: &SettingChange) {
        let mut initial = self.initial.clone();
        let Some(reset) = initial.slot(&change.name) else {
            return;
        };
        let value = match &change.value {
            Some(value) => Some(value.clone()).filter(|v| !v.is_empty()),
            None => reset.take(),
        };
        if !change.local {
            if let Some(slot) = self.session.slot(&change.name) {
                *slot = value.clone();
            }
        }
        if let Some(slot) = self.current.slot(&change.name) {
            *slot = value;
        }
    }

    /// The transaction in progress ends: its `SET LOCAL`s with it, and
    /// everything it changed unless it committed.
    fn end_transaction(&mut self, committed: bool) {
        if let Some(before) = self.transaction.take() {
            if !committed || self.failed {
                self.restore(before);
            }
        }
        self.current = self.session.clone();
        self.savepoints.clear();
        self.failed = false;
    }
}

#[cfg(test)]
mod tests;
