//! The meter's counting: per statement, across a portal's Executes and a
//! cursor's FETCHes, and under approvals.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::approvals::{self, NewApproval};
use crate::audit::trail::AuditSetup;
use crate::audit::{AuditConfig, AuditSink, Login, Peer, Scope};
use crate::protect::policy::Policy;

const POLICY: &str = r#"
[[column]]
table = "t"
column = "secret"
reveal = { reader = "plaintext" }
approval = { rows = 3 }
"#;

fn policy() -> Policy {
    Policy::from_str("t.toml", POLICY).unwrap()
}

fn reader<'a>(
    roles: &'a [String],
    ticket: Option<&'a str>,
    trail: Option<&'a Trail>,
    result: ResultOf<'a>,
) -> Reading<'a> {
    Reading {
        roles,
        ticket,
        trail,
        result,
    }
}

fn statement(serial: u64) -> ResultOf<'static> {
    ResultOf::Statement { serial, index: 0 }
}

/// Counts `n` values of `column` for `reader`: how many passed, and the
/// message of the first refused.
fn count<'v>(
    meter: &mut Meter<'v>,
    reader: &Reading<'_>,
    column: &'v ColumnPolicy,
    n: u64,
) -> (u64, Option<String>) {
    for i in 0..n {
        if let Err(needed) = meter.count(*reader, column, 3) {
            return (i, Some(needed.to_string()));
        }
    }
    (n, None)
}

#[test]
fn a_statement_gets_its_limit_and_the_next_starts_afresh() {
    let policy = policy();
    let column = policy.column("public", "t", "secret").unwrap();
    let roles = vec!["alice".to_string(), "reader".to_string()];
    let mut meter = Meter::default();
    let first = reader(&roles, None, None, statement(1));
    let (passed, refused) = count(&mut meter, &first, column, 10);
    assert_eq!(passed, 3);
    assert_eq!(
        refused.unwrap(),
        "pgveil: reading more than 3 plaintext rows of column public.t.secret in one \
         statement needs an approval for role reader and the session's ticket (pgveil approve \
         --role reader --column public.t.secret --rows N --ticket TICKET): the session has \
         declared no ticket (SET pgveil.ticket)"
    );
    assert!(meter
        .statement_ended(statement(1), Ended::Failed, &[], None)
        .is_empty());
    assert!(meter.is_empty());
    let second = reader(&roles, Some("CASE-1"), None, statement(2));
    let (passed, refused) = count(&mut meter, &second, column, 10);
    assert_eq!(passed, 3);
    assert!(refused
        .unwrap()
        .ends_with("--ticket CASE-1): pgveil has no approvals directory ([audit] approvals)"),);
}

#[test]
fn a_portal_is_counted_across_its_executes_until_bound_again() {
    let policy = policy();
    let column = policy.column("public", "t", "secret").unwrap();
    let roles = vec!["reader".to_string()];
    let mut meter = Meter::default();
    let portal = |generation| ResultOf::Portal {
        name: "",
        generation,
    };
    let bound = reader(&roles, None, None, portal(7));
    assert_eq!(count(&mut meter, &bound, column, 2).0, 2);
    meter.statement_ended(portal(7), Ended::Suspended, &[], None);
    assert_eq!(
        count(&mut meter, &bound, column, 2).0,
        1,
        "2 + 1 = the limit"
    );
    // A Bind of the name again: a new portal.
    let again = reader(&roles, None, None, portal(8));
    assert_eq!(count(&mut meter, &again, column, 3).0, 3);
    meter.statement_ended(portal(8), Ended::Completed, &[], None);
    assert!(meter.is_empty(), "a completed portal is forgotten");
}

