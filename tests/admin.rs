//! The admin listener (`[admin]`): `/metrics` scraped over HTTP and
//! parsed after workloads, `/healthz`, `/readyz` while the upstream server
//! is down and back; and graceful operation: `max_client_conn`, SIGTERM
//! with a transaction open, reloads counted.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{extended, query, sqlstate, test_config, Cluster, Proxy, RawClient};
use pgveil::audit::{AuditConfig, AuditKeys};
use pgveil::protect::policy::Policy;
use pgveil::protect::protection::Protection;
use pgveil::proxy::config::{AdminConfig, Config};

/// `GET path` from the admin listener at `addr`: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: pgveil\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("an answer within 30 s")
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// One scrape of `/metrics`: each sample by its name and labels.
struct Scrape {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    text: String,
}

impl Scrape {
    async fn of(addr: SocketAddr) -> Scrape {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        Scrape::parse(text)
    }

    /// Reads the text format: `name{label="value",...} value` lines.
    fn parse(text: String) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap();
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            assert!(
                samples.insert((name.to_owned(), labels), value).is_none(),
                "{line} twice"
            );
        }
        Scrape { samples, text }
    }

    /// The value of a sample, 0 when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether a series of this name is exposed at all.
    fn has(&self, name: &str) -> bool {
        self.samples.keys().any(|(n, _)| n == name)
    }
}

/// A test configuration with the admin listener on a free port.
fn admin_config(upstream: String) -> Config {
    Config {
        upstream,
        admin: Some(AdminConfig {
            listen: "127.0.0.1:0".into(),
        }),
        ..test_config()
    }
}

/// The CRM policy with one rule more: analysts are denied addresses.
fn crm_policy_with_a_denial(dir: &Path) -> Policy {
    let text = std::fs::read_to_string(common::crm::policy_file()).unwrap();
    let rule = "reveal = { crm_app = \"plaintext\", support = \"masked\" }";
    let address = text.rfind(rule).expect("the address rule, the last");
    let (head, tail) = text.split_at(address);
    let tail = tail.replacen("\"masked\" }", "\"masked\", analyst = \"deny\" }", 1);
    let path = dir.join("crm-deny.toml");
    std::fs::write(&path, format!("{head}{tail}")).unwrap();
    Policy::load(&[path]).unwrap()
}

/// Runs `sql` as `client` and returns its error's SQLSTATE.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    let e = client.simple_query(sql).await.unwrap_err();
    sqlstate(&e)
        .unwrap_or_else(|| panic!("{sql}: {e}"))
        .to_owned()
}

