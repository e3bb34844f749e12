//! The proxy's view of the approvals directory ([`ApprovalBook`]): the
//! approvals that verify, what each has used, and reservations of rows
//! for the results being revealed.
//!
//! The directory is read again whenever a result needs an approval it
//! does not hold yet, so an approval written while pgveil runs serves at
//! once; each reservation checks the approval's revocation file again, so
//! a revocation stops it at the next reservation. Rows are reserved in
//! the ledger before they are shown, a few hundred at a time
//! ([`EXTRA_ROWS`]), and what a result did not use is given back when its
//! statement ends: a crash loses at most one reservation's rows, counted
//! as used. If the ledger cannot be written nothing is reserved, and the
//! result is refused. One `pgveil serve` uses a directory at a time (an
//! exclusive lock on it, as on the audit directory).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tracing::warn;

use super::ledger::{self, Usage};
use super::{approval_files, make_dir, read_approval, revocation, Approval, ApprovalError};
use crate::audit::AuditKeys;

/// Rows reserved beyond those a result needs now, so that the ledger is
/// written once per this many rows rather than per row.
const EXTRA_ROWS: u64 = 500;

/// The approvals of a directory, as `pgveil serve` honours them.
pub struct ApprovalBook {
    dir: PathBuf,
    keys: Arc<AuditKeys>,
    known: Mutex<Known>,
    /// Held for the life of the book: the directory's lock.
    _lock: File,
}

/// An approval that verified, and its usage.
struct Held {
    approval: Approval,
    usage: Usage,
}

#[derive(Default)]
struct Known {
    held: BTreeMap<String, Held>,
    /// Files refused, with their modification time: each version is
    /// logged once.
    refused: HashMap<PathBuf, Option<SystemTime>>,
}

/// Rows of an approval reserved for one result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The approval.
    pub(crate) id: String,
    /// Rows reserved: at least those asked for.
    pub(crate) rows: u64,
}

/// What a result asks of the approvals.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Want<'a> {
    /// The approval the result already uses, tried first.
    pub(crate) id: Option<&'a str>,
    /// The session's roles.
    pub(crate) roles: &'a [String],
    /// `schema.table.column`.
    pub(crate) column: &'a str,
    /// The ticket the session declared.
    pub(crate) ticket: &'a str,
    /// Rows needed now.
    pub(crate) rows: u64,
}

/// Why no approval serves a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// None was written for this role, column and ticket.
    None,
    /// The best one left has fewer rows than needed.
    UsedUp { id: String, left: u64 },
    /// The only ones there are expired.
    Expired { id: String },
    /// The only ones there are revoked.
    Revoked { id: String },
    /// Its usage ledger does not check (edited or damaged).
    Damaged { id: String },
    /// The ledger cannot be written: nothing may be reserved.
    Ledger(String),
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::None => f.write_str("none is in force"),
            Shortfall::UsedUp { id, left } => {
                write!(f, "approval {id} has {left} row(s) left")
            }
            Shortfall::Expired { id } => write!(f, "approval {id} has expired"),
            Shortfall::Revoked { id } => write!(f, "approval {id} is revoked"),
            Shortfall::Damaged { id } => {
                write!(f, "the usage ledger of approval {id} does not check")
            }
            Shortfall::Ledger(e) => write!(f, "the approvals ledger cannot be written ({e})"),
        }
    }
}

/// Whether `approval` is for this role, column and ticket.
fn serves(approval: &Approval, want: &Want<'_>) -> bool {
    approval.column == want.column
        && approval.ticket == want.ticket
        && want.roles.contains(&approval.role)
}

