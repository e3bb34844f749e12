//! One policy file: its TOML read into checked column policies.
//!
//! The TOML parser rejects bad syntax, unknown keys, values of the wrong
//! type and unknown `encryption` or action names; this module checks what
//! the parser cannot (names, masks, purposes) and places every problem on
//! a line of the file. Checks between columns (duplicates, key domains)
//! are the caller's, since they span files.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{
    qualified_name, Action, ColumnPolicy, Encryption, Location, Mask, PolicyError, Problem, Source,
    DEFAULT_SCHEMA,
};

/// PostgreSQL truncates identifiers longer than this many bytes.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A checked column policy and where its `column` key is.
pub(super) struct Entry {
    pub(super) policy: ColumnPolicy,
    pub(super) at: Location,
    pub(super) source: Source,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    column: Vec<RawColumn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    table: Spanned<String>,
    column: Spanned<String>,
    #[serde(default)]
    encryption: Encryption,
    mask: Option<Spanned<String>>,
    #[serde(default)]
    reveal: BTreeMap<Spanned<String>, Action>,
    default: Option<Action>,
    purposes: Option<Spanned<Vec<Spanned<String>>>>,
    key_domain: Option<Spanned<String>>,
    approval: Option<RawApproval>,
    #[serde(default)]
    ticket: bool,
}

/// `approval = { rows = N }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    rows: u64,
}

/// Reads the column policies of one file.
pub(super) fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, PolicyError> {
    let source = Reader { path, text };
    let file: RawFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    file.column
        .into_iter()
        .map(|raw| source.column(raw))
        .collect()
}

/// The file being read, to turn byte offsets into locations.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Reader<'_> {
    fn at(&self, span: Range<usize>) -> Location {
        let before = &self.text.as_bytes()[..span.start.min(self.text.len())];
        Location {
            path: self.path.into(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        }
    }

    fn toml_error(&self, error: &toml::de::Error) -> PolicyError {
        // One line: the parser puts what it expected on a line of its own.
        let message = error.message().trim_end().replace('\n', ": ");
        match error.span() {
            Some(span) => PolicyError::Invalid {
                at: self.at(span),
                problem: Problem::Toml(message),
            },
            None => PolicyError::Syntax {
                path: self.path.into(),
                message,
            },
        }
    }

    /// Runs `check` on a value, placing its problem on the value's line.
    fn check<T, U>(
        &self,
        value: &Spanned<T>,
        check: impl FnOnce(&T) -> Result<U, Problem>,
    ) -> Result<U, PolicyError> {
        check(value.get_ref()).map_err(|problem| PolicyError::Invalid {
            at: self.at(value.span()),
            problem,
        })
    }

    fn column(&self, raw: RawColumn) -> Result<Entry, PolicyError> {
        let (schema, table) = self.check(&raw.table, |t| table_name(t))?;
        let column = self.check(&raw.column, |c| identifier("column", c))?;
        let mask = match &raw.mask {
            Some(mask) => self.check(mask, |m| Ok(m.parse::<Mask>()?))?,
            None => Mask::Redact,
        };
        let mut reveal = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for (role, action) in raw.reveal {
            self.check(&role, |r| role_name(r))?;
            roles.insert(role.get_ref().clone(), self.at(role.span()));
            reveal.insert(role.into_inner(), action);
        }
        let purposes = match &raw.purposes {
            Some(purposes) => self.purposes(purposes)?,
            None => Vec::new(),
        };
        let domain = match &raw.key_domain {
            Some(domain) => self.check(domain, |d| key_domain(d))?,
            None => qualified_name(&schema, &table, &column),
        };
        Ok(Entry {
            at: self.at(raw.column.span()),
            source: Source {
                table: self.at(raw.table.span()),
                column: self.at(raw.column.span()),
                roles,
            },
            policy: ColumnPolicy {
                schema,
                table,
                column,
                encryption: raw.encryption,
                mask,
                reveal,
                default: raw.default.unwrap_or(Action::Null),
                purposes,
                domain,
                approval_rows: raw.approval.map(|a| a.rows),
                ticket: raw.ticket,
            },
        })
    }

    fn purposes(
        &self,
        purposes: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<String>, PolicyError> {
        self.check(purposes, |list| {
            if list.is_empty() {
                return Err(Problem::NoPurposes);
            }
            Ok(())
        })?;
        purposes
            .get_ref()
            .iter()
            .map(|purpose| self.check(purpose, |p| not_blank("purpose", p).map(|()| p.clone())))
            .collect()
    }
}

fn bad_name(what: &'static str, name: &str, reason: &'static str) -> Problem {
    Problem::BadName {
        what,
        name: name.into(),
        reason,
    }
}

/// `TABLE` or `SCHEMA.TABLE`, as `(schema, table)`.
fn table_name(text: &str) -> Result<(String, String), Problem> {
    let mut parts = text.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(table), None, _) => Ok((DEFAULT_SCHEMA.into(), identifier("table", table)?)),
        (Some(schema), Some(table), None) => {
            Ok((identifier("schema", schema)?, identifier("table", table)?))
        }
        _ => Err(bad_name("table", text, "must be TABLE or SCHEMA.TABLE")),
    }
}

