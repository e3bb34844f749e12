//! The declared purpose (and actor) pgveil reveals under is the one the
//! server has: set at connection time, by SET, RESET, RESET ALL, DISCARD
//! ALL or set_config with constants or parameters, scoped by transactions
//! and savepoints, applied in the order the server runs statements; what
//! pgveil cannot follow is refused and changes nothing.

mod common;

use common::crm::crm;
use common::{extended, query, sqlstate, try_connect, Cluster, RawClient};
use tokio_postgres::Client;

const NATIONAL_ID: &str = "110101198001011234";

/// A customer with a national ID, written through pgveil.
async fn customer(database: &str) -> i64 {
    let app = try_connect(&crm().proxy.url("crm_user", "pw", database))
        .await
        .unwrap();
    app.query_one(
        "insert into customers (national_id, segment) values ($1, 'declared') returning id",
        &[&NATIONAL_ID],
    )
    .await
    .unwrap()
    .get(0)
}

/// The national ID of customer `id` as `client` reads it: shown only with
/// the purpose `kyc`.
async fn national_id(client: &Client, id: i64) -> Option<String> {
    let sql = format!("select national_id from customers where id = {id}");
    let rows = common::simple_rows(&client.simple_query(&sql).await.unwrap());
    rows[0][0].clone()
}

/// Whether `client` reads the national ID in clear, checked to agree with
/// the purpose the server has for the session.
async fn sees(client: &Client, id: i64) -> bool {
    let revealed = national_id(client, id).await;
    let rows = common::simple_rows(
        &client
            .simple_query("select current_setting('pgveil.purpose', true)")
            .await
            .unwrap(),
    );
    let server = rows[0][0].clone().unwrap_or_default();
    assert_eq!(
        revealed.is_some(),
        server == "kyc",
        "pgveil and the server disagree: server purpose {server:?}"
    );
    if let Some(revealed) = &revealed {
        assert_eq!(revealed, NATIONAL_ID);
    }
    revealed.is_some()
}

/// A hand-driven client logged in as `trust_user`, made a KYC officer,
/// with these startup parameters too.
async fn officer(params: &[(&str, &str)]) -> RawClient {
    Cluster::shared().psql_direct("grant kyc_officer to trust_user");
    RawClient::login_with(crm().proxy.addr, params).await.0
}

async fn connect(user: &str, extra: &str) -> Client {
    let url = format!("{} {extra}", crm().proxy.url(user, "pw", "postgres"));
    try_connect(&url).await.unwrap()
}

#[tokio::test]
async fn a_purpose_set_at_connection_time_is_in_force_and_what_reset_returns_to() {
    let id = customer("postgres").await;
    let kyc = connect("kyc_user", "options='-c pgveil.purpose=kyc'").await;
    assert!(sees(&kyc, id).await, "options=-c pgveil.purpose=kyc");
    for reset in [
        "reset pgveil.purpose",
        "set pgveil.purpose to default",
        "select set_config('pgveil.purpose', null, false)",
        "reset all",
        "discard all",
    ] {
        kyc.batch_execute("set pgveil.purpose = 'marketing'")
            .await
            .unwrap();
        assert!(!sees(&kyc, id).await);
        kyc.batch_execute(reset).await.unwrap();
        assert!(sees(&kyc, id).await, "{reset} returns to the login value");
    }
    kyc.batch_execute("set pgveil.purpose = ''").await.unwrap();
    assert!(!sees(&kyc, id).await);
    // psql with PGOPTIONS.
    let out = common::psql(&crm().proxy.addr(), "kyc_user", "pw", "postgres")
        .env("PGOPTIONS", "-c pgveil.purpose=kyc")
        .args([
            "-c",
            &format!("select national_id from customers where id = {id}"),
        ])
        .output()
        .unwrap();
    common::assert_success("psql", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), NATIONAL_ID);
}

#[tokio::test]
async fn a_startup_parameter_and_text_format_set_config_parameters() {
    let id = customer("postgres").await;
    let mut raw = officer(&[("pgveil.purpose", "kyc")]).await;
    let select = format!("select national_id from customers where id = {id}");
    let read = |rows: Vec<Vec<Option<Vec<u8>>>>| rows[0][0].clone();
    raw.send(&query(&select)).await;
    assert_eq!(
        read(raw.rows_until_ready().await.0),
        Some(NATIONAL_ID.into())
    );
    // Parameters in text format.
    let set = "select set_config('pgveil.purpose', $1, $2)";
    raw.send(&extended(
        set,
        &[Some(&b"marketing"[..]), Some(b"off")],
        &[0],
    ))
    .await;
    assert_eq!(raw.rows_until_ready().await.1, None);
    raw.send(&query(&select)).await;
    assert_eq!(read(raw.rows_until_ready().await.0), None);
    raw.send(&query("begin")).await;
    raw.rows_until_ready().await;
    raw.send(&extended(set, &[Some(&b"kyc"[..]), Some(&[1])], &[0, 1]))
        .await;
    raw.rows_until_ready().await;
    raw.send(&query(&select)).await;
    assert_eq!(
        read(raw.rows_until_ready().await.0),
        Some(NATIONAL_ID.into()),
        "is_local in binary format"
    );
    raw.send(&query("commit")).await;
    raw.rows_until_ready().await;
    raw.send(&query(&select)).await;
    assert_eq!(read(raw.rows_until_ready().await.0), None, "local: ended");
}

