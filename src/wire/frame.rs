//! Message framing: where each message of a byte stream begins and ends.
//!
//! After startup every message is a type byte, a big-endian `i32` length
//! that counts itself, and a body. [`Framer`] walks a buffer of received
//! bytes header by header without copying. Messages the caller does not
//! need to see are released as [`Chunk::Forward`] spans, even before their
//! body has fully arrived, so a large `DataRow` or `CopyData` streams through
//! with bounded memory. Messages the caller asks to inspect are released
//! whole as [`Chunk::Message`].

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::tags::{backend, frontend};

/// Bytes of a message header: the type byte and the length word.
pub(crate) const HEADER_LEN: usize = 5;

/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`: the largest body it accepts for
/// messages that carry no user data.
const SMALL_LIMIT: usize = 10_000;
/// PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` (`MaxAllocSize - 1`).
const LARGE_LIMIT: usize = 0x3fff_fffe;
/// PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`, for password and SASL messages.
const AUTH_LIMIT: usize = 65_535;

/// Which peer sends the stream being framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

impl Side {
    /// The largest length word allowed for a message of type `tag`, or
    /// `None` when the type does not exist in this direction.
    pub(crate) fn max_len(self, tag: u8) -> Option<usize> {
        match self {
            Side::Frontend => frontend_limit(tag),
            Side::Backend => backend_known(tag).then_some(LARGE_LIMIT),
        }
    }
}

fn frontend_limit(tag: u8) -> Option<usize> {
    use frontend::*;
    match tag {
        QUERY | PARSE | BIND | FUNCTION_CALL | COPY_DATA => Some(LARGE_LIMIT),
        PASSWORD => Some(AUTH_LIMIT),
        SYNC | FLUSH | TERMINATE | CLOSE | DESCRIBE | EXECUTE | COPY_DONE | COPY_FAIL => {
            Some(SMALL_LIMIT)
        }
        _ => None,
    }
}

fn backend_known(tag: u8) -> bool {
    use backend::*;
    matches!(
        tag,
        AUTHENTICATION
            | BACKEND_KEY_DATA
            | PARAMETER_STATUS
            | READY_FOR_QUERY
            | ROW_DESCRIPTION
            | DATA_ROW
            | COMMAND_COMPLETE
            | ERROR
            | NOTICE
            | NOTIFICATION
            | EMPTY_QUERY
            | PARSE_COMPLETE
            | BIND_COMPLETE
            | CLOSE_COMPLETE
            | NO_DATA
            | PORTAL_SUSPENDED
            | PARAMETER_DESCRIPTION
            | COPY_IN_RESPONSE
            | COPY_OUT_RESPONSE
            | COPY_BOTH_RESPONSE
            | COPY_DATA
            | COPY_DONE
            | FUNCTION_CALL_RESPONSE
            | NEGOTIATE_PROTOCOL
    )
}

/// A header that breaks the protocol.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The type byte names no message in this direction.
    #[error("invalid message type {0:#04x}")]
    UnknownType(u8),
    /// The length word is below 4 or above the limit for the type.
    #[error("invalid message length {len} for message type {tag:#04x}")]
    BadLength {
        /// The message type.
        tag: u8,
        /// The length word.
        len: i64,
    },
}

/// What the front of the buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes pass unchanged.
    Forward(usize),
    /// A whole message of type `tag` spanning `len` bytes, header included.
    Message {
        /// The message type.
        tag: u8,
        /// Its length, header included.
        len: usize,
    },
    /// Nothing can be released until more bytes arrive.
    NeedMore,
}

/// Walks message headers across reads. See the module documentation.
#[derive(Debug)]
pub struct Framer {
    side: Side,
    /// Body bytes of a forwarded message that have not arrived yet.
    streaming: usize,
}

impl Framer {
    /// A framer for the messages `side` sends.
    pub fn new(side: Side) -> Self {
        Self { side, streaming: 0 }
    }

