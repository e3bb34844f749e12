//! The walk over a parsed statement: resolves column names through the
//! relations in scope, checks every write and comparison of a protected
//! column, and collects the literal edits and parameter slots.

use pg_query::protobuf::{
    a_const, AConst, AExpr, AExprKind, ColumnRef, CommonTableExpr, DeleteStmt, ExecuteStmt,
    InsertStmt, JoinExpr, Node, OnConflictClause, PrepareStmt, RangeFunction, RangeSubselect,
    RangeVar, ResTarget, ReturningClause, ScanToken, SelectStmt, SetOperation, SubLink,
    SubLinkType, Token, UpdateStmt, WindowDef, WithClause,
};
use pg_query::NodeRef;

use super::computed::{computing, Check};
use super::objects::ServerObjects;
use super::outputs::{output_name, Origin, Output, Outputs};
use super::scope::{Relation, Scope};
use super::settings::DISCARD_ALL;
use super::views::Derived;
use super::{
    array, splice, storage, ColumnRefId, Columns, Effect, Encryptor, NodeEnum, Outcome, ParamSlot,
    Prepared, Reason, Rewrite, Statements, Storage, Target,
};
use crate::protect::policy::{ColumnPolicy, Encryption, Policy};

type Result<T> = std::result::Result<T, Reason>;

/// The schema of a table named without one.
const DEFAULT_SCHEMA: &str = "public";

/// Replaces `start..end` of the statement text.
#[derive(Debug)]
pub(super) struct Edit {
    pub start: usize,
    pub end: usize,
    pub replacement: String,
}

/// Checks one element of an array for a protected column.
type ElementCheck<'a> =
    for<'s> fn(&mut Analyzer<'a>, &'a ColumnPolicy, &Node, &Scope<'s, 'a>) -> Result<()>;

/// What a comparison operand or a written value is.
enum Operand<'n, 'a> {
    Protected(&'a ColumnPolicy),
    Literal(&'n AConst, &'n str),
    Param(usize),
    Null,
    Other,
}

/// The state of one analysis: the edits and parameter slots so far.
pub(super) struct Analyzer<'a> {
    sql: &'a str,
    tokens: Vec<ScanToken>,
    policy: &'a Policy,
    enc: &'a dyn Encryptor,
    columns: &'a dyn Columns,
    objects: &'a ServerObjects,
    /// The statements the session prepared before this text.
    session_prepared: &'a dyn Statements,
    edits: Vec<Edit>,
    params: Vec<ParamSlot>,
    /// The statements this text prepares, in order.
    prepared: Vec<Prepared>,
    /// Protected columns written with a value (encrypted).
    written: Vec<ColumnRefId>,
    /// What each subquery in an expression outputs, by its location.
    sublinks: Vec<(i32, Output<'a>)>,
}

impl<'a> Analyzer<'a> {
    pub(super) fn new(
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

    pub(super) fn finish(self) -> Outcome {
        if self.edits.is_empty() && self.params.is_empty() {
            return Outcome::Unchanged;
        }
        Outcome::Rewritten(Rewrite {
            sql: splice(self.sql, self.edits),
            params: self.params,
            written: self.written,
        })
    }

    /// What a top-level statement, analysed, does to the session's
    /// SQL-prepared statements once the server has run it.
    pub(super) fn effects(&self, node: &NodeEnum) -> Vec<Effect> {
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
    pub(super) fn check_calls(&self) -> Result<()> {
        self.objects.check_calls(self.sql, &self.tokens)
    }

    /// Refuses a write into a view over a protected table, or into a table
    /// whose rules or triggers may write one.
    pub(super) fn check_write(&self, range: &RangeVar) -> Result<()> {
        self.objects.check_write(&range.schemaname, &range.relname)
    }

    /// Analyses a top-level statement other than COPY.
    pub(super) fn statement(&mut self, node: &NodeEnum) -> Result<()> {
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

    fn optional_statement(&mut self, node: Option<&Node>, scope: &Scope<'_, 'a>) -> Result<()> {
        match node.and_then(|n| n.node.as_ref()) {
            Some(node) => self.statement_in(node, scope),
            None => Ok(()),
        }
    }

    fn statement_in(&mut self, node: &NodeEnum, scope: &Scope<'_, 'a>) -> Result<()> {
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

    // Queries

    /// Analyses a SELECT; returns what its outputs are.
    fn select(&mut self, s: &SelectStmt, parent: &Scope<'_, 'a>) -> Result<Outputs<'a>> {
        let mut scope = Scope::child(parent);
        self.with_clause(s.with_clause.as_ref(), &mut scope)?;
        if s.op() != SetOperation::SetopNone && s.op() != SetOperation::Undefined {
            let mut arms = Vec::new();
            for arm in [&s.larg, &s.rarg].into_iter().flatten() {
                arms.push(self.select(arm, &scope)?);
            }
            // A set operation's outputs come without their columns in the
            // result's description, as a value passed through does.
            let arms_columns = arms.iter().flat_map(|arm| &arm.columns);
            for (_, output) in arms_columns {
                if let Output::Exact(column) = output {
                    if self.columns.may_hold_unencrypted(
                        &column.schema,
                        &column.table,
                        &column.column,
                    ) {
                        return Err(Reason::UnencryptedPassThrough {
                            construct: "a set operation (UNION, INTERSECT, EXCEPT)".into(),
                            column: (*column).into(),
                        });
                    }
                }
            }
            // ORDER BY names the first arm's outputs.
            let first = arms.first().cloned().unwrap_or_default();
            for item in &s.sort_clause {
                self.order_by(item, &[], &first, &scope)?;
            }
            return Ok(Outputs::combined(arms));
        }
        for item in &s.from_clause {
            let relations = self.relations_of(item, &scope)?;
            scope.relations.extend(relations);
        }
        for row in &s.values_lists {
            self.value(row, &scope)?;
        }
        let outputs = self.target_list(&s.target_list, &scope)?;
        self.condition_opt(s.where_clause.as_deref(), &scope)?;
        for item in &s.group_clause {
            self.group_by(item, &scope)?;
        }
        self.condition_opt(s.having_clause.as_deref(), &scope)?;
        for window in &s.window_clause {
            if let Some(NodeEnum::WindowDef(window)) = &window.node {
                self.window(window, &scope)?;
            }
        }
        for item in &s.sort_clause {
            self.order_by(item, &s.target_list, &outputs, &scope)?;
        }
        Ok(outputs)
    }

    fn with_clause(&mut self, with: Option<&WithClause>, scope: &mut Scope<'_, 'a>) -> Result<()> {
        for cte in with.into_iter().flat_map(|w| &w.ctes) {
            if let Some(NodeEnum::CommonTableExpr(cte)) = &cte.node {
                let outputs = self.cte(cte, scope)?.aliased(&cte.aliascolnames);
                scope.ctes.push((cte.ctename.clone(), outputs));
            }
        }
        Ok(())
    }

    /// A CTE's outputs. Those of a data-modifying one (`RETURNING`) over a
    /// protected table are all derived.
    fn cte(&mut self, cte: &CommonTableExpr, scope: &Scope<'_, 'a>) -> Result<Outputs<'a>> {
        let target = match cte.ctequery.as_deref().and_then(|q| q.node.as_ref()) {
            Some(NodeEnum::SelectStmt(s)) => return self.select(s, scope),
            Some(node @ NodeEnum::InsertStmt(s)) => (node, s.relation.as_ref()),
            Some(node @ NodeEnum::UpdateStmt(s)) => (node, s.relation.as_ref()),
            Some(node @ NodeEnum::DeleteStmt(s)) => (node, s.relation.as_ref()),
            Some(node) => (node, None),
            None => return Ok(Outputs::default()),
        };
        self.statement_in(target.0, scope)?;
        Ok(Outputs {
            rest: target.1.and_then(|range| self.read(range, scope)),
            ..Outputs::default()
        })
    }

    /// The relations a FROM item brings into scope.
    fn relations_of(&mut self, item: &Node, scope: &Scope<'_, 'a>) -> Result<Vec<Relation<'a>>> {
        match &item.node {
            Some(NodeEnum::RangeVar(range)) => self.range_var(range, scope).map(|r| vec![r]),
            Some(NodeEnum::RangeSubselect(sub)) => self.subselect(sub, scope).map(|r| vec![r]),
            Some(NodeEnum::JoinExpr(join)) => self.join(join, scope),
            Some(other) => {
                self.unknown(other, scope, false)?;
                if let NodeEnum::RangeFunction(function) = other {
                    let (columns, sublinks) = (self.columns, &self.sublinks[..]);
                    Check {
                        scope,
                        columns,
                        sublinks,
                    }
                    .function_in_from(function)?;
                }
                Ok(Vec::new())
            }
            None => Ok(Vec::new()),
        }
    }

    fn range_var(&self, range: &RangeVar, scope: &Scope<'_, 'a>) -> Result<Relation<'a>> {
        let alias = range.alias.as_ref();
        let name = alias.map_or(&range.relname, |a| &a.aliasname).clone();
        if range.schemaname.is_empty() {
            if let Some(outputs) = scope.cte(&range.relname) {
                let aliases = alias.map_or(&[][..], |a| &a.colnames);
                return Ok(Relation::of_outputs(name, outputs.clone().aliased(aliases)));
            }
        }
        let (schema, table) = table_name(range, self.policy);
        let mut relation = Relation {
            name,
            schema: alias.is_none().then(|| schema.to_owned()),
            columns: self
                .policy
                .columns_of(schema, &table)
                .map(|c| (c.column.clone(), c))
                .collect(),
            ..Relation::default()
        };
        let view = self.objects.view(&range.schemaname, &range.relname);
        if let Some(view) = view {
            let columns = &view.columns;
            relation
                .columns
                .extend(columns.exact.iter().filter_map(|(name, c)| {
                    let column = self.policy.column(&c.schema, &c.table, &c.column)?;
                    Some((name.clone(), column))
                }));
            match &columns.derived {
                Derived::Columns(names) => relation
                    .derived
                    .extend(names.iter().map(|name| (name.clone(), Origin::View(view)))),
                Derived::All => relation.rest = Some(Origin::View(view)),
            }
        }
        if alias.is_some_and(|a| !a.colnames.is_empty()) {
            if let Some(view) = view {
                return Err(Reason::ViewAliases {
                    view: view.qualified(),
                    table: view.table().to_owned(),
                });
            }
            if let Some((_, column)) = relation.columns.first() {
                return Err(Reason::ColumnAliases((*column).into()));
            }
        }
        Ok(relation)
    }

