//! A statement's text as the trail keeps it from the moment it is sent:
//! what pgveil knows of it before it runs, its summary once a record
//! needs one (`summary.rs`), and what it does to the session's prepared
//! statements and portals (`names.rs` follows those).

use std::sync::{Arc, Mutex, OnceLock};

use pg_query::protobuf::{node::Node, DiscardMode, Token};

use super::summary::{statement_text, ShapeCache, Summary};

/// A protected column a statement writes (encrypted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// `schema.table.column`.
    pub column: String,
    /// The role whose `reveal` rule applies to the session for it; `None`
    /// when the column's `default` does.
    pub policy_role: Option<String>,
}

/// A statement's text and what pgveil knows of it before it runs.
#[derive(Debug)]
pub struct StatementText {
    pub(super) sql: String,
    /// Protected columns it writes (encrypted).
    pub(super) written: Vec<Written>,
    /// Whether it mentions a protected table.
    pub(super) protected: bool,
    /// Whether it may prepare, deallocate, declare or close something.
    names: bool,
    /// What it does to prepared statements and portals, when first needed.
    changes: OnceLock<Vec<Change>>,
    /// Kind, normalized text and tables, computed once, when first needed.
    summary: OnceLock<Arc<Summary>>,
}

impl StatementText {
    /// The text `sql`, which writes the protected columns `written` and
    /// mentions a protected table if `protected`.
    pub fn new(sql: String, written: Vec<Written>, protected: bool) -> Arc<Self> {
        let names = may_name(sql.as_bytes());
        Arc::new(Self {
            sql,
            written,
            protected,
            names,
            changes: OnceLock::new(),
            summary: OnceLock::new(),
        })
    }

    /// Whether it may touch protected columns: it writes them or mentions
    /// a protected table.
    pub fn protected(&self) -> bool {
        self.protected || !self.written.is_empty()
    }

    /// What running it does to the session's prepared statements and
    /// portals, in order (parsed only for texts that may do something).
    pub(super) fn changes(&self) -> &[Change] {
        if !self.names {
            return &[];
        }
        self.changes.get_or_init(|| changes_in(&self.sql))
    }

    /// The summary, from `cache` when a statement of the same shape was
    /// summarized before.
    pub(super) fn summary(&self, cache: &Mutex<ShapeCache>) -> &Summary {
        self.summary.get_or_init(|| {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.summary(&self.sql)
        })
    }
}

/// Whether a text may hold `PREPARE`, `DEALLOCATE`, `DISCARD`, `DECLARE`
/// or `CLOSE`, in one pass: only such texts are parsed for [`Change`]s.
fn may_name(sql: &[u8]) -> bool {
    const WORDS: [&[u8]; 5] = [b"prepare", b"deallocate", b"discard", b"declare", b"close"];
    (0..sql.len()).any(|i| {
        matches!(sql[i] | 0x20, b'p' | b'd' | b'c')
            && WORDS.iter().any(|w| {
                sql.get(i..i + w.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(w))
            })
    })
}

/// What a statement does to prepared statements and portals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// `PREPARE name AS query`: the query's text.
    Prepared { name: String, query: String },
    /// `DEALLOCATE name`, or `DEALLOCATE ALL` (`None`).
    Deallocated(Option<String>),
    /// `DECLARE name CURSOR`: a portal of that name, not a Bind's.
    Declared(String),
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    Closed(Option<String>),
    /// `DISCARD ALL`.
    DiscardedAll,
}

/// The changes the statements of `sql` make, in order.
fn changes_in(sql: &str) -> Vec<Change> {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Vec::new();
    };
    let name = |n: &str| (!n.is_empty()).then(|| n.to_owned());
    parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| {
            Some(match raw.stmt.as_ref()?.node.as_ref()? {
                Node::PrepareStmt(p) => Change::Prepared {
                    name: p.name.clone(),
                    query: prepared_query(statement_text(sql, raw.stmt_location, raw.stmt_len)?)?
                        .to_owned(),
                },
                Node::DeallocateStmt(d) => {
                    Change::Deallocated(if d.isall { None } else { name(&d.name) })
                }
                Node::DeclareCursorStmt(d) => Change::Declared(d.portalname.clone()),
                Node::ClosePortalStmt(c) => Change::Closed(name(&c.portalname)),
                Node::DiscardStmt(d) if d.target == DiscardMode::DiscardAll as i32 => {
                    Change::DiscardedAll
                }
                _ => return None,
            })
        })
        .collect()
}

/// The query of a `PREPARE name [(types)] AS query`: the text after its
/// first `AS` (no type name holds one).
fn prepared_query(statement: &str) -> Option<&str> {
    let tokens = crate::sql::scan_tokens(statement).ok()?;
    let r#as = tokens.iter().find(|t| t.token == Token::As as i32)?;
    statement.get(usize::try_from(r#as.end).ok()?..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_of_sql_statements() {
        assert_eq!(
            changes_in(
                "prepare p (int, numeric(10, 2)) as select national_id from customers where id = $1; \
                 deallocate q; deallocate all; declare c cursor with hold for select 1; close c; \
                 close all; discard all; discard plans"
            ),
            vec![
                Change::Prepared {
                    name: "p".into(),
                    query: " select national_id from customers where id = $1".into()
                },
                Change::Deallocated(Some("q".into())),
                Change::Deallocated(None),
                Change::Declared("c".into()),
                Change::Closed(Some("c".into())),
                Change::Closed(None),
                Change::DiscardedAll,
            ]
        );
        assert_eq!(changes_in("select 'prepare'"), vec![]);
    }

    #[test]
    fn a_shared_summary_holds_no_value_of_either_statement() {
        let cache = Mutex::new(ShapeCache::default());
        let first = StatementText::new(
            "comment on table t is 'first-secret'".into(),
            Vec::new(),
            false,
        );
        let second = StatementText::new(
            "comment on table t is 'second-secret'".into(),
            Vec::new(),
            false,
        );
        let a = first.summary(&cache).whole().normalized.as_str().to_owned();
        let b = second
            .summary(&cache)
            .whole()
            .normalized
            .as_str()
            .to_owned();
        assert_eq!(a, b);
        assert_eq!(a, "comment on table t is $1");
    }

    #[test]
    fn texts_that_may_name_portals_or_statements() {
        for sql in [
            "PREPARE p AS select 1",
            "deallocate all",
            "Declare c cursor for x",
        ] {
            assert!(may_name(sql.as_bytes()), "{sql}");
        }
        assert!(!may_name(
            b"select abalance from pgbench_accounts where aid = 1"
        ));
    }
}
