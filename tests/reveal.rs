//! Reading protected columns: each role sees what the policy grants it,
//! in text and binary result formats, while PostgreSQL itself holds only
//! ciphertext. Rows are encrypted here with the keyring and stored
//! directly, so this tests the read path on its own.

mod common;

use common::crm::{crm, Crm};
use common::{psql, Cluster, SUPERUSER, SUPERUSER_PASSWORD};
use pgveil::protect::policy::Action;
use tokio_postgres::SimpleQueryMessage;

const NAME: &str = "张伟 Zhang Wei";
const EMAIL: &str = "zhang.wei@example.com";
const PHONE: &str = "+86 138 0013 8000";
const NATIONAL_ID: &str = "110101199003071234";

/// Stores one customer encrypted, directly, and returns its id.
fn store_customer(crm: &Crm) -> i64 {
    let values = [
        ("full_name", NAME),
        ("email", EMAIL),
        ("phone", PHONE),
        ("national_id", NATIONAL_ID),
    ]
    .map(|(column, plain)| crm.encrypt(column, plain));
    let out = Cluster::shared().psql_direct(&format!(
        "insert into customers (full_name, email, phone, national_id, segment) \
         values ('{}', '{}', '{}', '{}', 'vip') returning id",
        values[0], values[1], values[2], values[3]
    ));
    out.lines().next().unwrap().trim().parse().unwrap()
}

/// (full_name, email, phone, national_id, segment) of customer `id` as
/// `user` sees it, through the simple protocol (text) and the extended one
/// (binary), which must agree.
async fn read_as(crm: &Crm, user: &str, password: &str, id: i64) -> Vec<Option<String>> {
    let client = common::try_connect(&crm.proxy.url(user, password, "postgres"))
        .await
        .unwrap();
    let sql = format!(
        "select full_name, email, phone, national_id, segment from customers where id = {id}"
    );
    let text: Vec<Option<String>> = client
        .simple_query(&sql)
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                Some((0..5).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .unwrap();
    let row = client.query_one(&sql, &[]).await.unwrap();
    let binary: Vec<Option<String>> = (0..5).map(|i| row.get::<_, Option<String>>(i)).collect();
    assert_eq!(text, binary, "text and binary formats agree for {user}");
    text
}

#[tokio::test]
async fn each_role_sees_what_the_policy_grants() {
    let crm = crm();
    let id = store_customer(crm);
    let some = |s: &str| Some(s.to_owned());

    // The CRM application: plaintext, but national_id only under purpose kyc.
    let app = read_as(crm, "crm_user", "pw", id).await;
    assert_eq!(app[..3], [some(NAME), some(EMAIL), some(PHONE)]);
    assert_eq!(app[3], None, "national_id needs the kyc purpose");
    assert_eq!(app[4], some("vip"), "unprotected columns pass unchanged");

    // Support: masks.
    let support = read_as(crm, "support_user", "pw", id).await;
    assert_eq!(support[0], some(&crm.mask("full_name", NAME)));
    assert_eq!(support[1], some(&crm.mask("email", EMAIL)));
    assert_eq!(support[2], some(&crm.mask("phone", PHONE)));
    assert_ne!(support[1], some(EMAIL));

    // Analyst: a stable pseudonym for e-mail, nothing for the name.
    let analyst = read_as(crm, "analyst_user", "pw", id).await;
    assert_eq!(analyst[0], None);
    let token = analyst[1].clone().unwrap();
    assert!(token.starts_with("pgvp_"), "{token}");
    assert_eq!(read_as(crm, "analyst_user", "pw", id).await[1], Some(token));

    // The DBA is in no policy role: the defaults (null) apply, even as superuser.
    let dba = read_as(crm, SUPERUSER, SUPERUSER_PASSWORD, id).await;
    assert_eq!(dba[..4], [None, None, None, None]);

    // PostgreSQL itself holds only ciphertext.
    let out = psql(
        &Cluster::shared().addr(),
        SUPERUSER,
        SUPERUSER_PASSWORD,
        "postgres",
    )
    .args([
        "-c",
        "select full_name || email || phone || national_id from customers",
    ])
    .output()
    .unwrap();
    let stored = String::from_utf8_lossy(&out.stdout);
    for plain in [NAME, EMAIL, PHONE, NATIONAL_ID] {
        assert!(!stored.contains(plain), "plaintext stored in the database");
    }
    assert!(stored.starts_with("pgv1:"));
    assert!(matches!(
        crm.policy
            .column("public", "customers", "national_id")
            .unwrap()
            .decide(&["crm_app".into()], Some("kyc"), None),
        Action::Plaintext
    ));
}