/// An unquoted SQL identifier, folded to lowercase as PostgreSQL does.
fn identifier(what: &'static str, text: &str) -> Result<String, Problem> {
    let mut chars = text.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$') {
        return Err(bad_name(
            what,
            text,
            "is not an unquoted identifier: it must start with a letter or _ \
             and hold only letters, digits, _ and $",
        ));
    }
    if text.len() > MAX_IDENTIFIER_BYTES {
        return Err(bad_name(
            what,
            text,
            "is longer than 63 bytes, which PostgreSQL would truncate",
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// A `reveal` role: not blank, and not `default`, which the audit log's
/// `policy_role` writes for a decision taken by the column's `default`.
fn role_name(text: &str) -> Result<(), Problem> {
    not_blank("role name", text)?;
    if text == super::DEFAULT_RULE {
        return Err(bad_name(
            "role name",
            text,
            "is reserved: the audit log names the column's default rule so \
             (set the column's `default` instead, or grant a role of another name)",
        ));
    }
    Ok(())
}

fn not_blank(what: &'static str, text: &str) -> Result<(), Problem> {
    if text.trim().is_empty() {
        return Err(bad_name(what, text, "is blank"));
    }
    Ok(())
}

/// A key domain name, folded to lowercase like the default domains.
fn key_domain(text: &str) -> Result<String, Problem> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(bad_name(
            "key_domain",
            text,
            "must be non-empty and hold only ASCII letters, digits, _, . and -",
        ));
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Vec<ColumnPolicy> {
        parse(Path::new("p.toml"), text)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|entry| entry.policy)
            .collect()
    }

    /// The line and message of the error `text` gives.
    fn error(text: &str) -> (usize, String) {
        let err = parse(Path::new("p.toml"), text).err().expect("an error");
        let message = err.to_string();
        match err {
            PolicyError::Invalid { at, .. } => {
                assert_eq!(at.path, Path::new("p.toml"));
                assert!(message.starts_with(&format!("p.toml:{}: ", at.line)));
                (at.line, message)
            }
            other => panic!("not placed on a line: {other}"),
        }
    }

    const GOOD: &str = r#"
[[column]]
table = "public.customers"
column = "email"
encryption = "deterministic"
mask = "email"
reveal = { crm_app = "plaintext", support = "masked", analyst = "pseudonym" }
default = "masked"

[[column]]
table = "Customers"
column = "National_ID"
mask = "last4"
reveal = { kyc_officer = "plaintext" }
purposes = ["kyc"]
default = "null"

[[column]]
table = "crm.leads"
column = "phone"
key_domain = "Phone-Numbers"
"#;

    #[test]
    fn reads_columns_with_defaults() {
        let columns = parse_ok(GOOD);
        assert_eq!(columns.len(), 3);
        let email = &columns[0];
        assert_eq!(
            (
                email.schema.as_str(),
                email.table.as_str(),
                email.column.as_str()
            ),
            ("public", "customers", "email")
        );
        assert_eq!(email.encryption, Encryption::Deterministic);
        assert_eq!(email.mask, Mask::Email);
        assert_eq!(email.reveal["analyst"], Action::Pseudonym);
        assert_eq!(email.default, Action::Masked);
        assert!(email.purposes.is_empty());
        assert_eq!(email.domain, "public.customers.email");

        let national_id = &columns[1];
        assert_eq!(national_id.qualified_name(), "public.customers.national_id");
        assert_eq!(national_id.encryption, Encryption::Randomized);
        assert_eq!(national_id.purposes, ["kyc"]);

        let phone = &columns[2];
        assert_eq!(phone.qualified_name(), "crm.leads.phone");
        assert_eq!(phone.mask, Mask::Redact);
        assert_eq!(phone.default, Action::Null);
        assert!(phone.reveal.is_empty());
        assert_eq!(phone.domain, "phone-numbers");
    }

    #[test]
    fn an_empty_file_has_no_columns() {
        assert!(parse_ok("").is_empty());
        assert!(parse_ok("# nothing yet\n").is_empty());
    }

    #[test]
    fn entries_are_placed_on_their_column_line() {
        let entries = parse(Path::new("p.toml"), GOOD).unwrap();
        let lines: Vec<usize> = entries.iter().map(|e| e.at.line).collect();
        assert_eq!(lines, [4, 12, 20]);
    }

    #[test]
    fn unknown_key() {
        let (line, msg) = error("[[column]]\ntable = \"t\"\ncolumn = \"c\"\nmaks = \"email\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("unknown field `maks`"), "{msg}");
    }

    #[test]
    fn unknown_top_level_table() {
        let (line, msg) = error("\n[[columns]]\ntable = \"t\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("columns"), "{msg}");
    }

    #[test]
    fn missing_column_key() {
        let (line, msg) = error("[[column]]\ntable = \"t\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("missing field `column`"), "{msg}");
    }

    #[test]
    fn unknown_mask() {
        let (line, msg) = error("[[column]]\ntable = \"t\"\ncolumn = \"c\"\n\nmask = \"hash\"\n");
        assert_eq!(line, 5);
        assert!(msg.contains("unknown mask \"hash\""), "{msg}");
    }

    #[test]
    fn bad_keep() {
        let (line, msg) = error("[[column]]\ntable = \"t\"\ncolumn = \"c\"\nmask = \"keep(1)\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("bad mask \"keep(1)\""), "{msg}");
    }

    #[test]
    fn unknown_encryption() {
        let (line, msg) =
            error("[[column]]\ntable = \"t\"\ncolumn = \"c\"\nencryption = \"aes\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("unknown variant `aes`"), "{msg}");
    }

    #[test]
    fn role_rule_without_a_valid_action() {
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\nreveal = { support = \"mask\" }\n";
        let (line, msg) = error(text);
        assert_eq!(line, 4);
        assert!(msg.contains("unknown variant `mask`"), "{msg}");
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\n\n[column.reveal]\nsupport = 1\n";
        let (line, msg) = error(text);
        assert_eq!(line, 6);
        assert!(msg.contains("wanted string"), "{msg}");
    }

    #[test]
    fn unknown_default_action() {
        let (line, msg) =
            error("[[column]]\ntable = \"t\"\ncolumn = \"c\"\ndefault = \"hidden\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("unknown variant `hidden`"), "{msg}");
    }

    #[test]
    fn a_role_named_default_is_reserved() {
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\nreveal = { default = \"masked\" }\n";
        let (line, msg) = error(text);
        assert_eq!(line, 4);
        assert!(msg.contains("role name \"default\" is reserved"), "{msg}");
    }

    #[test]
    fn empty_role_name() {
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\nreveal = { \"\" = \"masked\" }\n";
        let (line, msg) = error(text);
        assert_eq!(line, 4);
        assert!(msg.contains("role name \"\" is blank"), "{msg}");
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\n[column.reveal]\nok = \"masked\"\n\" \" = \"null\"\n";
        assert_eq!(error(text).0, 6);
    }

    #[test]
    fn bad_table_and_column_names() {
        let cases = [
            ("a.b.c", "c", 2, "must be TABLE or SCHEMA.TABLE"),
            ("", "c", 2, "table \"\" is not an unquoted identifier"),
            (".t", "c", 2, "schema \"\" is not an unquoted identifier"),
            ("\\\"Customers\\\"", "c", 2, "is not an unquoted identifier"),
            (
                "t",
                "1st",
                3,
                "column \"1st\" is not an unquoted identifier",
            ),
            ("t", "full name", 3, "column \"full name\""),
            ("t", &"x".repeat(64), 3, "longer than 63 bytes"),
        ];
        for (table, column, want_line, want) in cases {
            let text = format!("[[column]]\ntable = \"{table}\"\ncolumn = \"{column}\"\n");
            let (line, msg) = error(&text);
            assert_eq!(line, want_line, "{msg}");
            assert!(msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn identifiers_may_be_non_ascii() {
        let columns = parse_ok("[[column]]\ntable = \"客户\"\ncolumn = \"姓名\"\n");
        assert_eq!(columns[0].qualified_name(), "public.客户.姓名");
    }

    #[test]
    fn bad_purposes() {
        let (line, msg) = error("[[column]]\ntable = \"t\"\ncolumn = \"c\"\npurposes = []\n");
        assert_eq!(line, 4);
        assert!(msg.contains("purposes is empty"), "{msg}");
        let text =
            "[[column]]\ntable = \"t\"\ncolumn = \"c\"\npurposes = [\n  \"kyc\",\n  \"\",\n]\n";
        let (line, msg) = error(text);
        assert_eq!(line, 6);
        assert!(msg.contains("purpose \"\" is blank"), "{msg}");
    }

    #[test]
    fn bad_key_domain() {
        let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\nkey_domain = \"my domain\"\n";
        let (line, msg) = error(text);
        assert_eq!(line, 4);
        assert!(msg.contains("key_domain \"my domain\""), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let (line, msg) = error("[[column]]\ntable = \"t\"\ncolumn = c\n");
        assert!(msg.ends_with("invalid string: expected `\"`, `'`"), "{msg}");
        assert_eq!(line, 3);
    }
}
