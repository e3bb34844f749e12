//! The data path's side of the audit log: a handle that queues records
//! without ever waiting, and the task that writes them.
//!
//! [`AuditHandle::record`] pushes onto a bounded queue with `try_send`. The
//! writer task takes what is queued in batches (letting them gather for a
//! few milliseconds after the first record), appends them on a blocking
//! thread, and syncs the file at most `fsync_interval_ms` after a write.
//!
//! # When records cannot be written
//!
//! When the queue is full or the writer has failed, the record is counted
//! in [`AuditHandle::dropped`] and warned about (at most every ten
//! seconds); with `on_failure = "refuse"` `record` returns
//! [`AuditUnavailable`] and [`AuditHandle::refusing`] tells sessions to
//! refuse statements touching protected columns, with `"continue"` it
//! returns `Ok`.
//!
//! A failed append, sync or seal (a full disk, an I/O error) takes the log
//! down. The records of the failed batch are kept, and once a second the
//! task tries to continue ([`LogWriter::resume`]): the file that was being
//! written is cut after its last complete record and sealed as recovered,
//! the records of the batch that did not reach it are written again in a
//! new file, and the log is up again. Records are lost only at the handle,
//! while the log is down (or at a shutdown that finds it still down), and
//! never silently: the first batch written after a loss starts with a
//! [`GapRecord`] counting the records lost since the previous one, chained
//! and sealed like every record, so that `pgveil audit verify` reports it.
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
use super::record::{AuditRecord, GapCause, GapRecord, Timestamp};
use super::writer::{AuditError, LogWriter};

/// The most records written in one batch.
const MAX_BATCH: usize = 4096;
/// The shortest time between two warnings about dropped records.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often a failed log tries to continue.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long the writer lets records gather after the first of a batch:
/// under load, one wake-up and one trip to a blocking thread per batch
/// instead of per record, which is what keeps the log's cost off a busy
/// machine's CPUs.
const LINGER: Duration = Duration::from_millis(5);

/// The audit log cannot take the record: its queue is full or its writer
/// has failed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the audit log is unavailable (queue full or writer failed)")]
pub struct AuditUnavailable;

/// Starts the audit writer.
pub struct AuditSink;

impl AuditSink {
    /// Continues the log in `config.dir` and spawns its writer task, which
    /// ends after the log is sealed, or with the error that kept it from
    /// being sealed. Must run
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
    /// writer. Records queued afterwards are dropped. If the log is down
    /// and cannot be resumed, this returns [`AuditError::Stopped`] and the
    /// writer task returns (and logs) the cause.
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
    let mut task = Task::new(writer, shared.clone());
    let result = task.serve(&mut rx, fsync_interval).await;
    if let Err(error) = &result {
        shared.failed.store(true, Ordering::Release);
        tracing::error!(%error, "the audit log stopped; no more records are written");
    }
    rx.close();
    let mut lost = 0;
    while rx.try_recv().is_ok() {
        lost += 1;
    }
    shared.dropped.fetch_add(lost, Ordering::Relaxed);
    result
}

/// The writer and what the task knows beyond it.
struct Task {
    /// `None` only while an operation runs on a blocking thread.
    writer: Option<LogWriter>,
    shared: Arc<Shared>,
    /// Dropped records already counted in a written gap record.
    reported: u64,
    /// Whether a write failed since the last gap record was written.
    write_failed: bool,
    /// The batch whose write failed, while the log is down.
    failed: Option<FailedBatch>,
    /// Records taken from the queue and not written yet.
    unwritten: Vec<AuditRecord>,
    /// When a failing resume was last logged.
    last_logged: Option<Instant>,
}

/// A batch whose write failed: some of it may be on disk.
struct FailedBatch {
    records: Vec<AuditRecord>,
    /// The chain's last seq before the batch.
    seq_before: u64,
    error: AuditError,
}

impl Task {
    fn new(writer: LogWriter, shared: Arc<Shared>) -> Self {
        Self {
            writer: Some(writer),
            shared,
            reported: 0,
            write_failed: false,
            failed: None,
            unwritten: Vec::new(),
            last_logged: None,
        }
    }

