//! What a reader gets in place of one value ([`Revealed`]), and the
//! error that replaces a result when a value is withheld ([`Denial`]).

use bytes::Bytes;

use crate::wire::reply::{self, Severity};
use crate::wire::sqlstate::{INSUFFICIENT_PRIVILEGE, IO_ERROR};

/// What a reader gets in place of one value.
pub(super) enum Revealed<'m> {
    /// The value as it is (not pgveil's ciphertext, or not decryptable).
    Keep,
    /// This, in the reader's encoding (text) or the form of its ciphertext
    /// (`bytea`).
    Value(&'m [u8]),
    /// NULL.
    Null,
    /// Withheld: denied by the policy of this column, or not recordable.
    Denied(Denial),
}

/// A value withheld from a reader.
#[derive(Debug)]
pub(super) struct Denial {
    /// `schema.table.column`.
    pub(super) column: String,
    pub(super) why: Withheld,
}

/// Why a value is withheld.
#[derive(Debug)]
pub(super) enum Withheld {
    /// The policy denies it to the reader.
    Policy,
    /// The audit log cannot record the access now (with `on_failure =
    /// "refuse"`).
    Unrecorded,
    /// It is beyond the column's approval limit and no approval serves
    /// it: the message says which is needed.
    Approval(String),
}

impl Denial {
    /// The ErrorResponse the reader gets instead of the row: SQLSTATE
    /// `io_error` for a value withheld while the audit log cannot record
    /// its reading, as pgveil's refusals of statements then;
    /// `insufficient_privilege` otherwise.
    pub(super) fn error(&self) -> Bytes {
        match &self.why {
            Withheld::Unrecorded => {
                let message = format!(
                    "pgveil: column {} cannot be revealed now: the audit log cannot record \
                     the access",
                    self.column
                );
                reply::error(Severity::Error, IO_ERROR, &message)
            }
            Withheld::Policy => denied(&self.column),
            Withheld::Approval(message) => {
                reply::error(Severity::Error, INSUFFICIENT_PRIVILEGE, message)
            }
        }
    }
}

/// The error a reader gets for a value the policy denies it.
fn denied(column: &str) -> Bytes {
    let message = format!("pgveil: access to column {column} is denied by policy");
    reply::error(Severity::Error, INSUFFICIENT_PRIVILEGE, &message)
}
