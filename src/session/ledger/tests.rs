//! The declarations and prepared statements followed in the server's order.

use super::*;
use crate::sql::{ColumnRefId, ParamSlot, Prepared, Storage, Target};

fn set(name: &str, value: Option<&str>, local: bool) -> Effect {
    Effect::Set(SettingChange {
        name: name.into(),
        value: value.map(Into::into),
        local,
    })
}

fn purpose(d: &Ledger) -> Option<&str> {
    d.current().purpose.as_deref()
}

/// Runs one simple Query of statements that each complete with `tags`,
/// the server ending it with `status`.
fn run(d: &mut Ledger, statements: Vec<(Vec<Effect>, &str)>, status: u8) {
    let tags: Vec<&str> = statements.iter().map(|(_, tag)| *tag).collect();
    d.query(statements.into_iter().map(|(e, _)| e).collect());
    for tag in tags {
        if tag == "ERROR" {
            d.failed();
            break;
        }
        d.completed(tag.as_bytes());
    }
    d.ready(status);
}

fn kyc() -> Values {
    Values {
        purpose: Some("kyc".into()),
        actor: None,
        ticket: None,
    }
}

#[test]
fn set_and_reset_return_to_the_value_at_login() {
    let mut d = Ledger::new(kyc());
    assert_eq!(purpose(&d), Some("kyc"));
    run(
        &mut d,
        vec![(vec![set("purpose", Some("marketing"), false)], "SET")],
        b'I',
    );
    assert_eq!(purpose(&d), Some("marketing"));
    run(
        &mut d,
        vec![(vec![set("purpose", Some(""), false)], "SET")],
        b'I',
    );
    assert_eq!(purpose(&d), None, "empty is none");
    run(
        &mut d,
        vec![(vec![set("purpose", None, false)], "RESET")],
        b'I',
    );
    assert_eq!(purpose(&d), Some("kyc"));
    run(
        &mut d,
        vec![(vec![set("actor", Some("bob"), false)], "SET")],
        b'I',
    );
    run(
        &mut d,
        vec![(vec![set("purpose", Some("x"), false)], "SET")],
        b'I',
    );
    run(&mut d, vec![(vec![Effect::ResetAll], "DISCARD ALL")], b'I');
    assert_eq!(d.current(), &kyc());
}

#[test]
fn the_ticket_follows_set_local_reset_discard_and_rollback() {
    let ticket = |d: &Ledger| d.current().ticket.clone();
    let mut d = Ledger::new(kyc());
    run(
        &mut d,
        vec![(vec![set("ticket", Some("CASE-1"), false)], "SET")],
        b'I',
    );
    assert_eq!(ticket(&d).as_deref(), Some("CASE-1"));
    run(
        &mut d,
        vec![(vec![set("ticket", None, false)], "RESET")],
        b'I',
    );
    assert_eq!(ticket(&d), None, "RESET returns to the login value");
    // SET LOCAL lasts as long as its transaction.
    d.query(vec![vec![], vec![set("ticket", Some("CASE-2"), true)]]);
    d.completed(b"BEGIN");
    d.completed(b"SET");
    d.ready(b'T');
    assert_eq!(ticket(&d).as_deref(), Some("CASE-2"));
    run(&mut d, vec![(vec![], "COMMIT")], b'I');
    assert_eq!(ticket(&d), None, "SET LOCAL ends with its transaction");
    // A SET rolled back is undone.
    run(
        &mut d,
        vec![
            (vec![], "BEGIN"),
            (vec![set("ticket", Some("CASE-3"), false)], "SET"),
        ],
        b'T',
    );
    assert_eq!(ticket(&d).as_deref(), Some("CASE-3"));
    run(&mut d, vec![(vec![], "ROLLBACK")], b'I');
    assert_eq!(ticket(&d), None, "a rolled back SET is undone");
    run(
        &mut d,
        vec![(vec![set("ticket", Some("CASE-4"), false)], "SET")],
        b'I',
    );
    run(&mut d, vec![(vec![Effect::ResetAll], "DISCARD ALL")], b'I');
    assert_eq!(ticket(&d), None, "DISCARD ALL");
}

#[test]
fn a_change_takes_effect_when_its_statement_completes() {
    let mut d = Ledger::default();
    d.query(vec![vec![], vec![set("purpose", Some("kyc"), false)]]);
    d.query(vec![vec![set("purpose", Some("later"), false)]]);
    assert_eq!(purpose(&d), None, "not run yet");
    d.completed(b"SELECT 1");
    assert_eq!(purpose(&d), None, "rows of the first statement");
    d.completed(b"SET");
    assert_eq!(purpose(&d), Some("kyc"));
    d.ready(b'I');
    d.failed();
    d.ready(b'I');
    assert_eq!(purpose(&d), Some("kyc"), "the failed statement set nothing");
    // Extended protocol: an error skips the rest of the batch.
    d.execute(vec![], None);
    d.execute(vec![set("purpose", Some("skipped"), false)], None);
    d.sync(true);
    d.execute(vec![set("purpose", Some("next"), false)], None);
    d.sync(true);
    d.failed();
    d.ready(b'I');
    assert_eq!(purpose(&d), Some("kyc"));
    d.completed(b"SELECT 1");
    assert_eq!(purpose(&d), Some("next"));
    d.ready(b'I');
    // After an error in a batch, a Query before its Sync is skipped too.
    d.execute(vec![], None);
    d.query(vec![vec![set("purpose", Some("skipped"), false)]]);
    d.sync(true);
    d.query(vec![vec![set("purpose", Some("last"), false)]]);
    d.failed();
    d.ready(b'I');
    d.completed(b"SET");
    d.ready(b'I');
    assert_eq!(purpose(&d), Some("last"));
}

