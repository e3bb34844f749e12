//! Checking an audit directory: every file in order, the seq and MAC chain
//! within and across files, and each file's seal.
//!
//! Line by line, a file must have a header naming the file itself and
//! continuing from the previous file's last seq and MAC; records numbered
//! one more than the record before, each MAC (with the MAC key) computed
//! over the previous MAC and the record's canonical bytes; and, last, a
//! seal whose Ed25519 signature verifies, that names the file, its first
//! and last seq and last MAC, and the SHA-256 of everything before it.
//! The first failure is reported with its file and line. Entries not named
//! like audit files are ignored, so renaming a file away removes it.
//!
//! Without the MAC key a record's MAC cannot be recomputed, but an altered
//! record still changes the file's hash, which the signed seal fixes; the
//! MAC key adds the exact line and stops someone who holds the signing key
//! but not the MAC key.
//!
//! # Retention and missing files
//!
//! The oldest remaining file is accepted as it starts: its header is the
//! anchor, and the report gives its seq (`anchor_seq`, 0 when the log is
//! complete from its first record). Deleting the oldest files, as
//! retention does, therefore verifies; whoever checks the log compares
//! `anchor_seq` and the first file's date with the retention period.
//! A file removed from the middle cannot pass: the next file's header
//! continues from a seq and MAC that are not the previous file's last
//! ([`VerifyError::MissingFile`]). Removing the newest files leaves a
//! valid shorter log; only a record of the last seq kept elsewhere (the
//! proxy's logs, monitoring) can show it.
//!
//! # Lost records
//!
//! Records pgveil could not write (a full queue, a disk that failed for a
//! while) leave no hole in the chain: the writer counts them and writes a
//! gap record saying how many, chained like any other. Verification lists
//! every gap record ([`VerifyReport::gaps`]) and the total lost; the log
//! still verifies, since nothing was altered, but it says it is
//! incomplete. So does an `unclean_shutdown` record, which a writer
//! starting after a run that did not seal its log (killed, crashed) writes
//! first: what that run still held in memory is lost, uncounted
//! ([`VerifyReport::unclean`]).
//!
//! # What was checked
//!
//! A report says how far each file was checked ([`FileCheck`],
//! [`Coverage`]) and sums it up in one [`Status`]: see `status.rs`.

mod status;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::compress;
use super::format::{
    decode_mac, is_seal, list_files, split_record, split_seal, AuditFile, ChainHead, FileHash,
    Header, MacKey, Notice, Seal, FORMAT,
};
use crate::protect::crypto::{PublicKeyError, SealVerifier, Suite};
pub use status::{Coverage, FileCheck, Status, UncleanEnd};

/// A file and a 1-based line in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file's entry in the directory.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file, self.line)
    }
}

