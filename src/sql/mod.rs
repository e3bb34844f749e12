//! Statement rewriting: finds every place a statement writes or compares a
//! protected column, and rewrites it so that those values are encrypted,
//! or refuses it.
//!
//! Statements are analysed with PostgreSQL's own grammar (`pg_query`), and
//! rewritten by splicing the original text: each string literal that must
//! be encrypted is replaced, token for token, by a literal holding its
//! ciphertext (whatever its spelling: `'..'`, `E'..'`, `$$..$$`, `U&'..'`;
//! a cast such as `'x'::text` keeps its cast). Parameters (`$n`) cannot be
//! encrypted here: they are reported as [`ParamSlot`]s for the relay to
//! encrypt at Bind time. Everything else of the text, comments included,
//! is left as it was.
//!
//! **Writes.** `INSERT ... VALUES`, `UPDATE ... SET` and `ON CONFLICT DO
//! UPDATE SET` may write a string literal, `NULL`, `DEFAULT` or a `$n`
//! parameter (possibly cast) to a protected column, and `ON CONFLICT` also
//! `EXCLUDED.col` to the same column. Anything else (a function call,
//! another column, a subquery, `INSERT ... SELECT`) is refused, because
//! the value would reach the table unencrypted, except for the two
//! `INSERT ... SELECT` shapes ORMs batch rows in: `SELECT * FROM
//! UNNEST(a1, a2, ...)` (Django's `bulk_create`), whose arrays are
//! encrypted element by element, and `SELECT p0::T, ... FROM (VALUES ...)
//! AS t(p0, ...) ORDER BY ...` (SQLAlchemy's insertmanyvalues), whose
//! VALUES items are written to the columns their outputs go to. An
//! array is an `ARRAY[...]` of such values, a string literal in array
//! syntax or a parameter (see [`array`]). `DEFAULT` is kept: a
//! protected column must not have a non-NULL default (checked elsewhere,
//! from the catalog). `MERGE` touching a protected table is refused.
//! `COPY ... FROM STDIN` into a protected table is reported as
//! [`Outcome::CopyIn`] so the relay can encrypt the data stream.
//!
//! **Searches.** In conditions (`WHERE`, `ON`, `HAVING`, at any depth:
//! subqueries, CTEs, joins), a protected column may be compared with `=`,
//! `<>`, `IN (...)`, `IS [NOT] DISTINCT FROM` to a literal (encrypted with
//! the column's key), a parameter, `NULL`, or another protected column of
//! the same key domain; with `= ANY (...)`, `<> ALL (...)` (and `<> ANY`,
//! `= ALL`) to an array, encrypted element by element; it may be tested
//! with `IS [NOT] NULL`. Only
//! deterministic columns can be compared; randomized ones only tested for
//! NULL. Ranges, `LIKE`, `ORDER BY`, other operators and functions of a
//! protected column in a condition are refused: on ciphertext they would
//! silently give wrong answers. `GROUP BY` is allowed on deterministic
//! columns only.
//!
//! **Reads.** An expression that computes on a protected value where a
//! statement reads it (`upper(email)`, `email || ''`, `email::bytea`,
//! `row(email)`, `to_jsonb(c)`, `min(email)`) is refused, naming the
//! construct; values passed through as they are stored (the column, a
//! text cast that cannot change it, `COALESCE`, `CASE` results, `count`)
//! are read as ever (see [`computed`]).
//!
//! **Resolving names** is conservative. An unqualified table name is in
//! schema `public`, unless it names a CTE. A qualified column (`c.email`,
//! `public.customers.email`) resolves through the alias or table name,
//! innermost query first. An unqualified column that is the name of a
//! protected column of any relation in scope is taken to be that column,
//! even if PostgreSQL would resolve it to an unprotected column of another
//! table. A subquery or CTE passes a protected column through under its
//! output name when its select list names it bare or via `*` (by position
//! through column aliases and set operations); an output computed from
//! protected values is *derived*, and cannot be compared with a value nor
//! used in a condition but for `IS NULL` (see [`outputs`]). Column aliases
//! on a protected table (`customers AS c(a, b)`) are refused.
//!
//! **SQL `PREPARE`.** The parameter slots of a statement prepared with
//! `PREPARE` are reported, statement by statement, with what `DEALLOCATE`
//! and `DISCARD ALL` forget ([`Analysis::effects`]); the session applies
//! them as the server completes each (`declared.rs`) and passes the slots
//! back in, so that the arguments of a later `EXECUTE` are encrypted.
//!
//! **Server-side objects.** Views, functions, rules and triggers over
//! protected tables, which the session's catalog lists ([`ServerObjects`]), are
//! handled in `objects`: writes through them and calls of such
//! functions with values are refused, and a view's columns that are a
//! protected column as it is resolve to that column.
//!
//! **Left out:** statements inside function bodies, `DO` blocks and
//! `CALL`; a `$n` used for two different columns; `NATURAL` joins;
//! `DISTINCT ON`.
//!
//! **Column types.** A protected column of a text type (`text`, `varchar`,
//! `char`, `citext`, a domain over one) holds the text envelope; a `bytea`
//! column (or a domain over it) holds the binary envelope, and its
//! plaintext is the bytes the value stands for, whether it was written in
//! hex (`'\x0102'`) or escape form, so equal bytes encrypt equally. A
//! literal for a `bytea` column is replaced by `E'\\x...'`, which reads the
//! same whatever `standard_conforming_strings` is. Writing or comparing a
//! value to a protected column of any other type is refused: it cannot
//! hold ciphertext. Types come from the catalog ([`Columns`]); a column it
//! does not know is taken to be text.
//!
//! Refusal messages start with `pgveil:`, name the column and the reason,
//! and never quote the statement or its values, which may be personal
//! data.

