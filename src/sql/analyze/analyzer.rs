//! The analyzer's state, the dispatch of each kind of statement, and the
//! rewritten text it finishes with.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{ExecuteStmt, Node, PrepareStmt, RangeVar, ScanToken};
use pg_query::NodeRef;

use crate::protect::policy::Policy;
use crate::sql::columns::{ColumnRefId, Columns};
use crate::sql::encryptor::Encryptor;
use crate::sql::names::table_name;
use crate::sql::objects::ServerObjects;
use crate::sql::outputs::Output;
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::Scope;
use crate::sql::settings::{Effect, DISCARD_ALL};
use crate::sql::targets::{ParamSlot, Prepared, Statements};
use crate::sql::verdict::{Rewrite, Verdict};

/// Replaces `start..end` of the statement text.
#[derive(Debug)]
pub(super) struct Edit {
    /// The byte offset of the first byte replaced.
    pub start: usize,
    /// The byte offset after the last byte replaced.
    pub end: usize,
    /// The text put in their place.
    pub replacement: String,
}

/// The state of one analysis: the edits and parameter slots so far.
pub(crate) struct Analyzer<'a> {
    /// The statement text.
    sql: &'a str,
    /// Its tokens, which give each literal's extent in the text.
    pub(super) tokens: Vec<ScanToken>,
    /// The protected columns.
    pub(super) policy: &'a Policy,
    /// What encrypts the literals.
    pub(super) enc: &'a dyn Encryptor,
    /// What the catalog says of the tables' columns.
    pub(super) columns: &'a dyn Columns,
    /// The server-side objects over protected tables.
    pub(super) objects: &'a ServerObjects,
    /// The statements the session prepared before this text.
    session_prepared: &'a dyn Statements,
    /// The literals replaced so far.
    pub(super) edits: Vec<Edit>,
    /// The parameter slots found so far (those of the statement being
    /// prepared, in a `PREPARE`).
    pub(super) params: Vec<ParamSlot>,
    /// The statements this text prepares, in order.
    prepared: Vec<Prepared>,
    /// Protected columns written with a value (encrypted).
    pub(super) written: Vec<ColumnRefId>,
    /// What each subquery in an expression outputs, by its location.
    pub(super) sublinks: Vec<(i32, Output<'a>)>,
}

impl<'a> Analyzer<'a> {
    /// An analysis of the text `sql`, whose tokens are `tokens`, that has
    /// found nothing yet.
    pub(crate) fn new(
        sql: &'a str,
        tokens: Vec<ScanToken>,
        policy: &'a Policy,
        enc: &'a dyn Encryptor,
        columns: &'a dyn Columns,
        objects: &'a ServerObjects,
        session_prepared: &'a dyn Statements,
    ) -> Self {
        Analyzer {
            sql,
            tokens,
            policy,
            enc,
            columns,
            objects,
            session_prepared,
            edits: Vec::new(),
            params: Vec::new(),
            prepared: Vec::new(),
            written: Vec::new(),
            sublinks: Vec::new(),
        }
    }

    /// The text with its literals replaced and the parameter slots found,
    /// or unchanged if there is none.
    pub(crate) fn finish(self) -> Verdict {
        if self.edits.is_empty() && self.params.is_empty() {
            return Verdict::Unchanged;
        }
        Verdict::Rewritten(Rewrite {
            sql: splice(self.sql, self.edits),
            params: self.params,
            written: self.written,
        })
    }

    /// What a top-level statement, analysed, does to the session's
    /// SQL-prepared statements once the server has run it.
    pub(crate) fn effects(&self, node: &NodeEnum) -> Vec<Effect> {
        let effect = match node {
            NodeEnum::PrepareStmt(s) => self
                .prepared
                .iter()
                .rev()
                .find(|p| p.name == s.name)
                .cloned()
                .map(Effect::Prepare),
            NodeEnum::DeallocateStmt(s) => {
                Some(Effect::Deallocate((!s.isall).then(|| s.name.clone())))
            }
            NodeEnum::DiscardStmt(s) if s.target == DISCARD_ALL => Some(Effect::Deallocate(None)),
            _ => None,
        };
        effect.into_iter().collect()
    }

    /// Refuses calls of functions over protected tables with values.
    pub(crate) fn check_calls(&self) -> Result<()> {
        self.objects.check_calls(self.sql, &self.tokens)
    }

    /// Refuses a write into a view over a protected table, or into a table
    /// whose rules or triggers may write one.
    pub(crate) fn check_write(&self, range: &RangeVar) -> Result<()> {
        self.objects.check_write(&range.schemaname, &range.relname)
    }

    /// Analyses a top-level statement other than COPY.
    pub(crate) fn statement(&mut self, node: &NodeEnum) -> Result<()> {
        self.statement_in(node, &Scope::default())
    }

