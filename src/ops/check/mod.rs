//! `pgveil policy check`: the policy compared with the live schema.
//!
//! Every table and column the policy names must exist (else an error on
//! the policy line, with the nearest existing name), be of a type that can
//! hold ciphertext, and have a key in the keyring; every role of a
//! `reveal` should exist, and every column should have a validated guard
//! and hold only ciphertext under its domain's current key. Errors stop
//! `serve` (at start and on reload); warnings are what `migrate`, `pgveil
//! guard` or a role fix would mend.
//!
//! - `schema`: the catalog facts, read in a few queries.
//! - `rows`: what each column's values are, from their headers.
//! - `suggest`: "did you mean".
//! - `print`: the table and JSON forms.

mod print;
pub(crate) mod rows;
mod schema;
mod suggest;

use serde::Serialize;
use tokio_postgres::Client;

use crate::protect::crypto::{min_len, KeyRef, Mode};
use crate::protect::guard::constraint_name;
use crate::protect::keyring::{KeyKind, KeyListing};
use crate::protect::policy::{ColumnPolicy, Location, Policy};
pub(crate) use print::{print_json, print_table};
use rows::RowCounts;
use schema::Schema;
use suggest::did_you_mean;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    /// Something to mend (a guard, plaintext rows, an unknown role);
    /// protection still holds.
    Warning,
    /// The policy does not fit the database: `serve` refuses it.
    Error,
}

/// One thing wrong, placed on a policy line when it comes from one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    /// Error or warning.
    pub(crate) severity: Severity,
    /// The policy line, if the finding is about one.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "print::location"
    )]
    pub(crate) at: Option<Location>,
    /// What is wrong and how to mend it.
    pub(crate) message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The state of a column's ciphertext guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Guard {
    /// No guard.
    Missing,
    /// Added `NOT VALID`: new rows are checked, old ones are not yet.
    NotValidated,
    /// Every row is checked.
    Validated,
}

/// What the check found for one policy column.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ColumnReport {
    /// `schema.table.column`.
    pub(crate) column: String,
    /// Its SQL type, when it exists.
    pub(crate) type_name: Option<String>,
    /// `randomized` or `deterministic`.
    pub(crate) encryption: String,
    /// The version of its domain's key new values are written with.
    pub(crate) key_version: Option<u32>,
    /// Its guard, when it exists.
    pub(crate) guard: Option<Guard>,
    /// Its values, when counted.
    pub(crate) rows: Option<RowCounts>,
}

/// What `policy check` found.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    /// The server, database and role checked against.
    pub(crate) target: String,
    /// One per policy column.
    pub(crate) columns: Vec<ColumnReport>,
    /// Errors first, then warnings, each in policy order.
    pub(crate) findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error.
    pub(crate) fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// 0 when nothing is wrong, 1 with warnings only, 2 with an error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.findings.iter().map(|f| f.severity).max() {
            None => 0,
            Some(Severity::Warning) => 1,
            Some(Severity::Error) => 2,
        }
    }
}

/// Compares `policy` with the database `client` is connected to, and with
/// the keys of its keyring (`keys`: the listing, or why it could not be
/// read). With `count_rows`, also counts each column's values by what
/// they are, which reads every row of the protected tables.
pub(crate) async fn run(
    client: &Client,
    target: String,
    policy: &Policy,
    keys: Result<Vec<KeyListing>, String>,
    count_rows: bool,
) -> Result<Report, tokio_postgres::Error> {
    let schema = Schema::read(client, policy).await?;
    let mut findings = Vec::new();
    let keys = match keys {
        Ok(keys) => keys,
        Err(why) => {
            findings.push(Finding {
                severity: Severity::Error,
                at: None,
                message: format!("the keyring cannot be read: {why}"),
            });
            Vec::new()
        }
    };
    let mut columns = Vec::new();
    for column in policy.columns() {
        let mut check = ColumnCheck {
            policy,
            schema: &schema,
            column,
            findings: &mut findings,
        };
        let mut report = check.column(&keys);
        if count_rows {
            if let Some(kind) = check.kind() {
                let (refs, current) = domain_keys(&keys, &column.domain).unwrap_or_default();
                let counts = rows::count(client, column, kind, &refs, current).await?;
                check.rows(&counts);
                report.rows = Some(counts);
            }
        }
        columns.push(report);
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(Report {
        target,
        columns,
        findings,
    })
}

/// The key refs of a domain's data keys and its current one; `None` when
/// the keyring has no key for it.
pub(crate) fn domain_keys(
    keys: &[KeyListing],
    domain: &str,
) -> Option<(Vec<KeyRef>, Option<KeyRef>)> {
    let of_domain: Vec<&KeyListing> = keys
        .iter()
        .filter(|k| k.kind == KeyKind::Data && k.domain == domain)
        .collect();
    if of_domain.is_empty() {
        return None;
    }
    let refs = of_domain
        .iter()
        .map(|k| KeyRef {
            id: k.id,
            version: k.version,
        })
        .collect();
    let current = of_domain.iter().find(|k| k.current).map(|k| KeyRef {
        id: k.id,
        version: k.version,
    });
    Some((refs, current))
}

/// The checks of one policy column.
struct ColumnCheck<'a> {
    policy: &'a Policy,
    schema: &'a Schema,
    column: &'a ColumnPolicy,
    findings: &'a mut Vec<Finding>,
}

