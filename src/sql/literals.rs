//! String literals that read the same whatever `standard_conforming_strings`
//! says.
//!
//! PostgreSQL's scanner reads a plain `'...'` literal in one of two ways:
//! with `standard_conforming_strings` on (the default) a backslash is an
//! ordinary character; with it off, a backslash escapes the next one, so
//! `'a\'` does not end where it seems to and the statement goes on inside
//! the string. pgveil's parser (`pg_query`) always reads with the setting
//! on, and a client can turn it off at any moment, even in a way pgveil
//! does not see (a function calling `set_config`) or before pgveil has
//! heard of it (a pipelined `SET`). So pgveil does not guess which reading
//! the server will use: before it parses a statement, it rewrites every
//! plain literal that holds a backslash into the `E'...'` form of the
//! reading pgveil chose (backslashes doubled), and the rewritten text is
//! what it parses and what the server gets. `E'...'`, `B'...'`, `X'...'`,
//! dollar quotes, identifiers and comments read the same under both
//! settings, so once no plain literal holds a backslash, the server reads
//! the statement exactly as pgveil did.
//!
//! The reading chosen is the one the server last reported: with the
//! setting on, a plain literal's text is its value; with it off, pgveil
//! first marks every plain literal `E` (so `'it\'s'` means what the client
//! meant), found by a small scanner of its own. Whatever that scanner
//! gets wrong, the last step holds: the text sent is checked with
//! PostgreSQL's own scanner, and any plain literal still holding a
//! backslash is rewritten as above.

use std::borrow::Cow;

use pg_query::protobuf::Token;

use super::tokens::scan_tokens;

/// `sql` rewritten so that no plain string literal holds a backslash,
/// read as the server reads it with `standard_conforming_strings` set to
/// `standard`. Text without a backslash is returned as it is; so is text
/// PostgreSQL's scanner rejects (it cannot be parsed, and is refused as
/// such wherever it matters).
pub(crate) fn conform(sql: &str, standard: bool) -> Cow<'_, str> {
    if !sql.contains('\\') {
        return Cow::Borrowed(sql);
    }
    let marked = if standard {
        Cow::Borrowed(sql)
    } else {
        Cow::Owned(mark_escapes(sql))
    };
    match escape_plain(&marked) {
        Some(text) => Cow::Owned(text),
        None => marked,
    }
}

/// Rewrites each plain literal holding a backslash (as PostgreSQL's
/// scanner reads `sql` with standard strings) into its `E'...'` form;
/// `None` when there is none, or `sql` does not scan.
fn escape_plain(sql: &str) -> Option<String> {
    let tokens = scan_tokens(sql).ok()?;
    let mut out = String::new();
    let mut done = 0;
    for token in tokens {
        if token.token != Token::Sconst as i32 {
            continue;
        }
        let (start, end) = (token.start as usize, token.end as usize);
        let text = sql.get(start..end)?;
        if !text.starts_with('\'') || !text.contains('\\') {
            continue;
        }
        out.push_str(&sql[done..start]);
        if start > 0 && is_ident_cont(sql.as_bytes()[start - 1]) {
            out.push(' ');
        }
        out.push('E');
        out.push_str(&text.replace('\\', "\\\\"));
        done = end;
    }
    if done == 0 {
        return None;
    }
    out.push_str(&sql[done..]);
    Some(out)
}

/// `sql` with an `E` before every plain string literal, as PostgreSQL's
/// scanner finds them with `standard_conforming_strings` off: the text
/// then reads the same with the setting on.
fn mark_escapes(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut done = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        i = match b {
            b'-' if next == Some(b'-') => skip_line(bytes, i),
            b'/' if next == Some(b'*') => skip_block_comment(bytes, i),
            b'\'' => {
                out.push_str(&sql[done..i]);
                // After a word, `E` would join it: `n'x'` is `n E'x'`.
                if i > 0 && is_ident_cont(bytes[i - 1]) {
                    out.push(' ');
                }
                out.push('E');
                done = i;
                skip_string(bytes, i, true)
            }
            b'"' => skip_quoted(bytes, i, b'"'),
            b'$' => skip_dollar(bytes, i),
            b if is_ident_start(b) => {
                let end = skip_word(bytes, i);
                let word = &bytes[i..end];
                match (word, bytes.get(end)) {
                    ([b'e' | b'E'], Some(b'\'')) => skip_string(bytes, end, true),
                    ([b'b' | b'B' | b'x' | b'X'], Some(b'\'')) => skip_string(bytes, end, false),
                    ([b'u' | b'U'], Some(b'&')) if bytes.get(end + 1) == Some(&b'\'') => {
                        skip_string(bytes, end + 1, false)
                    }
                    _ => end,
                }
            }
            b if b.is_ascii_digit() => skip_word(bytes, i),
            _ => i + 1,
        };
    }
    out.push_str(&sql[done..]);
    out
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The end of the word (identifier, keyword or number) at `i`.
fn skip_word(bytes: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < bytes.len()
        && (is_ident_cont(bytes[j]) || bytes[j] == b'.' && bytes[i].is_ascii_digit())
    {
        j += 1;
    }
    j
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(bytes.len(), |p| i + p + 1)
}

