//! Refusing a statement through the server, and the refusals the client
//! tap raises itself.
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

use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::info;

use super::copy_in::CopyError;
use super::tap::ClientTap;
use crate::audit::trail::text as trail_text;
use crate::protect::protection::Protection;
use crate::sql::{CopyIn, Refusal};
use crate::wire::messages::body::cstring;
use crate::wire::tags::frontend;
use crate::wire::{reply, sqlstate};

impl ClientTap<'_> {
    /// Refuses a simple Query or FunctionCall (see the module doc).
    pub(super) fn refuse_query(&self, veil: &Protection, refusal: &Refusal, out: &mut Vec<Bytes>) {
        info!(
            sqlstate = refusal.sqlstate,
            "statement refused: {}", refusal.message
        );
        self.shared.metrics.refused(refusal.sqlstate);
        let sql = raise_sql(veil, refusal);
        let sql = self.shared.encoding().encode(&sql);
        out.push(reply::frame_of(frontend::QUERY, &cstring(sql)));
    }

    /// Refuses the statement named `statement` (see the module doc). Its
    /// refusal stands for the client's next Execute in the trail.
    pub(super) fn refuse_extended(
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
        self.shared.metrics.refused(refusal.sqlstate);
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
        self.shared.ledger().execute(Vec::new(), None);
        self.shared.pending_refusals.fetch_add(1, Ordering::Relaxed);
        self.skipping = true;
    }
}

/// The audit log is down and refuses what touches protected columns.
pub(super) fn audit_unavailable() -> Refusal {
    Refusal {
        sqlstate: sqlstate::IO_ERROR,
        message: "pgveil: the audit log cannot record this access now; statements touching \
                  protected columns are refused until it recovers"
            .into(),
    }
}

/// A COPY's data that cannot be encrypted, refused as a statement.
pub(super) fn refusal_of(e: CopyError) -> Refusal {
    Refusal {
        sqlstate: e.sqlstate,
        message: e.message,
    }
}

/// A COPY into a protected table run after something else in its batch,
/// whose data might be in another client encoding than pgveil knows of.
pub(super) fn copy_unsettled(copy: &CopyIn) -> Refusal {
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
pub(super) fn undecodable() -> Refusal {
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
