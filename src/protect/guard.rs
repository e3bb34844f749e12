//! Ciphertext guards: CHECK constraints that make the database itself
//! refuse plaintext in a protected column.
//!
//! pgveil encrypts the values it sees in a statement's text. A write it
//! does not see as a write to a protected column (through a view, a
//! function, a rule or a trigger, by dynamic SQL, or by a DBA connected
//! directly) would store plaintext. A guard admits only NULL and pgveil's
//! envelope of the column's mode, so such a write fails in the database
//! with `23514` instead:
//!
//! - text columns: `col::text ~ '^pgv1:UFYBA[...][A-Za-z0-9_-]*$'`, the text
//!   form's prefix, the header's magic, format version and mode as base64,
//!   then base64 ([`crate::protect::crypto::text_pattern`]), with the length
//!   checked by `octet_length`, which costs PostgreSQL a tenth of a bound
//!   in the expression;
//! - `bytea` columns: the first four bytes are magic, version and mode;
//!   and, in both forms, the value is at least as long as the shortest
//!   envelope of the mode (`crypto::min_len`), so `pgv1:UFYBAR` followed
//!   by a few digits is refused;
//! - columns of any other type, which cannot hold ciphertext and to which
//!   pgveil never writes a value: NULL only.
//!
//! Each guard is named `pgveil_guard_<column>` on the column's table.
//! [`install_sql`] adds the guards `NOT VALID`, so that they can be added
//! while old plaintext rows are still being migrated (new rows are checked
//! at once), in one `DO` block per column that picks the check by the
//! kind of the column's type and does nothing if the guard exists, so it
//! can run any number of times; [`validate_sql`] checks the old rows once
//! they are encrypted. `pgveil guard` prints them.
//!
//! At login each session reads which guards exist (`catalog.rs`), and
//! [`warn_unguarded`] logs each missing or not yet validated guard once
//! per process. A session is never refused for it: the guards back up
//! pgveil's own refusals, they are not a condition of them.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use tracing::warn;

use crate::protect::crypto::{min_len, mode_prefix, text_min_len, text_pattern};
use crate::protect::policy::{ColumnPolicy, Policy};

/// How every guard's name starts.
pub(crate) const NAME_PREFIX: &str = "pgveil_guard_";

/// The kind of the type `t` (a `pg_type` row) of a protected column:
/// `bytea`, `text` or `other` (see the module doc).
pub(crate) const TYPE_KIND: &str = "CASE \
    WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' \
    WHEN t.typcategory = 'S' AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc \
    THEN 'text' ELSE 'other' END";
/// PostgreSQL's longest identifier, in bytes; longer ones are truncated.
const MAX_IDENTIFIER: usize = 63;

/// The guard's constraint name for a column, as PostgreSQL stores it (cut
/// to 63 bytes, as PostgreSQL would cut it).
pub(crate) fn constraint_name(column: &str) -> String {
    let mut name = format!("{NAME_PREFIX}{column}");
    let mut end = name.len().min(MAX_IDENTIFIER);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// The SQL that adds every guard the policy needs, `NOT VALID`; running it
/// again changes nothing.
pub fn install_sql(policy: &Policy) -> String {
    policy.columns().map(install_column).collect()
}

/// The SQL that validates every guard, checking the rows written before it.
pub(crate) fn validate_sql(policy: &Policy) -> String {
    policy
        .columns()
        .map(|column| {
            format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {};\n",
                table(column),
                constraint_name(&column.column)
            )
        })
        .collect()
}

/// What `pgveil guard` prints: the guards to add, then the validation, as
/// comments, to run once old rows are encrypted.
pub fn script(policy: &Policy) -> String {
    let validate: String = validate_sql(policy)
        .lines()
        .map(|line| format!("-- {line}\n"))
        .collect();
    format!(
        "-- pgveil ciphertext guards: each protected column admits only NULL and pgveil's\n\
         -- ciphertext, so that writes pgveil does not see fail instead of storing plaintext.\n\
         -- Added NOT VALID: existing rows are not checked yet, new rows are.\n\
         {}\n\
         -- Once every existing row is encrypted, validate them (or run\n\
         -- `pgveil guard --validate`):\n\
         {validate}",
        install_sql(policy)
    )
}

/// `schema.table` of a column's table. Policy names are validated
/// unquoted identifiers, so they can be written as they are.
fn table(column: &ColumnPolicy) -> String {
    format!("{}.{}", column.schema, column.table)
}

