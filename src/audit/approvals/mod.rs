//! Approvals for bulk access to personal data (GB/T 35273-2020 7.1 b, d,
//! e): the files `pgveil approve` writes and `pgveil serve` honours.
//!
//! A column whose policy says `approval = { rows = N }` shows more than
//! `N` plaintext rows of it to one statement, portal or cursor (and, with
//! `[audit.bulk]`, within the bulk window) only under an approval
//! (`crate::read::meter` counts them). An approval grants the sessions of
//! one policy role that declared one ticket (`SET pgveil.ticket`) up to
//! `rows` plaintext rows of one column, until it expires. It lifts the
//! row limit only: who sees plaintext at all stays the policy's decision.
//!
//! The approvals directory (`[audit] approvals`) holds, per approval id
//! (`apr-` and 16 hex digits):
//!
//! - `ID.approval`: `{"approval":{...},"sig":"..."}` on one line, the
//!   signature by the audit signing key over the exact bytes of the
//!   object ([`crate::audit::AuditKeys::sign`]). A file that does not
//!   verify, does not parse, or whose name is not its id is refused with
//!   a log line and never honoured.
//! - `ID.revoked`: `{"revocation":{...},"sig":"..."}`, written by `pgveil
//!   approve --revoke`. Any file of that name revokes the approval, even
//!   one that does not verify (fail closed); the proxy also marks the
//!   approval revoked in its ledger, so removing the file does not bring
//!   it back.
//! - `ID.used`: the usage ledger (`ledger.rs`), written by the proxy
//!   before it reveals the rows it counts.
//!
//! Anyone who can run `pgveil approve` holds the keyring and master key,
//! as `pgveil serve` does: approving is an operator's act, recorded in
//! the signed file (who approved, when, for what) and in the audit log
//! at each use (`approval_use` records).

mod book;
mod ledger;

pub use book::ApprovalBook;
pub(crate) use book::{Shortfall, Want};

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::keys::signature_verifies;
use super::{AuditKeys, Timestamp};

/// One approval: what it grants, to whom, for what, until when, and who
/// approved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// `apr-` and 16 hex digits.
    pub id: String,
    /// The policy role whose sessions it serves.
    pub role: String,
    /// `schema.table.column`.
    pub column: String,
    /// Plaintext rows it grants, over all its uses.
    pub rows: u64,
    /// The ticket a session must have declared.
    pub ticket: String,
    /// Who approved it.
    pub approver: String,
    /// When it was written.
    pub created: Timestamp,
    /// When it stops being honoured.
    pub expires: Timestamp,
}

/// A revocation of an approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    id: String,
    revoked: Timestamp,
    by: String,
}

/// What is wrong with a file of the approvals directory, or with an
/// approval asked for.
#[derive(Debug, Error)]
pub enum ApprovalError {
    /// A file or the directory cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not an approval file as `pgveil approve` writes it.
    #[error("{0}: not an approval file (it does not parse)")]
    Malformed(PathBuf),
    /// The signature does not verify with the audit public key: forged or
    /// altered.
    #[error("{0}: the signature does not verify with the audit public key (forged or altered)")]
    Forged(PathBuf),
    /// The file's name is not the id it holds.
    #[error("{path}: it holds approval {id}, not the one its name says")]
    Renamed {
        /// The file.
        path: PathBuf,
        /// The id inside.
        id: String,
    },
    /// A value that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// No approval of that id.
    #[error("no approval {0} in the approvals directory")]
    Unknown(String),
    /// The directory is used by another `pgveil serve`.
    #[error("{0}: the approvals directory is in use by another pgveil")]
    Locked(PathBuf),
}

/// What `pgveil approve` asks for.
#[derive(Clone, Debug)]
pub struct NewApproval {
    /// The policy role.
    pub role: String,
    /// `schema.table.column`.
    pub column: String,
    /// Rows granted.
    pub rows: u64,
    /// The ticket sessions must declare.
    pub ticket: String,
    /// How long it is honoured.
    pub expires_in: Duration,
    /// Who approves.
    pub approver: String,
}

const APPROVAL: &str = "approval";
const REVOCATION: &str = "revocation";
const ID_PREFIX: &str = "apr-";

