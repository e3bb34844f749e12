//! `SELECT`: its CTEs, the relations its FROM items bring into scope, what
//! its select list outputs, and its `GROUP BY`, `ORDER BY` and windows,
//! which a protected column may not sort.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{
    a_const, AConst, CommonTableExpr, JoinExpr, Node, RangeSubselect, RangeVar, SelectStmt,
    SetOperation, WindowDef, WithClause,
};
use pg_query::NodeRef;

use super::analyzer::Analyzer;
use super::comparisons::check_equality;
use crate::protect::policy::Encryption;
use crate::sql::computed::{computing, Check};
use crate::sql::names::{column_fields, star_target, string, table_name};
use crate::sql::outputs::{output_name, Origin, Output, Outputs};
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::{Relation, Scope};
use crate::sql::views::Derived;

impl<'a> Analyzer<'a> {
    /// Analyses a SELECT; returns what its outputs are.
    pub(super) fn select(&mut self, s: &SelectStmt, parent: &Scope<'_, 'a>) -> Result<Outputs<'a>> {
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

    /// Brings the CTEs of a `WITH` into scope, each seeing those before it.
    pub(super) fn with_clause(
        &mut self,
        with: Option<&WithClause>,
        scope: &mut Scope<'_, 'a>,
    ) -> Result<()> {
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
    pub(super) fn relations_of(
        &mut self,
        item: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<Vec<Relation<'a>>> {
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

    /// The relation a table, view or CTE name brings into scope.
    pub(super) fn range_var(
        &self,
        range: &RangeVar,
        scope: &Scope<'_, 'a>,
    ) -> Result<Relation<'a>> {
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

    /// The relation a subquery in FROM brings into scope.
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

    /// What a select list outputs; each of its values is read.
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

    /// A `GROUP BY` item: a protected column only with deterministic
    /// encryption.
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

    /// An `ORDER BY` item, by expression, output name or position:
    /// refused on a protected value.
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
    pub(super) fn window(&mut self, window: &WindowDef, scope: &Scope<'_, 'a>) -> Result<()> {
        for item in &window.partition_clause {
            self.group_by(item, scope)?;
        }
        let none = Outputs::default();
        let mut sorts = window.order_clause.iter();
        sorts.try_for_each(|item| self.order_by(item, &[], &none, scope))
    }
}
