//! The audit log as a reviewer relies on it, against a real `pgveil
//! serve` in front of PostgreSQL: `audit verify` never says more than it
//! checked (an open file read without the keyring is unverified), a
//! `kill -9` during a workload is reported as INCOMPLETE where it
//! happened, and SIGTERM, SIGINT and SIGHUP during workloads lose no
//! record.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::served::{pgveil, Served};
use pgveil::audit::{verify, Status, UncleanEnd, VerifyReport};
use serde_json::Value;

fn audit_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgveil-integrity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Verifies `dir` with the CRM's audit keys (every check).
fn verify_crm(dir: &Path) -> VerifyReport {
    use base64::Engine;
    let keyring = common::crm::keyring();
    let public = base64::engine::general_purpose::STANDARD
        .decode(keyring.audit_public_key_base64().unwrap())
        .unwrap();
    verify(dir, Some(keyring.audit_mac_key().unwrap()), &public).unwrap()
}

/// `pgveil audit verify DIR ARGS...`: exit code and standard output.
fn verify_cli(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = pgveil()
        .args(["audit", "verify"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn public_key() -> String {
    common::crm::keyring().audit_public_key_base64().unwrap()
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The newest audit file, open (not compressed): the one being written.
fn open_file(dir: &Path) -> PathBuf {
    let name = entries(dir).pop().expect("an audit file");
    assert!(name.ends_with(".jsonl"), "{name}");
    dir.join(name)
}

/// Runs `check` every 50 ms until it holds, for at most 20 s.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Statement records of `actor`, and of those the ones that ended `ok`.
fn statements_of(records: &[Value], actor: &str) -> (usize, usize) {
    let of_actor: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "statement" && r["actor"] == actor)
        .collect();
    let ok = of_actor.iter().filter(|r| r["outcome"] == "ok").count();
    (of_actor.len(), ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_key_on_a_live_file_with_an_edited_role_is_unverified_not_ok() {
    let dir = audit_dir("live-edit");
    let served = Served::start("live-edit", &format!("dir = {dir:?}"));
    let app = served.connect("crm_user").await;
    for i in 0..5 {
        app.simple_query(&format!("select email from customers where id = {i}"))
            .await
            .unwrap();
    }
    let file = open_file(&dir);
    eventually("records on disk", || {
        std::fs::read_to_string(&file)
            .unwrap()
            .matches("\"kind\":\"select\"")
            .count()
            == 5
    });
    // A role name edited in place in the file pgveil is writing.
    let text = std::fs::read_to_string(&file).unwrap();
    let at = text.find("\"role\":\"crm_user\"").unwrap() + "\"role\":\"crm_".len();
    {
        use std::os::unix::fs::FileExt;
        let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        handle.write_all_at(b"boss", at as u64).unwrap();
    }
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let key = public_key();

    let (code, out) = verify_cli(&dir, &["--public-key", &key, "--live"]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.starts_with("UNVERIFIED: "), "{out}");
    assert!(!out.contains("ok:"), "{out}");
    assert!(
        out.contains(&format!("UNVERIFIED: {name} (seq 1..")),
        "names the file nothing checked: {out}"
    );
    assert!(out.contains("unverified: "), "{out}");

    // Without --live, the open file fails and the message says why.
    let (code, out) = verify_cli(&dir, &["--public-key", &key]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("FAILED: ") && out.contains("--live"),
        "{out}"
    );

    // With the keyring the edit is found, in the live file.
    let config = served.config.to_str().unwrap().to_owned();
    let (code, out) = verify_cli(&dir, &["--config", &config, "--live"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!("FAILED: {name} line ")) && out.contains("MAC does not match"),
        "{out}"
    );

    drop(app);
    served.signal();
    served.wait();
    // Sealed, the edit fails the seal with the public key alone.
    let (code, out) = verify_cli(&dir, &["--public-key", &key]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("hash differs from its seal"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs statements as `actor` on `client` until `stop` says so or one
/// fails (or `limit` of them ran); counts those that succeeded, the `SET`
/// of the actor included, in `ok`. Simple and extended protocol, reads of
/// protected columns and writes.
async fn workload(
    client: tokio_postgres::Client,
    actor: String,
    limit: usize,
    ok: Arc<AtomicUsize>,
) -> tokio_postgres::Client {
    if client
        .batch_execute(&format!("set pgveil.actor = '{actor}'"))
        .await
        .is_err()
    {
        return client;
    }
    ok.fetch_add(1, Ordering::SeqCst);
    let Ok(lookup) = client
        .prepare("select email, phone from customers where id = $1")
        .await
    else {
        return client;
    };
    for i in 0..limit {
        let id = (i % 50) as i64;
        let done = match i % 3 {
            0 => client
                .simple_query(&format!("select full_name from customers where id = {id}"))
                .await
                .map(drop),
            1 => client.query(&lookup, &[&id]).await.map(drop),
            _ => client
                .execute(
                    "update customers set segment = segment where id = $1",
                    &[&id],
                )
                .await
                .map(drop),
        };
        if let Err(e) = done {
            eprintln!("{actor}: statement {i} ended the workload: {e}");
            break;
        }
        ok.fetch_add(1, Ordering::SeqCst);
    }
    client
}

/// Starts `clients` workloads as crm_user, actors `{prefix}-{i}`, each
/// counting into its own counter.
async fn start_workloads(
    served: &Served,
    prefix: &str,
    clients: usize,
    limit: usize,
) -> Vec<(
    String,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<tokio_postgres::Client>,
)> {
    let mut running = Vec::new();
    for i in 0..clients {
        let client = served.connect("crm_user").await;
        let actor = format!("{prefix}-{i}");
        let ok = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(workload(client, actor.clone(), limit, ok.clone()));
        running.push((actor, ok, task));
    }
    running
}

/// Waits until every workload ran at least `n` statements.
async fn ran_at_least(
    running: &[(
        String,
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<tokio_postgres::Client>,
    )],
    n: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running
        .iter()
        .any(|(_, ok, _)| ok.load(Ordering::SeqCst) < n)
    {
        assert!(Instant::now() < deadline, "the workloads do not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_workload_is_incomplete_at_the_unclean_shutdown_record() {
    let dir = audit_dir("kill9");
    let served = Served::start("kill9", &format!("dir = {dir:?}"));
    let (config, addr) = (served.config.clone(), served.addr.clone());
    let running = start_workloads(&served, "before", 3, usize::MAX).await;
    ran_at_least(&running, 100).await;
    served.kill();
    let mut ok_before = 0;
    for (_, ok, task) in running {
        drop(task.await.unwrap());
        ok_before += ok.load(Ordering::SeqCst);
    }
    // What the killed run's file says it holds.
    let left_open = open_file(&dir);
    let left_name = left_open.file_name().unwrap().to_str().unwrap().to_owned();
    let text = std::fs::read_to_string(&left_open).unwrap();
    let last_seq = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|value| value["seq"].as_u64())
        .max()
        .unwrap();

    let served = Served::start_again(&config, &addr, 2);
    let after = served.connect("crm_user").await;
    after
        .batch_execute("set pgveil.actor = 'after'")
        .await
        .unwrap();
    for i in 0..10 {
        after
            .simple_query(&format!("select email from customers where id = {i}"))
            .await
            .unwrap();
    }
    drop(after);
    served.signal();
    let log = served.wait();
    assert!(
        log.contains("the previous run ended without a clean shutdown"),
        "{log}"
    );

    // The first file the second run wrote holds the record, first.
    let names = entries(&dir);
    let recovered = names
        .iter()
        .position(|n| n.starts_with(&left_name))
        .unwrap();
    let next = &names[recovered + 1];
    let report = verify_crm(&dir);
    assert_eq!(report.status(), Status::Incomplete, "{report:?}");
    assert_eq!(
        report.unclean,
        vec![UncleanEnd {
            at: pgveil::audit::Location {
                file: next.clone(),
                line: 2,
            },
            seq: last_seq + 1,
            previous_last_seq: last_seq,
        }]
    );
    assert!(report.recovered.iter().any(|f| f.starts_with(&left_name)));
    assert_eq!(report.gaps.len(), 0);

    let config = config.to_str().unwrap().to_owned();
    let (code, out) = verify_cli(&dir, &["--config", &config]);
    eprintln!("{out}");
    assert_eq!(code, Some(3), "INCOMPLETE exits 3: {out}");
    assert!(out.starts_with("INCOMPLETE: "), "{out}");
    assert!(
        out.contains(&format!(
            "INCOMPLETE: {next} line 2 (seq {}): the run before ended without a clean \
             shutdown after seq {last_seq}",
            last_seq + 1
        )),
        "{out}"
    );
    assert!(out.contains("how many cannot be known"), "{out}");
    let (code, out) = verify_cli(&dir, &["--public-key", &public_key()]);
    assert_eq!(code, Some(3), "{out}");

    let (records, _) = common::audit_log(&dir);
    let end = records
        .iter()
        .find(|r| r["event"] == "unclean_shutdown")
        .unwrap();
    assert_eq!(end["file"], left_name.as_str());
    assert_eq!(end["last_seq"].as_u64(), Some(last_seq));
    // Records the killed run wrote are there, none invented; the next run
    // lost nothing.
    let written_before: usize = (0..3)
        .map(|i| statements_of(&records, &format!("before-{i}")).1)
        .sum();
    eprintln!("answered before the kill: {ok_before}, recorded: {written_before}");
    assert!(written_before > 0 && written_before <= ok_before + 3);
    assert_eq!(statements_of(&records, "after"), (11, 11));
    let out = pgveil()
        .args(["audit", "search"])
        .arg(&dir)
        .args(["--event", "unclean_shutdown", "--format", "csv"])
        .output()
        .unwrap();
    common::assert_success("audit search", &out);
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found.contains("without a clean shutdown") && found.contains(&left_name),
        "{found}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM or SIGINT while four clients run statements: the sessions get
/// the grace period, finish, and every statement they ran is a record.
async fn a_stop_signal_loses_no_record(signal: &str) {
    let name = format!("stop-{signal}");
    let dir = audit_dir(&name);
    let served = Served::start(&name, &format!("dir = {dir:?}"));
    const STATEMENTS: usize = 150;
    let running = start_workloads(&served, &name, 4, STATEMENTS).await;
    ran_at_least(&running, 20).await;
    served.send(signal);
    let mut ran = Vec::new();
    for (actor, ok, task) in running {
        drop(task.await.unwrap());
        ran.push((actor, ok.load(Ordering::SeqCst)));
    }
    let log = served.wait();
    assert!(!log.contains("not sealed cleanly"), "{log}");

    let report = verify_crm(&dir);
    assert_eq!(report.status(), Status::Ok, "{report:?}");
    assert!(report.open.is_none() && report.lost == 0);
    let (records, _) = common::audit_log(&dir);
    for (actor, ok) in ran {
        assert_eq!(ok, STATEMENTS + 1, "{actor} ran to its end in the grace");
        assert_eq!(statements_of(&records, &actor), (ok, ok), "{actor}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_concurrent_workloads_loses_no_record() {
    a_stop_signal_loses_no_record("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_concurrent_workloads_loses_no_record() {
    a_stop_signal_loses_no_record("INT").await;
}

/// Sessions still running when the grace period ends are closed; every
/// statement that answered its client is still a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_closed_after_the_grace_period_lose_no_record() {
    let dir = audit_dir("grace");
    let served = Served::start_with(
        "grace",
        "shutdown_grace_secs = 1\n",
        &format!("dir = {dir:?}"),
    );
    let running = start_workloads(&served, "grace", 3, usize::MAX).await;
    ran_at_least(&running, 20).await;
    served.signal();
    let mut ran = Vec::new();
    for (actor, ok, task) in running {
        drop(task.await.unwrap());
        ran.push((actor, ok.load(Ordering::SeqCst)));
    }
    served.wait();
    let report = verify_crm(&dir);
    assert_eq!(report.status(), Status::Ok, "{report:?}");
    let (records, _) = common::audit_log(&dir);
    for (actor, ok) in ran {
        let (_, recorded_ok) = statements_of(&records, &actor);
        // The statement in flight at the close may have completed at the
        // server, and been recorded, without reaching the client.
        assert!(
            recorded_ok == ok || recorded_ok == ok + 1,
            "{actor}: {recorded_ok} recorded, {ok} answered"
        );
    }
    assert!(
        records
            .iter()
            .filter(|r| r["event"] == "disconnect")
            .count()
            >= 3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_a_workload_reloads_and_loses_no_record() {
    let dir = audit_dir("hup");
    let served = Served::start("hup", &format!("dir = {dir:?}"));
    const STATEMENTS: usize = 300;
    let running = start_workloads(&served, "hup", 2, STATEMENTS).await;
    for at in [10, 60, 120] {
        ran_at_least(&running, at).await;
        served.send("HUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ran = Vec::new();
    for (actor, ok, task) in running {
        drop(task.await.unwrap());
        ran.push((actor, ok.load(Ordering::SeqCst)));
    }
    served.signal();
    served.wait();
    let report = verify_crm(&dir);
    assert_eq!(report.status(), Status::Ok, "{report:?}");
    let (records, _) = common::audit_log(&dir);
    let reloads: Vec<&Value> = records.iter().filter(|r| r["event"] == "reload").collect();
    assert_eq!(reloads.len(), 3, "{reloads:?}");
    assert!(reloads.iter().all(|r| r["outcome"] == "ok"), "{reloads:?}");
    for (actor, ok) in ran {
        assert_eq!(ok, STATEMENTS + 1, "{actor} was not interrupted");
        assert_eq!(statements_of(&records, &actor), (ok, ok), "{actor}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_help_documents_the_statuses_and_exit_codes() {
    let out = pgveil()
        .args(["audit", "verify", "--help"])
        .output()
        .unwrap();
    common::assert_success("audit verify --help", &out);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "verified     the MAC chain",
        "chained      the MAC chain",
        "sealed-only  the seal's signature",
        "unverified   still open",
        "FAILED      1",
        "UNVERIFIED  4",
        "INCOMPLETE  3",
        "ok          0",
    ] {
        assert!(help.contains(line), "{line:?} in {help}");
    }
}
