//! The access audit log: one JSON line per connection event, statement,
//! alert, policy reload and migration step, in files that show whether
//! they were altered.
//!
//! The data path hands [`AuditRecord`]s to an [`AuditHandle`], which never
//! waits; a writer on its own thread ([`AuditSink`]) appends them to
//! `audit-YYYYMMDD-NNNN.jsonl` files in the configured directory
//! ([`AuditConfig`]), rotated by size and by UTC day, compressed to
//! `.jsonl.zst` once sealed (`compress.rs`), and deletes sealed files older
//! than the retention period. Records it cannot write are counted in a
//! gap record (`sink.rs`). [`verify`] checks a directory.
//!
//! # What a record never holds
//!
//! No record type has a field for the value of a protected column, a bind
//! parameter or a literal. Records carry names (database, role, actor,
//! purpose, tables, columns), numbers (connection id, rows, durations,
//! seq), closed sets (event, access, decision) and SQLSTATEs, which
//! [`SqlState`] restricts to five digits or capitals. The statement text
//! is a [`NormalizedStatement`]: the caller passes `pg_query::normalize`
//! output with its comments removed and every constant it leaves replaced
//! (`trail::redact`), in which every constant is a `$n` placeholder.
//!
//! # Tamper evidence
//!
//! Every record line carries a `seq`, one more than the previous record's
//! across files and restarts, and a `mac` chaining it to the previous
//! record under the audit MAC key. Every file starts with a header naming
//! the chain head it continues from and ends with a seal signed with the
//! audit Ed25519 key: its first and last seq, last MAC and SHA-256. The
//! byte layout is in [`format`](self::format); what verification accepts,
//! including after retention, is in [`verify`](self::verify).
//!
//! ```text
//! {"audit":"pgveil/1","file":"audit-20261125-0001.jsonl","prev_seq":0,"prev_mac":"AAAA…="}
//! {"seq":1,"event":"connect","time":"2026-11-25T10:00:00.000000Z","connection":1,"client":"10.0.0.7:51234","mac":"…"}
//! {"seal":{"file":"audit-20261125-0001.jsonl","first_seq":1,"last_seq":1,"last_mac":"…","sha256":"…","recovered":false,"sealed":"…"},"sig":"…"}
//! ```

pub mod approvals;
pub(crate) mod bulk_reads;
mod compress;
mod config;
mod format;
mod keys;
mod line;
mod record;
pub(crate) mod review;
mod sink;
pub mod trail;
mod verify;
mod writer;

pub use config::Scope;
pub use config::{AuditConfig, BulkConfig, OnBulk};
pub use keys::AuditKeys;
pub(crate) use line::StatementLine;
pub(crate) use record::{
    Access, AlertRecord, ApprovalUseRecord, AuditRecord, ColumnAccess, Decision, MigrationAction,
    MigrationRecord, NormalizedStatement, Outcome, SqlState, StatementRecord, Timestamp,
};
pub use record::{Login, Peer};
pub use sink::AuditHandle;
pub use sink::AuditSink;
pub use verify::{
    verify, verify_live, Coverage, FileCheck, Gap, Location, Status, UncleanEnd, VerifyError,
    VerifyReport,
};
#[cfg(test)]
pub(crate) use {
    config::{OnFailure, MIN_FILE_BYTES},
    record::{GapCause, GapRecord, Session},
    sink::AuditUnavailable,
    writer::AuditError,
};

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_sm;
