//! The data path's side of the audit log: a handle that queues records
//! without ever waiting, and the task that writes them.
//!
//! [`AuditHandle::record`] pushes onto a bounded queue with `try_send`. The
//! writer task takes what is queued in batches, appends it on a blocking
//! thread, and syncs the file at most `fsync_interval_ms` after a write.
//! When the queue is full or the writer has failed, the record is counted
//! in [`AuditHandle::dropped`] and warned about (at most every ten
//! seconds); with `on_failure = "refuse"` `record` returns
//! [`AuditUnavailable`], with `"continue"` it returns `Ok`. A failed writer does not recover: the
//! state of its file is unknown, so the log stays unavailable until
//! pgveil restarts and seals that file.
//!
//! [`AuditHandle::shutdown`] writes everything queued before it, seals the
//! file and syncs it; the task also seals when the last handle is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::{AuditConfig, OnFailure};
use super::keys::AuditKeys;
use super::record::AuditRecord;
use super::writer::{AuditError, LogWriter};

/// The most records written in one batch.
const MAX_BATCH: usize = 4096;
/// The shortest time between two warnings about dropped records.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The audit log cannot take the record: its queue is full or its writer
/// has failed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the audit log is unavailable (queue full or writer failed)")]
pub struct AuditUnavailable;

/// Starts the audit writer.
pub struct AuditSink;

impl AuditSink {
    /// Continues the log in `config.dir` and spawns its writer task, which
    /// ends with the writer's failure or after the log is sealed. Must run
    /// inside a tokio runtime; reads (and may seal) the newest file first.
    pub fn start(
        config: &AuditConfig,
        keys: Arc<AuditKeys>,
    ) -> Result<(AuditHandle, JoinHandle<Result<(), AuditError>>), AuditError> {
        config.validate()?;
        let writer = LogWriter::open(config, keys, SystemTime::now())?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let shared = Arc::new(Shared::default());
        let fsync_interval = Duration::from_millis(config.fsync_interval_ms);
        let task = tokio::spawn(run(rx, writer, shared.clone(), fsync_interval));
        let handle = AuditHandle {
            tx,
            shared,
            on_failure: config.on_failure,
        };
        Ok((handle, task))
    }
}

/// Queues records for the writer. Cheap to clone; one per session.
#[derive(Clone, Debug)]
pub struct AuditHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    on_failure: OnFailure,
}

#[derive(Debug)]
enum Command {
    Record(AuditRecord),
    /// Answered once everything before it is written and sealed.
    Shutdown(oneshot::Sender<()>),
}

/// State the handles and the writer task share.
#[derive(Debug, Default)]
struct Shared {
    failed: AtomicBool,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Shared {
    /// Warns about dropped records unless it did less than
    /// [`WARN_EVERY`] ago.
    fn warn_dropped(&self) {
        let Ok(mut last) = self.last_warning.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                dropped = self.dropped.load(Ordering::Relaxed),
                "the audit log is unavailable; records are being dropped"
            );
        }
    }
}

impl AuditHandle {
    /// Queues `record` without waiting. See the module documentation for
    /// what happens when the log cannot take it.
    pub fn record(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        if !self.shared.failed.load(Ordering::Acquire)
            && self.tx.try_send(Command::Record(record)).is_ok()
        {
            return Ok(());
        }
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        self.shared.warn_dropped();
        match self.on_failure {
            OnFailure::Refuse => Err(AuditUnavailable),
            OnFailure::Continue => Ok(()),
        }
    }

    /// Whether a record queued now would be taken: the writer runs and the
    /// queue has room.
    pub fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire)
            && !self.tx.is_closed()
            && self.tx.capacity() > 0
    }

    /// Whether statements touching protected columns must be refused now:
    /// the log is not healthy and `on_failure` is `refuse`.
    pub fn refusing(&self) -> bool {
        self.on_failure == OnFailure::Refuse && !self.healthy()
    }

    /// Records that were not logged, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes every record queued so far, seals the file and stops the
    /// writer. Records queued afterwards are dropped. If the writer fails
    /// instead, this returns [`AuditError::Stopped`] and the writer task
    /// returns (and logs) the cause.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Command::Shutdown(ack))
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)
    }
}

/// The writer task.
async fn run(
    mut rx: mpsc::Receiver<Command>,
    writer: LogWriter,
    shared: Arc<Shared>,
    fsync_interval: Duration,
) -> Result<(), AuditError> {
    let result = write_until_shutdown(&mut rx, writer, &shared, fsync_interval).await;
    if let Err(error) = &result {
        shared.failed.store(true, Ordering::Release);
        tracing::error!(%error, "the audit log failed; no more records are written");
    }
    rx.close();
    let mut lost = 0;
    while rx.try_recv().is_ok() {
        lost += 1;
    }
    shared.dropped.fetch_add(lost, Ordering::Relaxed);
    result
}

async fn write_until_shutdown(
    rx: &mut mpsc::Receiver<Command>,
    mut writer: LogWriter,
    shared: &Shared,
    fsync_interval: Duration,
) -> Result<(), AuditError> {
    let mut sync_at: Option<tokio::time::Instant> = None;
    loop {
        let received = match sync_at {
            Some(at) => tokio::time::timeout_at(at, rx.recv()).await,
            None => Ok(rx.recv().await),
        };
        let first = match received {
            Err(_elapsed) => {
                writer = on_blocking_thread(writer, LogWriter::sync).await?;
                sync_at = None;
                continue;
            }
            Ok(None) => return finish(writer).await,
            Ok(Some(command)) => command,
        };
        let (records, shutdown) = gather(first, rx);
        let count = records.len() as u64;
        let appended = on_blocking_thread(writer, move |w| w.append(&records, SystemTime::now()));
        writer = appended.await.inspect_err(|_| {
            // Part of the batch may be on disk, but not sealed: count it lost.
            shared.dropped.fetch_add(count, Ordering::Relaxed);
        })?;
        if let Some(ack) = shutdown {
            finish(writer).await?;
            let _ = ack.send(());
            return Ok(());
        }
        // Checked here too: under steady load `recv` is always ready, and
        // the timeout above would never fire.
        let now = tokio::time::Instant::now();
        if *sync_at.get_or_insert(now + fsync_interval) <= now {
            writer = on_blocking_thread(writer, LogWriter::sync).await?;
            sync_at = None;
        }
    }
}

/// The records queued from `first` on, up to [`MAX_BATCH`] or a shutdown
/// command, which is returned.
fn gather(
    first: Command,
    rx: &mut mpsc::Receiver<Command>,
) -> (Vec<AuditRecord>, Option<oneshot::Sender<()>>) {
    let mut records = Vec::new();
    let mut next = Some(first);
    while let Some(command) = next {
        match command {
            Command::Record(record) => records.push(record),
            Command::Shutdown(ack) => return (records, Some(ack)),
        }
        next = (records.len() < MAX_BATCH)
            .then(|| rx.try_recv().ok())
            .flatten();
    }
    (records, None)
}

/// Seals the open file.
async fn finish(writer: LogWriter) -> Result<(), AuditError> {
    on_blocking_thread(writer, |w| w.close(SystemTime::now()))
        .await
        .map(drop)
}

/// Runs `f` on the writer on a blocking thread; returns the writer if `f`
/// succeeds.
async fn on_blocking_thread<F>(mut writer: LogWriter, f: F) -> Result<LogWriter, AuditError>
where
    F: FnOnce(&mut LogWriter) -> Result<(), AuditError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&mut writer).map(|()| writer))
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}
