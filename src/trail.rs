//! One session's audit trail: what it ran, what it read and wrote of
//! protected columns, and how each statement ended.
//!
//! The client tap notes each statement as it is sent (a `Query`, or an
//! `Execute` of a prepared statement) and each `Sync`; the server tap
//! completes them in the same order, since PostgreSQL answers in order:
//! an `Execute` ends at its CommandComplete, EmptyQueryResponse,
//! PortalSuspended or error; a `Query` at its ReadyForQuery; after an
//! error, the server skips the rest of an extended batch, so entries up to
//! the batch's `Sync` are dropped unrun. Statement text is normalized
//! (`pg_query::normalize`: every constant becomes `$n`) only when a record
//! is written, and once per prepared statement. No value of any kind
//! reaches a record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tracing::warn;

use crate::audit::{
    Access, AlertRecord, AuditHandle, AuditRecord, ColumnAccess, Decision, Login,
    NormalizedStatement, OnBulk, Outcome, Peer, Scope, SqlState, StatementLine, Timestamp,
};
use crate::bulk::{BulkWatch, Reader as BulkReader};
use crate::declared::Values;
use crate::encrypt::contains_ignore_case;
use crate::policy::Action;

/// How the audit log is set up for every session.
#[derive(Clone)]
pub struct AuditSetup {
    pub handle: AuditHandle,
    pub scope: Scope,
    pub bulk: Option<Arc<BulkWatch>>,
}

/// A statement's text and what pgveil knows of it before it runs.
#[derive(Debug)]
pub struct StatementText {
    sql: String,
    /// Protected columns it writes (encrypted), `schema.table.column`.
    written: Vec<String>,
    /// Whether it mentions a protected table.
    protected: bool,
    /// Whether it is a `COPY ... FROM STDIN`.
    copy_in: bool,
    /// Kind, normalized text and tables, computed once, when first needed.
    summary: OnceLock<Arc<Summary>>,
}

#[derive(Debug)]
struct Summary {
    kind: Arc<str>,
    normalized: NormalizedStatement,
    tables: Arc<[String]>,
}

impl StatementText {
    pub fn new(sql: String, written: Vec<String>, protected: bool) -> Arc<Self> {
        let copy_in = contains_ignore_case(sql.as_bytes(), b"copy")
            && crate::rewrite::is_copy_from_stdin(&sql);
        Arc::new(Self {
            sql,
            written,
            protected,
            copy_in,
            summary: OnceLock::new(),
        })
    }

    /// Whether it may touch protected columns: it writes them or mentions
    /// a protected table.
    pub fn protected(&self) -> bool {
        self.protected || !self.written.is_empty()
    }

    /// Whether it is a `COPY ... FROM STDIN`: the server ignores the Syncs
    /// sent while its data flows.
    pub fn copy_in(&self) -> bool {
        self.copy_in
    }

    /// The summary, from `cache` when a statement of the same shape was
    /// summarized before.
    fn summary(&self, cache: &Mutex<ShapeCache>) -> &Summary {
        self.summary.get_or_init(|| {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            let ShapeCache { summaries, shape } = &mut *cache;
            if !shape_into(&self.sql, shape) {
                return Arc::new(summarize(&self.sql));
            }
            if let Some(summary) = summaries.get(shape.as_str()) {
                return summary.clone();
            }
            let summary = Arc::new(summarize(&self.sql));
            if summaries.len() >= SHAPE_CACHE_SIZE {
                summaries.clear();
            }
            summaries.insert(shape.clone(), summary.clone());
            summary
        })
    }
}

/// Summaries by statement shape, for one session, and the room a shape is
/// computed in.
#[derive(Default)]
struct ShapeCache {
    summaries: HashMap<String, Arc<Summary>>,
    shape: String,
}

/// Shapes remembered per session before the cache starts over.
const SHAPE_CACHE_SIZE: usize = 256;

