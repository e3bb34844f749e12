//! Errors of the statements a migration sends, told without a value.
//!
//! PostgreSQL's DETAIL of an error can quote the row it failed on
//! (`Failing row contains (...)`), and the message of a data exception
//! (class 22) the input it could not take, so neither is ever shown: an
//! error is its SQLSTATE, PostgreSQL's message outside class 22, and the
//! constraint, table and column it names.

use thiserror::Error;

/// What a migration does about a failed statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection is gone: stop.
    Connection,
    /// Concurrency (a deadlock, a serialization failure, a lock not had
    /// in time): try again.
    Retry,
    /// Something about the rows written (a constraint, a value too long,
    /// a trigger's exception): write them one by one, and leave those the
    /// database refuses.
    Row,
    /// Anything else (a permission, a missing object): stop.
    Other,
}

/// A failed statement, described without any value.
#[derive(Clone, Debug, Error)]
#[error("{reason}")]
pub(crate) struct DbError {
    /// What to tell.
    pub(crate) reason: String,
    /// The SQLSTATE, if the server sent one.
    pub(crate) code: Option<String>,
    pub(crate) failure: Failure,
}

impl DbError {
    pub(crate) fn new(error: tokio_postgres::Error) -> Self {
        let Some(db) = error.as_db_error() else {
            return DbError {
                reason: crate::ops::maintenance::reason(&error),
                code: None,
                failure: if error.is_closed() {
                    Failure::Connection
                } else {
                    Failure::Other
                },
            };
        };
        let code = db.code().code();
        let failure = match &code[..2] {
            "08" => Failure::Connection,
            "40" | "55" => Failure::Retry,
            "22" | "23" | "P0" | "27" => Failure::Row,
            _ => Failure::Other,
        };
        let message = if code.starts_with("22") {
            "the database refused a value".to_owned()
        } else {
            db.message().to_owned()
        };
        let mut names = Vec::new();
        for (what, name) in [
            ("constraint", db.constraint()),
            ("table", db.table()),
            ("column", db.column()),
        ] {
            if let Some(name) = name {
                names.push(format!("{what} {name}"));
            }
        }
        let names = if names.is_empty() {
            String::new()
        } else {
            format!(", {}", names.join(", "))
        };
        DbError {
            reason: format!("{message} (SQLSTATE {code}{names})"),
            code: Some(code.to_owned()),
            failure,
        }
    }
}
