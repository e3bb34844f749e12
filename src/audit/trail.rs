//! One session's audit trail: what it ran, what it read and wrote of
//! protected columns, and how each statement ended.
//!
//! The client tap notes each statement as it is sent (a `Query`, or an
//! `Execute` of a portal, whatever made it: see `names.rs`) and each
//! `Sync`; the server tap completes them in the same order, since
//! PostgreSQL answers in order. An `Execute` ends at its CommandComplete,
//! EmptyQueryResponse, PortalSuspended or error. A `Query` is recorded
//! statement by statement, each at its own CommandComplete (or
//! EmptyQueryResponse, or error), with the purpose and actor in force when
//! it ran; an error ends it, and the statements after it, which did not
//! run, are not recorded. After an error the server skips the rest of an
//! extended batch, so entries up to the batch's `Sync` are dropped unrun;
//! the Syncs the server ignores while a COPY's data flows are dropped when
//! it says the data starts (CopyInResponse). Statement text is summarized
//! (`summary.rs`) only when a record is written. No value of any kind
//! reaches a record.

mod names;
mod statement;
mod summary;

pub use names::text;

pub(crate) use names::Names;
pub use statement::{StatementText, Written};
pub use summary::redact;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::warn;

use crate::audit::approvals::ApprovalBook;
use crate::audit::bulk_reads::BulkWatch;
use crate::audit::{
    Access, AlertRecord, ApprovalUseRecord, AuditHandle, AuditRecord, ColumnAccess, Decision,
    Login, OnBulk, Outcome, Peer, Scope, SqlState, StatementLine, Timestamp,
};
use crate::protect::policy::{Action, DEFAULT_RULE};
use crate::session::ledger::Values;
use crate::wire::sqlstate::{INSUFFICIENT_PRIVILEGE, INTERNAL_ERROR};
use crate::wire::tags::transaction;

use summary::ShapeCache;

/// How the audit log is set up for every session.
#[derive(Clone)]
pub struct AuditSetup {
    /// Where records go.
    pub handle: AuditHandle,
    /// Which statements are recorded.
    pub scope: Scope,
    /// The bulk-access watch shared by every session, if one is set up.
    pub bulk: Option<Arc<BulkWatch>>,
    /// The approvals `[audit] approvals` names, if it does.
    pub approvals: Option<Arc<ApprovalBook>>,
}

/// A statement sent and not yet answered, or the end of a batch.
enum Entry {
    Statement {
        text: Arc<StatementText>,
        /// A simple-protocol Query, answered up to its ReadyForQuery: its
        /// statements recorded so far (`usize::MAX`: all of it).
        simple: Option<usize>,
        /// An Execute's row limit (0 for none): the rows it returned when
        /// the server suspends the portal.
        max_rows: u64,
        time: Timestamp,
        started: Instant,
        /// CopyDone and CopyFail messages sent before it.
        copy_ends: u64,
    },
    Sync {
        copy_ends: u64,
    },
}

/// The entries, and what the client tap counted as it sent them.
#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// CopyDone and CopyFail messages sent.
    copy_ends: u64,
    /// Messages sent that the server answers with a ReadyForQuery (Query,
    /// Sync, FunctionCall), and of those the server has answered.
    readies_sent: u64,
    readies: u64,
    /// `readies` at the last ReadyForQuery outside a transaction: every
    /// portal made before the message it answers is gone.
    idle_at: u64,
}

/// What the server has answered so far for the statement at the front.
#[derive(Default)]
struct Answer {
    rows: u64,
    error: Option<SqlState>,
    /// pgveil withheld a value: the statement failed for the client,
    /// whatever the server goes on to answer for it.
    denied: bool,
    /// Values read, by column, decision and the policy role that decided.
    reads: BTreeMap<(String, DecisionKey, Option<String>), u64>,
}

/// `Decision` ordered, for a set of distinct reads, with whether the
/// values were stored unencrypted (the bit [`Self::UNENCRYPTED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DecisionKey(u8);

impl DecisionKey {
    const UNENCRYPTED: u8 = 8;

    fn of(action: Option<Action>, unencrypted: bool) -> Self {
        let decision = match action {
            Some(Action::Plaintext) => 0,
            Some(Action::Masked) => 1,
            Some(Action::Pseudonym) => 2,
            Some(Action::Null) => 3,
            Some(Action::Deny) => 4,
            None => 5,
        };
        DecisionKey(if unencrypted {
            decision | Self::UNENCRYPTED
        } else {
            decision
        })
    }

    fn unencrypted(self) -> bool {
        self.0 & Self::UNENCRYPTED != 0
    }

    fn is_plaintext(self) -> bool {
        self.0 & !Self::UNENCRYPTED == 0
    }

