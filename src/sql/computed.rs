//! Values computed on protected columns, where a statement reads them.
//!
//! The server holds only a protected column's ciphertext, so any
//! expression that computes on its stored value (`upper(email)`,
//! `length(email)`, `email || ''`, `md5(email)`, `to_jsonb(email)`,
//! `string_agg(email, ',')`, `ARRAY[email]`, `row(email)`, a whole row
//! `c` or `to_jsonb(c)`, `email::bytea`, `email::varchar(5)`, `(c).email`,
//! `GREATEST(email, 'a')`, `min(email)`, `max(email)`) returns transformed
//! ciphertext, or ciphertext inside a value pgveil does not look into, as
//! if it were data. Wherever a statement reads a value (a select list,
//! `RETURNING`, `VALUES`, `GROUP BY`, `ORDER BY`, the value of an
//! `UPDATE ... SET` or `INSERT` to another column, at any depth of
//! subqueries and CTEs, `COPY (query) TO`), such an expression is
//! refused, naming the construct and the protected column.
//!
//! An expression *passes a value through* when its result is a protected
//! column's stored value as it is, which pgveil recognizes in the result
//! and reveals to each reader as the policy says: the column itself
//! (possibly renamed), a cast to a text type that cannot change it
//! (`::text`, `::varchar` or `::bpchar` without a length, `::citext`; for
//! a `bytea` column only `::bytea`), `COLLATE`, `COALESCE`, the results
//! of `CASE` (its conditions are conditions), the first argument of
//! `NULLIF` (its second is compared, and encrypted), a scalar subquery
//! that outputs one, and the values window functions return unchanged
//! (`lag`, `lead` and their default, `first_value`, `last_value`,
//! `nth_value`). A value computed from one without being passed through
//! is not one: `count(email)`, `count(DISTINCT email)` (deterministic
//! columns only), `email IS NULL` and comparisons the analyzer handles
//! (`=`, `<>`, `IN`, `IS DISTINCT FROM`, `= ANY`; ranges and `LIKE` are
//! refused there).
//!
//! `min` and `max` return a stored ciphertext, which pgveil would reveal,
//! but choose it by the order of ciphertexts: like `ORDER BY`, they would
//! silently give a wrong answer, and are refused. Aggregates' `ORDER BY`
//! and `WITHIN GROUP (ORDER BY ...)` on a protected column are refused as
//! `ORDER BY` is.
//!
//! Values pgveil cannot reveal nested in a row, array or JSON result
//! (`row(email)`, `ARRAY[email]`, `array_agg(email)`, `jsonb_agg(email)`,
//! `to_jsonb(c)`) are refused rather than handed to a reader as
//! ciphertext. Columns derived from protected values (of a subquery, a
//! CTE, a view, see [`super::outputs`]) are taken to hold one: computing
//! on them is refused too.

use pg_query::protobuf::{
    a_const, AExpr, AExprKind, ColumnRef, FuncCall, MinMaxOp, Node, RangeFunction, SubLink,
    SubLinkType, TypeName,
};

use pg_query::protobuf::node::Node as NodeEnum;

use super::columns::{ColumnRefId, Columns, Storage};
use super::names::{fields_of, string, uncast};
use super::outputs::{Origin, Output};
use super::refusal::{Reason, Result};
use super::scope::{Relation, Scope};
use super::targets::storage;
use crate::protect::policy::Encryption;

/// What an expression returns of a protected column's stored value.
#[derive(Clone, Copy)]
enum Carried<'a> {
    /// A value as it is stored, or derived from one.
    Value(Origin<'a>),
    /// The whole row of the relation named so, holding one.
    Row(Origin<'a>),
}

impl<'a> Carried<'a> {
    fn origin(self) -> Origin<'a> {
        match self {
            Carried::Value(origin) | Carried::Row(origin) => origin,
        }
    }
}

/// The refusal of computing `construct` on a value from `origin`.
pub(super) fn computing(construct: impl Into<String>, origin: Origin<'_>) -> Reason {
    let origin = match origin {
        Origin::Column(c) => format!("protected column {}", ColumnRefId::from(c)),
        Origin::Table(c) => format!("a value of protected table {}.{}", c.schema, c.table),
        Origin::View(view) => format!(
            "a column of view {} computed from protected table {}",
            view.qualified(),
            view.table()
        ),
    };
    Reason::ComputedValue {
        construct: construct.into(),
        origin,
    }
}

