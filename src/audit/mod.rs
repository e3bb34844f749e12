//! The access audit log: one JSON line per connection event, statement and
//! alert.
//!
//! # What a record never holds
//!
//! No record type has a field for the value of a protected column, a bind
//! parameter or a literal. Records carry names (database, role, actor,
//! purpose, tables, columns), numbers (connection id, rows, durations),
//! closed sets (event, access, decision) and SQLSTATEs, which [`SqlState`]
//! restricts to five digits or capitals. The statement text is a
//! [`NormalizedStatement`]: the caller passes `pg_query::normalize` output,
//! in which every constant is a `$n` placeholder.

mod config;
mod record;

pub use config::{AuditConfig, AuditConfigError, OnFailure, MIN_FILE_BYTES};
pub use record::{
    Access, AlertRecord, AuditRecord, ColumnAccess, Decision, InvalidSqlState, Login,
    NormalizedStatement, Outcome, Peer, Session, SqlState, StatementRecord, Timestamp,
};