#[test]
fn set_local_ends_with_the_transaction() {
    let mut d = Ledger::default();
    run(
        &mut d,
        vec![(vec![set("purpose", Some("marketing"), false)], "SET")],
        b'I',
    );
    run(
        &mut d,
        vec![
            (vec![], "BEGIN"),
            (vec![set("purpose", Some("kyc"), true)], "SET"),
        ],
        b'T',
    );
    assert_eq!(purpose(&d), Some("kyc"));
    run(&mut d, vec![(vec![], "COMMIT")], b'I');
    assert_eq!(purpose(&d), Some("marketing"));
    // SET after SET LOCAL in the same transaction stays.
    run(
        &mut d,
        vec![
            (vec![], "BEGIN"),
            (vec![set("purpose", Some("a"), true)], "SET"),
            (vec![set("purpose", Some("b"), false)], "SET"),
            (vec![], "COMMIT"),
            (vec![], "SELECT 1"),
        ],
        b'I',
    );
    assert_eq!(purpose(&d), Some("b"));
}

#[test]
fn rollback_and_errors_undo_a_set() {
    let mut d = Ledger::default();
    run(
        &mut d,
        vec![
            (vec![set("purpose", Some("kyc"), false)], "SET"),
            (vec![], "ERROR"),
        ],
        b'I',
    );
    assert_eq!(purpose(&d), None, "an error later in the same query");
    let begin_kyc = |d: &mut Ledger| {
        let statements = vec![
            (vec![], "BEGIN"),
            (vec![set("purpose", Some("kyc"), false)], "SET"),
        ];
        run(d, statements, b'T');
    };
    begin_kyc(&mut d);
    run(&mut d, vec![(vec![], "ROLLBACK")], b'I');
    assert_eq!(purpose(&d), None);
    begin_kyc(&mut d);
    run(&mut d, vec![(vec![], "ERROR")], b'E');
    run(&mut d, vec![(vec![], "ROLLBACK")], b'I');
    assert_eq!(purpose(&d), None, "COMMIT of a failed transaction");
}

#[test]
fn savepoints() {
    let mut d = Ledger::new(kyc());
    run(
        &mut d,
        vec![
            (vec![], "BEGIN"),
            (vec![set("purpose", Some(""), false)], "SET"),
            (vec![Effect::Savepoint("s".into())], "SAVEPOINT"),
            (vec![set("purpose", Some("marketing"), false)], "SET"),
            (vec![Effect::RollbackTo("s".into())], "ROLLBACK"),
        ],
        b'T',
    );
    assert_eq!(
        purpose(&d),
        None,
        "back to the savepoint, not the transaction's start"
    );
    run(&mut d, vec![(vec![], "COMMIT")], b'I');
    assert_eq!(purpose(&d), None);
    // Released: kept; then an error in a savepoint, rolled back to.
    run(
        &mut d,
        vec![
            (vec![], "BEGIN"),
            (vec![Effect::Savepoint("a".into())], "SAVEPOINT"),
            (vec![set("purpose", Some("kyc"), true)], "SET"),
            (vec![Effect::Release("a".into())], "RELEASE"),
            (vec![Effect::Savepoint("b".into())], "SAVEPOINT"),
            (vec![set("actor", Some("eve"), false)], "SET"),
            (vec![], "ERROR"),
        ],
        b'E',
    );
    run(
        &mut d,
        vec![(vec![Effect::RollbackTo("b".into())], "ROLLBACK")],
        b'T',
    );
    assert_eq!(purpose(&d), Some("kyc"));
    assert_eq!(d.current().actor, None);
    run(&mut d, vec![(vec![], "COMMIT")], b'I');
    assert_eq!(
        purpose(&d),
        None,
        "the SET LOCAL ended with the transaction"
    );
}

#[test]
fn syncs_during_copy_in_are_not_answered() {
    let mut d = Ledger::default();
    d.execute(vec![], None); // COPY ... FROM STDIN
    d.sync(true); // ignored by the server
    d.copy_started();
    d.sync(true); // also ignored
    d.copy_ended();
    d.completed(b"COPY 2");
    d.sync(true);
    d.execute(vec![set("purpose", Some("kyc"), false)], None);
    d.sync(true);
    d.ready(b'I');
    d.completed(b"SELECT 1");
    assert_eq!(purpose(&d), Some("kyc"));
    d.ready(b'I');
    // A COPY that fails before starting: its Sync is answered.
    d.execute(vec![], None);
    d.sync(true);
    d.failed();
    d.ready(b'I');
    d.execute(vec![set("purpose", None, false)], None);
    d.sync(true);
    d.completed(b"SELECT 1");
    d.ready(b'I');
    assert_eq!(purpose(&d), None);
}

