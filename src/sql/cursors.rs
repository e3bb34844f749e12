//! What a statement does to the session's SQL cursors: `DECLARE`, `FETCH`
//! and `CLOSE`. The rows read through a cursor are counted across its
//! FETCHes (`crate::read::meter`, for the approval limits of the policy),
//! so the session follows which cursor each FETCH reads and when a cursor
//! of a name is made again or closed, in the server's order, like its
//! declarations (`crate::session::ledger`).

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use pg_query::protobuf::node::Node as NodeEnum;

/// `CURSOR_OPT_HOLD` of PostgreSQL's `parsenodes.h`: `WITH HOLD`.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// What one statement does to a cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CursorEffect {
    /// `DECLARE name CURSOR`: a new cursor of that name, which outlives
    /// its transaction if `hold` (`WITH HOLD`).
    Declare { name: String, hold: bool },
    /// `FETCH ... FROM name`: rows of that cursor (not `MOVE`, which
    /// returns none).
    Fetch(String),
    /// `CLOSE name`; `None` for `CLOSE ALL`.
    Close(Option<String>),
}

/// Whether `sql` holds one of the words `DECLARE`, `FETCH` and `CLOSE`, in
/// any case, as a word (not inside `closed_at`): texts without them make
/// no cursor effect and need not be parsed for one.
pub(super) fn mentions_cursor(sql: &str) -> bool {
    static WORDS: OnceLock<AhoCorasick> = OnceLock::new();
    let words = WORDS.get_or_init(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(["declare", "fetch", "close"])
            .expect("a valid word list")
    });
    let bytes = sql.as_bytes();
    let part_of_word = |at: Option<&u8>| {
        at.is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$') || *b >= 0x80)
    };
    words.find_overlapping_iter(sql).any(|found| {
        let before = found.start().checked_sub(1).and_then(|i| bytes.get(i));
        !part_of_word(before) && !part_of_word(bytes.get(found.end()))
    })
}

/// The cursor effect of a parsed statement, if it has one.
pub(super) fn cursor_effect(node: &NodeEnum) -> Option<CursorEffect> {
    let effect = match node {
        NodeEnum::DeclareCursorStmt(declare) => CursorEffect::Declare {
            name: declare.portalname.clone(),
            hold: declare.options & CURSOR_OPT_HOLD != 0,
        },
        NodeEnum::FetchStmt(fetch) if !fetch.ismove => {
            CursorEffect::Fetch(fetch.portalname.clone())
        }
        NodeEnum::ClosePortalStmt(close) if close.portalname.is_empty() => {
            CursorEffect::Close(None)
        }
        NodeEnum::ClosePortalStmt(close) => CursorEffect::Close(Some(close.portalname.clone())),
        _ => return None,
    };
    Some(effect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursors(sql: &str) -> Vec<Option<CursorEffect>> {
        pg_query::parse(sql, 0)
            .unwrap()
            .protobuf
            .stmts
            .iter()
            .map(|raw| cursor_effect(raw.stmt.as_ref()?.node.as_ref()?))
            .collect()
    }

    #[test]
    fn only_texts_with_the_words_are_parsed_for_cursors() {
        for sql in [
            "FETCH 2 FROM c",
            "begin;declare c cursor for select 1",
            "Close\tall",
            "x(close)",
        ] {
            assert!(mentions_cursor(sql), "{sql}");
        }
        for sql in [
            "select closed_at, prefetch, declared_by from t",
            "select 1",
            "ФETCH",
        ] {
            assert!(!mentions_cursor(sql), "{sql}");
        }
    }

    #[test]
    fn declare_fetch_and_close_name_their_cursor() {
        assert_eq!(
            cursors(
                "DECLARE c CURSOR FOR SELECT 1; declare \"H\" cursor with hold for select 2; \
                 FETCH 10 FROM c; fetch next in \"H\"; MOVE 5 IN c; CLOSE c; CLOSE ALL; \
                 select 1 fetch first 2 rows only"
            ),
            [
                Some(CursorEffect::Declare {
                    name: "c".into(),
                    hold: false
                }),
                Some(CursorEffect::Declare {
                    name: "H".into(),
                    hold: true
                }),
                Some(CursorEffect::Fetch("c".into())),
                Some(CursorEffect::Fetch("H".into())),
                None,
                Some(CursorEffect::Close(Some("c".into()))),
                Some(CursorEffect::Close(None)),
                None,
            ]
        );
    }
}
