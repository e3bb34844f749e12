//! Approval files, their signatures, revocation and the book's
//! reservations, on real files.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ring::signature::Ed25519KeyPair;

use super::*;
use crate::audit::approvals::book::Want;

/// Audit keys of their own for a test.
pub(crate) fn keys() -> AuditKeys {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let mut mac = [0u8; 32];
    ring::rand::SecureRandom::fill(&rng, &mut mac).unwrap();
    AuditKeys::new(&mac, Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
}

fn new(rows: u64) -> NewApproval {
    NewApproval {
        role: "support".into(),
        column: "public.customers.national_id".into(),
        rows,
        ticket: "CASE-123".into(),
        expires_in: Duration::from_secs(7200),
        approver: "alice".into(),
    }
}

fn want<'a>(roles: &'a [String], rows: u64) -> Want<'a> {
    Want {
        id: None,
        roles,
        column: "public.customers.national_id",
        ticket: "CASE-123",
        rows,
    }
}

fn support() -> Vec<String> {
    vec!["support_user".into(), "support".into()]
}

#[test]
fn an_approval_is_signed_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let approval = create(dir.path(), &keys, &new(5000)).unwrap();
    assert!(is_id(&approval.id), "{}", approval.id);
    assert_eq!(approval.rows, 5000);
    let expires = approval
        .expires
        .0
        .duration_since(approval.created.0)
        .unwrap();
    assert_eq!(expires, Duration::from_secs(7200));
    let path = file_of(dir.path(), &approval.id, "approval");
    assert_eq!(read_approval(&path, keys.public_key()).unwrap(), approval);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"approval\":{\"id\":\"apr-"), "{text}");
    // Another key's public key does not verify it.
    let other = super::tests::keys();
    assert!(matches!(
        read_approval(&path, other.public_key()),
        Err(ApprovalError::Forged(_))
    ));
}

#[test]
fn altered_forged_and_renamed_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let approval = create(dir.path(), &keys, &new(10)).unwrap();
    let path = file_of(dir.path(), &approval.id, "approval");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"rows\":10", "\"rows\":10000")).unwrap();
    let err = read_approval(&path, keys.public_key()).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "the signature does not verify with the audit public key (forged or altered)"
        ),
        "{err}"
    );
    // Signed by another key.
    let forger = super::tests::keys();
    let forged = create(dir.path(), &forger, &new(10)).unwrap();
    let forged_path = file_of(dir.path(), &forged.id, "approval");
    assert!(matches!(
        read_approval(&forged_path, keys.public_key()),
        Err(ApprovalError::Forged(_))
    ));
    // A good file under another approval's name.
    fs::write(&path, &text).unwrap();
    let copy = file_of(dir.path(), "apr-00000000000000aa", "approval");
    fs::copy(&path, &copy).unwrap();
    assert!(matches!(
        read_approval(&copy, keys.public_key()),
        Err(ApprovalError::Renamed { .. })
    ));
    fs::write(&copy, "{\"approval\":{}}").unwrap();
    assert!(matches!(
        read_approval(&copy, keys.public_key()),
        Err(ApprovalError::Malformed(_))
    ));
    let listed = list(dir.path(), &keys).unwrap();
    let refused = listed
        .iter()
        .filter(|l| matches!(l, Listed::Refused(_)))
        .count();
    assert_eq!((listed.len(), refused), (3, 2));
}

#[test]
fn bad_requests_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    for (bad, message) in [
        (
            NewApproval { rows: 0, ..new(1) },
            "--rows must be at least 1",
        ),
        (
            NewApproval {
                ticket: " ".into(),
                ..new(1)
            },
            "--ticket must not be blank",
        ),
        (
            NewApproval {
                expires_in: Duration::ZERO,
                ..new(1)
            },
            "--expires must be after now",
        ),
    ] {
        assert_eq!(
            create(dir.path(), &keys, &bad).unwrap_err().to_string(),
            message
        );
    }
    assert!(list(dir.path(), &keys).unwrap().is_empty());
    assert!(matches!(
        revoke(dir.path(), &keys, "apr-0000000000000000", "alice"),
        Err(ApprovalError::Unknown(_))
    ));
}

