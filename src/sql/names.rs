//! How a statement names tables and columns: the table a reference names
//! (pgveil does not know the `search_path`), and the names of a column
//! reference in the parse tree.

use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{ColumnRef, Node, RangeVar};

use crate::protect::policy::Policy;

/// The schema of a table named without one.
const DEFAULT_SCHEMA: &str = "public";

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

/// The text of a `String` node (a name), if it is one.
pub(super) fn string(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

/// The names of a column reference, `*` left out.
pub(super) fn fields_of(c: &ColumnRef) -> Vec<String> {
    c.fields
        .iter()
        .filter_map(string)
        .map(String::from)
        .collect()
}

/// The names of a column reference, if the expression is one.
pub(super) fn column_fields(node: &Node) -> Option<Vec<String>> {
    match &node.node {
        Some(NodeEnum::ColumnRef(c)) => Some(fields_of(c)),
        _ => None,
    }
}

/// The qualifier of `*` or `t.*` (empty for `*`), if the target is one.
pub(super) fn star_target(node: &Node) -> Option<Vec<String>> {
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

/// The expression under any casts.
pub(super) fn uncast(node: &Node) -> &Node {
    match &node.node {
        Some(NodeEnum::TypeCast(cast)) => cast.arg.as_deref().map_or(node, uncast),
        _ => node,
    }
}
