//! What the output columns of a query are, for the relations over it (a
//! subquery in FROM, a CTE, a set operation's arms, a view's definition
//! follows the same idea in [`super::views`]).
//!
//! An output is *exact* when it is a protected column as it is, a bare
//! column reference: comparing it with a value is comparing that column,
//! so the value is encrypted with its key. It is *derived* when it is
//! computed from protected values in any other way (a function, a cast,
//! an operator, an aggregate, a subquery reading a protected table):
//! a value compared with it would reach the server in plaintext and never
//! match, so such comparisons are refused. Other outputs are plain.
//!
//! Outputs are matched by name, and by position where that is what
//! PostgreSQL does: the arms of a `UNION`, `INTERSECT` or `EXCEPT`, and
//! column aliases (`AS s(a, b)`, `WITH s(a, b) AS`). A position holds an
//! exact column only if it does in every arm, with one key domain; a
//! protected value in any arm makes it derived. Where positions are not
//! known (a `*` in a select list) or a derived output's name is not,
//! every output whose name is not listed is taken to be derived.
//!
//! An output without `AS` is named as PostgreSQL names it
//! (`FigureColname` in `parse_target.c`): `lower(email)` is `lower`,
//! `email::text` is `email`, `CASE ... ELSE email END` is `email`.

use pg_query::protobuf::{MinMaxOp, Node, SelectStmt, SetOperation, SubLinkType};

use pg_query::protobuf::node::Node as NodeEnum;

use super::columns::ColumnRefId;
use super::names::string;
use super::objects::View;
use super::refusal::Reason;
use crate::protect::policy::{ColumnPolicy, Encryption};

/// Where the values of a derived column come from, for its refusal.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin<'a> {
    /// A column a view computes from a protected table.
    View(&'a View),
    /// A computation on this protected column.
    Column(&'a ColumnPolicy),
    /// A subquery reading this protected column's table.
    Table(&'a ColumnPolicy),
}

impl Origin<'_> {
    /// The refusal of comparing the derived column `column` (as the
    /// statement names it) with a value.
    pub(super) fn refusal(self, column: &[String]) -> Reason {
        let table = |c: &ColumnPolicy| format!("{}.{}", c.schema, c.table);
        match self {
            Origin::View(view) => Reason::DerivedViewColumn {
                column: column.last().cloned().unwrap_or_default(),
                view: view.qualified(),
                table: view.table().to_owned(),
            },
            Origin::Column(c) => Reason::DerivedColumn {
                column: column.join("."),
                origin: format!("column {}", ColumnRefId::from(c)),
            },
            Origin::Table(c) => Reason::DerivedColumn {
                column: column.join("."),
                origin: format!("table {}", table(c)),
            },
        }
    }
}

/// What one column of a relation or of a query's output is.
#[derive(Clone, Copy, Debug)]
pub(super) enum Output<'a> {
    Exact(&'a ColumnPolicy),
    Derived(Origin<'a>),
    Plain,
}

impl<'a> Output<'a> {
    fn origin(self) -> Option<Origin<'a>> {
        match self {
            Output::Exact(c) => Some(Origin::Column(c)),
            Output::Derived(origin) => Some(origin),
            Output::Plain => None,
        }
    }
}

/// The output columns of a query.
#[derive(Clone, Debug, Default)]
pub(super) struct Outputs<'a> {
    /// By name, in order.
    pub columns: Vec<(String, Output<'a>)>,
    /// `columns` holds every output at its position (no `*`).
    pub positional: bool,
    /// Every output not named in `columns` is derived from this.
    pub rest: Option<Origin<'a>>,
}

impl<'a> Outputs<'a> {
    /// No outputs yet, at known positions.
    pub(super) fn new() -> Self {
        Outputs {
            positional: true,
            ..Outputs::default()
        }
    }

    /// The exact output named `name`.
    pub(super) fn exact(&self, name: &str) -> Option<&'a ColumnPolicy> {
        self.columns.iter().find_map(|(n, output)| match output {
            Output::Exact(c) if n == name => Some(*c),
            _ => None,
        })
    }

    /// The first output, with its name, which `x IN (SELECT ...)`
    /// compares `x` with; derived when its position is not known.
    pub(super) fn compared(&self) -> (String, Output<'a>) {
        match (self.positional, self.columns.first()) {
            (true, Some((name, output))) => (name.clone(), *output),
            _ => (
                UNNAMED.to_owned(),
                self.origin().map_or(Output::Plain, Output::Derived),
            ),
        }
    }

    /// Where the first protected or derived value among the outputs
    /// comes from.
    pub(super) fn origin(&self) -> Option<Origin<'a>> {
        let listed = self.columns.iter().find_map(|(_, output)| output.origin());
        listed.or(self.rest)
    }

    /// Adds an output whose name may not be known: a derived output of
    /// an unknown name makes every unlisted output derived.
    pub(super) fn push(&mut self, name: Option<String>, output: Output<'a>) {
        if let (None, Output::Derived(origin)) = (&name, output) {
            self.rest = self.rest.or(Some(origin));
        }
        let name = name.unwrap_or_else(|| UNNAMED.to_owned());
        self.columns.push((name, output));
    }

    /// Adds the outputs of a `*`: positions are no longer known.
    pub(super) fn append(&mut self, star: Outputs<'a>) {
        self.columns.extend(star.columns);
        self.positional = false;
        self.rest = self.rest.or(star.rest);
    }

    /// The outputs renamed by column aliases, position by position.
    pub(super) fn aliased(mut self, names: &[Node]) -> Self {
        if names.is_empty() {
            return self;
        }
        if !self.positional {
            return Outputs {
                rest: self.origin(),
                ..Outputs::default()
            };
        }
        let names = names.iter().filter_map(string);
        for ((name, _), alias) in self.columns.iter_mut().zip(names) {
            alias.clone_into(name);
        }
        self
    }

    /// The outputs of a set operation over arms with these outputs: named
    /// by the first, and matched by position.
    pub(super) fn combined(arms: Vec<Outputs<'a>>) -> Self {
        let mut arms = arms.into_iter();
        let Some(mut first) = arms.next() else {
            return Outputs::new();
        };
        for arm in arms {
            let aligned = first.positional
                && arm.positional
                && arm.columns.len() == first.columns.len()
                && arm.rest.is_none();
            if !aligned {
                let origin = first.origin().or(arm.origin());
                return Outputs {
                    rest: origin,
                    ..Outputs::default()
                };
            }
            for ((_, output), (_, other)) in first.columns.iter_mut().zip(arm.columns) {
                *output = combine(*output, other);
            }
        }
        first
    }
}

