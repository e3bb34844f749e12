//! The text and CSV formats of COPY data, as PostgreSQL reads and writes
//! them: the fields of a row, the value of a field, and a value written
//! as a field. `copy_in` reads what clients send to `COPY ... FROM STDIN`
//! with it, `copy_out` what the server sends for `COPY ... TO STDOUT`.
//!
//! Rows are in the client encoding. Since PostgreSQL 14 the server
//! converts COPY data to its own encoding before it looks for delimiters,
//! quotes and escapes, so no byte of a multibyte character is ever one of
//! them, even where the client's bytes are ASCII (`5C` in 「許」 in BIG5);
//! here the same is achieved on the client's bytes by stepping over whole
//! characters ([`ClientEncoding::step`]). When writing, PostgreSQL leaves
//! the bytes of multibyte characters alone too, and so does this module.
//!
//! A field's value is read from its UTF-8 conversion, so that an escape
//! such as `\xE8` stands for a byte of the server's encoding (UTF-8), as in
//! PostgreSQL.

use std::ops::Range;

use crate::text::encoding::{ClientEncoding, Step};
use crate::wire::copy::options::{CopyFormat, CopyOptions};

/// How fields are delimited and quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Csv { quote: u8, escape: u8 },
}

/// The syntax of one COPY data stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Syntax {
    pub format: Format,
    pub delimiter: u8,
    pub encoding: ClientEncoding,
}

/// One field of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    /// Its bytes in the row, as written.
    pub raw: Range<usize>,
    /// Whether a delimiter follows it.
    pub delimited: bool,
    /// CSV: whether any part of it is quoted.
    pub quoted: bool,
    /// Whether it has a carriage return neither escaped nor quoted.
    pub bare_cr: bool,
}

impl Syntax {
    /// The syntax of a text or CSV COPY with `options`; `None` for binary
    /// COPY or an option that is not a single byte.
    pub(crate) fn of(options: &CopyOptions, encoding: ClientEncoding) -> Option<Self> {
        let byte = |value: &str| match value.as_bytes() {
            &[byte] => Some(byte),
            _ => None,
        };
        let format = match options.format {
            CopyFormat::Binary => return None,
            CopyFormat::Text => Format::Text,
            CopyFormat::Csv => Format::Csv {
                quote: byte(&options.quote)?,
                escape: byte(&options.escape)?,
            },
        };
        Some(Syntax {
            format,
            delimiter: byte(&options.delimiter)?,
            encoding,
        })
    }

    /// The same syntax for UTF-8 text.
    fn utf8(&self) -> Self {
        Syntax {
            encoding: ClientEncoding::default(),
            ..*self
        }
    }

    /// Reads the field at `start` of a row (without its line terminator),
    /// pushing its unescaped, unquoted bytes to `value` if given.
    pub(crate) fn field(&self, row: &[u8], start: usize, value: Option<&mut Vec<u8>>) -> Field {
        match self.format {
            Format::Text => self.text_field(row, start, value),
            Format::Csv { quote, escape } => self.csv_field(row, start, quote, escape, value),
        }
    }

    /// Pushes the value of a field to `value`, given the field as written
    /// converted to UTF-8 (`ClientEncoding::decode` of its raw bytes).
    pub(crate) fn value(&self, text: &str, value: &mut Vec<u8>) {
        self.utf8().field(text.as_bytes(), 0, Some(value));
    }

