//! Reveals protected values in results, as the policy allows the reader.
//!
//! Every field of every `DataRow` is checked for pgveil's ciphertext (a
//! prefix comparison; see `crypto::Form::of`). This finds
//! protected values wherever they appear: plain column references, aliases,
//! views, `COALESCE`, `UNION`, CTEs, cursors, `RETURNING`, and prepared
//! statements whose rows arrive without a new RowDescription. The
//! ciphertext names its key, the key its domain, the domain its columns,
//! and the columns' rules decide: plaintext, a mask, a pseudonym, NULL, or
//! an error. A row with no ciphertext is forwarded untouched and uncopied.
//! A value that looks like ciphertext of a key pgveil uses but does not
//! decrypt, and a value of a field that the result's description says
//! comes from a protected column but is no ciphertext pgveil can open
//! (rows written before pgveil, forged values), is taken for the
//! plaintext it may be and revealed by its column's rule
//! (`unencrypted`, `crate::read::shape`).
//!
//! A revealed value is written in the form its ciphertext had
//! ([`Form`]): text in the reader's encoding for a text column; for a
//! `bytea` column its bytes in binary format, or `\x` and their hex (the
//! escape form with `bytea_output = 'escape'`) in text format. Masks work
//! on characters, which bytes do not have: a masked `bytea` value is the
//! four bytes `****`, as the `redact` mask writes, whatever the column's
//! mask. A pseudonym of a `bytea` value is the bytes of its `pgvp_...`
//! text.

use std::sync::atomic::Ordering;

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;
use zeroize::Zeroizing;

use crate::audit::trail::Trail;
use crate::protect::crypto::{self, CryptoError, Form, KeyCiphers};
use crate::protect::policy::{Action, ColumnPolicy, Mask};
use crate::protect::protection::Protection;
use crate::read::copy_out::CopyOut;
use crate::read::shape::{Field, Shape, Shapes};
use crate::session::state::SessionState;
use crate::session::tap::Tap;
use crate::text::bytea;
use crate::text::encoding::ClientEncoding;
use crate::wire::messages::command_complete::{command_tag, tag_rows};
use crate::wire::messages::data_row::{put_field, Fields};
use crate::wire::messages::parameter_status::{client_encoding, standard_strings};
use crate::wire::reply::{self, Severity};

mod unencrypted;

/// SQLSTATE for a value the reader may not see: `insufficient_privilege`.
const DENIED: &str = "42501";
/// SQLSTATE for a value withheld while the audit log cannot record its
/// reading: `io_error`, as pgveil's refusals of statements then.
const UNRECORDED: &str = "58030";

/// What a reader gets in place of one value.
pub enum Revealed<'m> {
    /// The value as it is (not pgveil's ciphertext, or not decryptable).
    Keep,
    /// This, in the reader's encoding (text) or the form of its ciphertext
    /// (`bytea`).
    Value(&'m [u8]),
    Null,
    /// Withheld: denied by the policy of this column, or not recordable.
    Denied(Denial),
}

/// A value withheld from a reader.
#[derive(Debug)]
pub struct Denial {
    /// `schema.table.column`.
    pub column: String,
    /// Withheld because the audit log cannot record the access now (with
    /// `on_failure = "refuse"`), not by the policy.
    pub unrecorded: bool,
}

impl Denial {
    /// The ErrorResponse the reader gets instead of the row.
    pub fn error(&self) -> Bytes {
        if self.unrecorded {
            let message = format!(
                "pgveil: column {} cannot be revealed now: the audit log cannot record the access",
                self.column
            );
            reply::error(Severity::Error, UNRECORDED, &message)
        } else {
            denied(&self.column)
        }
    }
}

/// The reader's identity, as the policy sees it, and its encoding.
pub struct Reader<'a> {
    pub roles: &'a [String],
    pub purpose: Option<&'a str>,
    pub encoding: ClientEncoding,
    /// Where reads of protected columns are noted, with audit on.
    pub trail: Option<&'a Trail>,
}

