//! The data path's side of the audit log: a handle that queues records
//! without ever waiting, and the task that writes them.
//!
//! [`AuditHandle::record`] serializes the record into a bounded queue of
//! record bodies ([`Bodies`]), under a lock held for that only, and wakes
//! the writer when the queue was empty. The writer runs on a thread of its
//! own (one blocking task for the life of the log), so that the runtime's
//! worker threads never wake for it: it lets records gather for a few
//! milliseconds, takes the whole queue at once, appends it, and syncs the
//! file at most `fsync_interval_ms` after a write. Only bytes cross from
//! the sessions to the writer: no allocation per record, no reference
//! count touched on two threads.
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
//! file and syncs it; the writer also seals when the last handle is
//! dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::{AuditConfig, OnFailure};
use super::format::{Bodies, Body};
use super::keys::AuditKeys;
use super::line::StatementLine;
use super::record::{AuditRecord, GapCause, GapRecord, Timestamp};
use super::writer::{AuditError, LogWriter};

/// The shortest time between two warnings about dropped records.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often a failed log tries to continue.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long the writer lets records gather after the first of a batch:
/// under load, one wake-up and one write per batch instead of per record,
/// which is what keeps the log's cost off a busy machine's CPUs.
const LINGER: Duration = Duration::from_millis(5);

/// The audit log cannot take the record: its queue is full or its writer
/// has failed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the audit log is unavailable (queue full or writer failed)")]
pub struct AuditUnavailable;

/// Starts the audit writer.
pub struct AuditSink;

impl AuditSink {
    /// Continues the log in `config.dir` and starts its writer, which
    /// ends after the log is sealed, or with the error that kept it from
    /// being sealed. Must run inside a tokio runtime (the writer is one of
    /// its blocking tasks); reads (and may seal) the newest file first.
    pub fn start(
        config: &AuditConfig,
        keys: Arc<AuditKeys>,
    ) -> Result<(AuditHandle, JoinHandle<Result<(), AuditError>>), AuditError> {
        config.validate()?;
        let writer = LogWriter::open(config, keys, SystemTime::now())?;
        let shared = Arc::new(SinkState::new(config.queue_capacity));
        shared
            .written
            .store(writer.written_on_open(), Ordering::Relaxed);
        let fsync_interval = Duration::from_millis(config.fsync_interval_ms);
        let for_writer = shared.clone();
        let task = tokio::task::spawn_blocking(move || run(writer, for_writer, fsync_interval));
        let handle = AuditHandle {
            _alive: Arc::new(Alive(shared.clone())),
            shared,
            on_failure: config.on_failure,
        };
        Ok((handle, task))
    }
}

/// Queues records for the writer. Cheap to clone; one per session.
#[derive(Clone, Debug)]
pub struct AuditHandle {
    shared: Arc<SinkState>,
    /// Shared by every clone: the writer learns when the last is dropped.
    _alive: Arc<Alive>,
    on_failure: OnFailure,
}

/// Tells the writer, when the last handle drops it, that no more records
/// can come.
#[derive(Debug)]
struct Alive(Arc<SinkState>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.lock_queue().orphaned = true;
        self.0.changed.notify_one();
    }
}

/// State the handles and the writer share.
#[derive(Debug)]
struct SinkState {
    queue: Mutex<Queue>,
    /// Told when a record lands in an empty queue, a shutdown is asked
    /// for, or the last handle is dropped.
    changed: Condvar,
    /// The most records the queue holds.
    capacity: usize,
    /// Whether the queue is full or closed, kept with it, so that asking
    /// (once per revealed value) takes no lock.
    full: AtomicBool,
    failed: AtomicBool,
    dropped: AtomicU64,
    /// Records appended to the log (gap records included).
    written: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// Records waiting for the writer, and what else it must hear of.
#[derive(Debug, Default)]
struct Queue {
    bodies: Bodies,
    /// Set when the writer stops taking records.
    closed: bool,
    /// Shutdowns asked for, each answered once everything queued before
    /// it is written and sealed.
    shutdowns: Vec<oneshot::Sender<()>>,
    /// Set when the last handle is dropped.
    orphaned: bool,
}

impl SinkState {
    fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::default(),
            changed: Condvar::new(),
            capacity,
            full: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_warning: Mutex::default(),
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `record` unless the queue is full or closed.
    fn enqueue(&self, record: &impl Body) -> bool {
        let mut queue = self.lock_queue();
        if queue.closed || queue.bodies.len() >= self.capacity {
            return false;
        }
        let was_empty = queue.bodies.is_empty();
        queue.bodies.push(record);
        if queue.bodies.len() >= self.capacity {
            self.full.store(true, Ordering::Relaxed);
        }
        drop(queue);
        if was_empty {
            self.changed.notify_one();
        }
        true
    }

    /// Everything queued; with `close`, nothing is queued any more.
    fn take(&self, close: bool) -> Bodies {
        let mut queue = self.lock_queue();
        queue.closed |= close;
        self.full.store(queue.closed, Ordering::Relaxed);
        queue.bodies.take()
    }

