//! Statement texts, as a Query and a Parse both send them: read as the
//! server will read them, checked for what pgveil could misread, and
//! rewritten with the statements the session prepared.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use super::tap::ClientTap;
use crate::protect::protection::Protection;
use crate::session::catalog::Catalog;
use crate::session::ledger::ParsedStatement;
use crate::session::state::SessionState;
use crate::sql::{self, copy_out_options, merge_slots, Analysis, ParamSlot, Refusal, Statements};
use crate::text::ascii::contains_ignore_case;
use crate::text::encoding;
use crate::wire::copy::options::CopyOptions;
use crate::wire::sqlstate;

impl ClientTap<'_> {
    /// Rewrites a statement text, including `EXECUTE` of the statements
    /// the session prepared.
    pub(super) fn rewrite(&self, veil: &Protection, sql: &str) -> Analysis {
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
    pub(super) fn conform<'t>(&self, sql: &'t str) -> Cow<'t, str> {
        sql::conform_literals(sql, self.shared.standard_strings.load(Ordering::Relaxed))
    }

    /// Whether the server has answered everything sent before, so that
    /// the settings it reported (client encoding, standard strings) are
    /// those the next message is read under.
    fn settled(&self) -> bool {
        !self.ran_since_sync && self.shared.ledger().settled()
    }

    /// Why statement text (`raw`, in the client encoding) might be read
    /// by the server otherwise than by pgveil: in an encoding pgveil
    /// cannot read, any byte that is not ASCII; in any other, a backslash
    /// right after a non-ASCII byte when what was sent before it may have
    /// changed the client encoding ([`encoding::backslash_after_multibyte`]).
    pub(super) fn misreadable(&self, raw: &[u8]) -> Option<Refusal> {
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

    /// The statements the session prepared, both ways.
    pub(super) fn session_statements(&self) -> SessionStatements<'_> {
        SessionStatements {
            shared: self.shared,
            batch: self.batch,
        }
    }
}

/// The statements a session prepared: with SQL `PREPARE`, as [`Ledger`]
/// follows them, and with named Parses. PostgreSQL keeps both under one
/// namespace: SQL `EXECUTE` runs a Parse's statement, a Bind binds a
/// `PREPARE`'s. Only one of a name exists on the server at a time; where
/// pgveil has slots for it both ways (one may be stale), it encrypts at
/// all of them.
pub(super) struct SessionStatements<'t> {
    /// Whose declarations follow the prepared statements.
    shared: &'t SessionState,
    /// The client's batch.
    batch: u64,
}

impl Statements for SessionStatements<'_> {
    fn any(&self) -> bool {
        let declared = self.shared.ledger();
        declared.has_parsed_slots() || declared.has_prepared_slots()
    }

    fn slots(&self, name: &str) -> Vec<ParamSlot> {
        self.bound(name).slots
    }
}

impl SessionStatements<'_> {
    /// What a Bind of `name` must assume: its Parse's statement, with the
    /// slots of a `PREPARE` of the same name added. One lookup, since a
    /// Bind needs both the slots and the COPY.
    pub(super) fn bound(&self, name: &str) -> ParsedStatement {
        let declared = self.shared.ledger();
        let mut parsed = declared.parsed(name, self.batch);
        let prepared = declared.prepared_slots(name);
        if !prepared.is_empty() {
            let parsed_slots = std::mem::replace(&mut parsed.slots, prepared);
            merge_slots(&mut parsed.slots, &parsed_slots);
        }
        parsed
    }
}

/// The COPY TO statements of a text, if it may have any.
pub(super) fn copy_out_in(sql: &str, veil: &Protection, catalog: &Catalog) -> Vec<CopyOptions> {
    if contains_ignore_case(sql.as_bytes(), b"copy") {
        copy_out_options(sql, &veil.policy, catalog)
    } else {
        Vec::new()
    }
}