impl ColumnCheck<'_> {
    fn push(&mut self, severity: Severity, at: Option<&Location>, message: String) {
        self.findings.push(Finding {
            severity,
            at: at.cloned(),
            message,
        });
    }

    /// The column's type kind (`text` or `bytea`), when it exists and can
    /// hold ciphertext.
    fn kind(&self) -> Option<&str> {
        let relation = self
            .schema
            .relations
            .get(&(self.column.schema.clone(), self.column.table.clone()))?;
        let kind = relation.columns.get(&self.column.column)?.kind.as_str();
        (kind != "other").then_some(kind)
    }

    fn column(&mut self, keys: &[KeyListing]) -> ColumnReport {
        let c = self.column;
        let source = self.policy.source(c);
        let (table_at, column_at) = (
            source.map(|s| s.table.clone()),
            source.map(|s| s.column.clone()),
        );
        let mut report = ColumnReport {
            column: format!("{}.{}.{}", c.schema, c.table, c.column),
            type_name: None,
            encryption: c.encryption.to_string(),
            key_version: None,
            guard: None,
            rows: None,
        };
        if let Some(source) = source {
            for (role, at) in &source.roles {
                if role != "public" && !self.schema.roles.contains(role) {
                    let hint = did_you_mean(role, self.schema.roles.iter().map(String::as_str));
                    self.push(
                        Severity::Warning,
                        Some(at),
                        format!(
                            "role {role} (in the reveal of {}) does not exist{hint}",
                            report.column
                        ),
                    );
                }
            }
        }
        if !self.schema.schemas.contains(&c.schema) {
            let hint = did_you_mean(&c.schema, self.schema.schemas.iter().map(String::as_str));
            self.push(
                Severity::Error,
                table_at.as_ref(),
                format!("schema {} does not exist{hint}", c.schema),
            );
            return report;
        }
        let Some(relation) = self
            .schema
            .relations
            .get(&(c.schema.clone(), c.table.clone()))
        else {
            let in_schema = self
                .schema
                .relations
                .keys()
                .filter(|(schema, _)| *schema == c.schema)
                .map(|(_, table)| table.as_str());
            let hint = did_you_mean(&c.table, in_schema);
            self.push(
                Severity::Error,
                table_at.as_ref(),
                format!("table {}.{} does not exist{hint}", c.schema, c.table),
            );
            return report;
        };
        if !matches!(relation.kind, 'r' | 'p') {
            self.push(
                Severity::Warning,
                table_at.as_ref(),
                format!(
                    "{}.{} is not a table (relkind {}): protect the column of the table \
                     it reads from",
                    c.schema, c.table, relation.kind
                ),
            );
        }
        let Some(found) = relation.columns.get(&c.column) else {
            let hint = did_you_mean(&c.column, relation.columns.keys().map(String::as_str));
            self.push(
                Severity::Error,
                column_at.as_ref(),
                format!("column {} does not exist{hint}", report.column),
            );
            return report;
        };
        report.type_name = Some(found.type_name.clone());
        match domain_keys(keys, &c.domain) {
            Some((_, current)) => report.key_version = current.map(|k| k.version),
            None if keys.is_empty() => {}
            None => self.push(
                Severity::Error,
                column_at.as_ref(),
                format!(
                    "key domain {} of column {} has no key in the keyring; \
                     run `pgveil keys init`",
                    c.domain, report.column
                ),
            ),
        }

        self.column_type(found, column_at.as_ref(), &report.column);
        let guard_name = constraint_name(&c.column);
        report.guard = Some(
            match self
                .schema
                .guards
                .get(&(c.schema.clone(), c.table.clone(), guard_name))
            {
                None => Guard::Missing,
                Some(false) => Guard::NotValidated,
                Some(true) => Guard::Validated,
            },
        );
        match report.guard {
            Some(Guard::Missing) => self.push(
                Severity::Warning,
                column_at.as_ref(),
                format!(
                    "column {} has no ciphertext guard: writes pgveil does not see could \
                     store plaintext; add it with `pgveil guard --policy ... | psql`",
                    report.column
                ),
            ),
            Some(Guard::NotValidated) => self.push(
                Severity::Warning,
                column_at.as_ref(),
                format!(
                    "the guard of column {} is not validated: rows written before it are \
                     unchecked; run `pgveil migrate`, which validates it",
                    report.column
                ),
            ),
            _ => {}
        }
        report
    }

    /// Whether the column's type can hold its ciphertext.
    fn column_type(&mut self, found: &schema::Column, at: Option<&Location>, name: &str) {
        if found.kind == "other" {
            self.push(
                Severity::Error,
                at,
                format!(
                    "column {name} is of type {}, which cannot hold ciphertext: a protected \
                     column must be of a text type or bytea",
                    found.type_name
                ),
            );
            return;
        }
        let Some(limit) = found.max_chars else {
            return;
        };
        // The text form: `pgv1:` and the base64 of the envelope.
        let overhead = min_len(Mode::from(self.column.encryption));
        let longest = (usize::try_from(limit).unwrap_or(0).saturating_sub(5) * 3 / 4)
            .saturating_sub(overhead);
        let (severity, consequence) = if longest == 0 {
            (Severity::Error, "cannot hold any ciphertext".to_owned())
        } else {
            (
                Severity::Warning,
                format!("holds the ciphertext of values up to {longest} bytes only"),
            )
        };
        self.push(
            severity,
            at,
            format!(
                "column {name} is {}, which {consequence}; make it text \
                 (ALTER TABLE ... ALTER COLUMN ... TYPE text)",
                found.type_name
            ),
        );
    }

    /// Warnings for values that are not yet as the policy and keyring say.
    fn rows(&mut self, counts: &RowCounts) {
        let at = self.policy.source(self.column).map(|s| s.column.clone());
        let name = format!(
            "{}.{}.{}",
            self.column.schema, self.column.table, self.column.column
        );
        let mut pending = Vec::new();
        if counts.plaintext > 0 {
            pending.push(format!("{} plaintext", counts.plaintext));
        }
        if counts.old() > 0 {
            pending.push(format!("{} under an older key version", counts.old()));
        }
        if counts.other_mode > 0 {
            pending.push(format!("{} in the other mode", counts.other_mode));
        }
        if !pending.is_empty() {
            self.push(
                Severity::Warning,
                at.as_ref(),
                format!(
                    "column {name} holds {} value(s); run `pgveil migrate`",
                    pending.join(", ")
                ),
            );
        }
        if counts.unknown > 0 {
            self.push(
                Severity::Warning,
                at.as_ref(),
                format!(
                    "column {name} holds {} value(s) that look like ciphertext but under no \
                     key of domain {}: pgveil reveals them to nobody",
                    counts.unknown, self.column.domain
                ),
            );
        }
    }
}