    /// Whether the queue has room and is open.
    fn has_room(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }

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
        self.queue(&record)
    }

    /// Queues a statement record, as [`Self::record`] does.
    pub(crate) fn record_statement(
        &self,
        line: &StatementLine<'_>,
    ) -> Result<(), AuditUnavailable> {
        self.queue(line)
    }

    fn queue(&self, body: &impl Body) -> Result<(), AuditUnavailable> {
        if !self.shared.failed.load(Ordering::Acquire) && self.shared.enqueue(body) {
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
    pub(crate) fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire) && self.shared.has_room()
    }

    /// Whether statements touching protected columns must be refused now:
    /// the log is not healthy and `on_failure` is `refuse`.
    pub(crate) fn refusing(&self) -> bool {
        self.on_failure == OnFailure::Refuse && !self.healthy()
    }

    /// Records that were not logged, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records appended to the log since the start, gap records included.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Records queued for the writer now.
    pub fn queued(&self) -> usize {
        self.shared.lock_queue().bodies.len()
    }

    /// Writes every record queued so far, seals the file and stops the
    /// writer. Records queued afterwards are dropped. If the log is down
    /// and cannot be resumed, or the writer has stopped, this returns
    /// [`AuditError::Stopped`] and the writer's task returns (and logs)
    /// the cause.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        {
            let mut queue = self.shared.lock_queue();
            if queue.closed {
                return Err(AuditError::Stopped);
            }
            queue.shutdowns.push(ack);
        }
        self.shared.changed.notify_one();
        done.await.map_err(|_| AuditError::Stopped)
    }
}

/// The writer, on its thread.
fn run(
    writer: LogWriter,
    shared: Arc<SinkState>,
    fsync_interval: Duration,
) -> Result<(), AuditError> {
    let _closing = Closing(shared.clone());
    let result = Task::new(writer, shared.clone()).serve(fsync_interval);
    if let Err(error) = &result {
        shared.failed.store(true, Ordering::Release);
        tracing::error!(%error, "the audit log stopped; no more records are written");
    }
    result
}

/// Closes the queue however the writer ends, a panic included: what is
/// queued counts as dropped, and shutdowns still waiting return
/// `Stopped` rather than wait for a writer that is gone.
struct Closing(Arc<SinkState>);

impl Drop for Closing {
    fn drop(&mut self) {
        let shared = &self.0;
        if std::thread::panicking() {
            shared.failed.store(true, Ordering::Release);
        }
        let (lost, unanswered) = {
            let mut queue = shared.lock_queue();
            queue.closed = true;
            shared.full.store(true, Ordering::Relaxed);
            (
                queue.bodies.take().len(),
                std::mem::take(&mut queue.shutdowns),
            )
        };
        drop(unanswered);
        shared.dropped.fetch_add(lost as u64, Ordering::Relaxed);
    }
}

/// What the writer wakes up for.
enum Wake {
    /// Records are queued.
    Queued,
    /// Shutdowns to answer once the log is sealed, or none when every
    /// handle is gone.
    Stop(Vec<oneshot::Sender<()>>),
    /// The deadline passed.
    Elapsed,
}

/// The writer and what it knows beyond the files.
struct Task {
    writer: LogWriter,
    shared: Arc<SinkState>,
    /// Dropped records already counted in a written gap record.
    reported: u64,
    /// Whether a write failed since the last gap record was written.
    write_failed: bool,
    /// The batch whose write failed, while the log is down.
    failed: Option<FailedBatch>,
    /// Records taken from the queue and not written yet.
    unwritten: Bodies,
    /// When a failing resume was last logged.
    last_logged: Option<Instant>,
}

/// A batch whose write failed: some of it may be on disk.
struct FailedBatch {
    bodies: Bodies,
    /// When the batch starts with a gap record, the records it counts.
    gap: Option<u64>,
    /// The chain's last seq before the batch.
    seq_before: u64,
    error: AuditError,
}

impl Task {
    fn new(writer: LogWriter, shared: Arc<SinkState>) -> Self {
        Self {
            writer,
            shared,
            reported: 0,
            write_failed: false,
            failed: None,
            unwritten: Bodies::default(),
            last_logged: None,
        }
    }

    /// Writes until a shutdown or the last handle is dropped, then seals
    /// the log.
    fn serve(&mut self, fsync_interval: Duration) -> Result<(), AuditError> {
        let mut sync_at: Option<Instant> = None;
        loop {
            let deadline = match self.failed {
                Some(_) => Some(Instant::now() + RETRY_EVERY),
                None => sync_at,
            };
            match self.wait(deadline) {
                Wake::Elapsed if self.failed.is_some() => {
                    self.resume();
                    continue;
                }
                Wake::Elapsed => {
                    self.sync();
                    sync_at = None;
                    continue;
                }
                Wake::Stop(shutdowns) => {
                    self.finish()?;
                    for ack in shutdowns {
                        let _ = ack.send(());
                    }
                    return Ok(());
                }
                Wake::Queued => {}
            }
            if self.failed.is_none() {
                std::thread::sleep(LINGER);
            }
            self.unwritten.append(&mut self.shared.take(false));
            if self.failed.is_none() {
                self.write();
            }
            // Checked here too: under steady load records are always
            // queued, and the deadline above would never pass.
            let now = Instant::now();
            if self.failed.is_none() && *sync_at.get_or_insert(now + fsync_interval) <= now {
                self.sync();
                sync_at = None;
            }
        }
    }

