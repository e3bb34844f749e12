//! Query: a client sends a statement text by the simple query protocol.

use super::body::{body_of, cstr};

/// The statement text of a Query frame, in the client encoding, without
/// its NUL; `None` if there is no NUL.
pub(crate) fn sql(frame: &[u8]) -> Option<&[u8]> {
    cstr(body_of(frame))
}
