//! Statement texts as the audit trail records them: kind, tables and a
//! normalized text holding no literal and no comment, for each statement
//! of a text.
//!
//! A text is summarized when its first record is written, once per
//! prepared statement, and once per *shape* in a session (statements that
//! differ only in plain numbers and `'...'` strings share a summary). The
//! normalized text is `pg_query::normalize`'s, then [`redact`]ed: the
//! normalizer leaves comments, and constants in utility statements
//! (`COMMENT ON ... IS '...'`, `COPY ... FROM PROGRAM '...'`, `DEFAULT
//! '...'` in DDL, function bodies, `DO` blocks), which the scanner finds
//! and removes. A text that does not parse or scan is recorded as
//! [`UNPARSED`], never as it is.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use pg_query::protobuf::Token;

use crate::audit::NormalizedStatement;

/// What a record says of a text pgveil cannot read as SQL.
pub(crate) const UNPARSED: &str = "<statement that does not parse>";

/// One statement of a text, summarized.
#[derive(Debug)]
pub(super) struct Part {
    pub kind: Arc<str>,
    pub normalized: NormalizedStatement,
    pub tables: Arc<[String]>,
}

impl Part {
    fn unparsed() -> Part {
        Part {
            kind: "unknown".into(),
            normalized: NormalizedStatement::from_normalized(UNPARSED.into()),
            tables: Arc::new([]),
        }
    }

    /// Whether this statement may write `column` (`schema.table.column`).
    fn may_write(&self, column: &str) -> bool {
        let Some((qualified, _)) = column.rsplit_once('.') else {
            return false;
        };
        let table = qualified.rsplit_once('.').map_or(qualified, |(_, t)| t);
        matches!(&*self.kind, "insert" | "update" | "merge" | "copy")
            && self.tables.iter().any(|t| t == qualified || t == table)
    }
}

/// A text's summary: as a whole, and statement by statement when it has
/// more than one.
#[derive(Debug)]
pub(super) struct Summary {
    whole: Part,
    /// Empty for a text of one statement (or none).
    parts: Vec<Part>,
}

impl Summary {
    /// How many statements the text has (one when it has none).
    pub(super) fn count(&self) -> usize {
        self.parts.len().max(1)
    }

    /// The whole text, for a record that stands for all of it.
    pub(super) fn whole(&self) -> &Part {
        &self.whole
    }

    /// Statement `i` (from 0); the whole text past the last one.
    pub(super) fn part(&self, i: usize) -> &Part {
        self.parts.get(i).unwrap_or(&self.whole)
    }

    /// Whether the protected column `column`, written by the text, is
    /// written by its statement `i`: by each statement of a writing kind
    /// on its table, or by the first when none is.
    pub(super) fn writes(&self, i: usize, column: &str) -> bool {
        if self.parts.len() <= 1 {
            return true;
        }
        if self.parts.iter().any(|p| p.may_write(column)) {
            self.parts.get(i).is_some_and(|p| p.may_write(column))
        } else {
            i == 0
        }
    }
}

/// Summaries by statement shape, for one session, and the room a shape is
/// computed in.
#[derive(Default)]
pub(super) struct ShapeCache {
    summaries: HashMap<String, Arc<Summary>>,
    shape: String,
}

impl ShapeCache {
    /// The summary of `sql`, the one a statement of the same shape was
    /// given if there was one.
    pub(super) fn summary(&mut self, sql: &str) -> Arc<Summary> {
        let ShapeCache { summaries, shape } = self;
        if !shape_into(sql, shape) {
            return Arc::new(summarize(sql));
        }
        if let Some(summary) = summaries.get(shape.as_str()) {
            return summary.clone();
        }
        let summary = Arc::new(summarize(sql));
        if summaries.len() >= SHAPE_CACHE_SIZE {
            summaries.clear();
        }
        summaries.insert(shape.clone(), summary.clone());
        summary
    }
}

/// Shapes remembered per session before the cache starts over.
const SHAPE_CACHE_SIZE: usize = 256;

