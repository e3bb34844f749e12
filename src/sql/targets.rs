//! What values are encrypted for: the protected column and how it stores
//! its ciphertext ([`Target`]), the `$n` parameters of a statement to
//! encrypt at Bind time ([`ParamSlot`]), and those of the statements a
//! session prepared ([`Prepared`], [`Statements`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::columns::{ColumnRefId, ColumnType, Columns, Storage};
use super::refusal::Reason;
use crate::protect::policy::ColumnPolicy;

/// A protected column values are encrypted for, and how it stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The protected column, shared: a statement's slots are cloned at
    /// every Bind, and equal columns compare by pointer first.
    pub column: Arc<ColumnRefId>,
    /// How it holds its ciphertext, from its type.
    pub storage: Storage,
}

impl Target {
    /// The target of values for `column`; refused for a type that cannot
    /// hold ciphertext.
    pub(super) fn of(columns: &dyn Columns, column: &ColumnPolicy) -> Result<Self, Reason> {
        Ok(Target {
            column: Arc::new(column.into()),
            storage: storage(columns, column)?,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt(f)
    }
}

/// How `column` stores its ciphertext; refused for a type that cannot. A
/// column the catalog does not know (its table was created after the
/// session started) is taken to be text: its ciphertext is then the text
/// envelope, which no other type turns back into plaintext.
pub(super) fn storage(columns: &dyn Columns, column: &ColumnPolicy) -> Result<Storage, Reason> {
    match columns.type_of(&column.schema, &column.table, &column.column) {
        None | Some(ColumnType::Text) => Ok(Storage::Text),
        Some(ColumnType::Bytea) => Ok(Storage::Bytea),
        Some(ColumnType::Other(type_name)) => Err(Reason::UnsupportedType {
            column: column.into(),
            type_name: type_name.clone(),
        }),
    }
}

/// A `$n` parameter whose value must be encrypted for a column at Bind
/// time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSlot {
    /// `n`, counted from 1.
    pub number: usize,
    /// The protected column its value goes to.
    pub target: Target,
    /// The value is an array of values for the column (`= ANY($n)`,
    /// `UNNEST($n)`): each element is encrypted ([`super::array`]).
    pub array: bool,
}

/// The parameter slots of a statement prepared with SQL `PREPARE`, so that
/// the arguments of a later `EXECUTE` can be encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// The prepared statement's name.
    pub name: String,
    /// Its parameter slots.
    pub params: Vec<ParamSlot>,
}

/// The parameter slots of the statements a session prepared with SQL
/// `PREPARE`, by name.
pub(crate) type PreparedSlots = HashMap<String, Vec<ParamSlot>>;

/// The statements a session has prepared, whose `EXECUTE` arguments may go
/// to protected columns: with SQL `PREPARE` or a named Parse, which
/// PostgreSQL keeps under one namespace, so that `EXECUTE` runs either.
pub(crate) trait Statements {
    /// Whether a statement may have parameter slots.
    fn any(&self) -> bool;
    /// The parameter slots of the statement `name`.
    fn slots(&self, name: &str) -> Vec<ParamSlot>;
}

impl Statements for PreparedSlots {
    fn any(&self) -> bool {
        !self.is_empty()
    }

    fn slots(&self, name: &str) -> Vec<ParamSlot> {
        self.get(name).cloned().unwrap_or_default()
    }
}

/// Adds to `slots` those of `more` it does not have.
pub(crate) fn merge_slots<'s>(
    slots: &mut Vec<ParamSlot>,
    more: impl IntoIterator<Item = &'s ParamSlot>,
) {
    for slot in more {
        if !slots.contains(slot) {
            slots.push(slot.clone());
        }
    }
}