    fn decision(self) -> Decision {
        match self.0 & !Self::UNENCRYPTED {
            0 => Decision::Plaintext,
            1 => Decision::Masked,
            2 => Decision::Pseudonym,
            3 => Decision::Null,
            4 => Decision::Denied,
            _ => Decision::Encrypted,
        }
    }
}

/// A session's audit trail, shared by its two taps.
pub struct Trail {
    handle: AuditHandle,
    scope: Scope,
    bulk: Option<Arc<BulkWatch>>,
    approvals: Option<Arc<ApprovalBook>>,
    /// Set when this session crossed a bulk threshold with `on_bulk =
    /// "block"`: it gets no more plaintext.
    blocked: AtomicBool,
    peer: Peer,
    login: Login,
    queue: Mutex<Queue>,
    answer: Mutex<Answer>,
    shapes: Mutex<ShapeCache>,
    statements: AtomicU64,
    rows: AtomicU64,
}

impl Trail {
    /// The trail of a session from `peer`, logged in as `login`.
    pub fn new(audit: &AuditSetup, peer: Peer, login: Login) -> Self {
        Self {
            handle: audit.handle.clone(),
            scope: audit.scope,
            bulk: audit.bulk.clone(),
            approvals: audit.approvals.clone(),
            blocked: AtomicBool::new(false),
            peer,
            login,
            queue: Mutex::default(),
            answer: Mutex::default(),
            shapes: Mutex::default(),
            statements: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Whether the audit log can take records; with `on_failure =
    /// "refuse"`, statements touching protected columns must be refused
    /// while it cannot.
    pub(crate) fn refusing(&self) -> bool {
        self.handle.refusing()
    }

    /// The approvals pgveil honours, if it has an approvals directory.
    pub(crate) fn approvals(&self) -> Option<&ApprovalBook> {
        self.approvals.as_deref()
    }

    /// With `[audit.bulk]`, its window's length and the plaintext rows of
    /// `column` this session's login role read within it, over every
    /// session and actor.
    pub(crate) fn window_rows(&self, column: &str) -> Option<(u64, u64)> {
        let bulk = self.bulk.as_ref()?;
        let rows = bulk.rows_of(&self.login.role, column, Instant::now());
        Some((bulk.config().window_secs, rows))
    }

    /// A statement read `rows` plaintext rows of `column` under approval
    /// `id`, for the session's `ticket`: an `approval_use` record.
    pub(crate) fn approval_used(&self, id: &str, column: &str, ticket: &str, rows: u64) {
        let (policy_role, rows_left) = self
            .approvals()
            .and_then(|book| book.describe(id))
            .unwrap_or_default();
        self.record(AuditRecord::ApprovalUse(Box::new(ApprovalUseRecord {
            time: Timestamp::now(),
            peer: self.peer.clone(),
            login: self.login.clone(),
            approval: id.into(),
            policy_role,
            column: column.into(),
            ticket: ticket.into(),
            rows,
            rows_left,
        })));
    }

    /// Whether this session may no longer see plaintext (bulk block).
    pub fn blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// The client sent a simple Query.
    pub fn sent(&self, text: Arc<StatementText>) {
        let mut queue = self.lock_queue();
        queue.readies_sent += 1;
        Self::push(&mut queue, text, Some(0), 0);
    }

    /// The client sent an Execute of a portal of `text`, for at most
    /// `max_rows` rows (0: all); or pgveil refused the statement `text` in
    /// the extended protocol.
    pub fn executed(&self, text: Arc<StatementText>, max_rows: u64) {
        Self::push(&mut self.lock_queue(), text, None, max_rows);
    }

    fn push(queue: &mut Queue, text: Arc<StatementText>, simple: Option<usize>, max_rows: u64) {
        let copy_ends = queue.copy_ends;
        queue.entries.push_back(Entry::Statement {
            text,
            simple,
            max_rows,
            time: Timestamp::now(),
            started: Instant::now(),
            copy_ends,
        });
    }

    /// The client sent Sync, or a FunctionCall (answered with a
    /// ReadyForQuery like a Sync, and recorded no more than before).
    pub fn sync(&self) {
        let mut queue = self.lock_queue();
        queue.readies_sent += 1;
        let copy_ends = queue.copy_ends;
        queue.entries.push_back(Entry::Sync { copy_ends });
    }

    /// The client sent CopyDone or CopyFail.
    pub(crate) fn copy_ended(&self) {
        self.lock_queue().copy_ends += 1;
    }

    /// CopyInResponse: the server ignores the Syncs sent from the COPY at
    /// the front until its data ends.
    pub(crate) fn copy_started(&self) {
        let mut queue = self.lock_queue();
        let Some(Entry::Statement { copy_ends, .. }) = queue.entries.front() else {
            return;
        };
        let copy_ends = *copy_ends;
        let mut ignored = 0;
        queue.entries.retain(|entry| {
            let sync = matches!(entry, Entry::Sync { copy_ends: c } if *c == copy_ends);
            ignored += u64::from(sync);
            !sync
        });
        queue.readies_sent -= ignored;
    }

    /// The number of ReadyForQuery the messages sent so far will bring.
    pub(crate) fn readies_sent(&self) -> u64 {
        self.lock_queue().readies_sent
    }

    /// Whether the server has been outside a transaction since the first
    /// ReadyForQuery after `readies_sent` were sent: whether a portal
    /// bound then is gone.
    pub(crate) fn idle_since(&self, readies_sent: u64) -> bool {
        self.lock_queue().idle_at > readies_sent
    }

    /// `count` values of a protected column were read, with this decision
    /// (`None`: left encrypted) taken by the rule of `policy_role` (`None`:
    /// the column's default), stored encrypted or, if `unencrypted`, not.
    pub fn read(
        &self,
        column: String,
        policy_role: Option<&str>,
        action: Option<Action>,
        unencrypted: bool,
        count: u64,
    ) {
        let mut answer = self.lock_answer();
        let key = (
            column,
            DecisionKey::of(action, unencrypted),
            policy_role.map(str::to_owned),
        );
        *answer.reads.entry(key).or_default() += count;
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended, with the
    /// rows the command tag counts: the statement at the front ends.
    pub fn completed(&self, rows: u64, declared: &Values) {
        {
            let mut answer = self.lock_answer();
            if !answer.denied {
                answer.rows += rows;
            }
        }
        self.finish(declared, false);
    }

    /// PortalSuspended: the Execute returned its row limit.
    pub(crate) fn suspended(&self, declared: &Values) {
        let rows = match self.lock_queue().entries.front() {
            Some(Entry::Statement { max_rows, .. }) => *max_rows,
            _ => 0,
        };
        self.completed(rows, declared);
    }

    /// An ErrorResponse; `refusal` when it is pgveil's refusal, which
    /// stands for a whole Query.
    pub fn failed(&self, sqlstate: &[u8], refusal: bool, declared: &Values) {
        let code = std::str::from_utf8(sqlstate)
            .ok()
            .and_then(|c| SqlState::new(c).ok());
        // XX000 stands for an error whose SQLSTATE cannot be read.
        let code = code.or_else(|| SqlState::new(INTERNAL_ERROR).ok());
        {
            let mut answer = self.lock_answer();
            if !answer.denied {
                answer.error = code;
            }
        }
        self.finish(declared, refusal);
    }

    /// pgveil withheld a value of the statement at the front, which fails
    /// with `sqlstate` for the client; it ends when the server's answer
    /// for it does.
    pub fn denied(&self, sqlstate: &[u8]) {
        let code = std::str::from_utf8(sqlstate)
            .ok()
            .and_then(|c| SqlState::new(c).ok())
            .or_else(|| SqlState::new(INSUFFICIENT_PRIVILEGE).ok());
        let mut answer = self.lock_answer();
        answer.error = code;
        answer.denied = true;
    }

    /// ReadyForQuery with this transaction status: a Query ends; a batch's
    /// unrun statements are dropped.
    pub fn ready(&self, status: u8, declared: &Values) {
        let mut queue = self.lock_queue();
        queue.readies += 1;
        if status == transaction::IDLE {
            queue.idle_at = queue.readies;
        }
        match queue.entries.front() {
            Some(Entry::Statement {
                simple: Some(0), ..
            }) => {
                // A Query nothing ended (it cannot happen): recorded whole.
                drop(queue);
                self.finish(declared, true);
                self.lock_queue().entries.pop_front();
            }
            Some(Entry::Statement {
                simple: Some(_), ..
            }) => {
                queue.entries.pop_front();
            }
            _ => {
                while let Some(entry) = queue.entries.pop_front() {
                    if matches!(entry, Entry::Sync { .. }) {
                        break;
                    }
                }
            }
        }
        // An error between statements (a COMMIT at Sync) is no statement's.
        let mut answer = self.lock_answer();
        answer.rows = 0;
        answer.error = None;
        answer.denied = false;
    }

    /// The connection's totals: statements recorded and rows.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.statements.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_answer(&self) -> MutexGuard<'_, Answer> {
        self.answer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the statement at the front: an Execute, or the next
    /// statement of a Query (all that is left of it when `whole`). An
    /// error after the last statement of a Query, which is no statement's,
    /// is dropped.
    fn finish(&self, declared: &Values, whole: bool) {
        let mut queue = self.lock_queue();
        let Some(Entry::Statement {
            text,
            simple,
            time,
            started,
            ..
        }) = queue.entries.front_mut()
        else {
            return;
        };
        let (text, time, started, part) = match simple {
            Some(done) => {
                let text = text.clone();
                let part = if whole {
                    *done = usize::MAX;
                    None
                } else if *done == usize::MAX {
                    return;
                } else {
                    // Rare: summarized here, under the lock, only then.
                    let error = self.lock_answer().error.is_some();
                    if error && *done >= text.summary(&self.shapes).count() {
                        drop(queue);
                        let mut answer = self.lock_answer();
                        answer.error = None;
                        return;
                    }
                    *done += 1;
                    Some(*done - 1)
                };
                let ended = (text, *time, *started, part);
                *time = Timestamp::now();
                *started = Instant::now();
                ended
            }
            None => match queue.entries.pop_front() {
                Some(Entry::Statement {
                    text,
                    time,
                    started,
                    ..
                }) => (text, time, started, Some(0)),
                _ => return,
            },
        };
        drop(queue);
        self.write(&text, time, started, part, declared);
    }

    /// Writes the record of statement `part` of `text` (all of it for
    /// `None`) with what the server answered for it.
    fn write(
        &self,
        text: &StatementText,
        time: Timestamp,
        started: Instant,
        part: Option<usize>,
        declared: &Values,
    ) {
        let answer = std::mem::take(&mut *self.lock_answer());
        self.watch_bulk(&answer.reads, declared);
        self.rows.fetch_add(answer.rows, Ordering::Relaxed);
        self.statements.fetch_add(1, Ordering::Relaxed);
        let touches_protected =
            text.protected || !text.written.is_empty() || !answer.reads.is_empty();
        if self.scope == Scope::Protected && !touches_protected {
            return;
        }
        let summary = text.summary(&self.shapes);
        let (statement, index) = match part {
            Some(i) => (summary.part(i), i),
            None => (summary.whole(), 0),
        };
        let policy_role = |role: Option<String>| Some(role.unwrap_or_else(|| DEFAULT_RULE.into()));
        let columns = text
            .written
            .iter()
            .filter(|written| part.is_none() || summary.writes(index, &written.column))
            .map(|written| ColumnAccess {
                column: written.column.clone(),
                access: Access::Write,
                decision: Decision::Encrypted,
                policy_role: policy_role(written.policy_role.clone()),
                unencrypted: false,
            })
            .chain(
                answer
                    .reads
                    .into_keys()
                    .map(|(column, key, role)| ColumnAccess {
                        column,
                        access: Access::Read,
                        decision: key.decision(),
                        policy_role: policy_role(role),
                        unencrypted: key.unencrypted(),
                    }),
            )
            .collect::<Vec<_>>();
        let line = StatementLine {
            time,
            peer: &self.peer,
            login: &self.login,
            actor: declared.actor.as_deref(),
            purpose: declared.purpose.as_deref(),
            ticket: declared.ticket.as_deref(),
            kind: &statement.kind,
            statement: &statement.normalized,
            tables: &statement.tables,
            columns: &columns,
            rows: answer.rows,
            outcome: answer.error.map_or(Outcome::Ok, Outcome::Error),
            duration_us: started.elapsed().as_micros() as u64,
        };
        // As `record`: a record the log cannot take is counted by the sink.
        let _ = self.handle.record_statement(&line);
    }

    /// Counts plaintext reads against the bulk thresholds; alerts (and
    /// blocks) on a crossing.
    fn watch_bulk(
        &self,
        reads: &BTreeMap<(String, DecisionKey, Option<String>), u64>,
        declared: &Values,
    ) {
        let Some(bulk) = &self.bulk else {
            return;
        };
        let plaintext = reads
            .iter()
            .filter(|((_, key, _), _)| key.is_plaintext())
            .map(|((column, _, _), rows)| (column.as_str(), *rows));
        let Some(crossing) = bulk.add_statement(
            &self.login.role,
            declared.actor.as_deref(),
            plaintext,
            Instant::now(),
        ) else {
            return;
        };
        let config = bulk.config();
        warn!(
            role = %self.login.role,
            columns = %crossing.columns.join(", "),
            rows = crossing.rows,
            threshold = config.threshold_rows,
            window_secs = config.window_secs,
            "bulk access: plaintext rows of protected columns over the threshold"
        );
        if config.on_bulk == OnBulk::Block {
            self.blocked.store(true, Ordering::Relaxed);
        }
        self.record(AuditRecord::Alert(AlertRecord {
            time: Timestamp::now(),
            role: self.login.role.to_string(),
            actor: declared.actor.clone(),
            connection: Some(self.peer.connection),
            columns: crossing.columns,
            rows: crossing.rows,
            threshold: config.threshold_rows,
            window_secs: config.window_secs,
        }));
    }

    /// Queues a record. A record the log cannot take is counted and
    /// warned about by the sink; statements that touch protected columns
    /// are refused meanwhile (`refusing`).
    pub fn record(&self, record: AuditRecord) {
        let _ = self.handle.record(record);
    }

    /// Where the session connects from.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}
