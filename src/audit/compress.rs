//! Sealed audit files, compressed: writing the compressed form without
//! ever risking the only copy, and reading either form.
//!
//! A sealed `NAME.jsonl` is replaced by `NAME.jsonl.zst` (Zstandard)
//! holding the same bytes, so the seal's hash and signature still check.
//! The steps are ordered so that a crash at any point leaves a complete
//! copy:
//!
//! 1. write `NAME.jsonl.zst` and sync it;
//! 2. read it back and decompress it: every byte must come out, with the
//!    original's length and with the checksum of the original that the
//!    frame carries (which the decoder checks);
//! 3. only then remove `NAME.jsonl`, and sync the directory.
//!
//! The check is against corruption, not against an adversary: whoever
//! could alter the copy could alter the original, and `pgveil audit
//! verify` checks either form against the seal's SHA-256 and signature.
//!
//! While both exist, `NAME.jsonl` is the file (the compressed copy may be
//! unfinished): readers use it, and a writer starting up compresses it
//! again. Compression runs on a thread of its own ([`Compressor`]), so the
//! writer never waits for it, at the idle scheduling class, so it takes
//! only CPU time nothing else wants and never slows the data path; a
//! failure leaves the original in place and is only logged.
//!
//! The level is -1 (`zstd --fast=1`): audit JSON compresses well at any
//! level. A 64 MiB file of pgbench's statement records shrinks to 1/6.2
//! of its size (gzip's fast level: 1/5.9), and compressing and checking
//! it takes about a third of the CPU time gzip's did (BENCHMARKS.md,
//! "Audit cost").

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use zstd::stream::read::Decoder;
use zstd::stream::write::Encoder;

use super::config::MAX_FILE_BYTES;
use super::format::{AuditFile, FileName};

/// Opens the bytes of `file` in `dir`, decompressing the compressed form.
/// If the form listed is gone (compression just finished), the other is
/// tried. Every frame is read, as `zstdcat` would.
pub(super) fn open(dir: &Path, file: &AuditFile) -> io::Result<Box<dyn BufRead + Send>> {
    if file.plain {
        match File::open(dir.join(file.name.to_string())) {
            Ok(plain) => return Ok(Box::new(BufReader::new(plain))),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
    }
    let compressed = File::open(dir.join(file.name.compressed()))?;
    Ok(Box::new(BufReader::new(Decoder::new(compressed)?)))
}

/// The most bytes [`read`] takes from one file: twice the largest
/// `max_file_bytes`, room for a file of that size and its last record. A
/// file that is (or decompresses to) more than this is not one pgveil
/// wrote, and is not read into memory.
const MAX_READ: u64 = 2 * MAX_FILE_BYTES;

/// Every byte of `file` in `dir` (see [`open`]), at most [`MAX_READ`].
pub(super) fn read(dir: &Path, file: &AuditFile) -> io::Result<Vec<u8>> {
    read_at_most(open(dir, file)?, MAX_READ)
}

fn read_at_most(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("holds more than {limit} bytes: larger than any audit file pgveil writes"),
        ));
    }
    Ok(bytes)
}

/// Replaces the sealed file `name` in `dir` by its compressed form, in the
/// order the module documentation gives.
pub(super) fn compress(dir: &Path, name: FileName) -> io::Result<()> {
    let plain = dir.join(name.to_string());
    let packed = dir.join(name.compressed());
    let mut encoder = Encoder::new(BufWriter::new(create(&packed)?), LEVEL)?;
    encoder.include_checksum(true)?;
    let original = io::copy(&mut File::open(&plain)?, &mut encoder)?;
    let out = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    if !holds(File::open(&packed)?, original) {
        fs::remove_file(&packed)?;
        return Err(io::Error::other(
            "the compressed copy differs from the file; the file is kept",
        ));
    }
    sync_dir(dir)?;
    fs::remove_file(&plain)?;
    sync_dir(dir)
}

/// The compression level (see the module documentation).
const LEVEL: i32 = -1;

/// Whether `packed` decompresses whole to `len` bytes: the decoder checks
/// each frame's checksum of what went in.
fn holds(packed: impl Read, len: u64) -> bool {
    Decoder::new(packed)
        .and_then(|mut decoder| io::copy(&mut decoder, &mut io::sink()))
        .ok()
        == Some(len)
}

/// Makes the directory's entries durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates (or truncates an unfinished) compressed file, readable by its
/// owner only.
fn create(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Puts the calling thread in the idle scheduling class (Linux
/// `SCHED_IDLE`): it runs only when no other thread wants the CPU. One of
/// the two `unsafe` blocks of the crate (the other asks whether the process
/// is root).
#[allow(unsafe_code)]
fn run_when_idle() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param; 0 names this thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            tracing::debug!(
                error = %io::Error::last_os_error(),
                "audit compression keeps the normal scheduling class"
            );
        }
    }
}

/// Compresses sealed files, one at a time, on a thread started with the
/// first one.
pub(super) struct Compressor {
    dir: PathBuf,
    worker: Option<(mpsc::Sender<FileName>, JoinHandle<()>)>,
}

impl Compressor {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir, worker: None }
    }

    /// Queues the sealed file `name`.
    pub(super) fn compress(&mut self, name: FileName) {
        let (jobs, _) = self.worker.get_or_insert_with(|| {
            let (jobs, queue) = mpsc::channel::<FileName>();
            let dir = self.dir.clone();
            let thread = std::thread::spawn(move || {
                run_when_idle();
                for name in queue {
                    match compress(&dir, name) {
                        Ok(()) => tracing::debug!(file = %name, "compressed a sealed audit file"),
                        Err(error) => tracing::warn!(
                            file = %name,
                            %error,
                            "cannot compress a sealed audit file; it stays as it is"
                        ),
                    }
                }
            });
            (jobs, thread)
        });
        // The thread ends only when `jobs` is dropped, in `finish`.
        let _ = jobs.send(name);
    }

    /// Waits until every queued file is compressed.
    pub(super) fn finish(&mut self) {
        if let Some((jobs, thread)) = self.worker.take() {
            drop(jobs);
            let _ = thread.join();
        }
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_compressed_copy_holds_the_file_only_if_every_byte_comes_back() {
        let original: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut encoder = Encoder::new(Vec::new(), LEVEL).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(&original).unwrap();
        let packed = encoder.finish().unwrap();
        let len = original.len() as u64;
        assert!(holds(&packed[..], len));
        assert!(!holds(&packed[..], len + 1), "a copy of another length");
        assert!(!holds(&packed[..packed.len() - 1], len), "a truncated copy");
        // A byte of the checksum, then bytes of the compressed blocks.
        for at in [packed.len() - 2, packed.len() / 2, 20] {
            let mut corrupt = packed.clone();
            corrupt[at] ^= 0x10;
            assert!(!holds(&corrupt[..], len), "a byte changed at {at}");
        }
    }

    #[test]
    fn reads_stop_at_the_limit_however_well_the_data_compresses() {
        // A megabyte of zeros compresses to a few dozen bytes.
        let packed = zstd::encode_all(&vec![0; 1 << 20][..], LEVEL).unwrap();
        assert!(packed.len() < 8192);
        let whole = read_at_most(Decoder::new(&packed[..]).unwrap(), 1 << 20).unwrap();
        assert_eq!(whole.len(), 1 << 20);
        let err = read_at_most(Decoder::new(&packed[..]).unwrap(), (1 << 20) - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("larger than any audit file"));
    }
}