    /// Steps over `bytes` from `at`.
    fn cursor<'b>(&self, bytes: &'b [u8], at: usize) -> Cursor<'b> {
        Cursor {
            bytes,
            at,
            encoding: self.encoding,
        }
    }

    /// `CopyReadAttributesText`: backslash escapes, no quotes.
    fn text_field(&self, row: &[u8], start: usize, value: Option<&mut Vec<u8>>) -> Field {
        let mut value = Sink(value);
        let mut cursor = self.cursor(row, start);
        let mut bare_cr = false;
        while let Some(byte) = cursor.next_byte(&mut value) {
            if byte == self.delimiter {
                return Field {
                    raw: start..cursor.at - 1,
                    delimited: true,
                    quoted: false,
                    bare_cr,
                };
            }
            if byte != b'\\' {
                bare_cr |= byte == b'\r';
                value.push(&[byte]);
                continue;
            }
            match cursor.next() {
                // A backslash that ends the data is dropped.
                None => break,
                // An escaped multibyte character is that character.
                Some(Unit::Char(char)) => value.push(char),
                Some(Unit::Byte(_)) => {
                    let (byte, len) = unescape(&row[cursor.at - 1..]);
                    value.push(&[byte]);
                    cursor.at += len - 1;
                }
            }
        }
        Field {
            raw: start..cursor.at,
            delimited: false,
            quoted: false,
            bare_cr,
        }
    }

    /// `CopyReadAttributesCSV`: quotes may start anywhere in a field and
    /// hide delimiters and line breaks; inside them the escape character
    /// escapes a quote or itself.
    fn csv_field(
        &self,
        row: &[u8],
        start: usize,
        quote: u8,
        escape: u8,
        value: Option<&mut Vec<u8>>,
    ) -> Field {
        let mut value = Sink(value);
        let mut cursor = self.cursor(row, start);
        let mut in_quote = false;
        let mut quoted = false;
        let mut bare_cr = false;
        while let Some(byte) = cursor.next_byte(&mut value) {
            let decoded = if in_quote {
                match row.get(cursor.at) {
                    Some(&next) if byte == escape && (next == escape || next == quote) => {
                        cursor.at += 1;
                        next
                    }
                    _ if byte == quote => {
                        in_quote = false;
                        continue;
                    }
                    _ => byte,
                }
            } else if byte == self.delimiter {
                return Field {
                    raw: start..cursor.at - 1,
                    delimited: true,
                    quoted,
                    bare_cr,
                };
            } else if byte == quote {
                in_quote = true;
                quoted = true;
                continue;
            } else {
                bare_cr |= byte == b'\r';
                byte
            };
            value.push(&[decoded]);
        }
        Field {
            raw: start..cursor.at,
            delimited: false,
            quoted,
            bare_cr,
        }
    }

    /// Writes `value` (in the client encoding) as a text-format field, as
    /// `CopyAttributeOutText` does.
    pub(crate) fn put_text(&self, out: &mut Vec<u8>, value: &[u8]) {
        let mut out = Sink(Some(out));
        let mut cursor = self.cursor(value, 0);
        while let Some(byte) = cursor.next_byte(&mut out) {
            let escaped = match byte {
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x0b => b'v',
                b'\\' => b'\\',
                _ if byte == self.delimiter => byte,
                _ => {
                    out.push(&[byte]);
                    continue;
                }
            };
            out.push(&[b'\\', escaped]);
        }
    }

    /// Writes `value` (in the client encoding) as a CSV field, as
    /// `CopyAttributeOutCSV` does: quoted when `force_quote`, when it
    /// could be read as NULL (`null`, in the client encoding), when it is
    /// `\.` alone on its line, or when it holds the delimiter, the quote
    /// or a line break; quotes and escapes inside are escaped.
    pub(crate) fn put_csv(
        &self,
        out: &mut Vec<u8>,
        value: &[u8],
        force_quote: bool,
        null: &[u8],
        alone: bool,
    ) {
        let Format::Csv { quote, escape } = self.format else {
            return self.put_text(out, value);
        };
        let special = |unit: Unit<'_>| matches!(unit, Unit::Byte(b) if b == self.delimiter || b == quote || b == b'\n' || b == b'\r');
        let needs_quotes = force_quote
            || value == null
            || (alone && value == b"\\.")
            || self.cursor(value, 0).any(special);
        if !needs_quotes {
            return out.extend_from_slice(value);
        }
        let mut out = Sink(Some(out));
        out.push(&[quote]);
        let mut cursor = self.cursor(value, 0);
        while let Some(byte) = cursor.next_byte(&mut out) {
            if byte == quote || byte == escape {
                out.push(&[escape]);
            }
            out.push(&[byte]);
        }
        out.push(&[quote]);
    }
}

/// Where the bytes of a value go, if anywhere.
struct Sink<'v>(Option<&'v mut Vec<u8>>);

impl Sink<'_> {
    fn push(&mut self, bytes: &[u8]) {
        if let Some(out) = self.0.as_deref_mut() {
            out.extend_from_slice(bytes);
        }
    }
}

/// What a [`Cursor`] steps over.
#[derive(Clone, Copy)]
enum Unit<'b> {
    /// A byte to look at.
    Byte(u8),
    /// A multibyte character, none of whose bytes is a delimiter, quote or
    /// escape.
    Char(&'b [u8]),
}

/// A position in client bytes that moves a character at a time. Rows
/// have been checked for invalid and incomplete characters before they
/// are split, so those are taken a byte at a time.
struct Cursor<'b> {
    bytes: &'b [u8],
    at: usize,
    encoding: ClientEncoding,
}

impl Cursor<'_> {
    /// The next byte to look at; the multibyte characters before it are
    /// pushed to `sink` as they are.
    fn next_byte(&mut self, sink: &mut Sink<'_>) -> Option<u8> {
        loop {
            match self.next()? {
                Unit::Byte(byte) => return Some(byte),
                Unit::Char(char) => sink.push(char),
            }
        }
    }
}

impl<'b> Iterator for Cursor<'b> {
    type Item = Unit<'b>;

    fn next(&mut self) -> Option<Unit<'b>> {
        let rest = self.bytes.get(self.at..).filter(|rest| !rest.is_empty())?;
        match self.encoding.step(rest) {
            Step::Char(len) => {
                self.at += len;
                Some(Unit::Char(&rest[..len]))
            }
            _ => {
                self.at += 1;
                Some(Unit::Byte(rest[0]))
            }
        }
    }
}