/// The check `serve` runs on its policy, at start and on each reload: the
/// schema only, no row is read. `Ok` with the warnings to log, or `Err`
/// with every error, one per line; without a `[maintenance]` section
/// there is no connection to check with, and that is a warning.
pub(crate) async fn before_serving(
    config: &crate::proxy::config::Config,
    policy: &Policy,
) -> Result<Vec<Finding>, String> {
    if config.maintenance.is_none() {
        return Ok(vec![Finding {
            severity: Severity::Warning,
            at: None,
            message: "the policy was not compared with the database's schema: configure \
                      [maintenance] so that a misspelt table or column stops pgveil"
                .into(),
        }]);
    }
    let (client, target) = crate::ops::maintenance::connect(config)
        .await
        .map_err(|e| format!("cannot check the policy against the database: {e}"))?;
    let keys = keyring_listing(config);
    let report = run(&client, target.to_string(), policy, keys, false)
        .await
        .map_err(|e| format!("cannot check the policy against the database: {e}"))?;
    if report.has_errors() {
        let errors: Vec<String> = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(Finding::to_string)
            .collect();
        return Err(errors.join("\n"));
    }
    Ok(report.findings)
}

/// The keys of the configured keyring, without any secret.
pub(crate) fn keyring_listing(
    config: &crate::proxy::config::Config,
) -> Result<Vec<KeyListing>, String> {
    let path = config
        .keyring
        .as_deref()
        .ok_or("the configuration names no keyring")?;
    crate::protect::keyring::Keyring::list(path).map_err(|e| e.to_string())
}
