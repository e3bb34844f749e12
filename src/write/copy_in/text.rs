//! Text and CSV `COPY ... FROM STDIN` data: rows are split where
//! PostgreSQL splits them, and in each row the protected fields are
//! replaced by their ciphertext, written as the format escapes it.

use std::mem;

use super::{check_length, is_cipher_byte, CopyError, Problem, Values, MAX_ROW};
use crate::protect::policy::ColumnPolicy;
use crate::sql::{CopyIn, Storage};
use crate::text::encoding::Step;
use crate::wire::copy::options::{ColumnSet, CopyFormat};
use crate::wire::copy::text::{Field, Format, Syntax};

/// Encrypts the protected fields of a text or CSV COPY data stream.
pub(crate) struct RowEncryptor<'a> {
    syntax: Syntax,
    null: Vec<u8>,
    values: Values<'a>,
    /// CSV: FORCE_NOT_NULL and FORCE_NULL, by column.
    force_not_null: Vec<bool>,
    force_null: Vec<bool>,
    /// The header line is still to come.
    header: bool,
    /// The end-of-data marker was seen: the rest is dropped.
    ended: bool,
    /// The start of a row whose end has not arrived yet.
    pending: Vec<u8>,
    scan: RowScan,
    /// The line the pending row starts on, counted from 1.
    line: usize,
    /// The longest row accepted: [`MAX_ROW`], less in tests.
    pub(super) max_row: usize,
    /// The decoded value of the current protected field.
    plain: Vec<u8>,
}

impl<'a> RowEncryptor<'a> {
    pub(super) fn new(copy: &CopyIn, values: Values<'a>) -> Result<Self, Problem> {
        let options = &copy.options;
        let format = match options.format {
            CopyFormat::Csv => Format::Csv {
                quote: option_byte("QUOTE", &options.quote)?,
                escape: option_byte("ESCAPE", &options.escape)?,
            },
            CopyFormat::Text | CopyFormat::Binary => Format::Text,
        };
        let forced = |set: &ColumnSet| -> Vec<bool> {
            copy.columns
                .iter()
                .map(|target| {
                    format != Format::Text
                        && target
                            .as_ref()
                            .is_some_and(|t| set.contains(&t.column.column))
                })
                .collect()
        };
        Ok(RowEncryptor {
            syntax: Syntax {
                format,
                delimiter: option_byte("DELIMITER", &options.delimiter)?,
                encoding: values.encoding,
            },
            null: options.null.clone().into_bytes(),
            force_not_null: forced(&options.force_not_null),
            force_null: forced(&options.force_null),
            values,
            header: options.header,
            ended: false,
            pending: Vec::new(),
            scan: RowScan::default(),
            line: 1,
            max_row: MAX_ROW,
            plain: Vec::new(),
        })
    }

    pub(super) fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, CopyError> {
        if self.ended {
            return Ok(Vec::new());
        }
        let mut pending = mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        // Sized for the new data only: a long pending row may not end here.
        let mut out = Vec::with_capacity(data.len());
        let mut start = 0;
        while !self.ended {
            let found = self.scan.find_end(&self.syntax, &pending[start..]);
            let Some(row) = found.map_err(|BadCharacter| Problem::BadCharacter(self.line))? else {
                break;
            };
            check_length(row.len, self.max_row, self.line)?;
            self.row(&pending[start..start + row.len], &row, &mut out)?;
            start += row.len;
        }
        if self.ended {
            pending.clear();
        } else {
            pending.drain(..start);
            check_length(pending.len(), self.max_row, self.line)?;
        }
        self.pending = pending;
        Ok(out)
    }

    /// The last row, if it has no line terminator.
    pub(super) fn finish(&mut self) -> Result<Vec<u8>, CopyError> {
        let pending = mem::take(&mut self.pending);
        let scan = mem::take(&mut self.scan);
        if self.ended || pending.is_empty() {
            return Ok(Vec::new());
        }
        if scan.scanned < pending.len() {
            // A character whose remaining bytes never came.
            return Err(Problem::BadCharacter(self.line).into());
        }
        if scan.in_quote {
            return Err(Problem::UnterminatedQuote(self.line).into());
        }
        let row = scan.into_row(pending.len(), pending.len());
        let mut out = Vec::with_capacity(pending.len());
        self.row(&pending, &row, &mut out)?;
        Ok(out)
    }

