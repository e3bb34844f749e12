//! A connection either plain or under TLS, as a session sees both of its
//! legs.
//!
//! [`Stream`] forwards each read and write to the connection it holds: one
//! `match` per call, no copy and no buffer of its own. [`Stream::split`]
//! gives a plain connection `TcpStream`'s own borrowed halves, as before
//! TLS existed (no lock, no reference count); only a TLS connection, whose
//! two directions share one TLS state, is split behind tokio's lock.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp;
use tokio::net::TcpStream;

/// How long a TLS connection being closed may take to send its
/// close_notify.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One leg of a session.
pub(crate) enum Stream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS pgveil accepted from a client.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS pgveil opened to the upstream server.
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// No connection any more: while a plain connection is being turned
    /// into a TLS one, and after that failed. Reads end at once, writes
    /// fail.
    Closed,
}

impl Stream {
    /// Whether the connection is under TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Accepted(_) | Stream::Connected(_))
    }

    /// Writes all of `bytes` and flushes them: TLS holds written bytes in
    /// its records until flushed.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        self.flush().await
    }

    /// Ends a TLS connection with its close_notify, so the peer can tell an
    /// orderly end from a cut connection; a plain one is left to be
    /// dropped, as before.
    pub(crate) async fn close(&mut self) {
        if self.is_tls() {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.shutdown()).await;
        }
    }

    /// The read and write halves, used side by side.
    pub(crate) fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(tcp) => {
                let (read, write) = tcp.split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            other => {
                let (read, write) = tokio::io::split(other);
                (ReadHalf::Shared(read), WriteHalf::Shared(write))
            }
        }
    }
}

/// Calls `$call` on the connection inside `$stream`, pinned.
macro_rules! each {
    ($stream:expr, $method:ident($($arg:expr),*), $closed:expr) => {
        match $stream.get_mut() {
            Stream::Plain(s) => Pin::new(s).$method($($arg),*),
            Stream::Accepted(s) => Pin::new(s.as_mut()).$method($($arg),*),
            Stream::Connected(s) => Pin::new(s.as_mut()).$method($($arg),*),
            Stream::Closed => $closed,
        }
    };
}

fn not_connected() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, poll_read(cx, buf), Poll::Ready(Ok(())))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, poll_write(cx, buf), Poll::Ready(Err(not_connected())))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(
            self,
            poll_write_vectored(cx, bufs),
            Poll::Ready(Err(not_connected()))
        )
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Accepted(s) => s.is_write_vectored(),
            Stream::Connected(s) => s.is_write_vectored(),
            Stream::Closed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, poll_flush(cx), Poll::Ready(Ok(())))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, poll_shutdown(cx), Poll::Ready(Ok(())))
    }
}

/// The reading half of a [`Stream`].
pub(crate) enum ReadHalf<'a> {
    /// A plain connection's own half.
    Plain(tcp::ReadHalf<'a>),
    /// A TLS connection's half, sharing it with the writing half.
    Shared(tokio::io::ReadHalf<&'a mut Stream>),
}

/// The writing half of a [`Stream`].
pub(crate) enum WriteHalf<'a> {
    /// A plain connection's own half.
    Plain(tcp::WriteHalf<'a>),
    /// A TLS connection's half, sharing it with the reading half.
    Shared(tokio::io::WriteHalf<&'a mut Stream>),
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(half) => Pin::new(half).poll_read(cx, buf),
            ReadHalf::Shared(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(half) => Pin::new(half).poll_write(cx, buf),
            WriteHalf::Shared(half) => Pin::new(half).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(half) => Pin::new(half).poll_write_vectored(cx, bufs),
            WriteHalf::Shared(half) => Pin::new(half).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(half) => half.is_write_vectored(),
            WriteHalf::Shared(half) => half.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(half) => Pin::new(half).poll_flush(cx),
            WriteHalf::Shared(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(half) => Pin::new(half).poll_shutdown(cx),
            WriteHalf::Shared(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}
