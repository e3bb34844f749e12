//! Moves messages from one peer to the other, in one direction.
//!
//! [`relay`] reads whatever bytes are available, lets the [`Framer`] split
//! them at message boundaries, and writes everything that is ready in one
//! write (vectored when there are several pieces) before reading again.
//! The read buffer only grows to hold a message a [`Tap`] wants whole, so
//! a slow reader on the far side holds the sender back (backpressure)
//! instead of filling memory. Messages a tap does not ask for are never
//! decoded or copied, nor those it only reads.

use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::session::tap::Tap;
use crate::wire::{Chunk, FrameError, Framer, Side};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;
/// A buffer left larger than this once empty is given back.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Why a relay stopped.
#[derive(Debug)]
pub(super) enum End {
    /// The sending peer closed its side.
    Closed,
    /// The session asked it to stop.
    Stopped,
    /// The sending peer broke the protocol.
    Protocol(FrameError),
    /// Reading from the sending peer failed.
    ReadFailed(io::Error),
    /// Writing to the receiving peer failed.
    WriteFailed(io::Error),
}

/// How a relay ended, and whether its receiver may be sent one more message.
#[derive(Debug)]
pub(super) struct Ending {
    pub end: End,
    /// True when the receiving peer has been sent only whole messages.
    pub at_boundary: bool,
}

/// Relays from `from` to `to` until either side fails, `from` closes, or
/// `stop` is cancelled. `buf` holds bytes already read from `from`.
pub(super) async fn relay<R, W, T>(
    side: Side,
    from: &mut R,
    to: &mut W,
    mut buf: BytesMut,
    tap: &mut T,
    stop: &CancellationToken,
) -> Ending
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    T: Tap,
{
    let mut framer = Framer::new(side);
    let mut out = Vec::new();
    // One waiter on the token for the whole relay, not one per await.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        if let Err(e) = split(&mut framer, &mut buf, tap, &mut out) {
            return Ending {
                end: End::Protocol(e),
                at_boundary: true,
            };
        }
        if !out.is_empty() {
            tokio::select! {
                biased;
                result = write_all(to, &mut out) => if let Err(e) = result {
                    return Ending { end: End::WriteFailed(e), at_boundary: false };
                },
                _ = &mut stopped => return Ending { end: End::Stopped, at_boundary: false },
            }
        }
        let at_boundary = framer.at_boundary();
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::new();
        }
        buf.reserve(READ_SIZE);
        let read = tokio::select! {
            biased;
            _ = &mut stopped => return Ending { end: End::Stopped, at_boundary },
            read = from.read_buf(&mut buf) => read,
        };
        let end = match read {
            Ok(0) => End::Closed,
            Ok(n) => {
                tap.received(n);
                continue;
            }
            Err(e) => End::ReadFailed(e),
        };
        return Ending { end, at_boundary };
    }
}

/// Moves every complete unit at the front of `buf` into `out`: forwarded
/// spans as they are, wanted messages through the tap.
pub(crate) fn split<T: Tap>(
    framer: &mut Framer,
    buf: &mut BytesMut,
    tap: &mut T,
    out: &mut Vec<Bytes>,
) -> Result<(), FrameError> {
    let mut ready = 0;
    loop {
        // Between messages, what the framer releases starts with a header.
        let starts = framer.at_boundary();
        match framer.next(&buf[ready..], |tag| tap.wants(tag))? {
            Chunk::Forward(n) => {
                if starts {
                    tap.passes(buf[ready]);
                }
                ready += n
            }
            Chunk::Message { tag, len } => {
                tap.passes(tag);
                if tap.look(tag, &buf[ready..ready + len]) {
                    ready += len;
                    continue;
                }
                if ready > 0 {
                    out.push(buf.split_to(ready).freeze());
                    ready = 0;
                }
                tap.see(tag, buf.split_to(len).freeze(), out);
            }
            Chunk::NeedMore => break,
        }
    }
    if ready > 0 {
        out.push(buf.split_to(ready).freeze());
    }
    Ok(())
}

/// Writes and drains `chunks`, as few system calls as possible.
pub(super) async fn write_all<W: AsyncWrite + Unpin>(
    to: &mut W,
    chunks: &mut Vec<Bytes>,
) -> io::Result<()> {
    if let [only] = chunks.as_slice() {
        // A plain write (the socket's `send`, as PgBouncer makes), not the
        // one-slice `writev` of `write_all_buf`; no slower, and the system
        // calls compare one for one with PgBouncer's (BENCHMARKS.md).
        to.write_all(only).await?;
        chunks.clear();
        return to.flush().await;
    }
    let mut first = 0;
    loop {
        while chunks.get(first).is_some_and(|c| c.is_empty()) {
            first += 1;
        }
        if first == chunks.len() {
            break;
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = chunks.len().min(first + MAX_SLICES) - first;
        for (slice, chunk) in slices.iter_mut().zip(&chunks[first..first + count]) {
            *slice = IoSlice::new(chunk);
        }
        let mut written = to.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let chunk = &mut chunks[first];
            let n = written.min(chunk.len());
            bytes::Buf::advance(chunk, n);
            written -= n;
            if chunk.is_empty() {
                first += 1;
            }
        }
    }
    chunks.clear();
    to.flush().await
}