    /// Writes one whole row (`data`, terminator included) to `out`.
    fn row(&mut self, data: &[u8], row: &Row, out: &mut Vec<u8>) -> Result<(), Problem> {
        let (content, terminator) = data.split_at(row.content);
        if content == b"\\." {
            self.ended = true;
            out.extend_from_slice(data);
            return Ok(());
        }
        if row.end_marker {
            return Err(Problem::MisplacedEndMarker(self.line));
        }
        if mem::take(&mut self.header) {
            out.extend_from_slice(data);
        } else {
            self.fields(content, out)?;
            out.extend_from_slice(terminator);
        }
        self.line += 1 + row.newlines;
        Ok(())
    }

    /// Writes the fields of a row (without its terminator) to `out`,
    /// protected ones encrypted.
    fn fields(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), Problem> {
        let mut start = 0;
        let mut found = 0;
        loop {
            let field = self.syntax.field(content, start, None);
            let raw = &content[field.raw.clone()];
            match self.values.column(found) {
                Some(column) => self.protected(column, found, &field, raw, out)?,
                None => out.extend_from_slice(raw),
            }
            found += 1;
            if !field.delimited {
                break;
            }
            out.push(self.syntax.delimiter);
            start = field.raw.end + 1;
        }
        if found != self.values.columns.len() {
            return Err(Problem::FieldCount {
                line: self.line,
                found,
                expected: self.values.columns.len(),
            });
        }
        Ok(())
    }