/// Polls `check` every 50 ms until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_crm_workload_by_decision_refusal_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let policy = crm_policy_with_a_denial(dir.path());
    let keyring = common::crm::keyring();
    common::crm::prepared();
    let audit = AuditConfig {
        dir: dir.path().join("audit"),
        ..AuditConfig::default()
    };
    let keys = Arc::new(AuditKeys::from_keyring(Arc::new(common::crm::keyring())).unwrap());
    let proxy = Proxy::with_audit(
        admin_config(Cluster::shared().addr()),
        Some(Protection::new(policy, keyring)),
        Some((audit, keys)),
    );
    let admin = proxy.admin.expect("the admin listener");
    let connect = |user: &'static str| {
        let url = proxy.url(user, "pw", "postgres");
        async move { common::try_connect(&url).await.unwrap() }
    };
    let before = Scrape::of(admin).await;

    let app = connect("crm_user").await;
    let support = connect("support_user").await;
    let analyst = connect("analyst_user").await;
    let inserted = app
        .simple_query(
            "insert into customers (full_name, email, phone, national_id, address, segment) \
             values ('Li Lei', 'li.lei@example.cn', '+86 138 0000 1111', '110101199001011234', \
             'Beijing', 'metrics') returning id",
        )
        .await
        .unwrap();
    let id = common::simple_rows(&inserted)[0][0].clone().unwrap();
    let row = |columns: &str| format!("select {columns} from customers where id = {id}");
    // Plaintext: 2 values; masked: 3; a pseudonym: 2 and NULL: 1.
    app.simple_query(&row("full_name, email")).await.unwrap();
    support
        .simple_query(&row("full_name, email, phone"))
        .await
        .unwrap();
    analyst
        .simple_query(&row("email, phone, full_name"))
        .await
        .unwrap();
    // Denied: the result is withheld (42501).
    assert_eq!(refused(&analyst, &row("address")).await, "42501");
    // Refused by pgveil before the server sees it (0A000).
    assert_eq!(
        refused(&app, "select id from customers where email like '%x%'").await,
        "0A000"
    );
    // The extended protocol: Parse, Bind, Execute; one plaintext value.
    let id: i64 = id.parse().unwrap();
    let email: String = app
        .query_one("select email from customers where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, "li.lei@example.cn");
    let copied = common::copy_out(
        &app,
        &format!("copy (select segment from customers where id = {id}) to stdout"),
    )
    .await;
    assert_eq!(copied, b"metrics\n");

    let after = Scrape::of(admin).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let revealed = |decision| delta("pgveil_revealed_values_total", &[("decision", decision)]);
    assert_eq!(revealed("plaintext"), 3.0, "{}", after.text);
    assert_eq!(revealed("masked"), 3.0);
    assert_eq!(revealed("pseudonym"), 2.0);
    assert_eq!(revealed("null"), 1.0);
    assert_eq!(revealed("deny"), 1.0);
    let refusals = |code| delta("pgveil_refusals_total", &[("sqlstate", code)]);
    assert_eq!((refusals("42501"), refusals("0A000")), (1.0, 1.0));
    let statements = |kind| delta("pgveil_statements_total", &[("kind", kind)]);
    assert_eq!(statements("query"), 6.0, "{}", after.text);
    for kind in ["parse", "bind", "execute"] {
        assert!(statements(kind) >= 1.0, "{kind}: {}", after.text);
    }
    assert_eq!(statements("copy_out"), 1.0);
    assert_eq!(statements("copy_in"), 0.0);
    let cycles = |protocol| {
        delta(
            "pgveil_query_cycle_seconds_count",
            &[("protocol", protocol)],
        )
    };
    assert_eq!(cycles("simple"), 6.0);
    assert!(cycles("extended") >= 2.0);
    assert!(delta("pgveil_query_cycle_seconds_sum", &[("protocol", "simple")]) > 0.0);
    assert!(delta("pgveil_connections_total", &[]) >= 3.0);
    assert!(after.value("pgveil_connections_open", &[]) >= 3.0);
    for direction in ["client_to_server", "server_to_client"] {
        assert!(delta("pgveil_relayed_bytes_total", &[("direction", direction)]) > 0.0);
    }
    assert_eq!(after.value("pgveil_audit_up", &[]), 1.0);
    assert_eq!(after.value("pgveil_audit_records_lost_total", &[]), 0.0);
    assert!(after.has("pgveil_audit_queue_depth"));
    assert_eq!(after.value("pgveil_last_reload_success", &[]), 1.0);
    // Roles, databases and statement texts are never labels.
    for secret in ["crm_user", "analyst", "postgres", "customers", "li.lei"] {
        assert!(!after.text.contains(secret), "{secret} in\n{}", after.text);
    }
    eventually("the audit records are written", || async {
        Scrape::of(admin)
            .await
            .value("pgveil_audit_records_written_total", &[])
            > before.value("pgveil_audit_records_written_total", &[]) + 10.0
    })
    .await;
    drop((app, support, analyst));
    eventually("the sessions are closed", || async {
        Scrape::of(admin)
            .await
            .value("pgveil_connections_open", &[])
            == 0.0
    })
    .await;
}