/// Why an audit directory does not verify: the first problem found.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// A file or the directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The directory holds no audit file.
    #[error("no audit files in {0}")]
    NoFiles(PathBuf),
    /// The public key given has the wrong length.
    #[error("the audit public key must be 32 bytes (Ed25519) or 65 (SM2), not {0}")]
    PublicKey(usize),
    /// The public key given is not a key of its algorithm.
    #[error(transparent)]
    BadPublicKey(PublicKeyError),
    /// A file was written with keys of another suite than the public key's.
    #[error(
        "{at}: the file is of suite {file} ({}), but the public key is of suite {key} ({})",
        algorithms(*file), algorithms(*key)
    )]
    Suite {
        /// The header.
        at: Location,
        /// The file's suite.
        file: Suite,
        /// The public key's suite.
        key: Suite,
    },
    /// A line is not a record, header or seal.
    #[error("{at}: not a valid audit line ({problem})")]
    Unparseable {
        /// The line.
        at: Location,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A file's header names another file.
    #[error("{at}: the header names file {found}: the file was renamed or copied")]
    Misnamed {
        /// The header.
        at: Location,
        /// The file name it holds.
        found: String,
    },
    /// A file does not continue where the previous one ended.
    #[error(
        "{at}: the file continues from seq {found}, but the previous file ends at seq {expected}: \
         a file is missing or was replaced"
    )]
    MissingFile {
        /// The header of the file that does not continue.
        at: Location,
        /// The seq the previous file ended at.
        expected: u64,
        /// The seq this file continues from.
        found: u64,
    },
    /// A record's seq is not the next one.
    #[error(
        "{at}: expected seq {expected}, found {found}: a record was removed, moved or inserted"
    )]
    SeqGap {
        /// The record.
        at: Location,
        /// The seq it should have.
        expected: u64,
        /// The seq it has.
        found: u64,
    },
    /// A record's MAC does not match its chain.
    #[error("{at}: the record's MAC does not match: the record was altered or inserted")]
    MacMismatch {
        /// The record.
        at: Location,
    },
    /// A file ends without a seal.
    #[error("{at}: the file ends without a seal: {}", unsealed_why(*.newest))]
    Truncated {
        /// Where the file ends.
        at: Location,
        /// Whether it is the newest file, which pgveil may still be
        /// writing.
        newest: bool,
    },
    /// A seal's signature does not verify.
    #[error("{at}: the seal's signature does not verify with the audit public key")]
    BadSignature {
        /// The seal.
        at: Location,
    },
    /// A seal does not match its file.
    #[error("{at}: bad seal: {problem}")]
    BadSeal {
        /// The seal.
        at: Location,
        /// What does not match.
        problem: &'static str,
    },
    /// A file's digest (SHA-256, or SM3 in the `sm` suite) differs from
    /// the one its seal holds.
    #[error("{at}: the file's hash differs from its seal: the file was altered")]
    HashMismatch {
        /// The seal.
        at: Location,
    },
}

/// The algorithms of a suite's audit files, for messages.
fn algorithms(suite: Suite) -> &'static str {
    match suite {
        Suite::Aes => "HMAC-SHA256, SHA-256, Ed25519",
        Suite::Sm => "HMAC-SM3, SM3, SM2",
    }
}

/// Why a file may end without a seal.
fn unsealed_why(newest: bool) -> &'static str {
    if newest {
        "pgveil is still writing it (verify a running log with --live), or it stopped \
         without sealing it (its next start seals it), or the file was truncated"
    } else {
        "it was truncated (only the newest file may be open)"
    }
}

/// What a successful verification covered. [`VerifyReport::status`] sums
/// it up.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The audit files verified.
    pub files: usize,
    /// Each file, oldest first, and how far it was checked.
    pub checked: Vec<FileCheck>,
    /// The records verified.
    pub records: u64,
    /// The seq the oldest remaining file continues from: 0 if the log is
    /// complete from its first record, more once retention deleted files.
    pub anchor_seq: u64,
    /// The last record's seq (`anchor_seq` if there is none).
    pub last_seq: u64,
    /// Whether record MACs were recomputed (a MAC key was given).
    pub macs_checked: bool,
    /// Files sealed by a writer that started after a crash.
    pub recovered: Vec<String>,
    /// With [`verify_live`], the newest file if it is not sealed yet.
    pub open: Option<String>,
    /// The gap records: where pgveil wrote that records were lost.
    pub gaps: Vec<Gap>,
    /// The records lost, over all gap records.
    pub lost: u64,
    /// The `unclean_shutdown` records: where a run that ended without
    /// sealing its log was followed by the next, having lost what it still
    /// held in memory (uncounted).
    pub unclean: Vec<UncleanEnd>,
}

/// A gap record: `lost` records before it were never written (the queue
/// was full, or the disk could not take them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The gap record.
    pub at: Location,
    /// Its seq.
    pub seq: u64,
    /// The records it says were lost.
    pub lost: u64,
}

