//! The statements a migration sends, as text. Every name is quoted and
//! schema-qualified (types too), every value is a parameter, and every
//! function is `pg_catalog`'s, so that what runs does not depend on the
//! search path or on what a table's columns are called.
//!
//! A batch reads, in order: the key columns as text (or the `ctid`), then
//! the migrated columns, text columns as `text` and `bytea` columns as
//! `bytea`. It writes all its changes in one `UPDATE ... FROM ROWS FROM
//! (unnest($1), ...)`: per row the key, and per column the old value and
//! the new one (NULL where the row keeps that column). A row is updated
//! only where every column it changes still holds the old value, compared
//! byte for byte, and the statement returns the keys of the rows it
//! updated: the compare-and-set.

pub(super) use super::plan::ident;
use super::plan::{ColumnPlan, Form, TablePlan, Walk};

/// The table, quoted and schema-qualified.
pub(super) fn table_name(table: &TablePlan) -> String {
    format!("{}.{}", ident(&table.schema), ident(&table.table))
}

/// How a migrated column is read: text columns (`varchar`, `char(n)`,
/// `citext`, domains) as text, so that the value is the one pgveil
/// encrypted; `bytea` columns (and domains over it) as `bytea`.
fn read_column(column: &ColumnPlan) -> String {
    let cast = match column.form {
        Form::Text => "pg_catalog.text",
        Form::Bytes => "pg_catalog.bytea",
    };
    format!("t.{}::{cast}", ident(&column.name))
}

/// The array type of a column's old and new values.
fn array_type(column: &ColumnPlan) -> &'static str {
    match column.form {
        Form::Text => "pg_catalog.text[]",
        Form::Bytes => "pg_catalog.bytea[]",
    }
}

/// The select list of a batch: keys as text, then the columns.
fn select_list(table: &TablePlan) -> String {
    let mut items: Vec<String> = match &table.walk {
        Walk::Key(keys) => keys
            .iter()
            .map(|k| format!("t.{}::pg_catalog.text", ident(&k.name)))
            .collect(),
        Walk::Ctid => vec!["t.ctid::pg_catalog.text".to_owned()],
    };
    items.extend(table.columns.iter().map(read_column));
    items.join(", ")
}

/// The key columns as a row, `(t."a", t."b")`.
fn key_row(table: &TablePlan) -> String {
    format!("({})", order_by(table))
}

/// A row of parameters `$first..` cast from text to the key types.
fn key_params(table: &TablePlan, first: usize) -> String {
    let Walk::Key(keys) = &table.walk else {
        return format!("(${first}::pg_catalog.text::pg_catalog.tid)");
    };
    let params: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("${}::pg_catalog.text::{}", first + i, k.type_name))
        .collect();
    format!("({})", params.join(", "))
}

/// The key columns in order, `t."a", t."b"`: the order of the walk.
fn order_by(table: &TablePlan) -> String {
    match &table.walk {
        Walk::Key(keys) => {
            let names: Vec<String> = keys
                .iter()
                .map(|k| format!("t.{}", ident(&k.name)))
                .collect();
            names.join(", ")
        }
        Walk::Ctid => "t.ctid".to_owned(),
    }
}

/// The number of key values of a row (1 for a ctid).
pub(super) fn key_len(table: &TablePlan) -> usize {
    match &table.walk {
        Walk::Key(keys) => keys.len(),
        Walk::Ctid => 1,
    }
}

/// The first batch of a table walked by its key: `$1` the limit.
pub(super) fn select_first(table: &TablePlan) -> String {
    format!(
        "SELECT {} FROM {} AS t ORDER BY {} LIMIT $1::pg_catalog.int8",
        select_list(table),
        table_name(table),
        order_by(table)
    )
}

/// The batch after a key: `$1..$n` the key as text, `$n+1` the limit.
pub(super) fn select_after(table: &TablePlan) -> String {
    let n = key_len(table);
    format!(
        "SELECT {} FROM {} AS t WHERE {} > {} ORDER BY {} LIMIT ${}::pg_catalog.int8",
        select_list(table),
        table_name(table),
        key_row(table),
        key_params(table, 1),
        order_by(table),
        n + 1
    )
}