    /// Classifies the front of `buf`. `inspect` says which message types
    /// must be released whole rather than forwarded.
    pub fn next(&mut self, buf: &[u8], inspect: impl Fn(u8) -> bool) -> Result<Chunk, FrameError> {
        if self.streaming > 0 {
            return Ok(self.stream(buf.len()));
        }
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(Chunk::NeedMore);
        };
        let (tag, total) = check_header(self.side, header)?;
        if inspect(tag) {
            return Ok(if buf.len() >= total {
                Chunk::Message { tag, len: total }
            } else {
                Chunk::NeedMore
            });
        }
        if buf.len() >= total {
            return Ok(Chunk::Forward(total));
        }
        self.streaming = total - buf.len();
        Ok(Chunk::Forward(buf.len()))
    }

    /// Whether the framer is between messages.
    pub(crate) fn at_boundary(&self) -> bool {
        self.streaming == 0
    }

    fn stream(&mut self, available: usize) -> Chunk {
        let n = available.min(self.streaming);
        if n == 0 {
            return Chunk::NeedMore;
        }
        self.streaming -= n;
        Chunk::Forward(n)
    }
}

/// Checks a five-byte header; returns the type and total message size.
pub(crate) fn check_header(side: Side, header: &[u8]) -> Result<(u8, usize), FrameError> {
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let max = side.max_len(tag).ok_or(FrameError::UnknownType(tag))?;
    if len < 4 || len as usize > max {
        return Err(FrameError::BadLength {
            tag,
            len: len.into(),
        });
    }
    Ok((tag, len as usize + 1))
}

/// A whole message could not be read.
#[derive(Debug, Error)]
pub(crate) enum ReadError {
    /// The bytes are not a valid message.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed or closed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one whole message into `buf` and splits it off; `None` when the
/// stream ends first. For the few exchanges pgveil conducts itself
/// (authentication, the role lookup), not for the relay path.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    side: Side,
    buf: &mut BytesMut,
) -> Result<Option<(u8, Bytes)>, ReadError> {
    let mut framer = Framer::new(side);
    loop {
        if let Chunk::Message { tag, len } = framer.next(buf, |_| true)? {
            return Ok(Some((tag, buf.split_to(len).freeze())));
        }
        if r.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn forwards_whole_messages_one_by_one() {
        let mut buf = msg(b'Q', b"select 1\0");
        buf.extend(msg(b'S', b""));
        let mut f = Framer::new(Side::Frontend);
        assert_eq!(f.next(&buf, |_| false), Ok(Chunk::Forward(14)));
        assert_eq!(f.next(&buf[14..], |_| false), Ok(Chunk::Forward(5)));
        assert_eq!(f.next(&buf[19..], |_| false), Ok(Chunk::NeedMore));
    }

    #[test]
    fn streams_a_partial_forwarded_message() {
        let full = msg(b'D', &[7u8; 100]);
        let mut f = Framer::new(Side::Backend);
        assert_eq!(f.next(&full[..30], |_| false), Ok(Chunk::Forward(30)));
        assert!(!f.at_boundary());
        assert_eq!(f.next(&full[30..], |_| false), Ok(Chunk::Forward(75)));
        assert!(f.at_boundary());
    }

    #[test]
    fn holds_an_inspected_message_until_complete() {
        let full = msg(b'E', b"SFATAL\0\0");
        let mut f = Framer::new(Side::Backend);
        assert_eq!(f.next(&full[..7], |t| t == b'E'), Ok(Chunk::NeedMore));
        let len = full.len();
        assert_eq!(
            f.next(&full, |t| t == b'E'),
            Ok(Chunk::Message { tag: b'E', len })
        );
    }

    #[test]
    fn rejects_unknown_types_and_bad_lengths() {
        let mut f = Framer::new(Side::Frontend);
        assert_eq!(
            f.next(b"Z\0\0\0\x04", |_| false),
            Err(FrameError::UnknownType(b'Z'))
        );
        assert!(matches!(
            f.next(b"Q\0\0\0\x03", |_| false),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            f.next(b"Q\xff\xff\xff\xff", |_| false),
            Err(FrameError::BadLength { .. })
        ));
        // Sync may not carry 20 000 bytes: PostgreSQL's small-message limit.
        let big = msg(b'S', &[0u8; 20_000]);
        assert!(matches!(
            f.next(&big, |_| false),
            Err(FrameError::BadLength { .. })
        ));
    }
}
