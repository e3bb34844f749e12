//! The walk over a parsed statement: resolves column names through the
//! relations in scope, checks every write and comparison of a protected
//! column, and collects the literal edits and parameter slots.
//!
//! The walk is one [`Analyzer`], whose methods are spread by concern:
//!
//! - `analyzer`: its state, the dispatch of each kind of statement
//!   (`PREPARE`, `EXECUTE`, `MERGE`, code bodies among them), and the
//!   finished rewrite;
//! - `query`: `SELECT`: its CTEs, FROM items, select list, `GROUP BY`,
//!   `ORDER BY` and windows;
//! - `insert`: `INSERT`, with the `INSERT ... SELECT` shapes ORMs batch rows
//!   in, and `ON CONFLICT`;
//! - `update`: `UPDATE`, `DELETE`, the `SET` list and `RETURNING`;
//! - `expressions`: the walk over expressions, read or tested, and
//!   subqueries in them;
//! - `comparisons`: comparisons of protected columns in conditions;
//! - `encrypt`: values for a protected column: written, given as arrays,
//!   string literals replaced by their ciphertext, parameters noted as
//!   slots.

mod analyzer;
mod comparisons;
mod encrypt;
mod expressions;
mod insert;
mod query;
mod update;

pub(super) use analyzer::Analyzer;
