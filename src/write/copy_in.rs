//! Encrypts the protected columns of the data of a `COPY ... FROM STDIN`.
//!
//! When the rewriter reports a statement as [`CopyIn`], the relay passes
//! the payload of every `CopyData` message the client sends through a
//! [`CopyEncryptor`], and what it returns on to the server. The encryptor
//! splits the stream into rows and fields exactly as PostgreSQL's `COPY`
//! does (text, CSV and binary formats), decodes each protected field to
//! its plaintext, and writes the ciphertext in its place; everything else,
//! line terminators included, is copied byte for byte. Rows may span
//! `CopyData` messages: the incomplete tail is kept until its end arrives
//! (at most [`MAX_ROW`] bytes).
//!
//! **Text format.** Rows end with an unescaped `\n` or `\r\n`; fields are
//! split on the delimiter; a backslash escapes the next character (`\n`,
//! `\t`, octal `\123`, hex `\x41`, any other `\c` is `c`; a backslash
//! before a line break makes the break data). A field equal to the NULL
//! string before decoding is NULL and stays NULL. A line holding only
//! `\.` ends the data: it is passed on, and anything after it is dropped,
//! as PostgreSQL ignores it. `\.` anywhere else is refused, as
//! PostgreSQL 18 does (older servers would end the data there).
//!
//! **CSV format.** Quotes may start anywhere in a field and hide
//! delimiters and line breaks; inside quotes the escape character (the
//! quote by default) escapes a quote or itself. An unquoted field equal to
//! the NULL string is NULL; a quoted one never is. Ciphertext is written
//! unquoted. With `HEADER`, the first line is passed on unchanged (also in
//! text format). An unquoted line `\.` ends the data as in text format.
//!
//! **`bytea` columns.** In text and CSV the decoded field is `bytea` text
//! input (`\x0102`, written `\\x0102` in text format, or the escape
//! form); its plaintext is the bytes it stands for, and the ciphertext is
//! written as `bytea` hex input, escaped for the format.
//!
//! **Binary format.** The header is passed on; each tuple
//! (`copy_binary`) must have as many fields as the COPY has columns, and
//! a protected field's bytes are its plaintext (text in the client
//! encoding, converted to UTF-8, or a `bytea`'s bytes as they are); the
//! ciphertext replaces them with its length. Data after the trailer, or a
//! tuple left unfinished at CopyDone, fails the COPY, as PostgreSQL would.
//! For binary data, "line" in messages counts tuples.
//!
//! **Failing closed.** A row with another number of fields than the COPY
//! has columns, a protected text value that is not valid text in the
//! client encoding (or, unescaped, not UTF-8) or holds a literal carriage
//! return (a line terminator of another style, where PostgreSQL would
//! split rows differently), a `bytea` value that is not valid `bytea`
//! input, a quoted field left open at the end, or a row over [`MAX_ROW`]
//! is an error: nothing protected may reach the server unencrypted.
//! Errors start with `pgveil:`, name the column and the line (counted
//! from 1, as the line the row starts on), and never contain the data.
//! After an error the COPY must be abandoned.
//!
//! **Client encodings.** Rows are split in the client's encoding, stepping
//! over whole characters (`copy_syntax`), so that a byte of a multibyte
//! character (the `5C` of 「許」 in BIG5) is never taken for a backslash, a
//! delimiter or a quote; a byte sequence that is not a character of the
//! encoding is refused. A protected value is converted to UTF-8 before it
//! is unescaped and encrypted, as PostgreSQL converts the data before it
//! parses it: a GBK writer and a UTF-8 reader see the same name.
//!
//! **FORCE_NOT_NULL, FORCE_NULL** (CSV) are honoured as PostgreSQL does:
//! the unquoted NULL string of a FORCE_NOT_NULL column is a value and is
//! encrypted; a quoted value equal to the NULL string in a FORCE_NULL
//! column is NULL and is passed on as written.

mod binary;
mod text;

use std::borrow::Cow;

use thiserror::Error;

use crate::protect::policy::{ColumnPolicy, Policy};
use crate::sql::{ColumnRefId, CopyIn, EncryptError, Encryptor, Storage};
use crate::text::encoding::ClientEncoding;
use crate::wire::copy::binary::FormatError;
use crate::wire::copy::options::CopyFormat;
use crate::wire::sqlstate;

/// The longest row, line terminator included, that pgveil buffers.
pub(super) const MAX_ROW: usize = 64 << 20;

/// Why the COPY data cannot be encrypted, as the client will read it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{message}")]
pub(super) struct CopyError {
    pub sqlstate: &'static str,
    /// Starts with `pgveil:`; never contains data values.
    pub message: String,
}

