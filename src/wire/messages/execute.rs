//! Execute: a client runs a portal, with a limit on the rows it returns.

use super::body::{body_of, cstr};

/// The name of the portal an Execute frame runs, without its NUL.
pub(crate) fn portal(frame: &[u8]) -> Option<&[u8]> {
    cstr(body_of(frame))
}

/// The row limit of the Execute `frame` of `portal` (0: none).
pub(crate) fn max_rows(frame: &[u8], portal: &[u8]) -> u64 {
    frame
        .get(5 + portal.len() + 1..)
        .and_then(|rest| rest.first_chunk::<4>())
        .map_or(0, |limit| {
            u64::try_from(i32::from_be_bytes(*limit)).unwrap_or(0)
        })
}
