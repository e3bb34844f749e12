//! Column policies: which columns hold personal data, how they are
//! encrypted, and what each reader sees of them.
//!
//! A compliance officer writes policy files (`policies/*.toml`), one
//! `[[column]]` entry per protected column:
//!
//! ```toml
//! [[column]]
//! table = "public.customers"   # unqualified means public
//! column = "email"
//! encryption = "deterministic" # or "randomized" (the default)
//! mask = "email"               # the default is "redact"
//! reveal = { crm_app = "plaintext", support = "masked" }
//! default = "masked"           # the default is "null"
//! purposes = ["kyc"]           # optional
//! key_domain = "contact"       # optional
//! ticket = true                # optional: plaintext only under a ticket
//! approval = { rows = 1000 }   # optional: more plaintext rows need an approval
//! ```
//!
//! **Names.** Tables and columns are written as unquoted SQL identifiers
//! and compared as PostgreSQL compares them: ASCII letters are folded to
//! lowercase, so `Customers` is `public.customers`. Lookups
//! ([`Policy::column`]) take names as PostgreSQL resolved them (unquoted
//! names folded, quoted names as written). Role names are matched exactly
//! as PostgreSQL stores them in `pg_roles.rolname` (lowercase for roles
//! created without quotes), and purposes exactly as the application sets
//! them.
//!
//! **Deciding.** [`ColumnPolicy::decide`] takes the session's roles (its
//! login role and every role it is a member of). Among the `reveal` rules
//! naming one of them, the most revealing action wins, in the order
//! `plaintext` > `pseudonym` > `masked` > `null` > `deny`: being a member of
//! a role only ever adds access, as with SQL grants. When no rule names
//! one of the session's roles, the column's `default` applies.
//!
//! [`ColumnPolicy::policy_role`] names that rule's role, which the audit
//! log records (`"default"`, a name no rule may take, for the default).
//!
//! **Purposes.** A column with `purposes` shows plaintext only to a
//! session that declared one of them (`SET pgveil.purpose = 'kyc'`).
//! Outside those purposes a reader who would have had plaintext is treated
//! like any other reader: it gets the column's `default`, but never more
//! than `masked`, so that neither the value nor a pseudonym that links
//! records together leaves the declared purpose. Purposes do not change
//! the other actions.
//!
//! **Tickets.** A column with `ticket = true` shows plaintext only to a
//! session that declared a ticket (`SET pgveil.ticket = 'CASE-123'`), the
//! business need its access is tied to (GB/T 35273-2020 7.1 e). Without
//! one, a reader who would have had plaintext falls to the column's
//! `default` capped at `masked`, exactly as outside its purposes; the
//! statement is not refused, so that screens which also show the column
//! keep working, masked. pgveil cannot know whether a ticket exists: it
//! records the ticket with every access, for the review.
//!
//! **Approvals.** A column with `approval = { rows = N }` shows more than
//! `N` plaintext rows of it to one statement, portal or cursor (and, with
//! `[audit.bulk]`, within its window) only under an approval
//! (`pgveil approve`, `crate::audit::approvals`); without one the result
//! is refused with `42501` at row `N + 1`. The limit is counted by
//! `crate::read::meter`; the policy only holds `N`.
//!
//! **Key domains.** Columns with the same `key_domain` share keys, so
//! their ciphertexts or pseudonyms can be joined and compared; the default
//! domain is the column's own `schema.table.column`. Every column of a
//! domain must use the same `encryption`.
//!
//! Every problem in a policy file is reported with the file, the line and
//! what is wrong ([`PolicyError`]), including a column listed twice, in one
//! file or across files.

mod file;
mod mask;
mod mention;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub(crate) use mask::{Mask, MaskError};

use file::Entry;
pub(crate) use mention::TableMentions;

/// The schema of a table named without one.
const DEFAULT_SCHEMA: &str = "public";

/// What the audit log names the column's `default` rule as, when it
/// decided: no `reveal` rule may name a role so.
pub const DEFAULT_RULE: &str = "default";

/// What a reader gets for a protected column, from least to most
/// revealing (the derived order is that order).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The query is refused.
    Deny,
    /// The value reads as SQL NULL.
    Null,
    /// The value reads through the column's [`Mask`].
    Masked,
    /// A stable keyed hash of the value, the same wherever the value
    /// appears in the column's key domain.
    Pseudonym,
    /// The value itself.
    Plaintext,
}

/// How a protected column is encrypted.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// Equal values encrypt differently: the strongest, but the column
    /// cannot be searched.
    #[default]
    Randomized,
    /// Equal values encrypt equally, so `WHERE col = $1` still works.
    Deterministic,
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Randomized => "randomized",
            Self::Deterministic => "deterministic",
        })
    }
}

