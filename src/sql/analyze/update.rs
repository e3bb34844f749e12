//! `UPDATE` and `DELETE`, the `SET` list of `UPDATE` and `ON CONFLICT DO
//! UPDATE`, and `RETURNING`.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{DeleteStmt, Node, ReturningClause, UpdateStmt};

use super::analyzer::Analyzer;
use crate::sql::names::{column_fields, table_name};
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::Scope;

impl<'a> Analyzer<'a> {
    /// An `UPDATE`: each value of its `SET` goes to its column.
    pub(super) fn update(&mut self, s: &UpdateStmt, parent: &Scope<'_, 'a>) -> Result<()> {
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
    pub(super) fn set_clause(
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

    /// A `DELETE`.
    pub(super) fn delete(&mut self, s: &DeleteStmt, parent: &Scope<'_, 'a>) -> Result<()> {
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

    /// The values of a `RETURNING` list, which are read.
    pub(super) fn returning(
        &mut self,
        returning: Option<&ReturningClause>,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        for expr in returning.into_iter().flat_map(|r| &r.exprs) {
            self.value(expr, scope)?;
        }
        Ok(())
    }
}

/// `EXCLUDED.column` in ON CONFLICT DO UPDATE.
fn is_excluded(node: &Node, column: &str) -> bool {
    column_fields(node).is_some_and(|f| f.len() == 2 && f[0] == "excluded" && f[1] == column)
}
