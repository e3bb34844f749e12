//! What a migration works on, read from the live catalog before anything
//! is written: each table with a column the policy protects or that
//! `--decrypt` names, how its rows are walked (its primary key, or its
//! `ctid`), and per column the form its values take and what they must
//! become (encrypted under the domain's current key in the policy's
//! mode, or decrypted).
//!
//! Everything that would make the migration fail or do harm is found
//! here, all at once, and nothing is written: a table or column the
//! database lacks, a column whose type cannot hold ciphertext, a
//! `--decrypt` column the policy still protects or whose guard would
//! refuse its plaintext, a guard that admits only the other mode's
//! ciphertext, a table that cannot be walked.
//!
//! A table whose primary key includes a migrated column is walked by
//! `ctid`: its key changes as it is migrated, and keeping it in the state
//! file would write a protected value to disk.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_postgres::Client;

use super::db::DbError;
use crate::ops::maintenance::Target as Upstream;
use crate::protect::crypto::{mode_prefix, text_pattern_head, KeyRef, Mode};
use crate::protect::guard::{constraint_name, TYPE_KIND};
use crate::protect::protection::Protection;

/// `name` as a quoted identifier: every name a migration writes into SQL
/// is quoted (and schema-qualified).
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column named by `--decrypt`, and the key domain of its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecryptColumn {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) column: String,
    pub(crate) domain: String,
}

/// The migration cannot start.
#[derive(Debug, Error)]
pub(crate) enum PlanError {
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] DbError),
    /// What must be fixed first, one problem per line.
    #[error("nothing was changed; fix this first:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
}

/// Every table to migrate, in name order.
pub(crate) struct Plan {
    pub(super) tables: Vec<TablePlan>,
}

/// One table and its migrated columns.
#[derive(Clone, Debug)]
pub(crate) struct TablePlan {
    pub(super) schema: String,
    pub(super) table: String,
    pub(super) walk: Walk,
    pub(super) columns: Vec<ColumnPlan>,
}

/// How a table's rows are visited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// By primary key, in order (keyset pagination).
    Key(Vec<KeyColumn>),
    /// By `ctid`, in a snapshot, pass after pass until one finds nothing
    /// to change (see `scan.rs`).
    Ctid,
}

/// A column of a primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    pub(super) name: String,
    /// Its type, quoted and schema-qualified, to cast text to.
    pub(super) type_name: String,
}

/// The stored form of a column's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// A string type: the text envelope (`pgv1:...`).
    Text,
    /// `bytea`: the binary envelope.
    Bytes,
}

/// What a column's values must become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Ciphertext under `key`, the domain's current key, in `mode`.
    Encrypt {
        domain: String,
        mode: Mode,
        key: KeyRef,
    },
    /// Plaintext (`--decrypt`).
    Decrypt { domain: String },
}

impl Target {
    pub(super) fn domain(&self) -> &str {
        match self {
            Target::Encrypt { domain, .. } | Target::Decrypt { domain } => domain,
        }
    }
}

/// One migrated column.
#[derive(Clone, Debug)]
pub(crate) struct ColumnPlan {
    pub(super) name: String,
    pub(super) form: Form,
    pub(super) target: Target,
    /// Its ciphertext guard, if the table has one: name, and whether it is
    /// validated.
    pub(super) guard: Option<(String, bool)>,
}

/// A table's columns and what they must become, before the catalog is read.
type Wanted = BTreeMap<(String, String), Vec<(String, Target)>>;

impl Plan {
    /// Reads the catalog for the policy's columns and `decrypt`'s, and
    /// checks everything the migration needs. `writing`: the role must be
    /// able to update the tables (not for a dry run).
    pub(crate) async fn read(
        client: &Client,
        protection: &Protection,
        decrypt: &[DecryptColumn],
        writing: bool,
    ) -> Result<Plan, PlanError> {
        let mut problems = Vec::new();
        let wanted = wanted(protection, decrypt, &mut problems);
        let mut tables = Vec::new();
        for ((schema, table), columns) in wanted {
            if let Some(plan) =
                read_table(client, &schema, &table, columns, writing, &mut problems).await?
            {
                tables.push(plan);
            }
        }
        if problems.is_empty() {
            Ok(Plan { tables })
        } else {
            Err(PlanError::Refused(problems))
        }
    }

    /// A digest of what the migration is to do and where: the database,
    /// and per table how it is walked and per column its target (domain,
    /// mode and current key, or decryption). Derived from the policy and
    /// the keyring, so that a state file written for another policy, key
    /// version or database is told apart and ignored.
    pub(super) fn fingerprint(&self, upstream: &Upstream) -> String {
        let mut hash = Sha256::new();
        let mut line = |text: String| {
            hash.update(text.as_bytes());
            hash.update([0]);
        };
        line(format!("{} {}", upstream.upstream, upstream.database));
        for table in &self.tables {
            line(format!(
                "table {} {}",
                ident(&table.schema),
                ident(&table.table)
            ));
            match &table.walk {
                Walk::Key(keys) => {
                    for key in keys {
                        line(format!("key {} {}", ident(&key.name), key.type_name));
                    }
                }
                Walk::Ctid => line("ctid".into()),
            }
            for column in &table.columns {
                line(format!(
                    "column {} {:?} {:?}",
                    ident(&column.name),
                    column.form,
                    column.target
                ));
            }
        }
        hex::encode(hash.finalize())
    }
}

