//! Comparisons of protected columns: with `=`, `<>`, `IN`, `IS DISTINCT
//! FROM`, `= ANY` to a value that is encrypted, a parameter, `NULL` or a
//! column of the same key domain; with a subquery's output; and the
//! operators refused on ciphertext.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{
    a_const, AConst, AExpr, AExprKind, ColumnRef, Node, SelectStmt, SubLinkType,
};

use super::analyzer::Analyzer;
use crate::protect::policy::{ColumnPolicy, Encryption};
use crate::sql::names::{column_fields, fields_of, string, uncast};
use crate::sql::outputs::Output;
use crate::sql::refusal::{Reason, Result};
use crate::sql::scope::Scope;

/// What a comparison operand or a written value is.
pub(super) enum Operand<'n, 'a> {
    /// A protected column, possibly cast.
    Protected(&'a ColumnPolicy),
    /// A string literal, possibly cast, with its text.
    Literal(&'n AConst, &'n str),
    /// `$n`, possibly cast.
    Param(usize),
    /// `NULL`, possibly cast.
    Null,
    /// Anything else.
    Other,
}

impl<'a> Analyzer<'a> {
    /// Refuses a comparison one of whose operands (possibly cast) is a
    /// derived column: of a view, subquery or CTE, computed from protected
    /// values.
    pub(super) fn not_derived<'n>(
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

    /// An operator expression (`=`, `IN`, `= ANY`, `LIKE`, ...): a
    /// protected column may be an operand only of an equality with a value
    /// it can be compared with.
    pub(super) fn comparison(
        &mut self,
        e: &AExpr,
        scope: &Scope<'_, 'a>,
        strict: bool,
    ) -> Result<()> {
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
    pub(super) fn equality(
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

    /// What an expression is, as an operand or a written value.
    pub(super) fn operand<'n>(&self, node: &'n Node, scope: &Scope<'_, 'a>) -> Operand<'n, 'a> {
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
    pub(super) fn protected_ref(
        &self,
        node: &Node,
        scope: &Scope<'_, 'a>,
    ) -> Option<&'a ColumnPolicy> {
        match self.operand(node, scope) {
            Operand::Protected(column) => Some(column),
            _ => None,
        }
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
pub(super) fn check_condition_column(column: &ColumnRef, scope: &Scope<'_, '_>) -> Result<()> {
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
pub(super) fn check_equality(column: &ColumnPolicy, other: Option<&ColumnPolicy>) -> Result<()> {
    if column.encryption == Encryption::Randomized {
        return Err(Reason::Randomized(column.into()));
    }
    match other {
        Some(other) if other.domain == column.domain => Ok(()),
        _ => Err(Reason::Incomparable(column.into())),
    }
}