/// Verifies every file in `dir`, all of which must be sealed. With
/// `mac_key`, record MACs are recomputed too. `public_key` is the raw
/// key, whose length says its algorithm and so the suite the files must
/// be of: 32 bytes Ed25519 (`aes`: HMAC-SHA256, SHA-256), 65 bytes SM2
/// (`sm`: HMAC-SM3, SM3) (`Keyring::audit_public_key_base64`, decoded,
/// or [`SealVerifier::parse`]).
pub fn verify(
    dir: &Path,
    mac_key: Option<&[u8; 32]>,
    public_key: &[u8],
) -> Result<VerifyReport, VerifyError> {
    verify_dir(dir, &Checker::new(mac_key, public_key)?, Tail::Sealed)
}

/// Like [`verify`], but the newest file may still be open: not sealed, and
/// possibly ending in a partly written line, which is not checked.
pub fn verify_live(
    dir: &Path,
    mac_key: Option<&[u8; 32]>,
    public_key: &[u8],
) -> Result<VerifyReport, VerifyError> {
    verify_dir(dir, &Checker::new(mac_key, public_key)?, Tail::Open)
}

/// Whether a file may end without a seal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    Sealed,
    Open,
}

/// The keys a scan checks with, all of the public key's suite.
pub(super) struct Checker {
    suite: Suite,
    mac_key: Option<MacKey>,
    public_key: SealVerifier,
}

impl Checker {
    pub(super) fn new(mac_key: Option<&[u8; 32]>, public_key: &[u8]) -> Result<Self, VerifyError> {
        let public_key = SealVerifier::from_raw(public_key).map_err(|e| match e {
            PublicKeyError::Length(len) => VerifyError::PublicKey(len),
            e => VerifyError::BadPublicKey(e),
        })?;
        let suite = public_key.suite();
        Ok(Self {
            suite,
            mac_key: mac_key.map(|key| MacKey::new(suite, key)),
            public_key,
        })
    }
}

/// One file, checked.
pub(super) struct Scanned {
    /// Where the file continues from.
    pub anchor: ChainHead,
    /// Its last record (the anchor if it has none).
    pub head: ChainHead,
    pub records: u64,
    /// `Some(recovered)` if sealed.
    pub sealed: Option<bool>,
    /// Bytes up to the end of the last complete line before the seal.
    pub complete: usize,
    pub gaps: Vec<Gap>,
    pub unclean: Vec<UncleanEnd>,
}

fn verify_dir(dir: &Path, checker: &Checker, tail: Tail) -> Result<VerifyReport, VerifyError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| VerifyError::Read { path, source }
    };
    let files = list_files(dir).map_err(read_error(dir))?;
    let Some(newest) = files.last().map(|file| file.name) else {
        return Err(VerifyError::NoFiles(dir.into()));
    };
    let mut report = VerifyReport {
        files: files.len(),
        checked: Vec::with_capacity(files.len()),
        records: 0,
        anchor_seq: 0,
        last_seq: 0,
        macs_checked: checker.mac_key.is_some(),
        recovered: Vec::new(),
        open: None,
        gaps: Vec::new(),
        lost: 0,
        unclean: Vec::new(),
    };
    let mut previous: Option<ChainHead> = None;
    for file in files {
        let name = file.entry();
        let bytes = compress::read(dir, &file).map_err(read_error(&dir.join(&name)))?;
        let file_tail = if file.name == newest {
            tail
        } else {
            Tail::Sealed
        };
        let scanned =
            scan_file(&file, &bytes, previous, checker, file_tail).map_err(
                |error| match error {
                    VerifyError::Truncated { at, .. } => VerifyError::Truncated {
                        at,
                        newest: file.name == newest,
                    },
                    other => other,
                },
            )?;
        if previous.is_none() {
            report.anchor_seq = scanned.anchor.seq;
        }
        report.checked.push(FileCheck {
            file: name.clone(),
            coverage: Coverage::of(scanned.sealed.is_some(), checker.mac_key.is_some()),
            anchor_seq: scanned.anchor.seq,
            last_seq: scanned.head.seq,
            recovered: scanned.sealed == Some(true),
        });
        match scanned.sealed {
            Some(true) => report.recovered.push(name),
            Some(false) => {}
            None => report.open = Some(name),
        }
        report.records += scanned.records;
        report.last_seq = scanned.head.seq;
        report.lost += scanned.gaps.iter().map(|gap| gap.lost).sum::<u64>();
        report.gaps.extend(scanned.gaps);
        report.unclean.extend(scanned.unclean);
        previous = Some(scanned.head);
    }
    Ok(report)
}

