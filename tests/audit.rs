//! The access audit log fed by real sessions: every statement and
//! connection event recorded with its decisions, no value in it, and the
//! log verifies after a clean shutdown.

mod common;

use common::crm::setup;
use common::served::{pgveil, Served};
use common::sqlstate;
use pgveil::audit::{verify, AuditConfig, BulkConfig, OnBulk, VerifyError, VerifyReport};
use serde_json::Value;

fn records(dir: &std::path::Path) -> (Vec<Value>, String) {
    common::audit_log(dir)
}

/// The text of an audit file, compressed or not.
fn read_text(path: &std::path::Path) -> String {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap();
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "zst") {
        zstd::Decoder::new(file).unwrap().read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    }
    .unwrap();
    text
}

/// Replaces an audit file's text, compressing it again if it was.
fn write_text(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    if path.extension().is_some_and(|e| e == "zst") {
        file.write_all(&zstd::encode_all(text.as_bytes(), 3).unwrap())
            .unwrap();
    } else {
        file.write_all(text.as_bytes()).unwrap();
    }
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
        let copied = common::copy_in(
            &exact,
            "copy customers (email, segment) from stdin",
            [&b"copy1@example.org\texact-seg\ncopy2@example.org\texact-seg\n"[..]],
        )
        .await;
        assert_eq!(copied.unwrap(), 2);
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
    tokio::task::block_in_place(|| crm.proxy.shutdown());

    let report = verify_crm(&dir).expect("the log verifies");
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
            alert["columns"].clone()
        ),
        (
            Some("crm_user"),
            Some("export-bot"),
            serde_json::json!(["public.customers.full_name"])
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
    assert_eq!(verify_cli(&dir).0, Some(0));
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

    // One byte changed in a record of the (compressed) file: verification
    // fails, naming it.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.ends_with(".jsonl.zst"),
        "sealed at shutdown, then compressed"
    );
    write_text(
        &file,
        &read_text(&file).replacen("\"rows\":1", "\"rows\":9", 1),
    );
    let (code, out) = verify_cli(&dir);
    assert_eq!(code, Some(1));
    assert!(out.contains("FAILED") && out.contains(&name), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn chrono_free_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A small tmpfs the test fills to 100% and frees again, so that the
/// audit log really fails while pgveil runs.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts one; `None`, with the reason printed, where tmpfs cannot be
    /// mounted (not root, no CAP_SYS_ADMIN): the test is then skipped.
    fn mount(name: &str) -> Option<SmallDisk> {
        let path = std::env::temp_dir().join(format!("pgveil-disk-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallDisk { path }),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {other:?}"
                );
                None
            }
        }
    }

    /// Fills the disk: nothing more can be written.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = [0u8; 4096];
        while matches!(filler.write(&chunk), Ok(n) if n > 0) {}
        assert!(std::fs::write(self.path.join("probe"), [0u8; 4096]).is_err());
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
        let _ = std::fs::remove_file(self.path.join("probe"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Verifies `dir` with the CRM's audit keys.
fn verify_crm(dir: &std::path::Path) -> Result<VerifyReport, VerifyError> {
    use base64::Engine;
    let keyring = common::crm::keyring();
    let public = base64::engine::general_purpose::STANDARD
        .decode(keyring.audit_public_key_base64().unwrap())
        .unwrap();
    verify(dir, Some(keyring.audit_mac_key().unwrap()), &public)
}

/// `pgveil audit verify DIR --public-key KEY`: exit code and output.
fn verify_cli(dir: &std::path::Path) -> (Option<i32>, String) {
    let key = common::crm::keyring().audit_public_key_base64().unwrap();
    let out = pgveil()
        .args(["audit", "verify"])
        .arg(dir)
        .args(["--public-key", &key])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Rows of `segment` in the customers table, read directly.
fn rows_in_segment(segment: &str) -> usize {
    let out = common::Cluster::shared().psql_direct(&format!(
        "select count(*) from customers where segment = '{segment}'"
    ));
    out.trim().parse().unwrap()
}

/// Runs `attempt` every 50 ms until it returns `Some`, for at most 20 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_protected_statements_until_it_has_room_again() {
    let Some(disk) = SmallDisk::mount("refuse") else {
        return;
    };
    let dir = disk.path.join("audit");
    let mut crm = setup(Some(AuditConfig {
        dir: dir.clone(),
        ..AuditConfig::default()
    }));
    common::Cluster::shared().psql_direct(
        "create view refuse_view as select email, segment from customers; \
         grant select on refuse_view to crm_app",
    );
    let app = crm.connect("crm_user").await;
    app.batch_execute(
        "prepare refuse_lookup as select email from customers where segment = 'refuse-seg'",
    )
    .await
    .unwrap();
    let lookup = "select email from customers where segment = 'refuse-seg'";
    let prepared = app
        .prepare("select email from customers where segment = $1")
        .await
        .unwrap();
    app.batch_execute(
        "insert into customers (email, segment) values ('before@example.org', 'refuse-seg')",
    )
    .await
    .unwrap();

    disk.fill();
    // The file's last page still takes a few records; then a write fails.
    let refused = eventually("the audit log fails", || async {
        app.simple_query("select 1").await.unwrap();
        app.simple_query(lookup).await.err()
    })
    .await;
    assert_eq!(sqlstate(&refused), Some("58030"), "{refused}");
    let message = refused.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("audit log"), "{message}");

    // Protected statements are refused, in every protocol, and write nothing.
    let secret = "during@example.org";
    let err = app
        .simple_query(&format!(
            "insert into customers (email, segment) values ('{secret}', 'refuse-seg')"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("58030"));
    assert!(!err.to_string().contains(secret));
    let err = app
        .execute(
            "insert into customers (email, segment) values ($1, 'refuse-seg')",
            &[&secret],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("58030"));
    let err = app.query(&prepared, &[&"refuse-seg"]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("58030"), "prepared before the failure");
    assert_eq!(rows_in_segment("refuse-seg"), 1, "nothing written");
    // Reads whose text names no protected table are withheld row by row.
    for read in [
        "select email from refuse_view where segment = 'refuse-seg'",
        "execute refuse_lookup",
    ] {
        let err = app.simple_query(read).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("58030"), "{read}: {err}");
        let message = err.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("public.customers.email"), "{message}");
        assert!(!message.contains("before@example.org"), "{message}");
    }
    // Unprotected statements are served, on this session and on new ones.
    app.simple_query("select 1").await.unwrap();
    let support = crm.connect("support_user").await;
    support.simple_query("select 2").await.unwrap();

    disk.free();
    let rows = eventually("the audit log resumes", || async {
        app.simple_query(lookup).await.ok()
    })
    .await;
    assert_eq!(
        common::simple_rows(&rows),
        vec![vec![Some("before@example.org".to_owned())]]
    );
    let rows = app.simple_query("execute refuse_lookup").await.unwrap();
    assert_eq!(common::simple_rows(&rows).len(), 1);
    app.execute(
        "insert into customers (email, segment) values ($1, 'refuse-seg')",
        &[&"after@example.org"],
    )
    .await
    .unwrap();
    assert_eq!(rows_in_segment("refuse-seg"), 2);
    drop((app, support));
    tokio::task::block_in_place(|| crm.proxy.shutdown());

    let report = verify_crm(&dir).expect("the log verifies across the gap");
    assert_eq!(report.gaps.len(), 1, "{report:?}");
    // At least the three refused statements, the two unprotected ones and
    // the new session's connection events.
    assert!(report.lost >= 7, "{report:?}");
    assert!(!report.recovered.is_empty(), "the failed file is sealed");
    let (records, text) = records(&dir);
    assert!(!text.contains(secret));
    let gap = records.iter().position(|r| r["event"] == "gap").unwrap();
    assert_eq!(records[gap]["cause"], "write_failed");
    let inserts_after = records[gap..]
        .iter()
        .filter(|r| r["kind"] == "insert" && r["outcome"] == "ok")
        .filter(|r| has_column(r, "public.customers.email", "write", "encrypted"))
        .count();
    assert_eq!(
        inserts_after, 1,
        "the insert after the recovery is recorded"
    );

    let (code, out) = verify_cli(&dir);
    assert_eq!(code, Some(3), "INCOMPLETE exits 3: {out}");
    assert!(out.starts_with("INCOMPLETE: "), "{out}");
    assert!(
        out.contains(&format!(
            "INCOMPLETE: the log says {} record(s) were lost",
            report.lost
        )),
        "{out}"
    );
    let out = pgveil()
        .args(["audit", "search"])
        .arg(&dir)
        .args(["--event", "gap", "--format", "json"])
        .output()
        .unwrap();
    common::assert_success("audit search", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Waits until pgveil's log contains `text`.
async fn logged(served: &Served, text: &str) {
    eventually(text, || async { served.log().contains(text).then_some(()) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_continue_a_full_disk_serves_counts_and_warns() {
    let Some(disk) = SmallDisk::mount("continue") else {
        return;
    };
    let dir = disk.path.join("audit");
    let served = Served::start(
        "continue",
        &format!("dir = {dir:?}\non_failure = \"continue\""),
    );
    let app = served.connect("crm_user").await;
    let insert = "insert into customers (email, segment) values ($1, 'continue-seg')";
    app.execute(insert, &[&"before@example.org"]).await.unwrap();
    disk.fill();
    eventually("the audit log fails", || async {
        app.simple_query("select email from customers where segment = 'continue-seg'")
            .await
            .unwrap();
        served
            .log()
            .contains("the audit log cannot be written")
            .then_some(())
    })
    .await;
    let secret = "during@example.org";
    for _ in 0..20 {
        app.execute(insert, &[&secret])
            .await
            .expect("served unlogged");
    }
    assert_eq!(rows_in_segment("continue-seg"), 21);
    let log = served.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("records are being dropped"))
        .count();
    assert_eq!(warnings, 1, "warned once, not per record: {log}");
    assert!(log.contains("\"dropped\":"), "{log}");

    disk.free();
    logged(&served, "the audit log is writable again").await;
    app.execute(insert, &[&"after@example.org"]).await.unwrap();
    drop(app);
    served.signal();
    let log = served.wait();
    assert!(!log.contains(secret), "{log}");

    let report = verify_crm(&dir).expect("the log verifies across the gap");
    assert_eq!(report.gaps.len(), 1, "{report:?}");
    assert!(report.lost >= 20, "{report:?}");
    let (records, text) = records(&dir);
    assert!(!text.contains(secret));
    let gap = records.iter().position(|r| r["event"] == "gap").unwrap();
    assert_eq!(records[gap]["lost"].as_u64(), Some(report.lost));
    let (code, out) = verify_cli(&dir);
    assert_eq!(code, Some(3), "INCOMPLETE exits 3: {out}");
    assert!(out.contains("INCOMPLETE"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_every_queued_record_and_seals() {
    let dir = std::env::temp_dir().join(format!("pgveil-audit-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let served = Served::start("sigterm", &format!("dir = {dir:?}"));
    let app = served.connect("crm_user").await;
    app.batch_execute("set pgveil.actor = 'sigterm'")
        .await
        .unwrap();
    let lookup = |i: usize| format!("select email from customers where id = {i}");
    for i in 0..300 {
        app.simple_query(&lookup(i)).await.unwrap();
    }
    served.signal();
    // The session goes on during the grace period, its records queued
    // behind the shutdown.
    for i in 300..600 {
        app.simple_query(&lookup(i)).await.unwrap();
    }
    drop(app);
    served.wait();

    let report = verify_crm(&dir).expect("sealed and verified");
    assert_eq!((report.lost, report.open.clone()), (0, None), "{report:?}");
    let (records, _) = records(&dir);
    let statements = records
        .iter()
        .filter(|r| r["event"] == "statement" && r["actor"] == "sigterm")
        .count();
    assert_eq!(statements, 601, "the SET and 600 lookups");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name.ends_with(".jsonl.zst"),
            "compressed once sealed: {name}"
        );
    }
    assert!(records.iter().any(|r| r["event"] == "disconnect"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a policy the taps only read the messages the trail needs, in
/// place: every statement is still recorded, in order, with its rows and
/// outcome, in both protocols.
#[tokio::test]
async fn without_a_policy_every_statement_is_recorded_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = pgveil::proxy::config::Config {
        upstream: common::Cluster::shared().addr(),
        ..common::test_config()
    };
    let keys = pgveil::audit::AuditKeys::from_keyring(std::sync::Arc::new(common::crm::keyring()));
    let audit = AuditConfig {
        dir: dir.path().to_path_buf(),
        ..AuditConfig::default()
    };
    let mut proxy = common::Proxy::with_audit(config, None, Some((audit, keys.unwrap().into())));
    {
        let mut client = proxy.connect().await;
        client.simple_query("select 1").await.unwrap();
        let series = client
            .prepare("select generate_series(1, $1)")
            .await
            .unwrap();
        for n in [3i32, 0, 2] {
            assert_eq!(
                client.query(&series, &[&n]).await.unwrap().len(),
                n as usize
            );
        }
        // A named portal, read in two steps.
        let transaction = client.transaction().await.unwrap();
        let portal = transaction.bind(&series, &[&3i32]).await.unwrap();
        assert_eq!(transaction.query_portal(&portal, 2).await.unwrap().len(), 2);
        assert_eq!(transaction.query_portal(&portal, 2).await.unwrap().len(), 1);
        transaction.commit().await.unwrap();
        let err = client.query("select 1 / $1", &[&0i32]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("22012"));
        client.simple_query("select 1; select 2, 3").await.unwrap();
        let err = client.simple_query("select 1/0").await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("22012"));
        client
            .execute("create temp table t (x int)", &[])
            .await
            .unwrap();
    }
    proxy.shutdown();
    let (records, _) = records(dir.path());
    let seen: Vec<(String, String, u64)> = records
        .iter()
        .filter(|r| r["event"] == "statement")
        .map(|r| {
            (
                r["statement"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("select $1", "ok", 1),
        ("select generate_series($2, $1)", "ok", 3),
        ("select generate_series($2, $1)", "ok", 0),
        ("select generate_series($2, $1)", "ok", 2),
        ("START TRANSACTION", "ok", 0),
        ("select generate_series($2, $1)", "ok", 2),
        ("select generate_series($2, $1)", "ok", 1),
        ("COMMIT", "ok", 0),
        ("select $2 / $1", "22012", 0),
        // A Query's statements, one record each.
        ("select $1", "ok", 1),
        ("select $1, $2", "ok", 1),
        ("select $1/$2", "22012", 0),
        ("create temp table t (x int)", "ok", 0),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(s, o, n)| (s.to_string(), o.to_string(), *n))
        .collect();
    assert_eq!(seen, expected);
    verify_crm(dir.path()).unwrap();
}