/// Writes over `out` the statement with each plain number and `'...'`
/// string replaced by `?`, so that statements differing only in their
/// constants share a shape, and with it their normalized text, kind and
/// tables. False for text this simple scan cannot be sure of (comments,
/// dollar quotes, escape strings, parameters): that text is normalized on
/// its own. A shape holds no constant, so the cache holds no value.
fn shape_into(sql: &str, out: &mut String) -> bool {
    out.clear();
    let bytes = sql.as_bytes();
    // The text from `copied` on is not in `out` yet.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        let (end, constant) = match bytes[i] {
            b'$' | b'\\' => return false,
            b'-' if next == Some(b'-') => return false,
            b'/' if next == Some(b'*') => return false,
            // A quoted identifier is kept as it is.
            b'"' => match skip_quoted(bytes, i + 1, b'"') {
                Some(end) => (end, false),
                None => return false,
            },
            b'\'' => {
                if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
                    return false; // E'...', U&'...', B'...', X'...'
                }
                match skip_quoted(bytes, i + 1, b'\'') {
                    Some(end) => (end, true),
                    None => return false,
                }
            }
            b'0'..=b'9' if i == 0 || !is_word(bytes[i - 1]) => {
                let digits = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.')
                    .count();
                (i + digits, true)
            }
            _ => (i + 1, false),
        };
        if constant {
            // Constants start and end at ASCII bytes: char boundaries.
            out.push_str(&sql[copied..i]);
            out.push('?');
            copied = end;
        }
        i = end;
    }
    out.push_str(&sql[copied..]);
    true
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The index after the `quote` closing a quoted run whose body starts at
/// `i` (a doubled quote is part of the body).
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8) -> Option<usize> {
    loop {
        match *bytes.get(i)? {
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Kind, normalized text and tables of a statement text. Text that does
/// not parse is recorded as such, never as it is.
fn summarize(sql: &str) -> Summary {
    let unparsed = || Summary {
        kind: "unknown".into(),
        normalized: NormalizedStatement::from_normalized("<statement that does not parse>".into()),
        tables: Arc::new([]),
    };
    let (Ok(parsed), Ok(normalized)) = (pg_query::parse(sql, 0), pg_query::normalize(sql)) else {
        return unparsed();
    };
    let kind = parsed
        .statement_types()
        .first()
        .map_or("empty".to_owned(), |t| statement_kind(t));
    Summary {
        kind: kind.into(),
        normalized: NormalizedStatement::from_normalized(normalized),
        tables: parsed.tables().into(),
    }
}

/// `SelectStmt` → `select`, `CreateTableAsStmt` → `create_table_as`.
fn statement_kind(node_type: &str) -> String {
    let name = node_type.strip_suffix("Stmt").unwrap_or(node_type);
    let mut kind = String::with_capacity(name.len() + 4);
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            kind.push('_');
        }
        kind.push(c.to_ascii_lowercase());
    }
    kind
}

/// A statement sent and not yet answered, or the end of a batch.
enum Entry {
    Statement {
        text: Arc<StatementText>,
        /// A simple-protocol Query, answered up to its ReadyForQuery.
        simple: bool,
        /// An Execute's row limit (0 for none): the rows it returned when
        /// the server suspends the portal.
        max_rows: u64,
        time: Timestamp,
        started: Instant,
    },
    Sync,
}

/// What the server has answered so far for the statement at the front.
#[derive(Default)]
struct Answer {
    rows: u64,
    error: Option<SqlState>,
    /// Values read, by column and decision.
    reads: BTreeMap<(String, DecisionKey), u64>,
}

/// `Decision` ordered, for a set of distinct reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DecisionKey(u8);

impl DecisionKey {
    fn of(action: Option<Action>) -> Self {
        DecisionKey(match action {
            Some(Action::Plaintext) => 0,
            Some(Action::Masked) => 1,
            Some(Action::Pseudonym) => 2,
            Some(Action::Null) => 3,
            Some(Action::Deny) => 4,
            None => 5,
        })
    }

    fn decision(self) -> Decision {
        match self.0 {
            0 => Decision::Plaintext,
            1 => Decision::Masked,
            2 => Decision::Pseudonym,
            3 => Decision::Null,
            4 => Decision::Denied,
            _ => Decision::Encrypted,
        }
    }
}

/// Statement texts by portal, for the trail. The unnamed portal, which
/// most clients bind every statement to, has a slot of its own.
#[derive(Default)]
pub struct Portals {
    unnamed: Option<Arc<StatementText>>,
    named: HashMap<Vec<u8>, Arc<StatementText>>,
}

impl Portals {
    /// A Bind made `portal` a portal of the statement of `text`.
    pub fn bind(&mut self, portal: &[u8], text: Arc<StatementText>) {
        if portal.is_empty() {
            self.unnamed = Some(text);
        } else {
            self.named.insert(portal.to_vec(), text);
        }
    }

    /// The text of the statement bound to `portal`.
    pub fn get(&self, portal: &[u8]) -> Option<&Arc<StatementText>> {
        if portal.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(portal)
        }
    }
}

/// A session's audit trail, shared by its two taps.
pub struct Trail {
    handle: AuditHandle,
    scope: Scope,
    bulk: Option<Arc<BulkWatch>>,
    /// Set when this session crossed a bulk threshold with `on_bulk =
    /// "block"`: it gets no more plaintext.
    blocked: AtomicBool,
    peer: Peer,
    login: Login,
    entries: Mutex<VecDeque<Entry>>,
    answer: Mutex<Answer>,
    shapes: Mutex<ShapeCache>,
    statements: AtomicU64,
    rows: AtomicU64,
}

