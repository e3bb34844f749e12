//! Authentication relayed to the real server, each method succeeding and
//! failing, with tokio-postgres and psql.

mod common;

use common::{psql, sqlstate, try_connect, Cluster, Proxy, ROLES};

async fn login(proxy: &Proxy, user: &str, password: &str) -> Result<String, tokio_postgres::Error> {
    let client = try_connect(&proxy.url(user, password, "postgres")).await?;
    let row = client.query_one("select current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_method_accepts_the_right_password() {
    let proxy = Proxy::start(Cluster::shared());
    for (role, password, method) in ROLES {
        let user = login(&proxy, role, password)
            .await
            .unwrap_or_else(|e| panic!("{method} login failed: {e:?}"));
        assert_eq!(&user, role);
    }
}

#[tokio::test]
async fn every_password_method_refuses_a_wrong_password() {
    let proxy = Proxy::start(Cluster::shared());
    for (role, _, method) in ROLES.iter().filter(|r| r.2 != "trust") {
        let err = login(&proxy, role, "wrong").await.unwrap_err();
        // The server's own error arrives: invalid_password.
        assert_eq!(sqlstate(&err), Some("28P01"), "{method}: {err}");
    }
}

#[tokio::test]
async fn unknown_database_error_comes_from_the_server() {
    let proxy = Proxy::start(Cluster::shared());
    let url = proxy.url("scram_user", "scram-pw", "no_such_db");
    let err = try_connect(&url).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("3D000"), "{err}");
}

#[test]
fn psql_logs_in_with_scram_and_md5() {
    let proxy = Proxy::start(Cluster::shared());
    for (user, password) in [("scram_user", "scram-pw"), ("md5_user", "md5-pw")] {
        let out = psql(&proxy.addr(), user, password, "postgres")
            .args(["-c", "select current_user"])
            .output()
            .unwrap();
        common::assert_success("psql", &out);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
    }
    let out = psql(&proxy.addr(), "scram_user", "nope", "postgres")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

#[test]
fn psql_with_sslmode_prefer_falls_back_to_plain() {
    let proxy = Proxy::start(Cluster::shared());
    let out = psql(&proxy.addr(), "scram_user", "scram-pw", "postgres")
        .env("PGSSLMODE", "prefer")
        .env("PGGSSENCMODE", "prefer")
        .args(["-c", "select 42"])
        .output()
        .unwrap();
    common::assert_success("psql", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let out = psql(&proxy.addr(), "scram_user", "scram-pw", "postgres")
        .env("PGSSLMODE", "require")
        .args(["-c", "select 42"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "sslmode=require must fail without [tls]"
    );
}