#[tokio::test]
async fn alter_role_and_alter_database_settings_are_in_force() {
    let cluster = Cluster::shared();
    cluster.psql_direct(
        "create role kyc_by_role login password 'pw' in role kyc_officer; \
         alter role kyc_by_role set pgveil.purpose = 'kyc'",
    );
    let id = customer("postgres").await;
    let by_role = connect("kyc_by_role", "").await;
    assert!(sees(&by_role, id).await, "ALTER ROLE ... SET");
    by_role.batch_execute("reset all").await.unwrap();
    assert!(sees(&by_role, id).await);

    cluster.psql_direct("create database declared_db");
    let crm_sql =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/crm.sql")).unwrap();
    let out = common::psql(
        &cluster.addr(),
        common::SUPERUSER,
        common::SUPERUSER_PASSWORD,
        "declared_db",
    )
    .args(["-c", &crm_sql])
    .args([
        "-c",
        "alter database declared_db set pgveil.purpose = 'kyc'",
    ])
    .output()
    .unwrap();
    common::assert_success("psql", &out);
    let id = customer("declared_db").await;
    let kyc = try_connect(&crm().proxy.url("kyc_user", "pw", "declared_db"))
        .await
        .unwrap();
    assert!(sees(&kyc, id).await, "ALTER DATABASE ... SET");
}

