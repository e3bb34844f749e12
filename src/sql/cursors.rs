//! What a statement does to the session's SQL cursors: `DECLARE`, `FETCH`
//! and `CLOSE`. The rows read through a cursor are counted across its
//! FETCHes (`crate::read::meter`, for the approval limits of the policy),
//! so the session follows which cursor each FETCH reads and when a cursor
//! of a name is made again or closed, in the server's order, like its
//! declarations (`crate::session::ledger`).

use pg_query::protobuf::node::Node as NodeEnum;

use super::settings::Effect;

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
pub(super) fn cursor_effect(node: &NodeEnum) -> Option<Effect> {
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
    Some(Effect::Cursor(effect))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::declarations;
    use crate::text::encoding::ClientEncoding;

    fn cursors(sql: &str) -> Vec<Vec<CursorEffect>> {
        declarations(sql)
            .unwrap()
            .resolve(&[], ClientEncoding::default())
            .unwrap()
            .into_iter()
            .map(|effects| {
                effects
                    .into_iter()
                    .filter_map(|e| match e {
                        Effect::Cursor(c) => Some(c),
                        _ => None,
                    })
                    .collect()
            })
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
                vec![CursorEffect::Declare {
                    name: "c".into(),
                    hold: false
                }],
                vec![CursorEffect::Declare {
                    name: "H".into(),
                    hold: true
                }],
                vec![CursorEffect::Fetch("c".into())],
                vec![CursorEffect::Fetch("H".into())],
                vec![],
                vec![CursorEffect::Close(Some("c".into()))],
                vec![CursorEffect::Close(None)],
                vec![],
            ]
        );
    }
}