/// The columns to migrate by table: the policy's, to encrypt, and
/// `decrypt`'s.
fn wanted(
    protection: &Protection,
    decrypt: &[DecryptColumn],
    problems: &mut Vec<String>,
) -> Wanted {
    let mut wanted: Wanted = BTreeMap::new();
    for column in protection.policy.columns() {
        let key = match protection.keyring.current_key(&column.domain) {
            Ok(key) => key,
            Err(e) => {
                problems.push(format!(
                    "{}.{}.{}: {e}",
                    column.schema, column.table, column.column
                ));
                continue;
            }
        };
        let target = Target::Encrypt {
            domain: column.domain.clone(),
            mode: column.encryption.into(),
            key,
        };
        wanted
            .entry((column.schema.clone(), column.table.clone()))
            .or_default()
            .push((column.column.clone(), target));
    }
    for column in decrypt {
        let name = format!("{}.{}.{}", column.schema, column.table, column.column);
        if protection
            .policy
            .column(&column.schema, &column.table, &column.column)
            .is_some()
        {
            problems.push(format!(
                "--decrypt {name}: the policy still protects it; take it out of the policy \
                 (and reload pgveil serve) before turning it back into plaintext"
            ));
            continue;
        }
        if protection.keyring.current_key(&column.domain).is_err() {
            problems.push(format!(
                "--decrypt {name}: the keyring has no key of domain {} to decrypt it with \
                 (give the column's domain with --key-domain)",
                column.domain
            ));
            continue;
        }
        wanted
            .entry((column.schema.clone(), column.table.clone()))
            .or_default()
            .push((
                column.column.clone(),
                Target::Decrypt {
                    domain: column.domain.clone(),
                },
            ));
    }
    for columns in wanted.values_mut() {
        columns.sort_by(|a, b| a.0.cmp(&b.0));
    }
    wanted
}

