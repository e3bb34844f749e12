//! Reveals protected values in `COPY ... TO STDOUT` data, as `reveal`
//! does for rows.
//!
//! **Text and CSV.** PostgreSQL sends each row of a COPY TO in a CopyData
//! message of its own. The row is split into fields with the COPY's
//! options (which the client tap read from the statement), in the
//! reader's encoding (`copy_syntax`), and each field is read as COPY would
//! read it back (backslash escapes in text format, quotes in CSV). A field
//! holding pgveil's ciphertext (a text column's `pgv1:...`, a `bytea`
//! column's `\x5056...`, written `\\x5056...` in text format, or its escape
//! form) is replaced by what the reader may see, in the reader's encoding,
//! escaped or quoted for the format as PostgreSQL would have written it
//! (a `bytea` value's `\x` hex or escape form is escaped like any text):
//! quoted again where FORCE_QUOTE quoted the ciphertext. A row none of
//! whose bytes could start ciphertext is passed on without being split.
//!
//! **Binary.** The stream is split into its header, tuples and trailer
//! (`copy_binary`); a piece cut across CopyData messages is kept until
//! its end arrives. Each tuple's fields are revealed as a DataRow's are
//! (text columns arrive as the bytes of `pgv1:...`, `bytea` ones as the
//! envelope's bytes) and their lengths rewritten. A message made of whole
//! pieces without ciphertext, which is every message of a COPY without
//! protected values, is passed on as it is.
//!
//! **Values not stored encrypted.** For a COPY of a table, the client tap
//! noted which positions of the data are protected columns
//! (`CopyOptions::protected`); a value there that is not ciphertext pgveil
//! can open is revealed by its column's rule, as in rows
//! (`crate::read::unencrypted`). Such rows are always split.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;
use bytes::Bytes;

use crate::protect::protection::Protection;
use crate::read::reveal::{tuple_has_ciphertext, Recipient, Revealer};
use crate::read::revealed::{Denial, Revealed};
use crate::read::shape::Field;
use crate::text::encoding::ClientEncoding;
use crate::wire::copy::binary::{FormatError, Piece, Splitter};
use crate::wire::copy::options::{CopyField, CopyOptions};
use crate::wire::copy::text::{Format, Syntax};
use crate::wire::reply::{self, Severity};
use crate::wire::sqlstate::INTERNAL_ERROR;

/// The data of one COPY TO, to be revealed as it flows.
pub(super) enum CopyOut {
    Lines(Lines),
    Binary(BinaryOut),
}

impl CopyOut {
    /// How to reveal the COPY TO whose CopyOutResponse says `binary` or
    /// not, with the options of its statement if pgveil read them, for a
    /// reader in `encoding`; `None` when its data cannot be read and is
    /// passed on as it is.
    pub(super) fn new(
        options: Option<CopyOptions>,
        binary: bool,
        encoding: ClientEncoding,
    ) -> Option<Self> {
        if binary {
            let protected = options.map(|o| o.protected).unwrap_or_default();
            return Some(CopyOut::Binary(BinaryOut {
                protected,
                ..BinaryOut::default()
            }));
        }
        let options = options?;
        // The data is in the COPY's own ENCODING, if it names one; one
        // pgveil cannot read is passed on as it is, never revealed.
        let encoding = match &options.encoding {
            Some(name) => ClientEncoding::named(name)?,
            None => encoding,
        };
        Lines::new(&options, encoding).map(CopyOut::Lines)
    }

    /// Reveals the payload of one CopyData message: `Ok(None)` to pass it
    /// on as it is, or the bytes to send in its place (none, if they are
    /// not whole yet). `Err` is the ErrorResponse that ends the COPY.
    pub(super) fn reveal<'v>(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
        revealer: &mut Revealer<'v>,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, Bytes> {
        match self {
            CopyOut::Lines(lines) => lines
                .reveal(veil, reader, revealer, data)
                .map_err(|denial| denial.error()),
            CopyOut::Binary(binary) => binary.reveal(veil, reader, revealer, data),
        }
    }
}

/// Text or CSV rows, one per message.
pub(super) struct Lines {
    syntax: Syntax,
    /// The NULL string, in the reader's encoding.
    null: Vec<u8>,
    /// The protected columns of a table's data, by position.
    protected: Vec<Option<CopyField>>,
}