#[tokio::test]
async fn reset_all_and_discard_all_end_a_borrowed_purpose() {
    let id = customer("postgres").await;
    let pooled = crm().connect("kyc_user").await;
    for handover in ["discard all", "reset all", "RESET ALL; select 1"] {
        pooled
            .batch_execute("set pgveil.purpose = 'kyc'")
            .await
            .unwrap();
        assert!(sees(&pooled, id).await);
        pooled.batch_execute(handover).await.unwrap();
        assert!(!sees(&pooled, id).await, "{handover}");
    }
    // RESET ALL is undone by a rollback, as any SET.
    pooled
        .batch_execute("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    pooled
        .batch_execute("begin; reset all; rollback")
        .await
        .unwrap();
    assert!(sees(&pooled, id).await);
    // A BEGIN inside a query takes the statements before it into its
    // transaction, so the rollback undoes the SET too, on the server as
    // in pgveil.
    pooled.batch_execute("reset all").await.unwrap();
    pooled
        .batch_execute("set pgveil.purpose = 'kyc'; begin; rollback")
        .await
        .unwrap();
    assert!(!sees(&pooled, id).await);
}

#[tokio::test]
async fn set_config_parameters_in_binary_format() {
    let id = customer("postgres").await;
    let mut app = crm().connect("kyc_user").await;
    app.query_one("select set_config('pgveil.purpose', $1, false)", &[&"kyc"])
        .await
        .unwrap();
    assert!(sees(&app, id).await);
    let tx = app.transaction().await.unwrap();
    tx.query_one(
        "select set_config('pgveil.purpose', $1::text, $2)",
        &[&"marketing", &true],
    )
    .await
    .unwrap();
    let rows = tx
        .query("select national_id from customers where id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        rows[0].get::<_, Option<String>>(0),
        None,
        "local in the transaction"
    );
    tx.commit().await.unwrap();
    assert!(sees(&app, id).await, "back after the transaction");
    // A statement prepared but never executed changes nothing.
    app.prepare("select set_config('pgveil.purpose', 'marketing', false)")
        .await
        .unwrap();
    assert!(sees(&app, id).await);
}

#[tokio::test]
async fn changes_pgveil_cannot_follow_are_refused_and_change_nothing() {
    let id = customer("postgres").await;
    let app = crm().connect("kyc_user").await;
    for sql in [
        "select set_config('pgveil.purpose', lower('KYC'), false)",
        "select upper(set_config('pgveil.purpose', 'kyc', false))",
        "select set_config('pgveil.purpose', 'kyc', false) from customers",
        "select set_config(name, 'kyc', false) from (values ('pgveil.purpose')) v (name)",
        "do $$ begin set pgveil.purpose = 'kyc'; end $$",
        "do $$ begin perform set_config('pgveil.purpose', 'kyc', false); end $$",
        "create function declare_kyc() returns text language sql \
         as $$ select set_config('pgveil.purpose', 'kyc', false) $$",
        "prepare declare_kyc as select set_config('pgveil.purpose', 'kyc', false)",
        "set pgveil.purpose = 'marketing'; select set_config('pgveil.purpose', 'k' || 'yc', false)",
    ] {
        let err = app.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("0A000"), "{sql}: {err}");
        let message = err.as_db_error().unwrap().message();
        assert!(
            message.starts_with("pgveil: ")
                && message.contains("SET")
                && message.contains("set_config"),
            "{message}"
        );
        assert!(!sees(&app, id).await, "{sql}");
    }
    let functions =
        Cluster::shared().psql_direct("select count(*) from pg_proc where proname = 'declare_kyc'");
    assert_eq!(
        functions.trim(),
        "0",
        "the refused function was not created"
    );
    // The extended protocol too; the session goes on.
    let err = app
        .query(
            "select set_config('pgveil.purpose', lower($1), false)",
            &[&"KYC"],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"), "{err}");
    assert!(!sees(&app, id).await);
    // A fast-path FunctionCall of set_config (OID 2078).
    let mut raw = officer(&[]).await;
    let mut call = 2078u32.to_be_bytes().to_vec();
    call.extend_from_slice(&[0, 0, 0, 3]);
    for arg in [&b"pgveil.purpose"[..], b"kyc", b"false"] {
        call.extend_from_slice(&(arg.len() as i32).to_be_bytes());
        call.extend_from_slice(arg);
    }
    call.extend_from_slice(&[0, 0]);
    raw.send(&common::message(b'F', &call)).await;
    let (_, error) = raw.rows_until_ready().await;
    assert_eq!(error.map(|(code, _)| code).as_deref(), Some("0A000"));
    raw.send(&query("select current_setting('pgveil.purpose', true)"))
        .await;
    let (rows, _) = raw.rows_until_ready().await;
    assert_ne!(rows[0][0].as_deref(), Some(&b"kyc"[..]), "not run");
    // Other settings are none of pgveil's business.
    app.batch_execute(
        "select set_config('search_path', 'public', false) from generate_series(1, 2)",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn transactions_and_savepoints_scope_the_purpose_as_on_the_server() {
    let id = customer("postgres").await;
    let app = crm().connect("kyc_user").await;
    app.batch_execute("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    // Cleared, then set again after a savepoint and rolled back to it: the
    // transaction commits the cleared purpose.
    app.batch_execute(
        "begin; set pgveil.purpose = ''; savepoint s; set pgveil.purpose = 'kyc'; \
         rollback to savepoint s",
    )
    .await
    .unwrap();
    assert!(!sees(&app, id).await);
    app.batch_execute("commit").await.unwrap();
    assert!(!sees(&app, id).await);
    // Set after a savepoint, released: kept.
    app.batch_execute("begin; savepoint a; set pgveil.purpose = 'kyc'; release a; commit")
        .await
        .unwrap();
    assert!(sees(&app, id).await);
    // An error inside a savepoint, rolled back to: what came before stays.
    app.batch_execute("begin; set pgveil.purpose = ''; savepoint b")
        .await
        .unwrap();
    app.batch_execute("set pgveil.purpose = 'kyc'; select 1/0")
        .await
        .unwrap_err();
    app.batch_execute("rollback to b").await.unwrap();
    assert!(!sees(&app, id).await);
    app.batch_execute("rollback").await.unwrap();
    assert!(sees(&app, id).await, "the whole transaction rolled back");
    // SET LOCAL, and a COMMIT within one query.
    app.batch_execute("begin; set local pgveil.purpose = ''")
        .await
        .unwrap();
    assert!(!sees(&app, id).await);
    app.batch_execute("commit").await.unwrap();
    assert!(sees(&app, id).await);
    app.batch_execute("begin; set local pgveil.purpose = 'marketing'; commit; select 1")
        .await
        .unwrap();
    assert!(sees(&app, id).await);
}

#[tokio::test]
async fn statements_see_the_declarations_in_the_order_the_server_runs_them() {
    let id = customer("postgres").await;
    let mut raw = officer(&[]).await;
    let select = format!("select national_id from customers where id = {id}");
    let mut answers = Vec::new();
    // Pipelined in one write: a SELECT sent before a SET is answered
    // under the purpose before it, in both protocols.
    raw.send(
        &[
            query(&select),
            query("set pgveil.purpose = 'kyc'"),
            query(&select),
            extended(&select, &[], &[]),
            extended(
                "select set_config('pgveil.purpose', $1, false)",
                &[Some(b"")],
                &[],
            ),
            extended(&select, &[], &[]),
        ]
        .concat(),
    )
    .await;
    for _ in 0..6 {
        let (rows, error) = raw.rows_until_ready().await;
        assert_eq!(error, None);
        answers.push(rows.first().map(|row| row[0].clone()));
    }
    let id = Some(NATIONAL_ID.as_bytes().to_vec());
    let cleared = Some(Vec::new());
    assert_eq!(
        answers,
        [
            Some(None),
            None,
            Some(id.clone()),
            Some(id),
            Some(cleared),
            Some(None)
        ]
    );
}