/// Writes over `out` the statement with each plain number and `'...'`
/// string replaced by `?`, so that statements differing only in their
/// constants share a shape, and with it their normalized text, kind and
/// tables. False for text this simple scan cannot be sure of (comments,
/// dollar quotes, escape strings, parameters): that text is normalized on
/// its own. A shape holds no constant, so the cache holds no value; and
/// the summary it shares is redacted, so it holds none either.
fn shape_into(sql: &str, out: &mut String) -> bool {
    out.clear();
    let bytes = sql.as_bytes();
    // The text from `copied` on is not in `out` yet.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        let (end, constant) = match bytes[i] {
            b'$' | b'\\' => return false,
            b'-' if next == Some(b'-') => return false,
            b'/' if next == Some(b'*') => return false,
            // A quoted identifier is kept as it is.
            b'"' => match skip_quoted(bytes, i + 1, b'"') {
                Some(end) => (end, false),
                None => return false,
            },
            b'\'' => {
                if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'&') {
                    return false; // E'...', U&'...', B'...', X'...'
                }
                match skip_quoted(bytes, i + 1, b'\'') {
                    Some(end) => (end, true),
                    None => return false,
                }
            }
            b'0'..=b'9' if i == 0 || !is_word(bytes[i - 1]) => {
                let digits = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.')
                    .count();
                (i + digits, true)
            }
            _ => (i + 1, false),
        };
        if constant {
            // Constants start and end at ASCII bytes: char boundaries.
            out.push_str(&sql[copied..i]);
            out.push('?');
            copied = end;
        }
        i = end;
    }
    out.push_str(&sql[copied..]);
    true
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The index after the `quote` closing a quoted run whose body starts at
/// `i` (a doubled quote is part of the body).
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8) -> Option<usize> {
    loop {
        match *bytes.get(i)? {
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Kind, normalized text and tables of a statement text, as a whole and
/// statement by statement. Text that does not parse is recorded as such,
/// never as it is.
fn summarize(sql: &str) -> Summary {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Summary {
            whole: Part::unparsed(),
            parts: Vec::new(),
        };
    };
    let whole = part_of(sql, &parsed);
    let statements = &parsed.protobuf.stmts;
    let parts = if statements.len() > 1 {
        statements
            .iter()
            .map(|raw| {
                let piece = statement_text(sql, raw.stmt_location, raw.stmt_len);
                match piece.map(|piece| (piece, pg_query::parse(piece, 0))) {
                    Some((piece, Ok(parsed))) => part_of(piece, &parsed),
                    _ => Part::unparsed(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Summary { whole, parts }
}

/// The text of one statement of `sql`, from the parser's location and
/// length (0: up to the end).
pub(super) fn statement_text(sql: &str, location: i32, len: i32) -> Option<&str> {
    let start = usize::try_from(location).ok()?;
    let end = match usize::try_from(len).ok()? {
        0 => sql.len(),
        len => start.checked_add(len)?,
    };
    sql.get(start..end)
}

fn part_of(sql: &str, parsed: &pg_query::ParseResult) -> Part {
    let kind = parsed
        .statement_types()
        .first()
        .map_or("empty".to_owned(), |t| statement_kind(t));
    let normalized = match pg_query::normalize(sql) {
        Ok(normalized) => redact(&normalized),
        Err(_) => UNPARSED.to_owned(),
    };
    Part {
        kind: kind.into(),
        normalized: NormalizedStatement::from_normalized(normalized),
        tables: parsed.tables().into(),
    }
}

/// `SelectStmt` → `select`, `CreateTableAsStmt` → `create_table_as`.
pub(super) fn statement_kind(node_type: &str) -> String {
    let name = node_type.strip_suffix("Stmt").unwrap_or(node_type);
    let mut kind = String::with_capacity(name.len() + 4);
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            kind.push('_');
        }
        kind.push(c.to_ascii_lowercase());
    }
    kind
}

/// `text` (normalized) with its comments removed and every constant
/// token left (strings of every form, dollar-quoted bodies, bit and hex
/// strings, numbers) replaced by a `$n` placeholder numbered after its
/// parameters. Only whitespace between tokens is kept; text that does not
/// scan is [`UNPARSED`].
pub fn redact(text: &str) -> String {
    let Ok(tokens) = crate::sql::scan_tokens(text) else {
        return UNPARSED.to_owned();
    };
    let span = |t: &pg_query::protobuf::ScanToken| {
        let start = usize::try_from(t.start).ok()?;
        let end = usize::try_from(t.end).ok()?;
        text.get(start..end).map(|s| (start, end, s))
    };
    let mut next = 1 + tokens
        .iter()
        .filter(|t| t.token == Token::Param as i32)
        .filter_map(|t| span(t)?.2.get(1..)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for token in &tokens {
        let Some((start, end, token_text)) = span(token) else {
            return UNPARSED.to_owned();
        };
        match text.get(last..start) {
            Some(gap) if gap.chars().all(char::is_whitespace) => out.push_str(gap),
            _ => out.push(' '),
        }
        last = end;
        match Token::try_from(token.token) {
            Ok(
                Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst
                | Token::Iconst
                | Token::Fconst,
            ) => {
                let _ = write!(out, "${next}");
                next += 1;
            }
            Ok(Token::SqlComment | Token::CComment) => {}
            _ => out.push_str(token_text),
        }
    }
    let trimmed = out.trim();
    if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_summaries() {
        assert_eq!(statement_kind("SelectStmt"), "select");
        assert_eq!(statement_kind("CreateTableAsStmt"), "create_table_as");
        let s = summarize("SELECT * FROM customers WHERE email = 'a@b.c' AND id = 7");
        assert_eq!(s.count(), 1);
        let whole = s.whole();
        assert_eq!(&*whole.kind, "select");
        assert!(!whole.normalized.as_str().contains("a@b.c"));
        assert!(!whole.normalized.as_str().contains('7'));
        assert_eq!(&*whole.tables, ["customers".to_owned()]);
        let bad = summarize("SELEC 'secret value'");
        assert_eq!(bad.whole().normalized.as_str(), UNPARSED);
    }

    #[test]
    fn each_statement_of_a_text_is_summarized_on_its_own() {
        let s = summarize(
            "set pgveil.purpose = 'kyc'; /* c1 */ insert into public.customers (email) values ('x');\
             select 1 -- tail",
        );
        assert_eq!(s.count(), 3);
        let kinds: Vec<&str> = (0..3).map(|i| &*s.part(i).kind).collect();
        assert_eq!(kinds, ["variable_set", "insert", "select"]);
        let texts: Vec<&str> = (0..3).map(|i| s.part(i).normalized.as_str()).collect();
        assert_eq!(
            texts,
            [
                "set pgveil.purpose = $1",
                "insert into public.customers (email) values ($1)",
                "select $1"
            ]
        );
        assert!(s.writes(1, "public.customers.email"));
        assert!(!s.writes(0, "public.customers.email"));
        assert!(!s.writes(2, "public.customers.email"));
        // A column no statement visibly writes goes to the first.
        assert!(s.writes(0, "public.orders.note"));
        assert!(!s.writes(1, "public.orders.note"));
        assert_eq!(&*s.part(7).kind, "variable_set", "past the end: the whole");
    }

    #[test]
    fn redaction_removes_comments_and_every_constant() {
        for (text, redacted) in [
            ("select $1 /* 110101199001011234 */", "select $1"),
            ("select $1 -- secret\n, $2", "select $1 \n, $2"),
            ("comment on table t is 'secret'", "comment on table t is $1"),
            (
                "copy t from program 'cat /etc/secret'",
                "copy t from program $1",
            ),
            (
                "create table t (x text default 'secret', y numeric(10, 2) default 3.14)",
                "create table t (x text default $1, y numeric($2, $3) default $4)",
            ),
            ("do $$begin perform 'secret'; end$$", "do $1"),
            (
                "create function f() returns int as $body$ select 42 $body$ language sql",
                "create function f() returns int as $1 language sql",
            ),
            (
                "select e'sec\\'ret', b'1010', x'ff', u&'d\\0061ta', $3",
                "select $4, $5, $6, $7, $3",
            ),
            (
                "select \"quoted ident\" from t",
                "select \"quoted ident\" from t",
            ),
            ("select 'unterminated", UNPARSED),
        ] {
            assert_eq!(redact(text), redacted, "{text}");
        }
    }

    #[test]
    fn utility_statements_keep_no_literal_after_normalization() {
        for (sql, secret) in [
            ("comment on table t is 'comment-secret'", "comment-secret"),
            ("create role r password 'pw-secret'", "pw-secret"),
            (
                "alter table t alter x set default 'dflt-secret'",
                "dflt-secret",
            ),
            (
                "do $x$ begin raise notice 'do-secret'; end $x$",
                "do-secret",
            ),
            ("select 1 /* c-secret */; select 2 -- d-secret", "secret"),
            ("copy t from program 'prog-secret'", "prog-secret"),
        ] {
            let s = summarize(sql);
            for i in 0..s.count() {
                let text = s.part(i).normalized.as_str();
                assert!(!text.contains(secret), "{sql} -> {text}");
            }
            assert!(!s.whole().normalized.as_str().contains(secret));
        }
    }

    fn shape(sql: &str) -> Option<String> {
        let mut out = "left over".to_owned();
        shape_into(sql, &mut out).then_some(out)
    }

    #[test]
    fn shapes_hide_constants_and_give_up_when_unsure() {
        let a = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").unwrap();
        let b = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 7;").unwrap();
        assert_eq!(a, b);
        assert!(!a.contains("12345"));
        assert_eq!(
            shape("select 'it''s', x1 from t2").unwrap(),
            "select ?, x1 from t2"
        );
        assert_eq!(
            shape("select 'é', '中' from 表 where n = 1.5e3 and x2 = 3").unwrap(),
            "select ?, ? from 表 where n = ? and x2 = ?"
        );
        assert_eq!(
            shape(r#"select "it's" from "T""1""#).unwrap(),
            r#"select "it's" from "T""1""#
        );
        for unsure in [
            "select $1",
            "select E'a'",
            "select U&'a'",
            "select 1 -- c",
            "select /* c */ 1",
            "select 'open",
        ] {
            assert_eq!(shape(unsure), None, "{unsure}");
        }
    }

    #[test]
    fn an_empty_statement_is_summarized() {
        // A Query of "" or of white space, with the audit log on, is
        // summarized: `redact` scans its normalized text, which has no
        // token, where pg_query's own `scan_tokens` would make a slice
        // from a null pointer (see `sql::scan_tokens`).
        for text in ["", " ", "\n"] {
            let _ = summarize(text);
        }
    }
}
