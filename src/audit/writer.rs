//! The file side of the audit log, synchronous: continuing the chain from
//! the newest file on start, appending records, rotating, sealing and
//! deleting expired files. [`super::sink`] runs it off the async threads.
//!
//! On start the newest file is read. If it is sealed, the chain continues
//! from its seal in a new file. If a crash left it open, its records are
//! checked (seq and MAC chain), a partly written last line is cut off, and
//! it is sealed with `"recovered": true`. A file whose records do not
//! verify stops the start: it is evidence, and only a person should move
//! it aside. A file without a complete line (created just before a crash)
//! is removed. After a failed write, [`LogWriter::resume`] does the same
//! without a restart.
//!
//! A file left open on start means the previous run did not end cleanly
//! (a clean stop seals the log): the writer then writes an
//! `unclean_shutdown` record first ([`UncleanShutdownRecord`]), naming
//! that file and its last seq, and syncs it before it takes any other
//! record, so that a run killed again at once still leaves it. A run
//! killed before it opened its first file (it had written nothing) leaves
//! no open file, and so no such record: what it had queued is lost
//! without a trace.
//!
//! A directory has one writer at a time: two would fork the chain. The
//! writer holds an exclusive lock (`flock`, through [`File::try_lock`]) on
//! the directory itself from before it reads the newest file until it
//! closes the log, and a second writer (another `pgveil serve`, a
//! `pgveil migrate` on the same directory) fails to open with
//! [`AuditError::Locked`]. The lock is on the directory rather than on a
//! file in it so that the directory holds only audit files; the kernel
//! releases it when the process ends, however it ends.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;

use super::compress::{self, Compressor};
use super::config::AuditConfig;
use super::format::{
    encode_mac, is_seal, list_files, record_line, Bodies, ChainHead, Day, FileHash, FileName,
    Header, Seal,
};
use super::keys::AuditKeys;
use super::record::{AuditRecord, Timestamp, UncleanShutdownRecord};
use super::verify::{scan_file, Checker, Tail, VerifyError};

/// The audit log cannot be written.
#[derive(Debug, Error)]
pub enum AuditError {
    #[error("audit log: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "audit log: the newest file does not verify, so the chain cannot continue \
         (inspect it, and move it aside to start from the file before): {0}"
    )]
    Corrupt(#[source] VerifyError),
    #[error(transparent)]
    Config(#[from] super::config::AuditConfigError),
    #[error("audit log: the writer has stopped (the writer task's result says why)")]
    Stopped,
    #[error(
        "audit log: {dir} is being written by another pgveil process (it holds the \
         directory's lock); a directory has one writer, so give each its own `dir`"
    )]
    Locked { dir: PathBuf },
}

/// Maps an I/O error on `path`.
fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        action,
        path: path.into(),
        source,
    }
}

/// How many bytes at the end of a file hold its seal line.
const SEAL_TAIL: u64 = 4096;

pub(super) struct LogWriter {
    dir: PathBuf,
    /// The directory, opened and locked while the log is open (see the
    /// module documentation); `None` once closed.
    lock: Option<File>,
    keys: Arc<AuditKeys>,
    max_file_bytes: u64,
    retention_days: u32,
    /// The last record written.
    head: ChainHead,
    /// The newest file, open or sealed.
    newest: Option<FileName>,
    current: Option<OpenFile>,
    /// Compresses sealed files, with `compress = true`.
    compressor: Option<Compressor>,
    /// The line being written, kept for its capacity.
    line: Vec<u8>,
    /// Records written by [`Self::open`] itself (an unclean-shutdown
    /// record).
    written_on_open: u64,
}

/// The file being written.
struct OpenFile {
    name: FileName,
    path: PathBuf,
    file: File,
    /// The UTC day it was opened; the file is sealed when the day changes.
    day: Day,
    anchor: ChainHead,
    len: u64,
    hash: FileHash,
    /// Lines not yet written to the file.
    pending: Vec<u8>,
    unsynced: bool,
}

impl OpenFile {
    fn push(&mut self, line: &[u8]) {
        self.hash.update(line);
        self.len += line.len() as u64;
        self.pending.extend_from_slice(line);
    }