/// Checks the bytes of `file`, which must continue from `expected` (any
/// anchor if `None`). Problems are located in the entry read.
pub(super) fn scan_file(
    file: &AuditFile,
    bytes: &[u8],
    expected: Option<ChainHead>,
    checker: &Checker,
    tail: Tail,
) -> Result<Scanned, VerifyError> {
    let name = &file.name.to_string();
    let entry = file.entry();
    let at = |line| Location {
        file: entry.clone(),
        line,
    };
    let mut lines = Lines { bytes, offset: 0 };
    // Whether it is the newest file is for the caller to say.
    let newest = false;
    let Some((_, header)) = lines.next() else {
        return Err(VerifyError::Truncated { at: at(1), newest });
    };
    let anchor = read_header(header, name, at(1), checker.suite)?;
    if let Some(expected) = expected.filter(|&e| e != anchor) {
        return Err(VerifyError::MissingFile {
            at: at(1),
            expected: expected.seq,
            found: anchor.seq,
        });
    }
    let mut head = anchor;
    let mut gaps = Vec::new();
    let mut unclean = Vec::new();
    let mut number = 1;
    for (offset, line) in lines.by_ref() {
        number += 1;
        if is_seal(line) {
            let recovered = check_seal(line, &bytes[..offset], anchor, head, name, checker)
                .map_err(|problem| problem.at(at(number)))?;
            if offset + line.len() + 1 != bytes.len() {
                return Err(VerifyError::BadSeal {
                    at: at(number + 1),
                    problem: "lines follow the seal",
                });
            }
            return Ok(Scanned {
                anchor,
                head,
                records: head.seq - anchor.seq,
                sealed: Some(recovered),
                complete: offset,
                gaps,
                unclean,
            });
        }
        let notice;
        (head, notice) =
            check_record(line, head, checker).map_err(|problem| problem.at(at(number)))?;
        match notice {
            Some(Notice::Gap { lost }) => gaps.push(Gap {
                at: at(number),
                seq: head.seq,
                lost,
            }),
            Some(Notice::UncleanShutdown { previous_last_seq }) => unclean.push(UncleanEnd {
                at: at(number),
                seq: head.seq,
                previous_last_seq,
            }),
            None => {}
        }
    }
    if tail == Tail::Sealed {
        // The seal, or a partly written line, would be the next line.
        return Err(VerifyError::Truncated {
            at: at(number + 1),
            newest,
        });
    }
    Ok(Scanned {
        anchor,
        head,
        records: head.seq - anchor.seq,
        sealed: None,
        complete: lines.offset,
        gaps,
        unclean,
    })
}

/// Complete lines (without their newline) and their offsets; a last line
/// without a newline is left unread.
struct Lines<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.offset;
        let len = self.bytes[start..].iter().position(|&b| b == b'\n')?;
        self.offset = start + len + 1;
        Some((start, &self.bytes[start..start + len]))
    }
}