/// Past a `/* ... */` comment at `i`, which may nest.
fn skip_block_comment(bytes: &[u8], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < bytes.len() {
        match (bytes[j], bytes.get(j + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                j += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j += 1,
        }
    }
    bytes.len()
}

/// Past a `"..."` identifier (or any text quoted by `quote`, doubled
/// inside) at `i`.
fn skip_quoted(bytes: &[u8], i: usize, quote: u8) -> usize {
    let mut j = i + 1;
    while j < bytes.len() {
        if bytes[j] == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    bytes.len()
}

/// Past the string literal whose opening quote is at `i`, with its
/// continuations (a quote after white space holding a newline), reading
/// backslash escapes if `escapes`.
fn skip_string(bytes: &[u8], i: usize, escapes: bool) -> usize {
    let mut j = i + 1;
    loop {
        while j < bytes.len() {
            match bytes[j] {
                b'\\' if escapes => j += 2,
                b'\'' if bytes.get(j + 1) == Some(&b'\'') => j += 2,
                b'\'' => break,
                _ => j += 1,
            }
        }
        if j >= bytes.len() {
            return bytes.len();
        }
        j += 1;
        match continuation(bytes, j) {
            Some(quote) => j = quote + 1,
            None => return j,
        }
    }
}

/// Where a string continues after its closing quote at `j - 1`: the next
/// quote, if only white space holding a newline (and `--` comments after
/// the newline) comes first.
fn continuation(bytes: &[u8], mut j: usize) -> Option<usize> {
    let mut newline = false;
    while j < bytes.len() {
        match bytes[j] {
            b'\n' | b'\r' => {
                newline = true;
                j += 1;
            }
            b' ' | b'\t' | b'\x0c' => j += 1,
            b'-' if newline && bytes.get(j + 1) == Some(&b'-') => j = skip_line(bytes, j),
            b'\'' if newline => return Some(j),
            _ => return None,
        }
    }
    None
}

/// Past a dollar-quoted string at `i`, or just the `$` of a parameter or
/// an operator.
fn skip_dollar(bytes: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    if bytes.get(j).is_some_and(|&b| is_ident_start(b)) {
        while j < bytes.len() && is_ident_cont(bytes[j]) && bytes[j] != b'$' {
            j += 1;
        }
    }
    if bytes.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &bytes[i..=j];
    let body = j + 1;
    bytes[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(bytes.len(), |p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What PostgreSQL's scanner reads as the string constants of `sql`
    /// with standard strings: their source text.
    fn strings(sql: &str) -> Vec<String> {
        pg_query::scan_tokens(sql)
            .unwrap()
            .into_iter()
            .filter(|t| t.token == Token::Sconst as i32)
            .map(|t| sql[t.start as usize..t.end as usize].to_owned())
            .collect()
    }

    #[test]
    fn text_without_backslashes_is_kept() {
        let sql = "insert into t values ('a''b', E'c', $$d$$)";
        assert!(matches!(conform(sql, true), Cow::Borrowed(_)));
        assert!(matches!(conform(sql, false), Cow::Borrowed(_)));
    }

    #[test]
    fn standard_strings_keep_their_backslashes_as_characters() {
        let sql = r"insert into t values ('a\', 'x')";
        let conformed = conform(sql, true);
        assert_eq!(conformed, r"insert into t values (E'a\\', 'x')");
        assert_eq!(strings(&conformed), [r"E'a\\'", "'x'"]);
    }

    #[test]
    fn escaped_strings_are_read_with_their_escapes_when_the_setting_is_off() {
        let sql = r"insert into t (a, b) values ('x\', ', 'y')";
        let conformed = conform(sql, false);
        assert_eq!(conformed, r"insert into t (a, b) values (E'x\', ', E'y')");
        // Two values, as the server reads them with the setting off.
        assert_eq!(strings(&conformed), [r"E'x\', '", "E'y'"]);
        let sql = r"select 'it\'s', e'\n', B'01', $q$ '\ $q$, U&'\0041', '\\'";
        assert_eq!(
            conform(sql, false),
            r"select E'it\'s', e'\n', B'01', $q$ '\ $q$, U&'\0041', E'\\'"
        );
    }

    #[test]
    fn continued_strings_are_one_literal() {
        let sql = "select 'a\\'\n'b\\'";
        let conformed = conform(sql, true);
        assert_eq!(conformed, "select E'a\\\\'\n'b\\\\'");
        assert_eq!(strings(&conformed).len(), 1);
    }

    #[test]
    fn identifiers_comments_and_other_strings_are_not_literals() {
        let sql = r#"select "a\" from t /* '\' */ where x = E'\\' and y = $$\$$"#;
        assert_eq!(conform(sql, true), sql);
        assert_eq!(conform(sql, false), sql);
        let words = r"select ne'\x', une'y\' from t";
        assert_eq!(conform(words, false), r"select ne E'\x', une E'y\' from t");
    }

    #[test]
    fn whatever_the_reading_no_plain_literal_keeps_a_backslash() {
        for sql in [
            r"select '\', '\'",
            r"select 'a\''b', '\\'",
            "select $1 '\\' , 1e'\\'",
            r"select n'\', x'\', 'é\'",
        ] {
            for standard in [true, false] {
                let conformed = conform(sql, standard);
                if let Ok(tokens) = pg_query::scan_tokens(&conformed) {
                    for t in tokens.iter().filter(|t| t.token == Token::Sconst as i32) {
                        let text = &conformed[t.start as usize..t.end as usize];
                        assert!(
                            !(text.starts_with('\'') && text.contains('\\')),
                            "{sql} ({standard}): {conformed}"
                        );
                    }
                }
            }
        }
    }
}
