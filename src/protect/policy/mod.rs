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
}

impl ColumnPolicy {
    /// What a session with these roles (login role and every role it is
    /// a member of) and this declared purpose gets.
    pub fn decide(&self, roles: &[String], purpose: Option<&str>) -> Action {
        let granted = roles
            .iter()
            .filter_map(|role| self.reveal.get(role))
            .copied()
            .max()
            .unwrap_or(self.default);
        if granted == Action::Plaintext && !self.allows_purpose(purpose) {
            return self.default.min(Action::Masked);
        }
        granted
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
mod tests_roles;
#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// A column revealing plaintext to `app`, pseudonyms to `analyst` and
    /// masked values to `support`, with the given default and purposes.
    fn column(default: Action, purposes: &[&str]) -> ColumnPolicy {
        ColumnPolicy {
            schema: "public".into(),
            table: "customers".into(),
            column: "email".into(),
            encryption: Encryption::Deterministic,
            mask: Mask::Email,
            reveal: BTreeMap::from([
                ("app".into(), Action::Plaintext),
                ("analyst".into(), Action::Pseudonym),
                ("support".into(), Action::Masked),
                ("blocked".into(), Action::Deny),
            ]),
            default,
            purposes: roles(purposes),
            domain: "public.customers.email".into(),
        }
    }

    #[test]
    fn actions_order_from_least_to_most_revealing() {
        use Action::*;
        assert!(Deny < Null && Null < Masked && Masked < Pseudonym && Pseudonym < Plaintext);
    }

    #[test]
    fn a_matching_role_decides() {
        let c = column(Action::Null, &[]);
        assert_eq!(c.decide(&roles(&["app"]), None), Action::Plaintext);
        assert_eq!(c.decide(&roles(&["support"]), None), Action::Masked);
        assert_eq!(c.decide(&roles(&["analyst"]), None), Action::Pseudonym);
        assert_eq!(c.decide(&roles(&["blocked"]), None), Action::Deny);
    }

    #[test]
    fn the_most_revealing_matching_role_wins() {
        let c = column(Action::Null, &[]);
        let r = roles(&["alice", "support", "analyst"]);
        assert_eq!(c.decide(&r, None), Action::Pseudonym);
        let r = roles(&["blocked", "support"]);
        assert_eq!(c.decide(&r, None), Action::Masked);
        let r = roles(&["support", "app", "blocked"]);
        assert_eq!(c.decide(&r, None), Action::Plaintext);
    }

    #[test]
    fn no_matching_role_gets_the_default() {
        let c = column(Action::Masked, &[]);
        assert_eq!(c.decide(&roles(&["alice", "sales"]), None), Action::Masked);
        assert_eq!(c.decide(&[], None), Action::Masked);
        let c = column(Action::Deny, &[]);
        assert_eq!(c.decide(&roles(&["alice"]), Some("kyc")), Action::Deny);
    }

    #[test]
    fn role_names_match_exactly() {
        let c = column(Action::Null, &[]);
        assert_eq!(c.decide(&roles(&["App", "APP"]), None), Action::Null);
    }

    #[test]
    fn plaintext_needs_a_listed_purpose() {
        let c = column(Action::Null, &["kyc", "fraud"]);
        let app = roles(&["app"]);
        assert_eq!(c.decide(&app, Some("kyc")), Action::Plaintext);
        assert_eq!(c.decide(&app, Some("fraud")), Action::Plaintext);
        assert_eq!(c.decide(&app, None), Action::Null);
        assert_eq!(c.decide(&app, Some("marketing")), Action::Null);
        assert_eq!(c.decide(&app, Some("KYC")), Action::Null);
    }

    #[test]
    fn outside_its_purposes_plaintext_falls_to_the_default_capped_at_masked() {
        let app = roles(&["app"]);
        let c = column(Action::Masked, &["kyc"]);
        assert_eq!(c.decide(&app, None), Action::Masked);
        let c = column(Action::Pseudonym, &["kyc"]);
        assert_eq!(c.decide(&app, Some("marketing")), Action::Masked);
        let c = column(Action::Plaintext, &["kyc"]);
        assert_eq!(c.decide(&roles(&["alice"]), None), Action::Masked);
        assert_eq!(c.decide(&roles(&["alice"]), Some("kyc")), Action::Plaintext);
        let c = column(Action::Deny, &["kyc"]);
        assert_eq!(c.decide(&app, None), Action::Deny);
    }

    #[test]
    fn purposes_do_not_change_other_actions() {
        let c = column(Action::Null, &["kyc"]);
        assert_eq!(c.decide(&roles(&["analyst"]), None), Action::Pseudonym);
        assert_eq!(c.decide(&roles(&["support"]), Some("x")), Action::Masked);
    }

    /// Parses several files' texts as one policy.
    fn policy(files: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        let mut builder = Builder::default();
        for (name, text) in files {
            builder.add_file(Path::new(name), text)?;
        }
        Ok(builder.finish())
    }

    /// The location and message of a policy error placed on a line.
    fn invalid(result: Result<Policy, PolicyError>) -> (Location, String) {
        let err = result.expect_err("an error");
        let message = err.to_string();
        match err {
            PolicyError::Invalid { at, .. } => (at, message),
            other => panic!("not placed on a line: {other}"),
        }
    }

    fn at(path: &str, line: usize) -> Location {
        Location {
            path: path.into(),
            line,
        }
    }

    const NOTES: &str = "[[column]]\ntable = \"crm.notes\"\ncolumn = \"body\"\n";

    #[test]
    fn a_column_listed_twice_in_one_file_is_an_error() {
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\n\n\
                    [[column]]\ntable = \"public.T\"\ncolumn = \"C\"\n";
        let (location, message) = invalid(Policy::from_str("a.toml", text));
        assert_eq!(location, at("a.toml", 7));
        assert_eq!(
            message,
            "a.toml:7: column public.t.c is already listed at a.toml:3"
        );
    }

    #[test]
    fn a_column_listed_in_two_files_is_an_error() {
        let other = format!("# moved here\n{NOTES}");
        let (location, message) = invalid(policy(&[("a.toml", NOTES), ("b.toml", &other)]));
        assert_eq!(location, at("b.toml", 4));
        assert!(message.contains("crm.notes.body is already listed at a.toml:3"));
    }

    #[test]
    fn a_key_domain_has_one_encryption() {
        let a = "[[column]]\ntable = \"t\"\ncolumn = \"a\"\n\
                 encryption = \"deterministic\"\nkey_domain = \"contact\"\n";
        let b = "[[column]]\ntable = \"u\"\ncolumn = \"b\"\nkey_domain = \"contact\"\n";
        let (location, message) = invalid(policy(&[("a.toml", a), ("b.toml", b)]));
        assert_eq!(location, at("b.toml", 3));
        assert!(
            message.contains("key domain \"contact\" is deterministic at a.toml:3"),
            "{message}"
        );
        assert!(message.contains("this column is randomized"), "{message}");
    }

    #[test]
    fn columns_of_one_encryption_share_a_key_domain() {
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"a\"\nkey_domain = \"Contact\"\n\
                    [[column]]\ntable = \"u\"\ncolumn = \"b\"\nkey_domain = \"contact\"\n\
                    [[column]]\ntable = \"u\"\ncolumn = \"c\"\n";
        let p = Policy::from_str("p.toml", text).unwrap();
        assert_eq!(p.domains(), ["contact", "public.u.c"]);
    }

    #[test]
    fn looks_up_tables_and_columns() {
        let p = policy(&[("a.toml", GOOD), ("b.toml", NOTES)]).unwrap();
        assert!(p.is_protected_table("public", "customers"));
        assert!(p.is_protected_table("crm", "notes"));
        assert!(!p.is_protected_table("public", "notes"));
        assert!(!p.is_protected_table("public", "Customers"));
        assert_eq!(
            p.column("public", "customers", "email").map(|c| c.mask),
            Some(Mask::Email)
        );
        assert!(p.column("public", "customers", "segment").is_none());
        assert!(p.column("crm", "customers", "email").is_none());
        assert_eq!(
            p.tables().collect::<Vec<_>>(),
            [("crm", "notes"), ("public", "customers")]
        );
        let names: Vec<String> = p.columns().map(ColumnPolicy::qualified_name).collect();
        assert_eq!(
            names,
            [
                "crm.notes.body",
                "public.customers.email",
                "public.customers.national_id"
            ]
        );
        let of_customers: Vec<&str> = p
            .columns_of("public", "customers")
            .map(|c| c.column.as_str())
            .collect();
        assert_eq!(of_customers, ["email", "national_id"]);
        assert_eq!(p.columns_of("public", "orders").count(), 0);
        assert_eq!(
            p.domains(),
            [
                "crm.notes.body",
                "public.customers.email",
                "public.customers.national_id"
            ]
        );
    }

    const GOOD: &str = r#"
[[column]]
table = "public.customers"
column = "email"
encryption = "deterministic"
mask = "email"
reveal = { crm_app = "plaintext", support = "masked" }
default = "masked"

[[column]]
table = "customers"
column = "national_id"
mask = "last4"
reveal = { kyc_officer = "plaintext" }
purposes = ["kyc"]
"#;

    #[test]
    fn mentions_protected_tables_in_any_spelling() {
        let p = Policy::from_str("p.toml", GOOD).unwrap();
        assert!(p.mentions_protected_table("SELECT * FROM Customers"));
        assert!(p.mentions_protected_table("select email from public.customers"));
        assert!(p.mentions_protected_table("SELECT * FROM \"customers\""));
        assert!(p.mentions_protected_table("UPDATE CUSTOMERS SET segment = 'x'"));
        assert!(!p.mentions_protected_table("select 1"));
        assert!(!p.mentions_protected_table("SELECT amount FROM orders"));
        let empty = Policy::from_str("empty.toml", "").unwrap();
        assert!(!empty.mentions_protected_table("SELECT * FROM customers"));
        assert!(empty.domains().is_empty());
    }

    #[test]
    fn loads_the_toml_files_of_a_directory_in_name_order() {
        let dir = std::env::temp_dir().join(format!("pgveil-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.toml"), NOTES).unwrap();
        std::fs::write(dir.join("a.toml"), NOTES).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a policy").unwrap();
        let result = Policy::load_dir(&dir);
        std::fs::remove_file(dir.join("a.toml")).unwrap();
        let (location, _) = invalid(result);
        assert_eq!(location, at(dir.join("b.toml").to_str().unwrap(), 3));
        let p = Policy::load_dir(&dir).unwrap();
        assert!(p.is_protected_table("crm", "notes"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let missing = PathBuf::from("/nonexistent/pgveil/policy.toml");
        let err = Policy::load(&[missing]).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }));
        assert!(err
            .to_string()
            .starts_with("cannot read /nonexistent/pgveil/policy.toml: "));
        let err = Policy::load_dir(Path::new("/nonexistent/pgveil")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("cannot read /nonexistent/pgveil: "));
    }

