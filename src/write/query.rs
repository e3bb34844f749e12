//! The messages answered up to their own ReadyForQuery: a simple Query,
//! whose text is rewritten or refused, and a FunctionCall.

use std::borrow::Cow;

use bytes::Bytes;

use super::copy_in::CopyEncryptor;
use super::refusal::{audit_unavailable, copy_unsettled, refusal_of, undecodable};
use super::statement::copy_out_in;
use super::tap::{ClientTap, CopyState};
use crate::protect::protection::Protection;
use crate::sql::{self, declarations, Verdict};
use crate::wire::messages::body::{body_of, cstring};
use crate::wire::messages::{function_call, query};
use crate::wire::reply;
use crate::wire::tags::frontend;

impl<'a> ClientTap<'a> {
    /// A simple Query: its text rewritten, or the statement refused.
    pub(super) fn query(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        self.copy = None;
        let frame = self.conform_query(frame);
        let encoding = self.shared.encoding();
        let Some(sql) = query::sql(&frame).and_then(|s| encoding.decode(s)) else {
            self.shared.ledger().query(Vec::new());
            self.note_query("", Vec::new());
            return self.refuse_query(veil, &undecodable(), out);
        };
        if let Some(refusal) = self.misreadable(body_of(&frame)) {
            self.shared.ledger().query(Vec::new());
            self.note_query("", Vec::new());
            return self.refuse_query(veil, &refusal, out);
        }
        let analysis = self.rewrite(veil, &sql);
        let declared =
            declarations(&sql).and_then(|d| d.and(analysis.effects).resolve(&[], encoding));
        self.shared
            .ledger()
            .query(declared.as_ref().cloned().unwrap_or_default());
        if let Err(refusal) = declared {
            self.note_query(&sql, Vec::new());
            return self.refuse_query(veil, &refusal, out);
        }
        self.shared
            .expect_copy_out(copy_out_in(&sql, veil, self.catalog));
        let outcome = analysis.verdict;
        self.note_query(&sql, self.written(veil, &outcome));
        if self.audit_refusing(veil, &sql, &outcome) {
            return self.refuse_query(veil, &audit_unavailable(), out);
        }
        match outcome {
            Verdict::Unchanged => out.push(frame),
            Verdict::Rewritten(rewrite) => {
                out.push(reply::frame_of(
                    frontend::QUERY,
                    &cstring(encoding.encode(&rewrite.sql)),
                ));
            }
            Verdict::CopyIn(copy) if self.ran_before => {
                self.refuse_query(veil, &copy_unsettled(&copy), out)
            }
            Verdict::CopyIn(copy) => {
                match CopyEncryptor::new(&copy, &veil.policy, veil, encoding) {
                    Ok(_) => {
                        self.copy = Some(CopyState::Waiting(copy));
                        out.push(frame);
                    }
                    Err(e) => self.refuse_query(veil, &refusal_of(e), out),
                }
            }
            Verdict::Refused(refusal) => self.refuse_query(veil, &refusal, out),
        }
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

    /// A FunctionCall (the fast-path protocol) is answered up to its
    /// ReadyForQuery; one that calls `set_config`, which pgveil cannot
    /// follow, is refused.
    pub(super) fn function_call(&mut self, veil: &Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        self.shared.ledger().query(Vec::new());
        if function_call::function_oid(&frame) == Some(SET_CONFIG_OID) {
            return self.refuse_query(veil, &sql::undeclarable_call(), out);
        }
        out.push(frame);
    }
}

/// The OID of `pg_catalog.set_config`, fixed in PostgreSQL's catalog.
const SET_CONFIG_OID: u32 = 2078;
