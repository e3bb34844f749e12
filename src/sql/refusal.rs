//! Why pgveil refuses a statement ([`Reason`]), and the refusal the client
//! reads ([`Refusal`]): the reason's message, which names the column and
//! never quotes the statement or its values, with its SQLSTATE.

use thiserror::Error;

use super::array::ArrayError;
use super::columns::ColumnRefId;
use super::encryptor::EncryptError;
use crate::wire::sqlstate::{
    CHARACTER_NOT_IN_REPERTOIRE, DATATYPE_MISMATCH, FEATURE_NOT_SUPPORTED, INTERNAL_ERROR,
    INVALID_TEXT_REPRESENTATION, SYNTAX_ERROR,
};

/// A result refused for a [`Reason`].
pub(super) type Result<T> = std::result::Result<T, Reason>;

/// Why a statement is refused, as the client will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The SQLSTATE of the error the client gets (`crate::wire::sqlstate`).
    pub sqlstate: &'static str,
    /// The error's message, starting with `pgveil:`.
    pub message: String,
}

/// Why pgveil refuses a statement.
#[derive(Debug, Error)]
pub(super) enum Reason {
    #[error("pgveil: cannot parse the statement, so it cannot check it for protected columns")]
    Syntax,
    #[error(
        "pgveil: cannot encrypt the value written to column {0}: only string literals, \
         NULL and parameters can be written to a protected column"
    )]
    NotWritable(ColumnRefId),
    #[error(
        "pgveil: cannot encrypt the values INSERT ... SELECT writes to column {0}: \
         only string literals, NULL and parameters can be written to a protected column"
    )]
    InsertSelect(ColumnRefId),
    #[error(
        "pgveil: {statement} into {table} needs a column list, so that pgveil can tell \
         which values go to its protected column {column}"
    )]
    NoColumnList {
        statement: &'static str,
        table: String,
        column: ColumnRefId,
    },
    #[error(
        "pgveil: column {0} is encrypted with randomized encryption; only IS NULL \
         comparisons are possible (use deterministic encryption for equality search)"
    )]
    Randomized(ColumnRefId),
    #[error(
        "pgveil: column {0} is encrypted; ORDER BY / LIKE / range comparisons on it \
         would silently give wrong answers"
    )]
    NotSearchable(ColumnRefId),
    #[error(
        "pgveil: column {0} is encrypted; it can be compared only with string literals, \
         parameters, NULL and columns of its key domain"
    )]
    Incomparable(ColumnRefId),
    #[error(
        "pgveil: column {0} is encrypted; a condition can use it only in =, <>, IN and \
         IS NULL comparisons, computing on it would silently give wrong answers"
    )]
    Computed(ColumnRefId),
    #[error(
        "pgveil: {construct} cannot be computed on {origin}: the server holds only its ciphertext"
    )]
    ComputedValue { construct: String, origin: String },
    #[error(
        "pgveil: {construct} of protected column {column} cannot be revealed while the column \
         may hold values stored before pgveil (its guard is not validated), which only the \
         column itself can be checked for: read the column as it is, or encrypt its rows and \
         validate its guard"
    )]
    UnencryptedPassThrough {
        construct: String,
        column: ColumnRefId,
    },
    #[error("pgveil: column {0} is encrypted; column aliases on its table are not supported")]
    ColumnAliases(ColumnRefId),
    #[error("pgveil: cannot check a subquery in this kind of expression for protected columns")]
    UncheckedSubquery,
    #[error(
        "pgveil: {0} that mention a protected table cannot be checked for what they write \
         to it; write protected columns with INSERT, UPDATE or COPY"
    )]
    Opaque(&'static str),
    #[error("pgveil: MERGE cannot encrypt the values of column {0}; use INSERT and UPDATE")]
    Merge(ColumnRefId),
    #[error(
        "pgveil: COPY into a table with protected column {0} must read from STDIN, \
         so that pgveil can encrypt the data"
    )]
    CopyFromFile(ColumnRefId),
    #[error("pgveil: COPY into a table with protected column {0} cannot have a WHERE clause")]
    CopyWhere(ColumnRefId),
    #[error(
        "pgveil: COPY into a table with protected column {0} must be sent as a statement \
         of its own"
    )]
    CopyNotAlone(ColumnRefId),
    #[error(
        "pgveil: cannot tell what {0} does to pgveil.purpose, pgveil.actor or \
         pgveil.ticket; change them only with SET, RESET or a SELECT set_config(...) of \
         its own, whose arguments are constants or parameters"
    )]
    Undeclarable(&'static str),
    #[error("pgveil: a parameter of set_config is not valid in the client encoding")]
    UndecodableSetting,
    #[error(
        "pgveil: cannot encrypt the array for column {column}: {error}; write it as ARRAY[...], \
         a string literal or a parameter of type text[]"
    )]
    Array {
        column: ColumnRefId,
        error: ArrayError,
    },
    #[error(
        "pgveil: writes through view {view} are not encrypted (it exposes protected table \
         {table}); write to the table"
    )]
    ViewWrite { view: String, table: String },
    #[error(
        "pgveil: writes to {target} are not encrypted ({hook} protected table {table}); \
         write protected columns with INSERT, UPDATE or COPY on their table"
    )]
    HookedWrite {
        target: String,
        hook: String,
        table: String,
    },
    #[error(
        "pgveil: function {function} is called with a value pgveil cannot encrypt (its body \
         mentions protected table {table}); write protected columns with INSERT, UPDATE or COPY"
    )]
    FunctionArguments { function: String, table: String },
    #[error(
        "pgveil: column {column} of view {view} is computed from protected table {table}; \
         a value compared with it would reach the server unencrypted"
    )]
    DerivedViewColumn {
        column: String,
        view: String,
        table: String,
    },
    #[error(
        "pgveil: column {column} is computed from protected {origin}; a value compared with it \
         would reach the server unencrypted"
    )]
    DerivedColumn { column: String, origin: String },
    #[error(
        "pgveil: view {view} exposes protected table {table}; column aliases on it are not \
         supported"
    )]
    ViewAliases { view: String, table: String },
    #[error("pgveil: cannot encrypt a value for column {column}: {error}")]
    Encrypt {
        column: ColumnRefId,
        error: EncryptError,
    },
    #[error(
        "pgveil: column {column} is protected but has type {type_name}, which cannot hold \
         its ciphertext; a protected column must be of a text type or bytea"
    )]
    UnsupportedType {
        column: ColumnRefId,
        type_name: String,
    },
    #[error("pgveil: the value for bytea column {0} is not valid bytea input")]
    NotBytea(ColumnRefId),
    #[error(
        "pgveil: arrays of values for bytea column {0} are not supported; write or compare \
         its values one at a time"
    )]
    ByteaArray(ColumnRefId),
}

impl From<Reason> for Refusal {
    fn from(reason: Reason) -> Self {
        let sqlstate = match reason {
            Reason::Syntax => SYNTAX_ERROR,
            Reason::Encrypt { .. } => INTERNAL_ERROR,
            Reason::UndecodableSetting => CHARACTER_NOT_IN_REPERTOIRE,
            Reason::UnsupportedType { .. } => DATATYPE_MISMATCH,
            Reason::NotBytea(_) => INVALID_TEXT_REPRESENTATION,
            _ => FEATURE_NOT_SUPPORTED,
        };
        Refusal {
            sqlstate,
            message: reason.to_string(),
        }
    }
}
