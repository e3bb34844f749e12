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
//! [`Verdict::CopyIn`] so the relay can encrypt the data stream.
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
//!
//! **The files.** The entry points are in `rewrite` (a statement text to
//! a [`Verdict`], for one statement or in a session), which hands each
//! parsed statement to the walk in `analyze`. What the walk works with,
//! lowest first:
//!
//! - `encryptor`, `columns`: what the analysis is given, the encryptor and
//!   what the catalog says of protected columns;
//! - `refusal`: why a statement is refused ([`Refusal`], with its SQLSTATE);
//! - `targets`: what a value is encrypted for, and the `$n` parameter
//!   slots of a statement and of the session's prepared statements;
//! - `tokens`, `names`: PostgreSQL's tokens of a text, and how a statement
//!   names tables and columns;
//! - `views`, `objects`: the server-side objects over protected tables;
//! - `outputs`, `scope`: what a query's output columns are, and the
//!   relations a (sub)query can name;
//! - `computed`: values computed on protected columns where they are read;
//! - `copy`, `settings`, `array`, `literals`: `COPY`, pgveil's own
//!   settings and the `PREPARE` effects, array values, and string literals
//!   made to read the same whatever `standard_conforming_strings` says;
//! - `verdict`: what analysing a statement text answers.

mod analyze;
pub(crate) mod array;
mod columns;
mod computed;
mod copy;
mod cursors;
mod encryptor;
mod literals;
mod names;
mod objects;
mod outputs;
mod refusal;
mod rewrite;
mod scope;
mod settings;
mod targets;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_computed;
mod tokens;
mod verdict;
mod views;

pub(crate) use columns::{ColumnRefId, ColumnType, Storage};
pub(crate) use copy::CopyIn;
pub(crate) use cursors::CursorEffect;
pub use encryptor::EncryptError;
pub use encryptor::Encryptor;
pub(crate) use objects::{CatalogObject, Kind, ServerObjects};
pub use refusal::Refusal;
pub use rewrite::rewrite;
pub(crate) use settings::{Effect, SettingChange};
pub(crate) use targets::{ParamSlot, Prepared};
pub use verdict::Rewrite;
pub use verdict::Verdict;

pub(crate) use columns::Columns;
pub(crate) use copy::copy_out_options;
pub(crate) use literals::conform as conform_literals;
pub(crate) use rewrite::rewrite_in_session;
pub(crate) use settings::{declarations, undeclarable_call, Declarations, Param};
pub(crate) use targets::{merge_slots, PreparedSlots, Statements};
pub(crate) use tokens::scan_tokens;
pub(crate) use verdict::Analysis;
#[cfg(test)]
pub(crate) use {columns::NoCatalog, copy::is_copy_from_stdin, targets::Target};