    fn subselect(&mut self, sub: &RangeSubselect, scope: &Scope<'_, 'a>) -> Result<Relation<'a>> {
        let outputs = match sub.subquery.as_deref().and_then(|q| q.node.as_ref()) {
            Some(NodeEnum::SelectStmt(s)) => self.select(s, scope)?,
            _ => Outputs::default(),
        };
        let (name, aliases) = match &sub.alias {
            Some(alias) => (alias.aliasname.clone(), &alias.colnames[..]),
            None => (String::new(), &[][..]),
        };
        Ok(Relation::of_outputs(name, outputs.aliased(aliases)))
    }

    /// The relations of a join; its right side sees the left (`LATERAL`).
    fn join(&mut self, join: &JoinExpr, scope: &Scope<'_, 'a>) -> Result<Vec<Relation<'a>>> {
        let mut quals_scope = Scope::child(scope);
        for side in [&join.larg, &join.rarg].into_iter().flatten() {
            let side = self.relations_of(side, &quals_scope)?;
            quals_scope.relations.extend(side);
        }
        self.using(&join.using_clause, &quals_scope)?;
        self.condition_opt(join.quals.as_deref(), &quals_scope)?;
        let mut relations = quals_scope.relations;
        if let Some(alias) = &join.alias {
            let mut joined = Relation {
                name: alias.aliasname.clone(),
                ..Relation::default()
            };
            for relation in relations.drain(..) {
                joined.columns.extend(relation.columns);
                joined.derived.extend(relation.derived);
                joined.rest = joined.rest.or(relation.rest);
            }
            if !alias.colnames.is_empty() {
                // Renamed by position, which pgveil does not follow here.
                joined.rest = joined.outputs().origin();
                joined.columns.clear();
                joined.derived.clear();
            }
            relations.push(joined);
        }
        Ok(relations)
    }

    /// `JOIN ... USING (col)` compares the column of both sides.
    fn using(&self, columns: &[Node], scope: &Scope<'_, 'a>) -> Result<()> {
        for name in columns.iter().filter_map(string) {
            let mut sides = scope
                .all_columns()
                .filter(|(column, _)| column == name)
                .map(|(_, policy)| *policy);
            if let Some(first) = sides.next() {
                check_equality(first, sides.next())?;
            }
        }
        Ok(())
    }

    fn target_list(&mut self, targets: &[Node], scope: &Scope<'_, 'a>) -> Result<Outputs<'a>> {
        let mut outputs = Outputs::new();
        for target in targets {
            let Some(NodeEnum::ResTarget(res)) = &target.node else {
                continue;
            };
            let Some(val) = res.val.as_deref() else {
                continue;
            };
            if let Some(fields) = star_target(val) {
                let relations = scope.relations.iter();
                let chosen = relations.filter(|r| fields.last().is_none_or(|t| r.name == *t));
                chosen.for_each(|relation| outputs.append(relation.outputs()));
                continue;
            }
            let output = match &val.node {
                Some(NodeEnum::ColumnRef(column)) => scope.output(column),
                _ => self
                    .computed(val, scope)
                    .map_or(Output::Plain, Output::Derived),
            };
            let name = Some(res.name.clone()).filter(|n| !n.is_empty());
            outputs.push(name.or_else(|| output_name(val)), output);
            self.value(val, scope)?;
        }
        Ok(outputs)
    }

    /// What a computed output reads: the first protected or derived
    /// value a column reference anywhere in it names (a whole row too), or
    /// what a subquery in it reads.
    fn computed(&self, value: &Node, scope: &Scope<'_, 'a>) -> Option<Origin<'a>> {
        let node = value.node.as_ref()?;
        node.nodes().into_iter().find_map(|(n, ..)| match n {
            NodeRef::ColumnRef(column) => scope.reads(column),
            NodeRef::RangeVar(range) => self.read(range, scope),
            _ => None,
        })
    }

    /// What reading `range` in a subquery reads: a CTE's protected or
    /// derived values, a view over a protected table, a protected table.
    fn read(&self, range: &RangeVar, scope: &Scope<'_, 'a>) -> Option<Origin<'a>> {
        if range.schemaname.is_empty() {
            if let Some(outputs) = scope.cte(&range.relname) {
                return outputs.origin();
            }
        }
        if let Some(view) = self.objects.view(&range.schemaname, &range.relname) {
            return Some(Origin::View(view));
        }
        let (schema, table) = table_name(range, self.policy);
        self.policy
            .columns_of(schema, &table)
            .next()
            .map(Origin::Table)
    }

    fn group_by(&mut self, item: &Node, scope: &Scope<'_, 'a>) -> Result<()> {
        match self.protected_ref(item, scope) {
            Some(column) if column.encryption == Encryption::Randomized => {
                Err(Reason::Randomized(column.into()))
            }
            Some(_) => Ok(()),
            None => match self.carried(item, scope)? {
                Some(Origin::Column(c)) if c.encryption == Encryption::Randomized => {
                    Err(Reason::Randomized(c.into()))
                }
                _ => Ok(()),
            },
        }
    }

    fn order_by(
        &mut self,
        item: &Node,
        targets: &[Node],
        outputs: &Outputs<'a>,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        let Some(NodeEnum::SortBy(sort)) = &item.node else {
            return self.value(item, scope);
        };
        let Some(key) = sort.node.as_deref() else {
            return Ok(());
        };
        // An output named so: a protected column, possibly cast.
        let named = |name: &str| {
            targets.iter().find_map(|t| match &t.node {
                Some(NodeEnum::ResTarget(res)) if res.name == name => {
                    self.protected_ref(res.val.as_deref()?, scope)
                }
                _ => None,
            })
        };
        let by_output = column_fields(key).and_then(|fields| match fields.as_slice() {
            [name] => outputs.exact(name).or_else(|| named(name)),
            _ => None,
        });
        let by_position = match &key.node {
            Some(NodeEnum::AConst(AConst {
                val: Some(a_const::Val::Ival(i)),
                ..
            })) => usize::try_from(i.ival)
                .ok()
                .and_then(|n| targets.get(n.wrapping_sub(1)))
                .and_then(|t| match &t.node {
                    Some(NodeEnum::ResTarget(res)) => res.val.as_deref(),
                    _ => None,
                })
                .and_then(|val| self.protected_ref(val, scope)),
            _ => None,
        };
        match self.protected_ref(key, scope).or(by_output).or(by_position) {
            Some(column) => Err(Reason::NotSearchable(column.into())),
            None => match self.carried(key, scope)? {
                Some(Origin::Column(c)) => Err(Reason::NotSearchable(c.into())),
                Some(origin) => Err(computing("ORDER BY", origin)),
                None => Ok(()),
            },
        }
    }

    /// `PARTITION BY` groups and `ORDER BY` sorts, as in a query.
    fn window(&mut self, window: &WindowDef, scope: &Scope<'_, 'a>) -> Result<()> {
        for item in &window.partition_clause {
            self.group_by(item, scope)?;
        }
        let none = Outputs::default();
        let mut sorts = window.order_clause.iter();
        sorts.try_for_each(|item| self.order_by(item, &[], &none, scope))
    }

    // Writes

    fn insert(&mut self, s: &InsertStmt, parent: &Scope<'_, 'a>) -> Result<()> {
        let mut scope = Scope::child(parent);
        self.with_clause(s.with_clause.as_ref(), &mut scope)?;
        let Some(range) = &s.relation else {
            return Ok(());
        };
        self.check_write(range)?;
        let target = self.range_var(range, &scope)?;
        let (schema, table) = table_name(range, self.policy);
        let targets = self.insert_targets(s, range)?;
        match s.select_stmt.as_deref().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::SelectStmt(select)) if is_plain_values(select) => {
                for row in &select.values_lists {
                    let Some(NodeEnum::List(row)) = &row.node else {
                        continue;
                    };
                    for (i, value) in row.items.iter().enumerate() {
                        match targets.get(i).copied().flatten() {
                            Some(column) => self.write(column, value, &scope)?,
                            None => self.value(value, &scope)?,
                        }
                    }
                }
            }
            Some(NodeEnum::SelectStmt(select)) => match targets.iter().flatten().next() {
                Some(first) => self
                    .insert_select(select, &targets, &scope)
                    .ok_or_else(|| Reason::InsertSelect((*first).into()))??,
                None => drop(self.select(select, &scope)?),
            },
            _ => {}
        }
        scope.relations.push(target);
        if let Some(conflict) = &s.on_conflict_clause {
            self.on_conflict(conflict, schema, &table, &scope)?;
        }
        self.returning(s.returning_clause.as_ref(), &scope)
    }

    /// `INSERT ... SELECT` writing protected columns, in the two shapes
    /// ORMs send batches in: `SELECT * FROM UNNEST(a1, a2, ...)` (Django),
    /// each array written element by element, and `SELECT p0::T, ... FROM
    /// (VALUES ...) AS t(p0, ...) ORDER BY ...` (SQLAlchemy's
    /// insertmanyvalues), each VALUES item written to the column its
    /// output goes to. `None` for any other SELECT.
    fn insert_select(
        &mut self,
        select: &SelectStmt,
        targets: &[Option<&'a ColumnPolicy>],
        scope: &Scope<'_, 'a>,
    ) -> Option<Result<()>> {
        let plain = select.op() == SetOperation::SetopNone
            && select.with_clause.is_none()
            && select.distinct_clause.is_empty()
            && select.where_clause.is_none()
            && select.group_clause.is_empty()
            && select.having_clause.is_none()
            && select.window_clause.is_empty()
            && select.values_lists.is_empty()
            && select.limit_count.is_none()
            && select.limit_offset.is_none()
            && select.locking_clause.is_empty();
        let [from] = select.from_clause.as_slice() else {
            return None;
        };
        if !plain {
            return None;
        }
        let result = match &from.node {
            Some(NodeEnum::RangeFunction(function)) => {
                let arrays = unnest_arrays(select, function)?;
                arrays.iter().enumerate().try_for_each(|(i, array)| {
                    match targets.get(i).copied().flatten() {
                        Some(column) => self.write_array(column, array, scope),
                        None => self.value(array, scope),
                    }
                })
            }
            Some(NodeEnum::RangeSubselect(sub)) => {
                let (rows, sources) = values_sources(select, sub, targets)?;
                self.write_values(rows, &sources, scope)
            }
            _ => return None,
        };
        Some(result.and_then(|()| {
            select
                .sort_clause
                .iter()
                .try_for_each(|item| self.value(item, scope))
        }))
    }

    /// Writes the rows of a VALUES list: the items at the positions
    /// `sources` names to those columns, the others as plain values.
    fn write_values(
        &mut self,
        rows: &[Node],
        sources: &[(usize, &'a ColumnPolicy)],
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        for row in rows {
            let Some(NodeEnum::List(row)) = &row.node else {
                continue;
            };
            for (k, item) in row.items.iter().enumerate() {
                match sources.iter().find(|(source, _)| *source == k) {
                    Some((_, column)) => self.write(column, item, scope)?,
                    None => self.value(item, scope)?,
                }
            }
        }
        Ok(())
    }

    /// The protected column each inserted value goes to, in order.
    fn insert_targets(
        &self,
        s: &InsertStmt,
        range: &RangeVar,
    ) -> Result<Vec<Option<&'a ColumnPolicy>>> {
        let (schema, table) = table_name(range, self.policy);
        if s.select_stmt.is_none() {
            return Ok(Vec::new()); // DEFAULT VALUES
        }
        let names: Vec<String> = if s.cols.is_empty() {
            let Some(first) = self.policy.columns_of(schema, &table).next() else {
                return Ok(Vec::new());
            };
            self.columns
                .order(schema, &table)
                .ok_or_else(|| Reason::NoColumnList {
                    statement: "INSERT",
                    table: format!("{schema}.{table}"),
                    column: first.into(),
                })?
        } else {
            s.cols
                .iter()
                .filter_map(|c| match &c.node {
                    Some(NodeEnum::ResTarget(res)) => Some(res),
                    _ => None,
                })
                .map(|res| {
                    self.assignable(schema, &table, res)
                        .map(|_| res.name.clone())
                })
                .collect::<Result<_>>()?
        };
        Ok(names
            .iter()
            .map(|name| self.policy.column(schema, &table, name))
            .collect())
    }

    /// The protected column a SET or INSERT target names; refuses writing
    /// to a part of one (`col[1]`, `col.field`).
    fn assignable(
        &self,
        schema: &str,
        table: &str,
        res: &ResTarget,
    ) -> Result<Option<&'a ColumnPolicy>> {
        let column = self.policy.column(schema, table, &res.name);
        match column {
            Some(column) if !res.indirection.is_empty() => Err(Reason::NotWritable(column.into())),
            _ => Ok(column),
        }
    }

    fn on_conflict(
        &mut self,
        conflict: &OnConflictClause,
        schema: &str,
        table: &str,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        let mut conflict_scope = Scope::child(scope);
        conflict_scope.relations.push(Relation {
            name: "excluded".into(),
            columns: self
                .policy
                .columns_of(schema, table)
                .map(|c| (c.column.clone(), c))
                .collect(),
            ..Relation::default()
        });
        self.set_clause(&conflict.target_list, schema, table, true, &conflict_scope)?;
        self.condition_opt(conflict.where_clause.as_deref(), &conflict_scope)
    }

    fn update(&mut self, s: &UpdateStmt, parent: &Scope<'_, 'a>) -> Result<()> {
        let mut scope = Scope::child(parent);
        self.with_clause(s.with_clause.as_ref(), &mut scope)?;
        let Some(range) = &s.relation else {
            return Ok(());
        };
        self.check_write(range)?;
        let target = self.range_var(range, &scope)?;
        scope.relations.push(target);
        for item in &s.from_clause {
            let relations = self.relations_of(item, &scope)?;
            scope.relations.extend(relations);
        }
        let (schema, table) = table_name(range, self.policy);
        self.set_clause(&s.target_list, schema, &table, false, &scope)?;
        self.condition_opt(s.where_clause.as_deref(), &scope)?;
        self.returning(s.returning_clause.as_ref(), &scope)
    }

    /// `SET col = value, (a, b) = (v1, v2), ...` of UPDATE or ON CONFLICT.
    fn set_clause(
        &mut self,
        targets: &[Node],
        schema: &str,
        table: &str,
        on_conflict: bool,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        for target in targets {
            let Some(NodeEnum::ResTarget(res)) = &target.node else {
                continue;
            };
            let Some(val) = res.val.as_deref() else {
                continue;
            };
            let column = self.assignable(schema, table, res)?;
            let value = match &val.node {
                Some(NodeEnum::MultiAssignRef(multi)) => {
                    match multi.source.as_deref().and_then(|s| s.node.as_ref()) {
                        Some(NodeEnum::RowExpr(row)) => row
                            .args
                            .get(usize::try_from(multi.colno - 1).unwrap_or(usize::MAX)),
                        _ if multi.colno == 1 && column.is_none() => multi.source.as_deref(),
                        _ => None,
                    }
                }
                _ => Some(val),
            };
            match (column, value) {
                (Some(column), Some(value)) => {
                    if !(on_conflict && is_excluded(value, &res.name)) {
                        self.write(column, value, scope)?;
                    }
                }
                (Some(column), None) => return Err(Reason::NotWritable(column.into())),
                (None, Some(value)) => self.value(value, scope)?,
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn delete(&mut self, s: &DeleteStmt, parent: &Scope<'_, 'a>) -> Result<()> {
        let mut scope = Scope::child(parent);
        self.with_clause(s.with_clause.as_ref(), &mut scope)?;
        if let Some(range) = &s.relation {
            if s.returning_clause
                .as_ref()
                .is_some_and(|r| !r.exprs.is_empty())
            {
                self.check_write(range)?;
            }
            let target = self.range_var(range, &scope)?;
            scope.relations.push(target);
        }
        for item in &s.using_clause {
            let relations = self.relations_of(item, &scope)?;
            scope.relations.extend(relations);
        }
        self.condition_opt(s.where_clause.as_deref(), &scope)?;
        self.returning(s.returning_clause.as_ref(), &scope)
    }

    fn returning(
        &mut self,
        returning: Option<&ReturningClause>,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        for expr in returning.into_iter().flat_map(|r| &r.exprs) {
            self.value(expr, scope)?;
        }
        Ok(())
    }

    /// A value written to a protected column.
    fn write(
        &mut self,
        column: &'a ColumnPolicy,
        value: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        if matches!(value.node, Some(NodeEnum::SetToDefault(_))) {
            return Ok(());
        }
        let operand = self.operand(value, scope);
        if matches!(operand, Operand::Literal(..) | Operand::Param(_)) {
            self.note_written(column);
        }
        match operand {
            Operand::Literal(constant, text) => self.encrypt(column, constant, text),
            Operand::Param(number) => self.param(column, number),
            Operand::Null => Ok(()),
            Operand::Protected(_) | Operand::Other => Err(Reason::NotWritable(column.into())),
        }
    }

    fn note_written(&mut self, column: &ColumnPolicy) {
        let id = ColumnRefId::from(column);
        if !self.written.contains(&id) {
            self.written.push(id);
        }
    }

    /// An array of values for `column`: `ARRAY[...]`, each element
    /// checked by `element`; a string literal in array syntax or a `$n`,
    /// encrypted element by element; or NULL, possibly cast. Anything else
    /// is refused with `other`, and any array for a `bytea` column.
    fn array(
        &mut self,
        column: &'a ColumnPolicy,
        node: &Node,
        scope: &Scope<'_, 'a>,
        element: ElementCheck<'a>,
        other: fn(ColumnRefId) -> Reason,
    ) -> Result<()> {
        if storage(self.columns, column)? == Storage::Bytea {
            return Err(Reason::ByteaArray(column.into()));
        }
        match &node.node {
            Some(NodeEnum::TypeCast(cast)) => match cast.arg.as_deref() {
                Some(arg) => self.array(column, arg, scope, element, other),
                None => Err(other(column.into())),
            },
            Some(NodeEnum::AArrayExpr(array)) => array
                .elements
                .iter()
                .try_for_each(|item| element(self, column, item, scope)),
            Some(NodeEnum::AConst(c)) if c.isnull => Ok(()),
            Some(NodeEnum::AConst(
                constant @ AConst {
                    val: Some(a_const::Val::Sval(text)),
                    ..
                },
            )) => self.encrypt_array(column, constant, &text.sval),
            Some(NodeEnum::ParamRef(p)) => match usize::try_from(p.number) {
                Ok(number) => self.slot(column, number, true),
                Err(_) => Err(other(column.into())),
            },
            _ => Err(other(column.into())),
        }
    }

    /// An array written to a protected column, element by element.
    fn write_array(
        &mut self,
        column: &'a ColumnPolicy,
        node: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        self.note_written(column);
        self.array(column, node, scope, Self::write, Reason::NotWritable)
    }

    // Expressions

    /// An expression whose result is read, not tested: protected columns
    /// may appear in it, but comparisons and subqueries in it are checked.
    ///
    /// A protected value passed through anything but a bare column
    /// reference (`COALESCE`, `CASE`, a cast, a window function, a scalar
    /// subquery) comes without the column in the result's description,
    /// which is what finds values stored unencrypted (`crate::read::shape`): it
    /// is refused while the column may hold such values.
    fn value(&mut self, node: &Node, scope: &Scope<'_, 'a>) -> Result<()> {
        let Some(Origin::Column(column)) = self.carried(node, scope)? else {
            return Ok(());
        };
        let bare = matches!(node.node, Some(NodeEnum::ColumnRef(_)));
        if !bare
            && self
                .columns
                .may_hold_unencrypted(&column.schema, &column.table, &column.column)
        {
            return Err(Reason::UnencryptedPassThrough {
                construct: pass_through_name(node),
                column: column.into(),
            });
        }
        Ok(())
    }

    /// [`Self::value`], and the protected value it returns as it is stored,
    /// if any; refused if it computes on one (see [`super::computed`]).
    fn carried(&mut self, node: &Node, scope: &Scope<'_, 'a>) -> Result<Option<Origin<'a>>> {
        self.expr(node, scope, false)?;
        let (columns, sublinks) = (self.columns, &self.sublinks[..]);
        Check {
            scope,
            columns,
            sublinks,
        }
        .carried(node)
    }

    fn condition_opt(&mut self, node: Option<&Node>, scope: &Scope<'_, 'a>) -> Result<()> {
        node.map_or(Ok(()), |node| self.expr(node, scope, true))
    }

    /// Walks an expression. In a condition (`strict`), a protected column
    /// may appear only as an operand of a comparison this module handles.
    fn expr(&mut self, node: &Node, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
        let Some(inner) = &node.node else {
            return Ok(());
        };
        match inner {
            NodeEnum::ColumnRef(column) if strict => check_condition_column(column, scope),
            NodeEnum::ColumnRef(_) => Ok(()),
            NodeEnum::AExpr(e) => self.comparison(e, scope, strict),
            NodeEnum::NullTest(test) => match test.arg.as_deref() {
                Some(arg) if self.protected_ref(arg, scope).is_some() => Ok(()),
                Some(arg) if column_fields(arg).is_some_and(|f| scope.derived(&f).is_some()) => {
                    Ok(())
                }
                arg => self.exprs(arg, scope, strict),
            },
            NodeEnum::SubLink(link) => self.sublink(link, scope, strict),
            NodeEnum::SelectStmt(s) => self.select(s, scope).map(drop),
            NodeEnum::BoolExpr(e) => self.exprs(&e.args, scope, strict),
            NodeEnum::TypeCast(e) => self.exprs(e.arg.as_deref(), scope, strict),
            NodeEnum::FuncCall(f) => {
                if let Some(window) = &f.over {
                    self.window(window, scope)?;
                }
                self.exprs(&f.args, scope, strict)?;
                self.exprs(f.agg_filter.as_deref(), scope, strict)
            }
            NodeEnum::CaseExpr(e) => {
                // `CASE col WHEN v`: col = v.
                if let Some(column) = e.arg.as_deref().and_then(|a| self.protected_ref(a, scope)) {
                    for when in &e.args {
                        if let Some(NodeEnum::CaseWhen(w)) = &when.node {
                            self.equality(column, w.expr.as_deref().ok_or(Reason::Syntax)?, scope)?;
                        }
                    }
                }
                self.exprs(e.arg.as_deref(), scope, strict)?;
                self.exprs(&e.args, scope, strict)?;
                self.exprs(e.defresult.as_deref(), scope, strict)
            }
            NodeEnum::CaseWhen(w) => {
                self.expr_opt(w.expr.as_deref(), scope, true)?;
                self.exprs(w.result.as_deref(), scope, strict)
            }
            NodeEnum::CoalesceExpr(e) => self.exprs(&e.args, scope, strict),
            NodeEnum::MinMaxExpr(e) => self.exprs(&e.args, scope, strict),
            NodeEnum::RowExpr(e) => self.exprs(&e.args, scope, strict),
            NodeEnum::AArrayExpr(e) => self.exprs(&e.elements, scope, strict),
            NodeEnum::List(l) => self.exprs(&l.items, scope, strict),
            NodeEnum::BooleanTest(t) => self.exprs(t.arg.as_deref(), scope, strict),
            NodeEnum::CollateClause(c) => self.exprs(c.arg.as_deref(), scope, strict),
            NodeEnum::NamedArgExpr(a) => self.exprs(a.arg.as_deref(), scope, strict),
            NodeEnum::XmlSerialize(x) => self.exprs(x.expr.as_deref(), scope, strict),
            NodeEnum::XmlExpr(x) => self.exprs(x.args.iter().chain(&x.named_args), scope, strict),
            NodeEnum::AIndirection(i) => {
                self.exprs(i.arg.as_deref(), scope, strict)?;
                self.exprs(&i.indirection, scope, strict)
            }
            NodeEnum::AIndices(i) => {
                self.exprs(i.lidx.as_deref(), scope, strict)?;
                self.exprs(i.uidx.as_deref(), scope, strict)
            }
            NodeEnum::ResTarget(r) => self.exprs(r.val.as_deref(), scope, strict),
            NodeEnum::AConst(_)
            | NodeEnum::ParamRef(_)
            | NodeEnum::SetToDefault(_)
            | NodeEnum::AStar(_)
            | NodeEnum::SqlvalueFunction(_) => Ok(()),
            other => self.unknown(other, scope, strict),
        }
    }

    fn expr_opt(&mut self, node: Option<&Node>, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
        node.map_or(Ok(()), |node| self.expr(node, scope, strict))
    }

    fn exprs<'n>(
        &mut self,
        nodes: impl IntoIterator<Item = &'n Node>,
        scope: &Scope<'_, 'a>,
        strict: bool,
    ) -> Result<()> {
        nodes
            .into_iter()
            .try_for_each(|node| self.expr(node, scope, strict))
    }

    /// An expression this walk does not know: refused if it holds a
    /// subquery, or, in a condition, a protected column.
    fn unknown(&self, node: &NodeEnum, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
        for (n, ..) in node.nodes().into_iter().skip(1) {
            match n {
                NodeRef::SelectStmt(_) => return Err(Reason::UncheckedSubquery),
                NodeRef::ColumnRef(column) if strict => check_condition_column(column, scope)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A subquery in an expression; `x IN (SELECT ...)`, `x = ANY
    /// (SELECT ...)` compare `x` with the subquery's output.
    fn sublink(&mut self, link: &SubLink, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
        let outputs = match link.subselect.as_deref().and_then(|s| s.node.as_ref()) {
            Some(NodeEnum::SelectStmt(s)) => self.select(s, scope)?,
            _ => Outputs::default(),
        };
        let (name, compared) = outputs.compared();
        self.sublinks.push((link.location, compared));
        let Some(test) = link.testexpr.as_deref() else {
            // A scalar subquery inside an expression in a condition:
            // computing on a protected value, as with a column.
            let value = matches!(
                link.sub_link_type(),
                SubLinkType::ExprSublink | SubLinkType::ArraySublink
            );
            return match compared {
                Output::Exact(column) if strict && value => Err(Reason::Computed(column.into())),
                Output::Derived(origin) if strict && value => Err(origin.refusal(&[name])),
                _ => Ok(()),
            };
        };
        self.not_derived([test], scope)?;
        match (self.protected_ref(test, scope), compared) {
            (Some(column), Output::Exact(other)) => check_equality(column, Some(other)),
            (Some(column), _) => check_equality(column, None),
            (None, Output::Exact(column)) => self.equality(column, test, scope),
            (None, Output::Derived(origin)) => Err(origin.refusal(&[name])),
            (None, Output::Plain) => self.expr(test, scope, strict),
        }
    }

    /// Refuses a comparison one of whose operands (possibly cast) is a
    /// derived column: of a view, subquery or CTE, computed from protected
    /// values.
    fn not_derived<'n>(
        &self,
        operands: impl IntoIterator<Item = &'n Node>,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        for operand in operands {
            let Some(fields) = column_fields(uncast(operand)) else {
                continue;
            };
            if let Some(origin) = scope.derived(&fields) {
                return Err(origin.refusal(&fields));
            }
        }
        Ok(())
    }

    fn comparison(&mut self, e: &AExpr, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
        let list = match e.rexpr.as_deref().and_then(|r| r.node.as_ref()) {
            Some(NodeEnum::List(list)) => list.items.as_slice(),
            _ => &[],
        };
        let sides = [e.lexpr.as_deref(), e.rexpr.as_deref()];
        self.not_derived(sides.into_iter().flatten().chain(list), scope)?;
        let (Some(left), right) = (e.lexpr.as_deref(), e.rexpr.as_deref()) else {
            return self.exprs(e.rexpr.as_deref(), scope, strict);
        };
        let operator = e.name.iter().filter_map(string).next_back().unwrap_or("");
        let operands: Vec<&Node> = match right {
            Some(_) if !list.is_empty() => std::iter::once(left).chain(list).collect(),
            _ => std::iter::once(left).chain(right).collect(),
        };
        if operands
            .iter()
            .any(|operand| subquery_operand(operand).is_some())
        {
            return self.subquery_comparison(e, operator, &operands, scope, strict);
        }
        match e.kind() {
            AExprKind::AexprIn => {
                let Some(column) = self.protected_ref(left, scope) else {
                    self.expr(left, scope, strict)?;
                    return self.exprs(right, scope, strict);
                };
                let items = match right.and_then(|r| r.node.as_ref()) {
                    Some(NodeEnum::List(list)) => list.items.as_slice(),
                    _ => &[],
                };
                items
                    .iter()
                    .try_for_each(|item| self.equality(column, item, scope))
            }
            AExprKind::AexprOp if !matches!(operator, "=" | "<>") => {
                let protected = [Some(left), right]
                    .into_iter()
                    .flatten()
                    .find_map(|side| self.protected_ref(side, scope));
                // Outside a condition, other operators are refused as
                // computing on the column (`super::computed`).
                match protected {
                    Some(c) if matches!(operator, "<" | ">" | "<=" | ">=" | "~~" | "~~*") => {
                        Err(Reason::NotSearchable(c.into()))
                    }
                    Some(c) if strict => Err(Reason::Computed(c.into())),
                    _ => {
                        self.expr(left, scope, strict)?;
                        self.exprs(right, scope, strict)
                    }
                }
            }
            AExprKind::AexprOp
            | AExprKind::AexprDistinct
            | AExprKind::AexprNotDistinct
            | AExprKind::AexprNullif => {
                let right = right.ok_or(Reason::Syntax)?;
                match (
                    self.protected_ref(left, scope),
                    self.protected_ref(right, scope),
                ) {
                    (Some(column), _) => self.equality(column, right, scope),
                    (None, Some(column)) => self.equality(column, left, scope),
                    (None, None) => {
                        self.expr(left, scope, strict)?;
                        self.expr(right, scope, strict)
                    }
                }
            }
            AExprKind::AexprOpAny | AExprKind::AexprOpAll if matches!(operator, "=" | "<>") => {
                let right = right.ok_or(Reason::Syntax)?;
                match self.protected_ref(left, scope) {
                    Some(column) if column.encryption == Encryption::Randomized => {
                        Err(Reason::Randomized(column.into()))
                    }
                    Some(column) => {
                        self.array(column, right, scope, Self::equality, Reason::Incomparable)
                    }
                    None => {
                        self.expr(left, scope, strict)?;
                        self.expr(right, scope, strict)
                    }
                }
            }
            _ => {
                let mut operands = vec![left];
                if let Some(Node {
                    node: Some(NodeEnum::List(list)),
                }) = right
                {
                    operands.extend(&list.items);
                } else {
                    operands.extend(right);
                }
                let any = matches!(e.kind(), AExprKind::AexprOpAny | AExprKind::AexprOpAll);
                match operands
                    .iter()
                    .find_map(|side| self.protected_ref(side, scope))
                {
                    Some(column) if !any => Err(Reason::NotSearchable(column.into())),
                    Some(column) if strict => Err(Reason::Computed(column.into())),
                    _ => self.exprs(operands, scope, strict),
                }
            }
        }
    }

    /// A comparison with a subquery among its operands, `(SELECT ...)` or
    /// `ARRAY(SELECT ...)`: its output is compared as a column would be.
    /// A protected column as it is can be equal to a value, which is
    /// encrypted (`=`, `<>`, `IS DISTINCT FROM`, `NULLIF` with a scalar
    /// subquery), and is refused in any other comparison; a derived one is
    /// refused.
    fn subquery_comparison(
        &mut self,
        e: &AExpr,
        operator: &str,
        operands: &[&Node],
        scope: &Scope<'_, 'a>,
        strict: bool,
    ) -> Result<()> {
        let mut outputs = Vec::with_capacity(operands.len());
        for operand in operands {
            outputs.push(match subquery_operand(operand) {
                Some((select, _, location)) => {
                    let compared = self.select(select, scope)?.compared();
                    self.sublinks.push((location, compared.1));
                    Some(compared)
                }
                None => None,
            });
        }
        let kind = e.kind();
        let equality = matches!(
            kind,
            AExprKind::AexprDistinct | AExprKind::AexprNotDistinct | AExprKind::AexprNullif
        ) || (kind == AExprKind::AexprOp && matches!(operator, "=" | "<>"));
        let searching = matches!(
            kind,
            AExprKind::AexprLike
                | AExprKind::AexprIlike
                | AExprKind::AexprSimilar
                | AExprKind::AexprBetween
                | AExprKind::AexprNotBetween
                | AExprKind::AexprBetweenSym
                | AExprKind::AexprNotBetweenSym
        ) || matches!(operator, "<" | ">" | "<=" | ">=" | "~~" | "~~*");
        for (i, output) in outputs.iter().enumerate() {
            let scalar = subquery_operand(operands[i]).is_some_and(|(_, scalar, _)| scalar);
            match output {
                Some((_, Output::Exact(column))) if equality && scalar && operands.len() == 2 => {
                    return self.equality(column, operands[1 - i], scope);
                }
                Some((_, Output::Exact(column))) if searching => {
                    return Err(Reason::NotSearchable((*column).into()));
                }
                Some((_, Output::Exact(column))) if strict => {
                    return Err(Reason::Computed((*column).into()))
                }
                Some((name, Output::Derived(origin))) if strict || equality || searching => {
                    return Err(origin.refusal(std::slice::from_ref(name)))
                }
                _ => {}
            }
        }
        let mut others = operands.iter().zip(&outputs).filter(|(_, o)| o.is_none());
        others.try_for_each(|(operand, _)| self.expr(operand, scope, strict))
    }

    /// The other side of an equality with a protected column.
    fn equality(
        &mut self,
        column: &'a ColumnPolicy,
        other: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        if column.encryption == Encryption::Randomized {
            return Err(Reason::Randomized(column.into()));
        }
        match self.operand(other, scope) {
            Operand::Protected(other) => check_equality(column, Some(other)),
            Operand::Literal(constant, text) => self.encrypt(column, constant, text),
            Operand::Param(number) => self.param(column, number),
            Operand::Null => Ok(()),
            Operand::Other => Err(Reason::Incomparable(column.into())),
        }
    }

    fn operand<'n>(&self, node: &'n Node, scope: &Scope<'_, 'a>) -> Operand<'n, 'a> {
        match &node.node {
            Some(NodeEnum::TypeCast(cast)) => match cast.arg.as_deref() {
                Some(arg) => self.operand(arg, scope),
                None => Operand::Other,
            },
            Some(NodeEnum::AConst(c)) if c.isnull => Operand::Null,
            Some(NodeEnum::AConst(c)) => match &c.val {
                Some(a_const::Val::Sval(s)) => Operand::Literal(c, &s.sval),
                _ => Operand::Other,
            },
            Some(NodeEnum::ParamRef(p)) => {
                usize::try_from(p.number).map_or(Operand::Other, Operand::Param)
            }
            Some(NodeEnum::ColumnRef(c)) => scope
                .resolve(&fields_of(c))
                .map_or(Operand::Other, Operand::Protected),
            _ => Operand::Other,
        }
    }

    /// The protected column an expression is (possibly cast), if any.
    fn protected_ref(&self, node: &Node, scope: &Scope<'_, 'a>) -> Option<&'a ColumnPolicy> {
        match self.operand(node, scope) {
            Operand::Protected(column) => Some(column),
            _ => None,
        }
    }

    fn param(&mut self, column: &ColumnPolicy, number: usize) -> Result<()> {
        self.slot(column, number, false)
    }

    fn slot(&mut self, column: &ColumnPolicy, number: usize, array: bool) -> Result<()> {
        let slot = ParamSlot {
            number,
            target: Target::of(self.columns, column)?,
            array,
        };
        if !self.params.contains(&slot) {
            self.params.push(slot);
        }
        Ok(())
    }

    /// Replaces the literal token at the constant's location by the
    /// literal of its ciphertext.
    fn encrypt(&mut self, column: &ColumnPolicy, constant: &AConst, plaintext: &str) -> Result<()> {
        let replacement = match storage(self.columns, column)? {
            Storage::Text => format!("'{}'", self.ciphertext(column, plaintext)?),
            Storage::Bytea => self.bytea_literal(column, plaintext)?,
        };
        self.replace_literal(constant, replacement)
    }

    /// Replaces a string literal in array syntax (`'{a,b}'`) by the array
    /// of its elements' ciphertexts.
    fn encrypt_array(
        &mut self,
        column: &ColumnPolicy,
        constant: &AConst,
        plaintext: &str,
    ) -> Result<()> {
        let mut failure = None;
        let encrypted = array::map_text(plaintext, |element| {
            self.ciphertext(column, element).map_err(|reason| {
                let message = reason.to_string();
                failure = Some(reason);
                message
            })
        });
        match (encrypted, failure) {
            (_, Some(reason)) => Err(reason),
            (Ok(encrypted), None) => self.replace_literal(constant, format!("'{encrypted}'")),
            (Err(error), None) => Err(Reason::Array {
                column: column.into(),
                error,
            }),
        }
    }

    /// The ciphertext of `plaintext` for a text `column`, checked to be
    /// plain ASCII text that needs no escaping in a literal.
    fn ciphertext(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String> {
        let ciphertext = self
            .enc
            .encrypt(column, plaintext)
            .map_err(|error| encrypt_error(column, error))?;
        if !ciphertext
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
        {
            return Err(encrypt_error(
                column,
                super::EncryptError("the ciphertext is not plain ASCII text".into()),
            ));
        }
        Ok(ciphertext)
    }

    /// `E'\\x...'`: the hex form of the binary ciphertext of the bytes the
    /// literal stands for.
    fn bytea_literal(&self, column: &ColumnPolicy, plaintext: &str) -> Result<String> {
        let bytes = crate::text::bytea::decode(plaintext.as_bytes())
            .ok_or_else(|| Reason::NotBytea(column.into()))?;
        let ciphertext = self
            .enc
            .encrypt_bytes(column, &bytes)
            .map_err(|error| encrypt_error(column, error))?;
        Ok(format!("E'\\\\x{}'", hex::encode(ciphertext)))
    }

    /// Replaces the literal token of `constant` by `replacement`.
    fn replace_literal(&mut self, constant: &AConst, replacement: String) -> Result<()> {
        let (start, end) = self
            .literal_extent(constant.location)
            .ok_or(Reason::Syntax)?;
        self.edits.push(Edit {
            start,
            end,
            replacement,
        });
        Ok(())
    }

    /// The byte range of the literal token starting at `location`, with
    /// its `UESCAPE '.'` clause if it has one.
    fn literal_extent(&self, location: i32) -> Option<(usize, usize)> {
        let i = self
            .tokens
            .binary_search_by_key(&location, |t| t.start)
            .ok()?;
        let mut end = self.tokens[i].end;
        if let [escape, char, ..] = &self.tokens[i + 1..] {
            if escape.token() == Token::Uescape && char.token() == Token::Sconst {
                end = char.end;
            }
        }
        Some((
            usize::try_from(self.tokens[i].start).ok()?,
            usize::try_from(end).ok()?,
        ))
    }
}

fn encrypt_error(column: &ColumnPolicy, error: super::EncryptError) -> Reason {
    Reason::Encrypt {
        column: column.into(),
        error,
    }
}

/// The query of a subquery whose output a comparison compares, `(SELECT
/// ...)` (scalar, `true`) or `ARRAY(SELECT ...)`, possibly cast, with its
/// location.
fn subquery_operand(node: &Node) -> Option<(&SelectStmt, bool, i32)> {
    let Some(NodeEnum::SubLink(link)) = &uncast(node).node else {
        return None;
    };
    let scalar = match link.sub_link_type() {
        SubLinkType::ExprSublink => true,
        SubLinkType::ArraySublink => false,
        _ => return None,
    };
    match link.subselect.as_deref()?.node.as_ref()? {
        NodeEnum::SelectStmt(select) => Some((select, scalar, link.location)),
        _ => None,
    }
}

/// A column reference in a condition other than as a comparison's
/// operand: refused for a protected or a derived column.
fn check_condition_column(column: &ColumnRef, scope: &Scope<'_, '_>) -> Result<()> {
    let fields = fields_of(column);
    if let Some(policy) = scope.resolve(&fields) {
        return Err(Reason::Computed(policy.into()));
    }
    scope
        .derived(&fields)
        .map_or(Ok(()), |origin| Err(origin.refusal(&fields)))
}

/// Two sides of an equality: a protected column may equal only a column
/// of its key domain, and only with deterministic encryption.
fn check_equality(column: &ColumnPolicy, other: Option<&ColumnPolicy>) -> Result<()> {
    if column.encryption == Encryption::Randomized {
        return Err(Reason::Randomized(column.into()));
    }
    match other {
        Some(other) if other.domain == column.domain => Ok(()),
        _ => Err(Reason::Incomparable(column.into())),
    }
}

/// `(schema, table)` of a table reference. pgveil does not know the
/// session's `search_path`, so a table named without a schema is taken to
/// be `public`'s if that one is protected, else a protected table of that
/// name in any schema: a wrong guess can only protect too much.
pub(super) fn table_name<'r>(range: &'r RangeVar, policy: &'r Policy) -> (&'r str, String) {
    let table = &range.relname;
    if !range.schemaname.is_empty() {
        return (&range.schemaname, table.clone());
    }
    let schema = if policy.is_protected_table(DEFAULT_SCHEMA, table) {
        DEFAULT_SCHEMA
    } else {
        policy
            .tables()
            .find(|(_, t)| t == table)
            .map_or(DEFAULT_SCHEMA, |(schema, _)| schema)
    };
    (schema, table.clone())
}

