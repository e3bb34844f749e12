//! Parse: a client prepares a statement, named or unnamed, from a query
//! text and the types of some of its parameters.

use bytes::{BufMut, Bytes, BytesMut};

use super::body::{cstr, cstring};
use crate::wire::reply;
use crate::wire::tags::frontend;

/// The parts of a Parse message: name, query, and the raw parameter types.
pub(crate) struct ParseMessage<'f> {
    /// The statement name, without its NUL (empty: the unnamed statement).
    pub(crate) name: &'f [u8],
    /// The query text, in the client encoding, without its NUL.
    pub(crate) query: &'f [u8],
    /// The parameter type count and the type OIDs, as sent.
    pub(crate) types: &'f [u8],
}

impl<'f> ParseMessage<'f> {
    /// The parts of a Parse, if PostgreSQL would read it: the parameter
    /// type count (unsigned) and exactly that many types, nothing after.
    /// A Parse it would refuse (`08P01`) is passed on unread, and changes
    /// nothing pgveil knows.
    pub(crate) fn read(frame: &'f [u8]) -> Option<Self> {
        let body = frame.get(5..)?;
        let name = cstr(body)?;
        let rest = &body[name.len() + 1..];
        let query = cstr(rest)?;
        let types = &rest[query.len() + 1..];
        let count = u16::from_be_bytes(*types.first_chunk::<2>()?);
        (types.len() == 2 + 4 * usize::from(count)).then_some(Self { name, query, types })
    }

    /// The same Parse, with `query` (in the client encoding) for its text.
    pub(crate) fn with_query(&self, query: &[u8]) -> Bytes {
        let mut body = BytesMut::new();
        body.put_slice(self.name);
        body.put_u8(0);
        body.put_slice(&cstring(query));
        body.put_slice(self.types);
        reply::frame_of(frontend::PARSE, &body)
    }
}
