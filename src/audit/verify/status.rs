//! What a verification proved, file by file, and the one status it sums
//! up to: never more than was checked.
//!
//! Each file (and so each of its records) is [`Coverage::Verified`] when
//! both its MAC chain (with the keyring's MAC key) and its signed seal were
//! checked; [`Coverage::SealedOnly`] when only the seal was (the audit
//! public key alone: the seal's signature covers the file's SHA-256, so an
//! edit still shows, but not which record); [`Coverage::Chained`] for the
//! newest file still being written, checked by MAC but not sealed yet
//! (`--live` with the keyring); and [`Coverage::Unverified`] for that file
//! without the keyring: nothing checks its records, so an edited record
//! cannot show.
//!
//! The [`Status`] of a whole log is, from worst to best: `Failed` (a check
//! failed: [`VerifyError`]), `Unverified` (records that nothing checked),
//! `Incomplete` (everything checked, but the log itself says records are
//! missing: gap records, or an unclean shutdown), `Ok`. Each has its own
//! exit code for `pgveil audit verify` ([`Status::exit_code`]).

use std::fmt;

use super::{Location, VerifyError, VerifyReport};

/// How far the records of one file were checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Coverage {
    /// The MAC chain (keyring) and the signed seal.
    Verified,
    /// Open, as pgveil is still writing it: the MAC chain (keyring) is
    /// checked, the seal is not there yet, so records at its end could
    /// still be cut off unseen.
    Chained,
    /// The signed seal (audit public key), not the record MACs.
    SealedOnly,
    /// Open and checked without the keyring: nothing but the order of its
    /// seq numbers is checked, so an edited record does not show.
    Unverified,
}

impl Coverage {
    /// Whether and how a file whose seal was found (`sealed`) was checked
    /// with or without the MAC key (`macs`).
    pub(super) fn of(sealed: bool, macs: bool) -> Self {
        match (sealed, macs) {
            (true, true) => Coverage::Verified,
            (true, false) => Coverage::SealedOnly,
            (false, true) => Coverage::Chained,
            (false, false) => Coverage::Unverified,
        }
    }

    /// As `audit verify` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Coverage::Verified => "verified",
            Coverage::Chained => "chained",
            Coverage::SealedOnly => "sealed-only",
            Coverage::Unverified => "unverified",
        }
    }

    /// What was checked, in words.
    pub fn meaning(self) -> &'static str {
        match self {
            Coverage::Verified => "MAC chain and seal checked",
            Coverage::Chained => "MAC chain checked; still open, not sealed yet",
            Coverage::SealedOnly => "seal signature checked, record MACs not (no keyring)",
            Coverage::Unverified => {
                "still open and no keyring: nothing checks these records \
                 (verify with --config, or once the file is sealed)"
            }
        }
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One file of a verified log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The entry read (`.jsonl` or `.jsonl.zst`).
    pub file: String,
    /// How far its records were checked.
    pub coverage: Coverage,
    /// The seq its header continues from; its records are `anchor_seq + 1
    /// ..= last_seq`.
    pub anchor_seq: u64,
    /// Its last record's seq (`anchor_seq` if it holds none).
    pub last_seq: u64,
    /// Sealed by recovery: after a crash, a kill or a failed write.
    pub recovered: bool,
}

impl FileCheck {
    /// The records it holds.
    pub fn records(&self) -> u64 {
        self.last_seq - self.anchor_seq
    }

    /// Whether it holds the record `seq`.
    pub fn holds(&self, seq: u64) -> bool {
        seq > self.anchor_seq && seq <= self.last_seq
    }
}

/// An `unclean_shutdown` record: the run before it ended without sealing
/// its log (killed, crashed, or its log down at shutdown); records it still
/// had in memory were lost, and how many cannot be known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncleanEnd {
    /// The record.
    pub at: Location,
    /// Its seq.
    pub seq: u64,
    /// The last record of the previous run that reached its file.
    pub previous_last_seq: u64,
}

/// The verdict on a whole log, worst first in the order of precedence:
/// `Failed` > `Unverified` > `Incomplete` > `Ok`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Every record was checked (verified, chained or sealed-only) and the
    /// log records no loss.
    Ok,
    /// Every record was checked, but the log says records are missing: gap
    /// records (counted) or an unclean shutdown (uncounted).
    Incomplete,
    /// Some records could not be checked: an open file read without the
    /// keyring.
    Unverified,
    /// A check failed: the log was altered, truncated, reordered, or a file
    /// is missing or misnamed; or it could not be read.
    Failed,
}

impl Status {
    /// The status of a verification's result.
    pub fn of(result: &Result<VerifyReport, VerifyError>) -> Self {
        result.as_ref().map_or(Status::Failed, VerifyReport::status)
    }

    /// As `audit verify` starts its summary line.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Incomplete => "INCOMPLETE",
            Status::Unverified => "UNVERIFIED",
            Status::Failed => "FAILED",
        }
    }

    /// The exit code of `pgveil audit verify`: 0 ok, 1 failed, 3
    /// incomplete, 4 unverified (2 is a usage or configuration error, as
    /// for every command).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Failed => 1,
            Status::Incomplete => 3,
            Status::Unverified => 4,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl VerifyReport {
    /// The log's status (a report exists only when no check failed).
    pub fn status(&self) -> Status {
        if self.records_by(Coverage::Unverified) > 0 {
            Status::Unverified
        } else if !self.gaps.is_empty() || !self.unclean.is_empty() {
            Status::Incomplete
        } else {
            Status::Ok
        }
    }

    /// The records whose file was checked this far.
    pub fn records_by(&self, coverage: Coverage) -> u64 {
        self.checked
            .iter()
            .filter(|file| file.coverage == coverage)
            .map(FileCheck::records)
            .sum()
    }

    /// How far the record `seq` was checked: its file's coverage; `None`
    /// if no file verified holds it.
    pub fn coverage_of(&self, seq: u64) -> Option<Coverage> {
        self.checked
            .iter()
            .find(|file| file.holds(seq))
            .map(|file| file.coverage)
    }
}