/// The name PostgreSQL gives an output it cannot name.
const UNNAMED: &str = "?column?";

/// One position of two arms of a set operation: exact only if both are
/// the same column, or columns whose values compare under one key.
fn combine<'a>(left: Output<'a>, right: Output<'a>) -> Output<'a> {
    match (left, right) {
        (Output::Exact(a), Output::Exact(b))
            if a == b
                || (a.domain == b.domain
                    && a.encryption == Encryption::Deterministic
                    && b.encryption == Encryption::Deterministic) =>
        {
            Output::Exact(a)
        }
        _ => left
            .origin()
            .or(right.origin())
            .map_or(Output::Plain, Output::Derived),
    }
}

/// The name PostgreSQL gives an output column written without `AS`, as
/// `FigureColname` does; `None` for an expression whose name this does
/// not know.
pub(super) fn output_name(value: &Node) -> Option<String> {
    let (_, name) = figure(value)?;
    Some(name.unwrap_or_else(|| UNNAMED.to_owned()))
}

/// A name found, and how strong: 2 a real name, 1 a type's or `case`.
type Figured = (u8, Option<String>);

/// `FigureColnameInternal`: `None` when unsure, `(0, None)` for
/// `?column?`.
fn figure(node: &Node) -> Option<Figured> {
    let named = |name: &str| Some((2, Some(name.to_owned())));
    let Some(inner) = &node.node else {
        return Some((0, None));
    };
    match inner {
        NodeEnum::ColumnRef(c) => match c.fields.iter().filter_map(string).next_back() {
            Some(name) => named(name),
            None => Some((0, None)),
        },
        NodeEnum::AIndirection(i) => match i.indirection.iter().filter_map(string).next_back() {
            Some(name) => named(name),
            None => figure(i.arg.as_deref()?),
        },
        NodeEnum::FuncCall(f) => named(f.funcname.last().and_then(string)?),
        NodeEnum::AExpr(e) if e.kind() == pg_query::protobuf::AExprKind::AexprNullif => {
            named("nullif")
        }
        NodeEnum::TypeCast(cast) => {
            let arg = figure(cast.arg.as_deref()?)?;
            if arg.0 == 2 {
                return Some(arg);
            }
            let type_name = cast.type_name.as_ref()?.names.last().and_then(string)?;
            Some((1, Some(type_name.to_owned())))
        }
        NodeEnum::CollateClause(c) => figure(c.arg.as_deref()?),
        NodeEnum::GroupingFunc(_) => named("grouping"),
        NodeEnum::SubLink(link) => match link.sub_link_type() {
            SubLinkType::ExistsSublink => named("exists"),
            SubLinkType::ArraySublink => named("array"),
            SubLinkType::ExprSublink => match link.subselect.as_deref()?.node.as_ref()? {
                NodeEnum::SelectStmt(select) => first_output_name(select).map(|n| (2, Some(n))),
                _ => None,
            },
            _ => Some((0, None)),
        },
        NodeEnum::CaseExpr(case) => {
            let default = match case.defresult.as_deref() {
                Some(result) => figure(result)?,
                None => (0, None),
            };
            if default.0 == 2 {
                Some(default)
            } else {
                Some((1, Some("case".to_owned())))
            }
        }
        NodeEnum::AArrayExpr(_) => named("array"),
        NodeEnum::RowExpr(_) => named("row"),
        NodeEnum::CoalesceExpr(_) => named("coalesce"),
        NodeEnum::MinMaxExpr(m) if m.op() == MinMaxOp::IsGreatest => named("greatest"),
        NodeEnum::MinMaxExpr(_) => named("least"),
        NodeEnum::AConst(_)
        | NodeEnum::ParamRef(_)
        | NodeEnum::AExpr(_)
        | NodeEnum::BoolExpr(_)
        | NodeEnum::NullTest(_)
        | NodeEnum::BooleanTest(_) => Some((0, None)),
        _ => None,
    }
}

