//! Encrypts what clients write: the client-to-server tap of a session
//! with a policy.
//!
//! - `Query` and `Parse` texts go through [`crate::sql`]: literals
//!   written to or compared with protected columns are replaced by their
//!   ciphertext; a statement pgveil cannot make safe is refused.
//! - `Bind` values at the parameter positions a `Parse` reported are
//!   encrypted, in text or binary format. For a text column a value's
//!   binary form is its text; for a `bytea` column the plaintext is the
//!   value's bytes (binary format) or the bytes its `bytea` text input
//!   stands for (text format), and the ciphertext is sent in the same
//!   format: the envelope's bytes, or `\x` and their hex.
//! - What each Query, Execute and Sync does to the session's declared
//!   purpose and actor (`SET pgveil.purpose` and friends, savepoints) and
//!   to its SQL-prepared statements (`PREPARE`, `DEALLOCATE`, `DISCARD
//!   ALL`) is queued in [`Declared`], which applies it as the server
//!   answers; a change pgveil cannot follow is refused
//!   (`sql::declarations`).
//! - COPY FROM STDIN data into a protected table is encrypted
//!   (`copy_in`), read in the client encoding in force when the data
//!   starts.
//!
//! **Refusing in order.** A refusal must reach the client where
//! PostgreSQL's own error would, after the answers to everything sent
//! before it, and must abort the transaction as an error would. So the
//! refused message is replaced by a statement that makes the server raise
//! pgveil's error itself: `DO $$ ... RAISE EXCEPTION USING ERRCODE = ...`,
//! marked with a per-process nonce in the error's `schema` field. In the
//! extended protocol it is sent as an unnamed Parse/Bind/Execute and the
//! client's messages up to its Sync are dropped, as the server would
//! ignore them after an error; the server tap removes the
//! ParseComplete/BindComplete of that statement and the marker fields.
//! Nothing of the refused statement reaches the server.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::info;

use crate::audit::trail::{text as trail_text, Names, Trail};
use crate::protect::policy::ColumnPolicy;
use crate::protect::protection::Protection;
use crate::session::catalog::Catalog;
use crate::session::ledger::{Described, Named, ParsedStatement, Rows};
use crate::session::state::SessionState;
use crate::session::tap::Tap;
use crate::sql::{
    self, copy_out_options, declarations, merge_slots, Analysis, CopyIn, Declarations, Effect,
    EncryptError, Encryptor, Outcome, Param, ParamSlot, Refusal, Statements, Storage,
};
use crate::text::ascii::contains_ignore_case;
use crate::text::bytea;
use crate::text::encoding::{self, ClientEncoding};
use crate::wire::copy::options::CopyOptions;
use crate::wire::messages::bind::BindMessage;
use crate::wire::messages::body::{body_of, cstring};
use crate::wire::messages::close::CloseMessage;
use crate::wire::messages::data_row::put_field;
use crate::wire::messages::describe::DescribeMessage;
use crate::wire::messages::parse::ParseMessage;
use crate::wire::messages::{execute, function_call, query};
use crate::wire::reply;
use crate::wire::sqlstate;
use crate::wire::tags::{frontend, target};
use crate::write::copy_in::{CopyEncryptor, CopyError};

impl Encryptor for Protection {
    fn encrypt(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError> {
        self.keyring
            .encrypt_text(
                &column.domain,
                column.encryption.into(),
                plaintext.as_bytes(),
            )
            .map_err(|e| EncryptError(e.to_string()))
    }

    fn encrypt_bytes(
        &self,
        column: &ColumnPolicy,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptError> {
        self.keyring
            .encrypt_bytes(&column.domain, column.encryption.into(), plaintext)
            .map_err(|e| EncryptError(e.to_string()))
    }
}

/// The client-to-server tap. Without a policy it only notes Terminate.
pub struct ClientTap<'a> {
    veil: Option<&'a Protection>,
    shared: &'a SessionState,
    catalog: &'a Catalog,
    /// Prepared `COPY ... TO STDOUT`, by name: their data options.
    copy_out_statements: HashMap<String, CopyOptions>,
    /// What prepared statements do to the declarations, by name, for
    /// those that do something.
    declaring: HashMap<String, Declarations>,
    /// The same, resolved with the Bind's parameters, by portal.
    portal_effects: HashMap<String, Vec<Effect>>,
    /// After an extended-protocol refusal: drop messages up to Sync.
    skipping: bool,
    /// The COPY FROM STDIN into a protected table in progress, if any.
    copy: Option<CopyState<'a>>,
    /// The session's audit trail, with audit on.
    trail: Option<&'a Trail>,
    /// Statement texts for the trail, by statement name and by portal.
    names: Names,
    /// An Execute or FunctionCall was sent since the last Sync: it may
    /// have changed a setting the server reports only at ReadyForQuery.
    ran_since_sync: bool,
    /// The same, before the message being handled.
    ran_before: bool,
    /// Parses and Binds counted, to tell names made again apart
    /// ([`Named`]).
    generation: u64,
    /// The generation of each prepared statement and portal name.
    statement_generations: HashMap<String, u64>,
    portal_generations: HashMap<String, u64>,
    /// The statement each portal was bound from.
    bound: HashMap<String, Named>,
    /// Syncs sent: the client's batches, for what a Bind of a statement
    /// parsed again may assume (`crate::session::ledger::parsed`).
    batch: u64,
    /// The generation of each statement and portal name last described,
    /// so that the shape of an Execute's rows is known (`crate::read::shape`).
    described_statements: HashMap<String, u64>,
    described_portals: HashMap<String, u64>,
}

/// A COPY FROM STDIN whose data is being encrypted.
enum CopyState<'a> {
    /// Its data has not started: the client encoding it comes in is the
    /// one in force when it does.
    Waiting(CopyIn),
    Encrypting(CopyEncryptor<'a>),
    /// The data could not be encrypted and the COPY was failed: the rest of
    /// the client's data is dropped, never sent.
    Failed,
}

impl<'a> ClientTap<'a> {
    pub fn new(
        veil: Option<&'a Protection>,
        shared: &'a SessionState,
        catalog: &'a Catalog,
        trail: Option<&'a Trail>,
    ) -> Self {
        Self {
            veil,
            shared,
            catalog,
            copy_out_statements: HashMap::new(),
            declaring: HashMap::new(),
            portal_effects: HashMap::new(),
            skipping: false,
            copy: None,
            trail,
            names: Names::default(),
            ran_since_sync: false,
            ran_before: false,
            generation: 0,
            statement_generations: HashMap::new(),
            portal_generations: HashMap::new(),
            bound: HashMap::new(),
            batch: 0,
            described_statements: HashMap::new(),
            described_portals: HashMap::new(),
        }
    }

