//! What the upstream's catalog says about the policy's tables: their
//! columns and types, the roles, the guards. One query each, every name
//! bound as a parameter and every catalog object schema-qualified.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use crate::protect::guard::TYPE_KIND;
use crate::protect::policy::Policy;

/// A column of a table the policy names.
#[derive(Clone, Debug)]
pub(super) struct Column {
    /// `text`, `bytea` or `other` ([`TYPE_KIND`]).
    pub(super) kind: String,
    /// Its SQL type, as `format_type` writes it.
    pub(super) type_name: String,
    /// The length limit of a `varchar(n)` or `char(n)`, in characters.
    pub(super) max_chars: Option<i32>,
}

/// A relation of a schema the policy names.
#[derive(Clone, Debug, Default)]
pub(super) struct Relation {
    /// `pg_class.relkind`: `r` table, `p` partitioned table, `v` view...
    pub(super) kind: char,
    /// Its columns by name.
    pub(super) columns: BTreeMap<String, Column>,
}

/// The catalog, as far as the policy needs it.
#[derive(Debug, Default)]
pub(super) struct Schema {
    /// Every schema of the database.
    pub(super) schemas: BTreeSet<String>,
    /// `(schema, relation)` → the relation, for the schemas the policy names.
    pub(super) relations: BTreeMap<(String, String), Relation>,
    /// Every role.
    pub(super) roles: BTreeSet<String>,
    /// `(schema, table, constraint)` → whether it is validated, for every
    /// CHECK constraint named like a guard.
    pub(super) guards: BTreeMap<(String, String, String), bool>,
}

impl Schema {
    /// Reads the catalog for `policy`.
    pub(super) async fn read(
        client: &Client,
        policy: &Policy,
    ) -> Result<Self, tokio_postgres::Error> {
        let names: Vec<String> = policy
            .tables()
            .map(|(schema, _)| schema.to_owned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut schema = Schema::default();
        for row in client
            .query("SELECT nspname::text FROM pg_catalog.pg_namespace", &[])
            .await?
        {
            schema.schemas.insert(row.get(0));
        }
        for row in client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = ANY($1)",
                &[&names],
            )
            .await?
        {
            let kind: String = row.get(2);
            schema.relations.insert(
                (row.get(0), row.get(1)),
                Relation {
                    kind: kind.chars().next().unwrap_or('?'),
                    columns: BTreeMap::new(),
                },
            );
        }
        let columns = format!(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, {TYPE_KIND}, \
             pg_catalog.format_type(a.atttypid, a.atttypmod), \
             CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 \
             THEN a.atttypmod - 4 END \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attnum > 0 AND NOT a.attisdropped \
             AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = ANY($1)"
        );
        for row in client.query(&columns, &[&names]).await? {
            let key: (String, String) = (row.get(0), row.get(1));
            if let Some(relation) = schema.relations.get_mut(&key) {
                relation.columns.insert(
                    row.get(2),
                    Column {
                        kind: row.get(3),
                        type_name: row.get(4),
                        max_chars: row.get(5),
                    },
                );
            }
        }
        for row in client
            .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
            .await?
        {
            schema.roles.insert(row.get(0));
        }
        for row in client
            .query(
                "SELECT n.nspname::text, c.relname::text, k.conname::text, k.convalidated \
                 FROM pg_catalog.pg_constraint k \
                 JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE k.contype = 'c' AND k.conname::text LIKE 'pgveil\\_guard\\_%' \
                 AND n.nspname = ANY($1)",
                &[&names],
            )
            .await?
        {
            schema
                .guards
                .insert((row.get(0), row.get(1), row.get(2)), row.get(3));
        }
        Ok(schema)
    }
}
