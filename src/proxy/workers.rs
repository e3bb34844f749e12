//! The session threads: one single-threaded runtime per thread, and each
//! session kept on one of them from its first byte to its last.
//!
//! A session is two sockets (client and server) and the relays between
//! them. On a runtime with a shared pool of worker threads, a message
//! arriving on one socket may wake a different thread each time, and
//! waking a sleeping thread costs a system call and a context switch:
//! most of a pass-through proxy's CPU time. Here each session's sockets
//! are registered with the I/O driver of the one thread that runs it, so a
//! readiness event is handled by the thread that was polling for it; no
//! other thread is woken. The listener (`server.rs`) accepts on its own
//! runtime and hands each connection to the thread running the fewest
//! sessions ([`Workers::spawn`]).
//!
//! The threads stop when [`Workers`] is dropped, once their sessions have
//! ended (the server drains them first).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// The session threads of one server.
pub(crate) struct Workers {
    threads: Vec<Worker>,
    /// Which thread the last tie went to, so that ties rotate.
    next: AtomicUsize,
    stop: CancellationToken,
}

/// One session thread: its runtime and the sessions it runs.
struct Worker {
    handle: Handle,
    sessions: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` session threads (one per CPU when 0).
    pub(crate) fn start(count: usize) -> io::Result<Self> {
        let count = match count {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            thread::Builder::new()
                .name(format!("pgveil-session-{index}"))
                .spawn(move || runtime.block_on(stopped.cancelled()))?;
            threads.push(Worker {
                handle,
                sessions: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// Runs `session` with `stream` on the thread with the fewest sessions.
    /// The stream, accepted on another runtime, is moved to that thread's
    /// I/O driver first; if that fails the connection is closed and logged.
    pub(crate) fn spawn<F, Fut>(&self, stream: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self.least_busy();
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                error!("cannot hand a connection to a session thread: {e}");
                return;
            }
        };
        let sessions = worker.sessions.clone();
        sessions.fetch_add(1, Ordering::Relaxed);
        worker.handle.spawn(async move {
            // Registered with this thread's driver: from_std must run here.
            match TcpStream::from_std(stream) {
                Ok(stream) => session(stream).await,
                Err(e) => error!("cannot register a connection on its session thread: {e}"),
            }
            sessions.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// The thread running the fewest sessions; ties rotate.
    fn least_busy(&self) -> &Worker {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        (0..n)
            .map(|i| &self.threads[(start + i) % n])
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))
            .unwrap_or(&self.threads[start % n])
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// Sessions run on the session threads, spread over them, and their
    /// sockets work there.
    #[tokio::test]
    async fn sessions_run_on_their_threads_spread_evenly() {
        let workers = Workers::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (names, mut seen) = mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let names = names.clone();
            workers.spawn(stream, move |mut stream| async move {
                let name = thread::current().name().map(str::to_owned);
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                stream.write_all(&byte).await.unwrap();
                names.send(name).unwrap();
            });
            clients.push(client);
        }
        for client in &mut clients {
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.unwrap();
            assert_eq!(&byte, b"x");
        }
        let mut counts = std::collections::HashMap::new();
        for _ in 0..4 {
            let name = seen.recv().await.unwrap().expect("a named thread");
            assert!(name.starts_with("pgveil-session-"), "{name}");
            *counts.entry(name).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.values().all(|&n| n == 2), "{counts:?}");
    }
}