impl Lines {
    /// `None` for binary options or an option that is not one byte, which
    /// COPY rejects.
    fn new(options: &CopyOptions, encoding: ClientEncoding) -> Option<Self> {
        Some(Lines {
            syntax: Syntax::of(options, encoding)?,
            null: encoding.encode(&options.null).into_owned(),
            protected: options.protected.clone(),
        })
    }

    /// Reveals one row; `Ok(None)` when it is unchanged, `Err` is the
    /// value withheld.
    fn reveal<'v>(
        &self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
        revealer: &mut Revealer<'v>,
        row: &[u8],
    ) -> Result<Option<Vec<u8>>, Denial> {
        if self.protected.is_empty() && !may_hold_ciphertext(row) {
            return Ok(None);
        }
        let (line, ending) = split_ending(row);
        let mut out = Vec::with_capacity(row.len() + 64);
        let mut value = Vec::new();
        let mut changed = false;
        let mut start = 0;
        let mut index = 0;
        loop {
            value.clear();
            let field = self.syntax.field(line, start, Some(&mut value));
            let raw = &line[field.raw.clone()];
            // A field alone on its line, which would read as the end of
            // the data if it were `\.`.
            let alone = start == 0 && !field.delimited;
            let null = raw == &self.null[..] && !field.quoted;
            let stored = self
                .protected
                .get(index)
                .and_then(Option::as_ref)
                .filter(|_| !null)
                .and_then(|f| stored_field(veil, f, false));
            index += 1;
            match revealer.reveal_field(veil, reader, &value, stored) {
                Revealed::Keep => out.extend_from_slice(raw),
                Revealed::Null => {
                    changed = true;
                    out.extend_from_slice(&self.null);
                }
                Revealed::Value(value) => {
                    changed = true;
                    self.put(&mut out, value, field.quoted, alone);
                }
                Revealed::Denied(denial) => return Err(denial),
            }
            if !field.delimited {
                break;
            }
            out.push(self.syntax.delimiter);
            start = field.raw.end + 1;
        }
        out.extend_from_slice(ending);
        Ok(changed.then_some(out))
    }

    /// Writes a revealed value as PostgreSQL would have written it; in
    /// CSV quoted where the ciphertext was (FORCE_QUOTE).
    fn put(&self, out: &mut Vec<u8>, value: &[u8], quoted: bool, alone: bool) {
        match self.syntax.format {
            Format::Csv { .. } => self.syntax.put_csv(out, value, quoted, &self.null, alone),
            Format::Text => self.syntax.put_text(out, value),
        }
    }
}

/// The protected column of a COPY field, as a result's field.
fn stored_field<'v>(veil: &'v Protection, field: &CopyField, binary: bool) -> Option<Field<'v>> {
    Some(Field {
        column: veil
            .policy
            .column(&field.schema, &field.table, &field.column)?,
        bytea: field.bytea,
        binary,
    })
}

/// Whether a row has bytes that start ciphertext in any of its forms.
fn may_hold_ciphertext(row: &[u8]) -> bool {
    static STARTS: OnceLock<AhoCorasick> = OnceLock::new();
    STARTS
        .get_or_init(|| {
            AhoCorasick::new([&b"pgv1:"[..], b"\\x5056", b"PV\\"]).expect("fixed patterns build")
        })
        .is_match(row)
}

fn split_ending(row: &[u8]) -> (&[u8], &[u8]) {
    let cut = if row.ends_with(b"\r\n") {
        2
    } else {
        usize::from(row.ends_with(b"\n"))
    };
    row.split_at(row.len() - cut)
}

/// A binary COPY TO stream.
#[derive(Default)]
pub(super) struct BinaryOut {
    splitter: Splitter,
    /// The start of a piece whose end has not arrived yet.
    pending: Vec<u8>,
    /// The protected columns of a table's data, by position.
    protected: Vec<Option<CopyField>>,
}

impl BinaryOut {
    fn reveal<'v>(
        &mut self,
        veil: &'v Protection,
        reader: &Recipient<'_>,
        revealer: &mut Revealer<'v>,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, Bytes> {
        let shape: Vec<Option<Field<'v>>> = self
            .protected
            .iter()
            .map(|f| f.as_ref().and_then(|f| stored_field(veil, f, true)))
            .collect();
        let shape = shape.iter().any(Option::is_some).then_some(&shape[..]);
        if shape.is_none() && self.pending.is_empty() && self.passes(data).map_err(unreadable)? {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let mut out = Vec::with_capacity(buf.len() + 64);
        let mut start = 0;
        while let Some((piece, len)) = self.splitter.next(&buf[start..]).map_err(unreadable)? {
            let bytes = &buf[start..start + len];
            let at = out.len();
            let revealed = piece == Piece::Tuple
                && revealer.rewrite_shaped(veil, reader, bytes, shape, &mut out)?;
            if !revealed {
                out.truncate(at);
                out.extend_from_slice(bytes);
            }
            start += len;
        }
        buf.drain(..start);
        self.pending = buf;
        Ok(Some(out))
    }

