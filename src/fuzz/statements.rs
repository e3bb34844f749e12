//! Properties of the statement analysis on generated SQL text
//! ([`super::sql`]): nothing panics; `conform` leaves no plain literal
//! holding a backslash and changes nothing in text without one; a value
//! written to or compared with a protected column never reaches the text
//! pgveil sends.

use std::borrow::Cow;
use std::collections::HashMap;

use pg_query::protobuf::Token;
use proptest::prelude::*;

use super::sql::{marked, noisy_text};
use super::{config, veil};
use crate::sql::{
    self, copy_out_options, declarations, is_copy_from_stdin, rewrite_in_session, CatalogObject,
    ColumnType, Columns, Kind, ParamSlot, PreparedSlots, ServerObjects, Storage, Target, Verdict,
};
use crate::text::encoding::ClientEncoding;

/// The sample CRM's `customers` as the catalog reads it.
struct Crm;

impl Columns for Crm {
    fn order(&self, schema: &str, table: &str) -> Option<Vec<String>> {
        (schema == "public" && table == "customers").then(|| {
            [
                "id",
                "full_name",
                "email",
                "phone",
                "national_id",
                "address",
                "segment",
                "created_at",
            ]
            .map(str::to_owned)
            .to_vec()
        })
    }

    fn type_of(&self, _: &str, _: &str, column: &str) -> Option<&ColumnType> {
        (column != "id").then_some(&ColumnType::Text)
    }
}

/// A view and a function over `customers`, as the catalog lists them.
fn objects() -> ServerObjects {
    ServerObjects::new(
        &veil().policy,
        vec![
            CatalogObject {
                kind: Kind::View,
                schema: "public".into(),
                name: "customer_emails".into(),
                table: "public.customers".into(),
                definition: Some("SELECT customers.id, customers.email FROM customers".into()),
            },
            CatalogObject {
                kind: Kind::Function,
                schema: "public".into(),
                name: "add_customer".into(),
                table: "public.customers".into(),
                definition: None,
            },
        ],
    )
}

/// `p0` prepared with its first parameter for `email`.
fn prepared() -> PreparedSlots {
    let slot = ParamSlot {
        number: 1,
        target: Target {
            column: std::sync::Arc::new(sql::ColumnRefId {
                schema: "public".into(),
                table: "customers".into(),
                column: "email".into(),
            }),
            storage: Storage::Text,
        },
        array: false,
    };
    HashMap::from([("p0".to_owned(), vec![slot])])
}

/// Every entry point pgveil reads a statement text through, as the
/// client tap calls them.
fn analyse(sql: &str, objects: &ServerObjects) {
    let veil = veil();
    for standard in [true, false] {
        let sql = sql::conform_literals(sql, standard);
        let _ = sql::rewrite(&sql, &veil.policy, veil);
        let analysis = rewrite_in_session(&sql, &veil.policy, veil, &Crm, objects, &prepared());
        if let Verdict::Rewritten(rewrite) = &analysis.verdict {
            // What pgveil sends is SQL PostgreSQL's grammar reads.
            assert!(
                pg_query::parse(&rewrite.sql, 0).is_ok(),
                "{sql:?} -> {:?}",
                rewrite.sql
            );
        }
        if let Ok(plan) = declarations(&sql) {
            let _ = plan
                .and(analysis.effects)
                .resolve(&[], ClientEncoding::default());
        }
        let _ = copy_out_options(&sql, &veil.policy, &crate::sql::NoCatalog);
        let _ = is_copy_from_stdin(&sql);
        let _ = veil.policy.mentions_protected_table(&sql);
    }
}

/// The plain `'...'` constants of `sql` holding a backslash, as
/// PostgreSQL's scanner reads it; `None` when it does not scan.
fn plain_with_backslash(sql: &str) -> Option<Vec<String>> {
    // pg_query 18.1's `scan_tokens` makes a slice from a null pointer for
    // text without tokens: undefined behaviour, an abort in debug builds.
    if sql.trim().is_empty() {
        return Some(Vec::new());
    }
    let tokens = crate::sql::scan_tokens(sql).ok()?;
    Some(
        tokens
            .iter()
            .filter(|t| t.token == Token::Sconst as i32)
            .filter_map(|t| sql.get(t.start as usize..t.end as usize))
            .filter(|text| text.starts_with('\'') && text.contains('\\'))
            .map(str::to_owned)
            .collect(),
    )
}

/// `sql` with its comments removed, as PostgreSQL's scanner finds them.
fn without_comments(sql: &str) -> String {
    let Ok(tokens) = crate::sql::scan_tokens(sql) else {
        return sql.to_owned();
    };
    let mut out = String::new();
    let mut done = 0;
    for token in tokens {
        if token.token == Token::SqlComment as i32 || token.token == Token::CComment as i32 {
            out.push_str(&sql[done..token.start as usize]);
            done = token.end as usize;
        }
    }
    out.push_str(&sql[done..]);
    out
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn analysis_never_panics(sql in noisy_text()) {
        thread_local!(static OBJECTS: ServerObjects = objects());
        OBJECTS.with(|objects| analyse(&sql, objects));
    }

    #[test]
    fn conformed_text_has_no_plain_literal_with_a_backslash(
        sql in noisy_text(),
        standard in any::<bool>(),
    ) {
        let conformed = sql::conform_literals(&sql, standard);
        if let Some(found) = plain_with_backslash(&conformed) {
            prop_assert!(found.is_empty(), "{sql:?} ({standard}) -> {conformed:?}: {found:?}");
        }
        // Conformed text is a fixed point of the reading pgveil chose.
        prop_assert_eq!(&sql::conform_literals(&conformed, true), &conformed);
    }

    #[test]
    fn text_without_a_backslash_is_conformed_as_it_is(
        sql in noisy_text().prop_map(|s| s.replace('\\', "")),
        standard in any::<bool>(),
    ) {
        let conformed = sql::conform_literals(&sql, standard);
        prop_assert!(matches!(conformed, Cow::Borrowed(text) if text == sql));
    }

    #[test]
    fn protected_values_never_reach_the_text_sent(
        sql in marked(),
        standard in any::<bool>(),
    ) {
        let veil = veil();
        let conformed = sql::conform_literals(&sql, standard);
        let analysis = rewrite_in_session(
            &conformed, &veil.policy, veil, &Crm, &objects(), &PreparedSlots::new(),
        );
        match analysis.verdict {
            // A secret the generator's text left inside a comment is no
            // value: only the statement's tokens count.
            Verdict::Rewritten(rewrite) => prop_assert!(
                !without_comments(&rewrite.sql).contains("SECRET"),
                "{sql:?} ({standard}) sent as {:?}", rewrite.sql
            ),
            Verdict::Refused(_) => {}
            other => prop_assert!(false, "{sql:?} ({standard}): {other:?}"),
        }
    }
}