/// The policy of one protected column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnPolicy {
    /// The column's schema.
    pub schema: String,
    /// The column's table.
    pub table: String,
    /// The column's name.
    pub column: String,
    /// How values are encrypted.
    pub encryption: Encryption,
    /// What a reader granted the mask sees.
    pub mask: Mask,
    /// Role name → what members of that role get.
    pub reveal: BTreeMap<String, Action>,
    /// What a session none of whose roles has a rule gets.
    pub default: Action,
    /// If not empty, plaintext is shown only under one of these purposes.
    pub purposes: Vec<String>,
    /// The key domain: columns sharing it share keys.
    pub domain: String,
    /// More plaintext rows than this in one result (or bulk window) need
    /// an approval; `None`: no limit.
    pub approval_rows: Option<u64>,
    /// Plaintext only while the session has declared a ticket.
    pub ticket: bool,
}

impl ColumnPolicy {
    /// What a session with these roles (login role and every role it is
    /// a member of), this declared purpose and this declared ticket gets.
    pub fn decide(&self, roles: &[String], purpose: Option<&str>, ticket: Option<&str>) -> Action {
        let granted = roles
            .iter()
            .filter_map(|role| self.reveal.get(role))
            .copied()
            .max()
            .unwrap_or(self.default);
        let unticketed = self.ticket && ticket.is_none();
        if granted == Action::Plaintext && (!self.allows_purpose(purpose) || unticketed) {
            return self.default.min(Action::Masked);
        }
        granted
    }

    /// The roles of `roles` whose own rule (or the default) grants this
    /// column's plaintext: the policy roles an approval may name for a
    /// session of these roles.
    pub(crate) fn plaintext_roles<'r>(&self, roles: &'r [String]) -> Vec<&'r str> {
        roles
            .iter()
            .filter(|role| self.reveal.get(*role) == Some(&Action::Plaintext))
            .map(String::as_str)
            .collect()
    }

    /// The role of the `reveal` rule [`Self::decide`] applies for these
    /// roles (of equally revealing rules, the first by name); `None` for the
    /// `default`. Outside the column's purposes it is still that role,
    /// though the rule's plaintext falls to the default.
    pub fn policy_role(&self, roles: &[String]) -> Option<&str> {
        let mut deciding: Option<(&str, Action)> = None;
        for (role, &action) in &self.reveal {
            if roles.iter().any(|r| r == role) && deciding.is_none_or(|(_, best)| action > best) {
                deciding = Some((role, action));
            }
        }
        deciding.map(|(role, _)| role)
    }

    /// Whether plaintext may be shown under this declared purpose.
    pub(crate) fn allows_purpose(&self, purpose: Option<&str>) -> bool {
        self.purposes.is_empty()
            || purpose.is_some_and(|p| self.purposes.iter().any(|allowed| allowed == p))
    }

    /// `schema.table.column`.
    pub(crate) fn qualified_name(&self) -> String {
        qualified_name(&self.schema, &self.table, &self.column)
    }
}

/// `schema.table.column`: how errors name a column, and its default key
/// domain.
fn qualified_name(schema: &str, table: &str, column: &str) -> String {
    format!("{schema}.{table}.{column}")
}

/// A line of a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// Counted from 1.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// Where a column's policy was written: what `pgveil policy check` points
/// at when the schema disagrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The line of its `table`.
    pub table: Location,
    /// The line of its `column`.
    pub column: Location,
    /// The line of each role of its `reveal`.
    pub roles: BTreeMap<String, Location>,
}

/// A policy that cannot be used.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TOML error that the parser could not place on a line.
    #[error("{path}: {message}")]
    Syntax {
        /// The policy file.
        path: PathBuf,
        /// What the parser says.
        message: String,
    },
    /// A line of the file is wrong.
    #[error("{at}: {problem}")]
    Invalid {
        /// The line.
        at: Location,
        /// What is wrong there.
        problem: Problem,
    },
}

/// What is wrong at a line of a policy file.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Problem {
    /// Bad TOML, an unknown key, a value of the wrong type or an unknown
    /// `encryption`, `default` or `reveal` action, as the TOML parser
    /// words it.
    #[error("{0}")]
    Toml(String),
    /// A schema, table, column, role, purpose or domain name that cannot be used.
    #[error("{what} {name:?} {reason}")]
    BadName {
        /// What kind of name.
        what: &'static str,
        /// The name.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A mask that does not parse.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// An empty purpose list.
    #[error("purposes is empty: list at least one purpose, or remove it to allow any")]
    NoPurposes,
    /// A column listed twice.
    #[error("column {column} is already listed at {first}")]
    Duplicate {
        /// The column.
        column: String,
        /// Where it was first listed.
        first: Location,
    },
    /// Columns of one key domain with different encryption.
    #[error(
        "key domain {domain:?} is {first_encryption} at {first}, but this column is \
         {encryption}: the columns of a key domain must use the same encryption"
    )]
    DomainConflict {
        /// The key domain.
        domain: String,
        /// This column's encryption.
        encryption: Encryption,
        /// The encryption of the domain's first column.
        first_encryption: Encryption,
        /// Where it was first listed.
        first: Location,
    },
}

/// schema → table → column → policy.
type Schemas = BTreeMap<String, BTreeMap<String, BTreeMap<String, ColumnPolicy>>>;

