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
//! the value would reach the table unencrypted. `DEFAULT` is kept: a
//! protected column must not have a non-NULL default (checked elsewhere,
//! from the catalog). `MERGE` touching a protected table is refused.
//! `COPY ... FROM STDIN` into a protected table is reported as
//! [`Outcome::CopyIn`] so the relay can encrypt the data stream.
//!
//! **Searches.** In conditions (`WHERE`, `ON`, `HAVING`, at any depth:
//! subqueries, CTEs, joins), a protected column may be compared with `=`,
//! `<>`, `IN (...)`, `IS [NOT] DISTINCT FROM` to a literal (encrypted with
//! the column's key), a parameter, `NULL`, or another protected column of
//! the same key domain; it may be tested with `IS [NOT] NULL`. Only
//! deterministic columns can be compared; randomized ones only tested for
//! NULL. Ranges, `LIKE`, `ORDER BY`, other operators and functions of a
//! protected column in a condition are refused: on ciphertext they would
//! silently give wrong answers. `GROUP BY` is allowed on deterministic
//! columns only.
//!
//! **Resolving names** is conservative. An unqualified table name is in
//! schema `public`, unless it names a CTE. A qualified column (`c.email`,
//! `public.customers.email`) resolves through the alias or table name,
//! innermost query first. An unqualified column that is the name of a
//! protected column of any relation in scope is taken to be that column,
//! even if PostgreSQL would resolve it to an unprotected column of another
//! table. A subquery or CTE passes a protected column through under its
//! output name when its select list names it (bare, cast, or via `*`).
//! Column aliases on a protected table (`customers AS c(a, b)`) are
//! refused.
//!
//! **Left out:** statements inside function bodies, `DO` blocks and
//! `CALL`; a `$n` used for two different columns; `NATURAL` joins; window
//! definitions; `DISTINCT ON`; the column aliases of a CTE.
//!
//! Refusal messages start with `pgveil:`, name the column and the reason,
//! and never quote the statement or its values, which may be personal
//! data.

mod analyze;
mod copy;
mod settings;
#[cfg(test)]
mod tests;

use std::fmt;

use pg_query::protobuf::node::Node as NodeEnum;
use thiserror::Error;

use crate::policy::{ColumnPolicy, Policy};

use analyze::{Analyzer, Edit};

pub use copy::{copy_out_options, is_copy_from_stdin, ColumnSet, CopyFormat, CopyIn, CopyOptions};
pub use settings::{declarations, undeclarable_call, Declarations, Effect, Param, SettingChange};

/// Encrypts values for protected columns.
pub trait Encryptor: Sync {
    /// The ciphertext of `plaintext` for `column`, as ASCII text made of
    /// `[A-Za-z0-9_:-]` only, so that it can be written as a plain SQL
    /// string literal.
    fn encrypt(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError>;
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

/// A `$n` parameter whose value must be encrypted for a column at Bind
/// time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSlot {
    /// `n`, counted from 1.
    pub number: usize,
    pub column: ColumnRefId,
}

/// The parameter slots of a statement prepared with SQL `PREPARE`, for
/// [`rewrite_execute`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub name: String,
    pub params: Vec<ParamSlot>,
}

/// A statement text with its protected values encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub sql: String,
    /// The statement's own `$n` parameters to encrypt at Bind time.
    pub params: Vec<ParamSlot>,
    /// The parameters of statements the text prepares (`PREPARE`).
    pub prepared: Vec<Prepared>,
    /// The protected columns the text writes values to, for the audit log.
    pub written: Vec<ColumnRefId>,
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
    #[error("pgveil: cannot encrypt a value for column {column}: {error}")]
    Encrypt {
        column: ColumnRefId,
        error: EncryptError,
    },
}

impl From<Reason> for Refusal {
    fn from(reason: Reason) -> Self {
        let sqlstate = match reason {
            Reason::Syntax => SYNTAX_ERROR,
            Reason::Encrypt { .. } => INTERNAL_ERROR,
            Reason::UndecodableSetting => NOT_IN_REPERTOIRE,
            _ => NOT_SUPPORTED,
        };
        Refusal {
            sqlstate,
            message: reason.to_string(),
        }
    }
}