    #[test]
    fn the_sample_crm_policy_decides_as_documented() {
        let p = Policy::from_str("crm.toml", include_str!("../../../policies/crm.toml")).unwrap();
        let decide = |column: &str, role: &str, purpose: Option<&str>| {
            p.column("public", "customers", column)
                .unwrap()
                .decide(&roles(&["alice", role]), purpose)
        };
        use Action::*;
        for column in ["full_name", "email", "phone", "address"] {
            assert_eq!(decide(column, "crm_app", None), Plaintext, "{column}");
            assert_eq!(decide(column, "support", None), Masked, "{column}");
            assert_eq!(decide(column, "nobody", None), Null, "{column}");
        }
        assert_eq!(decide("email", "analyst", None), Pseudonym);
        assert_eq!(decide("phone", "analyst", None), Pseudonym);
        assert_eq!(decide("full_name", "analyst", None), Null);
        assert_eq!(decide("address", "analyst", None), Null);

        assert_eq!(decide("national_id", "kyc_officer", Some("kyc")), Plaintext);
        assert_eq!(decide("national_id", "crm_app", Some("kyc")), Plaintext);
        assert_eq!(decide("national_id", "kyc_officer", None), Null);
        assert_eq!(decide("national_id", "crm_app", Some("marketing")), Null);
        assert_eq!(decide("national_id", "support", Some("kyc")), Masked);
        assert_eq!(decide("national_id", "analyst", Some("kyc")), Null);

        let column = |name: &str| p.column("public", "customers", name).unwrap();
        assert_eq!(column("email").encryption, Encryption::Deterministic);
        assert_eq!(column("phone").encryption, Encryption::Deterministic);
        assert_eq!(column("national_id").encryption, Encryption::Randomized);
        assert_eq!(
            column("national_id").mask.apply("110105194912310021"),
            "**************0021"
        );
        assert!(p.column("public", "customers", "segment").is_none());
        assert!(!p.is_protected_table("public", "orders"));
        assert_eq!(p.domains().len(), 5);
    }

    #[test]
    fn without_purposes_any_purpose_is_allowed() {
        let c = column(Action::Null, &[]);
        assert!(c.allows_purpose(None));
        assert!(c.allows_purpose(Some("anything")));
        assert_eq!(c.decide(&roles(&["app"]), Some("x")), Action::Plaintext);
    }
}