#[tokio::test]
async fn statements_and_cycles_are_counted_once_each() {
    let proxy = Proxy::with_config(admin_config(Cluster::shared().addr()));
    let admin = proxy.admin.unwrap();
    let (mut client, _) = RawClient::login(proxy.addr).await;
    let before = Scrape::of(admin).await;
    client.send(&query("select 1; select 2")).await;
    client.rows_until_ready().await;
    // Two batches in one write: both answered, each measured once.
    let batch = extended("select $1::int", &[Some(b"7")], &[0]);
    client.send(&[batch.clone(), batch].concat()).await;
    client.rows_until_ready().await;
    client.rows_until_ready().await;
    let after = Scrape::of(admin).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    for (kind, count) in [
        ("query", 1.0),
        ("parse", 2.0),
        ("bind", 2.0),
        ("execute", 2.0),
    ] {
        assert_eq!(
            delta("pgveil_statements_total", &[("kind", kind)]),
            count,
            "{kind}"
        );
    }
    let cycles = |protocol| {
        delta(
            "pgveil_query_cycle_seconds_count",
            &[("protocol", protocol)],
        )
    };
    assert_eq!((cycles("simple"), cycles("extended")), (1.0, 2.0));
    // The first bucket holds nothing slower than its bound, the last all.
    let fastest = after.value(
        "pgveil_query_cycle_seconds_bucket",
        &[("protocol", "extended"), ("le", "+Inf")],
    );
    assert_eq!(
        fastest,
        after.value(
            "pgveil_query_cycle_seconds_count",
            &[("protocol", "extended")]
        )
    );
    // Other paths: 404, 405, and the content type of /metrics.
    assert_eq!(get(admin, "/nothing").await.0, 404);
    assert_eq!(request(admin, "POST", "/metrics").await.0, 405);
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".into()));
}

#[tokio::test]
async fn readyz_fails_while_the_upstream_is_down_and_sessions_come_back() {
    let cluster = Cluster::start();
    let proxy = Proxy::with_config(admin_config(cluster.addr()));
    let admin = proxy.admin.unwrap();
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (mut open, _) = RawClient::login(proxy.addr).await;

    cluster.stop();
    // The open session gets the server's own error, then the close.
    let (code, _) = open.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "57P01");
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("upstream: cannot connect to") && body.contains(&cluster.addr()),
        "{body}"
    );
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive all the same");
    // A new client is told the server cannot be reached.
    let e = common::try_connect(&proxy.url("trust_user", "", "postgres"))
        .await
        .map(drop)
        .expect_err("no session while the server is down");
    assert_eq!(sqlstate(&e), Some("08001"), "{e}");
    let scrape = Scrape::of(admin).await;
    assert!(scrape.value("pgveil_upstream_connect_errors_total", &[]) >= 1.0);
    assert!(scrape.value("pgveil_refusals_total", &[("sqlstate", "08001")]) >= 1.0);

    cluster.restart();
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".into()));
    let client = proxy.connect_as("trust_user", "").await;
    let row = client.query_one("select 'back'::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "back");
}