    /// Waits for records, a shutdown, the last handle to go, or the
    /// deadline.
    fn wait(&self, deadline: Option<Instant>) -> Wake {
        let mut queue = self.shared.lock_queue();
        loop {
            if !queue.shutdowns.is_empty() || queue.orphaned {
                return Wake::Stop(std::mem::take(&mut queue.shutdowns));
            }
            if !queue.bodies.is_empty() {
                return Wake::Queued;
            }
            let changed = &self.shared.changed;
            queue = match deadline.map(|at| at.saturating_duration_since(Instant::now())) {
                None => changed.wait(queue).unwrap_or_else(|e| e.into_inner()),
                Some(Duration::ZERO) => return Wake::Elapsed,
                Some(left) => {
                    changed
                        .wait_timeout(queue, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Appends the unwritten records, after a gap record if records were
    /// lost since the last one.
    fn write(&mut self) {
        let lost = self.shared.dropped.load(Ordering::Relaxed) - self.reported;
        let mut batch = Bodies::default();
        let gap = (lost > 0).then_some(lost);
        if gap.is_some() {
            batch.push(&AuditRecord::Gap(GapRecord {
                time: Timestamp::now(),
                lost,
                cause: if self.write_failed {
                    GapCause::WriteFailed
                } else {
                    GapCause::QueueFull
                },
            }));
        }
        batch.append(&mut self.unwritten);
        if batch.is_empty() {
            return;
        }
        let seq_before = self.writer.seq();
        match self.writer.append(&batch, SystemTime::now()) {
            Ok(()) => {
                self.shared
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.reported += lost;
                self.write_failed = false;
            }
            Err(error) => self.fail(batch, gap, seq_before, error),
        }
    }

    /// Makes what was appended durable; a failure takes the log down.
    fn sync(&mut self) {
        let seq_before = self.writer.seq();
        if let Err(error) = self.writer.sync() {
            self.fail(Bodies::default(), None, seq_before, error);
        }
    }

    /// The log is down: statements touching protected columns are refused
    /// (with `on_failure = "refuse"`) until [`Self::resume`] succeeds.
    fn fail(&mut self, bodies: Bodies, gap: Option<u64>, seq_before: u64, error: AuditError) {
        self.shared.failed.store(true, Ordering::Release);
        self.write_failed = true;
        tracing::error!(
            %error,
            "the audit log cannot be written; trying again every second"
        );
        self.last_logged = Some(Instant::now());
        self.failed = Some(FailedBatch {
            bodies,
            gap,
            seq_before,
            error,
        });
    }

    /// Tries to continue the log after a failure: seals what is on disk
    /// and takes back the records of the failed batch that did not reach
    /// it, then writes them.
    fn resume(&mut self) {
        let Some(failed) = self.failed.take() else {
            return;
        };
        let on_disk = match self.writer.resume(SystemTime::now()) {
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
        self.write();
    }

    /// After a resume found the chain at `on_disk`: the failed batch's
    /// records beyond it go back to be written, ahead of those queued
    /// since. Records that were written before the batch but are no
    /// longer on disk count as lost.
    fn take_back(&mut self, failed: FailedBatch, on_disk: u64) {
        let found = on_disk.saturating_sub(failed.seq_before) as usize;
        let vanished = failed.seq_before.saturating_sub(on_disk);
        self.shared.dropped.fetch_add(vanished, Ordering::Relaxed);
        let mut bodies = failed.bodies;
        let found = found.min(bodies.len());
        self.shared
            .written
            .fetch_add(found as u64, Ordering::Relaxed);
        match failed.gap {
            // Its count is on disk now.
            Some(lost) if found > 0 => self.reported += lost,
            // Not written: it is written again, with the new count.
            Some(_) => bodies.drain_front(1),
            None => {}
        }
        bodies.drain_front(found);
        bodies.append(&mut self.unwritten);
        self.unwritten = bodies;
    }

    /// Writes what is left and seals the file. A log still down gets one
    /// more attempt; if it fails, the records not written are lost.
    fn finish(&mut self) -> Result<(), AuditError> {
        self.unwritten.append(&mut self.shared.take(true));
        if self.failed.is_some() {
            self.resume();
        } else {
            self.write();
        }
        if let Some(failed) = self.failed.take() {
            let gap = usize::from(failed.gap.is_some());
            let lost = failed.bodies.len() - gap + self.unwritten.len();
            self.shared
                .dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
            tracing::error!(lost, "the audit log is down at shutdown; records are lost");
            return Err(failed.error);
        }
        self.writer.close(SystemTime::now())
    }
}
