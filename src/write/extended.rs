//! The extended query protocol: Parse texts rewritten or refused, Bind
//! parameters encrypted, what Describe, Execute and Close name followed
//! so that the rows an Execute returns have a known shape.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;

use super::bind::{encrypt_bind, malformed_bind};
use super::copy_in::CopyEncryptor;
use super::refusal::{audit_unavailable, copy_unsettled, refusal_of, undecodable};
use super::statement::copy_out_in;
use super::tap::{ClientTap, CopyState};
use crate::protect::protection::Protection;
use crate::session::ledger::{Described, Named, ParsedStatement, Rows};
use crate::sql::{declarations, Param, Refusal, Verdict};
use crate::wire::messages::bind::BindMessage;
use crate::wire::messages::close::CloseMessage;
use crate::wire::messages::describe::DescribeMessage;
use crate::wire::messages::execute;
use crate::wire::messages::parse::ParseMessage;
use crate::wire::reply;
use crate::wire::tags::{frontend, target};

impl<'a> ClientTap<'a> {
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

    /// A Parse: its text rewritten, or the statement refused; what it
    /// declares and where its parameters are protected noted by name.
    pub(super) fn parse(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
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
        let outcome = analysis.verdict;
        self.note_parse(&name, &sql, self.written(veil, &outcome));
        if self.audit_refusing(veil, &sql, &outcome) {
            return self.refuse_extended(veil, &audit_unavailable(), out, &name);
        }
        let batch = self.batch;
        let parsed = |statement| self.shared.ledger().parse(&name, batch, statement);
        match outcome {
            Verdict::Unchanged => {
                parsed(ParsedStatement::default());
                out.push(frame);
            }
            Verdict::Rewritten(rewrite) => {
                let rewritten = parse.with_query(&encoding.encode(&rewrite.sql));
                parsed(ParsedStatement {
                    slots: rewrite.params,
                    copy: None,
                });
                out.push(rewritten);
            }
            Verdict::CopyIn(copy) => {
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
            Verdict::Refused(refusal) => self.refuse_extended(veil, &refusal, out, &name),
        }
    }

    /// A Bind: its values at protected parameter positions encrypted, or
    /// the statement refused.
    pub(super) fn bind(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
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
        let bound = self.session_statements().bound(&name);
        if let Some(copy) = bound.copy {
            // The COPY's data follows its Execute.
            self.copy = Some(CopyState::Waiting(copy));
            return out.push(frame);
        }
        if bound.slots.is_empty() {
            return out.push(frame);
        }
        match encrypt_bind(veil, self.shared.encoding(), &frame, &bound.slots) {
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
    pub(super) fn execute(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
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
            self.shared.ledger().describe(target, true);
        }
        self.shared.ledger().execute(effects, rows);
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
    pub(super) fn count_names(&mut self, tag: u8, frame: &[u8]) {
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
                self.shared.ledger().describe(target, false);
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

    /// A Close: what pgveil keeps of the statement or portal it closes is
    /// forgotten.
    pub(super) fn close(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        // As PostgreSQL reads it: a kind, a name, nothing after; one it
        // refuses changes nothing.
        if let Some(close) = CloseMessage::read(&frame) {
            let name = String::from_utf8_lossy(close.name);
            if close.target == target::STATEMENT {
                // Forgotten once the server has closed it.
                self.shared.ledger().close(&name);
                self.declaring.remove(&*name);
            } else {
                self.portal_effects.remove(&*name);
            }
        }
        out.push(frame);
    }
}
