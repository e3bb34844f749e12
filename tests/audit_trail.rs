//! The audit trail against real sessions, statement by statement: every
//! protected row that leaves pgveil is in exactly one record, the record
//! of the statement that produced it, with the purpose and actor in force
//! when it ran, whatever the protocol (simple, extended, SQL `PREPARE` /
//! `EXECUTE`, a SQL-prepared statement bound by the protocol, cursors read
//! with `FETCH` or by an Execute of their portal, pipelines with an error,
//! multi-statement Queries, COPY); and no literal or comment text of any
//! statement reaches the log.

mod common;

use common::crm::setup;
use common::{message, query, Cluster, RawClient};
use pgveil::audit::AuditConfig;
use serde_json::Value;

const SEGMENT: &str = "trail-seg";
/// Customers of [`SEGMENT`], each with a national id.
const CUSTOMERS: usize = 3;

/// A pgveil in front of the CRM with an audit log in a directory of its own.
struct Audited {
    crm: common::crm::Crm,
    dir: tempfile::TempDir,
}

impl Audited {
    fn start() -> Audited {
        let dir = tempfile::tempdir().unwrap();
        let crm = setup(Some(AuditConfig {
            dir: dir.path().to_path_buf(),
            ..AuditConfig::default()
        }));
        Audited { crm, dir }
    }

    /// A hand-driven session of `trust_user`, made a KYC officer, whose
    /// records carry `actor`.
    async fn officer(&self, actor: &str) -> RawClient {
        // Once: concurrent GRANTs of one membership can fail with
        // "tuple concurrently updated".
        static GRANTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        GRANTED.get_or_init(|| {
            Cluster::shared().psql_direct("grant kyc_officer to trust_user");
        });
        RawClient::login_with(self.crm.proxy.addr, &[("pgveil.actor", actor)])
            .await
            .0
    }

    /// Ends the proxy, so that every record is written; the statement
    /// records of `actor`, in order, and the whole log's text.
    fn records(mut self, actor: &str) -> (Vec<Value>, String) {
        tokio::task::block_in_place(|| self.crm.proxy.shutdown());
        let (records, text) = common::audit_log(self.dir.path());
        let mine = records
            .into_iter()
            .filter(|r| r["event"] == "statement" && r["actor"] == actor)
            .collect();
        (mine, text)
    }
}

/// Makes sure the customers of [`SEGMENT`] exist, written through pgveil.
async fn customers() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let crm = setup(None);
        let app = crm.connect("crm_user").await;
        for i in 0..CUSTOMERS {
            app.execute(
                "insert into customers (full_name, national_id, segment) values ($1, $2, $3)",
                &[&format!("Trail Person {i}"), &format!("NID-{i}"), &SEGMENT],
            )
            .await
            .unwrap();
        }
    })
    .await;
}

/// A record in short: kind, purpose, outcome, rows, and the national id
/// reads with their decision.
fn short(r: &Value) -> (String, String, String, u64, String) {
    let reads: Vec<String> = r["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["access"] == "read" && c["column"] == "public.customers.national_id")
        .map(|c| c["decision"].as_str().unwrap().to_owned())
        .collect();
    (
        r["kind"].as_str().unwrap().to_owned(),
        r["purpose"].as_str().unwrap_or("-").to_owned(),
        r["outcome"].as_str().unwrap().to_owned(),
        r["rows"].as_u64().unwrap(),
        reads.join(","),
    )
}

fn shorts(records: &[Value]) -> Vec<(String, String, String, u64, String)> {
    records.iter().map(short).collect()
}

fn expect(rows: &[(&str, &str, &str, u64, &str)]) -> Vec<(String, String, String, u64, String)> {
    rows.iter()
        .map(|(k, p, o, n, r)| {
            (
                k.to_string(),
                p.to_string(),
                o.to_string(),
                *n,
                r.to_string(),
            )
        })
        .collect()
}

fn cstring(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.push(0);
    v
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstring(name);
    body.extend(cstring(sql));
    body.extend([0, 0]);
    message(b'P', &body)
}

/// A Bind of `statement` to `portal`, with no parameters.
fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut body = cstring(portal);
    body.extend(cstring(statement));
    body.extend([0, 0, 0, 0, 0, 0]);
    message(b'B', &body)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = cstring(portal);
    body.extend(max_rows.to_be_bytes());
    message(b'E', &body)
}

fn sync() -> Vec<u8> {
    message(b'S', &[])
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstring(name));
    message(b'C', &body)
}

