//! What the columns of a view over protected tables are, from its
//! definition as `pg_get_viewdef` prints it.
//!
//! A view column is *exact* when it is a column reference, without a cast
//! or any computation, to a protected column of a table in the view's FROM
//! (or to an exact column of a view read earlier): comparing it with a
//! value is comparing that protected column, so the value is encrypted
//! with its key. A column whose expression may involve protected values in
//! any other way (`lower(email)`, `email::varchar(20)`, a subquery, a
//! column of a relation whose columns are unknown) is *derived*: a value
//! compared with it would reach the server in plaintext and never match,
//! so such comparisons are refused. Other columns are plain.
//!
//! A definition this module cannot follow (a set operation, a CTE, a
//! subquery or function in FROM, column aliases, a parse failure) makes
//! every column of the view derived.

use pg_query::protobuf::{ColumnRef, JoinExpr, Node, RangeVar, SelectStmt, SetOperation};

use pg_query::protobuf::node::Node as NodeEnum;

use super::columns::ColumnRefId;
use super::names::table_name;
use crate::protect::policy::Policy;

/// The exact and derived columns of a view.
#[derive(Debug)]
pub(super) struct ViewColumns {
    /// By the view's column name, the protected column each one is.
    pub exact: Vec<(String, ColumnRefId)>,
    pub derived: Derived,
}

/// The views a view's definition may read, known before it (the session's
/// `ServerObjects`, as they are gathered).
pub(super) trait KnownViews {
    /// The columns of the view a table reference (`schema` empty when
    /// unqualified) may name, if it names one.
    fn view_columns(&self, schema: &str, name: &str) -> Option<&ViewColumns>;
}

/// The derived columns of a view.
#[derive(Debug)]
pub(super) enum Derived {
    Columns(Vec<String>),
    /// The definition could not be followed: every column.
    All,
}

/// The columns of a view with this definition, reading the views it reads
/// from `known`.
pub(super) fn columns(
    definition: Option<&str>,
    policy: &Policy,
    known: &dyn KnownViews,
) -> ViewColumns {
    definition
        .and_then(|sql| classify(sql, policy, known))
        .unwrap_or(ViewColumns {
            exact: Vec::new(),
            derived: Derived::All,
        })
}

/// What a column of a relation in the view's FROM is.
#[derive(Clone)]
enum Source {
    Exact(ColumnRefId),
    Derived,
}

/// A relation in the view's FROM.
struct Relation {
    /// The alias, or the table or view name.
    name: String,
    columns: Vec<(String, Source)>,
    /// Its columns are not known (a view that could not be followed).
    opaque: bool,
}

/// What a column reference in the view's definition is.
enum Lookup {
    Found(Source),
    /// It may be a column of an opaque relation.
    Unknown,
    Plain,
}

fn classify(sql: &str, policy: &Policy, known: &dyn KnownViews) -> Option<ViewColumns> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let Some(NodeEnum::SelectStmt(select)) = raw.stmt.as_ref()?.node.as_ref() else {
        return None;
    };
    if !is_simple(select) {
        return None;
    }
    let mut relations = Vec::new();
    for item in &select.from_clause {
        from_item(item, policy, known, &mut relations)?;
    }
    let mut exact = Vec::new();
    let mut derived = Vec::new();
    for target in &select.target_list {
        let Some(NodeEnum::ResTarget(res)) = &target.node else {
            return None;
        };
        let value = res.val.as_deref()?;
        let (name, lookup) = match &value.node {
            Some(NodeEnum::ColumnRef(column)) => {
                let fields = fields(column)?;
                let name = match res.name.as_str() {
                    "" => fields.last()?.clone(),
                    name => name.to_owned(),
                };
                (name, resolve(&fields, &relations))
            }
            _ if res.name.is_empty() => return None,
            _ => (res.name.clone(), computed(value, &relations)),
        };
        match lookup {
            Lookup::Found(Source::Exact(column)) => exact.push((name, column)),
            Lookup::Found(Source::Derived) | Lookup::Unknown => derived.push(name),
            Lookup::Plain => {}
        }
    }
    Some(ViewColumns {
        exact,
        derived: Derived::Columns(derived),
    })
}

/// A plain SELECT: no set operation, CTE or VALUES.
fn is_simple(select: &SelectStmt) -> bool {
    matches!(
        select.op(),
        SetOperation::SetopNone | SetOperation::Undefined
    ) && select.with_clause.is_none()
        && select.values_lists.is_empty()
}

/// Adds the relations of a FROM item; `None` if it cannot be followed.
fn from_item(
    item: &Node,
    policy: &Policy,
    known: &dyn KnownViews,
    relations: &mut Vec<Relation>,
) -> Option<()> {
    match item.node.as_ref()? {
        NodeEnum::RangeVar(range) => relations.push(range_var(range, policy, known)?),
        NodeEnum::JoinExpr(join) => join_expr(join, policy, known, relations)?,
        _ => return None,
    }
    Some(())
}

fn join_expr(
    join: &JoinExpr,
    policy: &Policy,
    known: &dyn KnownViews,
    relations: &mut Vec<Relation>,
) -> Option<()> {
    if join.alias.is_some() {
        return None;
    }
    for side in [&join.larg, &join.rarg] {
        from_item(side.as_deref()?, policy, known, relations)?;
    }
    Some(())
}

