//! `COPY ... FROM` into a protected table: which columns of the data
//! stream must be encrypted, and how the stream is formatted.
//!
//! The statement itself is relayed unchanged; the relay encrypts the
//! protected fields of the `CopyData` that follows. Only `FROM STDIN` can
//! be encrypted that way: a server-side file or program is refused.

use pg_query::protobuf::{CopyStmt, DefElem, Node};

use pg_query::protobuf::node::Node as NodeEnum;

use super::columns::{ColumnRefId, ColumnType, Columns};
use super::names::table_name;
use super::refusal::Reason;
use super::targets::Target;
use crate::protect::policy::Policy;
use crate::wire::copy::options::{ColumnSet, CopyField, CopyFormat, CopyOptions};

/// The columns a `FORCE_NOT_NULL` or `FORCE_NULL` argument names.
fn column_set(arg: Option<&Node>) -> ColumnSet {
    match arg.and_then(|arg| arg.node.as_ref()) {
        Some(NodeEnum::AStar(_)) => ColumnSet::All,
        Some(NodeEnum::List(list)) => {
            ColumnSet::Named(list.items.iter().filter_map(text).collect())
        }
        Some(_) => arg
            .and_then(text)
            .map_or(ColumnSet::None, |name| ColumnSet::Named(vec![name])),
        None => ColumnSet::None,
    }
}

/// A `COPY ... FROM STDIN` into a table with protected columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyIn {
    /// `(schema, table)`.
    pub table: (String, String),
    /// The columns of the data, in order: `None` for an unprotected one.
    pub columns: Vec<Option<Target>>,
    /// How the data stream is formatted.
    pub options: CopyOptions,
}

impl CopyIn {
    /// The first protected column, to name in errors.
    pub(crate) fn first_protected(&self) -> ColumnRefId {
        self.columns
            .iter()
            .flatten()
            .next()
            .map(|target| ColumnRefId::clone(&target.column))
            .expect("a CopyIn has a protected column")
    }
}

/// The CopyIn of a COPY into a protected table; `None` for any other COPY.
pub(super) fn copy_in(
    copy: &CopyStmt,
    policy: &Policy,
    columns: &dyn Columns,
) -> Result<Option<CopyIn>, Reason> {
    let Some(range) = copy.relation.as_ref().filter(|_| copy.is_from) else {
        return Ok(None);
    };
    let (schema, table) = table_name(range, policy);
    let (schema, table) = (schema, &table);
    let Some(first) = policy.columns_of(schema, table).next() else {
        return Ok(None);
    };
    if copy.is_program || !copy.filename.is_empty() {
        return Err(Reason::CopyFromFile(first.into()));
    }
    if copy.where_clause.is_some() {
        return Err(Reason::CopyWhere(first.into()));
    }
    let names: Vec<String> = if copy.attlist.is_empty() {
        columns
            .order(schema, table)
            .ok_or_else(|| Reason::NoColumnList {
                statement: "COPY",
                table: format!("{schema}.{table}"),
                column: first.into(),
            })?
    } else {
        copy.attlist.iter().filter_map(text).collect()
    };
    let targets = names
        .iter()
        .map(|name| {
            policy
                .column(schema, table, name)
                .map(|column| Target::of(columns, column))
                .transpose()
        })
        .collect::<Result<Vec<_>, Reason>>()?;
    // No protected column in the data: nothing to encrypt.
    if targets.iter().all(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(CopyIn {
        table: (schema.to_owned(), table.clone()),
        columns: targets,
        options: options(&copy.options),
    }))
}