/// Checks the values an expression computes, in a scope.
pub(super) struct Check<'x, 's, 'a> {
    pub scope: &'x Scope<'s, 'a>,
    pub columns: &'a dyn Columns,
    /// The output each subquery in an expression, by its location, was
    /// found to compare or return by the analyzer's walk.
    pub sublinks: &'x [(i32, Output<'a>)],
}

impl<'a> Check<'_, '_, 'a> {
    /// What protected value an expression that is read returns as it is
    /// stored, if any; refuses one that computes on a protected value.
    pub(super) fn carried(&self, node: &Node) -> Result<Option<Origin<'a>>> {
        match self.carry(node)? {
            Some(Carried::Row(origin)) => Err(computing("a whole-row value", origin)),
            carried => Ok(carried.map(Carried::origin)),
        }
    }

    /// Refuses a function in FROM computing on a protected value.
    pub(super) fn function_in_from(&self, function: &RangeFunction) -> Result<()> {
        for item in &function.functions {
            let Some(NodeEnum::List(list)) = &item.node else {
                continue;
            };
            if let Some(carried) = self.opt(list.items.first())? {
                return Err(computing("a function in FROM", carried.origin()));
            }
        }
        Ok(())
    }

    fn carry(&self, node: &Node) -> Result<Option<Carried<'a>>> {
        let Some(inner) = &node.node else {
            return Ok(None);
        };
        match inner {
            NodeEnum::ColumnRef(column) => Ok(self.read(column)),
            NodeEnum::TypeCast(cast) => {
                let carried = self.opt(cast.arg.as_deref())?;
                match (carried, cast.type_name.as_ref()) {
                    (Some(Carried::Value(origin)), Some(t)) if self.identity(t, origin) => {
                        Ok(carried)
                    }
                    (Some(carried), t) => {
                        let name = t.map_or_else(|| "a type".to_owned(), type_name);
                        Err(computing(format!("a cast to {name}"), carried.origin()))
                    }
                    (None, _) => Ok(None),
                }
            }
            NodeEnum::CollateClause(c) => self.opt(c.arg.as_deref()),
            NodeEnum::NamedArgExpr(a) => self.opt(a.arg.as_deref()),
            NodeEnum::ResTarget(r) => self.opt(r.val.as_deref()),
            NodeEnum::CoalesceExpr(e) => self.first(&e.args),
            NodeEnum::List(l) => self.first(&l.items),
            NodeEnum::CaseExpr(e) => {
                // `CASE x WHEN v`: compares x with each v, which the
                // analyzer encrypts for a protected column as it is.
                if let Some(arg) = e.arg.as_deref() {
                    if let Some(carried) = self.compared(arg)? {
                        return Err(computing("CASE ... WHEN", carried.origin()));
                    }
                }
                let results = e.args.iter().filter_map(|w| match &w.node {
                    Some(NodeEnum::CaseWhen(w)) => w.result.as_deref(),
                    _ => None,
                });
                let mut carried = None;
                for result in results.chain(e.defresult.as_deref()) {
                    carried = carried.or(self.carry(result)?);
                }
                Ok(carried)
            }
            NodeEnum::AExpr(e) => self.operator(e),
            NodeEnum::BoolExpr(e) => {
                let construct =
                    ["AND", "OR", "NOT"].get(usize::try_from(e.boolop - 1).unwrap_or(0));
                self.none_in(&e.args, construct.copied().unwrap_or("AND"))
            }
            NodeEnum::NullTest(t) => self.opt(t.arg.as_deref()).map(|_| None),
            NodeEnum::BooleanTest(t) => self.none_in(t.arg.as_deref(), "IS TRUE"),
            NodeEnum::SubLink(link) => self.subquery(link),
            NodeEnum::FuncCall(f) => self.call(f),
            NodeEnum::RowExpr(r) => self.none_in(&r.args, "a row constructor"),
            NodeEnum::AArrayExpr(a) => self.none_in(&a.elements, "an ARRAY constructor"),
            NodeEnum::MinMaxExpr(m) if m.op() == MinMaxOp::IsGreatest => {
                self.none_in(&m.args, "GREATEST()")
            }
            NodeEnum::MinMaxExpr(m) => self.none_in(&m.args, "LEAST()"),
            NodeEnum::AIndirection(i) => {
                let construct = match i.indirection.first().and_then(|n| n.node.as_ref()) {
                    Some(NodeEnum::AIndices(_)) => "a subscript",
                    _ => "a field selection",
                };
                self.none_in(i.arg.as_deref(), construct)?;
                for index in &i.indirection {
                    if let Some(NodeEnum::AIndices(ix)) = &index.node {
                        self.none_in(ix.lidx.as_deref(), "a subscript")?;
                        self.none_in(ix.uidx.as_deref(), "a subscript")?;
                    }
                }
                Ok(None)
            }
            NodeEnum::AConst(_)
            | NodeEnum::ParamRef(_)
            | NodeEnum::SqlvalueFunction(_)
            | NodeEnum::SetToDefault(_)
            | NodeEnum::AStar(_)
            | NodeEnum::GroupingFunc(_) => Ok(None),
            NodeEnum::SortBy(sort) => self.none_in(sort.node.as_deref(), "ORDER BY"),
            NodeEnum::GroupingSet(set) => self.first(&set.content),
            NodeEnum::XmlExpr(x) => {
                let args = x.args.iter().chain(&x.named_args);
                self.none_in(args, "an XML function")
            }
            NodeEnum::XmlSerialize(x) => self.none_in(x.expr.as_deref(), "XMLSERIALIZE"),
            // Anything else (the JSON constructors of PostgreSQL 16 and
            // later, ...): pgveil cannot see into it, so fails closed.
            other => {
                let row = |r: &Relation<'a>| r.outputs().origin();
                Err(match self.scope.visible().find_map(row) {
                    Some(origin) => computing(construct_of(other), origin),
                    None => Reason::ComputedValue {
                        construct: construct_of(other).to_owned(),
                        origin: "values of protected tables".to_owned(),
                    },
                })
            }
        }
    }

    fn opt(&self, node: Option<&Node>) -> Result<Option<Carried<'a>>> {
        node.map_or(Ok(None), |node| self.carry(node))
    }

    /// The first value passed through among `nodes`, all checked.
    fn first(&self, nodes: &[Node]) -> Result<Option<Carried<'a>>> {
        let mut carried = None;
        for node in nodes {
            carried = carried.or(self.carry(node)?);
        }
        Ok(carried)
    }

    /// Refuses `construct` on any protected value among `nodes`; its own
    /// result passes none through.
    fn none_in<'n>(
        &self,
        nodes: impl IntoIterator<Item = &'n Node>,
        construct: &str,
    ) -> Result<Option<Carried<'a>>> {
        for node in nodes {
            if let Some(carried) = self.carry(node)? {
                return Err(computing(construct, carried.origin()));
            }
        }
        Ok(None)
    }

    /// An operand of a comparison the analyzer handles: a protected
    /// column as it is (possibly cast), or a subquery, is its business;
    /// anything else passing a protected value through, or a whole row,
    /// is returned.
    fn compared(&self, operand: &Node) -> Result<Option<Carried<'a>>> {
        let bare = uncast(operand);
        match &bare.node {
            Some(NodeEnum::ColumnRef(column)) => match self.read(column) {
                Some(Carried::Value(Origin::Column(_))) => Ok(None),
                carried => Ok(carried),
            },
            Some(NodeEnum::SubLink(link))
                if matches!(
                    link.sub_link_type(),
                    SubLinkType::ExprSublink | SubLinkType::ArraySublink
                ) =>
            {
                Ok(None)
            }
            _ => self.carry(operand),
        }
    }

    fn operator(&self, e: &AExpr) -> Result<Option<Carried<'a>>> {
        let operator = e.name.iter().filter_map(string).next_back().unwrap_or("");
        let mut operands: Vec<&Node> = e.lexpr.as_deref().into_iter().collect();
        match e.rexpr.as_deref() {
            Some(Node {
                node: Some(NodeEnum::List(list)),
            }) => operands.extend(&list.items),
            right => operands.extend(right),
        }
        let kind = e.kind();
        if kind == AExprKind::AexprNullif {
            if let Some(right) = e.rexpr.as_deref() {
                if let Some(carried) = self.compared(right)? {
                    return Err(computing("NULLIF()", carried.origin()));
                }
            }
            return self.opt(e.lexpr.as_deref());
        }
        let handled = match kind {
            AExprKind::AexprOp => matches!(
                operator,
                "=" | "<>" | "<" | ">" | "<=" | ">=" | "~~" | "~~*" | "!~~" | "!~~*"
            ),
            AExprKind::AexprOpAny | AExprKind::AexprOpAll => matches!(operator, "=" | "<>"),
            _ => true,
        };
        let construct = match kind {
            AExprKind::AexprOpAny => format!("operator {operator} ANY"),
            AExprKind::AexprOpAll => format!("operator {operator} ALL"),
            AExprKind::AexprOp => format!("operator {operator}"),
            _ => "a comparison".to_owned(),
        };
        for operand in operands {
            let carried = match handled {
                true => self.compared(operand)?,
                false => self.carry(operand)?,
            };
            if let Some(carried) = carried {
                return Err(computing(construct, carried.origin()));
            }
        }
        Ok(None)
    }

    fn subquery(&self, link: &SubLink) -> Result<Option<Carried<'a>>> {
        let output = self
            .sublinks
            .iter()
            .rev()
            .find(|(location, _)| *location == link.location)
            .map(|(_, output)| *output);
        let carried = match output {
            Some(Output::Exact(column)) => Some(Carried::Value(Origin::Column(column))),
            Some(Output::Derived(origin)) => Some(Carried::Value(origin)),
            _ => None,
        };
        match link.sub_link_type() {
            SubLinkType::ExprSublink => Ok(carried),
            SubLinkType::ArraySublink => match carried {
                Some(carried) => Err(computing("ARRAY(subquery)", carried.origin())),
                None => Ok(None),
            },
            SubLinkType::ExistsSublink => Ok(None),
            _ => match link
                .testexpr
                .as_deref()
                .map(|t| self.compared(t))
                .transpose()?
            {
                Some(Some(carried)) => Err(computing("a subquery comparison", carried.origin())),
                _ => Ok(None),
            },
        }
    }

    fn call(&self, f: &FuncCall) -> Result<Option<Carried<'a>>> {
        let names: Vec<&str> = f.funcname.iter().filter_map(string).collect();
        let name = names.last().copied().unwrap_or("").to_owned();
        let builtin = names.len() == 1 || names.first() == Some(&"pg_catalog");
        let construct = format!("{name}()");
        for item in &f.agg_order {
            let Some(NodeEnum::SortBy(sort)) = &item.node else {
                continue;
            };
            match self.opt(sort.node.as_deref())? {
                Some(Carried::Value(Origin::Column(c))) => {
                    return Err(Reason::NotSearchable(c.into()))
                }
                Some(carried) => {
                    return Err(computing(
                        format!("ORDER BY in {construct}"),
                        carried.origin(),
                    ))
                }
                None => {}
            }
        }
        if builtin && name == "count" {
            // Counted, not returned; DISTINCT compares the values.
            for arg in &f.args {
                match self.carry(arg)? {
                    Some(Carried::Value(Origin::Column(c)))
                        if f.agg_distinct && c.encryption == Encryption::Randomized =>
                    {
                        return Err(Reason::Randomized(c.into()))
                    }
                    Some(carried) if f.agg_distinct && !is_protected(carried) => {
                        return Err(computing("count(DISTINCT ...)", carried.origin()))
                    }
                    _ => {}
                }
            }
            return Ok(None);
        }
        // Window functions that return a value of their argument as it is.
        let passed: &[usize] = match name.as_str() {
            _ if !builtin || f.over.is_none() => &[],
            "lag" | "lead" => &[0, 2],
            "first_value" | "last_value" | "nth_value" => &[0],
            _ => &[],
        };
        let mut carried = None;
        for (i, arg) in f.args.iter().enumerate() {
            match self.carry(arg)? {
                Some(Carried::Value(origin)) if passed.contains(&i) => {
                    carried = carried.or(Some(Carried::Value(origin)));
                }
                Some(other) => return Err(computing(construct, other.origin())),
                None => {}
            }
        }
        Ok(carried)
    }

    /// What a column reference reads: a protected or derived column, or
    /// a whole row (`c`, `c.*`) holding one.
    fn read(&self, column: &ColumnRef) -> Option<Carried<'a>> {
        let fields = fields_of(column);
        let star = matches!(
            column.fields.last().and_then(|f| f.node.as_ref()),
            Some(NodeEnum::AStar(_))
        );
        if !star {
            if let Some(policy) = self.scope.resolve(&fields) {
                return Some(Carried::Value(Origin::Column(policy)));
            }
            if let Some(origin) = self.scope.derived(&fields) {
                return Some(Carried::Value(origin));
            }
        }
        let row = |r: &Relation<'a>| r.outputs().origin();
        let origin = match fields.as_slice() {
            [] if star => self.scope.visible().find_map(row),
            [table] => self
                .scope
                .visible()
                .filter(|r| r.name == *table)
                .find_map(row),
            _ => None,
        };
        origin.map(Carried::Row)
    }

    /// Whether a cast to `target` leaves a value from `origin` as it is.
    fn identity(&self, target: &TypeName, origin: Origin<'a>) -> bool {
        if !target.typmods.is_empty() || !target.array_bounds.is_empty() || target.pct_type {
            return false;
        }
        let names: Vec<&str> = target.names.iter().filter_map(string).collect();
        let (schema, name) = match names.as_slice() {
            [name] => ("pg_catalog", *name),
            [schema, name] => (*schema, *name),
            _ => return false,
        };
        let stored = match origin {
            Origin::Column(c) => storage(self.columns, c).unwrap_or(Storage::Text),
            _ => Storage::Text,
        };
        match stored {
            Storage::Text if schema == "pg_catalog" => {
                matches!(name, "text" | "varchar" | "bpchar" | "citext")
            }
            Storage::Text => name == "citext",
            Storage::Bytea => schema == "pg_catalog" && name == "bytea",
        }
    }
}

