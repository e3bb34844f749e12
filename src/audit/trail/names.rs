//! Which statement each Execute runs, as the client tap follows it for
//! the trail: statement texts by prepared statement name and by portal.
//!
//! PostgreSQL keeps one namespace for the statements prepared with Parse
//! and with SQL `PREPARE`, and one for the portals made by Bind and by SQL
//! `DECLARE ... CURSOR` (an Execute may name a cursor). So a Bind of a
//! SQL-prepared statement runs the `PREPARE`'s query, and an Execute of a
//! name no Bind made, or of a portal gone since (closed, its transaction
//! ended, a cursor declared in its place), reads from a cursor: it is
//! recorded as the `FETCH` it is. A statement prepared where pgveil cannot
//! see it (dynamic SQL) is recorded as an `EXECUTE` of its name. Changes
//! made by SQL (`PREPARE`, `DEALLOCATE`, `DISCARD ALL`, `DECLARE`,
//! `CLOSE`) are followed as the statement is sent; only texts naming one
//! of those words are parsed for them.

use std::collections::HashMap;
use std::sync::Arc;

use super::statement::{Change, StatementText, Written};
use super::Trail;
use crate::protect::protection::Protection;
use crate::wire::tags::target;

/// A statement text for the trail: whether it mentions a protected table
/// is known with a policy.
pub fn text(veil: Option<&Protection>, sql: &str, written: Vec<Written>) -> Arc<StatementText> {
    let protected = veil.is_some_and(|veil| veil.policy.mentions_protected_table(sql));
    StatementText::new(sql.to_owned(), written, protected)
}

/// A portal's statement text, and for a named portal the ReadyForQuery
/// count when it was bound (see [`Trail::idle_since`]).
struct Bound {
    text: Arc<StatementText>,
    readies: u64,
}

/// Statement texts by prepared statement name and by portal.
#[derive(Default)]
pub(crate) struct Names {
    statements: HashMap<String, Arc<StatementText>>,
    /// The unnamed portal, which most clients bind every statement to, has
    /// a slot of its own.
    unnamed: Option<Arc<StatementText>>,
    portals: HashMap<Vec<u8>, Bound>,
}

/// Makes the text of a statement pgveil did not see as it is sent.
pub(crate) type MakeText<'m> = &'m dyn Fn(&str) -> Arc<StatementText>;

impl Names {
    /// The text of the prepared statement `name`, if known.
    pub(crate) fn statement(&self, name: &str) -> Option<&Arc<StatementText>> {
        self.statements.get(name)
    }

    /// A Parse of `name`.
    pub(crate) fn parse(&mut self, name: &str, text: Arc<StatementText>) {
        self.statements.insert(name.to_owned(), text);
    }

    /// A simple Query of `text` was sent.
    pub(crate) fn query(&mut self, text: &StatementText, make: MakeText<'_>) {
        self.apply(text, make);
    }

    /// The text of the prepared statement `name`; for a statement pgveil
    /// never saw prepared, an `EXECUTE` of its name.
    pub(crate) fn prepared(&self, name: &str, make: MakeText<'_>) -> Arc<StatementText> {
        match self.statements.get(name) {
            Some(text) => text.clone(),
            None => make(&format!("EXECUTE {}", quote(name))),
        }
    }

    /// A Bind of `statement` to `portal`.
    pub(crate) fn bind(
        &mut self,
        trail: &Trail,
        portal: &[u8],
        statement: &[u8],
        make: MakeText<'_>,
    ) {
        let text = self.prepared(&String::from_utf8_lossy(statement), make);
        if portal.is_empty() {
            self.unnamed = Some(text);
        } else {
            let readies = trail.readies_sent();
            self.portals
                .insert(portal.to_vec(), Bound { text, readies });
        }
    }

    /// An Execute of `portal`: the text it runs, and what it does to the
    /// names is followed.
    pub(crate) fn execute(
        &mut self,
        trail: &Trail,
        portal: &[u8],
        max_rows: u64,
        make: MakeText<'_>,
    ) -> Arc<StatementText> {
        let bound = if portal.is_empty() {
            self.unnamed.clone()
        } else {
            self.portals
                .get(portal)
                .filter(|bound| !trail.idle_since(bound.readies))
                .map(|bound| bound.text.clone())
        };
        let text = bound.unwrap_or_else(|| {
            let count = match max_rows {
                0 => "ALL".to_owned(),
                n => n.to_string(),
            };
            let name = String::from_utf8_lossy(portal);
            make(&format!("FETCH FORWARD {count} FROM {}", quote(&name)))
        });
        self.apply(&text, make);
        text
    }

    /// A Close of a statement (`kind` `S`) or portal (`P`).
    pub(crate) fn close(&mut self, kind: u8, name: &[u8]) {
        if kind == target::STATEMENT {
            self.statements.remove(&*String::from_utf8_lossy(name));
        } else if name.is_empty() {
            self.unnamed = None;
        } else {
            self.portals.remove(name);
        }
    }

    fn apply(&mut self, text: &StatementText, make: MakeText<'_>) {
        for change in text.changes() {
            match change {
                Change::Prepared { name, query } => {
                    self.statements.insert(name.clone(), make(query));
                }
                Change::Deallocated(Some(name)) => {
                    self.statements.remove(name);
                }
                Change::Deallocated(None) => self.statements.clear(),
                Change::Declared(name) | Change::Closed(Some(name)) => {
                    self.portals.remove(name.as_bytes());
                }
                Change::Closed(None) => self.portals.clear(),
                Change::DiscardedAll => {
                    self.statements.clear();
                    self.portals.clear();
                }
            }
        }
    }
}

/// `name` as a quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names() {
        assert_eq!(quote("c"), "\"c\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