    /// Notes a simple Query in the trail.
    fn note_query(&mut self, sql: &str, written: Vec<String>) {
        if let Some(trail) = self.trail {
            let veil = self.veil;
            let text = trail_text(veil, sql, written);
            trail.sent(text.clone());
            self.names
                .query(&text, &|sql| trail_text(veil, sql, Vec::new()));
        }
    }

    /// Notes a prepared statement's text for the trail.
    fn note_parse(&mut self, name: &str, sql: &str, written: Vec<String>) {
        if self.trail.is_some() {
            self.names.parse(name, trail_text(self.veil, sql, written));
        }
    }

    /// Follows Parse, Bind, Execute, Close, Sync, FunctionCall and the end
    /// of COPY data for the trail; the texts of a Query and of a Parse
    /// with a policy are noted where they are analysed.
    fn observe(&mut self, trail: &Trail, tag: u8, frame: &[u8]) {
        let veil = self.veil;
        let make = |sql: &str| trail_text(veil, sql, Vec::new());
        match tag {
            frontend::QUERY if self.veil.is_none() => {
                let sql = query::sql(frame)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                self.note_query(&sql, Vec::new());
            }
            frontend::PARSE if self.veil.is_none() => {
                if let Some(parse) = ParseMessage::read(frame) {
                    let name = String::from_utf8_lossy(parse.name);
                    self.note_parse(&name, &String::from_utf8_lossy(parse.query), Vec::new());
                }
            }
            frontend::BIND => {
                if let (Some(portal), Some(statement)) = (
                    BindMessage::portal_name(frame),
                    BindMessage::statement_name(frame),
                ) {
                    self.names.bind(trail, portal, statement, &make);
                }
            }
            frontend::EXECUTE => {
                let portal = execute::portal(frame).unwrap_or_default();
                let max_rows = execute::max_rows(frame, portal);
                let text = self.names.execute(trail, portal, max_rows, &make);
                trail.executed(text, max_rows);
            }
            frontend::CLOSE => {
                if let Some(close) = CloseMessage::read_lenient(frame) {
                    self.names.close(close.target, close.name);
                }
            }
            frontend::SYNC | frontend::FUNCTION_CALL => trail.sync(),
            frontend::COPY_DONE | frontend::COPY_FAIL if self.veil.is_none() => trail.copy_ended(),
            _ => {}
        }
    }

    fn query(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        self.copy = None;
        let frame = self.conform_query(frame);
        let encoding = self.shared.encoding();
        let Some(sql) = query::sql(&frame).and_then(|s| encoding.decode(s)) else {
            self.shared.declared().query(Vec::new());
            self.note_query("", Vec::new());
            return self.refuse_query(veil, &undecodable(), out);
        };
        if let Some(refusal) = self.misreadable(body_of(&frame)) {
            self.shared.declared().query(Vec::new());
            self.note_query("", Vec::new());
            return self.refuse_query(veil, &refusal, out);
        }
        let analysis = self.rewrite(veil, &sql);
        let declared =
            declarations(&sql).and_then(|d| d.and(analysis.effects).resolve(&[], encoding));
        self.shared
            .declared()
            .query(declared.as_ref().cloned().unwrap_or_default());
        if let Err(refusal) = declared {
            self.note_query(&sql, Vec::new());
            return self.refuse_query(veil, &refusal, out);
        }
        self.shared
            .expect_copy_out(copy_out_in(&sql, veil, self.catalog));
        let outcome = analysis.outcome;
        self.note_query(&sql, written(&outcome));
        if self.audit_refusing(veil, &sql, &outcome) {
            return self.refuse_query(veil, &audit_unavailable(), out);
        }
        match outcome {
            Outcome::Unchanged => out.push(frame),
            Outcome::Rewritten(rewrite) => {
                out.push(reply::frame_of(
                    frontend::QUERY,
                    &cstring(encoding.encode(&rewrite.sql)),
                ));
            }
            Outcome::CopyIn(copy) if self.ran_before => {
                self.refuse_query(veil, &copy_unsettled(&copy), out)
            }
            Outcome::CopyIn(copy) => {
                match CopyEncryptor::new(&copy, &veil.policy, veil, encoding) {
                    Ok(_) => {
                        self.copy = Some(CopyState::Waiting(copy));
                        out.push(frame);
                    }
                    Err(e) => self.refuse_query(veil, &refusal_of(e), out),
                }
            }
            Outcome::Refused(refusal) => self.refuse_query(veil, &refusal, out),
        }
    }

