//! Where a migration keeps its progress, so that a run killed at any point
//! resumes where it was instead of reading every table again.
//!
//! **Where.** A small JSON file, by default next to the keyring
//! (`keyring.toml` → `keyring.migrate-state.json`), or where `--state`
//! says. Next to the keyring because the progress belongs to the keys it
//! was made with: the directory is private to the operator who runs
//! pgveil's key commands, it outlives reboots (unlike `/tmp`), and
//! `migrate` must read the keyring anyway. Not in the database: that
//! would need a table of pgveil's own in the customer's schema, and the
//! right to create it, which a migration of existing columns should not
//! ask for. Not in the audit directory: that belongs to the audit writer,
//! and a run without `[audit]` must resume too.
//!
//! **What.** A fingerprint of the plan (the database, each table's walk,
//! each column's key domain, mode and current key, or decryption: what
//! the policy and the keyring make the migration do), the tables
//! finished, and for the table under way its position (the last key of
//! the last committed batch, or for a table walked by `ctid` the pass
//! and block) with the counts so far. Key values of a table whose key
//! holds a migrated column are never written: such a table is walked by
//! `ctid` (see `plan.rs`). A state whose fingerprint differs (another
//! policy, a new key version, another database) is ignored, and so is one
//! that does not parse.
//!
//! **When.** After each batch has committed, written to a new file that
//! replaces the old one by `rename` (readable by its owner only, synced
//! first), so the file is always a whole state, and never ahead of the
//! database: a kill between a commit and the write costs at most that
//! batch being read again, and finding it done, since a value already as
//! the policy asks is never rewritten. Correctness never depends on the
//! file: deleting it only makes the next run read every row again. A run
//! that gets to the end (everything migrated or reported) removes it; a
//! dry run neither reads nor writes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::counts::Counts;

/// The format of the file this pgveil writes.
const FORMAT: u32 = 1;

/// The state file cannot be written.
#[derive(Debug, Error)]
#[error("cannot write the migration state {path}: {source} (give another place with --state)")]
pub(crate) struct StateError {
    path: PathBuf,
    source: io::Error,
}

/// Where a table under way is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Position {
    /// Every row up to this key (its columns as text), in key order, is
    /// done.
    After(Vec<String>),
    /// Walking by ctid: pass `pass` has done the blocks before `block`;
    /// `full` if the pass started at block 0 (a pass resumed after an
    /// interruption is not, and cannot prove the table done).
    Ctid { pass: u32, block: u32, full: bool },
}

/// The table under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TableProgress {
    /// `schema.table`.
    pub(super) table: String,
    pub(super) position: Position,
    /// Rows read so far (in the current pass, for a ctid walk).
    pub(super) rows: u64,
    /// Per column, in the plan's order.
    pub(super) counts: Vec<Counts>,
    /// What of `counts` is in the audit log already (written when a run
    /// was stopped by a signal), so that the next record of the table
    /// counts only the rest.
    #[serde(default)]
    pub(super) recorded: Vec<Counts>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    fingerprint: String,
    /// Tables finished, `schema.table`.
    done: Vec<String>,
    current: Option<TableProgress>,
}

/// The progress of a migration, read at start and saved as it goes.
pub(super) struct State {
    path: PathBuf,
    file: StateFile,
}

impl State {
    /// The default place: next to the keyring.
    pub(super) fn default_path(keyring: &Path) -> PathBuf {
        keyring.with_extension("migrate-state.json")
    }

    /// Reads the state at `path` if it was written for `fingerprint`;
    /// otherwise starts afresh, with a note saying why when a file was
    /// there.
    pub(super) fn open(path: &Path, fingerprint: &str) -> (State, Option<String>) {
        let fresh = |note| {
            let file = StateFile {
                format: FORMAT,
                fingerprint: fingerprint.into(),
                ..StateFile::default()
            };
            (
                State {
                    path: path.into(),
                    file,
                },
                note,
            )
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return fresh(None),
            Err(e) => return fresh(Some(format!("cannot read {}: {e}", path.display()))),
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(file) if file.format == FORMAT && file.fingerprint == fingerprint => (
                State {
                    path: path.into(),
                    file,
                },
                None,
            ),
            Ok(_) => fresh(Some(format!(
                "ignoring {}: it was written for another policy, keyring or database",
                path.display()
            ))),
            Err(_) => fresh(Some(format!(
                "ignoring {}: it is not a migration state",
                path.display()
            ))),
        }
    }

    /// Whether an earlier run finished `table`.
    pub(super) fn is_done(&self, table: &str) -> bool {
        self.file.done.iter().any(|t| t == table)
    }

    /// Where an earlier run left `table`.
    pub(super) fn resume(&self, table: &str) -> Option<&TableProgress> {
        self.file.current.as_ref().filter(|p| p.table == table)
    }

    /// Records a table's progress after a committed batch.
    pub(super) fn save(&mut self, progress: TableProgress) -> Result<(), StateError> {
        self.file.current = Some(progress);
        self.write()
    }

    /// Records that the audit log holds the counts so far of the table
    /// under way.
    pub(super) fn recorded(&mut self) -> Result<(), StateError> {
        if let Some(current) = &mut self.file.current {
            current.recorded = current.counts.clone();
        }
        self.write()
    }

    /// Records that `table` is finished.
    pub(super) fn finish(&mut self, table: &str) -> Result<(), StateError> {
        self.file.current = None;
        self.file.done.push(table.into());
        self.write()
    }

    /// Removes the file: the migration got to the end.
    pub(super) fn remove(self) -> Result<(), StateError> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StateError {
                path: self.path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Replaces the file with the state, atomically.
    fn write(&self) -> Result<(), StateError> {
        let text = serde_json::to_string_pretty(&self.file).expect("the state serializes");
        write_atomically(&self.path, text.as_bytes()).map_err(|source| StateError {
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes `bytes` to a new file beside `path` (owner-only), syncs it and
/// renames it over `path`, then syncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_kept_for_its_fingerprint_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = State::default_path(&dir.path().join("keyring.toml"));
        assert_eq!(path.file_name().unwrap(), "keyring.migrate-state.json");
        let (mut state, note) = State::open(&path, "abc");
        assert_eq!(note, None);
        let progress = TableProgress {
            table: "public.customers".into(),
            position: Position::After(vec!["42".into()]),
            rows: 42,
            counts: vec![Counts {
                seen: 42,
                encrypted: 40,
                ..Counts::default()
            }],
            recorded: Vec::new(),
        };
        state.save(progress.clone()).unwrap();
        state.finish("public.a").unwrap();
        state.save(progress.clone()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let (mut state, note) = State::open(&path, "abc");
        assert_eq!(note, None);
        assert!(state.is_done("public.a") && !state.is_done("public.customers"));
        assert_eq!(state.resume("public.customers"), Some(&progress));
        state.recorded().unwrap();
        let (state, _) = State::open(&path, "abc");
        let resumed = state.resume("public.customers").unwrap();
        assert_eq!(resumed.recorded, progress.counts);
        assert_eq!(state.resume("public.orders"), None);

        let (state, note) = State::open(&path, "def");
        assert!(note.unwrap().contains("another policy"));
        assert!(!state.is_done("public.a"));
        state.remove().unwrap();
        assert!(!path.exists());

        fs::write(&path, "not json").unwrap();
        let (state, note) = State::open(&path, "abc");
        assert!(note.unwrap().contains("not a migration state"));
        assert_eq!(state.resume("public.customers"), None);
    }
}