/// The byte a text-format escape stands for, and how many bytes of
/// `after` (the bytes after the backslash, at least one) it takes.
fn unescape(after: &[u8]) -> (u8, usize) {
    let first = after[0];
    let rest = &after[1..];
    let is_octal = |byte: &&u8| (b'0'..=b'7').contains(*byte);
    match first {
        b'0'..=b'7' => {
            let len = 1 + rest.iter().take(2).take_while(is_octal).count();
            (number(&after[..len], 8), len)
        }
        b'x' if rest.first().is_some_and(u8::is_ascii_hexdigit) => {
            let digits = rest
                .iter()
                .take(2)
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            (number(&rest[..digits], 16), 1 + digits)
        }
        b'b' => (0x08, 1),
        b'f' => (0x0c, 1),
        b'n' => (b'\n', 1),
        b'r' => (b'\r', 1),
        b't' => (b'\t', 1),
        b'v' => (0x0b, 1),
        other => (other, 1),
    }
}

/// The value of checked digits, keeping the low 8 bits as PostgreSQL does.
fn number(digits: &[u8], radix: u32) -> u8 {
    let value = digits.iter().fold(0, |value, &digit| {
        value * radix + char::from(digit).to_digit(radix).unwrap_or(0)
    });
    (value & 0xff) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(format: &str, encoding: &str) -> Syntax {
        let sql = format!("COPY t TO STDOUT (FORMAT {format})");
        let policy = crate::protect::policy::Policy::default();
        let options = crate::sql::copy_out_options(&sql, &policy, &crate::sql::NoCatalog).remove(0);
        Syntax::of(&options, ClientEncoding::from_pg_name(encoding)).unwrap()
    }

    /// The fields of a row, as written.
    fn raw_fields(syntax: &Syntax, row: &[u8]) -> Vec<Vec<u8>> {
        let mut fields = Vec::new();
        let mut start = 0;
        loop {
            let field = syntax.field(row, start, None);
            fields.push(row[field.raw.clone()].to_vec());
            if !field.delimited {
                return fields;
            }
            start = field.raw.end + 1;
        }
    }

    #[test]
    fn splits_csv_fields_keeping_quotes() {
        let csv = syntax("csv", "UTF8");
        let got = raw_fields(&csv, b"a,\"b,c\",pgv1:x");
        assert_eq!(got, [&b"a"[..], b"\"b,c\"", b"pgv1:x"]);
        let text = syntax("text", "UTF8");
        assert_eq!(raw_fields(&text, b"a\tb\t"), [&b"a"[..], b"b", b""]);
    }

    #[test]
    fn trail_bytes_are_not_escapes_delimiters_or_quotes() {
        let mut text = syntax("text", "BIG5");
        text.delimiter = b'|';
        // 許 is B3 5C, 四 is A5 7C.
        let row = b"\xb3\x5c|\xa5\x7c\\|x|\\\xb3\x5c";
        assert_eq!(
            raw_fields(&text, row),
            [&b"\xb3\x5c"[..], b"\xa5\x7c\\|x", b"\\\xb3\x5c"]
        );
        let mut value = Vec::new();
        let raw = text.encoding.decode(b"\\\xb3\x5c\\x41").unwrap();
        text.value(&raw, &mut value);
        assert_eq!(value, "許A".as_bytes());
        let mut out = Vec::new();
        text.put_text(&mut out, b"\xb3\x5c\\|\t");
        assert_eq!(out, b"\xb3\x5c\\\\\\|\\t");
        let mut csv = syntax("csv", "GBK");
        csv.format = Format::Csv {
            quote: b'\\',
            escape: b'\\',
        };
        // 乗 is 81 5C.
        assert_eq!(
            raw_fields(&csv, b"\x81\x5c,\\a,b\\"),
            [&b"\x81\x5c"[..], b"\\a,b\\"]
        );
        let mut out = Vec::new();
        csv.put_csv(&mut out, b"\x81\x5c", false, b"", false);
        assert_eq!(out, b"\x81\x5c", "no quotes needed");
        let mut out = Vec::new();
        csv.put_csv(&mut out, b"\x81\x5c\\", true, b"", false);
        assert_eq!(out, b"\\\x81\x5c\\\\\\");
    }

    #[test]
    fn escapes_for_each_format() {
        let text = syntax("text", "UTF8");
        let mut out = Vec::new();
        text.put_text(&mut out, b"a\tb\\c\nd\x08");
        assert_eq!(out, b"a\\tb\\\\c\\nd\\b");
        let csv = syntax("csv", "UTF8");
        let mut out = Vec::new();
        csv.put_csv(&mut out, b"Smith, \"Al\"", false, b"", false);
        assert_eq!(out, b"\"Smith, \"\"Al\"\"\"");
        let mut out = Vec::new();
        csv.put_csv(&mut out, b"", false, b"", false);
        assert_eq!(out, b"\"\"", "an empty string is not NULL");
        let mut out = Vec::new();
        csv.put_csv(&mut out, b"\\.", false, b"", true);
        assert_eq!(out, b"\"\\.\"", "not the end-of-data marker");
        let mut out = Vec::new();
        csv.put_csv(&mut out, b"plain", true, b"", false);
        assert_eq!(out, b"\"plain\"", "FORCE_QUOTE");
    }
}