pub(super) fn string(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

pub(super) fn fields_of(c: &ColumnRef) -> Vec<String> {
    c.fields
        .iter()
        .filter_map(string)
        .map(String::from)
        .collect()
}

fn column_fields(node: &Node) -> Option<Vec<String>> {
    match &node.node {
        Some(NodeEnum::ColumnRef(c)) => Some(fields_of(c)),
        _ => None,
    }
}

/// The qualifier of `*` or `t.*` (empty for `*`), if the target is one.
fn star_target(node: &Node) -> Option<Vec<String>> {
    match &node.node {
        Some(NodeEnum::ColumnRef(c))
            if matches!(
                c.fields.last().and_then(|f| f.node.as_ref()),
                Some(NodeEnum::AStar(_))
            ) =>
        {
            Some(fields_of(c))
        }
        _ => None,
    }
}

/// The arrays of `SELECT * FROM UNNEST(a1, a2, ...)`, if the SELECT is
/// just that.
fn unnest_arrays<'s>(select: &'s SelectStmt, function: &'s RangeFunction) -> Option<&'s [Node]> {
    let only_star = match select.target_list.as_slice() {
        [Node {
            node: Some(NodeEnum::ResTarget(res)),
        }] => res
            .val
            .as_deref()
            .and_then(star_target)
            .is_some_and(|fields| fields.is_empty()),
        _ => false,
    };
    if !only_star
        || function.lateral
        || function.ordinality
        || function.is_rowsfrom
        || !function.coldeflist.is_empty()
    {
        return None;
    }
    let [Node {
        node: Some(NodeEnum::List(call)),
    }] = function.functions.as_slice()
    else {
        return None;
    };
    match call.items.first().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::FuncCall(f))
            if f.funcname.last().and_then(string) == Some("unnest")
                && f.agg_order.is_empty()
                && f.agg_filter.is_none()
                && f.over.is_none()
                && !f.func_variadic =>
        {
            Some(&f.args)
        }
        _ => None,
    }
}

