//! The policy role that decided each protected column is in the audit
//! record beside the login user, through real sessions on PostgreSQL:
//! membership (direct, nested, several roles), the column's default, a
//! purpose the column lacks, writes; and `audit search --role` finds a
//! login user's records by the policy role that decided them.

mod common;

use std::collections::BTreeSet;

use common::crm::setup;
use common::served::pgveil;
use pgveil::audit::AuditConfig;
use serde_json::Value;

/// The (column, access, decision, policy role) of each protected column of
/// the statement records of `user`.
fn decisions(records: &[Value], user: &str) -> BTreeSet<(String, String, String, String)> {
    records
        .iter()
        .filter(|r| r["event"] == "statement" && r["role"] == user)
        .flat_map(|r| r["columns"].as_array().unwrap().iter())
        .map(|c| {
            let text = |key: &str| c[key].as_str().unwrap().to_owned();
            let column = text("column")
                .trim_start_matches("public.customers.")
                .to_owned();
            (
                column,
                text("access"),
                text("decision"),
                text("policy_role"),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str, &str, &str)]) -> BTreeSet<(String, String, String, String)> {
    items
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

/// `pgveil audit search DIR --role ROLE --format json`: the login users
/// of the records found.
fn searched_users(dir: &std::path::Path, role: &str) -> BTreeSet<String> {
    let out = pgveil()
        .args(["audit", "search"])
        .arg(dir)
        .args(["--role", role, "--format", "json"])
        .output()
        .unwrap();
    common::assert_success("audit search", &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|record| record["role"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_names_its_policy_role_and_search_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut crm = setup(Some(AuditConfig {
        dir: dir.path().into(),
        ..AuditConfig::default()
    }));
    // helpdesk_user is a member of support through helpdesk; dual_user of
    // support and analyst; nobody_user of no policy role.
    common::Cluster::shared().psql_direct(
        "create role helpdesk nologin in role support; \
         create role helpdesk_user login password 'pw' in role helpdesk; \
         create role dual_user login password 'pw' in role support, analyst; \
         create role nobody_user login password 'pw'; \
         grant select on customers to nobody_user",
    );
    let app = crm.connect("crm_user").await;
    app.execute(
        "insert into customers (full_name, email, national_id, segment) values ($1, $2, $3, 'roles-seg')",
        &[&"Role Person", &"role.person@example.org", &"110105194912310021"],
    )
    .await
    .unwrap();
    let read = "select full_name, email, national_id from customers where segment = 'roles-seg'";
    app.simple_query(read).await.unwrap();
    for user in ["support_user", "helpdesk_user", "dual_user", "nobody_user"] {
        let client = crm.connect(user).await;
        client.simple_query(read).await.unwrap();
    }
    // A KYC officer reads national_id in full only under the kyc purpose;
    // without it the column's default decides, still under kyc_officer.
    let kyc = crm.connect("kyc_user").await;
    let national_id = "select national_id from customers where segment = 'roles-seg'";
    kyc.simple_query(national_id).await.unwrap();
    kyc.batch_execute("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    kyc.simple_query(national_id).await.unwrap();
    drop((app, kyc));
    tokio::task::block_in_place(|| crm.proxy.shutdown());

    let (records, text) = common::audit_log(dir.path());
    assert!(!text.contains("role.person@example.org") && !text.contains("110105194912310021"));
    assert_eq!(
        decisions(&records, "crm_user"),
        set(&[
            ("full_name", "write", "encrypted", "crm_app"),
            ("email", "write", "encrypted", "crm_app"),
            ("national_id", "write", "encrypted", "crm_app"),
            ("full_name", "read", "plaintext", "crm_app"),
            ("email", "read", "plaintext", "crm_app"),
            // national_id needs the kyc purpose: the default decides.
            ("national_id", "read", "null", "crm_app"),
        ])
    );
    let support = set(&[
        ("full_name", "read", "masked", "support"),
        ("email", "read", "masked", "support"),
        ("national_id", "read", "masked", "support"),
    ]);
    assert_eq!(decisions(&records, "support_user"), support);
    assert_eq!(decisions(&records, "helpdesk_user"), support, "nested");
    // The most revealing rule of the user's roles, per column.
    assert_eq!(
        decisions(&records, "dual_user"),
        set(&[
            ("full_name", "read", "masked", "support"),
            ("email", "read", "pseudonym", "analyst"),
            ("national_id", "read", "masked", "support"),
        ])
    );
    assert_eq!(
        decisions(&records, "nobody_user"),
        set(&[
            ("full_name", "read", "null", "default"),
            ("email", "read", "null", "default"),
            ("national_id", "read", "null", "default"),
        ])
    );
    assert_eq!(
        decisions(&records, "kyc_user"),
        set(&[
            ("national_id", "read", "null", "kyc_officer"),
            ("national_id", "read", "plaintext", "kyc_officer"),
        ])
    );

    let users = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        searched_users(dir.path(), "support"),
        users(&["support_user", "helpdesk_user", "dual_user"])
    );
    assert_eq!(searched_users(dir.path(), "analyst"), users(&["dual_user"]));
    assert_eq!(
        searched_users(dir.path(), "default"),
        users(&["nobody_user"])
    );
    assert_eq!(
        searched_users(dir.path(), "kyc_officer"),
        users(&["kyc_user"])
    );
    // The login user still finds its own records, connection events too.
    assert_eq!(
        searched_users(dir.path(), "helpdesk_user"),
        users(&["helpdesk_user"])
    );
    assert!(searched_users(dir.path(), "helpdesk").is_empty());
}
