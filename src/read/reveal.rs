//! Reveals protected values, as the policy allows the reader: the
//! [`Revealer`] a session keeps, which decides and reveals each value of
//! a row or of COPY data, for a [`Recipient`].
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
//! (`crate::read::unencrypted`, `crate::read::shape`).
//!
//! A revealed value is written in the form its ciphertext had
//! ([`Form`]): text in the reader's encoding for a text column; for a
//! `bytea` column its bytes in binary format, or `\x` and their hex (the
//! escape form with `bytea_output = 'escape'`) in text format. Masks work
//! on characters, which bytes do not have: a masked `bytea` value is the
//! four bytes `****`, as the `redact` mask writes, whatever the column's
//! mask. A pseudonym of a `bytea` value is the bytes of its `pgvp_...`
//! text.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;
use zeroize::Zeroizing;

use crate::audit::trail::Trail;
use crate::protect::crypto::{self, CryptoError, Form, KeyCiphers};
use crate::protect::policy::{Action, ColumnPolicy, Mask};
use crate::protect::protection::Protection;
use crate::read::meter::{Meter, Reading};
use crate::read::revealed::{Denial, Revealed, Withheld};
use crate::read::shape::Field;
use crate::read::unencrypted::{self, Stored};
use crate::session::ledger::ResultOf;
use crate::session::metrics::{decision_index, Reveals};
use crate::text::bytea;
use crate::text::encoding::ClientEncoding;
use crate::wire::messages::data_row::{put_field, Fields};
use crate::wire::tags::backend;

/// Who values are revealed to: the identity the policy decides by (roles
/// and the purpose declared), the encoding values are written in, and
/// where reads are noted.
pub struct Recipient<'a> {
    /// The session's roles.
    pub roles: &'a [String],
    /// The purpose in force, if one is declared.
    pub purpose: Option<&'a str>,
    /// The ticket in force, if one is declared.
    pub ticket: Option<&'a str>,
    /// The reader's client encoding.
    pub encoding: ClientEncoding,
    /// Where reads of protected columns are noted, with audit on.
    pub trail: Option<&'a Trail>,
    /// Which result the values belong to, for the approval limits.
    pub result: ResultOf<'a>,
}

/// Whether any field of a DataRow frame looks like pgveil's ciphertext.
pub(super) fn has_ciphertext(frame: &[u8]) -> bool {
    tuple_has_ciphertext(&frame[5..])
}