    /// Rewrites a statement text, including `EXECUTE` of the statements
    /// the session prepared.
    fn rewrite(&self, veil: &Protection, sql: &str) -> Analysis {
        sql::rewrite_in_session(
            sql,
            &veil.policy,
            veil,
            self.catalog,
            &self.catalog.objects,
            &self.session_statements(),
        )
    }

    /// A statement text as pgveil and the server will both read it
    /// ([`sql::conform_literals`]), under the
    /// `standard_conforming_strings` the server last reported.
    fn conform<'t>(&self, sql: &'t str) -> Cow<'t, str> {
        sql::conform_literals(sql, self.shared.standard_strings.load(Ordering::Relaxed))
    }

    /// Whether the server has answered everything sent before, so that
    /// the settings it reported (client encoding, standard strings) are
    /// those the next message is read under.
    fn settled(&self) -> bool {
        !self.ran_since_sync && self.shared.declared().settled()
    }

    /// Why statement text (`raw`, in the client encoding) might be read
    /// by the server otherwise than by pgveil: in an encoding pgveil
    /// cannot read, any byte that is not ASCII; in any other, a backslash
    /// right after a non-ASCII byte when what was sent before it may have
    /// changed the client encoding ([`encoding::backslash_after_multibyte`]).
    fn misreadable(&self, raw: &[u8]) -> Option<Refusal> {
        let encoding = self.shared.encoding();
        if !encoding.delimits_characters() && !raw.is_ascii() {
            return Some(Refusal {
                sqlstate: sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                message: "pgveil: the session's client encoding is one pgveil cannot read, so \
                          statements with characters other than ASCII cannot be checked; use \
                          UTF8, GBK, GB18030, BIG5, SJIS, UHC, an EUC or a single-byte encoding"
                    .into(),
            });
        }
        // The byte scan first: the session's queue is locked only for the
        // rare text that needs it.
        if encoding::backslash_after_multibyte(raw) && !self.settled() {
            return Some(Refusal {
                sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
                message: "pgveil: the statement has a backslash right after a character that \
                          is not ASCII and was sent before the server answered the statements \
                          ahead of it, which may have changed client_encoding, so pgveil cannot \
                          be sure the server reads it as pgveil does; send it once they are \
                          answered"
                    .into(),
            });
        }
        None
    }

    /// A Query whose text is conformed ([`Self::conform`]): the same
    /// frame, or one rebuilt with the new text.
    fn conform_query(&self, frame: Bytes) -> Bytes {
        if !frame.contains(&b'\\') {
            return frame;
        }
        let encoding = self.shared.encoding();
        let Some(sql) = query::sql(&frame).and_then(|s| encoding.decode(s)) else {
            return frame;
        };
        match self.conform(&sql) {
            Cow::Borrowed(_) => frame,
            Cow::Owned(text) => reply::frame_of(frontend::QUERY, &cstring(encoding.encode(&text))),
        }
    }

    /// A Parse whose text is conformed ([`Self::conform`]): the same
    /// frame, or one rebuilt with the new text.
    fn conform_parse(&self, frame: Bytes) -> Bytes {
        if !frame.contains(&b'\\') {
            return frame;
        }
        let Some(parse) = ParseMessage::read(&frame) else {
            return frame;
        };
        let encoding = self.shared.encoding();
        let Some(sql) = encoding.decode(parse.query) else {
            return frame;
        };
        let Cow::Owned(text) = self.conform(&sql) else {
            return frame;
        };
        parse.with_query(&encoding.encode(&text))
    }

    /// The statements the session prepared, both ways.
    fn session_statements(&self) -> SessionStatements<'_> {
        SessionStatements {
            shared: self.shared,
            batch: self.batch,
        }
    }

    fn refuse_query(&self, veil: &Protection, refusal: &Refusal, out: &mut Vec<Bytes>) {
        info!(
            sqlstate = refusal.sqlstate,
            "statement refused: {}", refusal.message
        );
        let sql = raise_sql(veil, refusal);
        let sql = self.shared.encoding().encode(&sql);
        out.push(reply::frame_of(frontend::QUERY, &cstring(sql)));
    }

    /// Refuses the statement named `statement` (see the module doc). Its
    /// refusal stands for the client's next Execute in the trail.
    fn refuse_extended(
        &mut self,
        veil: &Protection,
        refusal: &Refusal,
        out: &mut Vec<Bytes>,
        statement: &str,
    ) {
        info!(
            sqlstate = refusal.sqlstate,
            "statement refused: {}", refusal.message
        );
        if let Some(trail) = self.trail {
            let veil = self.veil;
            let make = |sql: &str| trail_text(veil, sql, Vec::new());
            trail.executed(self.names.prepared(statement, &make), 0);
        }
        let mut parse = BytesMut::new();
        parse.put_u8(0);
        let sql = raise_sql(veil, refusal);
        parse.put_slice(&cstring(self.shared.encoding().encode(&sql)));
        parse.put_i16(0);
        out.push(reply::frame_of(frontend::PARSE, &parse));
        out.push(reply::frame_of(frontend::BIND, &[0, 0, 0, 0, 0, 0, 0, 0]));
        out.push(reply::frame_of(frontend::EXECUTE, &[0, 0, 0, 0, 0]));
        self.shared.declared().execute(Vec::new(), None);
        self.shared.pending_refusals.fetch_add(1, Ordering::Relaxed);
        self.skipping = true;
    }

    fn parse(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        let frame = self.conform_parse(frame);
        let Some(parse) = ParseMessage::read(&frame) else {
            return out.push(frame);
        };
        let encoding = self.shared.encoding();
        let name = String::from_utf8_lossy(parse.name).into_owned();
        let Some(sql) = encoding.decode(parse.query) else {
            self.note_parse(&name, "", Vec::new());
            return self.refuse_extended(veil, &undecodable(), out, &name);
        };
        if let Some(refusal) = self.misreadable(parse.query) {
            self.note_parse(&name, "", Vec::new());
            return self.refuse_extended(veil, &refusal, out, &name);
        }
        self.declaring.remove(&name);
        let plan = match declarations(&sql) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.note_parse(&name, &sql, Vec::new());
                return self.refuse_extended(veil, &refusal, out, &name);
            }
        };
        self.copy_out_statements.remove(&name);
        if let Some(options) = copy_out_in(&sql, veil, self.catalog).pop() {
            self.copy_out_statements.insert(name.clone(), options);
        }
        let analysis = self.rewrite(veil, &sql);
        let plan = plan.and(analysis.effects);
        if !plan.is_empty() {
            self.declaring.insert(name.clone(), plan);
        }
        let outcome = analysis.outcome;
        self.note_parse(&name, &sql, written(&outcome));
        if self.audit_refusing(veil, &sql, &outcome) {
            return self.refuse_extended(veil, &audit_unavailable(), out, &name);
        }
        let batch = self.batch;
        let parsed = |statement| self.shared.declared().parse(&name, batch, statement);
        match outcome {
            Outcome::Unchanged => {
                parsed(ParsedStatement::default());
                out.push(frame);
            }
            Outcome::Rewritten(rewrite) => {
                let rewritten = parse.with_query(&encoding.encode(&rewrite.sql));
                parsed(ParsedStatement {
                    slots: rewrite.params,
                    copy: None,
                });
                out.push(rewritten);
            }
            Outcome::CopyIn(copy) => {
                match CopyEncryptor::new(&copy, &veil.policy, veil, encoding) {
                    // Checked now, so that a refusal comes at Parse.
                    Ok(_) => {
                        parsed(ParsedStatement {
                            slots: Vec::new(),
                            copy: Some(copy),
                        });
                        out.push(frame);
                    }
                    Err(e) => self.refuse_extended(veil, &refusal_of(e), out, &name),
                }
            }
            Outcome::Refused(refusal) => self.refuse_extended(veil, &refusal, out, &name),
        }
    }

    fn bind(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        // No COPY data can come before this portal's Execute.
        self.copy = None;
        let name = BindMessage::statement_name(&frame).map(String::from_utf8_lossy);
        let Some(name) = name else {
            return out.push(frame);
        };
        if self.audit_refusing_prepared(&name) {
            return self.refuse_extended(veil, &audit_unavailable(), out, &name);
        }
        if let Err(refusal) = self.declare_portal(&name, &frame) {
            return self.refuse_extended(veil, &refusal, out, &name);
        }
        if let Some(options) = self.copy_out_statements.get(&*name) {
            self.shared.expect_copy_out(vec![options.clone()]);
        }
        let parsed = self.shared.declared().parsed(&name, self.batch);
        if let Some(copy) = parsed.copy {
            // The COPY's data follows its Execute.
            self.copy = Some(CopyState::Waiting(copy));
            return out.push(frame);
        }
        let slots = self.session_statements().slots(&name);
        if slots.is_empty() {
            return out.push(frame);
        }
        match encrypt_bind(veil, self.shared.encoding(), &frame, &slots) {
            Ok(bind) => out.push(bind),
            Err(refusal) => self.refuse_extended(veil, &refusal, out, &name),
        }
    }

    /// Notes what the portal a Bind creates will do to the declarations,
    /// with the Bind's parameters.
    fn declare_portal(&mut self, statement: &str, frame: &[u8]) -> Result<(), Refusal> {
        let portal = BindMessage::portal_name(frame).map(String::from_utf8_lossy);
        let portal = portal.unwrap_or_default().into_owned();
        let Some(plan) = self.declaring.get(statement) else {
            if !self.portal_effects.is_empty() {
                self.portal_effects.remove(&portal);
            }
            return Ok(());
        };
        let bind = BindMessage::read(frame).ok_or_else(malformed_bind)?;
        let params: Vec<Param<'_>> = (0..bind.values.len())
            .map(|i| Param {
                value: bind.values[i],
                binary: bind.binary(i),
            })
            .collect();
        let mut effects = plan.resolve(&params, self.shared.encoding())?;
        self.portal_effects
            .insert(portal, effects.pop().unwrap_or_default());
        Ok(())
    }

    /// An Execute: what its portal does to the declarations is queued.
    /// It runs a `set_config` once, at its first Execute.
    fn execute(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        let portal = execute::portal(&frame).map(String::from_utf8_lossy);
        let effects = match portal {
            Some(portal) if !self.portal_effects.is_empty() => {
                self.portal_effects.remove(&*portal).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        // A COPY's data is split in the client encoding in force when it
        // starts, which the server reports only at the end of the batch:
        // something executed before it in the batch may have changed it.
        if let (true, Some(CopyState::Waiting(copy)), Some(veil)) =
            (self.ran_before, &self.copy, self.veil)
        {
            let refusal = copy_unsettled(copy);
            self.copy = None;
            return self.refuse_extended(veil, &refusal, out, "");
        }
        let rows = execute::portal(&frame).map(|portal| {
            let portal = String::from_utf8_lossy(portal).into_owned();
            Rows {
                statement: self.bound.get(&portal).cloned(),
                portal: Named {
                    generation: self.portal_generations.get(&portal).copied().unwrap_or(0),
                    name: portal,
                },
            }
        });
        if let Some(rows) = rows.as_ref().filter(|rows| !self.shape_known(rows)) {
            // Rows whose description the client never asked for (a SQL
            // cursor or statement executed by name): pgveil asks, and keeps
            // the answer, so that values not stored encrypted are found.
            let mut body = vec![target::PORTAL];
            body.extend_from_slice(rows.portal.name.as_bytes());
            body.push(0);
            out.push(reply::frame_of(frontend::DESCRIBE, &body));
            self.described_portals
                .insert(rows.portal.name.clone(), rows.portal.generation);
            let target = Described::Portal(rows.portal.clone());
            self.shared.declared().describe(target, true);
        }
        self.shared.declared().execute(effects, rows);
        out.push(frame);
    }

    /// Whether the shape of the rows of an Execute is known: the client
    /// described its portal or its statement, or no result can have a
    /// protected field.
    fn shape_known(&self, rows: &Rows) -> bool {
        let described = |map: &HashMap<String, u64>, named: &Named| {
            map.get(&named.name) == Some(&named.generation)
        };
        self.catalog.attributes.is_empty()
            || described(&self.described_portals, &rows.portal)
            || rows
                .statement
                .as_ref()
                .is_some_and(|s| described(&self.described_statements, s))
    }

    /// Counts Parses and Binds by name, so that what the server describes
    /// is applied only to rows of the same statement ([`Named`]).
    fn count_names(&mut self, tag: u8, frame: &[u8]) {
        match tag {
            frontend::PARSE => {
                if let Some(parse) = ParseMessage::read(frame) {
                    self.generation += 1;
                    let name = String::from_utf8_lossy(parse.name).into_owned();
                    self.statement_generations.insert(name, self.generation);
                }
            }
            frontend::BIND => {
                let (Some(portal), Some(statement)) = (
                    BindMessage::portal_name(frame),
                    BindMessage::statement_name(frame),
                ) else {
                    return;
                };
                self.generation += 1;
                let portal = String::from_utf8_lossy(portal).into_owned();
                let statement = String::from_utf8_lossy(statement).into_owned();
                let statement = Named {
                    generation: self
                        .statement_generations
                        .get(&statement)
                        .copied()
                        .unwrap_or(0),
                    name: statement,
                };
                self.portal_generations
                    .insert(portal.clone(), self.generation);
                self.bound.insert(portal, statement);
            }
            frontend::DESCRIBE => {
                let Some(describe) = DescribeMessage::read_lenient(frame) else {
                    return;
                };
                let name = String::from_utf8_lossy(describe.name).into_owned();
                let target = match describe.target {
                    target::STATEMENT => {
                        let generation =
                            self.statement_generations.get(&name).copied().unwrap_or(0);
                        self.described_statements.insert(name.clone(), generation);
                        Described::Statement(Named { generation, name })
                    }
                    _ => {
                        let generation = self.portal_generations.get(&name).copied().unwrap_or(0);
                        self.described_portals.insert(name.clone(), generation);
                        Described::Portal(Named { generation, name })
                    }
                };
                self.shared.declared().describe(target, false);
            }
            frontend::CLOSE => {
                if let Some(close) = CloseMessage::read_lenient(frame) {
                    let name = String::from_utf8_lossy(close.name);
                    if close.target == target::STATEMENT {
                        self.statement_generations.remove(&*name);
                    } else {
                        self.portal_generations.remove(&*name);
                        self.bound.remove(&*name);
                    }
                }
            }
            _ => {}
        }
    }

    /// A FunctionCall (the fast-path protocol) is answered up to its
    /// ReadyForQuery; one that calls `set_config`, which pgveil cannot
    /// follow, is refused.
    fn function_call(&mut self, veil: &Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        self.shared.declared().query(Vec::new());
        if function_call::function_oid(&frame) == Some(SET_CONFIG_OID) {
            return self.refuse_query(veil, &sql::undeclarable_call(), out);
        }
        out.push(frame);
    }

    /// CopyData, CopyDone or CopyFail. Only those of a COPY into a
    /// protected table are changed; the end of every COPY's data is noted
    /// for the declarations.
    fn copy_message(&mut self, veil: &'a Protection, tag: u8, frame: Bytes, out: &mut Vec<Bytes>) {
        if let Some(CopyState::Waiting(copy)) = &self.copy {
            let encoding = self.shared.encoding();
            self.copy = Some(
                match CopyEncryptor::new(copy, &veil.policy, veil, encoding) {
                    Ok(encryptor) => CopyState::Encrypting(encryptor),
                    Err(e) => {
                        self.fail_copy(&e, out);
                        CopyState::Failed
                    }
                },
            );
        }
        let encryptor = match &mut self.copy {
            None => {
                self.copy_ended(tag);
                return out.push(frame);
            }
            Some(CopyState::Encrypting(encryptor)) => encryptor,
            Some(_) => {
                // Failed: the server is no longer reading; drop the data.
                if tag != frontend::COPY_DATA {
                    self.copy = None;
                }
                return;
            }
        };
        let result = match tag {
            frontend::COPY_DATA => encryptor.feed(body_of(&frame)),
            frontend::COPY_DONE => encryptor.finish(),
            _ => {
                self.copy = None;
                self.copy_ended(tag);
                return out.push(frame);
            }
        };
        match result {
            Ok(data) => {
                if !data.is_empty() {
                    out.push(reply::frame_of(frontend::COPY_DATA, &data));
                }
                if tag == frontend::COPY_DONE {
                    self.copy = None;
                    self.copy_ended(tag);
                    out.push(frame);
                }
            }
            Err(e) => {
                self.fail_copy(&e, out);
                self.copy = if tag == frontend::COPY_DONE {
                    None
                } else {
                    Some(CopyState::Failed)
                };
            }
        }
    }

    /// Sends CopyFail: the server aborts the COPY with pgveil's reason.
    fn fail_copy(&self, e: &CopyError, out: &mut Vec<Bytes>) {
        info!(sqlstate = e.sqlstate, "COPY refused: {}", e.message);
        out.push(reply::frame_of(frontend::COPY_FAIL, &cstring(&e.message)));
        self.copy_ended(frontend::COPY_FAIL);
    }

    /// Notes a CopyDone or CopyFail sent to the server.
    fn copy_ended(&self, tag: u8) {
        if tag != frontend::COPY_DATA {
            self.shared.declared().copy_ended();
            if let Some(trail) = self.trail {
                trail.copy_ended();
            }
        }
    }

    fn close(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        // As PostgreSQL reads it: a kind, a name, nothing after; one it
        // refuses changes nothing.
        if let Some(close) = CloseMessage::read(&frame) {
            let name = String::from_utf8_lossy(close.name);
            if close.target == target::STATEMENT {
                // Forgotten once the server has closed it.
                self.shared.declared().close(&name);
                self.declaring.remove(&*name);
            } else {
                self.portal_effects.remove(&*name);
            }
        }
        out.push(frame);
    }
}

impl Tap for ClientTap<'_> {
    fn wants(&self, tag: u8) -> bool {
        tag == frontend::TERMINATE
            || self.skipping
            || (self.trail.is_some()
                && matches!(
                    tag,
                    frontend::QUERY
                        | frontend::PARSE
                        | frontend::BIND
                        | frontend::EXECUTE
                        | frontend::CLOSE
                        | frontend::SYNC
                        | frontend::FUNCTION_CALL
                        | frontend::COPY_DONE
                        | frontend::COPY_FAIL
                ))
            || (self.veil.is_some()
                && matches!(
                    tag,
                    frontend::QUERY
                        | frontend::PARSE
                        | frontend::BIND
                        | frontend::CLOSE
                        | frontend::DESCRIBE
                        | frontend::EXECUTE
                        | frontend::SYNC
                        | frontend::FUNCTION_CALL
                ))
            || (self.veil.is_some() && matches!(tag, frontend::COPY_DONE | frontend::COPY_FAIL))
            || (self.copy.is_some() && tag == frontend::COPY_DATA)
    }

    fn look(&mut self, tag: u8, frame: &[u8]) -> bool {
        // With the audit log and no policy, messages are only noted.
        match self.trail {
            Some(trail) if self.veil.is_none() && !self.skipping && tag != frontend::TERMINATE => {
                self.observe(trail, tag, frame);
                true
            }
            _ => false,
        }
    }

    fn see(&mut self, tag: u8, frame: Bytes, out: &mut Vec<Bytes>) {
        if tag == frontend::TERMINATE {
            self.shared.terminated.store(true, Ordering::Relaxed);
        }
        let ran = self.ran_since_sync;
        self.ran_before = ran;
        if tag == frontend::SYNC {
            self.batch += 1;
        }
        match tag {
            frontend::EXECUTE | frontend::FUNCTION_CALL => self.ran_since_sync = true,
            frontend::SYNC => self.ran_since_sync = false,
            _ => {}
        }
        if self.skipping {
            // The server would ignore everything up to Sync after an error;
            // Flush still asks it to send what it has.
            self.skipping = tag != frontend::SYNC;
            if let (frontend::SYNC, Some(trail)) = (tag, self.trail) {
                trail.sync();
            }
            if tag == frontend::SYNC && self.veil.is_some() {
                self.shared.declared().sync(ran);
            }
            if matches!(tag, frontend::SYNC | frontend::FLUSH | frontend::TERMINATE) {
                out.push(frame);
            }
            return;
        }
        if let Some(trail) = self.trail {
            self.observe(trail, tag, &frame);
        }
        if self.veil.is_some() {
            self.count_names(tag, &frame);
        }
        match (tag, self.veil) {
            (frontend::QUERY, Some(veil)) => self.query(veil, frame, out),
            (frontend::PARSE, Some(veil)) => self.parse(veil, frame, out),
            (frontend::BIND, Some(veil)) => self.bind(veil, frame, out),
            (frontend::CLOSE, Some(_)) => self.close(frame, out),
            (frontend::EXECUTE, Some(_)) => self.execute(frame, out),
            (frontend::FUNCTION_CALL, Some(veil)) => self.function_call(veil, frame, out),
            (frontend::SYNC, Some(_)) => {
                self.shared.declared().sync(ran);
                out.push(frame)
            }
            (frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL, Some(veil)) => {
                self.copy_message(veil, tag, frame, out)
            }
            _ => out.push(frame),
        }
    }
}

