//! Reveals protected values in results, as the policy allows the reader.
//!
//! Every field of every `DataRow` is checked for pgveil's ciphertext (a
//! prefix comparison; see `crypto::looks_encrypted_text`). This finds
//! protected values wherever they appear: plain column references, aliases,
//! views, `COALESCE`, `UNION`, CTEs, cursors, `RETURNING`, and prepared
//! statements whose rows arrive without a new RowDescription. The
//! ciphertext names its key, the key its domain, the domain its columns,
//! and the columns' rules decide: plaintext, a mask, a pseudonym, NULL, or
//! an error. A row with no ciphertext is forwarded untouched and uncopied.
//! A value that looks like ciphertext but does not decrypt is forwarded as
//! it is: still ciphertext, never plaintext.

use bytes::{BufMut, Bytes, BytesMut};
use tracing::warn;

use crate::crypto::{self, Envelope};
use crate::policy::Action;
use crate::protocol::reply::{self, Severity};
use crate::veil::Veil;

/// SQLSTATE for a value the reader may not see: `insufficient_privilege`.
const DENIED: &str = "42501";

/// What a reader gets in place of one field.
enum Field {
    Keep,
    Replace(Vec<u8>),
    Null,
    Deny(String),
}

/// The reader's identity, as the policy sees it.
pub struct Reader<'a> {
    pub roles: &'a [String],
    pub purpose: Option<&'a str>,
}

/// Rewrites one DataRow frame for `reader`. `Err` carries the ErrorResponse
/// to send instead when a value is denied.
pub fn data_row(veil: &Veil, reader: &Reader<'_>, frame: Bytes) -> Result<Bytes, Bytes> {
    if !Fields::of(&frame).flatten().any(looks_encrypted) {
        return Ok(frame);
    }
    let fields: Vec<Option<&[u8]>> = Fields::of(&frame).collect();
    if fields.len() != Fields::count(&frame) {
        return Ok(frame);
    }
    let mut body = BytesMut::with_capacity(frame.len());
    body.put_u16(fields.len() as u16);
    for field in &fields {
        match field.map_or(Field::Keep, |value| reveal(veil, reader, value)) {
            Field::Keep => put_field(&mut body, *field),
            Field::Replace(value) => put_field(&mut body, Some(&value)),
            Field::Null => put_field(&mut body, None),
            Field::Deny(column) => {
                let message = format!("pgveil: access to column {column} is denied by policy");
                return Err(reply::error(Severity::Error, DENIED, &message));
            }
        }
    }
    Ok(reply::frame_of(b'D', &body))
}

fn looks_encrypted(field: &[u8]) -> bool {
    crypto::looks_encrypted_text(field) || field.starts_with(crypto::MAGIC)
}

fn reveal(veil: &Veil, reader: &Reader<'_>, value: &[u8]) -> Field {
    let Some(envelope) = parse(value) else {
        return Field::Keep;
    };
    let Some((action, column)) = veil.decide(envelope.key_ref(), reader.roles, reader.purpose)
    else {
        return Field::Keep;
    };
    let domain = column.domain.as_str();
    let plaintext = match action {
        Action::Null => return Field::Null,
        Action::Deny => return Field::Deny(column.qualified_name()),
        _ => match veil.keyring.decrypt(domain, &envelope) {
            Ok(plaintext) => plaintext,
            Err(e) => {
                warn!(column = %column.qualified_name(), "ciphertext does not decrypt: {e}");
                return Field::Keep;
            }
        },
    };
    match action {
        Action::Plaintext => Field::Replace(plaintext.to_vec()),
        Action::Masked => {
            let text = String::from_utf8_lossy(&plaintext);
            Field::Replace(column.mask.apply(&text).into_bytes())
        }
        Action::Pseudonym => match veil.keyring.pseudonym(domain, &plaintext) {
            Ok(token) => Field::Replace(token.into_bytes()),
            Err(_) => Field::Null,
        },
        Action::Null | Action::Deny => unreachable!("handled before decryption"),
    }
}

fn parse(value: &[u8]) -> Option<Envelope> {
    let parsed = if value.starts_with(crypto::MAGIC) {
        crypto::parse_bytes(value)
    } else {
        crypto::parse_text(value)
    };
    parsed.ok().flatten()
}

/// The fields of a DataRow frame, `None` for SQL NULL. A malformed frame
/// ends the iteration early; it is then passed on as PostgreSQL wrote it,
/// for the client to judge.
struct Fields<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Fields<'a> {
    fn of(frame: &'a [u8]) -> Self {
        Fields {
            rest: frame.get(7..).unwrap_or_default(),
            left: Self::count(frame),
        }
    }

    /// The field count the frame announces.
    fn count(frame: &[u8]) -> usize {
        frame
            .get(5..7)
            .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]) as usize)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (len, tail) = self.rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        self.left -= 1;
        if len < 0 {
            self.rest = tail;
            return Some(None);
        }
        let (value, tail) = tail.split_at_checked(len as usize)?;
        self.rest = tail;
        Some(Some(value))
    }
}

fn put_field(body: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(value) => {
            body.put_i32(value.len() as i32);
            body.put_slice(value);
        }
        None => body.put_i32(-1),
    }
}
