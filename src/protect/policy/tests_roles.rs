//! Which role's rule decides: what the audit log records as the policy
//! role.

use std::collections::BTreeMap;

use super::*;

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `app` plaintext, `analyst` pseudonym, `support` masked, `blocked` deny.
fn column(default: Action, purposes: &[&str]) -> ColumnPolicy {
    ColumnPolicy {
        schema: "public".into(),
        table: "customers".into(),
        column: "email".into(),
        encryption: Encryption::Deterministic,
        mask: Mask::Email,
        reveal: BTreeMap::from([
            ("app".into(), Action::Plaintext),
            ("analyst".into(), Action::Pseudonym),
            ("support".into(), Action::Masked),
            ("blocked".into(), Action::Deny),
        ]),
        default,
        purposes: roles(purposes),
        domain: "public.customers.email".into(),
        ticket: false,
        approval_rows: None,
    }
}

#[test]
fn the_deciding_role_is_the_most_revealing_rule_or_the_default() {
    let c = column(Action::Null, &["kyc"]);
    let role = |names: &[&str]| c.policy_role(&roles(names)).map(str::to_owned);
    assert_eq!(role(&["alice", "support"]), Some("support".into()));
    assert_eq!(
        role(&["support", "analyst", "blocked"]),
        Some("analyst".into())
    );
    assert_eq!(role(&["blocked"]), Some("blocked".into()));
    assert_eq!(role(&["alice", "sales"]), None);
    assert_eq!(role(&[]), None);
    // Outside the purposes the decision falls to the default, but the
    // session still reads as app.
    assert_eq!(role(&["app", "support"]), Some("app".into()));
    assert_eq!(
        c.decide(&roles(&["app", "support"]), None, None),
        Action::Null
    );
    // Of equally revealing rules, the first by name, whatever the order
    // of the session's roles.
    let mut c = column(Action::Null, &[]);
    c.reveal.insert("helpdesk".into(), Action::Masked);
    for order in [["support", "helpdesk"], ["helpdesk", "support"]] {
        assert_eq!(c.policy_role(&roles(&order)), Some("helpdesk"));
        assert_eq!(c.decide(&roles(&order), None, None), Action::Masked);
    }
}