pub(crate) mod analyze;
pub(crate) mod array;
pub(crate) mod computed;
pub(crate) mod copy;
pub(crate) mod literals;
pub(crate) mod objects;
pub(crate) mod outputs;
pub(crate) mod scope;
pub(crate) mod settings;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
pub(crate) mod tests_computed;
pub(crate) mod views;

use std::collections::HashMap;
use std::fmt;

use pg_query::protobuf::node::Node as NodeEnum;
use thiserror::Error;

use crate::protect::policy::{ColumnPolicy, Policy};

use analyze::{Analyzer, Edit};

pub use copy::{copy_out_options, is_copy_from_stdin, CopyIn};
pub use literals::conform as conform_literals;
pub use objects::{CatalogObject, Kind, ServerObjects};
pub use settings::{declarations, undeclarable_call, Declarations, Effect, Param, SettingChange};

/// Encrypts values for protected columns.
pub trait Encryptor: Sync {
    /// The ciphertext of `plaintext` for a text `column`, as ASCII text
    /// made of `[A-Za-z0-9_:-]` only, so that it can be written as a plain
    /// SQL string literal.
    fn encrypt(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError>;

    /// The binary ciphertext of `plaintext` for a `bytea` `column`.
    fn encrypt_bytes(
        &self,
        column: &ColumnPolicy,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptError>;
}

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
pub enum ColumnType {
    /// A string type (`text`, `varchar`, `char`, `citext`, a domain over one).
    Text,
    /// `bytea`, or a domain over it.
    Bytea,
    /// Any other type, by its SQL name: it cannot hold ciphertext.
    Other(String),
}

/// What the catalog says about the protected tables.
pub trait Columns {
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
pub struct NoCatalog;

impl Columns for NoCatalog {
    fn order(&self, _: &str, _: &str) -> Option<Vec<String>> {
        None
    }

    fn type_of(&self, _: &str, _: &str, _: &str) -> Option<&ColumnType> {
        None
    }
}

/// How `column` stores its ciphertext; refused for a type that cannot. A
/// column the catalog does not know (its table was created after the
/// session started) is taken to be text: its ciphertext is then the text
/// envelope, which no other type turns back into plaintext.
fn storage(columns: &dyn Columns, column: &ColumnPolicy) -> Result<Storage, Reason> {
    match columns.type_of(&column.schema, &column.table, &column.column) {
        None | Some(ColumnType::Text) => Ok(Storage::Text),
        Some(ColumnType::Bytea) => Ok(Storage::Bytea),
        Some(ColumnType::Other(type_name)) => Err(Reason::UnsupportedType {
            column: column.into(),
            type_name: type_name.clone(),
        }),
    }
}

/// An [`Encryptor`] failure. Its text must not contain the plaintext.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct EncryptError(pub String);

/// A column named as PostgreSQL resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ColumnRefId {
    pub schema: String,
    pub table: String,
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

/// A protected column values are encrypted for, and how it stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub column: ColumnRefId,
    pub storage: Storage,
}

impl Target {
    /// The target of values for `column`; refused for a type that cannot
    /// hold ciphertext.
    fn of(columns: &dyn Columns, column: &ColumnPolicy) -> Result<Self, Reason> {
        Ok(Target {
            column: column.into(),
            storage: storage(columns, column)?,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt(f)
    }
}

/// A `$n` parameter whose value must be encrypted for a column at Bind
/// time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSlot {
    /// `n`, counted from 1.
    pub number: usize,
    pub target: Target,
    /// The value is an array of values for the column (`= ANY($n)`,
    /// `UNNEST($n)`): each element is encrypted ([`array`]).
    pub array: bool,
}

/// The parameter slots of a statement prepared with SQL `PREPARE`, so that
/// the arguments of a later `EXECUTE` can be encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub name: String,
    pub params: Vec<ParamSlot>,
}

/// The parameter slots of the statements a session prepared with SQL
/// `PREPARE`, by name.
pub type PreparedSlots = HashMap<String, Vec<ParamSlot>>;

/// The statements a session has prepared, whose `EXECUTE` arguments may go
/// to protected columns: with SQL `PREPARE` or a named Parse, which
/// PostgreSQL keeps under one namespace, so that `EXECUTE` runs either.
pub trait Statements {
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
pub fn merge_slots<'s>(slots: &mut Vec<ParamSlot>, more: impl IntoIterator<Item = &'s ParamSlot>) {
    for slot in more {
        if !slots.contains(slot) {
            slots.push(slot.clone());
        }
    }
}

/// A statement text with its protected values encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub sql: String,
    /// The statement's own `$n` parameters to encrypt at Bind time.
    pub params: Vec<ParamSlot>,
    /// The protected columns the text writes values to, for the audit log.
    pub written: Vec<ColumnRefId>,
}

/// What to do with a statement text, and what each of its statements
/// does to the session's SQL-prepared statements once the server has run
/// it ([`Effect::Prepare`], [`Effect::Deallocate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    pub outcome: Outcome,
    /// By statement, in order; empty when the text was not parsed or is
    /// refused.
    pub effects: Vec<Vec<Effect>>,
}

