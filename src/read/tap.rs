//! The server-to-client tap: every message the server sends passes
//! [`ServerTap`], which reveals the protected values of rows
//! (`crate::read::reveal`) and of COPY TO data (`crate::read::copy_out`)
//! by the shapes of results (`crate::read::shape`), follows how the
//! server ends each statement for the session's declarations and the
//! audit trail, follows the settings the server reports, and relays
//! errors as the client should see them (`crate::read::server_errors`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::audit::trail::Trail;
use crate::protect::protection::Protection;
use crate::read::copy_out::CopyOut;
use crate::read::meter::{Ended, Used};
use crate::read::reveal::{has_ciphertext, Recipient, Revealer};
use crate::read::server_errors::{refusal_error, without_guard_values, REFUSAL_MARKER_FIELD};
use crate::read::shape::{Field, Shape, Shapes};
use crate::session::metrics::StatementKind;
use crate::session::protection::{Adopted, ProtectionSlot};
use crate::session::state::SessionState;
use crate::session::tap::Tap;
use crate::text::encoding::ClientEncoding;
use crate::wire::messages::command_complete::{command_tag, tag_rows};
use crate::wire::messages::data_row::Fields;
use crate::wire::messages::parameter_status::{client_encoding, standard_strings};
use crate::wire::reply;
use crate::wire::sqlstate::INSUFFICIENT_PRIVILEGE;
use crate::wire::tags::{backend, error_field, transaction};

/// The server-to-client tap. Without a policy it only notes FATAL errors.
/// With one it reveals rows, follows transaction ends for the session's
/// declarations, and tidies the errors of pgveil's refusals.
pub(crate) struct ServerTap<'a> {
    /// The newest protection the session has adopted.
    veil: Option<&'a Protection>,
    /// Where `veil` came from, and where a newer one would be adopted.
    adopted: Option<&'a Adopted>,
    /// The protection in force, which a reload replaces.
    slot: &'a ProtectionSlot,
    shared: &'a SessionState,
    roles: &'a [String],
    /// After a denied value: drop the rest of the result up to ReadyForQuery.
    skipping: bool,
    /// ParseComplete/BindComplete held while a refusal is pending: the
    /// last two are the refusal statement's own, not the client's.
    held: Vec<Bytes>,
    /// The COPY TO whose data is flowing, if pgveil can read it.
    copy_out: Option<CopyOut>,
    /// The session's audit trail, with audit on.
    trail: Option<&'a Trail>,
    /// Reveals values, keeping the session's decisions.
    revealer: Revealer<'a>,
    /// Which fields of results come from protected columns.
    shapes: Shapes<'a>,
    /// The shape of the rows of the statement answering now, once looked
    /// up (once per statement, not per row).
    rows_shape: Option<Option<Shape<'a>>>,
    /// CopyInResponses the server sent: the Syncs the client sent during
    /// their data answer nothing (`Cycles::answered`).
    copies_in: u64,
}

impl<'a> ServerTap<'a> {
    /// `attributes`: the session's protected columns by table OID and
    /// column number (`Catalog::attributes`).
    pub(crate) fn new(
        adopted: Option<&'a Adopted>,
        slot: &'a ProtectionSlot,
        shared: &'a SessionState,
        roles: &'a [String],
        attributes: &HashMap<(u32, i16), (String, String, String)>,
        trail: Option<&'a Trail>,
    ) -> Self {
        let veil = adopted.map(Adopted::protection);
        Self {
            veil,
            adopted,
            slot,
            shared,
            roles,
            trail,
            skipping: false,
            held: Vec::new(),
            copy_out: None,
            revealer: Revealer::default(),
            shapes: veil.map_or_else(Shapes::default, |veil| {
                Shapes::new(&veil.policy, attributes)
            }),
            rows_shape: None,
            copies_in: 0,
        }
    }

    /// Adds the values revealed since the last time to the metrics.
    fn count_reveals(&mut self) {
        if let Some(reveals) = self.revealer.take_reveals() {
            self.shared.metrics.revealed(&reveals);
        }
    }