    /// Analyses the statement a PREPARE prepares and notes its slots.
    fn prepare(&mut self, prepare: &PrepareStmt) -> Result<()> {
        let outer = std::mem::take(&mut self.params);
        let result = self.optional_statement(prepare.query.as_deref(), &Scope::default());
        let params = std::mem::replace(&mut self.params, outer);
        result?;
        self.prepared.push(Prepared {
            name: prepare.name.clone(),
            params,
        });
        Ok(())
    }

    /// Encrypts the arguments of an EXECUTE at the slots of its statement,
    /// prepared earlier in this text or in the session.
    fn execute(&mut self, execute: &ExecuteStmt) -> Result<()> {
        let slots = self
            .prepared
            .iter()
            .rev()
            .find(|p| p.name == execute.name)
            .map(|p| p.params.clone())
            .unwrap_or_else(|| self.session_prepared.slots(&execute.name));
        for slot in &slots {
            let c = &slot.target.column;
            let (Some(arg), Some(column)) = (
                execute.params.get(slot.number.wrapping_sub(1)),
                self.policy.column(&c.schema, &c.table, &c.column),
            ) else {
                continue;
            };
            if slot.array {
                self.write_array(column, arg, &Scope::default())?;
            } else {
                self.write(column, arg, &Scope::default())?;
            }
        }
        Ok(())
    }

    /// Analyses the statement a statement holds (`EXPLAIN`, `DECLARE`,
    /// `CREATE TABLE AS`, `CREATE VIEW`), if it holds one.
    fn optional_statement(&mut self, node: Option<&Node>, scope: &Scope<'_, 'a>) -> Result<()> {
        match node.and_then(|n| n.node.as_ref()) {
            Some(node) => self.statement_in(node, scope),
            None => Ok(()),
        }
    }

    /// Analyses a statement, at the top or in a CTE, in `scope`.
    pub(super) fn statement_in(&mut self, node: &NodeEnum, scope: &Scope<'_, 'a>) -> Result<()> {
        match node {
            NodeEnum::SelectStmt(s) => self.select(s, scope).map(drop),
            NodeEnum::InsertStmt(s) => self.insert(s, scope),
            NodeEnum::UpdateStmt(s) => self.update(s, scope),
            NodeEnum::DeleteStmt(s) => self.delete(s, scope),
            NodeEnum::MergeStmt(_) => self.merge(node),
            NodeEnum::PrepareStmt(s) => self.prepare(s),
            NodeEnum::ExecuteStmt(s) => self.execute(s),
            NodeEnum::ExplainStmt(s) => self.optional_statement(s.query.as_deref(), scope),
            NodeEnum::DeclareCursorStmt(s) => self.optional_statement(s.query.as_deref(), scope),
            NodeEnum::CreateTableAsStmt(s) => self.optional_statement(s.query.as_deref(), scope),
            NodeEnum::ViewStmt(s) => self.optional_statement(s.query.as_deref(), scope),
            // Texts parsed only for the session's prepared statements (the
            // pre-check) may hold code that mentions no protected table.
            NodeEnum::DoStmt(_)
            | NodeEnum::CreateFunctionStmt(_)
            | NodeEnum::CreateTrigStmt(_)
            | NodeEnum::RuleStmt(_)
                if !self.policy.mentions_protected_table(self.sql)
                    && !self.objects.mentioned_in(self.sql) =>
            {
                Ok(())
            }
            // Their bodies are SQL pgveil does not see run, and the text
            // mentions a protected table or an object over one: fail closed.
            NodeEnum::DoStmt(_) => Err(Reason::Opaque("DO blocks")),
            // A procedure over a protected table named only by its own name
            // was checked for its arguments (`check_calls`).
            NodeEnum::CallStmt(_) if !self.policy.mentions_protected_table(self.sql) => Ok(()),
            NodeEnum::CallStmt(_) => Err(Reason::Opaque("procedure calls")),
            NodeEnum::CreateFunctionStmt(_) => Err(Reason::Opaque("function definitions")),
            NodeEnum::CreateTrigStmt(_) => Err(Reason::Opaque("trigger definitions")),
            NodeEnum::RuleStmt(_) => Err(Reason::Opaque("rules")),
            _ => Ok(()),
        }
    }

    /// Refuses a `MERGE` into a view over a protected table or a table
    /// whose rules or triggers may write one, or that names a protected
    /// table anywhere.
    fn merge(&self, node: &NodeEnum) -> Result<()> {
        if let NodeEnum::MergeStmt(merge) = node {
            merge
                .relation
                .as_ref()
                .map_or(Ok(()), |r| self.check_write(r))?;
        }
        for (n, ..) in node.nodes() {
            if let NodeRef::RangeVar(range) = n {
                let (schema, table) = table_name(range, self.policy);
                if let Some(column) = self.policy.columns_of(schema, &table).next() {
                    return Err(Reason::Merge(column.into()));
                }
            }
        }
        Ok(())
    }
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