/// Why a statement is refused, as the client will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: &'static str,
    pub message: String,
}

/// What to do with a statement text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Relay it as it is.
    Unchanged,
    /// Relay this text instead.
    Rewritten(Rewrite),
    /// Relay it as it is, but encrypt the COPY data that follows.
    CopyIn(CopyIn),
    /// Answer with this error instead of relaying it.
    Refused(Refusal),
}

/// SQLSTATE `syntax_error`.
const SYNTAX_ERROR: &str = "42601";
/// SQLSTATE `feature_not_supported`.
const NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE `internal_error`.
const INTERNAL_ERROR: &str = "XX000";
/// SQLSTATE `character_not_in_repertoire`.
const NOT_IN_REPERTOIRE: &str = "22021";
/// SQLSTATE `datatype_mismatch`.
const DATATYPE_MISMATCH: &str = "42804";
/// SQLSTATE `invalid_text_representation`.
const INVALID_TEXT: &str = "22P02";

/// Why pgveil refuses a statement.
#[derive(Debug, Error)]
enum Reason {
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
        "pgveil: cannot tell what {0} does to pgveil.purpose or pgveil.actor; change them \
         only with SET, RESET or a SELECT set_config(...) of its own, whose arguments are \
         constants or parameters"
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
        error: array::ArrayError,
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
            Reason::UndecodableSetting => NOT_IN_REPERTOIRE,
            Reason::UnsupportedType { .. } => DATATYPE_MISMATCH,
            Reason::NotBytea(_) => INVALID_TEXT,
            _ => NOT_SUPPORTED,
        };
        Refusal {
            sqlstate,
            message: reason.to_string(),
        }
    }
}

/// Analyses a statement text (one or more statements) for protected
/// columns, and encrypts the values it writes or compares to them, with
/// no catalog: `INSERT` and `COPY` without a column list are refused, and
/// every protected column is taken to be text.
pub fn rewrite(sql: &str, policy: &Policy, enc: &dyn Encryptor) -> Outcome {
    rewrite_in_session(
        sql,
        policy,
        enc,
        &NoCatalog,
        ServerObjects::none(),
        &PreparedSlots::new(),
    )
    .outcome
}