impl ClientTap<'_> {
    /// Whether the audit log is down, with `on_failure = "refuse"`, and
    /// `sql` (analysed as `outcome`) may touch protected columns: it
    /// writes or compares them, or mentions a protected table.
    fn audit_refusing(&self, veil: &Protection, sql: &str, outcome: &Outcome) -> bool {
        self.trail.is_some_and(Trail::refusing)
            && (!matches!(outcome, Outcome::Unchanged) || veil.policy.mentions_protected_table(sql))
    }

    /// Whether the audit log is down, with `on_failure = "refuse"`, and the
    /// prepared statement `name` may touch protected columns. Checked at
    /// each Bind, since the log may have gone down after the Parse.
    fn audit_refusing_prepared(&self, name: &str) -> bool {
        self.trail.is_some_and(Trail::refusing)
            && self
                .names
                .statement(name)
                .is_some_and(|text| text.protected())
    }
}

/// The statements a session prepared: with SQL `PREPARE`, as [`Declared`]
/// follows them, and with named Parses. PostgreSQL keeps both under one
/// namespace: SQL `EXECUTE` runs a Parse's statement, a Bind binds a
/// `PREPARE`'s. Only one of a name exists on the server at a time; where
/// pgveil has slots for it both ways (one may be stale), it encrypts at
/// all of them.
struct SessionStatements<'t> {
    /// Whose declarations follow the prepared statements.
    shared: &'t SessionState,
    /// The client's batch.
    batch: u64,
}