fn range_var(range: &RangeVar, policy: &Policy, known: &dyn KnownViews) -> Option<Relation> {
    let alias = range.alias.as_ref();
    if alias.is_some_and(|a| !a.colnames.is_empty()) {
        return None;
    }
    let name = alias.map_or(&range.relname, |a| &a.aliasname).clone();
    let (schema, table) = table_name(range, policy);
    let mut relation = Relation {
        name,
        columns: policy
            .columns_of(schema, &table)
            .map(|c| (c.column.clone(), Source::Exact(c.into())))
            .collect(),
        opaque: false,
    };
    if let Some(columns) = known.view_columns(&range.schemaname, &range.relname) {
        relation.opaque = matches!(columns.derived, Derived::All);
        let exact = columns.exact.iter();
        relation
            .columns
            .extend(exact.map(|(n, c)| (n.clone(), Source::Exact(c.clone()))));
        if let Derived::Columns(names) = &columns.derived {
            relation
                .columns
                .extend(names.iter().map(|n| (n.clone(), Source::Derived)));
        }
    }
    Some(relation)
}

/// What a column reference of the definition names.
fn resolve(fields: &[String], relations: &[Relation]) -> Lookup {
    let find = |relation: &Relation, column: &str| {
        let found = relation.columns.iter().find(|(name, _)| name == column);
        match (found, relation.opaque) {
            (Some((_, source)), _) => Lookup::Found(source.clone()),
            (None, true) => Lookup::Unknown,
            (None, false) => Lookup::Plain,
        }
    };
    match fields {
        [column] => relations
            .iter()
            .map(|r| find(r, column))
            .find(|lookup| !matches!(lookup, Lookup::Plain))
            .unwrap_or(Lookup::Plain),
        [.., relation, column] => relations
            .iter()
            .find(|r| r.name == *relation)
            .map_or(Lookup::Unknown, |r| find(r, column)),
        [] => Lookup::Unknown,
    }
}

/// An expression other than a column reference: derived if it may read a
/// protected or derived column. Judged from every string in its parse
/// tree (names and constants alike), so that no node kind is missed: it
/// is derived when one of them names such a column, when it holds a
/// subquery, or when a relation's columns are unknown and it reads any.
fn computed(value: &Node, relations: &[Relation]) -> Lookup {
    let Ok(tree) = serde_json::to_value(value) else {
        return Lookup::Unknown;
    };
    let text = tree.to_string();
    let sensitive = relations.iter().flat_map(|r| &r.columns).any(|(name, _)| {
        let quoted = serde_json::Value::String(name.clone()).to_string();
        text.contains(&format!("\"sval\":{quoted}"))
    });
    let opaque = relations.iter().any(|r| r.opaque) && text.contains("\"ColumnRef\"");
    if sensitive || opaque || text.contains("\"SubLink\"") {
        Lookup::Unknown
    } else {
        Lookup::Plain
    }
}

/// The names of a column reference; `None` for `*`.
fn fields(column: &ColumnRef) -> Option<Vec<String>> {
    column
        .fields
        .iter()
        .map(|f| match &f.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::objects::{CatalogObject, Kind, ServerObjects};

    fn policy() -> Policy {
        Policy::from_str(
            "test.toml",
            "[[column]]\ntable = \"customers\"\ncolumn = \"email\"\nencryption = \"deterministic\"\n\
             [[column]]\ntable = \"customers\"\ncolumn = \"phone\"\n",
        )
        .unwrap()
    }

    fn view(name: &str, definition: &str) -> CatalogObject {
        CatalogObject {
            kind: Kind::View,
            schema: "public".into(),
            name: name.into(),
            table: "public.customers".into(),
            definition: Some(definition.into()),
        }
    }

    fn email() -> ColumnRefId {
        ColumnRefId {
            schema: "public".into(),
            table: "customers".into(),
            column: "email".into(),
        }
    }

    /// Whether comparing the view's column `name` with a value is refused.
    fn is_derived(columns: &ViewColumns, name: &str) -> bool {
        match &columns.derived {
            Derived::Columns(names) => names.iter().any(|n| n == name),
            Derived::All => true,
        }
    }

    fn of(definitions: &[(&str, &str)]) -> ServerObjects {
        let objects = definitions.iter().map(|(n, d)| view(n, d)).collect();
        ServerObjects::new(&policy(), objects)
    }

    #[test]
    fn plain_references_are_exact_and_expressions_derived() {
        let objects = of(&[(
            "v",
            " SELECT c.id, c.email AS mail, lower(c.phone) AS low, upper(c.segment) AS seg, \
             c.email::varchar(5) AS short, (SELECT 1) AS sub FROM customers c JOIN orders o ON o.customer_id = c.id;",
        )]);
        let columns = &objects.view("", "v").unwrap().columns;
        assert_eq!(columns.exact, vec![("mail".to_owned(), email())]);
        assert!(
            is_derived(columns, "low")
                && is_derived(columns, "short")
                && is_derived(columns, "sub")
        );
        assert!(!is_derived(columns, "seg") && !is_derived(columns, "id"));
    }

    #[test]
    fn views_over_views_follow_the_inner_view() {
        let objects = of(&[
            (
                "inner_v",
                " SELECT customers.email, lower(customers.email) AS low FROM customers;",
            ),
            (
                "outer_v",
                " SELECT inner_v.email AS e, inner_v.low FROM inner_v;",
            ),
        ]);
        let columns = &objects.view("public", "outer_v").unwrap().columns;
        assert_eq!(columns.exact, vec![("e".to_owned(), email())]);
        assert!(is_derived(columns, "low"));
    }

    #[test]
    fn definitions_that_cannot_be_followed_make_every_column_derived() {
        for definition in [
            " SELECT customers.email FROM customers UNION SELECT 'x'::text;",
            " SELECT s.email FROM (SELECT customers.email FROM customers) s;",
            " SELECT c.a FROM customers c(a);",
            "not sql",
        ] {
            let objects = of(&[("v", definition)]);
            let columns = &objects.view("", "v").unwrap().columns;
            assert!(
                columns.exact.is_empty() && is_derived(columns, "anything"),
                "{definition}"
            );
        }
    }
}
