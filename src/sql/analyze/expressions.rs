//! The walk over expressions: a value that is read, which may pass a
//! protected value through, and a condition, in which a protected column
//! may only be compared; subqueries in them.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{Node, SubLink, SubLinkType};
use pg_query::NodeRef;

use super::analyzer::Analyzer;
use super::comparisons::{check_condition_column, check_equality};
use crate::sql::computed::Check;
use crate::sql::names::{column_fields, string};
use crate::sql::outputs::{Origin, Output, Outputs};
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::Scope;

impl<'a> Analyzer<'a> {
    /// An expression whose result is read, not tested: protected columns
    /// may appear in it, but comparisons and subqueries in it are checked.
    ///
    /// A protected value passed through anything but a bare column
    /// reference (`COALESCE`, `CASE`, a cast, a window function, a scalar
    /// subquery) comes without the column in the result's description,
    /// which is what finds values stored unencrypted (`crate::read::shape`): it
    /// is refused while the column may hold such values.
    pub(super) fn value(&mut self, node: &Node, scope: &Scope<'_, 'a>) -> Result<()> {
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
    pub(super) fn carried(
        &mut self,
        node: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Result<Option<Origin<'a>>> {
        self.expr(node, scope, false)?;
        let (columns, sublinks) = (self.columns, &self.sublinks[..]);
        Check {
            scope,
            columns,
            sublinks,
        }
        .carried(node)
    }

    /// A condition, if there is one.
    pub(super) fn condition_opt(
        &mut self,
        node: Option<&Node>,
        scope: &Scope<'_, 'a>,
    ) -> Result<()> {
        node.map_or(Ok(()), |node| self.expr(node, scope, true))
    }

    /// Walks an expression. In a condition (`strict`), a protected column
    /// may appear only as an operand of a comparison this module handles.
    pub(super) fn expr(&mut self, node: &Node, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
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

    /// [`Self::expr`] of an expression, if there is one.
    fn expr_opt(&mut self, node: Option<&Node>, scope: &Scope<'_, 'a>, strict: bool) -> Result<()> {
        node.map_or(Ok(()), |node| self.expr(node, scope, strict))
    }

    /// [`Self::expr`] of each expression.
    pub(super) fn exprs<'n>(
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
    pub(super) fn unknown(
        &self,
        node: &NodeEnum,
        scope: &Scope<'_, 'a>,
        strict: bool,
    ) -> Result<()> {
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
