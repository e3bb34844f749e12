//! The pieces message bodies are made of, as the frontend messages pgveil
//! reads and rebuilds hold them: NUL-terminated strings and big-endian
//! integers, read off the front of a body.

/// The body of a whole frame: what follows its tag and length. A frame
/// shorter than its header panics; the framer never yields one.
pub(crate) fn body_of(frame: &[u8]) -> &[u8] {
    &frame[5..]
}

/// The bytes before the first NUL, or `None` if there is no NUL.
pub(crate) fn cstr(bytes: &[u8]) -> Option<&[u8]> {
    bytes.iter().position(|&b| b == 0).map(|end| &bytes[..end])
}

/// `text` with a NUL after it, as a string field is sent.
pub(crate) fn cstring(text: impl AsRef<[u8]>) -> Vec<u8> {
    let text = text.as_ref();
    let mut v = Vec::with_capacity(text.len() + 1);
    v.extend_from_slice(text);
    v.push(0);
    v
}

/// Reads big-endian integers and slices off the front of a body.
pub(crate) struct BodyReader<'b>(&'b [u8]);

impl<'b> BodyReader<'b> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'b [u8]) -> Self {
        Self(bytes)
    }

    /// What has not been read yet.
    pub(crate) fn rest(&self) -> &'b [u8] {
        self.0
    }

    /// The next `n` bytes, if there are that many.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    /// The next two bytes, as an unsigned integer.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// The next four bytes, as a signed integer.
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The target byte of a Close or Describe frame, whatever it is, and the
/// name after it up to the first NUL, whatever follows.
pub(crate) fn target_and_name(frame: &[u8]) -> Option<(u8, &[u8])> {
    match (frame.get(5), frame.get(6..).and_then(cstr)) {
        (Some(&target), Some(name)) => Some((target, name)),
        _ => None,
    }
}