/// The path of an approval's file of this kind (`approval`, `revoked`,
/// `used`).
fn file_of(dir: &Path, id: &str, kind: &str) -> PathBuf {
    dir.join(format!("{id}.{kind}"))
}

/// Whether `id` is an approval id: `apr-` and 16 lowercase hex digits.
fn is_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX).is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A new approval id.
fn new_id() -> Result<String, ApprovalError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApprovalError::Invalid("the system gives no randomness".into()))?;
    Ok(format!("{ID_PREFIX}{}", hex::encode(bytes)))
}

/// `{"KIND":TEXT,"sig":"..."}` and a newline: `text` signed.
fn signed_line(kind: &str, text: &str, keys: &AuditKeys) -> String {
    let sig = STANDARD.encode(keys.sign(text.as_bytes()));
    format!("{{\"{kind}\":{text},\"sig\":\"{sig}\"}}\n")
}

/// The signed text and its signature, if `line` is a signed line of
/// `kind` whose signature verifies with `public_key`.
fn verified<'l>(
    kind: &str,
    line: &'l str,
    public_key: &[u8],
    path: &Path,
) -> Result<&'l str, ApprovalError> {
    let malformed = || ApprovalError::Malformed(path.into());
    let inner = line
        .trim_end_matches('\n')
        .strip_prefix(&format!("{{\"{kind}\":"))
        .and_then(|rest| rest.strip_suffix("\"}"))
        .ok_or_else(malformed)?;
    let (text, sig) = inner.rsplit_once(",\"sig\":\"").ok_or_else(malformed)?;
    let sig = STANDARD.decode(sig).map_err(|_| malformed())?;
    if !signature_verifies(public_key, text.as_bytes(), &sig) {
        return Err(ApprovalError::Forged(path.into()));
    }
    Ok(text)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ApprovalError + '_ {
    move |source| ApprovalError::Io {
        path: path.into(),
        source,
    }
}

/// Reads and checks the approval file at `path`: it must verify with
/// `public_key`, parse, and be named for its id.
pub(crate) fn read_approval(path: &Path, public_key: &[u8]) -> Result<Approval, ApprovalError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let signed = verified(APPROVAL, &text, public_key, path)?;
    let approval: Approval =
        serde_json::from_str(signed).map_err(|_| ApprovalError::Malformed(path.into()))?;
    let named = path.file_stem().and_then(|s| s.to_str());
    if !is_id(&approval.id) || named != Some(approval.id.as_str()) {
        return Err(ApprovalError::Renamed {
            path: path.into(),
            id: approval.id,
        });
    }
    Ok(approval)
}

/// Whether the revocation file of `id` exists, and whether it verifies
/// (a revocation that does not still revokes).
fn revocation(dir: &Path, id: &str, public_key: &[u8]) -> Option<Result<(), ApprovalError>> {
    let path = file_of(dir, id, "revoked");
    let text = match fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(io_error(&path)(e))),
        Ok(text) => text,
    };
    Some(
        verified(REVOCATION, &text, public_key, &path).and_then(|signed| {
            serde_json::from_str::<Revocation>(signed)
                .ok()
                .filter(|r| r.id == id)
                .map(|_| ())
                .ok_or(ApprovalError::Malformed(path.clone()))
        }),
    )
}

/// Creates the directory (owner only) if it does not exist.
fn make_dir(dir: &Path) -> Result<(), ApprovalError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