#[test]
fn the_book_reserves_rows_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(keys());
    let approval = create(dir.path(), &keys, &new(800)).unwrap();
    let roles = support();
    let now = SystemTime::now();
    {
        let book = ApprovalBook::open(dir.path(), keys.clone()).unwrap();
        assert!(matches!(
            ApprovalBook::open(dir.path(), keys.clone()),
            Err(ApprovalError::Locked(_))
        ));
        let reservation = book.reserve(want(&roles, 4), now).unwrap();
        assert_eq!(reservation.id, approval.id);
        assert_eq!(reservation.rows, 4 + EXTRA);
        book.release(&approval.id, EXTRA - 6);
        assert_eq!(book.describe(&approval.id), Some(("support".into(), 790)));
        // Another role, ticket or column is not served.
        let others = vec!["analyst".to_string()];
        assert_eq!(book.reserve(want(&others, 1), now), Err(Shortfall::None));
        let mut other_ticket = want(&roles, 1);
        other_ticket.ticket = "CASE-9";
        assert_eq!(book.reserve(other_ticket, now), Err(Shortfall::None));
        assert_eq!(
            book.reserve(want(&roles, 791), now),
            Err(Shortfall::UsedUp {
                id: approval.id.clone(),
                left: 790
            })
        );
    }
    let book = ApprovalBook::open(dir.path(), keys.clone()).unwrap();
    assert_eq!(book.describe(&approval.id), Some(("support".into(), 790)));
    let all = book.reserve(want(&roles, 790), now).unwrap();
    assert_eq!(all.rows, 790);
    assert_eq!(
        book.reserve(want(&roles, 1), now),
        Err(Shortfall::UsedUp {
            id: approval.id.clone(),
            left: 0
        })
    );
    let Listed::Valid { used, state, .. } = &list(dir.path(), &keys).unwrap()[0] else {
        panic!("refused")
    };
    assert_eq!((*used, *state), (800, State::UsedUp));
}

/// [`EXTRA_ROWS`], as the tests see it.
const EXTRA: u64 = 500;

#[test]
fn expired_and_revoked_approvals_are_not_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(keys());
    let roles = support();
    let book = ApprovalBook::open(dir.path(), keys.clone()).unwrap();
    let short = create(
        dir.path(),
        &keys,
        &NewApproval {
            expires_in: Duration::from_secs(60),
            ..new(100)
        },
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(120);
    assert_eq!(
        book.reserve(want(&roles, 1), later),
        Err(Shortfall::Expired {
            id: short.id.clone()
        })
    );
    let approval = create(dir.path(), &keys, &new(100)).unwrap();
    let now = SystemTime::now();
    let first = book.reserve(want(&roles, 1), now).unwrap();
    assert_eq!(first.id, short.id, "the one expiring first");
    revoke(dir.path(), &keys, &short.id, "bob").unwrap();
    assert!(revoke(dir.path(), &keys, &short.id, "bob")
        .unwrap_err()
        .to_string()
        .contains("already revoked"));
    let mut again = want(&roles, 1);
    again.id = Some(&short.id);
    assert_eq!(book.reserve(again, now).unwrap().id, approval.id);
    revoke(dir.path(), &keys, &approval.id, "bob").unwrap();
    assert!(matches!(
        book.reserve(want(&roles, 1), now),
        Err(Shortfall::Revoked { .. })
    ));
    // Removing the revocation files does not bring them back.
    for id in [&short.id, &approval.id] {
        fs::remove_file(file_of(dir.path(), id, "revoked")).unwrap();
    }
    assert!(matches!(
        book.reserve(want(&roles, 1), now),
        Err(Shortfall::Revoked { .. })
    ));
    let states: Vec<State> = list(dir.path(), &keys)
        .unwrap()
        .into_iter()
        .map(|l| match l {
            Listed::Valid { state, .. } => state,
            Listed::Refused(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(states, [State::Revoked, State::Revoked]);
}

#[test]
fn a_ledger_that_cannot_be_written_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(keys());
    let approval = create(dir.path(), &keys, &new(100)).unwrap();
    let book = ApprovalBook::open(dir.path(), keys).unwrap();
    let roles = support();
    // A directory where the new ledger would be written: even root cannot.
    fs::create_dir(file_of(dir.path(), &approval.id, "used.new")).unwrap();
    let result = book.reserve(want(&roles, 1), SystemTime::now());
    assert!(matches!(result, Err(Shortfall::Ledger(_))), "{result:?}");
}

#[test]
fn an_edited_ledger_is_not_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(keys());
    let approval = create(dir.path(), &keys, &new(10)).unwrap();
    let roles = support();
    {
        let book = ApprovalBook::open(dir.path(), keys.clone()).unwrap();
        let reservation = book.reserve(want(&roles, 10), SystemTime::now()).unwrap();
        assert_eq!(reservation.rows, 10);
    }
    let path = file_of(dir.path(), &approval.id, "used");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"used\":10", "\"used\":0")).unwrap();
    let book = ApprovalBook::open(dir.path(), keys.clone()).unwrap();
    assert_eq!(
        book.reserve(want(&roles, 1), SystemTime::now()),
        Err(Shortfall::Damaged {
            id: approval.id.clone()
        })
    );
    let Listed::Valid { state, .. } = &list(dir.path(), &keys).unwrap()[0] else {
        panic!("refused")
    };
    assert_eq!(*state, State::Damaged);
}
