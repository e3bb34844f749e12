//! `--role` finds a record by its login user or by a policy role that
//! decided one of its protected columns.

use super::filter::Filter;
use super::search::cells_of;
use crate::audit::AuditRecord;

/// A statement by `user` whose columns were decided as `columns` says:
/// `(column, decision, policy role)`, no policy role for an older record.
fn statement(user: &str, columns: &[(&str, &str, Option<&str>)]) -> AuditRecord {
    let columns: Vec<serde_json::Value> = columns
        .iter()
        .map(|(column, decision, role)| {
            let mut access = serde_json::json!({
                "column": format!("public.customers.{column}"),
                "access": "read",
                "decision": decision,
            });
            if let Some(role) = role {
                access["policy_role"] = (*role).into();
            }
            access
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "event": "statement",
        "time": "2026-11-25T10:00:00.000000Z",
        "connection": 1,
        "client": "10.0.0.7:51234",
        "database": "shop",
        "role": user,
        "kind": "select",
        "statement": "SELECT email, national_id FROM customers WHERE id = $1",
        "tables": ["public.customers"],
        "columns": columns,
        "rows": 1,
        "outcome": "ok",
        "duration_us": 10,
    }))
    .unwrap()
}

fn records() -> Vec<AuditRecord> {
    vec![
        statement(
            "support_user",
            &[
                ("email", "masked", Some("support")),
                ("national_id", "null", Some("default")),
            ],
        ),
        statement("crm_user", &[("email", "plaintext", Some("crm_app"))]),
        // Written before policy roles were recorded.
        statement("analyst_user", &[("email", "pseudonym", None)]),
    ]
}

/// The login users of the records `--role role` selects.
fn users(role: &str) -> Vec<String> {
    let filter = Filter {
        role: Some(role.into()),
        ..Filter::default()
    };
    records()
        .iter()
        .filter(|record| filter.matches(record))
        .map(|record| match record {
            AuditRecord::Statement(s) => s.session.login.role.to_string(),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn role_matches_the_login_user_or_a_deciding_policy_role() {
    assert_eq!(users("support"), ["support_user"]);
    assert_eq!(users("support_user"), ["support_user"]);
    assert_eq!(users("default"), ["support_user"]);
    assert_eq!(users("crm_app"), ["crm_user"]);
    assert_eq!(users("analyst_user"), ["analyst_user"]);
    assert!(users("analyst").is_empty());
    assert!(users("kyc_officer").is_empty());
}

#[test]
fn the_policy_roles_of_a_statement() {
    let AuditRecord::Statement(s) = &records()[0] else {
        unreachable!()
    };
    let roles: Vec<&str> = s.policy_roles().into_iter().collect();
    assert_eq!(roles, ["default", "support"]);
    let AuditRecord::Statement(old) = &records()[2] else {
        unreachable!()
    };
    assert!(old.policy_roles().is_empty());
}

#[test]
fn search_output_names_the_policy_role_of_each_column() {
    let cells = cells_of(&records()[0]);
    assert_eq!(cells[3], "support_user");
    assert_eq!(
        cells[9],
        "public.customers.email:masked(support) public.customers.national_id:null(default)"
    );
    assert_eq!(
        cells_of(&records()[2])[9],
        "public.customers.email:pseudonym"
    );
}
