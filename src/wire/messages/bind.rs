//! Bind: a client makes a portal from a prepared statement and the values
//! of its parameters.

use super::body::{cstr, BodyReader};

/// A Bind message, read.
pub(crate) struct BindMessage<'f> {
    /// The portal and statement names, each with its NUL.
    pub(crate) head: &'f [u8],
    /// The number of parameter format codes.
    pub(crate) formats_count: u16,
    /// The parameter format codes, as sent.
    pub(crate) formats: &'f [u8],
    /// The parameter values, `None` for NULL.
    pub(crate) values: Vec<Option<&'f [u8]>>,
    /// The result format codes, as sent.
    pub(crate) rest: &'f [u8],
}

impl<'f> BindMessage<'f> {
    /// The name of the portal a Bind frame makes, without its NUL.
    pub(crate) fn portal_name(frame: &[u8]) -> Option<&[u8]> {
        cstr(frame.get(5..)?)
    }

    /// The name of the statement a Bind frame binds, without its NUL.
    pub(crate) fn statement_name(frame: &[u8]) -> Option<&[u8]> {
        let body = frame.get(5..)?;
        let portal = cstr(body)?;
        cstr(&body[portal.len() + 1..])
    }

    /// The parts of a Bind frame, up to its parameter values; `None` if
    /// they are cut short.
    pub(crate) fn read(frame: &'f [u8]) -> Option<Self> {
        let body = frame.get(5..)?;
        let portal = cstr(body)?;
        let statement = cstr(&body[portal.len() + 1..])?;
        let head_len = portal.len() + statement.len() + 2;
        let mut reader = BodyReader::new(&body[head_len..]);
        // Counts are unsigned, as PostgreSQL reads them (`pq_getmsgint`).
        let formats_count = reader.u16()?;
        let formats = reader.take(2 * usize::from(formats_count))?;
        let params_count = reader.u16()?;
        let values = (0..params_count)
            .map(|_| {
                let len = reader.i32()?;
                Some(if len < 0 {
                    None
                } else {
                    Some(reader.take(len as usize)?)
                })
            })
            .collect::<Option<_>>()?;
        Some(Self {
            head: &body[..head_len],
            formats_count,
            formats,
            values,
            rest: reader.rest(),
        })
    }

    /// Whether parameter `i` (from 0) is in binary format.
    pub(crate) fn binary(&self, i: usize) -> bool {
        let code = |at: usize| self.formats.get(2 * at..2 * at + 2) == Some(&[0, 1][..]);
        match self.formats_count {
            0 => false,
            1 => code(0),
            _ => code(i),
        }
    }
}
