//! What the client tap tells the audit trail: the statements a client
//! sends and runs, by name and portal, and whether the audit log being
//! down refuses a statement.

use super::tap::ClientTap;
use crate::audit::trail::{text as trail_text, Trail, Written};
use crate::protect::protection::Protection;
use crate::sql::{ColumnRefId, Verdict};
use crate::wire::messages::bind::BindMessage;
use crate::wire::messages::close::CloseMessage;
use crate::wire::messages::parse::ParseMessage;
use crate::wire::messages::{execute, query};
use crate::wire::tags::frontend;

impl ClientTap<'_> {
    /// Notes a simple Query in the trail.
    pub(super) fn note_query(&mut self, sql: &str, written: Vec<Written>) {
        if let Some(trail) = self.trail {
            let veil = self.veil;
            let text = trail_text(veil, sql, written);
            trail.sent(text.clone());
            self.names
                .query(&text, &|sql| trail_text(veil, sql, Vec::new()));
        }
    }

    /// Notes a prepared statement's text for the trail.
    pub(super) fn note_parse(&mut self, name: &str, sql: &str, written: Vec<Written>) {
        if self.trail.is_some() {
            self.names.parse(name, trail_text(self.veil, sql, written));
        }
    }

    /// Follows Parse, Bind, Execute, Close, Sync, FunctionCall and the end
    /// of COPY data for the trail; the texts of a Query and of a Parse
    /// with a policy are noted where they are analysed.
    pub(super) fn observe(&mut self, trail: &Trail, tag: u8, frame: &[u8]) {
        let veil = self.veil;
        let make = |sql: &str| trail_text(veil, sql, Vec::new());
        match tag {
            frontend::QUERY if self.veil.is_none() => {
                let sql = query::sql(frame)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                self.note_query(&sql, Vec::new());
            }
            frontend::PARSE if self.veil.is_none() => {
                if let Some(parse) = ParseMessage::read(frame) {
                    let name = String::from_utf8_lossy(parse.name);
                    self.note_parse(&name, &String::from_utf8_lossy(parse.query), Vec::new());
                }
            }
            frontend::BIND => {
                if let (Some(portal), Some(statement)) = (
                    BindMessage::portal_name(frame),
                    BindMessage::statement_name(frame),
                ) {
                    self.names.bind(trail, portal, statement, &make);
                }
            }
            frontend::EXECUTE => {
                let portal = execute::portal(frame).unwrap_or_default();
                let max_rows = execute::max_rows(frame, portal);
                let text = self.names.execute(trail, portal, max_rows, &make);
                trail.executed(text, max_rows);
            }
            frontend::CLOSE => {
                if let Some(close) = CloseMessage::read_lenient(frame) {
                    self.names.close(close.target, close.name);
                }
            }
            frontend::SYNC | frontend::FUNCTION_CALL => trail.sync(),
            frontend::COPY_DONE | frontend::COPY_FAIL if self.veil.is_none() => trail.copy_ended(),
            _ => {}
        }
    }

    /// Whether the audit log is down, with `on_failure = "refuse"`, and
    /// `sql` (analysed as `outcome`) may touch protected columns: it
    /// writes or compares them, or mentions a protected table.
    pub(super) fn audit_refusing(&self, veil: &Protection, sql: &str, outcome: &Verdict) -> bool {
        self.trail.is_some_and(Trail::refusing)
            && (!matches!(outcome, Verdict::Unchanged) || veil.policy.mentions_protected_table(sql))
    }

    /// Whether the audit log is down, with `on_failure = "refuse"`, and the
    /// prepared statement `name` may touch protected columns. Checked at
    /// each Bind, since the log may have gone down after the Parse.
    pub(super) fn audit_refusing_prepared(&self, name: &str) -> bool {
        self.trail.is_some_and(Trail::refusing)
            && self
                .names
                .statement(name)
                .is_some_and(|text| text.protected())
    }
}

impl ClientTap<'_> {
    /// The protected columns a statement writes, for the trail, each with
    /// the policy role the session has for it (none with audit off).
    pub(super) fn written(&self, veil: &Protection, outcome: &Verdict) -> Vec<Written> {
        if self.trail.is_none() {
            return Vec::new();
        }
        let columns: Vec<&ColumnRefId> = match outcome {
            Verdict::Rewritten(rewrite) => rewrite.written.iter().collect(),
            Verdict::CopyIn(copy) => copy.columns.iter().flatten().map(|t| &*t.column).collect(),
            _ => Vec::new(),
        };
        columns
            .into_iter()
            .map(|column| Written {
                column: column.to_string(),
                policy_role: veil
                    .policy
                    .column(&column.schema, &column.table, &column.column)
                    .and_then(|policy| policy.policy_role(&self.catalog.roles))
                    .map(str::to_owned),
            })
            .collect()
    }
}