/// Words without which a text cannot use or change the session's
/// SQL-prepared statements.
const PREPARED_WORDS: [&[u8]; 4] = [b"execute", b"prepare", b"deallocate", b"discard"];

/// [`rewrite`] in a session: knowing the column order and types of
/// tables, the views, functions, rules and triggers over protected tables
/// ([`ServerObjects`]), and the statements the session prepared
/// ([`Statements`]), whose `EXECUTE` arguments are encrypted wherever it appears
/// (alone, after other statements or the `PREPARE` in the same text,
/// under `EXPLAIN` or `CREATE TABLE AS`). A text that mentions no
/// protected table nor such an object, and, while the session has such
/// statements, none of `execute`, `prepare`, `deallocate`, `discard`, is
/// not parsed.
pub fn rewrite_in_session(
    sql: &str,
    policy: &Policy,
    enc: &dyn Encryptor,
    columns: &dyn Columns,
    objects: &ServerObjects,
    prepared: &dyn Statements,
) -> Analysis {
    let uses_prepared = || {
        prepared.any()
            && PREPARED_WORDS
                .iter()
                .any(|word| crate::text::ascii::contains_ignore_case(sql.as_bytes(), word))
    };
    if !policy.mentions_protected_table(sql) && !objects.mentioned_in(sql) && !uses_prepared() {
        return Analysis {
            outcome: Outcome::Unchanged,
            effects: Vec::new(),
        };
    }
    rewrite_parsed(sql, policy, enc, columns, objects, prepared).unwrap_or_else(|reason| Analysis {
        outcome: Outcome::Refused(reason.into()),
        effects: Vec::new(),
    })
}

/// PostgreSQL's tokens of `sql`, as `pg_query::scan_tokens` gives them,
/// but safe on text without any token (empty or white space), on which
/// pg_query 18 makes a slice from a null pointer (undefined behaviour; a
/// debug build aborts the process). Call this, never `scan_tokens`.
pub(crate) fn scan_tokens(
    sql: &str,
) -> Result<Vec<pg_query::protobuf::ScanToken>, pg_query::Error> {
    if sql
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b'))
    {
        return Ok(Vec::new());
    }
    pg_query::scan_tokens(sql)
}

fn statement(raw: &pg_query::protobuf::RawStmt) -> Option<&NodeEnum> {
    raw.stmt.as_ref()?.node.as_ref()
}

fn rewrite_parsed(
    sql: &str,
    policy: &Policy,
    enc: &dyn Encryptor,
    columns: &dyn Columns,
    objects: &ServerObjects,
    prepared: &dyn Statements,
) -> Result<Analysis, Reason> {
    let parsed = pg_query::parse(sql, 0).map_err(|_| Reason::Syntax)?;
    let tokens = scan_tokens(sql).map_err(|_| Reason::Syntax)?;
    let mut analyzer = Analyzer::new(sql, tokens, policy, enc, columns, objects, prepared);
    analyzer.check_calls()?;
    let statements = &parsed.protobuf.stmts;
    let mut effects = Vec::with_capacity(statements.len());
    for raw in statements {
        match statement(raw) {
            Some(NodeEnum::CopyStmt(copy)) => {
                if let Some(range) = copy.relation.as_ref().filter(|_| copy.is_from) {
                    analyzer.check_write(range)?;
                }
                if let Some(copy_in) = copy::copy_in(copy, policy, columns)? {
                    if statements.len() > 1 {
                        return Err(Reason::CopyNotAlone(copy_in.first_protected()));
                    }
                    return Ok(Analysis {
                        outcome: Outcome::CopyIn(copy_in),
                        effects,
                    });
                }
                // COPY (query) TO: the query is checked like any other.
                if let Some(query) = copy.query.as_deref().and_then(|q| q.node.as_ref()) {
                    analyzer.statement(query)?;
                }
            }
            Some(node) => analyzer.statement(node)?,
            None => {}
        }
        effects.push(statement(raw).map_or_else(Vec::new, |node| analyzer.effects(node)));
    }
    Ok(Analysis {
        outcome: analyzer.finish(),
        effects,
    })
}

/// Applies edits (sorted or not, never overlapping) to `sql`.
fn splice(sql: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.start));
    let mut out = sql.to_owned();
    for edit in edits {
        out.replace_range(edit.start..edit.end, &edit.replacement);
    }
    out
}