/// One table's plan, or `None` with its problems noted.
async fn read_table(
    client: &Client,
    schema: &str,
    table: &str,
    wanted: Vec<(String, Target)>,
    writing: bool,
    problems: &mut Vec<String>,
) -> Result<Option<TablePlan>, DbError> {
    let name = format!("{schema}.{table}");
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::pg_catalog.text, c.relhassubclass, \
             pg_catalog.has_table_privilege(c.oid, 'SELECT'), \
             pg_catalog.has_table_privilege(c.oid, 'UPDATE') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(DbError::new)?;
    let Some(row) = row else {
        problems.push(format!("table {name} does not exist in the database"));
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let kind: String = row.get(1);
    let (children, can_read, can_update): (bool, bool, bool) = (row.get(2), row.get(3), row.get(4));
    if kind != "r" && kind != "p" {
        problems.push(format!(
            "{name} is not a table (relkind {kind}); only tables are migrated"
        ));
        return Ok(None);
    }
    if !can_read || (writing && !can_update) {
        problems.push(format!(
            "the [maintenance] role may not {} {name}",
            if can_read { "update" } else { "read" }
        ));
    }
    let names: Vec<&str> = wanted.iter().map(|(c, _)| c.as_str()).collect();
    let types = client
        .query(
            &format!(
                "SELECT a.attname::pg_catalog.text, {TYPE_KIND}, \
                 pg_catalog.format_type(a.atttypid, a.atttypmod) \
                 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                 AND a.attname = ANY($2::pg_catalog.text[])"
            ),
            &[&oid, &names],
        )
        .await
        .map_err(DbError::new)?;
    let types: BTreeMap<String, (String, String)> = types
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let guard_names: Vec<String> = names.iter().map(|c| constraint_name(c)).collect();
    let guards = client
        .query(
            "SELECT conname::pg_catalog.text, convalidated, pg_catalog.pg_get_constraintdef(oid) \
             FROM pg_catalog.pg_constraint \
             WHERE conrelid = $1 AND contype = 'c' AND conname = ANY($2::pg_catalog.text[])",
            &[&oid, &guard_names],
        )
        .await
        .map_err(DbError::new)?;
    let guards: BTreeMap<String, (bool, String)> = guards
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut columns = Vec::new();
    for (column, target) in wanted {
        let qualified = format!("{name}.{column}");
        let Some((kind, type_name)) = types.get(&column) else {
            problems.push(format!("column {qualified} does not exist in the database"));
            continue;
        };
        let form = match kind.as_str() {
            "text" => Form::Text,
            "bytea" => Form::Bytes,
            _ => {
                problems.push(format!(
                    "column {qualified} is of type {type_name}, which cannot hold ciphertext \
                     (protected columns are text or bytea)"
                ));
                continue;
            }
        };
        let guard_name = constraint_name(&column);
        let guard = guards.get(&guard_name);
        if let Some((_, definition)) = guard {
            let names = (schema, table, column.as_str(), guard_name.as_str());
            check_guard(names, definition, form, &target, problems);
        }
        columns.push(ColumnPlan {
            name: column,
            form,
            target,
            guard: guard.map(|(valid, _)| (guard_name, *valid)),
        });
    }
    let key = primary_key(client, oid).await?;
    let walk = if key.is_empty() || key.iter().any(|k| columns.iter().any(|c| c.name == k.name)) {
        if kind == "p" || children {
            problems.push(format!(
                "{name} has {} and child tables or partitions: it cannot be walked by ctid",
                if key.is_empty() {
                    "no primary key"
                } else {
                    "a migrated column in its primary key"
                }
            ));
        }
        Walk::Ctid
    } else {
        Walk::Key(key)
    };
    Ok(Some(TablePlan {
        schema: schema.into(),
        table: table.into(),
        walk,
        columns,
    }))
}

/// The columns of a table's primary key, in order; empty without one.
async fn primary_key(client: &Client, oid: u32) -> Result<Vec<KeyColumn>, DbError> {
    let rows = client
        .query(
            "SELECT a.attname::pg_catalog.text, tn.nspname::pg_catalog.text, \
             ty.typname::pg_catalog.text \
             FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) \
                 WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(DbError::new)?;
    Ok(rows
        .iter()
        .map(|r| KeyColumn {
            name: r.get(0),
            type_name: format!("{}.{}", ident(r.get(1)), ident(r.get(2))),
        })
        .collect())
}

/// Notes a guard that would refuse what the migration writes: any guard
/// of a column to decrypt, and the guard of a column to encrypt that
/// admits only the other mode's ciphertext (the policy's mode changed).
fn check_guard(
    (schema, table, column, guard): (&str, &str, &str, &str),
    definition: &str,
    form: Form,
    target: &Target,
    problems: &mut Vec<String>,
) {
    let drop = format!(
        "ALTER TABLE {}.{} DROP CONSTRAINT {};",
        ident(schema),
        ident(table),
        ident(guard)
    );
    let table = format!("{schema}.{table}");
    match target {
        Target::Decrypt { .. } => problems.push(format!(
            "--decrypt {table}.{column}: its ciphertext guard {guard} would refuse the plaintext; \
             drop it first:\n    {drop}"
        )),
        Target::Encrypt { mode, .. } => {
            let admits = |mode: Mode| match form {
                // Guards of every generation start the same way.
                Form::Text => definition.contains(&text_pattern_head(mode)),
                Form::Bytes => definition.contains(&hex::encode(mode_prefix(mode))),
            };
            let other = match mode {
                Mode::Randomized => Mode::Deterministic,
                Mode::Deterministic => Mode::Randomized,
            };
            if !admits(*mode) && admits(other) {
                problems.push(format!(
                    "{table}.{column}: its ciphertext guard {guard} admits {} ciphertext only, \
                     and the policy now says {}; replace it first:\n    {drop}\n    \
                     then add the new guard with `pgveil guard --policy POLICY | psql` \
                     (it is added NOT VALID; migrate validates it)",
                    mode_name(other),
                    mode_name(*mode)
                ));
            }
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Randomized => "randomized",
        Mode::Deterministic => "deterministic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard on a text column admitting the other mode's ciphertext is
    /// reported, whether `pgveil guard` wrote it today (the length checked
    /// apart) or before 2026-12 (a bound in the expression), as
    /// `pg_get_constraintdef` prints them; one of the policy's mode is not.
    #[test]
    fn guards_of_both_generations_are_told_apart_by_mode() {
        let names = ("public", "customers", "email", "pgveil_guard_email");
        let target = Target::Encrypt {
            domain: "public.customers.email".into(),
            mode: Mode::Deterministic,
            key: KeyRef { id: 1, version: 1 },
        };
        let randomized = [
            "CHECK (((email IS NULL) OR ((email)::text ~ '^pgv1:UFYBA[QRSTUVWXYZabcdef][A-Za-z0-9_-]{48,}$'::text)))",
            "CHECK (((email IS NULL) OR (((email)::text ~ '^pgv1:UFYBA[QRSTUVWXYZabcdef][A-Za-z0-9_-]*$'::text) AND (octet_length((email)::text) >= 59))))",
        ];
        for definition in randomized {
            let mut problems = Vec::new();
            check_guard(names, definition, Form::Text, &target, &mut problems);
            assert_eq!(problems.len(), 1, "{definition}");
            assert!(
                problems[0].contains("admits randomized ciphertext only"),
                "{problems:?}"
            );
            let deterministic = definition.replace("QRSTUVWXYZabcdef", "ghijklmnopqrstuv");
            let mut problems = Vec::new();
            check_guard(names, &deterministic, Form::Text, &target, &mut problems);
            assert!(problems.is_empty(), "{problems:?}");
        }
    }
}