/// The name of a query's first output (its left arm's, for a set
/// operation), as an EXPR sublink takes it.
fn first_output_name(select: &SelectStmt) -> Option<String> {
    if !matches!(
        select.op(),
        SetOperation::SetopNone | SetOperation::Undefined
    ) {
        return first_output_name(select.larg.as_deref()?);
    }
    match select.target_list.first()?.node.as_ref()? {
        NodeEnum::ResTarget(res) if !res.name.is_empty() => Some(res.name.clone()),
        NodeEnum::ResTarget(res) => {
            let value = res.val.as_deref()?;
            match &value.node {
                Some(NodeEnum::ColumnRef(c)) if c.fields.last().and_then(string).is_none() => None,
                _ => output_name(value),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(expression: &str) -> Option<String> {
        let parsed = pg_query::parse(&format!("SELECT {expression}"), 0).unwrap();
        let raw = &parsed.protobuf.stmts[0];
        let Some(NodeEnum::SelectStmt(select)) = raw.stmt.as_ref().unwrap().node.as_ref() else {
            panic!("a SELECT");
        };
        let Some(NodeEnum::ResTarget(res)) = &select.target_list[0].node else {
            panic!("a target");
        };
        output_name(res.val.as_deref().unwrap())
    }

    #[test]
    fn outputs_are_named_as_postgresql_names_them() {
        for (expression, expected) in [
            ("c.email", Some("email")),
            ("lower(email)", Some("lower")),
            ("pg_catalog.upper(email)", Some("upper")),
            ("email::varchar(5)", Some("email")),
            ("'x'::text", Some("text")),
            ("(email || 'x')::text", Some("text")),
            ("CAST(email AS text) COLLATE \"C\"", Some("email")),
            ("CASE WHEN true THEN 'a' ELSE email END", Some("email")),
            ("CASE WHEN true THEN email END", Some("case")),
            ("NULLIF(email, 'x')", Some("nullif")),
            ("COALESCE(email, '')", Some("coalesce")),
            ("GREATEST(email, 'a')", Some("greatest")),
            ("LEAST(email, 'a')", Some("least")),
            ("ARRAY[email]", Some("array")),
            ("ROW(email)", Some("row")),
            ("(SELECT max(email) FROM customers)", Some("max")),
            ("(SELECT email AS e FROM customers LIMIT 1)", Some("e")),
            ("EXISTS (SELECT 1)", Some("exists")),
            ("email || 'x'", Some("?column?")),
            ("email = 'x'", Some("?column?")),
            ("(SELECT * FROM customers LIMIT 1)", None),
            ("XMLELEMENT(NAME a, email)", None),
        ] {
            assert_eq!(name(expression).as_deref(), expected, "{expression}");
        }
    }
}