/// Looks up the column order of a table (`schema`, `table`) for an
/// `INSERT` or `COPY` without a column list. For now there is no catalog
/// to look in: such statements on protected tables are refused.
/// The columns of a table in order, by schema and table name, for
/// statements without a column list (from the catalog).
pub type ColumnOrder<'a> = &'a dyn Fn(&str, &str) -> Option<Vec<String>>;

const NO_CATALOG: ColumnOrder<'static> = &|_, _| None;

/// Analyses a statement text (one or more statements) for protected
/// columns, and encrypts the values it writes or compares to them.
pub fn rewrite(sql: &str, policy: &Policy, enc: &dyn Encryptor) -> Outcome {
    rewrite_with_columns(sql, policy, enc, NO_CATALOG)
}

/// [`rewrite`], knowing the column order of tables, so that `INSERT` and
/// `COPY` without a column list can be handled.
pub fn rewrite_with_columns(
    sql: &str,
    policy: &Policy,
    enc: &dyn Encryptor,
    column_order: ColumnOrder<'_>,
) -> Outcome {
    if !policy.mentions_protected_table(sql) {
        return Outcome::Unchanged;
    }
    outcome(rewrite_parsed(sql, policy, enc, column_order))
}

/// Encrypts the arguments of `EXECUTE name (...)` at the parameter slots
/// of the prepared statement, which `slots_of` looks up by name.
pub fn rewrite_execute(
    sql: &str,
    policy: &Policy,
    slots_of: impl Fn(&str) -> Option<Vec<ParamSlot>>,
    enc: &dyn Encryptor,
) -> Outcome {
    if !sql.to_ascii_lowercase().contains("execute") {
        return Outcome::Unchanged;
    }
    outcome((|| {
        let (parsed, mut analyzer) = parse(sql, policy, enc, NO_CATALOG)?;
        for raw in &parsed.protobuf.stmts {
            if let Some(NodeEnum::ExecuteStmt(execute)) = statement(raw) {
                if let Some(slots) = slots_of(&execute.name) {
                    analyzer.execute(execute, &slots)?;
                }
            }
        }
        Ok(analyzer.finish(Vec::new()))
    })())
}

fn outcome(result: Result<Outcome, Reason>) -> Outcome {
    result.unwrap_or_else(|reason| Outcome::Refused(reason.into()))
}

fn statement(raw: &pg_query::protobuf::RawStmt) -> Option<&NodeEnum> {
    raw.stmt.as_ref()?.node.as_ref()
}

fn parse<'a>(
    sql: &'a str,
    policy: &'a Policy,
    enc: &'a dyn Encryptor,
    column_order: ColumnOrder<'a>,
) -> Result<(pg_query::ParseResult, Analyzer<'a>), Reason> {
    let parsed = pg_query::parse(sql, 0).map_err(|_| Reason::Syntax)?;
    let tokens = pg_query::scan_tokens(sql).map_err(|_| Reason::Syntax)?;
    Ok((
        parsed,
        Analyzer::new(sql, tokens, policy, enc, column_order),
    ))
}

fn rewrite_parsed(
    sql: &str,
    policy: &Policy,
    enc: &dyn Encryptor,
    column_order: ColumnOrder<'_>,
) -> Result<Outcome, Reason> {
    let (parsed, mut analyzer) = parse(sql, policy, enc, column_order)?;
    let statements = &parsed.protobuf.stmts;
    let mut prepared = Vec::new();
    for raw in statements {
        match statement(raw) {
            Some(NodeEnum::CopyStmt(copy)) => {
                if let Some(copy_in) = copy::copy_in(copy, policy, column_order)? {
                    if statements.len() > 1 {
                        return Err(Reason::CopyNotAlone(copy_in.first_protected()));
                    }
                    return Ok(Outcome::CopyIn(copy_in));
                }
                // COPY (query) TO: the query is checked like any other.
                if let Some(query) = copy.query.as_deref().and_then(|q| q.node.as_ref()) {
                    analyzer.statement(query)?;
                }
            }
            Some(NodeEnum::PrepareStmt(prepare)) => {
                let params = analyzer.prepare(prepare)?;
                if !params.is_empty() {
                    prepared.push(Prepared {
                        name: prepare.name.clone(),
                        params,
                    });
                }
            }
            Some(node) => analyzer.statement(node)?,
            None => {}
        }
    }
    Ok(analyzer.finish(prepared))
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