    fn flush(&mut self) -> Result<(), AuditError> {
        if !self.pending.is_empty() {
            self.file
                .write_all(&self.pending)
                .map_err(io_error("write", &self.path))?;
            self.pending.clear();
            self.unsynced = true;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), AuditError> {
        self.flush()?;
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(io_error("sync", &self.path))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

impl LogWriter {
    /// Opens `config.dir` (creating it), continues the chain from its
    /// newest file, and deletes expired files.
    pub(super) fn open(
        config: &AuditConfig,
        keys: Arc<AuditKeys>,
        now: SystemTime,
    ) -> Result<Self, AuditError> {
        let dir = config.dir.clone();
        create_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let (head, newest, left_open) = recover(&dir, &keys, now)?;
        let mut writer = Self {
            compressor: config.compress.then(|| Compressor::new(dir.clone())),
            dir,
            lock: Some(lock),
            keys,
            max_file_bytes: config.max_file_bytes,
            retention_days: config.retention_days,
            head,
            newest,
            current: None,
            line: Vec::new(),
            written_on_open: 0,
        };
        if let Some(left_open) = left_open {
            writer.note_unclean_shutdown(left_open, now)?;
        }
        writer.delete_expired(now);
        writer.compress_sealed()?;
        Ok(writer)
    }

    /// Writes and syncs the record saying that the previous run left
    /// `left_open` open.
    fn note_unclean_shutdown(
        &mut self,
        left_open: LeftOpen,
        now: SystemTime,
    ) -> Result<(), AuditError> {
        let record = UncleanShutdownRecord {
            time: Timestamp(now),
            file: left_open.file.to_string(),
            first_seq: left_open.anchor_seq + 1,
            last_seq: self.head.seq,
            torn: left_open.torn,
        };
        tracing::warn!(
            file = %left_open.file,
            last_seq = self.head.seq,
            torn = left_open.torn,
            "the previous run ended without a clean shutdown: records it still held in \
             memory are lost, how many cannot be known; an unclean_shutdown record says so"
        );
        let mut bodies = Bodies::default();
        bodies.push(&AuditRecord::UncleanShutdown(record));
        self.append(&bodies, now)?;
        self.sync()?;
        self.written_on_open = 1;
        Ok(())
    }

    /// Records [`Self::open`] wrote itself.
    pub(super) fn written_on_open(&self) -> u64 {
        self.written_on_open
    }

    /// Appends the records of `bodies` at `now`, rotating as needed. They reach the disk
    /// at the next [`Self::sync`].
    pub(super) fn append(&mut self, bodies: &Bodies, now: SystemTime) -> Result<(), AuditError> {
        let day = Day::of(now);
        let mut line = std::mem::take(&mut self.line);
        for body in bodies.iter() {
            let head = record_line(&mut line, body, self.head, self.keys.record_mac());
            self.push(&line, day, now)?;
            self.head = head;
        }
        self.line = line;
        self.current.as_mut().map_or(Ok(()), OpenFile::flush)
    }

    /// Appends the line of the record after the chain head, in a new file
    /// if the day changed or the current one is full.
    fn push(&mut self, line: &[u8], day: Day, now: SystemTime) -> Result<(), AuditError> {
        if self.current.as_ref().is_some_and(|file| {
            file.day != day
                || (file.len + line.len() as u64 > self.max_file_bytes && file.anchor != self.head)
        }) {
            self.seal_current(now)?;
        }
        let file = match &mut self.current {
            Some(file) => file,
            None => self.start_file(day)?,
        };
        file.push(line);
        Ok(())
    }

    /// The seq of the last record appended.
    pub(super) fn seq(&self) -> u64 {
        self.head.seq
    }

    /// Continues after a failed append, sync or seal, which left the open
    /// file in a state only the disk knows: forgets that file and does what
    /// a start does (see the module documentation), so the newest file is
    /// cut after its last complete record and sealed as recovered, and the
    /// chain goes on in a new file. Returns the seq of the last record on
    /// disk, which the chain continues from. Fails, and may be called
    /// again, while the disk still cannot take the seal.
    pub(super) fn resume(&mut self, now: SystemTime) -> Result<u64, AuditError> {
        self.current = None;
        create_dir(&self.dir)?;
        // Left open by this run's failed write: its gap record tells.
        let (head, newest, _) = recover(&self.dir, &self.keys, now)?;
        self.head = head;
        self.newest = newest;
        self.compress_sealed()?;
        Ok(head.seq)
    }

    /// Makes every appended record durable.
    pub(super) fn sync(&mut self) -> Result<(), AuditError> {
        self.current.as_mut().map_or(Ok(()), OpenFile::sync)
    }

    /// Seals the open file, if any, waits until sealed files are
    /// compressed, and releases the directory for the next writer.
    pub(super) fn close(&mut self, now: SystemTime) -> Result<(), AuditError> {
        if self.current.is_some() {
            self.seal_current(now)?;
        }
        if let Some(compressor) = &mut self.compressor {
            compressor.finish();
        }
        self.lock = None;
        Ok(())
    }

    fn start_file(&mut self, day: Day) -> Result<&mut OpenFile, AuditError> {
        let name = FileName::next(day, self.newest);
        let path = self.dir.join(name.to_string());
        let file = create_file(&path)?;
        compress::sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
        self.newest = Some(name);
        let mut file = OpenFile {
            name,
            path,
            file,
            day,
            anchor: self.head,
            len: 0,
            hash: FileHash::new(self.keys.suite()),
            pending: Vec::new(),
            unsynced: false,
        };
        file.push(&Header::new(name, self.head, self.keys.suite()).line());
        Ok(self.current.insert(file))
    }

    fn seal_current(&mut self, now: SystemTime) -> Result<(), AuditError> {
        let mut file = self.current.take().expect("called with an open file");
        file.flush()?;
        let seal = seal_line(
            &self.keys,
            file.name,
            file.anchor,
            self.head,
            file.hash,
            false,
            now,
        );
        file.file
            .write_all(&seal)
            .map_err(io_error("seal", &file.path))?;
        file.file.sync_all().map_err(io_error("sync", &file.path))?;
        if let Some(compressor) = &mut self.compressor {
            compressor.compress(file.name);
        }
        self.delete_expired(now);
        Ok(())
    }

    /// Deletes expired files. A failure loses no record, so it is only
    /// logged, and the next seal tries again.
    fn delete_expired(&self, now: SystemTime) {
        if let Err(error) = self.try_delete_expired(now) {
            tracing::warn!(%error, "cannot delete expired audit files");
        }
    }

    /// Deletes sealed files of days more than `retention_days` before
    /// `now`, oldest first, stopping at the first file that is not sealed
    /// (a compressed file is: only sealed files are compressed). The
    /// newest file always stays: the chain continues from it.
    fn try_delete_expired(&self, now: SystemTime) -> Result<(), AuditError> {
        if self.retention_days == 0 {
            return Ok(());
        }
        let cutoff = Day::days_before(now, self.retention_days);
        let files = list_files(&self.dir).map_err(io_error("list", &self.dir))?;
        let older = &files[..files.len().saturating_sub(1)];
        for file in older.iter().take_while(|file| file.name.day < cutoff) {
            let plain = self.dir.join(file.name.to_string());
            if file.plain && !ends_with_seal(&plain).map_err(io_error("read", &plain))? {
                break;
            }
            for (exists, path) in [
                (file.plain, plain),
                (file.compressed, self.dir.join(file.name.compressed())),
            ] {
                if exists {
                    fs::remove_file(&path).map_err(io_error("delete", &path))?;
                }
            }
            tracing::info!(file = %file.name, "deleted an expired audit file");
        }
        Ok(())
    }

    /// Queues every sealed file not compressed yet (or whose compression
    /// a crash interrupted) for compression, if it is on.
    fn compress_sealed(&mut self) -> Result<(), AuditError> {
        let Some(compressor) = &mut self.compressor else {
            return Ok(());
        };
        let files = list_files(&self.dir).map_err(io_error("list", &self.dir))?;
        for file in files.iter().filter(|file| file.plain) {
            let path = self.dir.join(file.name.to_string());
            if ends_with_seal(&path).map_err(io_error("read", &path))? {
                compressor.compress(file.name);
            }
        }
        Ok(())
    }
}

/// The signed seal of file `name`, which runs from `anchor` to `head` and
/// whose bytes so far hash to `hash`.
fn seal_line(
    keys: &AuditKeys,
    name: FileName,
    anchor: ChainHead,
    head: ChainHead,
    hash: FileHash,
    recovered: bool,
    now: SystemTime,
) -> Vec<u8> {
    let (sha256, sm3) = hash.finish();
    Seal {
        file: name.to_string(),
        first_seq: anchor.seq + 1,
        last_seq: head.seq,
        last_mac: encode_mac(&head.mac),
        sha256,
        sm3,
        recovered,
        sealed: Timestamp(now),
        suite: keys.suite(),
    }
    .line(keys.signing_key())
}

/// A newest file found open by [`recover`]: sealed, or removed if it
/// held no complete line.
struct LeftOpen {
    file: FileName,
    /// The seq its header continues from (the chain head, for a file
    /// removed).
    anchor_seq: u64,
    /// It ended in a partly written record, which was cut off.
    torn: bool,
}

/// Finds the chain head to continue from and the newest file, sealing that
/// file if a crash left it open (and then saying which).
fn recover(
    dir: &Path,
    keys: &AuditKeys,
    now: SystemTime,
) -> Result<(ChainHead, Option<FileName>, Option<LeftOpen>), AuditError> {
    let mut files = list_files(dir).map_err(io_error("list", dir))?;
    // A file removed below: the run that created it ended just after.
    let mut removed = None;
    while let Some(&newest) = files.last() {
        let path = dir.join(newest.entry());
        let bytes = compress::read(dir, &newest).map_err(io_error("read", &path))?;
        if newest.plain && !bytes.contains(&b'\n') {
            // Empty, or a partly written header: created just before a
            // crash or a failed write, with no record in it.
            fs::remove_file(&path).map_err(io_error("delete", &path))?;
            files.pop();
            removed = removed.or(Some(newest.name));
            continue;
        }
        let checker = Checker::new(Some(keys.mac_key()), keys.public_key())
            .expect("the signing key's own public key parses");
        // Only a file as written can have been left open.
        let tail = if newest.plain {
            Tail::Open
        } else {
            Tail::Sealed
        };
        let scanned =
            scan_file(&newest, &bytes, None, &checker, tail).map_err(AuditError::Corrupt)?;
        let mut left_open = removed.map(|file| LeftOpen {
            file,
            anchor_seq: scanned.head.seq,
            torn: false,
        });
        if scanned.sealed.is_none() {
            left_open = Some(LeftOpen {
                file: newest.name,
                anchor_seq: scanned.anchor.seq,
                torn: scanned.complete < bytes.len(),
            });
            let complete = &bytes[..scanned.complete];
            let hash = FileHash::of(keys.suite(), complete);
            let seal = seal_line(
                keys,
                newest.name,
                scanned.anchor,
                scanned.head,
                hash,
                true,
                now,
            );
            let mut file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error("open", &path))?;
            file.set_len(complete.len() as u64)
                .and_then(|()| file.write_all(&seal))
                .and_then(|()| file.sync_all())
                .map_err(io_error("seal", &path))?;
            tracing::warn!(file = %newest.name, "sealed an audit file left open by a crash or a failed write");
        }
        return Ok((scanned.head, Some(newest.name), left_open));
    }
    let left_open = removed.map(|file| LeftOpen {
        file,
        anchor_seq: 0,
        torn: false,
    });
    Ok((ChainHead::GENESIS, None, left_open))
}

/// Whether the file's last line is a seal (not whether the seal is valid).
fn ends_with_seal(path: &Path) -> io::Result<bool> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(SEAL_TAIL)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Ok(false);
    };
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Ok(is_seal(&body[start..]))
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_error("create", dir))
}

/// Opens `dir` and takes its exclusive lock, without waiting.
fn lock_dir(dir: &Path) -> Result<File, AuditError> {
    let handle = File::open(dir).map_err(io_error("open", dir))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(fs::TryLockError::WouldBlock) => Err(AuditError::Locked { dir: dir.into() }),
        Err(fs::TryLockError::Error(e)) => Err(io_error("lock", dir)(e)),
    }
}

fn create_file(path: &Path) -> Result<File, AuditError> {
    let mut options = OpenOptions::new();
    options.append(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io_error("create", path))
}
