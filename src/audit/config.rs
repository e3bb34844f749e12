//! The `[audit]` section of the configuration. Every key has a default.
//!
//! ```toml
//! [audit]
//! dir = "/var/lib/pgveil/audit"
//! max_file_bytes = 67108864   # rotate at 64 MiB (and at each UTC day)
//! retention_days = 180        # delete older sealed files; 0 keeps all
//! fsync_interval_ms = 200
//! queue_capacity = 65536      # records waiting for the writer
//! on_failure = "refuse"       # or "continue"
//! compress = true             # compress sealed files (Zstandard)
//! approvals = "/var/lib/pgveil/approvals"   # where `pgveil approve` writes
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;

/// What the data path does when the audit log cannot take a record.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse statements touching protected columns.
    #[default]
    Refuse,
    /// Go on without the record: count it as dropped and warn.
    Continue,
}

/// Where and how the audit log is written.
/// Which statements are recorded.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every statement.
    #[default]
    All,
    /// Statements that read or write protected columns, or mention a
    /// protected table; connection events always.
    Protected,
}

/// The `[audit]` section of the configuration: where and how the audit
/// log is written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Which statements are recorded.
    pub scope: Scope,
    /// The directory holding the audit files; created if missing.
    pub dir: PathBuf,
    /// A file is sealed and a new one started before it would grow past
    /// this size.
    pub max_file_bytes: u64,
    /// Sealed files from UTC days older than this are deleted; 0 keeps
    /// every file.
    pub retention_days: u32,
    /// Written records are flushed to disk at most this long after being
    /// written; 0 flushes after every batch.
    pub fsync_interval_ms: u64,
    /// Records waiting for the writer; beyond it `record` fails.
    pub queue_capacity: usize,
    /// What happens to reads of protected columns when the log cannot record.
    pub on_failure: OnFailure,
    /// Sealed files are compressed (Zstandard) to `NAME.jsonl.zst`.
    pub compress: bool,
    /// Bulk-access detection (`[audit.bulk]`); off when absent.
    pub bulk: Option<BulkConfig>,
    /// The approvals directory (`crate::audit::approvals`): where `pgveil
    /// approve` writes approvals and `serve` keeps their usage. Without
    /// it, a column's `approval` limit is never lifted.
    pub approvals: Option<PathBuf>,
}

/// What to do when a bulk-access threshold is crossed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnBulk {
    /// Write an alert record and a warning.
    #[default]
    Alert,
    /// Also refuse further plaintext reveals to the session that crossed it.
    Block,
}

/// A bulk-access threshold: more than `threshold_rows` rows of one
/// protected column revealed in plaintext to one role and actor within
/// `window_secs`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    /// Rows of protected columns one session may read within the window before an alert.
    pub threshold_rows: u64,
    /// The sliding window, in seconds.
    pub window_secs: u64,
    /// What happens once the threshold is passed.
    pub on_bulk: OnBulk,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            threshold_rows: 1000,
            window_secs: 300,
            on_bulk: OnBulk::Alert,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            scope: Scope::All,
            dir: "audit".into(),
            max_file_bytes: 64 * 1024 * 1024,
            retention_days: 180,
            fsync_interval_ms: 200,
            queue_capacity: 65536,
            on_failure: OnFailure::Refuse,
            compress: true,
            bulk: None,
            approvals: None,
        }
    }
}

/// The smallest `max_file_bytes`: room for a header, a record and a seal.
pub(crate) const MIN_FILE_BYTES: u64 = 4096;
/// The largest `max_file_bytes`: files are read whole when verified.
pub(super) const MAX_FILE_BYTES: u64 = 1 << 30;

/// An `[audit]` setting that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("audit.{key}: {problem}")]
pub struct AuditConfigError {
    pub key: &'static str,
    pub problem: &'static str,
}

impl AuditConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), AuditConfigError> {
        let fail = |key, problem| Err(AuditConfigError { key, problem });
        if self.dir.as_os_str().is_empty() {
            return fail("dir", "must not be empty");
        }
        if self.max_file_bytes < MIN_FILE_BYTES {
            return fail("max_file_bytes", "must be at least 4096");
        }
        if self.max_file_bytes > MAX_FILE_BYTES {
            return fail("max_file_bytes", "must be at most 1073741824 (1 GiB)");
        }
        if self.queue_capacity == 0 {
            return fail("queue_capacity", "must be at least 1");
        }
        if self
            .approvals
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return fail("approvals", "must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_the_defaults() {
        let config: AuditConfig = toml::from_str("").unwrap();
        assert_eq!(config, AuditConfig::default());
        assert_eq!(config.max_file_bytes, 64 << 20);
        assert_eq!(config.retention_days, 180);
        assert_eq!(config.fsync_interval_ms, 200);
        assert_eq!(config.on_failure, OnFailure::Refuse);
        assert!(config.compress);
        config.validate().unwrap();
    }

    #[test]
    fn settings_are_read_and_checked() {
        let config: AuditConfig =
            toml::from_str("dir = \"/tmp/a\"\non_failure = \"continue\"\nmax_file_bytes = 100")
                .unwrap();
        assert_eq!(config.on_failure, OnFailure::Continue);
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "audit.max_file_bytes: must be at least 4096"
        );
        let huge: AuditConfig =
            toml::from_str("dir = \"/tmp/a\"\nmax_file_bytes = 1073741825").unwrap();
        assert_eq!(
            huge.validate().unwrap_err().to_string(),
            "audit.max_file_bytes: must be at most 1073741824 (1 GiB)"
        );
        assert!(toml::from_str::<AuditConfig>("on_failure = \"ignore\"").is_err());
        let approvals: AuditConfig = toml::from_str("approvals = \"/tmp/ap\"").unwrap();
        assert_eq!(approvals.approvals, Some("/tmp/ap".into()));
        let empty: AuditConfig = toml::from_str("approvals = \"\"").unwrap();
        assert_eq!(
            empty.validate().unwrap_err().to_string(),
            "audit.approvals: must not be empty"
        );
        let plain: AuditConfig = toml::from_str("compress = false").unwrap();
        assert!(!plain.compress);
        assert!(toml::from_str::<AuditConfig>("compress = \"zstd\"").is_err());
        assert!(toml::from_str::<AuditConfig>("max_bytes = 1").is_err());
    }
}
