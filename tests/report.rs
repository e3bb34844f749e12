//! `pgveil audit report` on a log written by real sessions through pgveil
//! against real PostgreSQL (the sample CRM; a `\copy` export by psql, a
//! blocked bulk reader, refusals, failed logins, reads without a purpose,
//! writes): every figure of the report is computed again here, from the
//! log's JSON lines, and compared with the report's CSV and JSON; and the
//! HTML page is rendered in headless Chromium, which must show the
//! verification and fit every table within the page.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::crm::setup;
use common::sqlstate;
use pgveil::audit::{AuditConfig, BulkConfig, OnBulk};
use serde_json::Value;
use sha2::{Digest, Sha256};

const SECRETS: [&str; 4] = [
    "Report Person",
    "report.person",
    "+1 555 0142",
    "RPT-NATIONAL",
];
const CUSTOMERS: usize = 12;

/// The workload: through pgveil, as each of the CRM's login users.
async fn workload(crm: &common::crm::Crm) {
    let app = crm.connect("crm_user").await;
    for i in 0..CUSTOMERS {
        app.execute(
            "insert into customers (full_name, email, phone, national_id, address, segment) \
             values ($1, $2, $3, $4, $5, 'rep-seg')",
            &[
                &format!("{} {i}", SECRETS[0]),
                &format!("{}{i}@example.org", SECRETS[1]),
                &format!("{}{i:02}", SECRETS[2]),
                &format!("{}-{i}", SECRETS[3]),
                &format!("{i} Report Street"),
            ],
        )
        .await
        .unwrap();
    }
    app.batch_execute("set pgveil.purpose = 'support-ticket'")
        .await
        .unwrap();
    let found = app
        .query(
            "select full_name from customers where email = $1",
            &[&format!("{}3@example.org", SECRETS[1])],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);

    // An export of every customer of the segment by psql's \copy, without
    // a purpose: four columns come out in plaintext, over the threshold.
    let out = common::psql(&crm.proxy.addr(), "crm_user", "pw", "postgres")
        .args([
            "-c",
            "\\copy (select full_name, email, phone, national_id, address from customers \
             where segment = 'rep-seg' order by id) to stdout",
        ])
        .output()
        .unwrap();
    common::assert_success("psql \\copy", &out);
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(exported.lines().count(), CUSTOMERS, "{exported}");
    assert!(exported.contains(&format!("{} 0", SECRETS[0])), "plaintext");

    // A bulk reader with an actor: alerted, then blocked (42501).
    let bot = crm.connect("crm_user").await;
    bot.batch_execute("set pgveil.actor = 'export-bot'")
        .await
        .unwrap();
    let names = "select full_name from customers where segment = 'rep-seg'";
    assert_eq!(bot.query(names, &[]).await.unwrap().len(), CUSTOMERS);
    let err = bot.query(names, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "blocked after the alert");

    let support = crm.connect("support_user").await;
    support
        .simple_query("select full_name, email from customers where segment = 'rep-seg'")
        .await
        .unwrap();
    let err = support
        .simple_query("select id from customers order by full_name")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"));

    let analyst = crm.connect("analyst_user").await;
    analyst
        .simple_query("select email from customers where segment = 'rep-seg'")
        .await
        .unwrap();
    let err = analyst.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("22012"));

    let kyc = crm.connect("kyc_user").await;
    kyc.batch_execute("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    let ids = kyc
        .query(
            "select national_id from customers where segment = 'rep-seg' order by id limit 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);

    for (user, password) in [("support_user", "wrong"), ("mallory", "pw")] {
        let url = crm.proxy.url(user, password, "postgres");
        assert!(common::try_connect(&url).await.is_err(), "{user} logged in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_agrees_with_the_records_and_renders_in_a_browser() {
    let dir = tempfile::Builder::new()
        .prefix("pgveil-report-")
        .tempdir()
        .unwrap();
    let audit = dir.path().join("audit");
    let mut crm = setup(Some(AuditConfig {
        dir: audit.clone(),
        bulk: Some(BulkConfig {
            threshold_rows: 5,
            window_secs: 300,
            on_bulk: OnBulk::Block,
        }),
        ..AuditConfig::default()
    }));
    workload(&crm).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| crm.proxy.shutdown());

    let (records, _) = common::audit_log(&audit);
    let config = config_file(dir.path());
    let json = report(&audit, &config, "json");
    let data: Value = serde_json::from_str(&json).unwrap();
    let csv = parse_csv(&report(&audit, &config, "csv"));
    let text = report(&audit, &config, "text");
    let html_path = dir.path().join("review.html");
    let out = pgveil()
        .args(["audit", "report"])
        .arg(&audit)
        .arg("--config")
        .arg(&config)
        .args(["--format", "html", "--out"])
        .arg(&html_path)
        .output()
        .unwrap();
    common::assert_success("audit report --format html", &out);
    let html = std::fs::read_to_string(&html_path).unwrap();
    for output in [&json, &text, &html] {
        for secret in SECRETS {
            assert!(!output.contains(secret), "{secret} in a report");
        }
    }

    // The head: verified with the keyring, and the digest of the data.
    assert_eq!(
        data["verification"]["status"], "ok",
        "{}",
        data["verification"]
    );
    assert_eq!(
        data["verification"]["records"].as_u64(),
        Some(records.len() as u64)
    );
    let digest = hex(&Sha256::digest(json.as_bytes()));
    assert!(
        text.contains(&format!("data sha256      {digest}")),
        "{text}"
    );
    assert!(html.contains(&digest));
    assert_eq!(
        csv_value(&csv, "report", "data_sha256"),
        digest,
        "every format names the same data"
    );
    assert_eq!(csv_value(&csv, "report", "verification"), "ok");

    // Not verified without keys; verified with the wrong key: FAILED, and
    // exit code 1, the report written all the same.
    let out = pgveil()
        .args(["audit", "report"])
        .arg(&audit)
        .output()
        .unwrap();
    common::assert_success("audit report without keys", &out);
    let unverified = String::from_utf8(out.stdout).unwrap();
    assert!(
        unverified.contains("verification     UNVERIFIED: not verified"),
        "{unverified}"
    );
    let wrong_key = base64_of(&[7; 32]);
    let out = pgveil()
        .args(["audit", "report"])
        .arg(&audit)
        .args(["--public-key", &wrong_key, "--format", "html"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "verification failed");
    let failed = String::from_utf8(out.stdout).unwrap();
    assert!(
        failed.contains("<span class=\"status\">FAILED</span>")
            && failed.contains("does not verify with the audit public key"),
        "{failed}"
    );
    cross_check(&records, &data, &csv);
    the_scenario_as_an_auditor_sees_it(&records, &data);
    rendered_in_chromium(&html_path, &data);
}

/// The report's figures, computed again from the records and compared.
fn cross_check(records: &[Value], data: &Value, csv: &[BTreeMap<String, String>]) {
    let expected = Expected::of(records);
    let section = |name: &'static str| csv.iter().filter(move |row| row["section"] == name);
    let number =
        |row: &BTreeMap<String, String>, column: &str| -> u64 { row[column].parse().unwrap_or(0) };

    let mut activity: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for row in section("activity") {
        let value = number(row, "value");
        if value > 0 {
            let key = (
                row["role"].clone(),
                row["user"].clone(),
                row["name"].clone(),
            );
            activity.insert(key, value);
        }
    }
    assert_eq!(activity, expected.activity, "per role and user");

    let mut reads = BTreeMap::new();
    let mut unpurposed = BTreeMap::new();
    for row in section("read") {
        let key = (
            row["role"].clone(),
            row["user"].clone(),
            row["actor"].clone(),
            row["column"].clone(),
        );
        if row["name"] == "without_purpose" {
            unpurposed.insert(key, number(row, "statements"));
        } else {
            let counts = (number(row, "statements"), number(row, "rows"));
            reads.insert((key, row["decision"].clone()), counts);
        }
    }
    assert_eq!(reads, expected.reads, "reads per role, user, actor, column");
    assert_eq!(unpurposed, expected.unpurposed, "reads without a purpose");
    let writes: BTreeMap<_, _> = section("write")
        .map(|row| {
            let key = (
                row["role"].clone(),
                row["user"].clone(),
                row["actor"].clone(),
                row["column"].clone(),
            );
            (key, (number(row, "statements"), number(row, "rows")))
        })
        .collect();
    assert_eq!(
        writes, expected.writes,
        "writes per role, user, actor, column"
    );

    let incidents: Vec<_> = csv
        .iter()
        .filter(|row| row["section"] == "refused_statement" || row["section"] == "failed_login")
        .map(|row| {
            (
                row["time"].clone(),
                row["section"].clone(),
                row["user"].clone(),
                row["role"].clone(),
                row["sqlstate"].clone(),
                row["statement"].clone(),
            )
        })
        .collect();
    assert_eq!(incidents, expected.incidents, "refusals and failed logins");

    let alerts: Vec<_> = section("alert")
        .map(|row| {
            (
                row["time"].clone(),
                row["user"].clone(),
                row["column"].clone(),
                number(row, "rows"),
                row["statement"].clone(),
            )
        })
        .collect();
    assert_eq!(alerts, expected.alerts, "one alert per statement");
    let mut per_statement = BTreeMap::<&str, usize>::new();
    for alert in &expected.alerts {
        *per_statement.entry(&alert.4).or_default() += 1;
    }
    assert!(
        per_statement.values().all(|&n| n == 1),
        "no statement raised two alerts: {per_statement:?}"
    );

    let totals = &data["totals"];
    let refused: u64 = expected
        .activity
        .iter()
        .filter(|((_, _, name), _)| name == "refused")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(totals["refused"].as_u64(), Some(refused), "rows add up");
    assert_eq!(
        totals["failed_logins"].as_u64(),
        Some(expected.failed_logins)
    );
    assert_eq!(
        totals["alerts"].as_u64(),
        Some(expected.alerts.len() as u64)
    );
    assert_eq!(
        totals["statements"].as_u64(),
        Some(expected.statements),
        "statements"
    );
}

/// The workload's story, as the report must tell it.
fn the_scenario_as_an_auditor_sees_it(records: &[Value], data: &Value) {
    // The \copy export: one alert listing the four plaintext columns.
    let copy = records
        .iter()
        .find(|r| r["event"] == "statement" && r["kind"] == "copy")
        .expect("the \\copy statement");
    let alerts = data["alerts"].as_array().unwrap();
    let export: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["statement"] == copy["statement"])
        .collect();
    assert_eq!(export.len(), 1, "one alert for the export: {alerts:?}");
    assert_eq!(
        export[0]["columns"],
        serde_json::json!([
            "public.customers.address",
            "public.customers.email",
            "public.customers.full_name",
            "public.customers.phone"
        ])
    );
    assert_eq!(alerts.len(), 2, "the export and the bot: {alerts:?}");

    // Refusals are counted in the rows of who was refused: the figures of
    // each login user, over the roles it is filed under.
    let user = |user: &str| {
        let mut sum = BTreeMap::<String, u64>::new();
        for row in data["activity"].as_array().unwrap() {
            if row["user"] == user {
                for (name, value) in row.as_object().unwrap() {
                    *sum.entry(name.clone()).or_default() += value.as_u64().unwrap_or(0);
                }
            }
        }
        assert!(!sum.is_empty(), "no row for {user}: {}", data["activity"]);
        sum
    };
    let support = user("support_user");
    assert_eq!(support["refused"], 1, "the 0A000: {support:?}");
    assert_eq!(support["reads_without_purpose"], 1);
    assert_eq!(support["failed_logins"], 1, "the wrong password");
    let app = user("crm_user");
    assert_eq!(app["refused"], 1, "the blocked bot: {app:?}");
    assert!(app["writes"] >= CUSTOMERS as u64);
    assert_eq!(user("mallory")["failed_logins"], 1);
    assert_eq!(data["totals"]["failed_logins"], 2);
    assert_eq!(user("analyst_user")["errors"], 1, "the division by zero");

    // Writes are not reads: the inserts are writes only.
    let encrypted_reads = data["totals"]["read_decisions"]["encrypted"]["statements"].as_u64();
    assert_eq!(encrypted_reads, Some(0), "no read returned ciphertext");
    // The time axis fits the data: seconds, not the whole day.
    assert!(
        data["plaintext"]["bucket_secs"].as_u64() <= Some(60),
        "{}",
        data["plaintext"]
    );
}

type AccessKey = (String, String, String, String);

/// What the report must say, from the records alone.
#[derive(Default)]
struct Expected {
    statements: u64,
    failed_logins: u64,
    /// (role, user, figure) -> count, zeros left out.
    activity: BTreeMap<(String, String, String), u64>,
    reads: BTreeMap<(AccessKey, String), (u64, u64)>,
    unpurposed: BTreeMap<AccessKey, u64>,
    writes: BTreeMap<AccessKey, (u64, u64)>,
    /// (time, section, user, role, sqlstate, statement), by time.
    incidents: Vec<(String, String, String, String, String, String)>,
    /// (time, user, columns, rows, statement), in log order.
    alerts: Vec<(String, String, String, u64, String)>,
}

impl Expected {
    fn of(records: &[Value]) -> Self {
        let mut e = Expected::default();
        let mut unlinked: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for record in records {
            let text = |field: &str| record[field].as_str().unwrap_or_default().to_owned();
            match record["event"].as_str().unwrap() {
                "authentication" if record["outcome"] != "ok" => {
                    e.failed_logins += 1;
                    let user = text("role");
                    e.count(&user, &user, "failed_logins");
                    e.incidents.push((
                        text("time"),
                        "failed_login".into(),
                        user.clone(),
                        user,
                        text("outcome"),
                        format!("login to database {}", text("database")),
                    ));
                }
                "alert" => {
                    let columns: Vec<&str> = record["columns"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_str().unwrap())
                        .collect();
                    let connection = record["connection"].as_u64().unwrap();
                    unlinked.entry(connection).or_default().push(e.alerts.len());
                    e.alerts.push((
                        seconds(&text("time")),
                        text("role"),
                        columns.join(" "),
                        record["rows"].as_u64().unwrap(),
                        String::new(),
                    ));
                }
                "statement" => {
                    let connection = record["connection"].as_u64().unwrap();
                    for i in unlinked.remove(&connection).unwrap_or_default() {
                        e.alerts[i].4 = text("statement");
                    }
                    e.statement(record);
                }
                _ => {}
            }
        }
        e.incidents.sort_by(|a, b| a.0.cmp(&b.0));
        for incident in &mut e.incidents {
            incident.0 = seconds(&incident.0);
        }
        e
    }

    fn count(&mut self, role: &str, user: &str, figure: &str) {
        *self
            .activity
            .entry((role.into(), user.into(), figure.into()))
            .or_default() += 1;
    }

    fn statement(&mut self, record: &Value) {
        self.statements += 1;
        let user = record["role"].as_str().unwrap().to_owned();
        let actor = record["actor"].as_str().unwrap_or_default().to_owned();
        let purpose = record["purpose"].as_str();
        let rows = record["rows"].as_u64().unwrap();
        let outcome = record["outcome"].as_str().unwrap();
        let columns = record["columns"].as_array().unwrap();
        let role_of = |c: &Value| c["policy_role"].as_str().unwrap_or(&user).to_owned();
        let refused = ["0A000", "42501", "58030"].contains(&outcome)
            || columns.iter().any(|c| c["decision"] == "denied");
        let mut roles: BTreeSet<String> = columns.iter().map(role_of).collect();
        if roles.is_empty() {
            roles.insert(user.clone());
        }
        for role in &roles {
            let touches = |access: &str| {
                columns
                    .iter()
                    .any(|c| c["access"] == access && role_of(c) == *role)
            };
            self.count(role, &user, "statements");
            if touches("read") {
                self.count(role, &user, "reads");
                if purpose.is_none() {
                    self.count(role, &user, "reads_without_purpose");
                }
            }
            if touches("write") {
                self.count(role, &user, "writes");
            }
            if refused {
                self.count(role, &user, "refused");
            } else if outcome != "ok" {
                self.count(role, &user, "errors");
            }
        }
        if refused {
            self.incidents.push((
                record["time"].as_str().unwrap().to_owned(),
                "refused_statement".into(),
                user.clone(),
                roles.into_iter().collect::<Vec<_>>().join(", "),
                outcome.to_owned(),
                record["statement"].as_str().unwrap().to_owned(),
            ));
        }
        let key = |c: &Value| {
            (
                role_of(c),
                user.clone(),
                actor.clone(),
                c["column"].as_str().unwrap().to_owned(),
            )
        };
        let read: BTreeSet<(AccessKey, String)> = columns
            .iter()
            .filter(|c| c["access"] == "read")
            .map(|c| (key(c), c["decision"].as_str().unwrap().to_owned()))
            .collect();
        for (k, decision) in &read {
            let counts = self.reads.entry((k.clone(), decision.clone())).or_default();
            counts.0 += 1;
            counts.1 += rows;
        }
        if purpose.is_none() {
            let keys: BTreeSet<&AccessKey> = read.iter().map(|(k, _)| k).collect();
            for k in keys {
                *self.unpurposed.entry(k.clone()).or_default() += 1;
            }
        }
        let written: BTreeSet<AccessKey> = columns
            .iter()
            .filter(|c| c["access"] == "write")
            .map(key)
            .collect();
        for k in written {
            let counts = self.writes.entry(k).or_default();
            counts.0 += 1;
            counts.1 += rows;
        }
    }
}

/// An RFC 3339 time to the second, as the report writes it.
fn seconds(time: &str) -> String {
    format!("{}Z", &time[..19])
}

/// HTML: the page as Chromium renders it, its tables' widths measured
/// by a script in a page that frames it, and a screenshot.
fn rendered_in_chromium(html: &Path, data: &Value) {
    let Some(chromium) = chromium() else {
        eprintln!(
            "\n\n!!!!!!!! SKIPPED: the HTML report was NOT checked in a browser: \
             /usr/bin/chromium is absent (apt-get install chromium, or ./dev test) !!!!!!!!\n\n"
        );
        return;
    };
    let dom = chromium.run(&["--dump-dom", &url(html)]);
    assert!(dom.contains("<span class=\"status\">ok</span>"), "{dom}");
    let incidents = data["incidents"].as_array().unwrap().len();
    let table = between(&dom, "<table id=\"incidents\">", "</table>");
    assert_eq!(
        table.matches("<tr>").count(),
        incidents + 1,
        "a row per refusal and failed login: {table}"
    );
    assert!(table.contains("0A000") && table.contains("28P01"));

    for width in [1024, 800] {
        let frame = html.with_file_name(format!("measure-{width}.html"));
        std::fs::write(&frame, MEASURE.replace("WIDTH", &width.to_string())).unwrap();
        let dom = chromium.run(&[
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            "--dump-dom",
            &url(&frame),
        ]);
        let result = between(&dom, "<pre id=\"result\">", "</pre>");
        let measured: Value = serde_json::from_str(&result.replace("&quot;", "\""))
            .unwrap_or_else(|e| panic!("{e}: {dom}"));
        let viewport = measured["viewport"].as_u64().unwrap();
        assert!(
            viewport <= width && viewport > width - 40,
            "the page less its scroll bar: {measured}"
        );
        let tables = measured["tables"].as_array().unwrap();
        assert!(tables.len() >= 7, "{measured}");
        for table in tables {
            assert!(
                table["right"].as_f64().unwrap() <= viewport as f64,
                "table {} overflows a {width} px page: {measured}",
                table["id"]
            );
        }
        assert!(
            measured["scrollWidth"].as_u64() <= Some(viewport),
            "the page scrolls sideways at {width} px: {measured}"
        );
        assert!(measured["svgs"].as_u64() == Some(2), "{measured}");
    }

    // Kept for people to look at: the page and how Chromium shows it.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::copy(html, kept.join("audit-report.html")).unwrap();
    let shot = kept.join("audit-report.png");
    let _ = std::fs::remove_file(&shot);
    chromium.run(&[
        "--window-size=1024,4000",
        &format!("--screenshot={}", shot.display()),
        &url(html),
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
    eprintln!(
        "the report and how Chromium shows it: {} {}",
        kept.join("audit-report.html").display(),
        shot.display()
    );
}

/// A page that frames the report at WIDTH pixels and writes into
/// `#result` the widths the report's tables and page were laid out at.
const MEASURE: &str = r#"<!DOCTYPE html>
<html><body style="margin:0">
<iframe id="report" src="review.html" style="width:WIDTHpx;height:768px;border:0"></iframe>
<pre id="result">pending</pre>
<script>
document.getElementById("report").addEventListener("load", () => {
  const doc = document.getElementById("report").contentDocument;
  const tables = [...doc.querySelectorAll("table")].map(t => {
    const box = t.getBoundingClientRect();
    return { id: t.id, left: box.left, right: box.right };
  });
  document.getElementById("result").textContent = JSON.stringify({
    viewport: doc.documentElement.clientWidth,
    scrollWidth: doc.documentElement.scrollWidth,
    svgs: doc.querySelectorAll("svg").length,
    tables,
  });
});
</script>
</body></html>
"#;

struct Chromium(PathBuf);

fn chromium() -> Option<Chromium> {
    let path = PathBuf::from("/usr/bin/chromium");
    path.exists().then_some(Chromium(path))
}

impl Chromium {
    /// Runs headless with a fresh profile; returns standard output.
    fn run(&self, args: &[&str]) -> String {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new(&self.0)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1024,768",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in {text}"));
    let rest = &text[from + start.len()..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// A configuration naming the CRM's keyring and master key.
fn config_file(dir: &Path) -> PathBuf {
    let files = common::crm::prepared();
    let path = dir.join("pgveil.toml");
    std::fs::write(
        &path,
        format!(
            "upstream = {:?}\npolicy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n",
            common::Cluster::shared().addr(),
            common::crm::policy_file(),
            files.keyring,
            files.master_key,
        ),
    )
    .unwrap();
    path
}

/// `pgveil audit report DIR --config CONFIG --format FORMAT`.
fn report(audit: &Path, config: &Path, format: &str) -> String {
    let out = pgveil()
        .args(["audit", "report"])
        .arg(audit)
        .arg("--config")
        .arg(config)
        .args(["--format", format])
        .output()
        .unwrap();
    common::assert_success(&format!("audit report --format {format}"), &out);
    String::from_utf8(out.stdout).unwrap()
}

fn pgveil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of a `name`/`value` row of `section`.
fn csv_value(rows: &[BTreeMap<String, String>], section: &str, name: &str) -> String {
    rows.iter()
        .find(|r| r["section"] == section && r["name"] == name)
        .unwrap_or_else(|| panic!("no {section} {name}"))["value"]
        .clone()
}

/// RFC 4180: records of fields, quoted fields with doubled quotes; each
/// record as a map from the header's names.
fn parse_csv(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    let header = records.remove(0);
    records
        .into_iter()
        .map(|fields| {
            assert_eq!(fields.len(), header.len(), "{fields:?}");
            header.iter().cloned().zip(fields).collect()
        })
        .collect()
}