impl Trail {
    pub fn new(audit: &AuditSetup, peer: Peer, login: Login) -> Self {
        Self {
            handle: audit.handle.clone(),
            scope: audit.scope,
            bulk: audit.bulk.clone(),
            blocked: AtomicBool::new(false),
            peer,
            login,
            entries: Mutex::default(),
            answer: Mutex::default(),
            shapes: Mutex::default(),
            statements: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Whether the audit log can take records; with `on_failure =
    /// "refuse"`, statements touching protected columns must be refused
    /// while it cannot.
    pub fn refusing(&self) -> bool {
        self.handle.refusing()
    }

    /// Whether this session may no longer see plaintext (bulk block).
    pub fn blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// The client sent a statement.
    pub fn sent(&self, text: Arc<StatementText>, simple: bool) {
        self.push_statement(text, simple, 0);
    }

    /// The client sent an Execute of a portal of `text`, for at most
    /// `max_rows` rows (0: all).
    pub fn executed(&self, text: Arc<StatementText>, max_rows: u64) {
        self.push_statement(text, false, max_rows);
    }

    fn push_statement(&self, text: Arc<StatementText>, simple: bool, max_rows: u64) {
        self.lock_entries().push_back(Entry::Statement {
            text,
            simple,
            max_rows,
            time: Timestamp::now(),
            started: Instant::now(),
        });
    }

    /// The client sent Sync.
    pub fn sync(&self) {
        self.lock_entries().push_back(Entry::Sync);
    }

    /// `count` values of a protected column were read, with this decision
    /// (`None`: left encrypted).
    pub fn read(&self, column: String, action: Option<Action>, count: u64) {
        let mut answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        *answer
            .reads
            .entry((column, DecisionKey::of(action)))
            .or_default() += count;
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended, with the
    /// rows the command tag counts.
    pub fn completed(&self, rows: u64, declared: &Values) {
        self.answer.lock().unwrap_or_else(|e| e.into_inner()).rows += rows;
        if self.front_is_extended() {
            self.finish(declared);
        }
    }

    /// PortalSuspended: the Execute returned its row limit.
    pub fn suspended(&self, declared: &Values) {
        let rows = match self.lock_entries().front() {
            Some(Entry::Statement { max_rows, .. }) => *max_rows,
            _ => 0,
        };
        self.completed(rows, declared);
    }

    /// An ErrorResponse.
    pub fn failed(&self, sqlstate: &[u8], declared: &Values) {
        let code = std::str::from_utf8(sqlstate)
            .ok()
            .and_then(|c| SqlState::new(c).ok());
        // XX000 stands for an error whose SQLSTATE cannot be read.
        let code = code.or_else(|| SqlState::new("XX000").ok());
        self.answer.lock().unwrap_or_else(|e| e.into_inner()).error = code;
        if self.front_is_extended() {
            self.finish(declared);
        }
    }

    /// ReadyForQuery: a Query ends; a batch's unrun statements are dropped.
    pub fn ready(&self, declared: &Values) {
        if matches!(
            self.lock_entries().front(),
            Some(Entry::Statement { simple: true, .. })
        ) {
            self.finish(declared);
            return;
        }
        let mut entries = self.lock_entries();
        while let Some(entry) = entries.pop_front() {
            if matches!(entry, Entry::Sync) {
                break;
            }
        }
    }

    /// The connection's totals: statements recorded and rows.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.statements.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }

    fn front_is_extended(&self) -> bool {
        matches!(
            self.lock_entries().front(),
            Some(Entry::Statement { simple: false, .. })
        )
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the record of the statement at the front.
    fn finish(&self, declared: &Values) {
        let Some(Entry::Statement {
            text,
            time,
            started,
            ..
        }) = self.lock_entries().pop_front()
        else {
            return;
        };
        let answer = std::mem::take(&mut *self.answer.lock().unwrap_or_else(|e| e.into_inner()));
        self.watch_bulk(&answer.reads, declared);
        self.rows.fetch_add(answer.rows, Ordering::Relaxed);
        self.statements.fetch_add(1, Ordering::Relaxed);
        let touches_protected =
            text.protected || !text.written.is_empty() || !answer.reads.is_empty();
        if self.scope == Scope::Protected && !touches_protected {
            return;
        }
        let summary = text.summary(&self.shapes);
        let columns = text
            .written
            .iter()
            .map(|column| ColumnAccess {
                column: column.clone(),
                access: Access::Write,
                decision: Decision::Encrypted,
            })
            .chain(answer.reads.into_keys().map(|(column, key)| ColumnAccess {
                column,
                access: Access::Read,
                decision: key.decision(),
            }))
            .collect::<Vec<_>>();
        let line = StatementLine {
            time,
            peer: &self.peer,
            login: &self.login,
            actor: declared.actor.as_deref(),
            purpose: declared.purpose.as_deref(),
            kind: &summary.kind,
            statement: &summary.normalized,
            tables: &summary.tables,
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
    fn watch_bulk(&self, reads: &BTreeMap<(String, DecisionKey), u64>, declared: &Values) {
        let Some(bulk) = &self.bulk else {
            return;
        };
        let now = Instant::now();
        let plaintext = DecisionKey::of(Some(Action::Plaintext));
        for ((column, _), rows) in reads.iter().filter(|((_, key), _)| *key == plaintext) {
            let reader = BulkReader {
                role: self.login.role.clone(),
                actor: declared.actor.clone(),
                column: column.clone(),
            };
            let Some(crossing) = bulk.add(reader, *rows, now) else {
                continue;
            };
            let config = bulk.config();
            warn!(
                role = %self.login.role,
                column = %column,
                rows = crossing.rows,
                threshold = config.threshold_rows,
                window_secs = config.window_secs,
                "bulk access: plaintext rows of a protected column over the threshold"
            );
            if config.on_bulk == OnBulk::Block {
                self.blocked.store(true, Ordering::Relaxed);
            }
            self.record(AuditRecord::Alert(AlertRecord {
                time: Timestamp::now(),
                role: self.login.role.to_string(),
                actor: declared.actor.clone(),
                column: column.clone(),
                rows: crossing.rows,
                threshold: config.threshold_rows,
                window_secs: config.window_secs,
            }));
        }
    }

    /// Queues a record. A record the log cannot take is counted and
    /// warned about by the sink; statements that touch protected columns
    /// are refused meanwhile (`refusing`).
    pub fn record(&self, record: AuditRecord) {
        let _ = self.handle.record(record);
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

/// The tag of a CommandComplete frame (`SELECT 5`), without its NUL.
pub fn command_tag(frame: &[u8]) -> &[u8] {
    frame
        .get(5..frame.len().saturating_sub(1))
        .unwrap_or_default()
}

/// The row count of a CommandComplete frame's tag (`SELECT 5`, `INSERT 0 2`).
pub fn tag_rows(frame: &[u8]) -> u64 {
    command_tag(frame)
        .rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_summaries() {
        assert_eq!(statement_kind("SelectStmt"), "select");
        assert_eq!(statement_kind("CreateTableAsStmt"), "create_table_as");
        let s = summarize("SELECT * FROM customers WHERE email = 'a@b.c' AND id = 7");
        assert_eq!(&*s.kind, "select");
        assert!(!s.normalized.as_str().contains("a@b.c"));
        assert!(!s.normalized.as_str().contains('7'));
        assert_eq!(&*s.tables, ["customers".to_owned()]);
        let bad = summarize("SELEC 'secret value'");
        assert!(!bad.normalized.as_str().contains("secret"));
    }

    fn shape(sql: &str) -> Option<String> {
        let mut out = "left over".to_owned();
        shape_into(sql, &mut out).then_some(out)
    }

    #[test]
    fn shapes_hide_constants_and_give_up_when_unsure() {
        let a = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").unwrap();
        let b = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 7;").unwrap();
        assert_eq!(a, b);
        assert!(!a.contains("12345"));
        assert_eq!(
            shape("select 'it''s', x1 from t2").unwrap(),
            "select ?, x1 from t2"
        );
        assert_eq!(
            shape("select 'é', '中' from 表 where n = 1.5e3 and x2 = 3").unwrap(),
            "select ?, ? from 表 where n = ? and x2 = ?"
        );
        assert_eq!(
            shape(r#"select "it's" from "T""1""#).unwrap(),
            r#"select "it's" from "T""1""#
        );
        for unsure in [
            "select $1",
            "select E'a'",
            "select 1 -- c",
            "select /* c */ 1",
            "select 'open",
        ] {
            assert_eq!(shape(unsure), None, "{unsure}");
        }
    }

    #[test]
    fn rows_of_command_tags() {
        let frame =
            |tag: &str| crate::protocol::reply::frame_of(b'C', format!("{tag}\0").as_bytes());
        assert_eq!(tag_rows(&frame("SELECT 5")), 5);
        assert_eq!(tag_rows(&frame("INSERT 0 2")), 2);
        assert_eq!(tag_rows(&frame("CREATE TABLE")), 0);
    }
}
