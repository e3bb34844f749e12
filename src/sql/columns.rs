//! Protected columns as the analysis sees them: a column as PostgreSQL
//! resolved it ([`ColumnRefId`]), and what the session's catalog says of
//! its type ([`Columns`], [`ColumnType`]) and so of how it holds its
//! ciphertext ([`Storage`]).

use std::fmt;

use crate::protect::policy::ColumnPolicy;

/// How a protected column holds its ciphertext, from its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A text type: the text envelope, `pgv1:...`.
    Text,
    /// `bytea`: the binary envelope; the plaintext is the value's bytes.
    Bytea,
}

/// The type of a column, as far as protection cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// A string type (`text`, `varchar`, `char`, `citext`, a domain over one).
    Text,
    /// `bytea`, or a domain over it.
    Bytea,
    /// Any other type, by its SQL name: it cannot hold ciphertext.
    Other(String),
}

/// What the catalog says about the protected tables.
pub(crate) trait Columns {
    /// The column names of a table in order, by schema and table name, for
    /// statements without a column list.
    fn order(&self, schema: &str, table: &str) -> Option<Vec<String>>;
    /// The type of a column; `None` when the catalog does not know it.
    fn type_of(&self, schema: &str, table: &str, column: &str) -> Option<&ColumnType>;
    /// Whether a protected column may hold values not stored encrypted
    /// (rows written before pgveil, or around it): its ciphertext guard
    /// is missing or not validated. Without a catalog, no.
    fn may_hold_unencrypted(&self, _schema: &str, _table: &str, _column: &str) -> bool {
        false
    }
}

/// No catalog: no column order, every type unknown.
pub(crate) struct NoCatalog;

impl Columns for NoCatalog {
    fn order(&self, _: &str, _: &str) -> Option<Vec<String>> {
        None
    }

    fn type_of(&self, _: &str, _: &str, _: &str) -> Option<&ColumnType> {
        None
    }
}

/// A column named as PostgreSQL resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ColumnRefId {
    /// The schema of its table.
    pub schema: String,
    /// The name of its table.
    pub table: String,
    /// The column's name.
    pub column: String,
}

impl From<&ColumnPolicy> for ColumnRefId {
    fn from(c: &ColumnPolicy) -> Self {
        Self {
            schema: c.schema.clone(),
            table: c.table.clone(),
            column: c.column.clone(),
        }
    }
}

impl fmt::Display for ColumnRefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.schema, self.table, self.column)
    }
}