/// What is wrong with the COPY or its data.
#[derive(Debug, Error)]
enum Problem {
    #[error("pgveil: COPY option {0} must be a single one-byte character")]
    NotOneByte(&'static str),
    #[error(
        "pgveil: COPY into a table with protected column {0} cannot be read in the \
         encoding of its data (the session's client encoding or the COPY's ENCODING \
         option); use UTF8, GBK, GB18030, BIG5, SJIS, UHC, an EUC or a single-byte encoding"
    )]
    Encoding(ColumnRefId),
    #[error(
        "pgveil: COPY option {option} cannot be {value:?} when the table has protected \
         columns: it ends lines or can appear in ciphertext"
    )]
    Unusable { option: &'static str, value: char },
    #[error("pgveil: column {0} is protected but its policy is missing")]
    NoPolicy(ColumnRefId),
    #[error("pgveil: line {line} of the COPY data has {found} fields, expected {expected}")]
    FieldCount {
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("pgveil: line {line} of the COPY data is longer than {limit} bytes")]
    RowTooLong { line: usize, limit: usize },
    #[error("pgveil: line {0} of the COPY data ends inside a quoted CSV field")]
    UnterminatedQuote(usize),
    #[error(
        "pgveil: line {0} of the COPY data has the end-of-data marker \\. inside a row; \
         it must be alone on its line"
    )]
    MisplacedEndMarker(usize),
    #[error(
        "pgveil: line {line} of the COPY data has a literal carriage return in the value \
         of column {column}; write it as \\r in text format, or quote the value in CSV"
    )]
    CarriageReturn { line: usize, column: String },
    #[error(
        "pgveil: line {line} of the COPY data has a value for column {column} that is not \
         valid text in the client encoding"
    )]
    NotText { line: usize, column: String },
    #[error(
        "pgveil: line {0} of the COPY data has a byte sequence that is not valid in the \
         client encoding"
    )]
    BadCharacter(usize),
    #[error(
        "pgveil: line {line} of the COPY data has a value for bytea column {column} that \
         is not valid bytea input"
    )]
    NotBytea { line: usize, column: String },
    #[error("pgveil: {0}")]
    Binary(FormatError),
    #[error("pgveil: line {0} of the binary COPY data ends before its last field")]
    UnfinishedTuple(usize),
    #[error(
        "pgveil: cannot encrypt the value of column {column} on line {line} of the COPY \
         data: {error}"
    )]
    Encrypt {
        line: usize,
        column: String,
        error: EncryptError,
    },
    #[error(
        "pgveil: the ciphertext for column {column} on line {line} of the COPY data \
         cannot be written as a COPY field"
    )]
    BadCiphertext { line: usize, column: String },
}

