//! Close: a client closes a prepared statement or a portal.

use super::body::{cstr, target_and_name};
use crate::wire::tags::target;

/// A Close message, read.
pub(crate) struct CloseMessage<'f> {
    /// What it closes, [`target::STATEMENT`] or [`target::PORTAL`] (any
    /// byte, read leniently).
    pub(crate) target: u8,
    /// The statement or portal name, without its NUL.
    pub(crate) name: &'f [u8],
}

impl<'f> CloseMessage<'f> {
    /// A Close as PostgreSQL reads it: a target it knows, a name, nothing
    /// after. One it refuses is `None`.
    pub(crate) fn read(frame: &'f [u8]) -> Option<Self> {
        let name = frame.get(6..).and_then(cstr).filter(|name| {
            frame.len() == 6 + name.len() + 1
                && matches!(frame[5], target::STATEMENT | target::PORTAL)
        })?;
        Some(Self {
            target: frame[5],
            name,
        })
    }

    /// A Close's target byte, whatever it is, and the name up to the
    /// first NUL, whatever follows.
    pub(crate) fn read_lenient(frame: &'f [u8]) -> Option<Self> {
        let (target, name) = target_and_name(frame)?;
        Some(Self { target, name })
    }
}