impl ApprovalBook {
    /// The approvals of `dir` (created if missing), checked with the
    /// audit keys `keys`; fails if another pgveil uses the directory.
    pub fn open(dir: &Path, keys: Arc<AuditKeys>) -> Result<Self, ApprovalError> {
        make_dir(dir)?;
        let lock_path = dir.join(".lock");
        let lock = File::create(&lock_path).map_err(|source| ApprovalError::Io {
            path: lock_path.clone(),
            source,
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(ApprovalError::Locked(dir.into())),
            Err(fs::TryLockError::Error(source)) => {
                return Err(ApprovalError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        let book = Self {
            dir: dir.into(),
            keys,
            known: Mutex::default(),
            _lock: lock,
        };
        book.scan(&mut book.lock());
        Ok(book)
    }

    fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the approval files not held yet; logs each refused one once.
    fn scan(&self, known: &mut Known) {
        let paths = match approval_files(&self.dir) {
            Ok(paths) => paths,
            Err(e) => return warn!("approvals: cannot read the directory: {e}"),
        };
        for path in paths {
            let held = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|id| known.held.contains_key(id));
            if held {
                continue;
            }
            let modified = fs::metadata(&path).and_then(|m| m.modified()).ok();
            if known.refused.get(&path) == Some(&modified) {
                continue;
            }
            match read_approval(&path, self.keys.public_key()) {
                Ok(approval) => {
                    known.refused.remove(&path);
                    let usage = ledger::read(&self.dir, &approval.id, &self.keys);
                    if usage.damaged {
                        warn!(
                            approval = %approval.id,
                            "approvals: the usage ledger of this approval does not check \
                             (edited or damaged): it is not honoured"
                        );
                    }
                    let id = approval.id.clone();
                    known.held.insert(id, Held { approval, usage });
                }
                Err(e) => {
                    warn!("approvals: approval file refused, not honoured: {e}");
                    known.refused.insert(path, modified);
                }
            }
        }
    }

    /// Whether `held` is revoked: by the ledger, or by a revocation file
    /// found now (then written to the ledger, so that it stays revoked).
    fn revoked(&self, held: &mut Held) -> bool {
        if held.usage.revoked {
            return true;
        }
        let id = &held.approval.id;
        let Some(found) = revocation(&self.dir, id, self.keys.public_key()) else {
            return false;
        };
        match found {
            Ok(()) => warn!(approval = %id, "approvals: approval revoked"),
            Err(e) => warn!(
                approval = %id,
                "approvals: a revocation file that does not check: the approval is revoked \
                 all the same: {e}"
            ),
        }
        held.usage.revoked = true;
        if let Err(e) = ledger::write(&self.dir, id, held.usage, &self.keys) {
            warn!(approval = %id, "approvals: cannot record the revocation in the ledger: {e}");
        }
        true
    }

    /// Reserves `want.rows` rows (and up to [`EXTRA_ROWS`] more) of an
    /// approval for the session's roles, the column and the ticket: the
    /// one the result uses if it can, else the one expiring first of
    /// those that can.
    pub(crate) fn reserve(
        &self,
        want: Want<'_>,
        now: SystemTime,
    ) -> Result<Reservation, Shortfall> {
        let mut known = self.lock();
        let prior = want.id.filter(|id| {
            known
                .held
                .get(*id)
                .is_some_and(|h| serves(&h.approval, &want))
        });
        if let Some(id) = prior {
            if let Ok(reservation) = self.reserve_from(&mut known, id, want.rows, now) {
                return Ok(reservation);
            }
        }
        self.scan(&mut known);
        let matching: Vec<String> = known
            .held
            .values()
            .filter(|held| serves(&held.approval, &want))
            .map(|held| held.approval.id.clone())
            .collect();
        let mut usable: Vec<(SystemTime, String)> = Vec::new();
        let mut shortfall = Shortfall::None;
        for id in matching {
            let held = known.held.get_mut(&id).expect("listed from held");
            let left = held.approval.rows.saturating_sub(held.usage.used);
            if held.usage.damaged {
                if shortfall == Shortfall::None {
                    shortfall = Shortfall::Damaged { id };
                }
            } else if self.revoked(held) {
                if matches!(shortfall, Shortfall::None | Shortfall::Damaged { .. }) {
                    shortfall = Shortfall::Revoked { id };
                }
            } else if held.approval.expires.0 <= now {
                if !matches!(
                    shortfall,
                    Shortfall::Expired { .. } | Shortfall::UsedUp { .. }
                ) {
                    shortfall = Shortfall::Expired { id };
                }
            } else if left < want.rows {
                let better = match &shortfall {
                    Shortfall::UsedUp { left: best, .. } => left > *best,
                    _ => true,
                };
                if better {
                    shortfall = Shortfall::UsedUp { id, left };
                }
            } else {
                usable.push((held.approval.expires.0, id));
            }
        }
        usable.sort();
        match usable.first() {
            Some((_, id)) => self.reserve_from(&mut known, &id.clone(), want.rows, now),
            None => Err(shortfall),
        }
    }

    /// Reserves rows of approval `id`, if it is honoured and has them.
    fn reserve_from(
        &self,
        known: &mut Known,
        id: &str,
        rows: u64,
        now: SystemTime,
    ) -> Result<Reservation, Shortfall> {
        let Some(held) = known.held.get_mut(id) else {
            return Err(Shortfall::None);
        };
        if held.usage.damaged {
            return Err(Shortfall::Damaged { id: id.into() });
        }
        if self.revoked(held) {
            return Err(Shortfall::Revoked { id: id.into() });
        }
        if held.approval.expires.0 <= now {
            return Err(Shortfall::Expired { id: id.into() });
        }
        let left = held.approval.rows.saturating_sub(held.usage.used);
        if left < rows {
            return Err(Shortfall::UsedUp {
                id: id.into(),
                left,
            });
        }
        let reserved = rows + EXTRA_ROWS.min(left - rows);
        let usage = Usage {
            used: held.usage.used + reserved,
            ..held.usage
        };
        ledger::write(&self.dir, id, usage, &self.keys).map_err(|e| {
            warn!(approval = %id, "approvals: cannot write the usage ledger: {e}");
            Shortfall::Ledger(e.to_string())
        })?;
        held.usage = usage;
        Ok(Reservation {
            id: id.into(),
            rows: reserved,
        })
    }

    /// Gives back `rows` reserved of approval `id` and not used. If the
    /// ledger cannot be written they stay counted as used.
    pub(crate) fn release(&self, id: &str, rows: u64) {
        if rows == 0 {
            return;
        }
        let mut known = self.lock();
        let Some(held) = known.held.get_mut(id) else {
            return;
        };
        let usage = Usage {
            used: held.usage.used.saturating_sub(rows),
            ..held.usage
        };
        match ledger::write(&self.dir, id, usage, &self.keys) {
            Ok(()) => held.usage = usage,
            Err(e) => warn!(approval = %id, "approvals: cannot write the usage ledger: {e}"),
        }
    }

    /// The policy role of approval `id` and the rows it has left.
    pub(crate) fn describe(&self, id: &str) -> Option<(String, u64)> {
        let known = self.lock();
        let held = known.held.get(id)?;
        let left = held.approval.rows.saturating_sub(held.usage.used);
        Some((held.approval.role.clone(), left))
    }
}
