//! Which role's rule decides: what the audit log records as the policy
//! role.

use super::tests::{column, roles};
use super::*;

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
