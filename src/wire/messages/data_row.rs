//! DataRow: the fields of one row, and how a field is written (a Bind and
//! a binary COPY tuple hold fields the same way).

use bytes::BufMut;

/// The fields of a DataRow frame, `None` for SQL NULL. A malformed frame
/// ends the iteration early; it is then passed on as PostgreSQL wrote it,
/// for the client to judge.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Fields<'a> {
    /// The fields of a DataRow frame.
    pub(crate) fn of(frame: &'a [u8]) -> Self {
        Self::of_tuple(frame.get(5..).unwrap_or_default())
    }

    /// The fields of a DataRow's body or a binary COPY tuple.
    pub(crate) fn of_tuple(tuple: &'a [u8]) -> Self {
        Fields {
            rest: tuple.get(2..).unwrap_or_default(),
            left: Self::count(tuple),
        }
    }

    /// The field count a tuple announces.
    pub(crate) fn count(tuple: &[u8]) -> usize {
        tuple
            .get(..2)
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

/// Writes one field as a DataRow, a Bind and a binary COPY tuple hold it:
/// its length, -1 for NULL, and its bytes.
pub(crate) fn put_field(body: &mut impl BufMut, value: Option<&[u8]>) {
    match value {
        Some(value) => {
            body.put_i32(value.len() as i32);
            body.put_slice(value);
        }
        None => body.put_i32(-1),
    }
}
