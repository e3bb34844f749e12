//! `INSERT`: the protected column each value goes to, `VALUES` rows, the
//! two `INSERT ... SELECT` shapes ORMs batch rows in, and `ON CONFLICT`.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{
    InsertStmt, Node, OnConflictClause, RangeFunction, RangeSubselect, RangeVar, ResTarget,
    SelectStmt, SetOperation,
};

use super::analyzer::Analyzer;
use crate::protect::policy::ColumnPolicy;
use crate::sql::names::{column_fields, star_target, string, table_name, uncast};
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::{Relation, Scope};

impl<'a> Analyzer<'a> {
    /// An `INSERT`: each value goes to its column.
    pub(super) fn insert(&mut self, s: &InsertStmt, parent: &Scope<'_, 'a>) -> Result<()> {
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
    pub(super) fn assignable(
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

    /// `ON CONFLICT`: its `SET` may also write `EXCLUDED.col` to `col`.
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

/// A bare `VALUES (...), (...)` list, as INSERT writes it.
fn is_plain_values(s: &SelectStmt) -> bool {
    !s.values_lists.is_empty() && s.from_clause.is_empty() && s.with_clause.is_none()
}
