//! What a statement does to the session's SQL cursors: `DECLARE`, `FETCH`
//! and `CLOSE`. The rows read through a cursor are counted across its
//! FETCHes (`crate::read::meter`, for the approval limits of the policy),
//! so the session follows which cursor each FETCH reads and when a cursor
//! of a name is made again or closed, in the server's order, like its
//! declarations (`crate::session::ledger`).

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