/// The server-to-client tap. Without a policy it only notes FATAL errors.
/// With one it reveals rows, follows transaction ends for the session's
/// declarations, and tidies the errors of pgveil's refusals.
pub struct ServerTap<'a> {
    veil: Option<&'a Protection>,
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
    memo: Memo<'a>,
    /// Which fields of results come from protected columns.
    shapes: Shapes<'a>,
    /// The shape of the rows of the statement answering now, once looked
    /// up (once per statement, not per row).
    rows_shape: Option<Option<Shape<'a>>>,
}

impl<'a> ServerTap<'a> {
    /// `attributes`: the session's protected columns by table OID and
    /// column number (`Catalog::attributes`).
    pub fn new(
        veil: Option<&'a Protection>,
        shared: &'a SessionState,
        roles: &'a [String],
        attributes: &HashMap<(u32, i16), (String, String, String)>,
        trail: Option<&'a Trail>,
    ) -> Self {
        Self {
            veil,
            shared,
            roles,
            trail,
            skipping: false,
            held: Vec::new(),
            copy_out: None,
            memo: Memo::default(),
            shapes: veil.map_or_else(Shapes::default, |veil| {
                Shapes::new(&veil.policy, attributes)
            }),
            rows_shape: None,
        }
    }

    /// The shape of the rows arriving now, looked up once per statement.
    fn rows_shape(&mut self) -> Option<Shape<'a>> {
        if self.shapes.is_empty() {
            return None;
        }
        if self.rows_shape.is_none() {
            let shape = self.shapes.of_rows(self.shared.declared().executing());
            self.rows_shape = Some(shape);
        }
        self.rows_shape.clone().flatten()
    }

    /// A RowDescription (`frame`) or NoData (`None`); `true` when it
    /// answers pgveil's own Describe, and is not the client's.
    fn describe(&mut self, frame: Option<&[u8]>) -> bool {
        let answered = self.shared.declared().described();
        let ours = answered.as_ref().is_some_and(|(_, ours)| *ours);
        self.shapes
            .described(frame, answered.map(|(target, _)| target));
        self.rows_shape = None;
        ours
    }

    /// Runs `f` with the session's reader and memo. The declarations' lock
    /// is held only inside `f`.
    fn with_reader<R>(&mut self, f: impl FnOnce(&Reader<'_>, &mut Memo<'a>) -> R) -> R {
        let declared = self.shared.declared();
        let reader = Reader {
            roles: self.roles,
            purpose: declared.current().purpose.as_deref(),
            encoding: self.shared.encoding(),
            trail: self.trail,
        };
        f(&reader, &mut self.memo)
    }

    fn copy_data(
        &mut self,
        veil: &'a Protection,
        copy: &mut CopyOut,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) {
        let revealed =
            self.with_reader(|reader, memo| copy.reveal(veil, reader, memo, &frame[5..]));
        match revealed {
            Ok(None) => out.push(frame),
            Ok(Some(data)) if data.is_empty() => {}
            Ok(Some(data)) => out.push(reply::frame_of(b'd', &data)),
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
        match self.with_reader(|reader, memo| memo.rewrite_row(veil, reader, &frame, shape)) {
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
        if let Some(trail) = self.trail {
            self.memo.tell(trail);
            trail.denied(reply::error_field(error, b'C').unwrap_or(DENIED.as_bytes()));
        }
    }

    /// Tells the audit trail how the server answers, after the reads of
    /// the statement it ends.
    fn audit(&mut self, trail: &Trail, tag: u8, frame: &[u8]) {
        if matches!(tag, b'C' | b'I' | b's' | b'E' | b'Z') {
            self.memo.tell(trail);
        }
        if tag == b'G' {
            return trail.copy_started();
        }
        // The declarations stay locked while the trail records, which
        // takes no other lock of the session's.
        let declared = self.shared.declared();
        let declared = declared.current();
        match tag {
            b'C' => trail.completed(tag_rows(frame), declared),
            b'I' => trail.completed(0, declared),
            b's' => trail.suspended(declared),
            b'E' => {
                let marker = self.veil.map(|v| v.refusal_marker().as_bytes());
                let refusal = marker.is_some() && reply::error_field(frame, b's') == marker;
                trail.failed(
                    reply::error_field(frame, b'C').unwrap_or_default(),
                    refusal,
                    declared,
                )
            }
            b'Z' => trail.ready(frame.get(5).copied().unwrap_or(b'I'), declared),
            _ => {}
        }
    }

    fn error(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        let marker = self.veil.map(Protection::refusal_marker);
        let ours = marker.is_some_and(|m| reply::error_field(&frame, b's') == Some(m.as_bytes()));
        if !ours {
            if matches!(reply::error_field(&frame, b'V'), Some(b"FATAL" | b"PANIC")) {
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

    /// Tells the declarations how the server answers: they follow the
    /// server, whatever the client is shown.
    fn track(&self, tag: u8, frame: &[u8]) {
        if self.veil.is_none() {
            return;
        }
        let mut declared = self.shared.declared();
        match tag {
            b'C' => declared.completed(command_tag(frame)),
            b'I' | b's' => declared.completed(b""),
            b'E' => declared.failed(),
            b'1' => declared.parse_complete(),
            b'3' => declared.close_complete(),
            b'G' => declared.copy_started(),
            b'Z' => declared.ready(frame.get(5).copied().unwrap_or(b'I')),
            _ => {}
        }
    }

    /// ReadyForQuery: the Query or batch is answered.
    fn ready(&mut self, frame: &[u8]) {
        self.track(b'Z', frame);
        // A COPY TO that failed before its data never started.
        self.copy_out = None;
        self.shared
            .copy_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Tap for ServerTap<'_> {
    fn wants(&self, tag: u8) -> bool {
        if tag == b'E' || self.skipping || !self.held.is_empty() {
            return true;
        }
        if self.trail.is_some() && matches!(tag, b'C' | b'I' | b's' | b'Z' | b'G') {
            return true;
        }
        self.veil.is_some()
            && match tag {
                b'D' | b'Z' | b'S' | b'H' | b'C' | b'I' | b's' | b'G' => true,
                // Describes are answered in the session's queue.
                b'T' | b'n' => true,
                b'd' | b'c' => self.copy_out.is_some(),
                // Prepared statements follow the server's answers.
                b'1' | b'3' => true,
                b'2' => self.shared.pending_refusals.load(Ordering::Relaxed) > 0,
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
                    && matches!(tag, b'C' | b'I' | b's' | b'Z' | b'G') =>
            {
                self.audit(trail, tag, frame);
                true
            }
            _ => false,
        }
    }

    fn see(&mut self, tag: u8, frame: Bytes, out: &mut Vec<Bytes>) {
        if tag != b'Z' {
            self.track(tag, &frame);
        }
        if self.skipping {
            self.skipping = tag != b'Z';
            if let Some(trail) = self.trail {
                self.audit(trail, tag, &frame);
            }
            if tag == b'Z' {
                self.ready(&frame);
                out.push(frame);
            }
            return;
        }
        if let Some(trail) = self.trail {
            self.audit(trail, tag, &frame);
        }
        if matches!(tag, b'C' | b'I' | b's' | b'E' | b'Z') {
            self.shapes.ended();
            self.rows_shape = None;
        }
        match (tag, self.veil) {
            (b'T', Some(_)) => {
                let ours = self.describe(Some(&frame));
                out.append(&mut self.held);
                if !ours {
                    out.push(frame)
                }
            }
            (b'n', Some(_)) => {
                let ours = self.describe(None);
                out.append(&mut self.held);
                if !ours {
                    out.push(frame)
                }
            }
            (b'E', _) => self.error(frame, out),
            (b'1' | b'2', _) if self.shared.pending_refusals.load(Ordering::Relaxed) > 0 => {
                self.held.push(frame)
            }
            (b'D', Some(veil)) => {
                out.append(&mut self.held);
                self.row(veil, frame, out)
            }
            (b'H', Some(_)) => {
                // CopyOutResponse: its first byte is 1 for binary format.
                let binary = frame.get(5) == Some(&1);
                self.copy_out =
                    CopyOut::new(self.shared.next_copy_out(), binary, self.shared.encoding());
                out.push(frame)
            }
            (b'd', Some(veil)) => match self.copy_out.take() {
                Some(mut copy) => {
                    self.copy_data(veil, &mut copy, frame, out);
                    self.copy_out = Some(copy);
                }
                None => out.push(frame),
            },
            (b'c', _) => {
                self.copy_out = None;
                out.push(frame)
            }
            (b'S', Some(_)) => {
                out.append(&mut self.held);
                self.parameter_status(&frame);
                out.push(frame)
            }
            (b'Z', Some(_)) => {
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

/// pgveil's refusal as the client should see it: severity, SQLSTATE and
/// message, without the marker and the PL/pgSQL context of the statement
/// that raised it.
fn refusal_error(frame: &[u8]) -> Bytes {
    let field =
        |code| reply::error_field(frame, code).map(|v| String::from_utf8_lossy(v).into_owned());
    let code = field(b'C').unwrap_or_else(|| "XX000".into());
    let message = field(b'M').unwrap_or_default();
    reply::error(Severity::Error, &code, &message)
}

/// An error the server raised for a violated ciphertext guard
/// ([`crate::protect::guard`]) without the fields that may quote the row or the
/// statement (`DETAIL: Failing row contains (...)`, the context and the
/// internal query): the values are plaintext the client sent, and client
/// libraries and applications log error details. Other errors pass as
/// they are.
fn without_guard_values(frame: Bytes) -> Bytes {
    let guard = reply::error_field(&frame, b'n')
        .is_some_and(|name| name.starts_with(crate::protect::guard::NAME_PREFIX.as_bytes()));
    if !guard {
        return frame;
    }
    // Severity, SQLSTATE, message, schema, table, column, type, constraint.
    reply::keep_fields(&frame, b"SVCMstcdn")
}

/// The error a reader gets for a value the policy denies it.
pub fn denied(column: &str) -> Bytes {
    let message = format!("pgveil: access to column {column} is denied by policy");
    reply::error(Severity::Error, DENIED, &message)
}

/// Rewrites one DataRow frame for `reader`, with a fresh memo (see
/// [`Memo::rewrite_row`]); the frame itself when it holds no ciphertext.
/// `Err` carries the ErrorResponse to send instead when a value is denied.
pub fn data_row(veil: &Protection, reader: &Reader<'_>, frame: Bytes) -> Result<Bytes, Bytes> {
    if !has_ciphertext(&frame) {
        return Ok(frame);
    }
    let revealed = Memo::default().rewrite_row(veil, reader, &frame, None)?;
    Ok(revealed.unwrap_or(frame))
}

/// Whether any field of a DataRow frame looks like pgveil's ciphertext.
fn has_ciphertext(frame: &[u8]) -> bool {
    tuple_has_ciphertext(&frame[5..])
}

/// Whether a DataRow frame has a value in a field that `shape` says comes
/// from a protected column.
fn has_protected(shape: &[Option<Field<'_>>], frame: &[u8]) -> bool {
    Fields::of(frame)
        .zip(shape)
        .any(|(value, field)| value.is_some() && field.is_some())
}

/// Whether any field of a tuple looks like pgveil's ciphertext.
pub fn tuple_has_ciphertext(tuple: &[u8]) -> bool {
    Fields::of_tuple(tuple)
        .flatten()
        .any(|field| Form::of(field).is_some())
}

/// What a reader sees of the values under one key, the column whose rule
/// decided it, and the key's ciphers (`None` if the keyring lacks that
/// version: such values do not decrypt); `None` for a key no policy column
/// uses.
type Decision<'v> = Option<(Action, &'v ColumnPolicy, Option<&'v KeyCiphers>)>;

/// A kind of read of a protected column, counted for the audit trail.
#[derive(Clone, Copy)]
struct Read<'v> {
    column: &'v ColumnPolicy,
    action: Option<Action>,
    /// The value was not stored encrypted.
    unencrypted: bool,
}

impl PartialEq for Read<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.column, other.column)
            && self.action == other.action
            && self.unencrypted == other.unencrypted
    }
}

/// Decisions a memo keeps; a result naming more keys than this (forged
/// headers) only costs decoding them again.
const MAX_DECISIONS: usize = 64;

/// What a session keeps from one value to the next: the decision for each
/// key under the purpose in force (roles do not change in a session), the
/// reads not yet told to the audit trail, and buffers for plaintext. Each
/// value is decoded over the last in the same buffers, which are zeroized
/// when the session ends; zeroizing them for every value cost more than
/// decrypting it (see BENCHMARKS.md).
#[derive(Default)]
pub struct Memo<'v> {
    purpose: Option<String>,
    /// By the field bytes that encode the envelope's header, which name
    /// the key (see [`crypto::encoded_header`]).
    decisions: Vec<(Vec<u8>, Decision<'v>)>,
    reads: Vec<(Read<'v>, u64)>,
    plaintext: Zeroizing<Vec<u8>>,
    value: Zeroizing<Vec<u8>>,
}

impl<'v> Memo<'v> {
    /// Rewrites one DataRow frame for `reader`: `Ok(None)` when nothing in
    /// it changes; `Err` carries the ErrorResponse to send instead when a
    /// value is denied.
    pub fn rewrite_row(
        &mut self,
        veil: &'v Protection,
        reader: &Reader<'_>,
        frame: &[u8],
        shape: Option<&[Option<Field<'v>>]>,
    ) -> Result<Option<Bytes>, Bytes> {
        let mut row = BytesMut::with_capacity(frame.len());
        row.put_u8(b'D');
        row.put_i32(0);
        if !self.rewrite_shaped(veil, reader, &frame[5..], shape, &mut row)? {
            return Ok(None);
        }
        let len = (row.len() - 1) as i32;
        row[1..5].copy_from_slice(&len.to_be_bytes());
        Ok(Some(row.freeze()))
    }

    /// Appends a tuple (a field count, then each field's length and bytes:
    /// a DataRow's body, or a binary COPY tuple) revealed for `reader` to
    /// `out`, knowing which fields come from protected columns (`shape`,
    /// see [`crate::read::shape`]). `false` when nothing in it changes, or it is
    /// malformed and goes on as PostgreSQL wrote it: what was appended is
    /// then to be dropped. `Err` carries the ErrorResponse for a withheld
    /// value.
    pub fn rewrite_shaped(
        &mut self,
        veil: &'v Protection,
        reader: &Reader<'_>,
        tuple: &[u8],
        shape: Option<&[Option<Field<'v>>]>,
        out: &mut impl BufMut,
    ) -> Result<bool, Bytes> {
        let count = Fields::count(tuple);
        out.put_u16(count as u16);
        let (mut seen, mut changed) = (0, false);
        for field in Fields::of_tuple(tuple) {
            seen += 1;
            let Some(value) = field else {
                out.put_i32(-1);
                continue;
            };
            let stored = shape.and_then(|s| s.get(seen - 1).copied().flatten());
            match self.reveal_field(veil, reader, value, stored) {
                Revealed::Keep => put_field(out, Some(value)),
                Revealed::Value(revealed) => {
                    put_field(out, Some(revealed));
                    changed = true;
                }
                Revealed::Null => {
                    put_field(out, None);
                    changed = true;
                }
                Revealed::Denied(denial) => return Err(denial.error()),
            }
        }
        Ok(seen == count && changed)
    }

    /// What `reader` may see of one value of a field that `stored` says
    /// comes from a protected column (`None`: not known to). A protected
    /// column's value that is no ciphertext, or names a key no column
    /// uses, is the plaintext it may be.
    pub fn reveal_field(
        &mut self,
        veil: &'v Protection,
        reader: &Reader<'_>,
        value: &[u8],
        stored: Option<Field<'v>>,
    ) -> Revealed<'_> {
        match stored {
            Some(stored)
                if Form::of(value).is_none() || self.decision(veil, reader, value).is_none() =>
            {
                self.reveal_unencrypted(veil, reader, stored.column, None, value, stored.into())
            }
            _ => self.reveal(veil, reader, value),
        }
    }

    /// What `reader` may see of one value.
    pub fn reveal(
        &mut self,
        veil: &'v Protection,
        reader: &Reader<'_>,
        value: &[u8],
    ) -> Revealed<'_> {
        let Some(form) = Form::of(value) else {
            return Revealed::Keep;
        };
        let Some((action, column, ciphers)) = self.decision(veil, reader, value) else {
            return Revealed::Keep;
        };
        let action = match self.admit(reader, column, action, false) {
            Ok(action) => action,
            Err(withheld) => return withheld,
        };
        if let Err(e) = self.open(&column.domain, ciphers, value) {
            // Shaped like ciphertext of this column's key, but not: the
            // plaintext it may be, under the decision already taken.
            warn!(column = %column.qualified_name(), "stored value does not decrypt: {e}");
            return self.reveal_unencrypted(veil, reader, column, Some(action), value, form.into());
        }
        self.note(reader, column, Some(action), false);
        if form != Form::Text {
            return self.reveal_bytes(veil, column, action, form);
        }
        let text = match std::str::from_utf8(&self.plaintext) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&self.plaintext),
        };
        let shown = Zeroizing::new(match action {
            Action::Plaintext => match (&text, reader.encoding.encode(&text)) {
                // Valid UTF-8 for a UTF-8 reader: the plaintext as it is.
                (Cow::Borrowed(_), Cow::Borrowed(_)) => return Revealed::Value(&self.plaintext),
                (_, encoded) => encoded.into_owned(),
            },
            Action::Masked => reader
                .encoding
                .encode(&column.mask.apply(&text))
                .into_owned(),
            _ => match veil.keyring.pseudonym(&column.domain, &self.plaintext) {
                Ok(token) => token.into_bytes(),
                Err(_) => return Revealed::Null,
            },
        });
        self.value.clear();
        self.value.extend_from_slice(&shown);
        Revealed::Value(&self.value)
    }

    /// Decodes and decrypts `field`, a value of `domain` in any form (see
    /// [`Form`]), into `self.plaintext`, whose allocation it reuses.
    fn open(
        &mut self,
        domain: &str,
        ciphers: Option<&KeyCiphers>,
        field: &[u8],
    ) -> Result<(), CryptoError> {
        let buf = std::mem::take(&mut *self.plaintext);
        let (envelope, _) = crypto::parse_field_into(field, buf)?.ok_or(CryptoError::Magic)?;
        let Some(ciphers) = ciphers else {
            return Err(CryptoError::UnknownKey {
                domain: domain.into(),
                key: envelope.key_ref(),
            });
        };
        self.plaintext = ciphers.decrypt(domain, envelope)?;
        Ok(())
    }

    /// What a reader sees of a `bytea` value whose plaintext is in
    /// `self.plaintext`, written in `form`.
    fn reveal_bytes(
        &mut self,
        veil: &Protection,
        column: &ColumnPolicy,
        action: Action,
        form: Form,
    ) -> Revealed<'_> {
        let stand_in = match action {
            Action::Plaintext if form == Form::Binary => return Revealed::Value(&self.plaintext),
            Action::Plaintext => None,
            Action::Masked => Some(Mask::Redact.apply("")),
            _ => match veil.keyring.pseudonym(&column.domain, &self.plaintext) {
                Ok(token) => Some(token),
                Err(_) => return Revealed::Null,
            },
        };
        let shown = stand_in
            .as_ref()
            .map_or(&self.plaintext[..], |s| s.as_bytes());
        self.value.clear();
        match form {
            Form::ByteaHex => bytea::write_hex(shown, &mut self.value),
            Form::ByteaEscape => bytea::write_escape(shown, &mut self.value),
            Form::Text | Form::Binary => self.value.extend_from_slice(shown),
        }
        Revealed::Value(&self.value)
    }

    /// What every reveal checks before it shows anything: a session
    /// blocked for bulk access gets no plaintext, NULL and denial are
    /// final, and nothing is shown while the audit log cannot record it.
    /// `Ok` the action to show the value by (plaintext, masked or a
    /// pseudonym), whose read the caller counts once it is shown; `Err`
    /// what the reader gets instead, with the read counted.
    fn admit(
        &mut self,
        reader: &Reader<'_>,
        column: &'v ColumnPolicy,
        mut action: Action,
        unencrypted: bool,
    ) -> Result<Action, Revealed<'static>> {
        if action == Action::Plaintext && reader.trail.is_some_and(Trail::blocked) {
            action = Action::Deny;
        }
        let unrecorded = reader.trail.is_some_and(Trail::refusing);
        let withheld = match action {
            Action::Null => Revealed::Null,
            Action::Deny => self.denial(column, false),
            _ if unrecorded => {
                action = Action::Deny;
                self.denial(column, true)
            }
            Action::Plaintext | Action::Masked | Action::Pseudonym => return Ok(action),
        };
        self.note(reader, column, Some(action), unencrypted);
        Err(withheld)
    }

    fn denial(&self, column: &ColumnPolicy, unrecorded: bool) -> Revealed<'static> {
        Revealed::Denied(Denial {
            column: column.qualified_name(),
            unrecorded,
        })
    }

    /// The decision for `value`, by the key its envelope names (`None`
    /// if it is no envelope), remembered for the purpose in force.
    fn decision(
        &mut self,
        veil: &'v Protection,
        reader: &Reader<'_>,
        value: &[u8],
    ) -> Decision<'v> {
        if self.purpose.as_deref() != reader.purpose {
            self.purpose = reader.purpose.map(str::to_owned);
            self.decisions.clear();
        }
        let header = crypto::encoded_header(value)?;
        if let Some((_, decision)) = self.decisions.iter().find(|(h, _)| h[..] == *header) {
            return *decision;
        }
        let key = crypto::key_of(value)?;
        let decision = veil
            .decide(key, reader.roles, reader.purpose)
            .map(|(action, column)| {
                let ciphers = veil.keyring.ciphers(&column.domain, key).ok();
                (action, column, ciphers)
            });
        if self.decisions.len() == MAX_DECISIONS {
            self.decisions.clear();
        }
        self.decisions.push((header.to_vec(), decision));
        decision
    }

    /// Counts a read of `column` for the audit trail, with audit on, of
    /// a value stored encrypted or, if `unencrypted`, not.
    fn note(
        &mut self,
        reader: &Reader<'_>,
        column: &'v ColumnPolicy,
        action: Option<Action>,
        unencrypted: bool,
    ) {
        if reader.trail.is_none() {
            return;
        }
        let read = Read {
            column,
            action,
            unencrypted,
        };
        match self.reads.iter_mut().find(|(r, _)| *r == read) {
            Some((_, count)) => *count += 1,
            None => self.reads.push((read, 1)),
        }
    }

    /// Tells the audit trail the reads counted since it was last told.
    pub fn tell(&mut self, trail: &Trail) {
        for (read, count) in self.reads.drain(..) {
            trail.read(
                read.column.qualified_name(),
                read.action,
                read.unencrypted,
                count,
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protect::crypto::MasterKey;
    use crate::protect::keyring::Keyring;
    use crate::protect::policy::Policy;
    use crate::sql::Encryptor;

    const POLICY: &str = r#"
[[column]]
table = "t"
column = "secret"
reveal = { reader = "plaintext", masker = "masked" }
default = "deny"

[[column]]
table = "t"
column = "kyc"
reveal = { reader = "plaintext" }
purposes = ["kyc"]
default = "null"
"#;

    /// A veil protecting `public.t.secret` (plaintext for `reader`,
    /// masked for `masker`, denied to anyone else) and `public.t.kyc`.
    pub(crate) fn veil() -> Protection {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let policy = Policy::from_str("t.toml", POLICY).unwrap();
        let (master, _) = MasterKey::generate().unwrap();
        Keyring::init(&path, &master, &policy.domains()).unwrap();
        Protection::new(policy, Keyring::load(&path, &master).unwrap())
    }

    fn row(fields: &[Option<&[u8]>]) -> Bytes {
        reply::frame_of(b'D', &crate::wire::copy::binary::tests::tuple_bytes(fields))
    }

    fn read(
        veil: &Protection,
        roles: &[&str],
        frame: Bytes,
    ) -> Result<Vec<Option<Vec<u8>>>, Bytes> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let out = data_row(veil, &reader(&roles, None), frame)?;
        Ok(Fields::of(&out).map(|f| f.map(<[u8]>::to_vec)).collect())
    }

    #[test]
    fn each_action_and_untouched_rows() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let ciphertext = veil.encrypt(column, "top secret").unwrap();
        let frame = row(&[Some(b"plain"), None, Some(ciphertext.as_bytes())]);
        let plain = read(&veil, &["reader"], frame.clone()).unwrap();
        assert_eq!(
            plain,
            vec![Some(b"plain".to_vec()), None, Some(b"top secret".to_vec())]
        );
        let masked = read(&veil, &["masker"], frame.clone()).unwrap();
        assert_eq!(
            masked[2],
            Some(column.mask.apply("top secret").into_bytes())
        );
        let denied = read(&veil, &["nobody"], frame).unwrap_err();
        assert_eq!(reply::error_field(&denied, b'C'), Some(&b"42501"[..]));
        let message = reply::error_field(&denied, b'M').unwrap();
        assert!(String::from_utf8_lossy(message).contains("public.t.secret"));
        // A row without ciphertext is passed on as the same bytes.
        let untouched = row(&[Some(b"a"), Some(b"pgv1")]);
        assert_eq!(
            data_row(&veil, &reader(&[], None), untouched.clone()).unwrap(),
            untouched
        );
    }

    /// A reader with these roles and purpose, and no trail.
    pub(crate) fn reader<'a>(roles: &'a [String], purpose: Option<&'a str>) -> Reader<'a> {
        Reader {
            roles,
            purpose,
            encoding: ClientEncoding::default(),
            trail: None,
        }
    }

    fn fields(row: Option<Bytes>) -> Vec<Option<Vec<u8>>> {
        let row = row.expect("the row changes");
        Fields::of(&row).map(|f| f.map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn a_session_memo_follows_the_declared_purpose() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "kyc").unwrap();
        let frame = row(&[Some(veil.encrypt(column, "X123").unwrap().as_bytes())]);
        let roles = vec!["reader".to_string()];
        let mut memo = Memo::default();
        for (purpose, expected) in [
            (Some("kyc"), Some(b"X123".to_vec())),
            (None, None),
            (Some("marketing"), None),
            (Some("kyc"), Some(b"X123".to_vec())),
        ] {
            let out = memo.rewrite_row(&veil, &reader(&roles, purpose), &frame, None);
            assert_eq!(fields(out.unwrap()), vec![expected], "{purpose:?}");
        }
    }

    #[test]
    fn one_value_is_decided_for_each_reader() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let frame = row(&[Some(veil.encrypt(column, "top secret").unwrap().as_bytes())]);
        let roles = |r: &str| vec![r.to_string()];
        let (plain, masked, nobody) = (roles("reader"), roles("masker"), roles("nobody"));
        // Twice each, with fresh memos: nothing carries over between readers.
        for _ in 0..2 {
            let out = Memo::default().rewrite_row(&veil, &reader(&plain, None), &frame, None);
            assert_eq!(fields(out.unwrap()), vec![Some(b"top secret".to_vec())]);
            let out = Memo::default().rewrite_row(&veil, &reader(&masked, None), &frame, None);
            let expected = column.mask.apply("top secret").into_bytes();
            assert_eq!(fields(out.unwrap()), vec![Some(expected)]);
            let out = Memo::default().rewrite_row(&veil, &reader(&nobody, None), &frame, None);
            assert!(out.is_err(), "denied");
        }
    }

    #[test]
    fn bytea_values_are_revealed_in_the_form_of_their_ciphertext() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let plaintext = b"\x00secret\\\xff";
        let envelope = veil.encrypt_bytes(column, plaintext).unwrap();
        let frame = row(&[
            Some(&envelope),
            Some(&bytea::hex(&envelope)),
            Some(&bytea::escape(&envelope)),
        ]);
        let forms = |bytes: &[u8]| {
            vec![
                Some(bytes.to_vec()),
                Some(bytea::hex(bytes)),
                Some(bytea::escape(bytes)),
            ]
        };
        // Twice, so the second read uses the memo's decision.
        for _ in 0..2 {
            assert_eq!(
                read(&veil, &["reader"], frame.clone()).unwrap(),
                forms(plaintext)
            );
            assert_eq!(
                read(&veil, &["masker"], frame.clone()).unwrap(),
                forms(b"****")
            );
            assert!(read(&veil, &["nobody"], frame.clone()).is_err());
        }
    }

    #[test]
    fn forged_or_damaged_ciphertext_is_passed_on_not_decrypted() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let mut ciphertext = veil.encrypt(column, "top secret").unwrap().into_bytes();
        let last = ciphertext.len() - 1;
        ciphertext[last] = if ciphertext[last] == b'A' { b'B' } else { b'A' };
        let out = read(&veil, &["reader"], row(&[Some(&ciphertext)])).unwrap();
        assert_eq!(out, vec![Some(ciphertext)]);
        let forged = b"pgv1:not-really".to_vec();
        assert_eq!(
            read(&veil, &["reader"], row(&[Some(&forged)])).unwrap(),
            vec![Some(forged)]
        );
    }
}