    /// Whether `data` is whole pieces none of which holds ciphertext; if
    /// so, the splitter moves past them.
    fn passes(&mut self, data: &[u8]) -> Result<bool, FormatError> {
        let mut splitter = self.splitter;
        let mut start = 0;
        while start < data.len() {
            match splitter.next(&data[start..])? {
                Some((Piece::Tuple, len)) if tuple_has_ciphertext(&data[start..start + len]) => {
                    return Ok(false)
                }
                Some((_, len)) => start += len,
                None => return Ok(false),
            }
        }
        self.splitter = splitter;
        Ok(true)
    }
}

/// The error that ends a binary COPY TO pgveil cannot read: its
/// protected values cannot be revealed, nor passed on as ciphertext to a
/// reader the policy may deny.
fn unreadable(error: FormatError) -> Bytes {
    let message = format!("pgveil: cannot reveal the COPY data: {error}");
    reply::error(Severity::Error, INTERNAL_ERROR, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::read::reveal::tests::{reader, veil};
    use crate::sql::Encryptor;
    use crate::wire::copy::binary::tests::{stream, tuple_bytes};

    /// The tuples `BinaryOut` sends for `data` given in chunks of `size`
    /// bytes, as `roles` reads them.
    fn binary_tuples(
        veil: &Protection,
        data: &[u8],
        size: usize,
        roles: &[String],
    ) -> Result<Vec<u8>, Bytes> {
        let mut copy = CopyOut::new(None, true, ClientEncoding::default()).unwrap();
        let mut revealer = Revealer::default();
        let mut out = Vec::new();
        for chunk in data.chunks(size) {
            let sent = copy.reveal(veil, &reader(roles, None), &mut revealer, chunk)?;
            out.extend(sent.unwrap_or_else(|| chunk.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn binary_copy_is_revealed_whatever_the_cuts() {
        let veil = veil();
        let column = veil.policy.column("public", "t", "secret").unwrap();
        let text = veil.encrypt(column, "top secret").unwrap();
        let bytes = veil.encrypt_bytes(column, b"\x00\xff").unwrap();
        let data = stream(&[
            &[Some(b"1"), Some(text.as_bytes()), None],
            &[Some(b"2"), None, Some(&bytes)],
        ]);
        let expected = stream(&[
            &[Some(b"1"), Some(b"top secret"), None],
            &[Some(b"2"), None, Some(b"\x00\xff")],
        ]);
        let roles = ["reader".to_owned()];
        for size in 1..=data.len() {
            assert_eq!(
                binary_tuples(&veil, &data, size, &roles).unwrap(),
                expected,
                "{size}"
            );
        }
        let denied = binary_tuples(&veil, &data, data.len(), &["nobody".to_owned()]).unwrap_err();
        assert_eq!(reply::error_field(&denied, b'C'), Some(&b"42501"[..]));
    }

    #[test]
    fn binary_copy_without_ciphertext_is_passed_on_as_it_is() {
        let veil = veil();
        let reader = reader(&[], None);
        let mut revealer = Revealer::default();
        let mut copy = CopyOut::new(None, true, ClientEncoding::default()).unwrap();
        let header_and_tuple = [&stream(&[])[..19], &tuple_bytes(&[Some(b"pgv1")])].concat();
        for message in [&header_and_tuple[..], &(-1i16).to_be_bytes()] {
            assert_eq!(
                copy.reveal(&veil, &reader, &mut revealer, message),
                Ok(None)
            );
        }
        let error = copy
            .reveal(&veil, &reader, &mut revealer, b"more")
            .unwrap_err();
        assert_eq!(reply::error_field(&error, b'C'), Some(&b"XX000"[..]));
    }

    #[test]
    fn rows_that_cannot_hold_ciphertext_are_not_split() {
        for row in [&b"1\tplain\t\\N\n"[..], b"pgv1\t\\x50\tPV"] {
            assert!(!may_hold_ciphertext(row));
        }
        for row in [&b"1\tpgv1:AAAA\n"[..], b"\\\\x505601", b"\"PV\\001\""] {
            assert!(may_hold_ciphertext(row));
        }
    }
}