/// Whether any field of a tuple looks like pgveil's ciphertext.
pub(super) fn tuple_has_ciphertext(tuple: &[u8]) -> bool {
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
    /// The role whose rule decided (`None`: the column's default), the
    /// same for every read of the column in a session; kept with the read
    /// so that a policy reloaded meanwhile is told as it decided.
    role: Option<&'v str>,
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

/// Decisions a revealer keeps; a result naming more keys than this
/// (forged headers) only costs decoding them again.
const MAX_DECISIONS: usize = 64;

/// Reveals the values of one session's results, and keeps from one value
/// to the next: the decision for each key under the purpose in force
/// (roles do not change in a session), the reads not yet told to the
/// audit trail, and buffers for plaintext. Each value is decoded over the
/// last in the same buffers, which are zeroized when the session ends;
/// zeroizing them for every value cost more than decrypting it (see
/// BENCHMARKS.md).
#[derive(Default)]
pub struct Revealer<'v> {
    purpose: Option<String>,
    /// Whether a ticket was declared when the decisions were taken.
    ticketed: bool,
    /// By the field bytes that encode the envelope's header, which name
    /// the key (see [`crypto::encoded_header`]).
    decisions: Vec<(Vec<u8>, Decision<'v>)>,
    reads: Vec<(Read<'v>, u64)>,
    /// Values decided since [`Revealer::take_reveals`], by decision.
    reveals: Reveals,
    /// Plaintext rows counted against the approval limits.
    meter: Meter<'v>,
    plaintext: Zeroizing<Vec<u8>>,
    value: Zeroizing<Vec<u8>>,
}

impl<'v> Revealer<'v> {
    /// The values decided since the last call, by decision (for the
    /// metrics), or `None` if there were none.
    pub(crate) fn take_reveals(&mut self) -> Option<Reveals> {
        (self.reveals != Reveals::default()).then(|| std::mem::take(&mut self.reveals))
    }

    /// The session's count of plaintext rows against approval limits.
    pub(super) fn meter(&mut self) -> &mut Meter<'v> {
        &mut self.meter
    }

    /// Drops the decisions kept, made by a policy no longer in force.
    pub(crate) fn forget_decisions(&mut self) {
        self.decisions.clear();
    }

    /// Rewrites one DataRow frame for `reader`: `Ok(None)` when nothing in
    /// it changes; `Err` carries the ErrorResponse to send instead when a
    /// value is denied.
    pub fn rewrite_row(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
        frame: &[u8],
        shape: Option<&[Option<Field<'v>>]>,
    ) -> Result<Option<Bytes>, Bytes> {
        let mut row = BytesMut::with_capacity(frame.len());
        row.put_u8(backend::DATA_ROW);
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
    pub(super) fn rewrite_shaped(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
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
    pub(super) fn reveal_field(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
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
    fn reveal(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
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

    /// What `reader` may see of `value`, stored in protected `column` but
    /// not as ciphertext pgveil can open, under `action` if it was already
    /// decided (by the key a forged header names) or else the column's
    /// rule.
    fn reveal_unencrypted(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
        column: &'v ColumnPolicy,
        action: Option<Action>,
        value: &[u8],
        stored: Stored,
    ) -> Revealed<'_> {
        unencrypted::warn_once(column);
        let action =
            action.unwrap_or_else(|| column.decide(reader.roles, reader.purpose, reader.ticket));
        let action = match self.admit(reader, column, action, true) {
            Ok(action) => action,
            Err(withheld) => return withheld,
        };
        self.note(reader, column, Some(action), true);
        unencrypted::reveal(
            veil,
            reader.encoding,
            column,
            action,
            value,
            stored,
            &mut self.value,
        )
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
    /// final, nothing is shown while the audit log cannot record it, and
    /// plaintext beyond a column's approval limit needs an approval
    /// (`crate::read::meter`).
    /// `Ok` the action to show the value by (plaintext, masked or a
    /// pseudonym), whose read the caller counts once it is shown; `Err`
    /// what the reader gets instead, with the read counted.
    fn admit(
        &mut self,
        reader: &Recipient<'_>,
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
            Action::Deny => self.denial(column, Withheld::Policy),
            _ if unrecorded => {
                action = Action::Deny;
                self.denial(column, Withheld::Unrecorded)
            }
            Action::Plaintext => {
                let Some(limit) = column.approval_rows else {
                    return Ok(action);
                };
                let reading = Reading {
                    roles: reader.roles,
                    ticket: reader.ticket,
                    trail: reader.trail,
                    result: reader.result,
                };
                match self.meter.count(reading, column, limit) {
                    Ok(()) => return Ok(action),
                    Err(needed) => {
                        action = Action::Deny;
                        self.denial(column, Withheld::Approval(needed.to_string()))
                    }
                }
            }
            Action::Masked | Action::Pseudonym => return Ok(action),
        };
        self.note(reader, column, Some(action), unencrypted);
        Err(withheld)
    }

    fn denial(&self, column: &ColumnPolicy, why: Withheld) -> Revealed<'static> {
        Revealed::Denied(Denial {
            column: column.qualified_name(),
            why,
        })
    }

    /// The decision for `value`, by the key its envelope names (`None`
    /// if it is no envelope), remembered for the purpose in force and
    /// whether a ticket is declared.
    fn decision(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
        value: &[u8],
    ) -> Decision<'v> {
        if self.purpose.as_deref() != reader.purpose || self.ticketed != reader.ticket.is_some() {
            self.purpose = reader.purpose.map(str::to_owned);
            self.ticketed = reader.ticket.is_some();
            self.decisions.clear();
        }
        let header = crypto::encoded_header(value)?;
        if let Some((_, decision)) = self.decisions.iter().find(|(h, _)| h[..] == *header) {
            return *decision;
        }
        let key = crypto::key_of(value)?;
        let decision = veil
            .decide(key, reader.roles, reader.purpose, reader.ticket)
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

    /// Counts a read of `column` for the metrics and, with audit on, the
    /// audit trail, of a value stored encrypted or, if `unencrypted`, not.
    fn note(
        &mut self,
        reader: &Recipient<'_>,
        column: &'v ColumnPolicy,
        action: Option<Action>,
        unencrypted: bool,
    ) {
        if let Some(action) = action {
            self.reveals[decision_index(action)] += 1;
        }
        if reader.trail.is_none() {
            return;
        }
        let read = Read {
            column,
            role: None,
            action,
            unencrypted,
        };
        match self.reads.iter_mut().find(|(r, _)| *r == read) {
            Some((_, count)) => *count += 1,
            None => self.reads.push((
                Read {
                    role: column.policy_role(reader.roles),
                    ..read
                },
                1,
            )),
        }
    }

    /// Tells the audit trail the reads counted since it was last told.
    pub(super) fn tell(&mut self, trail: &Trail) {
        for (read, count) in self.reads.drain(..) {
            trail.read(
                read.column.qualified_name(),
                read.role,
                read.action,
                read.unencrypted,
                count,
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