/// A type as a refusal names it: `varchar(5)`, `bytea`, `text[]`.
fn type_name(target: &TypeName) -> String {
    let mut name = target
        .names
        .iter()
        .filter_map(string)
        .next_back()
        .unwrap_or("a type")
        .to_owned();
    if name == "bpchar" && !target.typmods.is_empty() {
        "char".clone_into(&mut name);
    }
    let modifiers: Vec<String> = target
        .typmods
        .iter()
        .filter_map(|m| match &m.node {
            Some(NodeEnum::AConst(c)) => match &c.val {
                Some(a_const::Val::Ival(i)) => Some(i.ival.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if !modifiers.is_empty() {
        name = format!("{name}({})", modifiers.join(", "));
    }
    name + &"[]".repeat(target.array_bounds.len())
}

/// What a refusal calls an expression this module does not know.
fn construct_of(node: &NodeEnum) -> &'static str {
    match node {
        NodeEnum::JsonObjectConstructor(_)
        | NodeEnum::JsonArrayConstructor(_)
        | NodeEnum::JsonArrayQueryConstructor(_)
        | NodeEnum::JsonObjectAgg(_)
        | NodeEnum::JsonArrayAgg(_)
        | NodeEnum::JsonFuncExpr(_)
        | NodeEnum::JsonParseExpr(_)
        | NodeEnum::JsonScalarExpr(_)
        | NodeEnum::JsonSerializeExpr(_)
        | NodeEnum::JsonIsPredicate(_)
        | NodeEnum::JsonValueExpr(_) => "a JSON function",
        _ => "an expression pgveil cannot follow",
    }
}

/// A protected column's value as it is stored.
fn is_protected(carried: Carried<'_>) -> bool {
    matches!(carried, Carried::Value(Origin::Column(_)))
}