    /// Writes until a shutdown command or the last handle is dropped,
    /// then seals the log.
    async fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<Command>,
        fsync_interval: Duration,
    ) -> Result<(), AuditError> {
        let mut sync_at: Option<tokio::time::Instant> = None;
        loop {
            let deadline = match self.failed {
                Some(_) => Some(tokio::time::Instant::now() + RETRY_EVERY),
                None => sync_at,
            };
            let received = match deadline {
                Some(at) => tokio::time::timeout_at(at, rx.recv()).await,
                None => Ok(rx.recv().await),
            };
            let first = match received {
                Err(_elapsed) if self.failed.is_some() => {
                    self.resume().await;
                    continue;
                }
                Err(_elapsed) => {
                    self.sync().await;
                    sync_at = None;
                    continue;
                }
                Ok(None) => return self.finish().await,
                Ok(Some(command)) => command,
            };
            if matches!(first, Command::Record(_)) && self.failed.is_none() {
                tokio::time::sleep(LINGER).await;
            }
            let shutdown = gather(first, rx, &mut self.unwritten);
            if self.failed.is_none() {
                self.write().await;
            }
            if let Some(ack) = shutdown {
                self.finish().await?;
                let _ = ack.send(());
                return Ok(());
            }
            // Checked here too: under steady load `recv` is always ready, and
            // the timeout above would never fire.
            let now = tokio::time::Instant::now();
            if self.failed.is_none() && *sync_at.get_or_insert(now + fsync_interval) <= now {
                self.sync().await;
                sync_at = None;
            }
        }
    }

    /// Appends the unwritten records, after a gap record if records were
    /// lost since the last one.
    async fn write(&mut self) {
        let lost = self.shared.dropped.load(Ordering::Relaxed) - self.reported;
        let mut records = Vec::with_capacity(self.unwritten.len() + 1);
        if lost > 0 {
            records.push(AuditRecord::Gap(GapRecord {
                time: Timestamp::now(),
                lost,
                cause: if self.write_failed {
                    GapCause::WriteFailed
                } else {
                    GapCause::QueueFull
                },
            }));
        }
        records.append(&mut self.unwritten);
        if records.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut writer = self.writer.take().expect("the writer is back");
        let seq_before = writer.seq();
        let (writer, records, result) = blocking(move || {
            let result = writer.append(&records, now);
            (writer, records, result)
        })
        .await;
        self.writer = Some(writer);
        match result {
            Ok(()) => {
                self.reported += lost;
                self.write_failed = false;
            }
            Err(error) => self.fail(records, seq_before, error),
        }
    }

    /// Makes what was appended durable; a failure takes the log down.
    async fn sync(&mut self) {
        let mut writer = self.writer.take().expect("the writer is back");
        let seq_before = writer.seq();
        let (writer, result) = blocking(move || {
            let result = writer.sync();
            (writer, result)
        })
        .await;
        self.writer = Some(writer);
        if let Err(error) = result {
            self.fail(Vec::new(), seq_before, error);
        }
    }

    /// The log is down: statements touching protected columns are refused
    /// (with `on_failure = "refuse"`) until [`Self::resume`] succeeds.
    fn fail(&mut self, records: Vec<AuditRecord>, seq_before: u64, error: AuditError) {
        self.shared.failed.store(true, Ordering::Release);
        self.write_failed = true;
        tracing::error!(
            %error,
            "the audit log cannot be written; trying again every second"
        );
        self.last_logged = Some(Instant::now());
        self.failed = Some(FailedBatch {
            records,
            seq_before,
            error,
        });
    }

    /// Tries to continue the log after a failure: seals what is on disk
    /// and takes back the records of the failed batch that did not reach
    /// it, then writes them.
    async fn resume(&mut self) {
        let Some(failed) = self.failed.take() else {
            return;
        };
        let now = SystemTime::now();
        let mut writer = self.writer.take().expect("the writer is back");
        let (writer, result) = blocking(move || {
            let result = writer.resume(now);
            (writer, result)
        })
        .await;
        self.writer = Some(writer);
        let on_disk = match result {
            Ok(seq) => seq,
            Err(error) => {
                let now = Instant::now();
                if self
                    .last_logged
                    .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
                {
                    self.last_logged = Some(now);
                    tracing::warn!(%error, "the audit log is still down");
                }
                self.failed = Some(FailedBatch { error, ..failed });
                return;
            }
        };
        self.take_back(failed, on_disk);
        self.shared.failed.store(false, Ordering::Release);
        tracing::warn!(
            lost = self.shared.dropped.load(Ordering::Relaxed) - self.reported,
            "the audit log is writable again; a gap record counts the records lost meanwhile"
        );
        self.write().await;
    }

    /// After a resume found the chain at `on_disk`: the failed batch's
    /// records beyond it go back to be written, ahead of those queued
    /// since. Records that were written before the batch but are no
    /// longer on disk count as lost.
    fn take_back(&mut self, failed: FailedBatch, on_disk: u64) {
        let found = on_disk.saturating_sub(failed.seq_before) as usize;
        let vanished = failed.seq_before.saturating_sub(on_disk);
        self.shared.dropped.fetch_add(vanished, Ordering::Relaxed);
        let mut records = failed.records;
        let found = found.min(records.len());
        for record in records.drain(..found) {
            if let AuditRecord::Gap(gap) = record {
                self.reported += gap.lost;
            }
        }
        // A gap record not written is written again, with the new count.
        records.retain(|record| !matches!(record, AuditRecord::Gap(_)));
        records.append(&mut self.unwritten);
        self.unwritten = records;
    }

    /// Writes what is left and seals the file. A log still down gets one
    /// more attempt; if it fails, the records not written are lost.
    async fn finish(&mut self) -> Result<(), AuditError> {
        if self.failed.is_some() {
            self.resume().await;
        } else {
            self.write().await;
        }
        if let Some(failed) = self.failed.take() {
            let lost = failed.records.len() + self.unwritten.len();
            self.shared
                .dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
            tracing::error!(lost, "the audit log is down at shutdown; records are lost");
            return Err(failed.error);
        }
        let now = SystemTime::now();
        let mut writer = self.writer.take().expect("the writer is back");
        blocking(move || writer.close(now)).await
    }
}

/// Takes the records queued from `first` on into `records`, up to
/// [`MAX_BATCH`] or a shutdown command, which is returned.
fn gather(
    first: Command,
    rx: &mut mpsc::Receiver<Command>,
    records: &mut Vec<AuditRecord>,
) -> Option<oneshot::Sender<()>> {
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(command) = next {
        match command {
            Command::Record(record) => records.push(record),
            Command::Shutdown(ack) => return Some(ack),
        }
        taken += 1;
        next = (taken < MAX_BATCH).then(|| rx.try_recv().ok()).flatten();
    }
    None
}

/// Runs `f` on a blocking thread.
async fn blocking<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}