/// The rows between two keys, both included: `$1..$n` the first,
/// `$n+1..$2n` the last. Rows whose compare-and-set failed are read again
/// so.
pub(super) fn select_between(table: &TablePlan) -> String {
    let n = key_len(table);
    format!(
        "SELECT {} FROM {} AS t WHERE {row} >= {} AND {row} <= {} ORDER BY {}",
        select_list(table),
        table_name(table),
        key_params(table, 1),
        key_params(table, n + 1),
        order_by(table),
        row = key_row(table),
    )
}

/// The rows of a table without a primary key from `$1`, a tid, read
/// through a portal in one snapshot: `ONLY`, since a ctid names a row of
/// one table.
pub(super) fn select_from_ctid(table: &TablePlan) -> String {
    format!(
        "SELECT {} FROM ONLY {} AS t WHERE t.ctid >= $1::pg_catalog.text::pg_catalog.tid",
        select_list(table),
        table_name(table)
    )
}

/// The compare-and-set update of a batch. Parameters: per key column an
/// array of the keys as text, per migrated column an array of old values
/// and one of new values (NULL: unchanged), then, for a table walked by
/// its key, the first and the last key of the batch as text (they bound
/// the rows the statement looks at, so that it reads the batch's range of
/// the primary key's index rather than the whole table). Returns the
/// position (from 1) in the arrays of each row updated.
pub(super) fn update(table: &TablePlan) -> String {
    let keys = key_len(table);
    let mut names: Vec<String> = (1..=keys).map(|i| format!("k{i}")).collect();
    let mut arrays: Vec<String> = (1..=keys)
        .map(|i| format!("pg_catalog.unnest(${i}::pg_catalog.text[])"))
        .collect();
    let mut set = Vec::new();
    let mut compare = Vec::new();
    for (i, column) in table.columns.iter().enumerate() {
        let (old, new) = (keys + 2 * i + 1, keys + 2 * i + 2);
        let kind = array_type(column);
        arrays.push(format!("pg_catalog.unnest(${old}::{kind})"));
        arrays.push(format!("pg_catalog.unnest(${new}::{kind})"));
        names.push(format!("o{i}"));
        names.push(format!("n{i}"));
        let col = ident(&column.name);
        set.push(format!(
            "{col} = CASE WHEN u.n{i} IS NULL THEN t.{col} ELSE u.n{i} END"
        ));
        let stored = match column.form {
            Form::Text => format!("t.{col}::pg_catalog.text = u.o{i} COLLATE pg_catalog.\"C\""),
            Form::Bytes => format!("t.{col}::pg_catalog.bytea = u.o{i}"),
        };
        compare.push(format!("(u.n{i} IS NULL OR {stored})"));
    }
    let next = keys + 2 * table.columns.len() + 1;
    let (only, mut matched) = match &table.walk {
        Walk::Key(key_columns) => {
            let mut matched: Vec<String> = key_columns
                .iter()
                .enumerate()
                .map(|(i, k)| format!("t.{} = u.k{}::{}", ident(&k.name), i + 1, k.type_name))
                .collect();
            let row = key_row(table);
            matched.push(format!("{row} >= {}", key_params(table, next)));
            matched.push(format!("{row} <= {}", key_params(table, next + keys)));
            ("", matched)
        }
        Walk::Ctid => ("ONLY ", vec!["t.ctid = u.k1::pg_catalog.tid".to_owned()]),
    };
    matched.extend(compare);
    format!(
        "UPDATE {only}{} AS t SET {} FROM ROWS FROM ({}) WITH ORDINALITY AS u({}, i) \
         WHERE {} RETURNING u.i",
        table_name(table),
        set.join(", "),
        arrays.join(", "),
        names.join(", "),
        matched.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::migrate::plan::{KeyColumn, Target};

    fn table(walk: Walk) -> TablePlan {
        TablePlan {
            schema: "crm".into(),
            table: "Odd \"name\"".into(),
            walk,
            columns: vec![
                ColumnPlan {
                    name: "email".into(),
                    form: Form::Text,
                    target: Target::Decrypt { domain: "d".into() },
                    guard: None,
                },
                ColumnPlan {
                    name: "photo".into(),
                    form: Form::Bytes,
                    target: Target::Decrypt { domain: "d".into() },
                    guard: None,
                },
            ],
        }
    }

    fn keyed() -> TablePlan {
        table(Walk::Key(vec![
            KeyColumn {
                name: "id".into(),
                type_name: "\"pg_catalog\".\"int8\"".into(),
            },
            KeyColumn {
                name: "region".into(),
                type_name: "\"public\".\"code\"".into(),
            },
        ]))
    }

    #[test]
    fn names_are_quoted_and_qualified() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(table_name(&keyed()), "\"crm\".\"Odd \"\"name\"\"\"");
    }

    #[test]
    fn batches_walk_the_key_in_order() {
        let t = keyed();
        assert_eq!(
            select_after(&t),
            "SELECT t.\"id\"::pg_catalog.text, t.\"region\"::pg_catalog.text, \
             t.\"email\"::pg_catalog.text, t.\"photo\"::pg_catalog.bytea \
             FROM \"crm\".\"Odd \"\"name\"\"\" AS t \
             WHERE (t.\"id\", t.\"region\") > ($1::pg_catalog.text::\"pg_catalog\".\"int8\", \
             $2::pg_catalog.text::\"public\".\"code\") \
             ORDER BY t.\"id\", t.\"region\" LIMIT $3::pg_catalog.int8"
        );
        assert!(
            select_first(&t).ends_with("ORDER BY t.\"id\", t.\"region\" LIMIT $1::pg_catalog.int8")
        );
        assert!(select_between(&t).contains(
            "WHERE (t.\"id\", t.\"region\") >= ($1::pg_catalog.text::\"pg_catalog\".\"int8\", \
             $2::pg_catalog.text::\"public\".\"code\") AND (t.\"id\", t.\"region\") <= \
             ($3::pg_catalog.text::\"pg_catalog\".\"int8\", $4::pg_catalog.text::\"public\".\"code\")"
        ));
    }

    #[test]
    fn the_update_compares_and_sets_every_changed_column() {
        let sql = update(&keyed());
        assert_eq!(
            sql,
            "UPDATE \"crm\".\"Odd \"\"name\"\"\" AS t SET \
             \"email\" = CASE WHEN u.n0 IS NULL THEN t.\"email\" ELSE u.n0 END, \
             \"photo\" = CASE WHEN u.n1 IS NULL THEN t.\"photo\" ELSE u.n1 END \
             FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
             pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]), \
             pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.bytea[]), \
             pg_catalog.unnest($6::pg_catalog.bytea[])) WITH ORDINALITY AS u(k1, k2, o0, n0, o1, n1, i) \
             WHERE t.\"id\" = u.k1::\"pg_catalog\".\"int8\" AND t.\"region\" = u.k2::\"public\".\"code\" \
             AND (t.\"id\", t.\"region\") >= ($7::pg_catalog.text::\"pg_catalog\".\"int8\", \
             $8::pg_catalog.text::\"public\".\"code\") \
             AND (t.\"id\", t.\"region\") <= ($9::pg_catalog.text::\"pg_catalog\".\"int8\", \
             $10::pg_catalog.text::\"public\".\"code\") \
             AND (u.n0 IS NULL OR t.\"email\"::pg_catalog.text = u.o0 COLLATE pg_catalog.\"C\") \
             AND (u.n1 IS NULL OR t.\"photo\"::pg_catalog.bytea = u.o1) RETURNING u.i"
        );
    }

    #[test]
    fn tables_without_a_key_are_walked_by_ctid() {
        let t = table(Walk::Ctid);
        assert_eq!(
            select_from_ctid(&t),
            "SELECT t.ctid::pg_catalog.text, \
             t.\"email\"::pg_catalog.text, t.\"photo\"::pg_catalog.bytea \
             FROM ONLY \"crm\".\"Odd \"\"name\"\"\" AS t \
             WHERE t.ctid >= $1::pg_catalog.text::pg_catalog.tid"
        );
        let sql = update(&t);
        assert!(sql.starts_with("UPDATE ONLY \"crm\".\"Odd \"\"name\"\"\" AS t SET"));
        assert!(sql
            .contains("AS u(k1, o0, n0, o1, n1, i) WHERE t.ctid = u.k1::pg_catalog.tid AND (u.n0"));
    }
}