    /// The shape of the rows arriving now, looked up once per statement.
    fn rows_shape(&mut self) -> Option<Shape<'a>> {
        if self.shapes.is_empty() {
            return None;
        }
        if self.rows_shape.is_none() {
            let shape = self.shapes.of_rows(self.shared.ledger().executing());
            self.rows_shape = Some(shape);
        }
        self.rows_shape.clone().flatten()
    }

    /// A RowDescription (`frame`) or NoData (`None`); `true` when it
    /// answers pgveil's own Describe, and is not the client's.
    fn describe(&mut self, frame: Option<&[u8]>) -> bool {
        let answered = self.shared.ledger().described();
        let ours = answered.as_ref().is_some_and(|(_, ours)| *ours);
        self.shapes
            .described(frame, answered.map(|(target, _)| target));
        self.rows_shape = None;
        ours
    }

    /// Runs `f` with the session's recipient and revealer. The
    /// declarations' lock is held only inside `f`.
    fn with_recipient<R>(&mut self, f: impl FnOnce(&Recipient<'_>, &mut Revealer<'a>) -> R) -> R {
        let declared = self.shared.ledger();
        let reader = Recipient {
            roles: self.roles,
            purpose: declared.current().purpose.as_deref(),
            ticket: declared.current().ticket.as_deref(),
            encoding: self.shared.encoding(),
            trail: self.trail,
            result: declared.result(),
        };
        f(&reader, &mut self.revealer)
    }

    fn copy_data(
        &mut self,
        veil: &'a Protection,
        copy: &mut CopyOut,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) {
        let revealed = self
            .with_recipient(|reader, revealer| copy.reveal(veil, reader, revealer, &frame[5..]));
        match revealed {
            Ok(None) => out.push(frame),
            Ok(Some(data)) if data.is_empty() => {}
            Ok(Some(data)) => out.push(reply::frame_of(backend::COPY_DATA, &data)),
            Err(error) => {
                self.deny(&error);
                out.push(error);
            }
        }
    }

    fn row(&mut self, veil: &'a Protection, frame: Bytes, out: &mut Vec<Bytes>) {
        let shape = self.rows_shape();
        if !has_ciphertext(&frame) && !shape.as_ref().is_some_and(|s| has_protected(s, &frame)) {
            // Most rows: no lock, no copy.
            return out.push(frame);
        }
        let shape = shape.as_deref();
        match self
            .with_recipient(|reader, revealer| revealer.rewrite_row(veil, reader, &frame, shape))
        {
            Ok(None) => out.push(frame),
            Ok(Some(row)) => out.push(row),
            Err(denied) => {
                self.deny(&denied);
                out.push(denied);
            }
        }
    }

    /// A value was withheld, or COPY data could not be read: the statement
    /// fails with `error`, and the rest of the server's answer up to
    /// ReadyForQuery is dropped (the trail still follows how the server
    /// ends each statement).
    fn deny(&mut self, error: &[u8]) {
        self.skipping = true;
        let code = reply::error_field(error, error_field::CODE).unwrap_or_default();
        self.shared
            .metrics
            .refused(std::str::from_utf8(code).unwrap_or_default());
        if let Some(trail) = self.trail {
            self.revealer.tell(trail);
            trail.denied(
                reply::error_field(error, error_field::CODE)
                    .unwrap_or(INSUFFICIENT_PRIVILEGE.as_bytes()),
            );
        }
    }

    /// Tells the audit trail how the server answers, after the reads of
    /// the statement it ends.
    fn audit(&mut self, trail: &Trail, tag: u8, frame: &[u8]) {
        if ends_statement(tag) {
            self.revealer.tell(trail);
        }
        if tag == backend::COPY_IN_RESPONSE {
            return trail.copy_started();
        }
        // The declarations stay locked while the trail records, which
        // takes no other lock of the session's.
        let declared = self.shared.ledger();
        let declared = declared.current();
        match tag {
            backend::COMMAND_COMPLETE => trail.completed(tag_rows(frame), declared),
            backend::EMPTY_QUERY => trail.completed(0, declared),
            backend::PORTAL_SUSPENDED => trail.suspended(declared),
            backend::ERROR => {
                let marker = self.veil.map(|v| v.refusal_marker().as_bytes());
                let refusal =
                    marker.is_some() && reply::error_field(frame, REFUSAL_MARKER_FIELD) == marker;
                trail.failed(
                    reply::error_field(frame, error_field::CODE).unwrap_or_default(),
                    refusal,
                    declared,
                )
            }
            backend::READY_FOR_QUERY => {
                trail.ready(frame.get(5).copied().unwrap_or(transaction::IDLE), declared)
            }
            _ => {}
        }
    }

    fn error(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        let marker = self.veil.map(Protection::refusal_marker);
        let ours = marker.is_some_and(|m| {
            reply::error_field(&frame, REFUSAL_MARKER_FIELD) == Some(m.as_bytes())
        });
        if !ours {
            let severity = reply::error_field(&frame, error_field::SEVERITY_NONLOCALIZED);
            if matches!(severity, Some(b"FATAL" | b"PANIC")) {
                self.shared.server_fatal.store(true, Ordering::Relaxed);
            }
            out.append(&mut self.held);
            return out.push(without_guard_values(frame));
        }
        if self.held.len() >= 2 && self.shared.pending_refusals.load(Ordering::Relaxed) > 0 {
            self.held.truncate(self.held.len() - 2);
            self.shared.pending_refusals.fetch_sub(1, Ordering::Relaxed);
        }
        out.append(&mut self.held);
        out.push(refusal_error(&frame));
    }

    /// Tells the meter where results end (before the declarations move
    /// on to the next statement), and records the approvals they used.
    fn follow_meter(&mut self, tag: u8, frame: &[u8]) {
        if self.revealer.meter().is_empty() {
            return;
        }
        let book = self.trail.and_then(Trail::approvals);
        let ended = match tag {
            backend::COMMAND_COMPLETE | backend::EMPTY_QUERY => Ended::Completed,
            backend::PORTAL_SUSPENDED => Ended::Suspended,
            backend::ERROR => Ended::Failed,
            backend::READY_FOR_QUERY if frame.get(5) == Some(&transaction::IDLE) => {
                return self.revealer.meter().idle(book);
            }
            _ => return,
        };
        let shared: &SessionState = self.shared;
        let ledger = shared.ledger();
        let cursors = match ended {
            Ended::Completed => ledger.cursor_effects(),
            _ => Vec::new(),
        };
        let used = self
            .revealer
            .meter()
            .statement_ended(ledger.result(), ended, &cursors, book);
        drop(ledger);
        self.record_uses(used);
    }

    fn record_uses(&self, used: Vec<Used>) {
        if let Some(trail) = self.trail {
            for used in used {
                trail.approval_used(&used.approval, &used.column, &used.ticket, used.rows);
            }
        }
    }

    /// Tells the declarations how the server answers: they follow the
    /// server, whatever the client is shown.
    fn track(&self, tag: u8, frame: &[u8]) {
        if self.veil.is_none() {
            return;
        }
        let mut declared = self.shared.ledger();
        match tag {
            backend::COMMAND_COMPLETE => declared.completed(command_tag(frame)),
            backend::EMPTY_QUERY | backend::PORTAL_SUSPENDED => declared.completed(b""),
            backend::ERROR => declared.failed(),
            backend::PARSE_COMPLETE => declared.parse_complete(),
            backend::CLOSE_COMPLETE => declared.close_complete(),
            backend::COPY_IN_RESPONSE => declared.copy_started(),
            backend::READY_FOR_QUERY => {
                declared.ready(frame.get(5).copied().unwrap_or(transaction::IDLE))
            }
            _ => {}
        }
    }

    /// ReadyForQuery: the Query or batch is answered.
    fn ready(&mut self, frame: &[u8]) {
        self.track(backend::READY_FOR_QUERY, frame);
        // A COPY TO that failed before its data never started.
        self.copy_out = None;
        self.shared
            .copy_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for ServerTap<'_> {
    fn drop(&mut self) {
        self.count_reveals();
        // A session that ends in the middle of a result: what it was
        // shown is recorded, what it reserved is given back.
        let book = self.trail.and_then(Trail::approvals);
        let used = self.revealer.meter().release(book);
        self.record_uses(used);
    }
}