/// The `DO` block adding one column's guard if its table has no
/// constraint of that name, with the check for the kind of the column's
/// type, as the catalog lookup tells them apart ([`TYPE_KIND`]): a type
/// that can hold neither envelope admits only NULL, since pgveil never
/// writes a value to it.
fn install_column(column: &ColumnPolicy) -> String {
    let table = table(column);
    let name = constraint_name(&column.column);
    let col = &column.column;
    let mode = column.encryption.into();
    let add = |check: String| {
        format!("ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({check}) NOT VALID")
    };
    let bytea = add(format!(
        "{col} IS NULL OR substring({col} FROM 1 FOR 4) = decode('{}', 'hex') \
         AND octet_length({col}) >= {}",
        hex::encode(mode_prefix(mode)),
        min_len(mode)
    ));
    // As text: a `char(n)` column's value without its padding.
    let text = add(format!(
        "{col} IS NULL OR {col}::text ~ '{}' AND octet_length({col}::text) >= {}",
        text_pattern(mode),
        text_min_len(mode)
    ));
    let other = add(format!("{col} IS NULL"));
    format!(
        "DO $pgveil$\n\
         BEGIN\n    \
             IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint\n                   \
                 WHERE conrelid = '{table}'::regclass AND conname = '{name}') THEN\n        \
                 CASE (SELECT {TYPE_KIND}\n              \
                     FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid\n              \
                     WHERE a.attrelid = '{table}'::regclass AND a.attname = '{col}' AND NOT a.attisdropped)\n        \
                 WHEN 'bytea' THEN\n            \
                     {bytea};\n        \
                 WHEN 'text' THEN\n            \
                     {text};\n        \
                 ELSE\n            \
                     {other};\n        \
                 END CASE;\n    \
             END IF;\n\
         END\n\
         $pgveil$;\n"
    )
}

/// What a session's catalog says of a protected column's guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// No constraint of the guard's name on the column's table.
    Missing,
    /// Added `NOT VALID`: rows written before it are unchecked.
    NotValidated,
    /// Validated: every row is checked.
    Valid,
}

/// A protected column (`schema.table.column`) and its guard.
pub(crate) type GuardState = (String, Guard);

/// Logs, once per process for each column, that its guard is missing or
/// not yet validated.
pub(crate) fn warn_unguarded(states: &[GuardState]) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut warned = WARNED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for (column, guard) in states {
        if *guard == Guard::Valid || !warned.insert(column.clone()) {
            continue;
        }
        if *guard == Guard::Missing {
            warn!(
                column = %column,
                "protected column {column} has no ciphertext guard: a write pgveil does not \
                 see (a view, function, rule or trigger created later, a direct connection) \
                 could store plaintext; add the guards with `pgveil guard --policy POLICY | psql`"
            );
        } else {
            warn!(
                column = %column,
                "the ciphertext guard of protected column {column} is not validated: rows \
                 written before it was added are unchecked; once they are encrypted, run \
                 `pgveil guard --policy POLICY --validate | psql`"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_str(
            "test.toml",
            "[[column]]\ntable = \"customers\"\ncolumn = \"email\"\nencryption = \"deterministic\"\n\
             [[column]]\ntable = \"crm.people\"\ncolumn = \"address\"\n",
        )
        .unwrap()
    }

    #[test]
    fn names_are_cut_to_postgresql_identifier_length() {
        assert_eq!(constraint_name("email"), "pgveil_guard_email");
        let long = "a".repeat(63);
        assert_eq!(constraint_name(&long).len(), 63);
        let accented = format!("{}é", "a".repeat(49));
        assert_eq!(
            constraint_name(&accented),
            format!("pgveil_guard_{}", "a".repeat(49))
        );
    }

    #[test]
    fn each_column_gets_the_check_of_its_mode_for_both_types() {
        let sql = install_sql(&policy());
        assert_eq!(sql.matches("DO $pgveil$").count(), 2);
        assert!(sql.contains(
            "ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_email CHECK (email IS NULL \
             OR email::text ~ '^pgv1:UFYBA[ghijklmnopqrstuv][A-Za-z0-9_-]*$' \
             AND octet_length(email::text) >= 43) NOT VALID"
        ));
        assert!(sql.contains(
            "CHECK (email IS NULL OR substring(email FROM 1 FOR 4) = decode('50560102', 'hex') \
             AND octet_length(email) >= 28)"
        ));
        assert!(sql.contains(
            "CHECK (address IS NULL OR substring(address FROM 1 FOR 4) = decode('50560101', 'hex') \
             AND octet_length(address) >= 40)"
        ));
        assert!(
            sql.contains("conrelid = 'crm.people'::regclass AND conname = 'pgveil_guard_address'")
        );
        // A type that can hold no envelope admits only NULL.
        assert!(sql.contains("ADD CONSTRAINT pgveil_guard_email CHECK (email IS NULL) NOT VALID"));
        assert!(sql.contains(&format!("CASE (SELECT {TYPE_KIND}")));
    }

    #[test]
    fn the_script_adds_and_shows_how_to_validate() {
        let script = script(&policy());
        assert!(script.contains(&install_sql(&policy())));
        assert!(script
            .contains("-- ALTER TABLE crm.people VALIDATE CONSTRAINT pgveil_guard_address;\n"));
        assert_eq!(
            validate_sql(&policy()),
            "ALTER TABLE crm.people VALIDATE CONSTRAINT pgveil_guard_address;\n\
             ALTER TABLE public.customers VALIDATE CONSTRAINT pgveil_guard_email;\n"
        );
    }

    #[test]
    fn the_sample_schema_installs_and_validates_the_sample_guards() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let policy = Policy::load(&[root.join("policies/crm.toml")]).unwrap();
        let schema = std::fs::read_to_string(root.join("policies/crm.sql")).unwrap();
        assert!(
            schema.contains(&install_sql(&policy)),
            "run pgveil guard for crm.sql"
        );
        assert!(schema.contains(&validate_sql(&policy)));
    }
}