/// Every protected column, from all policy files.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    schemas: Schemas,
    mentions: TableMentions,
    /// Where each column (by qualified name) was written.
    sources: HashMap<String, Source>,
}

impl Policy {
    /// Loads these policy files, in order.
    pub fn load(paths: &[PathBuf]) -> Result<Self, PolicyError> {
        let mut builder = Builder::default();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            builder.add_file(path, &text)?;
        }
        Ok(builder.finish())
    }

    /// Loads every `*.toml` file in `dir`, sorted by name.
    pub(crate) fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let read_error = |source| PolicyError::Read {
            path: dir.into(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        Self::load(&paths)
    }

    /// Parses one policy file's text; `name` stands for its path in errors.
    pub fn from_str(name: &str, text: &str) -> Result<Self, PolicyError> {
        let mut builder = Builder::default();
        builder.add_file(Path::new(name), text)?;
        Ok(builder.finish())
    }

    /// The policy of a column, named as PostgreSQL resolved it.
    pub fn column(&self, schema: &str, table: &str, column: &str) -> Option<&ColumnPolicy> {
        self.table_columns(schema, table)?.get(column)
    }

    /// Whether any column of this table is protected.
    pub(crate) fn is_protected_table(&self, schema: &str, table: &str) -> bool {
        self.table_columns(schema, table).is_some()
    }

    /// The protected columns of a table, by column name.
    pub(crate) fn columns_of(
        &self,
        schema: &str,
        table: &str,
    ) -> impl Iterator<Item = &ColumnPolicy> {
        self.table_columns(schema, table)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Every table with a protected column, as `(schema, table)`, sorted.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.schemas.iter().flat_map(|(schema, tables)| {
            tables
                .keys()
                .map(move |table| (schema.as_str(), table.as_str()))
        })
    }

    /// Every protected column, sorted by schema, table and column.
    pub fn columns(&self) -> impl Iterator<Item = &ColumnPolicy> {
        self.schemas
            .values()
            .flat_map(BTreeMap::values)
            .flat_map(BTreeMap::values)
    }

    /// The distinct key domains, sorted: one key set each.
    pub fn domains(&self) -> Vec<String> {
        let domains: BTreeSet<&str> = self.columns().map(|c| c.domain.as_str()).collect();
        domains.into_iter().map(String::from).collect()
    }

    /// Whether `sql` may mention a protected table: a fast check with no
    /// false negatives, so that a statement for which it is false can be
    /// relayed unparsed. See the `mention` module for why it is safe.
    pub(crate) fn mentions_protected_table(&self, sql: &str) -> bool {
        self.mentions.in_sql(sql)
    }

    /// Where a column's policy was written.
    pub fn source(&self, column: &ColumnPolicy) -> Option<&Source> {
        self.sources.get(&column.qualified_name())
    }

    fn table_columns(&self, schema: &str, table: &str) -> Option<&BTreeMap<String, ColumnPolicy>> {
        self.schemas.get(schema)?.get(table)
    }
}

/// Gathers the entries of several files, checking them against each other.
#[derive(Default)]
struct Builder {
    schemas: Schemas,
    /// Where each column (by qualified name) was listed.
    listed_at: HashMap<String, Location>,
    /// Each key domain's encryption and where it was first set.
    domains: HashMap<String, (Encryption, Location)>,
    sources: HashMap<String, Source>,
}

impl Builder {
    fn add_file(&mut self, path: &Path, text: &str) -> Result<(), PolicyError> {
        for entry in file::parse(path, text)? {
            self.add(entry)?;
        }
        Ok(())
    }

    fn add(&mut self, Entry { policy, at, source }: Entry) -> Result<(), PolicyError> {
        let invalid = |problem| PolicyError::Invalid {
            at: at.clone(),
            problem,
        };
        let name = policy.qualified_name();
        if let Some(first) = self.listed_at.get(&name) {
            return Err(invalid(Problem::Duplicate {
                column: name,
                first: first.clone(),
            }));
        }
        if let Some((first_encryption, first)) = self.domains.get(&policy.domain) {
            if *first_encryption != policy.encryption {
                return Err(invalid(Problem::DomainConflict {
                    domain: policy.domain,
                    encryption: policy.encryption,
                    first_encryption: *first_encryption,
                    first: first.clone(),
                }));
            }
        }
        self.domains
            .entry(policy.domain.clone())
            .or_insert_with(|| (policy.encryption, at.clone()));
        self.sources.insert(name.clone(), source);
        self.listed_at.insert(name, at);
        self.schemas
            .entry(policy.schema.clone())
            .or_default()
            .entry(policy.table.clone())
            .or_default()
            .insert(policy.column.clone(), policy);
        Ok(())
    }

    fn finish(self) -> Policy {
        let mentions = TableMentions::new(
            self.schemas
                .values()
                .flat_map(BTreeMap::keys)
                .map(String::as_str),
        );
        Policy {
            schemas: self.schemas,
            mentions,
            sources: self.sources,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_roles;