/// Writes `text` to a new file at `path` (never over an existing one),
/// synced.
fn write_new(path: &Path, text: &str) -> Result<(), ApprovalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Writes a new approval, signed with `keys`, into `dir`.
pub fn create(dir: &Path, keys: &AuditKeys, new: &NewApproval) -> Result<Approval, ApprovalError> {
    let blank = |what: &str, value: &str| {
        if value.trim().is_empty() {
            return Err(ApprovalError::Invalid(format!(
                "--{what} must not be blank"
            )));
        }
        Ok(())
    };
    blank("role", &new.role)?;
    blank("ticket", &new.ticket)?;
    blank("approver", &new.approver)?;
    if new.rows == 0 {
        return Err(ApprovalError::Invalid("--rows must be at least 1".into()));
    }
    if new.expires_in.is_zero() {
        return Err(ApprovalError::Invalid("--expires must be after now".into()));
    }
    // Whole microseconds, as the file writes times.
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let now = SystemTime::UNIX_EPOCH + Duration::from_micros(since_epoch.as_micros() as u64);
    let expires = now
        .checked_add(new.expires_in)
        .ok_or_else(|| ApprovalError::Invalid("--expires is too far away".into()))?;
    let approval = Approval {
        id: new_id()?,
        role: new.role.clone(),
        column: new.column.clone(),
        rows: new.rows,
        ticket: new.ticket.clone(),
        approver: new.approver.clone(),
        created: Timestamp(now),
        expires: Timestamp(expires),
    };
    make_dir(dir)?;
    let text = serde_json::to_string(&approval).expect("an approval serializes");
    write_new(
        &file_of(dir, &approval.id, APPROVAL),
        &signed_line(APPROVAL, &text, keys),
    )?;
    Ok(approval)
}

/// Revokes approval `id` of `dir`, as `by`: a signed revocation file.
pub fn revoke(dir: &Path, keys: &AuditKeys, id: &str, by: &str) -> Result<(), ApprovalError> {
    if by.trim().is_empty() {
        return Err(ApprovalError::Invalid(
            "--approver must not be blank".into(),
        ));
    }
    if !is_id(id) || !file_of(dir, id, APPROVAL).exists() {
        return Err(ApprovalError::Unknown(id.into()));
    }
    let revocation = Revocation {
        id: id.into(),
        revoked: Timestamp::now(),
        by: by.into(),
    };
    let text = serde_json::to_string(&revocation).expect("a revocation serializes");
    let path = file_of(dir, id, "revoked");
    match write_new(&path, &signed_line(REVOCATION, &text, keys)) {
        Err(ApprovalError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            Err(ApprovalError::Invalid(format!(
                "approval {id} is already revoked"
            )))
        }
        other => other,
    }
}

/// The state of an approval file, as `pgveil approve --list` shows it.
#[derive(Debug)]
pub enum Listed {
    /// An approval that verifies.
    Valid {
        /// What it grants.
        approval: Approval,
        /// Rows used so far, by the ledger.
        used: u64,
        /// The state it is in now.
        state: State,
    },
    /// A file that is refused, and why.
    Refused(ApprovalError),
}

/// Whether an approval is honoured now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Honoured.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// Every row it grants has been used.
    UsedUp,
    /// Its usage ledger does not check (edited or damaged): not honoured.
    Damaged,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Active => "active",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::UsedUp => "used up",
            State::Damaged => "not honoured: its usage ledger does not check",
        })
    }
}

/// Every approval file of `dir`, sorted by name, with its state: `keys`
/// verify the files and the ledger.
pub fn list(dir: &Path, keys: &AuditKeys) -> Result<Vec<Listed>, ApprovalError> {
    let mut paths = approval_files(dir)?;
    paths.sort();
    let now = SystemTime::now();
    Ok(paths
        .into_iter()
        .map(|path| match read_approval(&path, keys.public_key()) {
            Err(e) => Listed::Refused(e),
            Ok(approval) => {
                let usage = ledger::read(dir, &approval.id, keys);
                let revoked =
                    usage.revoked || revocation(dir, &approval.id, keys.public_key()).is_some();
                let state = if usage.damaged {
                    State::Damaged
                } else if revoked {
                    State::Revoked
                } else if approval.expires.0 <= now {
                    State::Expired
                } else if usage.used >= approval.rows {
                    State::UsedUp
                } else {
                    State::Active
                };
                Listed::Valid {
                    used: usage.used.min(approval.rows),
                    approval,
                    state,
                }
            }
        })
        .collect())
}

/// The `*.approval` files of `dir`; none if it does not exist.
fn approval_files(dir: &Path) -> Result<Vec<PathBuf>, ApprovalError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(io_error(dir))?,
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|e| e == APPROVAL) {
            paths.push(path);
        }
    }
    Ok(paths)
}

#[cfg(test)]
pub(crate) mod tests;