impl Tap for ServerTap<'_> {
    fn passes(&mut self, tag: u8) {
        let metrics = &self.shared.metrics;
        match tag {
            backend::READY_FOR_QUERY => {
                if let Some((kind, took)) = self.shared.cycles.answered(self.copies_in) {
                    metrics.cycle(kind, took);
                }
                self.count_reveals();
            }
            backend::COPY_IN_RESPONSE => {
                self.copies_in += 1;
                metrics.statement(StatementKind::CopyIn);
            }
            backend::COPY_OUT_RESPONSE => metrics.statement(StatementKind::CopyOut),
            _ => {}
        }
    }

    fn received(&mut self, bytes: usize) {
        self.shared.metrics.bytes_from_server.inc_by(bytes as u64);
    }

    fn wants(&self, tag: u8) -> bool {
        if tag == backend::ERROR || self.skipping || !self.held.is_empty() {
            return true;
        }
        if self.trail.is_some() && noted_by_trail(tag) {
            return true;
        }
        self.veil.is_some()
            && match tag {
                backend::DATA_ROW
                | backend::READY_FOR_QUERY
                | backend::PARAMETER_STATUS
                | backend::COPY_OUT_RESPONSE
                | backend::COMMAND_COMPLETE
                | backend::EMPTY_QUERY
                | backend::PORTAL_SUSPENDED
                | backend::COPY_IN_RESPONSE => true,
                // Describes are answered in the session's queue.
                backend::ROW_DESCRIPTION | backend::NO_DATA => true,
                backend::COPY_DATA | backend::COPY_DONE => self.copy_out.is_some(),
                // Prepared statements follow the server's answers.
                backend::PARSE_COMPLETE | backend::CLOSE_COMPLETE => true,
                backend::BIND_COMPLETE => self.shared.pending_refusals.load(Ordering::Relaxed) > 0,
                _ => false,
            }
    }

    fn look(&mut self, tag: u8, frame: &[u8]) -> bool {
        // With the audit log and no policy, the ends of statements are only
        // noted; errors may need rewriting.
        match self.trail {
            Some(trail)
                if self.veil.is_none()
                    && !self.skipping
                    && self.held.is_empty()
                    && noted_by_trail(tag) =>
            {
                self.audit(trail, tag, frame);
                true
            }
            _ => false,
        }
    }

    fn see(&mut self, tag: u8, frame: Bytes, out: &mut Vec<Bytes>) {
        if self.veil.is_some() {
            self.follow_meter(tag, &frame);
        }
        if tag != backend::READY_FOR_QUERY {
            self.track(tag, &frame);
        }
        if self.skipping {
            self.skipping = tag != backend::READY_FOR_QUERY;
            if let Some(trail) = self.trail {
                self.audit(trail, tag, &frame);
            }
            if tag == backend::READY_FOR_QUERY {
                self.ready(&frame);
                out.push(frame);
            }
            return;
        }
        if let Some(trail) = self.trail {
            self.audit(trail, tag, &frame);
        }
        if ends_statement(tag) {
            self.shapes.ended();
            self.rows_shape = None;
        }
        if ends_statement(tag) || tag == backend::ROW_DESCRIPTION {
            self.follow_reload();
        }
        match (tag, self.veil) {
            (backend::ROW_DESCRIPTION, Some(_)) => {
                let ours = self.describe(Some(&frame));
                out.append(&mut self.held);
                if !ours {
                    out.push(frame)
                }
            }
            (backend::NO_DATA, Some(_)) => {
                let ours = self.describe(None);
                out.append(&mut self.held);
                if !ours {
                    out.push(frame)
                }
            }
            (backend::ERROR, _) => self.error(frame, out),
            (backend::PARSE_COMPLETE | backend::BIND_COMPLETE, _)
                if self.shared.pending_refusals.load(Ordering::Relaxed) > 0 =>
            {
                self.held.push(frame)
            }
            (backend::DATA_ROW, Some(veil)) => {
                out.append(&mut self.held);
                self.row(veil, frame, out)
            }
            (backend::COPY_OUT_RESPONSE, Some(_)) => {
                // CopyOutResponse: its first byte is 1 for binary format.
                let binary = frame.get(5) == Some(&1);
                self.copy_out =
                    CopyOut::new(self.shared.next_copy_out(), binary, self.shared.encoding());
                out.push(frame)
            }
            (backend::COPY_DATA, Some(veil)) => match self.copy_out.take() {
                Some(mut copy) => {
                    self.copy_data(veil, &mut copy, frame, out);
                    self.copy_out = Some(copy);
                }
                None => out.push(frame),
            },
            (backend::COPY_DONE, _) => {
                self.copy_out = None;
                out.push(frame)
            }
            (backend::PARAMETER_STATUS, Some(_)) => {
                out.append(&mut self.held);
                self.parameter_status(&frame);
                out.push(frame)
            }
            (backend::READY_FOR_QUERY, Some(_)) => {
                out.append(&mut self.held);
                self.ready(&frame);
                out.push(frame)
            }
            _ => {
                out.append(&mut self.held);
                out.push(frame)
            }
        }
    }
}