impl From<Problem> for CopyError {
    fn from(problem: Problem) -> Self {
        let sqlstate = match problem {
            Problem::NotOneByte(_) | Problem::Unusable { .. } | Problem::Encoding(_) => {
                sqlstate::FEATURE_NOT_SUPPORTED
            }
            Problem::FieldCount { .. }
            | Problem::UnterminatedQuote(_)
            | Problem::MisplacedEndMarker(_)
            | Problem::CarriageReturn { .. }
            | Problem::Binary(_)
            | Problem::UnfinishedTuple(_) => sqlstate::BAD_COPY_FILE_FORMAT,
            Problem::NotText { .. } | Problem::BadCharacter(_) => {
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE
            }
            Problem::NotBytea { .. } => sqlstate::INVALID_TEXT_REPRESENTATION,
            Problem::RowTooLong { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            Problem::NoPolicy(_) | Problem::Encrypt { .. } | Problem::BadCiphertext { .. } => {
                sqlstate::INTERNAL_ERROR
            }
        };
        CopyError {
            sqlstate,
            message: problem.to_string(),
        }
    }
}

/// Encrypts the protected fields of one COPY data stream.
pub(super) enum CopyEncryptor<'a> {
    /// Text or CSV.
    Rows(text::RowEncryptor<'a>),
    Binary(binary::TupleEncryptor<'a>),
}

impl<'a> CopyEncryptor<'a> {
    /// An encryptor for the data of `copy`, sent in `encoding`.
    pub(super) fn new(
        copy: &CopyIn,
        policy: &'a Policy,
        enc: &'a dyn Encryptor,
        encoding: ClientEncoding,
    ) -> Result<Self, CopyError> {
        // Text and CSV data is in the COPY's own ENCODING, if it names
        // one; binary fields are converted from the client encoding
        // (`textrecv`) whatever it says.
        let encoding = match (&copy.options.encoding, copy.options.format) {
            (Some(name), CopyFormat::Text | CopyFormat::Csv) => ClientEncoding::from_pg_name(name),
            _ => encoding,
        };
        if !encoding.delimits_characters() {
            return Err(Problem::Encoding(copy.first_protected()).into());
        }
        let values = Values::new(copy, policy, enc, encoding)?;
        Ok(match copy.options.format {
            CopyFormat::Binary => CopyEncryptor::Binary(binary::TupleEncryptor::new(values)),
            CopyFormat::Text | CopyFormat::Csv => {
                CopyEncryptor::Rows(text::RowEncryptor::new(copy, values)?)
            }
        })
    }

    /// Consumes the payload of one CopyData message; returns the bytes to
    /// send on (zero or more whole rows).
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, CopyError> {
        match self {
            CopyEncryptor::Rows(rows) => rows.feed(data),
            CopyEncryptor::Binary(tuples) => tuples.feed(data).map_err(Into::into),
        }
    }

    /// At CopyDone: what is still to send.
    pub(super) fn finish(&mut self) -> Result<Vec<u8>, CopyError> {
        match self {
            CopyEncryptor::Rows(rows) => rows.finish(),
            CopyEncryptor::Binary(tuples) => tuples.finish().map_err(Into::into),
        }
    }
}

/// The protected columns of a COPY's data, and how their values are
/// encrypted.
struct Values<'a> {
    /// The policy and storage of each column of the data, `None` if
    /// unprotected.
    columns: Vec<Option<(&'a ColumnPolicy, Storage)>>,
    enc: &'a dyn Encryptor,
    /// The client encoding the data is in.
    encoding: ClientEncoding,
}

impl<'a> Values<'a> {
    fn new(
        copy: &CopyIn,
        policy: &'a Policy,
        enc: &'a dyn Encryptor,
        encoding: ClientEncoding,
    ) -> Result<Self, Problem> {
        let columns = copy
            .columns
            .iter()
            .map(|target| {
                target
                    .as_ref()
                    .map(|target| Ok((column_policy(policy, &target.column)?, target.storage)))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Values {
            columns,
            enc,
            encoding,
        })
    }

    /// The protected column at `index` of the data, if it is one.
    fn column(&self, index: usize) -> Option<(&'a ColumnPolicy, Storage)> {
        self.columns.get(index).copied().flatten()
    }

    /// Text of `column` on `line` of the data, as written in the client
    /// encoding, converted to UTF-8.
    fn decode<'b>(
        &self,
        written: &'b [u8],
        column: &ColumnPolicy,
        line: usize,
    ) -> Result<Cow<'b, str>, Problem> {
        self.encoding
            .decode(written)
            .ok_or_else(|| Problem::NotText {
                line,
                column: column.qualified_name(),
            })
    }

    /// The ciphertext of `plain` for `column`, on `line` of the data: the
    /// text envelope's bytes, or the binary envelope. A text plaintext
    /// must be UTF-8 without NUL.
    fn encrypt(
        &self,
        column: &ColumnPolicy,
        storage: Storage,
        plain: &[u8],
        line: usize,
    ) -> Result<Vec<u8>, Problem> {
        let name = || column.qualified_name();
        let encrypt_error = |error| Problem::Encrypt {
            line,
            column: name(),
            error,
        };
        if storage == Storage::Bytea {
            return self.enc.encrypt_bytes(column, plain).map_err(encrypt_error);
        }
        let plaintext = std::str::from_utf8(plain)
            .ok()
            .filter(|text| !text.contains('\0'))
            .ok_or_else(|| Problem::NotText {
                line,
                column: name(),
            })?;
        let ciphertext = self.enc.encrypt(column, plaintext).map_err(encrypt_error)?;
        if !ciphertext.bytes().all(is_cipher_byte) {
            return Err(Problem::BadCiphertext {
                line,
                column: name(),
            });
        }
        Ok(ciphertext.into_bytes())
    }
}

/// Refuses a row longer than `max_row` starting on `line`.
fn check_length(len: usize, max_row: usize, line: usize) -> Result<(), Problem> {
    if len > max_row {
        return Err(Problem::RowTooLong {
            line,
            limit: max_row,
        });
    }
    Ok(())
}

fn column_policy<'a>(policy: &'a Policy, id: &ColumnRefId) -> Result<&'a ColumnPolicy, Problem> {
    policy
        .column(&id.schema, &id.table, &id.column)
        .ok_or_else(|| Problem::NoPolicy(id.clone()))
}

/// Whether a byte belongs to the ciphertext alphabet `[A-Za-z0-9_:-]`.
fn is_cipher_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b':' | b'-')
}

#[cfg(test)]
mod tests;
