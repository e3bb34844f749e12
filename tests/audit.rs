//! The access audit log fed by real sessions: every statement and
//! connection event recorded with its decisions, no value in it, and the
//! log verifies after a clean shutdown.

mod common;

use common::crm::setup;
use common::sqlstate;
use pgveil::audit::{verify, AuditConfig, BulkConfig, OnBulk};
use serde_json::Value;

fn records(dir: &std::path::Path) -> (Vec<Value>, String) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let records = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("event").is_some())
        .collect();
    (records, text)
}

fn statements<'r>(records: &'r [Value], role: &str) -> Vec<&'r Value> {
    records
        .iter()
        .filter(|r| r["event"] == "statement" && r["role"] == role)
        .collect()
}

fn has_column(record: &Value, column: &str, access: &str, decision: &str) -> bool {
    record["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["column"] == column && c["access"] == access && c["decision"] == decision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_is_recorded_without_values_and_verifies() {
    let dir = std::env::temp_dir().join(format!("pgveil-audit-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut crm = setup(Some(AuditConfig {
        dir: dir.clone(),
        bulk: Some(BulkConfig {
            threshold_rows: 3,
            window_secs: 300,
            on_bulk: OnBulk::Block,
        }),
        ..AuditConfig::default()
    }));
    let secrets = ["Audit Person", "audit.person@example.org", "+1 555 0199"];
    {
        let app = crm.connect("crm_user").await;
        app.batch_execute(&format!(
            "insert into customers (full_name, email, phone, segment) values ('{}', '{}', '{}', 'audit-seg')",
            secrets[0], secrets[1], secrets[2]
        ))
        .await
        .unwrap();
        app.batch_execute(
            "set pgveil.purpose = 'support-ticket'; set pgveil.actor = 'alice@crm.example'",
        )
        .await
        .unwrap();
        let rows = app
            .query(
                "select full_name, email from customers where email = $1",
                &[&secrets[1]],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let err = app.simple_query("select 1/0").await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("22012"));
        let err = app
            .simple_query("select id from customers order by full_name")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("0A000"));
        let support = crm.connect("support_user").await;
        support
            .simple_query("select email from customers where segment = 'audit-seg'")
            .await
            .unwrap();
        // Bulk access: four plaintext names in one go crosses the threshold
        // of three; the session is then blocked from plaintext.
        let bot = crm.connect("crm_user").await;
        bot.batch_execute("set pgveil.actor = 'export-bot'")
            .await
            .unwrap();
        for i in 0..4 {
            bot.execute(
                "insert into customers (full_name, segment) values ($1, 'bulk-seg')",
                &[&format!("Bulk Person {i}")],
            )
            .await
            .unwrap();
        }
        let names = bot
            .query(
                "select full_name from customers where segment = 'bulk-seg'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(names.len(), 4, "the crossing read itself is served");
        let err = bot
            .query(
                "select full_name from customers where segment = 'bulk-seg'",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("42501"), "blocked after the alert");

        // A session whose records are checked one by one.
        let exact = crm.connect("crm_user").await;
        exact
            .batch_execute("set pgveil.actor = 'exact'")
            .await
            .unwrap();
        exact
            .simple_query(&format!(
                "select phone from customers where email = '{}'",
                secrets[1]
            ))
            .await
            .unwrap();
        exact
            .execute(
                "insert into customers (email, segment) values ($1, 'exact-seg')",
                &[&"exact@example.org"],
            )
            .await
            .unwrap();
        {
            use futures_util::SinkExt;
            let sink = exact
                .copy_in("copy customers (email, segment) from stdin")
                .await
                .unwrap();
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from_static(
                b"copy1@example.org\texact-seg\ncopy2@example.org\texact-seg\n",
            ))
            .await
            .unwrap();
            assert_eq!(sink.finish().await.unwrap(), 2);
        }
        exact.simple_query("select 1/0").await.unwrap_err();
        exact
            .query("select id from customers where email like $1", &[&"%x"])
            .await
            .unwrap_err();
        // An actor declared at connection time.
        let url = crm.proxy.url("crm_user", "pw", "postgres");
        let declared = common::try_connect(&format!("{url} options='-c pgveil.actor=at-login'"))
            .await
            .unwrap();
        declared
            .simple_query("select id from customers where segment = 'audit-seg'")
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let keyring_mac = *crm.keyring.audit_mac_key().unwrap();
    let public = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(crm.keyring.audit_public_key_base64().unwrap())
            .unwrap()
    };
    tokio::task::block_in_place(|| crm.proxy.shutdown());

    let report = verify(&dir, Some(&keyring_mac), &public).expect("the log verifies");
    assert!(report.records > 0 && report.macs_checked);
    let (records, text) = records(&dir);
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }
    assert!(!text.contains("audit-seg"), "literals are normalized away");

    let app = statements(&records, "crm_user");
    let insert = app
        .iter()
        .find(|r| r["kind"] == "insert")
        .expect("the insert");
    assert!(has_column(
        insert,
        "public.customers.email",
        "write",
        "encrypted"
    ));
    assert!(has_column(
        insert,
        "public.customers.full_name",
        "write",
        "encrypted"
    ));
    assert_eq!(
        (insert["rows"].as_u64(), insert["outcome"].as_str()),
        (Some(1), Some("ok"))
    );

    let select = app
        .iter()
        .find(|r| r["kind"] == "select" && r["statement"].as_str().unwrap().contains("email ="))
        .expect("the lookup");
    assert!(select["statement"].as_str().unwrap().contains("$1"));
    assert!(has_column(
        select,
        "public.customers.full_name",
        "read",
        "plaintext"
    ));
    assert_eq!(select["rows"].as_u64(), Some(1));
    assert_eq!(select["purpose"], "support-ticket");
    assert_eq!(select["actor"], "alice@crm.example");

    assert!(app.iter().any(|r| r["outcome"] == "22012"));
    let refused = app
        .iter()
        .find(|r| r["outcome"] == "0A000")
        .expect("the refusal");
    assert_eq!(refused["kind"], "select");

    let support = statements(&records, "support_user");
    assert!(support
        .iter()
        .any(|r| has_column(r, "public.customers.email", "read", "masked")));

    let alert = records
        .iter()
        .find(|r| r["event"] == "alert")
        .expect("a bulk-access alert");
    assert_eq!(
        (
            alert["role"].as_str(),
            alert["actor"].as_str(),
            alert["column"].as_str()
        ),
        (
            Some("crm_user"),
            Some("export-bot"),
            Some("public.customers.full_name")
        )
    );
    assert_eq!(
        (alert["rows"].as_u64(), alert["threshold"].as_u64()),
        (Some(4), Some(3))
    );
    assert!(!text.contains("Bulk Person"));

    for event in ["connect", "authentication", "disconnect"] {
        assert!(
            records.iter().any(|r| r["event"] == event),
            "no {event} record"
        );
    }
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "statement" && r["actor"] == "at-login"),
        "the actor declared at connection time"
    );
    let disconnect = records
        .iter()
        .find(|r| r["event"] == "disconnect" && r["statements"].as_u64() >= Some(5))
        .expect("the CRM session's disconnect with totals");
    assert!(disconnect["rows"].as_u64() >= Some(2));

    // Exactly one record per statement, in order, with kind, outcome, rows.
    let exact: Vec<(&str, &str, u64)> = records
        .iter()
        .filter(|r| r["event"] == "statement" && r["actor"] == "exact")
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        exact,
        vec![
            ("variable_set", "ok", 0),
            ("select", "ok", 1),
            ("insert", "ok", 1),
            ("copy", "ok", 2),
            ("select", "22012", 0),
            ("select", "0A000", 0),
        ]
    );
    let copy = records
        .iter()
        .find(|r| r["event"] == "statement" && r["actor"] == "exact" && r["kind"] == "copy")
        .unwrap();
    assert!(has_column(
        copy,
        "public.customers.email",
        "write",
        "encrypted"
    ));
    assert!(!text.contains("copy1@example.org") && !text.contains("exact@example.org"));

    // Compliance staff's commands on the same log.
    let public_b64 = crm.keyring.audit_public_key_base64().unwrap();
    let verify_cli = || {
        pgveil()
            .args(["audit", "verify"])
            .arg(&dir)
            .args(["--public-key", &public_b64])
            .output()
            .unwrap()
    };
    assert!(verify_cli().status.success());
    let out = pgveil()
        .args(["audit", "search"])
        .arg(&dir)
        .args([
            "--role",
            "support_user",
            "--decision",
            "masked",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    common::assert_success("audit search", &out);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found.lines().count() >= 1 && found.contains("masked"),
        "{found}"
    );
    let today = chrono_free_today();
    let out = pgveil()
        .args(["audit", "report"])
        .arg(&dir)
        .args(["--since", &today, "--until", &today, "--format", "html"])
        .output()
        .unwrap();
    common::assert_success("audit report", &out);
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(html.contains("<svg") && html.contains("crm_user"));
    assert!(!html.contains("Audit Person"));

    // One byte changed in a record: verification fails, naming it.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"rows\":1", "\"rows\":9", 1)).unwrap();
    let out = verify_cli();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn pgveil() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn chrono_free_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