impl Statements for SessionStatements<'_> {
    fn any(&self) -> bool {
        let declared = self.shared.declared();
        declared.has_parsed_slots() || declared.has_prepared_slots()
    }

    fn slots(&self, name: &str) -> Vec<ParamSlot> {
        let declared = self.shared.declared();
        let mut slots = declared.prepared_slots(name);
        merge_slots(&mut slots, &declared.parsed(name, self.batch).slots);
        slots
    }
}

/// The OID of `pg_catalog.set_config`, fixed in PostgreSQL's catalog.
const SET_CONFIG_OID: u32 = 2078;

/// The protected columns a statement writes, for the trail.
fn written(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Rewritten(rewrite) => rewrite.written.iter().map(ToString::to_string).collect(),
        Outcome::CopyIn(copy) => copy
            .columns
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn audit_unavailable() -> Refusal {
    Refusal {
        sqlstate: sqlstate::IO_ERROR,
        message: "pgveil: the audit log cannot record this access now; statements touching \
                  protected columns are refused until it recovers"
            .into(),
    }
}

/// The COPY TO statements of a text, if it may have any.
fn copy_out_in(sql: &str, veil: &Protection, catalog: &Catalog) -> Vec<CopyOptions> {
    if contains_ignore_case(sql.as_bytes(), b"copy") {
        copy_out_options(sql, &veil.policy, catalog)
    } else {
        Vec::new()
    }
}

fn refusal_of(e: CopyError) -> Refusal {
    Refusal {
        sqlstate: e.sqlstate,
        message: e.message,
    }
}

/// A COPY into a protected table run after something else in its batch,
/// whose data might be in another client encoding than pgveil knows of.
fn copy_unsettled(copy: &CopyIn) -> Refusal {
    Refusal {
        sqlstate: sqlstate::FEATURE_NOT_SUPPORTED,
        message: format!(
            "pgveil: COPY into a table with protected column {} runs after other statements \
             of its batch or pipeline, which may have changed client_encoding, so pgveil \
             cannot be sure how the server splits its data; send it after a Sync",
            copy.first_protected()
        ),
    }
}

/// Statement text pgveil cannot read cannot be checked.
fn undecodable() -> Refusal {
    Refusal {
        sqlstate: sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        message: "pgveil: the statement is not valid in the client encoding, so it cannot be \
                  checked for protected columns"
            .into(),
    }
}

/// A statement that makes the server raise `refusal`, marked with the
/// nonce so the server tap can recognize and tidy the error. It reads the
/// same whatever the session set: its strings are `E'...'` literals, which
/// `standard_conforming_strings` does not change, with no `\'` for
/// `backslash_quote` to refuse, and its dollar-quote tag is one the body
/// does not contain, whatever a message quotes.
fn raise_sql(veil: &Protection, refusal: &Refusal) -> String {
    let literal = |text: &str| format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"));
    let body = format!(
        "BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}, SCHEMA = {}; END",
        literal(refusal.sqlstate),
        literal(&refusal.message),
        literal(veil.refusal_marker())
    );
    let mut tag = String::from("$pgveil$");
    while body.contains(&tag) {
        tag.insert(tag.len() - 1, '_');
    }
    format!("DO {tag}{body}{tag}")
}

fn malformed_bind() -> Refusal {
    Refusal {
        sqlstate: sqlstate::PROTOCOL_VIOLATION,
        message: "pgveil: malformed Bind message".into(),
    }
}

/// Rebuilds a Bind with the values at `slots` encrypted, each in the
/// format the client sent it in. Public for the benchmarks: it runs on
/// every execution of a prepared statement that writes protected columns.
pub fn encrypt_bind(
    veil: &Protection,
    encoding: ClientEncoding,
    frame: &[u8],
    slots: &[ParamSlot],
) -> Result<Bytes, Refusal> {
    let bind = BindMessage::read(frame).ok_or_else(malformed_bind)?;
    let mut out = BytesMut::with_capacity(frame.len() + 64 * slots.len());
    out.put_slice(bind.head);
    out.put_u16(bind.formats_count);
    out.put_slice(bind.formats);
    out.put_u16(bind.values.len() as u16);
    for (i, &value) in bind.values.iter().enumerate() {
        let slot = slots.iter().find(|s| s.number == i + 1);
        match (value, slot) {
            (Some(value), Some(slot)) => {
                let binary = bind.binary(i);
                let encrypted = if slot.array {
                    encrypt_array_param(veil, encoding, slot, value, binary)?
                } else {
                    encrypt_param(veil, encoding, slot, value, binary)?
                };
                put_field(&mut out, Some(&encrypted));
            }
            (value, _) => put_field(&mut out, value),
        }
    }
    out.put_slice(bind.rest);
    Ok(reply::frame_of(frontend::BIND, &out))
}

/// An array parameter for a protected text column, with each element
/// encrypted, in the format it came in. (Arrays for `bytea` columns are
/// refused when the statement is analysed.)
fn encrypt_array_param(
    veil: &Protection,
    encoding: ClientEncoding,
    slot: &ParamSlot,
    value: &[u8],
    binary: bool,
) -> Result<Vec<u8>, Refusal> {
    let encrypted = if binary {
        sql::array::map_binary(value, |bytes| {
            encrypt_text_param(veil, encoding, slot, bytes).map_err(|r| r.message)
        })
    } else {
        let text = encoding
            .decode(value)
            .ok_or_else(|| undecodable_value(slot))?;
        sql::array::map_text(&text, |element| {
            encrypt_value(veil, slot, element).map_err(|r| r.message)
        })
        .map(|array| encoding.encode(&array).into_owned())
    };
    encrypted.map_err(|e| match e {
        sql::array::ArrayError::Element(message) => Refusal {
            sqlstate: sqlstate::INTERNAL_ERROR,
            message,
        },
        error => Refusal {
            sqlstate: sqlstate::INVALID_TEXT_REPRESENTATION,
            message: format!(
                "pgveil: cannot encrypt the array for column {}: {error}",
                slot.target
            ),
        },
    })
}

fn undecodable_value(slot: &ParamSlot) -> Refusal {
    Refusal {
        sqlstate: sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        message: format!(
            "pgveil: the value for column {} is not valid in the client encoding",
            slot.target
        ),
    }
}

/// The ciphertext of one parameter value, in its format: for a text
/// column the text envelope; for a `bytea` column the binary envelope of
/// the value's bytes (binary format) or of the bytes its text input
/// stands for, sent as `\x` and hex (text format).
fn encrypt_param(
    veil: &Protection,
    encoding: ClientEncoding,
    slot: &ParamSlot,
    value: &[u8],
    binary: bool,
) -> Result<Vec<u8>, Refusal> {
    match slot.target.storage {
        Storage::Text => encrypt_text_param(veil, encoding, slot, value).map(String::into_bytes),
        Storage::Bytea if binary => encrypt_bytes(veil, slot, value),
        Storage::Bytea => {
            let text = encoding
                .decode(value)
                .ok_or_else(|| undecodable_value(slot))?;
            let bytes = bytea::decode(text.as_bytes()).ok_or_else(|| Refusal {
                sqlstate: sqlstate::INVALID_TEXT_REPRESENTATION,
                message: format!(
                    "pgveil: the value for bytea column {} is not valid bytea input",
                    slot.target
                ),
            })?;
            encrypt_bytes(veil, slot, &bytes).map(|ciphertext| bytea::hex(&ciphertext))
        }
    }
}

/// The text envelope of a parameter value (text in the client encoding).
fn encrypt_text_param(
    veil: &Protection,
    encoding: ClientEncoding,
    slot: &ParamSlot,
    value: &[u8],
) -> Result<String, Refusal> {
    let text = encoding
        .decode(value)
        .ok_or_else(|| undecodable_value(slot))?;
    encrypt_value(veil, slot, &text)
}

/// The ciphertext of a parameter's value (decoded text) for its column.
fn encrypt_value(veil: &Protection, slot: &ParamSlot, text: &str) -> Result<String, Refusal> {
    let column = slot_column(veil, slot)?;
    veil.encrypt(column, text)
        .map_err(|e| cannot_encrypt(slot, e))
}

/// The binary envelope of `bytes` for a `bytea` parameter's column.
fn encrypt_bytes(veil: &Protection, slot: &ParamSlot, bytes: &[u8]) -> Result<Vec<u8>, Refusal> {
    let column = slot_column(veil, slot)?;
    veil.encrypt_bytes(column, bytes)
        .map_err(|e| cannot_encrypt(slot, e))
}

fn slot_column<'v>(veil: &'v Protection, slot: &ParamSlot) -> Result<&'v ColumnPolicy, Refusal> {
    let c = &slot.target.column;
    veil.policy
        .column(&c.schema, &c.table, &c.column)
        .ok_or_else(|| Refusal {
            sqlstate: sqlstate::INTERNAL_ERROR,
            message: format!("pgveil: no policy for column {c}"),
        })
}

fn cannot_encrypt(slot: &ParamSlot, e: EncryptError) -> Refusal {
    Refusal {
        sqlstate: sqlstate::INTERNAL_ERROR,
        message: format!(
            "pgveil: cannot encrypt a value for column {}: {}",
            slot.target, e.0
        ),
    }
}