/// The VALUES column position each protected column is written from.
type Sources<'a> = Vec<(usize, &'a ColumnPolicy)>;

/// For `SELECT p0::T, ... FROM (VALUES ...) AS t(p0, ...)`: the rows of
/// the VALUES list, and for each protected target, the position of the
/// VALUES column it outputs, (possibly cast). `None` if a protected target
/// is anything else, or two take the same VALUES column.
fn values_sources<'s, 'a>(
    select: &SelectStmt,
    sub: &'s RangeSubselect,
    targets: &[Option<&'a ColumnPolicy>],
) -> Option<(&'s [Node], Sources<'a>)> {
    let Some(NodeEnum::SelectStmt(values)) = sub.subquery.as_deref()?.node.as_ref() else {
        return None;
    };
    if sub.lateral || !is_plain_values(values) {
        return None;
    }
    let alias = sub.alias.as_ref()?;
    let names: Vec<&str> = alias.colnames.iter().filter_map(string).collect();
    let mut sources = Vec::new();
    for (i, column) in targets.iter().enumerate() {
        let Some(column) = column else { continue };
        let Some(NodeEnum::ResTarget(res)) = select.target_list.get(i)?.node.as_ref() else {
            return None;
        };
        let fields = column_fields(uncast(res.val.as_deref()?))?;
        let name = match fields.as_slice() {
            [name] => name,
            [relation, name] if *relation == alias.aliasname => name,
            _ => return None,
        };
        let k = names.iter().position(|n| n == name)?;
        if sources.iter().any(|(source, _)| *source == k) {
            return None;
        }
        sources.push((k, *column));
    }
    Some((&values.values_lists, sources))
}

/// The expression under any casts.
fn uncast(node: &Node) -> &Node {
    match &node.node {
        Some(NodeEnum::TypeCast(cast)) => cast.arg.as_deref().map_or(node, uncast),
        _ => node,
    }
}

/// `EXCLUDED.column` in ON CONFLICT DO UPDATE.
fn is_excluded(node: &Node, column: &str) -> bool {
    column_fields(node).is_some_and(|f| f.len() == 2 && f[0] == "excluded" && f[1] == column)
}

/// A bare `VALUES (...), (...)` list, as INSERT writes it.
fn is_plain_values(s: &SelectStmt) -> bool {
    !s.values_lists.is_empty() && s.from_clause.is_empty() && s.with_clause.is_none()
}

/// How a refusal names an expression that passes a value through.
fn pass_through_name(node: &Node) -> String {
    match &node.node {
        Some(NodeEnum::CoalesceExpr(_)) => "coalesce()".into(),
        Some(NodeEnum::CaseExpr(_)) => "CASE".into(),
        Some(NodeEnum::TypeCast(_)) => "a cast".into(),
        Some(NodeEnum::AExpr(_)) => "nullif()".into(),
        Some(NodeEnum::CollateClause(_)) => "COLLATE".into(),
        Some(NodeEnum::SubLink(_)) => "a subquery".into(),
        Some(NodeEnum::FuncCall(f)) => f
            .funcname
            .last()
            .and_then(string)
            .map_or_else(|| "a function".into(), |name| format!("{name}()")),
        _ => "an expression".into(),
    }
}