/// Parse, Bind and Execute of `sql`, unnamed, without Sync.
fn run(sql: &str) -> Vec<u8> {
    [parse("", sql), bind("", ""), execute("", 0)].concat()
}

/// Reads the answers up to `readies` ReadyForQuery: the DataRows and the
/// SQLSTATEs of the errors.
async fn answers(client: &mut RawClient, readies: usize) -> (usize, Vec<String>) {
    let (mut rows, mut errors) = (0, Vec::new());
    for _ in 0..readies {
        let (r, e) = client.rows_until_ready().await;
        rows += r.len();
        errors.extend(e.map(|(code, _)| code));
    }
    (rows, errors)
}

fn select_ids() -> String {
    format!("select national_id from customers where segment = '{SEGMENT}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_rows_are_recorded_fetched_or_executed_under_the_purpose_then() {
    customers().await;
    let audited = Audited::start();
    let mut raw = audited.officer("cursor").await;
    let n = CUSTOMERS as u64;
    raw.send(&query("begin")).await;
    raw.send(&query("set pgveil.purpose = 'kyc'")).await;
    raw.send(&query(&format!("declare c cursor for {}", select_ids())))
        .await;
    assert_eq!(answers(&mut raw, 3).await, (0, vec![]));
    // The cursor's portal executed by name, without a Bind: one row.
    raw.send(&[execute("c", 1), sync()].concat()).await;
    assert_eq!(answers(&mut raw, 1).await.0, 1);
    raw.send(&query("set pgveil.purpose = 'marketing'")).await;
    // SQL FETCH, simple and extended.
    raw.send(&query("fetch 1 from c")).await;
    raw.send(&[run("fetch all from c"), sync()].concat()).await;
    raw.send(&query("commit")).await;
    assert_eq!(answers(&mut raw, 4).await, (n as usize - 1, vec![]));
    // A cursor whose name an earlier protocol portal had: the earlier
    // Bind's statement is not charged with the cursor's rows.
    raw.send(&[parse("s", "select 1"), bind("d", "s"), sync()].concat())
        .await;
    raw.send(&query("set pgveil.purpose = 'kyc'")).await;
    raw.send(&query(&format!(
        "begin; declare d cursor for {}",
        select_ids()
    )))
    .await;
    raw.send(&[execute("d", 0), sync()].concat()).await;
    raw.send(&query("commit")).await;
    assert_eq!(answers(&mut raw, 5).await, (n as usize, vec![]));
    drop(raw);

    let (records, _) = audited.records("cursor");
    assert_eq!(
        shorts(&records),
        expect(&[
            ("transaction", "-", "ok", 0, ""),
            ("variable_set", "kyc", "ok", 0, ""),
            ("declare_cursor", "kyc", "ok", 0, ""),
            ("fetch", "kyc", "ok", 1, "plaintext"),
            ("variable_set", "marketing", "ok", 0, ""),
            ("fetch", "marketing", "ok", 1, "null"),
            ("fetch", "marketing", "ok", n - 2, "null"),
            ("transaction", "marketing", "ok", 0, ""),
            ("variable_set", "kyc", "ok", 0, ""),
            ("transaction", "kyc", "ok", 0, ""),
            ("declare_cursor", "kyc", "ok", 0, ""),
            ("fetch", "kyc", "ok", n, "plaintext"),
            ("transaction", "kyc", "ok", 0, ""),
        ])
    );
    assert!(records[3]["statement"].as_str().unwrap().contains("\"c\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepared_statement_bound_by_the_protocol_is_recorded_as_itself() {
    customers().await;
    let audited = Audited::start();
    let mut raw = audited.officer("prepared").await;
    let n = CUSTOMERS as u64;
    // A protocol statement of the same name, closed before the PREPARE.
    raw.send(&[parse("p", "select 1"), close_statement("p"), sync()].concat())
        .await;
    raw.send(&query("set pgveil.purpose = 'kyc'")).await;
    raw.send(&query(&format!("prepare p as {}", select_ids())))
        .await;
    assert_eq!(answers(&mut raw, 3).await, (0, vec![]));
    raw.send(&[bind("", "p"), execute("", 0), sync()].concat())
        .await;
    // Bound to a named portal, read in two steps.
    raw.send(&query("begin")).await;
    raw.send(&[bind("q", "p"), execute("q", 2), execute("q", 0), sync()].concat())
        .await;
    raw.send(&query("commit")).await;
    // SQL EXECUTE, simple and extended.
    raw.send(&query("execute p")).await;
    raw.send(&[run("execute p"), sync()].concat()).await;
    // A statement prepared where pgveil cannot see it, by dynamic SQL.
    raw.send(&query(&format!(
        "do $$begin execute 'prepare hidden as select national_id from cust' || \
         'omers where segment = ''{SEGMENT}'''; end$$"
    )))
    .await;
    raw.send(&[bind("", "hidden"), execute("", 0), sync()].concat())
        .await;
    assert_eq!(answers(&mut raw, 8).await, (5 * n as usize, vec![]));
    drop(raw);

    let (records, _) = audited.records("prepared");
    assert_eq!(
        shorts(&records),
        expect(&[
            ("variable_set", "kyc", "ok", 0, ""),
            ("prepare", "kyc", "ok", 0, ""),
            ("select", "kyc", "ok", n, "plaintext"),
            ("transaction", "kyc", "ok", 0, ""),
            ("select", "kyc", "ok", 2, "plaintext"),
            ("select", "kyc", "ok", n - 2, "plaintext"),
            ("transaction", "kyc", "ok", 0, ""),
            ("execute", "kyc", "ok", n, "plaintext"),
            ("execute", "kyc", "ok", n, "plaintext"),
            ("do", "kyc", "ok", 0, ""),
            ("execute", "kyc", "ok", n, "plaintext"),
        ])
    );
    let statement = records[2]["statement"].as_str().unwrap();
    assert!(statement.contains("national_id"), "{statement}");
    assert_eq!(records[2]["tables"], serde_json::json!(["customers"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_skipped_after_an_error_in_a_pipeline_are_not_recorded() {
    customers().await;
    let audited = Audited::start();
    let mut raw = audited.officer("pipeline").await;
    let n = CUSTOMERS as u64;
    raw.send(&query("set pgveil.purpose = 'kyc'")).await;
    // Everything pipelined: three batches, the first two failing midway
    // (the second with a COPY FROM STDIN the server skips), the last a
    // read.
    raw.send(
        &[
            run(&select_ids()),
            run("select 1/0"),
            run(&select_ids()),
            sync(),
            run("select 1/0"),
            run("copy customers (segment) from stdin"),
            sync(),
            // A statement pgveil refuses, the rest of its batch dropped.
            run(&select_ids()),
            run("select id from customers order by national_id"),
            run(&select_ids()),
            sync(),
            run("set pgveil.purpose = 'marketing'"),
            run(&select_ids()),
            sync(),
        ]
        .concat(),
    )
    .await;
    let (rows, errors) = answers(&mut raw, 5).await;
    assert_eq!((rows, errors.len()), (3 * CUSTOMERS, 3));
    drop(raw);

    let (records, _) = audited.records("pipeline");
    assert_eq!(
        shorts(&records),
        expect(&[
            ("variable_set", "kyc", "ok", 0, ""),
            ("select", "kyc", "ok", n, "plaintext"),
            ("select", "kyc", "22012", 0, ""),
            ("select", "kyc", "22012", 0, ""),
            ("select", "kyc", "ok", n, "plaintext"),
            ("select", "kyc", "0A000", 0, ""),
            ("variable_set", "marketing", "ok", 0, ""),
            ("select", "marketing", "ok", n, "null"),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statement_of_a_query_is_recorded_with_the_purpose_it_ran_under() {
    customers().await;
    let audited = Audited::start();
    let mut raw = audited.officer("multi").await;
    let n = CUSTOMERS as u64;
    raw.send(&query(&format!(
        "set pgveil.purpose = 'kyc'; {}; set pgveil.purpose = 'marketing'; {}",
        select_ids(),
        select_ids()
    )))
    .await;
    assert_eq!(answers(&mut raw, 1).await, (2 * CUSTOMERS, vec![]));
    // An error ends a Query: the statements after it do not run.
    raw.send(&query(&format!(
        "set pgveil.purpose = 'kyc'; {}; select 1/0; {}",
        select_ids(),
        select_ids()
    )))
    .await;
    let (rows, errors) = answers(&mut raw, 1).await;
    assert_eq!((rows, errors), (CUSTOMERS, vec!["22012".to_owned()]));
    drop(raw);

    let (records, _) = audited.records("multi");
    assert_eq!(
        shorts(&records),
        expect(&[
            ("variable_set", "kyc", "ok", 0, ""),
            ("select", "kyc", "ok", n, "plaintext"),
            ("variable_set", "marketing", "ok", 0, ""),
            ("select", "marketing", "ok", n, "null"),
            // The error ran under kyc; the statement after it did not run.
            ("variable_set", "kyc", "ok", 0, ""),
            ("select", "kyc", "ok", n, "plaintext"),
            ("select", "kyc", "22012", 0, ""),
        ])
    );
    for r in &records {
        let statement = r["statement"].as_str().unwrap();
        assert!(!statement.contains(';'), "one statement each: {statement}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_both_directions_is_one_record_each_and_the_rest_lines_up() {
    customers().await;
    let audited = Audited::start();
    let mut raw = audited.officer("copy").await;
    let n = CUSTOMERS as u64;
    let copy_out = format!("copy ({}) to stdout", select_ids());
    raw.send(&query(&format!("set pgveil.purpose = 'kyc'; {copy_out}")))
        .await;
    raw.send(&[run(&copy_out), sync()].concat()).await;
    assert_eq!(answers(&mut raw, 2).await, (0, vec![]));
    // COPY FROM STDIN in the extended protocol, with a Sync sent before
    // its data (the server ignores it), then a read pipelined behind.
    raw.send(&query("create temp table trail_copy (x text)"))
        .await;
    assert_eq!(answers(&mut raw, 1).await, (0, vec![]));
    raw.send(
        &[
            run("copy trail_copy from stdin"),
            sync(),
            message(b'd', b"copy-trail-seg\n"),
            message(b'c', &[]),
            sync(),
            run(&select_ids()),
            sync(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(answers(&mut raw, 2).await, (CUSTOMERS, vec![]));
    drop(raw);

    let (records, _) = audited.records("copy");
    assert_eq!(
        shorts(&records),
        expect(&[
            ("variable_set", "kyc", "ok", 0, ""),
            ("copy", "kyc", "ok", n, "plaintext"),
            ("copy", "kyc", "ok", n, "plaintext"),
            ("create", "kyc", "ok", 0, ""),
            ("copy", "kyc", "ok", 1, ""),
            ("select", "kyc", "ok", n, "plaintext"),
        ])
    );
}

/// Secrets put in comments and literals of every kind, in both protocols:
/// none reaches the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_literal_or_comment_text_reaches_the_audit_log() {
    customers().await;
    let audited = Audited::start();
    let mut raw = audited.officer("secrets").await;
    let statements = [
        "select 1 /* 110101199001011234 */",
        "select 2 -- secret-dash-comment",
        "/* lead-comment-secret */ select 3",
        "comment on table customers is 'comment-on-secret'",
        "copy customers from program 'echo program-secret'",
        "create temp table t_default (x text default 'default-secret', y int default 987654321)",
        "do $$begin perform 'do-block-secret'; end$$",
        "do $body$begin perform 1; end$body$ language plpgsql",
        "create function pg_temp.f() returns text as $f$select 'function-body-secret'$f$ language sql",
        "select e'escape\\x20secret', b'1011001110001', x'5ec7e7', u&'unicode\\0020secret'",
        "select 'plain-shape-secret-one' as a where 1 = 1",
        "select 'plain-shape-secret-two' as a where 1 = 1",
        "select 31415926535 as big, 2.718281828 as e",
        "set application_name = 'set-literal-secret'",
        "create role secret_role password 'role-password-secret'",
        "select 'unterminated-secret",
        "selec 'syntax-error-secret'",
        "select $$dollar-secret$$",
    ];
    for sql in statements {
        raw.send(&query(sql)).await;
        answers(&mut raw, 1).await;
        raw.send(&[run(sql), sync()].concat()).await;
        answers(&mut raw, 1).await;
    }
    raw.send(&query(&statements.join(";\n"))).await;
    answers(&mut raw, 1).await;
    drop(raw);

    let (records, text) = audited.records("secrets");
    assert!(records.len() >= 2 * statements.len(), "{}", records.len());
    for secret in [
        "110101199001011234",
        "secret-dash-comment",
        "lead-comment-secret",
        "comment-on-secret",
        "program-secret",
        "default-secret",
        "987654321",
        "do-block-secret",
        "perform",
        "function-body-secret",
        "escape",
        "1011001110001",
        "5ec7e7",
        "unicode",
        "plain-shape-secret",
        "31415926535",
        "2.718281828",
        "set-literal-secret",
        "role-password-secret",
        "unterminated-secret",
        "syntax-error-secret",
        "dollar-secret",
    ] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }
    // The statements are still there, with placeholders.
    assert!(records
        .iter()
        .any(|r| r["statement"] == "comment on table customers is $1"));
}
