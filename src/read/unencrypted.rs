//! Values of a protected column that are not stored as ciphertext pgveil
//! can open: rows written before pgveil was deployed, written around it
//! (a direct connection without guards), or values merely shaped like
//! ciphertext (a forged header, a retired key). Each is taken for the
//! plaintext it may be and revealed to the reader exactly as the column's
//! rule says: as it is where plaintext is granted, otherwise masked, as a
//! pseudonym (the same one its encrypted twin would get), NULL, or an
//! error. Its read is recorded under the column, marked as not stored
//! encrypted, and the first one of each column is logged, so that the
//! operator knows rows remain to be encrypted.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use tracing::warn;
use zeroize::Zeroizing;

use crate::protect::crypto::Form;
use crate::protect::policy::{Action, ColumnPolicy, Mask};
use crate::protect::protection::Protection;
use crate::read::revealed::Revealed;
use crate::read::shape::Field;
use crate::text::bytea;
use crate::text::encoding::ClientEncoding;

/// How a value not stored encrypted is written in a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// Text in the reader's encoding (a text column, either format).
    Text,
    /// A `bytea` value: its bytes in binary format, else its text form.
    Bytea { binary: bool },
}

impl From<Field<'_>> for Stored {
    fn from(field: Field<'_>) -> Self {
        if field.bytea {
            Stored::Bytea {
                binary: field.binary,
            }
        } else {
            Stored::Text
        }
    }
}

impl From<Form> for Stored {
    fn from(form: Form) -> Self {
        match form {
            Form::Text => Stored::Text,
            Form::ByteaHex | Form::ByteaEscape => Stored::Bytea { binary: false },
            Form::Binary => Stored::Bytea { binary: true },
        }
    }
}

/// What a reader in `encoding` sees of `value`, stored in protected
/// `column` but not as ciphertext pgveil can open, under `action`, which
/// the revealer admitted and counted
/// (`crate::read::reveal::Revealer::reveal_unencrypted`): the value as it
/// is where plaintext is granted, else what is shown, written over `out`.
pub(super) fn reveal<'o>(
    veil: &Protection,
    encoding: ClientEncoding,
    column: &ColumnPolicy,
    action: Action,
    value: &[u8],
    stored: Stored,
    out: &'o mut Vec<u8>,
) -> Revealed<'o> {
    if action == Action::Plaintext {
        return Revealed::Keep;
    }
    // The plaintext as encryption would have taken it: UTF-8 text, or
    // a `bytea` value's bytes.
    let plaintext = Zeroizing::new(match stored {
        Stored::Text => match encoding.decode(value) {
            Some(text) => text.into_owned().into_bytes(),
            None => String::from_utf8_lossy(value).into_owned().into_bytes(),
        },
        Stored::Bytea { binary: true } => value.to_vec(),
        Stored::Bytea { binary: false } => bytea::decode(value).unwrap_or_else(|| value.to_vec()),
    });
    let shown = Zeroizing::new(match (action, stored) {
        (Action::Masked, Stored::Text) => {
            let text = String::from_utf8_lossy(&plaintext);
            encoding.encode(&column.mask.apply(&text)).into_owned()
        }
        (Action::Masked, Stored::Bytea { .. }) => Mask::Redact.apply("").into_bytes(),
        _ => match veil.keyring.pseudonym(&column.domain, &plaintext) {
            Ok(token) => token.into_bytes(),
            Err(_) => return Revealed::Null,
        },
    });
    out.clear();
    match stored {
        Stored::Bytea { binary: false } if value.starts_with(b"\\x") => {
            bytea::write_hex(&shown, out)
        }
        Stored::Bytea { binary: false } => bytea::write_escape(&shown, out),
        Stored::Text | Stored::Bytea { binary: true } => out.extend_from_slice(&shown),
    }
    Revealed::Value(out)
}

/// Logs, once per process for each column, that it holds values not
/// stored encrypted.
pub(super) fn warn_once(column: &ColumnPolicy) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let name = column.qualified_name();
    let mut warned = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if warned.insert(name.clone()) {
        warn!(
            column = %name,
            "protected column holds values not stored encrypted (written before pgveil or \
             around it): they are revealed by the column's rule and recorded as unencrypted \
             in the audit log; encrypt them (UPDATE through pgveil) and validate the guard"
        );
    }
}