impl<'a> ServerTap<'a> {
    /// Adopts the protection a reload put in force, between statements
    /// and never during a COPY's data: values are revealed by its rules
    /// from then on, and the decisions kept for the old ones are dropped.
    fn follow_reload(&mut self) {
        if self.copy_out.is_some() {
            return;
        }
        if let Some(newest) = Adopted::follow(&mut self.adopted, self.slot) {
            self.veil = Some(newest);
            self.revealer.forget_decisions();
            self.shapes.rebind(&newest.policy);
            self.rows_shape = None;
        }
    }
}

impl ServerTap<'_> {
    /// Follows `client_encoding` and `standard_conforming_strings` as the
    /// server reports them.
    fn parameter_status(&self, frame: &[u8]) {
        if let Some(name) = client_encoding(frame) {
            *self
                .shared
                .encoding
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = ClientEncoding::from_pg_name(name);
        }
        if let Some(on) = standard_strings(frame) {
            self.shared.standard_strings.store(on, Ordering::Relaxed);
        }
    }
}

/// Whether a DataRow frame has a value in a field that `shape` says comes
/// from a protected column.
fn has_protected(shape: &[Option<Field<'_>>], frame: &[u8]) -> bool {
    Fields::of(frame)
        .zip(shape)
        .any(|(value, field)| value.is_some() && field.is_some())
}

/// Whether a server message ends a statement (CommandComplete,
/// EmptyQueryResponse, PortalSuspended, ErrorResponse) or a Query or
/// batch (ReadyForQuery).
fn ends_statement(tag: u8) -> bool {
    matches!(
        tag,
        backend::COMMAND_COMPLETE
            | backend::EMPTY_QUERY
            | backend::PORTAL_SUSPENDED
            | backend::ERROR
            | backend::READY_FOR_QUERY
    )
}

/// Whether a server message is one the audit trail notes as it passes:
/// the ends of statements and batches but errors (which may need
/// rewriting), and CopyInResponse.
fn noted_by_trail(tag: u8) -> bool {
    matches!(
        tag,
        backend::COMMAND_COMPLETE
            | backend::EMPTY_QUERY
            | backend::PORTAL_SUSPENDED
            | backend::READY_FOR_QUERY
            | backend::COPY_IN_RESPONSE
    )
}