fn slot(number: usize) -> ParamSlot {
    ParamSlot {
        number,
        target: Target {
            column: std::sync::Arc::new(ColumnRefId {
                schema: "public".into(),
                table: "customers".into(),
                column: "email".into(),
            }),
            storage: Storage::Text,
        },
        array: false,
    }
}

fn prepare(name: &str, params: Vec<ParamSlot>) -> Effect {
    Effect::Prepare(Prepared {
        name: name.into(),
        params,
    })
}

fn slots(d: &Ledger, name: &str) -> Vec<usize> {
    let slots = d.prepared_slots(name);
    slots.iter().map(|s| s.number).collect()
}

#[test]
fn prepared_statements_change_when_the_server_has_run_the_statement() {
    let mut d = Ledger::default();
    d.query(vec![vec![prepare("p", vec![slot(1)])]]);
    assert_eq!(slots(&d, "p"), [1], "sent, not answered: encrypted already");
    d.completed(b"PREPARE");
    d.ready(b'I');
    // A re-PREPARE that the server refuses (the name exists) keeps the
    // old slots; until its answer, both are used.
    d.query(vec![vec![prepare("p", vec![slot(2)])]]);
    assert_eq!(slots(&d, "p"), [1, 2]);
    d.failed();
    d.ready(b'I');
    assert_eq!(slots(&d, "p"), [1]);
    // DEALLOCATE in an aborted transaction fails: nothing is forgotten.
    run(&mut d, vec![(vec![], "BEGIN"), (vec![], "ERROR")], b'E');
    d.query(vec![vec![Effect::Deallocate(Some("p".into()))]]);
    assert_eq!(slots(&d, "p"), [1], "not answered yet");
    d.failed();
    d.ready(b'E');
    run(&mut d, vec![(vec![], "ROLLBACK")], b'I');
    assert_eq!(slots(&d, "p"), [1]);
    // Not transactional: a PREPARE and a DEALLOCATE that completed stay
    // after a rollback.
    run(
        &mut d,
        vec![
            (vec![], "BEGIN"),
            (vec![Effect::Deallocate(Some("p".into()))], "DEALLOCATE"),
            (vec![prepare("p", vec![])], "PREPARE"),
            (vec![prepare("q", vec![slot(3)])], "PREPARE"),
            (vec![], "ROLLBACK"),
        ],
        b'I',
    );
    assert_eq!(slots(&d, "p"), Vec::<usize>::new(), "replaced, no slots");
    assert_eq!(slots(&d, "q"), [3]);
    // In the extended protocol, at the Execute's completion.
    d.execute(vec![Effect::Deallocate(None)], None);
    d.sync(true);
    assert_eq!(slots(&d, "q"), [3]);
    d.completed(b"DEALLOCATE ALL");
    d.ready(b'I');
    assert!(!d.has_prepared_slots());
}

#[test]
fn results_are_told_apart_by_statement_portal_and_cursor() {
    use crate::sql::CursorEffect;
    let mut d = Ledger::default();
    let fetch = Effect::Cursor(CursorEffect::Fetch("c".into()));
    let declare = Effect::Cursor(CursorEffect::Declare {
        name: "c".into(),
        hold: true,
    });
    d.query(vec![vec![declare.clone()], vec![], vec![fetch.clone()]]);
    assert_eq!(
        d.result(),
        ResultOf::Statement {
            serial: 1,
            index: 0
        }
    );
    assert_eq!(
        d.cursor_effects(),
        [CursorEffect::Declare {
            name: "c".into(),
            hold: true
        }]
    );
    d.completed(b"DECLARE CURSOR");
    assert_eq!(
        d.result(),
        ResultOf::Statement {
            serial: 1,
            index: 1
        }
    );
    d.completed(b"SELECT 1");
    assert_eq!(d.result(), ResultOf::Cursor("c"));
    d.completed(b"FETCH 2");
    d.ready(b'T');
    let named = |name: &str, generation| Named {
        name: name.into(),
        generation,
    };
    // A bound portal, a portal no Bind made (a cursor), a FETCH parsed.
    d.execute(
        Vec::new(),
        Some(Rows {
            portal: named("", 7),
            statement: Some(named("s", 3)),
        }),
    );
    d.execute(
        Vec::new(),
        Some(Rows {
            portal: named("c", 0),
            statement: None,
        }),
    );
    d.execute(
        vec![fetch],
        Some(Rows {
            portal: named("", 9),
            statement: Some(named("", 8)),
        }),
    );
    d.sync(true);
    assert_eq!(
        d.result(),
        ResultOf::Portal {
            name: "",
            generation: 7
        }
    );
    d.completed(b"");
    assert_eq!(d.result(), ResultOf::Cursor("c"));
    d.completed(b"FETCH 1");
    assert_eq!(d.result(), ResultOf::Cursor("c"), "FETCH c by Parse/Bind");
}