/// The data options of each `COPY ... TO STDOUT` in a statement text, in
/// order, so that the rows it sends can be revealed, with the protected
/// columns of a table's data by position (the table's order from
/// `columns` when the statement lists none). Call it only for text
/// containing `copy` (in any case).
pub(crate) fn copy_out_options(
    sql: &str,
    policy: &Policy,
    columns: &dyn Columns,
) -> Vec<CopyOptions> {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Vec::new();
    };
    parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| match raw.stmt.as_deref()?.node.as_ref()? {
            NodeEnum::CopyStmt(copy) if !copy.is_from && copy.filename.is_empty() => {
                let mut options = options(&copy.options);
                if let Some(range) = &copy.relation {
                    options.protected = protected_fields(copy, range, policy, columns);
                }
                Some(options)
            }
            _ => None,
        })
        .collect()
}

/// The protected columns of a COPY TO's table data, by position; empty
/// when there is none.
fn protected_fields(
    copy: &CopyStmt,
    range: &pg_query::protobuf::RangeVar,
    policy: &Policy,
    columns: &dyn Columns,
) -> Vec<Option<CopyField>> {
    let (schema, table) = table_name(range, policy);
    if !policy.is_protected_table(schema, &table) {
        return Vec::new();
    }
    let names: Vec<String> = if copy.attlist.is_empty() {
        columns.order(schema, &table).unwrap_or_default()
    } else {
        copy.attlist.iter().filter_map(text).collect()
    };
    names
        .into_iter()
        .map(|column| {
            policy.column(schema, &table, &column)?;
            let bytea = columns.type_of(schema, &table, &column) == Some(&ColumnType::Bytea);
            Some(CopyField {
                schema: schema.to_owned(),
                table: table.clone(),
                column,
                bytea,
            })
        })
        .collect()
}

/// Whether a statement text is a `COPY ... FROM STDIN`, after which the
/// server ignores Sync until the data ends.
#[cfg(test)]
pub(crate) fn is_copy_from_stdin(sql: &str) -> bool {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return false;
    };
    parsed.protobuf.stmts.iter().any(|raw| {
        matches!(
            raw.stmt.as_deref().and_then(|s| s.node.as_ref()),
            Some(NodeEnum::CopyStmt(copy)) if copy.is_from && copy.filename.is_empty() && !copy.is_program
        )
    })
}

fn options(list: &[Node]) -> CopyOptions {
    let elems: Vec<&DefElem> = list
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::DefElem(d)) => Some(d.as_ref()),
            _ => None,
        })
        .collect();
    let format = elems
        .iter()
        .find(|d| d.defname == "format")
        .and_then(|d| d.arg.as_deref().and_then(text))
        .map_or(CopyFormat::Text, |f| {
            match f.to_ascii_lowercase().as_str() {
                "csv" => CopyFormat::Csv,
                "binary" => CopyFormat::Binary,
                _ => CopyFormat::Text,
            }
        });
    let mut options = CopyOptions::of(format);
    let mut escape_set = false;
    for elem in elems {
        let arg = elem.arg.as_deref().and_then(text);
        match (elem.defname.as_str(), arg) {
            ("delimiter", Some(v)) => options.delimiter = v,
            ("null", Some(v)) => options.null = v,
            ("quote", Some(v)) => options.quote = v,
            ("escape", Some(v)) => {
                options.escape = v;
                escape_set = true;
            }
            ("header", v) => options.header = v.is_none_or(|v| is_true(&v)),
            ("force_not_null", _) => options.force_not_null = column_set(elem.arg.as_deref()),
            ("force_null", _) => options.force_null = column_set(elem.arg.as_deref()),
            ("encoding", Some(v)) => options.encoding = Some(v),
            _ => {}
        }
    }
    if !escape_set {
        options.escape = options.quote.clone();
    }
    options
}

/// The text of a string, integer or boolean option argument.
fn text(node: &Node) -> Option<String> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        Some(NodeEnum::Integer(i)) => Some(i.ival.to_string()),
        Some(NodeEnum::Boolean(b)) => Some(b.boolval.to_string()),
        _ => None,
    }
}

/// PostgreSQL's spellings of a true boolean option (and `match`).
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "on" | "1" | "t" | "yes" | "y" | "match"
    )
}