#[tokio::test]
async fn a_client_beyond_max_client_conn_gets_53300_until_a_slot_frees() {
    let proxy = Proxy::with_config(Config {
        max_client_conn: 2,
        ..admin_config(Cluster::shared().addr())
    });
    let admin = proxy.admin.unwrap();
    let (first, _) = RawClient::login(proxy.addr).await;
    let (_second, _) = RawClient::login(proxy.addr).await;

    let mut third = RawClient::connect(proxy.addr).await;
    third
        .send(&common::startup_packet("trust_user", "postgres"))
        .await;
    let (code, message) = third.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "53300");
    assert!(message.contains("max_client_conn = 2"), "{message}");
    // A driver reports the same code.
    let e = common::try_connect(&proxy.url("trust_user", "", "postgres"))
        .await
        .map(drop)
        .expect_err("refused");
    assert_eq!(sqlstate(&e), Some("53300"), "{e}");
    let scrape = Scrape::of(admin).await;
    assert_eq!(
        scrape.value("pgveil_refusals_total", &[("sqlstate", "53300")]),
        2.0
    );

    // The first client leaves: its slot is free for the next.
    let mut first = first;
    first.send(&common::message(b'X', &[])).await;
    assert!(first.message().await.is_none());
    let client = proxy.connect_as("trust_user", "").await;
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// `pgveil serve` run as a program with audit and the admin listener.
struct Served {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Served {
    fn start(dir: &Path, extra: &str) -> Served {
        let files = common::crm::prepared();
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let config = dir.join("pgveil.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nupstream = {:?}\nlog_format = \"json\"\n\
                 keyring = {:?}\nmaster_key_file = {:?}\n{extra}\n\
                 [admin]\nlisten = \"{admin}\"\n[audit]\ndir = {:?}\n",
                Cluster::shared().addr(),
                files.keyring,
                files.master_key,
                dir.join("audit"),
            ),
        )
        .unwrap();
        let log = dir.join("pgveil.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(admin).is_err()
            || std::net::TcpStream::connect(addr).is_err()
        {
            assert!(Instant::now() < deadline, "pgveil did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Served {
            child,
            addr,
            admin,
            config,
            log,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_sigterm_closes_an_open_transaction_after_the_grace() {
    Cluster::shared().psql_direct(
        "create table if not exists admin_sigterm (note text); truncate admin_sigterm; \
         grant insert on admin_sigterm to trust_user",
    );
    let dir = tempfile::tempdir().unwrap();
    // A grace long enough for /readyz to be polled during it on a loaded
    // machine (the admin listener stops with the proxy).
    let mut served = Served::start(dir.path(), "shutdown_grace_secs = 5");

    // Reloads: one applied, one refused.
    let reloads =
        |scrape: &Scrape, outcome| scrape.value("pgveil_reloads_total", &[("outcome", outcome)]);
    served.signal("-HUP");
    eventually("a reload is counted", || async {
        reloads(&Scrape::of(served.admin).await, "ok") == 1.0
    })
    .await;
    let text = std::fs::read_to_string(&served.config).unwrap();
    std::fs::write(&served.config, format!("{text}\nnot toml")).unwrap();
    served.signal("-HUP");
    eventually("a refused reload is counted", || async {
        reloads(&Scrape::of(served.admin).await, "refused") == 1.0
    })
    .await;
    let scrape = Scrape::of(served.admin).await;
    assert_eq!(scrape.value("pgveil_last_reload_success", &[]), 0.0);
    let at = scrape.value("pgveil_last_reload_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 60.0..=now + 1.0).contains(&at), "{at} {now}");

    // A transaction left open.
    let (mut client, _) = RawClient::login(served.addr).await;
    client
        .send(&query(
            "begin; insert into admin_sigterm values ('uncommitted')",
        ))
        .await;
    let (_, error) = client.rows_until_ready().await;
    assert_eq!(error, None);
    let signalled = Instant::now();
    served.signal("-TERM");
    eventually("/readyz says pgveil is shutting down", || async {
        let (status, body) = get(served.admin, "/readyz").await;
        status == 503 && body.contains("shutdown: pgveil is shutting down")
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(served.addr).await.is_err(),
        "new clients are refused"
    );
    // After the grace period the client is told, and the transaction is
    // rolled back.
    let (code, message) = client.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "57P01", "{message}");
    assert!(signalled.elapsed() >= Duration::from_secs(5));
    let status = served.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", served.log());
    let count = Cluster::shared().psql_direct("select count(*) from admin_sigterm");
    assert_eq!(count.trim(), "0");

    // The audit log holds the session's end and is sealed.
    let audit = dir.path().join("audit");
    let keyring = common::crm::keyring();
    let public = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(keyring.audit_public_key_base64().unwrap())
            .unwrap()
    };
    let report = pgveil::audit::verify(&audit, Some(keyring.audit_mac_key().unwrap()), &public)
        .expect("the log verifies");
    assert_eq!((report.lost, report.open.clone()), (0, None), "{report:?}");
    let (records, _) = common::audit_log(&audit);
    for event in ["connect", "disconnect", "reload"] {
        assert!(
            records.iter().any(|r| r["event"] == event),
            "{event}: {records:?}"
        );
    }
}