    /// Writes the field `raw` of the protected column at `index`: its
    /// ciphertext, or `raw` itself when it stands for NULL.
    fn protected(
        &mut self,
        (column, storage): (&ColumnPolicy, Storage),
        index: usize,
        field: &Field,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Problem> {
        let text = self.values.decode(raw, column, self.line)?;
        // The NULL string is compared with the field as written, unquoted
        // (in CSV) and before escapes are decoded (in text).
        let unquoted_null = !field.quoted && text.as_bytes() == self.null;
        if unquoted_null && !self.force_not_null[index] {
            out.extend_from_slice(raw);
            return Ok(());
        }
        self.plain.clear();
        self.syntax.value(&text, &mut self.plain);
        if field.quoted && self.force_null[index] && self.plain == self.null {
            out.extend_from_slice(raw);
            return Ok(());
        }
        out.extend_from_slice(&self.encrypt(column, storage, field)?);
        Ok(())
    }

    /// The COPY field holding the ciphertext of the decoded value (in
    /// `self.plain`) of `field`.
    fn encrypt(
        &self,
        column: &ColumnPolicy,
        storage: Storage,
        field: &Field,
    ) -> Result<Vec<u8>, Problem> {
        let line = self.line;
        let name = || column.qualified_name();
        if field.bare_cr {
            return Err(Problem::CarriageReturn {
                line,
                column: name(),
            });
        }
        let written = match storage {
            Storage::Text => self.values.encrypt(column, storage, &self.plain, line)?,
            Storage::Bytea => {
                let bytes =
                    crate::text::bytea::decode(&self.plain).ok_or_else(|| Problem::NotBytea {
                        line,
                        column: name(),
                    })?;
                let ciphertext = self.values.encrypt(column, storage, &bytes, line)?;
                let hex = crate::text::bytea::hex(&ciphertext);
                match self.syntax.format {
                    // The backslash of `\x`, escaped.
                    Format::Text => [&b"\\"[..], &hex].concat(),
                    Format::Csv { .. } => hex,
                }
            }
        };
        let quote = match self.syntax.format {
            Format::Csv { quote, .. } => Some(quote),
            Format::Text => None,
        };
        if written == self.null
            || written
                .iter()
                .any(|&b| b == self.syntax.delimiter || Some(b) == quote)
        {
            return Err(Problem::BadCiphertext {
                line,
                column: name(),
            });
        }
        Ok(written)
    }
}

/// The byte of a delimiter, quote or escape option.
fn option_byte(option: &'static str, value: &str) -> Result<u8, Problem> {
    let &[byte] = value.as_bytes() else {
        return Err(Problem::NotOneByte(option));
    };
    if is_cipher_byte(byte) || byte == b'\r' || byte == b'\n' {
        return Err(Problem::Unusable {
            option,
            value: char::from(byte),
        });
    }
    Ok(byte)
}

/// Where the row being received ends, found as its bytes arrive, with
/// PostgreSQL's rules (`CopyReadLineText`).
#[derive(Debug, Default)]
struct RowScan {
    /// Bytes of the row scanned so far.
    scanned: usize,
    /// Text: the previous byte is a backslash escaping this one.
    escaped: bool,
    /// Text: the row has an unescaped `\.`.
    end_marker: bool,
    /// CSV: inside a quoted part of a field.
    in_quote: bool,
    /// CSV: the previous byte is an escape (distinct from the quote)
    /// inside quotes.
    last_was_escape: bool,
    /// The previous byte is a carriage return, neither escaped nor quoted.
    bare_cr: bool,
    /// Line breaks inside the row (escaped or quoted).
    newlines: usize,
}

/// A whole row at the start of the data given to [`RowScan::find_end`].
#[derive(Debug)]
struct Row {
    /// The length of its fields, without the line terminator.
    content: usize,
    /// Its length with the line terminator.
    len: usize,
    newlines: usize,
    end_marker: bool,
}

/// A row holds a byte sequence that is not a character of the client
/// encoding.
struct BadCharacter;

/// Stands for a multibyte character in [`RowScan::step`]: no delimiter,
/// quote, escape or line break.
const OTHER: u8 = 0x80;

impl RowScan {
    /// The row at the start of `data`, if its end is there; scanning
    /// resumes where the previous call on the same row stopped (before a
    /// character whose bytes have not all arrived).
    fn find_end(&mut self, syntax: &Syntax, data: &[u8]) -> Result<Option<Row>, BadCharacter> {
        let mut at = self.scanned;
        while at < data.len() {
            let byte = match syntax.encoding.step(&data[at..]) {
                Step::Byte(byte) => byte,
                Step::Char(len) => {
                    self.step(syntax.format, OTHER);
                    at += len;
                    continue;
                }
                Step::Incomplete => {
                    self.scanned = at;
                    return Ok(None);
                }
                Step::Invalid => return Err(BadCharacter),
            };
            if byte == b'\n' && !self.escaped && !self.in_quote {
                let scan = mem::take(self);
                return Ok(Some(scan.into_row(at, at + 1)));
            }
            self.step(syntax.format, byte);
            at += 1;
        }
        self.scanned = data.len();
        Ok(None)
    }

    /// The row whose line ends at `line_end` (before its `\n`, if any)
    /// and whose terminator ends at `len`.
    fn into_row(self, line_end: usize, len: usize) -> Row {
        Row {
            content: line_end - usize::from(self.bare_cr),
            len,
            newlines: self.newlines,
            end_marker: self.end_marker,
        }
    }

    /// Takes in a byte that does not end the row.
    fn step(&mut self, format: Format, byte: u8) {
        self.newlines += usize::from(byte == b'\n');
        match format {
            Format::Text => {
                let bare = !self.escaped;
                self.end_marker |= !bare && byte == b'.';
                self.bare_cr = bare && byte == b'\r';
                self.escaped = bare && byte == b'\\';
            }
            Format::Csv { quote, escape } => {
                if escape != quote && self.in_quote && byte == escape {
                    self.last_was_escape = !self.last_was_escape;
                }
                if byte == quote && !self.last_was_escape {
                    self.in_quote = !self.in_quote;
                }
                if byte != escape {
                    self.last_was_escape = false;
                }
                self.bare_cr = byte == b'\r' && !self.in_quote;
            }
        }
    }
}
