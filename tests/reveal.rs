//! Reading protected columns: each role sees what the policy grants it,
//! in text and binary result formats, while PostgreSQL itself holds only
//! ciphertext. Rows are encrypted here with the keyring and stored
//! directly, so this tests the read path on its own.

mod common;

use std::path::PathBuf;

use common::{psql, test_config, Cluster, Proxy, SUPERUSER, SUPERUSER_PASSWORD};
use pgveil::crypto::{MasterKey, Mode};
use pgveil::keyring::Keyring;
use pgveil::policy::{Action, Policy};
use pgveil::veil::Veil;
use tokio_postgres::SimpleQueryMessage;

const NAME: &str = "张伟 Zhang Wei";
const EMAIL: &str = "zhang.wei@example.com";
const PHONE: &str = "+86 138 0013 8000";
const NATIONAL_ID: &str = "110101199003071234";

struct Crm {
    proxy: Proxy,
    policy: Policy,
    keyring: Keyring,
}

fn policy_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/crm.toml")
}

/// Loads the CRM schema, a keyring, login users for each role, and one
/// customer stored encrypted.
fn crm() -> Crm {
    let cluster = Cluster::shared();
    let schema =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/crm.sql"))
            .unwrap();
    cluster.psql_direct(&schema);
    cluster.psql_direct(
        "create role crm_user login password 'pw' in role crm_app;
         create role support_user login password 'pw' in role support;
         create role analyst_user login password 'pw' in role analyst;",
    );
    let dir = std::env::temp_dir().join(format!("pgveil-reveal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyring_path = dir.join("keyring.toml");
    let policy = Policy::load(&[policy_path()]).unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    Keyring::init(&keyring_path, &master, &policy.domains()).unwrap();
    let keyring = Keyring::load(&keyring_path, &master).unwrap();
    let veil = Veil::new(
        Policy::load(&[policy_path()]).unwrap(),
        Keyring::load(&keyring_path, &master).unwrap(),
    );
    let crm = Crm {
        proxy: Proxy::with_veil(
            pgveil::config::Config {
                upstream: cluster.addr(),
                ..test_config()
            },
            Some(veil),
        ),
        policy,
        keyring,
    };
    let values = [
        ("full_name", NAME),
        ("email", EMAIL),
        ("phone", PHONE),
        ("national_id", NATIONAL_ID),
    ]
    .map(|(column, plain)| crm.encrypt(column, plain));
    cluster.psql_direct(&format!(
        "insert into customers (full_name, email, phone, national_id, segment) values ('{}', '{}', '{}', '{}', 'vip')",
        values[0], values[1], values[2], values[3]
    ));
    crm
}

impl Crm {
    fn encrypt(&self, column: &str, plaintext: &str) -> String {
        let policy = self.policy.column("public", "customers", column).unwrap();
        let mode: Mode = policy.encryption.into();
        self.keyring
            .encrypt_text(&policy.domain, mode, plaintext.as_bytes())
            .unwrap()
    }

    fn mask(&self, column: &str, plaintext: &str) -> String {
        self.policy
            .column("public", "customers", column)
            .unwrap()
            .mask
            .apply(plaintext)
    }

    /// (full_name, email, phone, national_id, segment) as `user` sees them,
    /// through the simple protocol (text) and the extended one (binary).
    async fn read_as(&self, user: &str, password: &str) -> Vec<Option<String>> {
        let client = common::try_connect(&self.proxy.url(user, password, "postgres"))
            .await
            .unwrap();
        let sql = "select full_name, email, phone, national_id, segment from customers";
        let text: Vec<Option<String>> = client
            .simple_query(sql)
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
        let row = client.query_one(sql, &[]).await.unwrap();
        let binary: Vec<Option<String>> = (0..5).map(|i| row.get::<_, Option<String>>(i)).collect();
        assert_eq!(text, binary, "text and binary formats agree for {user}");
        text
    }
}

#[tokio::test]
async fn each_role_sees_what_the_policy_grants() {
    let crm = crm();
    let some = |s: &str| Some(s.to_owned());

    // The CRM application: plaintext, but national_id only under purpose kyc.
    let app = crm.read_as("crm_user", "pw").await;
    assert_eq!(app[..3], [some(NAME), some(EMAIL), some(PHONE)]);
    assert_eq!(app[3], None, "national_id needs the kyc purpose");
    assert_eq!(app[4], some("vip"), "unprotected columns pass unchanged");

    // Support: masks.
    let support = crm.read_as("support_user", "pw").await;
    assert_eq!(support[0], some(&crm.mask("full_name", NAME)));
    assert_eq!(support[1], some(&crm.mask("email", EMAIL)));
    assert_eq!(support[2], some(&crm.mask("phone", PHONE)));
    assert_ne!(support[1], some(EMAIL));

    // Analyst: a stable pseudonym for e-mail, nothing for the name.
    let analyst = crm.read_as("analyst_user", "pw").await;
    assert_eq!(analyst[0], None);
    let token = analyst[1].clone().unwrap();
    assert!(token.starts_with("pgvp_"), "{token}");
    assert_eq!(crm.read_as("analyst_user", "pw").await[1], Some(token));

    // The DBA is in no policy role: the defaults (null) apply, even as superuser.
    let dba = crm.read_as(SUPERUSER, SUPERUSER_PASSWORD).await;
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
            .decide(&["crm_app".into()], Some("kyc")),
        Action::Plaintext
    ));
}