#[test]
fn a_cursor_is_counted_across_its_fetches_until_declared_again_or_closed() {
    let policy = policy();
    let column = policy.column("public", "t", "secret").unwrap();
    let roles = vec!["reader".to_string()];
    let mut meter = Meter::default();
    let declare = |hold| {
        vec![CursorEffect::Declare {
            name: "c".into(),
            hold,
        }]
    };
    meter.statement_ended(statement(1), Ended::Completed, &declare(false), None);
    let fetch = reader(&roles, None, None, ResultOf::Cursor("c"));
    assert_eq!(count(&mut meter, &fetch, column, 2).0, 2);
    meter.statement_ended(ResultOf::Cursor("c"), Ended::Completed, &[], None);
    assert_eq!(count(&mut meter, &fetch, column, 2).0, 1);
    meter.statement_ended(ResultOf::Cursor("c"), Ended::Failed, &[], None);
    // A DECLARE that fails changes nothing; one that completes starts afresh.
    meter.statement_ended(statement(2), Ended::Failed, &declare(false), None);
    assert_eq!(count(&mut meter, &fetch, column, 1).0, 0);
    meter.statement_ended(statement(3), Ended::Completed, &declare(true), None);
    assert_eq!(count(&mut meter, &fetch, column, 2).0, 2);
    meter.idle(None);
    assert_eq!(
        count(&mut meter, &fetch, column, 2).0,
        1,
        "a WITH HOLD cursor outlives its transaction"
    );
    meter.statement_ended(
        statement(4),
        Ended::Completed,
        &[CursorEffect::Close(Some("c".into()))],
        None,
    );
    assert_eq!(
        count(&mut meter, &fetch, column, 3).0,
        3,
        "closed: a new one"
    );
    meter.statement_ended(statement(5), Ended::Completed, &declare(false), None);
    meter.idle(None);
    assert!(
        meter.is_empty(),
        "a cursor without hold ends with its transaction"
    );
}

#[tokio::test]
async fn rows_beyond_the_limit_are_taken_from_an_approval() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(approvals::tests::keys());
    let approval = approvals::create(
        &dir.path().join("approvals"),
        &keys,
        &NewApproval {
            role: "reader".into(),
            column: "public.t.secret".into(),
            rows: 5,
            ticket: "CASE-1".into(),
            expires_in: Duration::from_secs(60),
            approver: "alice".into(),
        },
    )
    .unwrap();
    let book = Arc::new(
        approvals::ApprovalBook::open(&dir.path().join("approvals"), keys.clone()).unwrap(),
    );
    let config = AuditConfig {
        dir: dir.path().join("audit"),
        ..AuditConfig::default()
    };
    let (handle, _task) = AuditSink::start(&config, keys).unwrap();
    let setup = AuditSetup {
        handle,
        scope: Scope::All,
        bulk: None,
        approvals: Some(book.clone()),
    };
    let login = Login {
        database: "db".into(),
        role: "reader_user".into(),
    };
    let peer = Peer {
        connection: 1,
        client: "127.0.0.1:1".into(),
    };
    let trail = Trail::new(&setup, peer, login);
    let policy = policy();
    let column = policy.column("public", "t", "secret").unwrap();
    let roles = vec!["reader_user".to_string(), "reader".to_string()];
    let mut meter = Meter::default();
    let other_ticket = reader(&roles, Some("CASE-2"), Some(&trail), statement(1));
    let (passed, refused) = count(&mut meter, &other_ticket, column, 10);
    assert_eq!(passed, 3);
    assert!(refused.unwrap().ends_with(": none is in force"));
    meter.statement_ended(statement(1), Ended::Failed, &[], Some(&book));
    let ticketed = reader(&roles, Some("CASE-1"), Some(&trail), statement(2));
    let (passed, refused) = count(&mut meter, &ticketed, column, 10);
    assert_eq!(
        passed, 5,
        "3 within the limit, then the approval's 5 in all"
    );
    assert_eq!(
        refused.unwrap().rsplit(": ").next().unwrap(),
        format!("approval {} has 0 row(s) left", approval.id)
    );
    let used = meter.statement_ended(statement(2), Ended::Failed, &[], Some(&book));
    assert_eq!(
        used,
        [Used {
            approval: approval.id.clone(),
            column: "public.t.secret".into(),
            ticket: "CASE-1".into(),
            rows: 5,
        }]
    );
    assert_eq!(book.describe(&approval.id), Some(("reader".into(), 0)));
}
