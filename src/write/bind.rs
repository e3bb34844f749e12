//! Bind parameters: the values a Bind sends at the parameter positions
//! of protected columns are encrypted, each in the format the client sent
//! it in.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protect::policy::ColumnPolicy;
use crate::protect::protection::Protection;
use crate::sql::{self, EncryptError, Encryptor, ParamSlot, Refusal, Storage};
use crate::text::bytea;
use crate::text::encoding::ClientEncoding;
use crate::wire::messages::bind::BindMessage;
use crate::wire::messages::data_row::put_field;
use crate::wire::tags::frontend;
use crate::wire::{reply, sqlstate};

/// A Bind pgveil cannot read, where it must encrypt or follow its values.
pub(super) fn malformed_bind() -> Refusal {
    Refusal {
        sqlstate: sqlstate::PROTOCOL_VIOLATION,
        message: "pgveil: malformed Bind message".into(),
    }
}

/// Rebuilds a Bind with the values at `slots` encrypted, each in the
/// format the client sent it in. Public for the benchmarks: it runs on
/// every execution of a prepared statement that writes protected columns.
pub fn encrypt_bind(
    veil: &Protection,
    encoding: ClientEncoding,
    frame: &[u8],
    slots: &[ParamSlot],
) -> Result<Bytes, Refusal> {
    let bind = BindMessage::read(frame).ok_or_else(malformed_bind)?;
    let mut out = BytesMut::with_capacity(frame.len() + 64 * slots.len());
    out.put_slice(bind.head);
    out.put_u16(bind.formats_count);
    out.put_slice(bind.formats);
    out.put_u16(bind.values.len() as u16);
    for (i, &value) in bind.values.iter().enumerate() {
        let slot = slots.iter().find(|s| s.number == i + 1);
        match (value, slot) {
            (Some(value), Some(slot)) => {
                let binary = bind.binary(i);
                let encrypted = if slot.array {
                    encrypt_array_param(veil, encoding, slot, value, binary)?
                } else {
                    encrypt_param(veil, encoding, slot, value, binary)?
                };
                put_field(&mut out, Some(&encrypted));
            }
            (value, _) => put_field(&mut out, value),
        }
    }
    out.put_slice(bind.rest);
    Ok(reply::frame_of(frontend::BIND, &out))
}

/// An array parameter for a protected text column, with each element
/// encrypted, in the format it came in. (Arrays for `bytea` columns are
/// refused when the statement is analysed.)
fn encrypt_array_param(
    veil: &Protection,
    encoding: ClientEncoding,
    slot: &ParamSlot,
    value: &[u8],
    binary: bool,
) -> Result<Vec<u8>, Refusal> {
    let encrypted = if binary {
        sql::array::map_binary(value, |bytes| {
            encrypt_text_param(veil, encoding, slot, bytes).map_err(|r| r.message)
        })
    } else {
        let text = encoding
            .decode(value)
            .ok_or_else(|| undecodable_value(slot))?;
        sql::array::map_text(&text, |element| {
            encrypt_value(veil, slot, element).map_err(|r| r.message)
        })
        .map(|array| encoding.encode(&array).into_owned())
    };
    encrypted.map_err(|e| match e {
        sql::array::ArrayError::Element(message) => Refusal {
            sqlstate: sqlstate::INTERNAL_ERROR,
            message,
        },
        error => Refusal {
            sqlstate: sqlstate::INVALID_TEXT_REPRESENTATION,
            message: format!(
                "pgveil: cannot encrypt the array for column {}: {error}",
                slot.target
            ),
        },
    })
}

fn undecodable_value(slot: &ParamSlot) -> Refusal {
    Refusal {
        sqlstate: sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        message: format!(
            "pgveil: the value for column {} is not valid in the client encoding",
            slot.target
        ),
    }
}

/// The ciphertext of one parameter value, in its format: for a text
/// column the text envelope; for a `bytea` column the binary envelope of
/// the value's bytes (binary format) or of the bytes its text input
/// stands for, sent as `\x` and hex (text format).
fn encrypt_param(
    veil: &Protection,
    encoding: ClientEncoding,
    slot: &ParamSlot,
    value: &[u8],
    binary: bool,
) -> Result<Vec<u8>, Refusal> {
    match slot.target.storage {
        Storage::Text => encrypt_text_param(veil, encoding, slot, value).map(String::into_bytes),
        Storage::Bytea if binary => encrypt_bytes(veil, slot, value),
        Storage::Bytea => {
            let text = encoding
                .decode(value)
                .ok_or_else(|| undecodable_value(slot))?;
            let bytes = bytea::decode(text.as_bytes()).ok_or_else(|| Refusal {
                sqlstate: sqlstate::INVALID_TEXT_REPRESENTATION,
                message: format!(
                    "pgveil: the value for bytea column {} is not valid bytea input",
                    slot.target
                ),
            })?;
            encrypt_bytes(veil, slot, &bytes).map(|ciphertext| bytea::hex(&ciphertext))
        }
    }
}

/// The text envelope of a parameter value (text in the client encoding).
fn encrypt_text_param(
    veil: &Protection,
    encoding: ClientEncoding,
    slot: &ParamSlot,
    value: &[u8],
) -> Result<String, Refusal> {
    let text = encoding
        .decode(value)
        .ok_or_else(|| undecodable_value(slot))?;
    encrypt_value(veil, slot, &text)
}

/// The ciphertext of a parameter's value (decoded text) for its column.
fn encrypt_value(veil: &Protection, slot: &ParamSlot, text: &str) -> Result<String, Refusal> {
    let column = slot_column(veil, slot)?;
    veil.encrypt(column, text)
        .map_err(|e| cannot_encrypt(slot, e))
}

/// The binary envelope of `bytes` for a `bytea` parameter's column.
fn encrypt_bytes(veil: &Protection, slot: &ParamSlot, bytes: &[u8]) -> Result<Vec<u8>, Refusal> {
    let column = slot_column(veil, slot)?;
    veil.encrypt_bytes(column, bytes)
        .map_err(|e| cannot_encrypt(slot, e))
}

fn slot_column<'v>(veil: &'v Protection, slot: &ParamSlot) -> Result<&'v ColumnPolicy, Refusal> {
    let c = &slot.target.column;
    veil.policy
        .column(&c.schema, &c.table, &c.column)
        .ok_or_else(|| Refusal {
            sqlstate: sqlstate::INTERNAL_ERROR,
            message: format!("pgveil: no policy for column {c}"),
        })
}

fn cannot_encrypt(slot: &ParamSlot, e: EncryptError) -> Refusal {
    Refusal {
        sqlstate: sqlstate::INTERNAL_ERROR,
        message: format!(
            "pgveil: cannot encrypt a value for column {}: {}",
            slot.target, e.0
        ),
    }
}
