//! The cheap pre-check run on every statement: does its text mention a
//! protected table at all?
//!
//! Statements that do not are relayed without being parsed. The check
//! searches, ignoring ASCII case, for each protected table's bare name
//! (without its schema). Policy names are unquoted identifiers, which
//! PostgreSQL folds to lowercase, so any way SQL can name such a table
//! (`Customers`, `public.CUSTOMERS`, `"customers"`) contains the bare name
//! in some ASCII case: the check may say yes wrongly (`customers_archive`,
//! a string literal) but never no wrongly. The one spelling that hides the
//! name, a Unicode-escaped identifier (`U&"\0063ustomers"`), is caught by
//! treating every `U&"` as a mention.

use aho_corasick::AhoCorasick;

/// Starts a Unicode-escaped quoted identifier, whose text may spell any
/// name without containing it.
const UNICODE_IDENTIFIER: &str = "u&\"";

/// Finds protected table names in statement text.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableMentions {
    /// `None` when no table is protected.
    finder: Option<AhoCorasick>,
}

impl TableMentions {
    /// A finder for these bare table names.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<&str> = names.into_iter().collect();
        if patterns.is_empty() {
            return Self::default();
        }
        patterns.push(UNICODE_IDENTIFIER);
        let finder = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(patterns)
            // Identifiers are at most 63 bytes: even thousands of them stay
            // far below the automaton's size limits.
            .expect("table names fit in an Aho-Corasick automaton");
        Self {
            finder: Some(finder),
        }
    }

    /// Whether `sql` may mention a protected table.
    pub(crate) fn in_sql(&self, sql: &str) -> bool {
        self.finder
            .as_ref()
            .is_some_and(|finder| finder.is_match(sql))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_in_any_ascii_case() {
        let m = TableMentions::new(["customers", "customer_notes"]);
        assert!(m.in_sql("SELECT * FROM Customers"));
        assert!(m.in_sql("select email from public.customers where id = $1"));
        assert!(m.in_sql("SELECT * FROM \"customers\""));
        assert!(m.in_sql("insert into PUBLIC.CUSTOMER_NOTES values (1, 'x')"));
        assert!(!m.in_sql("select 1"));
        assert!(!m.in_sql("SELECT * FROM orders"));
    }

    #[test]
    fn treats_unicode_escaped_identifiers_as_mentions() {
        let m = TableMentions::new(["customers"]);
        assert!(m.in_sql(r#"SELECT * FROM U&"\0063ustomers""#));
        assert!(m.in_sql(r#"SELECT * FROM u&"x""#));
    }

    #[test]
    fn nothing_protected_mentions_nothing() {
        let m = TableMentions::new([]);
        assert!(!m.in_sql("SELECT * FROM customers"));
        assert!(!m.in_sql(r#"SELECT * FROM U&"x""#));
    }
}
