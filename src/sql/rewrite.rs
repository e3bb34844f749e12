//! The entry points: a statement text, analysed for protected columns,
//! becomes a [`Verdict`] ([`rewrite`]), in a session also with what it
//! does to the session's SQL-prepared statements ([`rewrite_in_session`]).
//! A text that cannot mention a protected column is not even parsed.

use pg_query::protobuf::node::Node as NodeEnum;

use super::analyze::Analyzer;
use super::columns::{Columns, NoCatalog};
use super::copy;
use super::encryptor::Encryptor;
use super::objects::ServerObjects;
use super::refusal::Reason;
use super::targets::{PreparedSlots, Statements};
use super::tokens::scan_tokens;
use super::verdict::{Analysis, Verdict};
use crate::protect::policy::Policy;

/// Analyses a statement text (one or more statements) for protected
/// columns, and encrypts the values it writes or compares to them, with
/// no catalog: `INSERT` and `COPY` without a column list are refused, and
/// every protected column is taken to be text.
pub fn rewrite(sql: &str, policy: &Policy, enc: &dyn Encryptor) -> Verdict {
    rewrite_in_session(
        sql,
        policy,
        enc,
        &NoCatalog,
        ServerObjects::none(),
        &PreparedSlots::new(),
    )
    .verdict
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
pub(crate) fn rewrite_in_session(
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
            verdict: Verdict::Unchanged,
            effects: Vec::new(),
        };
    }
    rewrite_parsed(sql, policy, enc, columns, objects, prepared).unwrap_or_else(|reason| Analysis {
        verdict: Verdict::Refused(reason.into()),
        effects: Vec::new(),
    })
}

/// The statement of a parsed one, if it has one.
fn statement(raw: &pg_query::protobuf::RawStmt) -> Option<&NodeEnum> {
    raw.stmt.as_ref()?.node.as_ref()
}

/// [`rewrite_in_session`] of a text that may mention a protected column:
/// parsed, and each statement analysed.
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
                        verdict: Verdict::CopyIn(copy_in),
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
        verdict: analyzer.finish(),
        effects,
    })
}
