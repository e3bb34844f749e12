//! Errors the server raises, as the client sees them: pgveil's own
//! refusals, which it has the server raise marked, without the marker and
//! the context of the statement that raised them; and violations of a
//! ciphertext guard without the values they quote. Other errors pass as
//! they are.

use bytes::Bytes;

use crate::wire::reply::{self, Severity};
use crate::wire::sqlstate::INTERNAL_ERROR;
use crate::wire::tags::error_field;

/// The ErrorResponse field that carries the marker of pgveil's refusals.
pub(super) const REFUSAL_MARKER_FIELD: u8 = error_field::SCHEMA;

/// pgveil's refusal as the client should see it: severity, SQLSTATE and
/// message, without the marker and the PL/pgSQL context of the statement
/// that raised it.
pub(super) fn refusal_error(frame: &[u8]) -> Bytes {
    let field =
        |code| reply::error_field(frame, code).map(|v| String::from_utf8_lossy(v).into_owned());
    let code = field(error_field::CODE).unwrap_or_else(|| INTERNAL_ERROR.into());
    let message = field(error_field::MESSAGE).unwrap_or_default();
    reply::error(Severity::Error, &code, &message)
}

/// An error the server raised for a violated ciphertext guard
/// ([`crate::protect::guard`]) without the fields that may quote the row or the
/// statement (`DETAIL: Failing row contains (...)`, the context and the
/// internal query): the values are plaintext the client sent, and client
/// libraries and applications log error details. Other errors pass as
/// they are.
pub(super) fn without_guard_values(frame: Bytes) -> Bytes {
    let guard = reply::error_field(&frame, error_field::CONSTRAINT)
        .is_some_and(|name| name.starts_with(crate::protect::guard::NAME_PREFIX.as_bytes()));
    if !guard {
        return frame;
    }
    use error_field::*;
    reply::keep_fields(
        &frame,
        &[
            SEVERITY,
            SEVERITY_NONLOCALIZED,
            CODE,
            MESSAGE,
            SCHEMA,
            TABLE,
            COLUMN,
            DATA_TYPE,
            CONSTRAINT,
        ],
    )
}
