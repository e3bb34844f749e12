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
//!   ALL`) is queued in [`Ledger`], which applies it as the server
//!   answers; a change pgveil cannot follow is refused
//!   (`sql::declarations`).
//! - COPY FROM STDIN data into a protected table is encrypted
//!   (`copy_in`), read in the client encoding in force when the data
//!   starts.
//!
//! The handling is split by concern: `query` (simple Query and
//! FunctionCall), `extended` (Parse, Bind, Describe, Execute, Close),
//! `copy_data` (COPY FROM STDIN data), `statement` (what both protocols
//! do to a statement text), `refusal` (refusing through the server),
//! `audit` (the audit trail), `bind` (Bind parameter encryption).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::copy_in::CopyEncryptor;
use crate::audit::trail::{Names, Trail};
use crate::protect::protection::Protection;
use crate::session::catalog::Catalog;
use crate::session::ledger::Named;
use crate::session::protection::{Adopted, ProtectionSlot};
use crate::session::state::SessionState;
use crate::session::tap::Tap;
use crate::sql::{CopyIn, Declarations, Effect};
use crate::wire::copy::options::CopyOptions;
use crate::wire::tags::frontend;

/// The client-to-server tap. Without a policy it only notes Terminate.
pub(crate) struct ClientTap<'a> {
    /// The protection of a session with a policy: the newest it has
    /// adopted ([`ClientTap::follow_reload`]).
    pub(super) veil: Option<&'a Protection>,
    /// Where `veil` came from, and where a newer one would be adopted.
    adopted: Option<&'a Adopted>,
    /// The protection in force, which a reload replaces.
    slot: &'a ProtectionSlot,
    /// The state shared with the server tap.
    pub(super) shared: &'a SessionState,
    /// What the session knows of the database.
    pub(super) catalog: &'a Catalog,
    /// Prepared `COPY ... TO STDOUT`, by name: their data options.
    pub(super) copy_out_statements: HashMap<String, CopyOptions>,
    /// What prepared statements do to the declarations, by name, for
    /// those that do something.
    pub(super) declaring: HashMap<String, Declarations>,
    /// The same, resolved with the Bind's parameters, by portal.
    pub(super) portal_effects: HashMap<String, Vec<Effect>>,
    /// After an extended-protocol refusal: drop messages up to Sync.
    pub(super) skipping: bool,
    /// The COPY FROM STDIN into a protected table in progress, if any.
    pub(super) copy: Option<CopyState<'a>>,
    /// The session's audit trail, with audit on.
    pub(super) trail: Option<&'a Trail>,
    /// Statement texts for the trail, by statement name and by portal.
    pub(super) names: Names,
    /// An Execute or FunctionCall was sent since the last Sync: it may
    /// have changed a setting the server reports only at ReadyForQuery.
    pub(super) ran_since_sync: bool,
    /// The same, before the message being handled.
    pub(super) ran_before: bool,
    /// Parses and Binds counted, to tell names made again apart
    /// ([`Named`]).
    pub(super) generation: u64,
    /// The generation of each prepared statement and portal name.
    pub(super) statement_generations: HashMap<String, u64>,
    pub(super) portal_generations: HashMap<String, u64>,
    /// The statement each portal was bound from.
    pub(super) bound: HashMap<String, Named>,
    /// Syncs sent: the client's batches, for what a Bind of a statement
    /// parsed again may assume (`crate::session::ledger::parsed`).
    pub(super) batch: u64,
    /// The generation of each statement and portal name last described,
    /// so that the shape of an Execute's rows is known (`crate::read::shape`).
    pub(super) described_statements: HashMap<String, u64>,
    pub(super) described_portals: HashMap<String, u64>,
}

/// A COPY FROM STDIN whose data is being encrypted.
pub(super) enum CopyState<'a> {
    /// Its data has not started: the client encoding it comes in is the
    /// one in force when it does.
    Waiting(CopyIn),
    Encrypting(CopyEncryptor<'a>),
    /// The data could not be encrypted and the COPY was failed: the rest of
    /// the client's data is dropped, never sent.
    Failed,
}

impl<'a> ClientTap<'a> {
    /// The tap of one session: `adopted` the protection it started with
    /// (`None` without a policy), `slot` where reloads put newer ones,
    /// `shared` the state it shares with the server tap,
    /// `catalog` what the session knows of the database, `trail` its
    /// audit trail (with audit on).
    pub(crate) fn new(
        adopted: Option<&'a Adopted>,
        slot: &'a ProtectionSlot,
        shared: &'a SessionState,
        catalog: &'a Catalog,
        trail: Option<&'a Trail>,
    ) -> Self {
        Self {
            veil: adopted.map(Adopted::protection),
            adopted,
            slot,
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
}

impl ClientTap<'_> {
    /// Adopts the protection a reload put in force since the last
    /// statement, if any: statements from now on are analysed, encrypted
    /// and refused by its policy and keys. Never while a COPY's data is
    /// being encrypted, which the protection it started with finishes.
    fn follow_reload(&mut self) {
        if self.copy.is_some() {
            return;
        }
        if let Some(newest) = Adopted::follow(&mut self.adopted, self.slot) {
            self.veil = Some(newest);
        }
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
                self.shared.ledger().sync(ran);
            }
            if matches!(tag, frontend::SYNC | frontend::FLUSH | frontend::TERMINATE) {
                out.push(frame);
            }
            return;
        }
        if matches!(
            tag,
            frontend::QUERY | frontend::PARSE | frontend::BIND | frontend::FUNCTION_CALL
        ) {
            self.follow_reload();
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
                self.shared.ledger().sync(ran);
                out.push(frame)
            }
            (frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL, Some(veil)) => {
                self.copy_message(veil, tag, frame, out)
            }
            _ => out.push(frame),
        }
    }
}