fn read_header(
    line: &[u8],
    name: &str,
    at: Location,
    suite: Suite,
) -> Result<ChainHead, VerifyError> {
    let unparseable = |problem| VerifyError::Unparseable {
        at: at.clone(),
        problem,
    };
    let header: Header =
        serde_json::from_slice(line).map_err(|_| unparseable("not a file header"))?;
    if header.audit != FORMAT {
        return Err(unparseable("unknown audit format"));
    }
    if header.file != name {
        return Err(VerifyError::Misnamed {
            at,
            found: header.file,
        });
    }
    if header.suite != suite {
        return Err(VerifyError::Suite {
            at,
            file: header.suite,
            key: suite,
        });
    }
    header
        .prev()
        .ok_or_else(|| unparseable("the header's prev_mac is not a MAC"))
}

/// A problem found on a line, before its location is known.
enum Problem {
    Unparseable(&'static str),
    SeqGap { expected: u64, found: u64 },
    MacMismatch,
    BadSignature,
    BadSeal(&'static str),
    HashMismatch,
}

impl Problem {
    fn at(self, at: Location) -> VerifyError {
        match self {
            Problem::Unparseable(problem) => VerifyError::Unparseable { at, problem },
            Problem::SeqGap { expected, found } => VerifyError::SeqGap {
                at,
                expected,
                found,
            },
            Problem::MacMismatch => VerifyError::MacMismatch { at },
            Problem::BadSignature => VerifyError::BadSignature { at },
            Problem::BadSeal(problem) => VerifyError::BadSeal { at, problem },
            Problem::HashMismatch => VerifyError::HashMismatch { at },
        }
    }
}

/// Checks a record following `prev`; returns the new chain head and, for
/// a gap or unclean-shutdown record, what it says is missing.
fn check_record(
    line: &[u8],
    prev: ChainHead,
    checker: &Checker,
) -> Result<(ChainHead, Option<Notice>), Problem> {
    let record = split_record(line).ok_or(Problem::Unparseable("not an audit record"))?;
    if record.seq != prev.seq + 1 {
        return Err(Problem::SeqGap {
            expected: prev.seq + 1,
            found: record.seq,
        });
    }
    if let Some(key) = &checker.mac_key {
        if key.mac(&prev.mac, &record.canonical) != record.mac {
            return Err(Problem::MacMismatch);
        }
    }
    let head = ChainHead {
        seq: record.seq,
        mac: record.mac,
    };
    Ok((head, record.notice))
}

/// Checks a seal over `before`, the file's preceding bytes, which run from
/// `anchor` to `head`; returns whether it is a recovery seal.
fn check_seal(
    line: &[u8],
    before: &[u8],
    anchor: ChainHead,
    head: ChainHead,
    name: &str,
    checker: &Checker,
) -> Result<bool, Problem> {
    let split = split_seal(line).ok_or(Problem::BadSeal("malformed seal line"))?;
    if !checker.public_key.verify(split.seal, &split.sig) {
        return Err(Problem::BadSignature);
    }
    let seal: Seal =
        serde_json::from_slice(split.seal).map_err(|_| Problem::BadSeal("unreadable seal"))?;
    if seal.file != name {
        return Err(Problem::BadSeal("the seal names another file"));
    }
    if seal.first_seq != anchor.seq + 1 {
        return Err(Problem::BadSeal("first_seq does not follow the header"));
    }
    if seal.last_seq != head.seq || decode_mac(&seal.last_mac) != Some(head.mac) {
        return Err(Problem::BadSeal(
            "last_seq and last_mac are not the file's last record",
        ));
    }
    if seal.suite != checker.suite {
        return Err(Problem::BadSeal(
            "the seal names another suite than its header",
        ));
    }
    let (sha256, sm3) = FileHash::of(checker.suite, before).finish();
    let (computed, sealed) = match checker.suite {
        Suite::Aes => (sha256, seal.sha256),
        Suite::Sm => (sm3, seal.sm3),
    };
    if sealed.is_none() {
        return Err(Problem::BadSeal("the seal holds no hash of the suite"));
    }
    if computed != sealed {
        return Err(Problem::HashMismatch);
    }
    Ok(seal.recovered)
}
