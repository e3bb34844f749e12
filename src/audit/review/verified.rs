//! The verification at the head of a report: the log is checked with the
//! keys given ([`verify`](crate::audit::verify)) before it is read, and
//! the report says what that found, which files and records it covered
//! and with which key, so that a reader of the review need not take its
//! figures on trust.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit::{verify, verify_live, VerifyError, VerifyReport};

/// The keys to verify a log with.
#[derive(Clone, Debug)]
pub(crate) struct VerifyKeys {
    /// The MAC key, from the keyring: every record's MAC is checked too.
    pub mac: Option<[u8; 32]>,
    /// The audit public key, raw (32 bytes).
    pub public: Vec<u8>,
    /// Accept the newest file unsealed, as while pgveil writes it.
    pub live: bool,
}

/// What verifying the log found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Every file and record checked, nothing lost.
    Ok,
    /// Checked, but the log says records were lost (gap records).
    Incomplete,
    /// Not checked, or not all of it could be.
    Unverified,
    /// Altered, truncated, misnamed or missing files.
    Failed,
}

impl Status {
    /// As reports write it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Incomplete => "INCOMPLETE",
            Status::Unverified => "UNVERIFIED",
            Status::Failed => "FAILED",
        }
    }
}

/// The verification at the head of a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Verification {
    pub status: Status,
    /// What was checked and what was not, or the first problem found.
    pub detail: String,
    /// Files verified (none when verification failed or did not run).
    pub files: Option<usize>,
    /// Records verified.
    pub records: Option<u64>,
    /// The SHA-256 (hex) of the audit public key the seals were checked
    /// with: `pgveil audit public-key --config FILE | base64 -d | sha256sum`.
    pub key_fingerprint: Option<String>,
}

impl Verification {
    /// The log was read without verifying it.
    pub(crate) fn not_run() -> Self {
        Self {
            status: Status::Unverified,
            detail: "not verified: give --config (the keyring: seals and every record's MAC) \
                     or --public-key (seals and signatures)"
                .to_owned(),
            files: None,
            records: None,
            key_fingerprint: None,
        }
    }
}

/// Verifies `dir` with `keys`.
pub(crate) fn verify_dir(dir: &Path, keys: &VerifyKeys) -> Verification {
    let check = if keys.live { verify_live } else { verify };
    let result = check(dir, keys.mac.as_ref(), &keys.public);
    let (status, detail) = status_of(&result);
    let report = result.ok();
    Verification {
        status,
        detail,
        files: report.as_ref().map(|r| r.files),
        records: report.as_ref().map(|r| r.records),
        key_fingerprint: Some(hex(&Sha256::digest(&keys.public))),
    }
}

/// The status of a verification and what it means, in words: the one
/// place a [`VerifyReport`] becomes a report's status.
fn status_of(result: &Result<VerifyReport, VerifyError>) -> (Status, String) {
    let report = match result {
        Err(e) => return (Status::Failed, e.to_string()),
        Ok(report) => report,
    };
    // The log's own status (`audit verify`'s), in the report's words.
    let status = match crate::audit::Status::of(result) {
        crate::audit::Status::Ok => Status::Ok,
        crate::audit::Status::Incomplete => Status::Incomplete,
        crate::audit::Status::Unverified => Status::Unverified,
        crate::audit::Status::Failed => Status::Failed,
    };
    let mut notes = Vec::new();
    if report.lost > 0 {
        let first = report
            .gaps
            .first()
            .map(|g| format!(", the first at {}", g.at));
        notes.push(format!(
            "the log says {} record(s) were lost (never written), in {} gap record(s){}",
            report.lost,
            report.gaps.len(),
            first.unwrap_or_default()
        ));
    }
    for end in &report.unclean {
        notes.push(format!(
            "the run before {} ended without a clean shutdown: records it had queued \
             and not written are lost and cannot be counted",
            end.at
        ));
    }
    notes.push(if report.macs_checked {
        "every record's MAC, seal and signature checked".to_owned()
    } else {
        "seals and signatures checked; record MACs not (public key only)".to_owned()
    });
    if let Some(open) = &report.open {
        notes.push(if report.macs_checked {
            format!("{open} is not sealed yet (live)")
        } else {
            format!("{open} is not sealed yet: without the keyring its records cannot be checked")
        });
    }
    if report.anchor_seq > 0 {
        notes.push(format!(
            "the log starts at seq {} (older files removed by retention)",
            report.anchor_seq
        ));
    }
    for file in &report.recovered {
        notes.push(format!("{file} was sealed by recovery after a crash"));
    }
    (status, notes.join("; "))
}

/// Lowercase hexadecimal.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
