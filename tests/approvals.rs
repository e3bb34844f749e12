//! Tickets and approvals through a real `pgveil serve` in front of the
//! sample CRM: a ticket-bound column shows plaintext only while the
//! session has declared a ticket (however it declares and undeclares it);
//! more plaintext rows of a column with an approval limit than the limit
//! need an approval written by `pgveil approve`, which serves until it is
//! used up, expires or is revoked, keeps its usage across a restart, and
//! is refused if forged or altered; every use is an audit record.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::{sqlstate, Cluster};
use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryMessage};

/// `pgveil serve` as a program, with the CRM policy made stricter: the
/// national ID may be read in plaintext by support too, but more than
/// three rows of it at a time need an approval; the address shows
/// plaintext only under a ticket.
struct Served {
    child: Option<Child>,
    addr: String,
    dir: PathBuf,
    config: PathBuf,
}

const POLICY_EDITS: [(&str, &str); 2] = [
    (
        "reveal = { crm_app = \"plaintext\", kyc_officer = \"plaintext\", support = \"masked\" }\n\
         purposes = [\"kyc\"]",
        "reveal = { crm_app = \"plaintext\", kyc_officer = \"plaintext\", support = \"plaintext\" }\n\
         approval = { rows = 3 }",
    ),
    (
        "mask = \"redact\"\nreveal = { crm_app = \"plaintext\", support = \"masked\" }\n\
         default = \"null\"",
        "mask = \"redact\"\nreveal = { crm_app = \"plaintext\", support = \"plaintext\" }\n\
         default = \"masked\"\nticket = true",
    ),
];

impl Served {
    fn start(name: &str) -> Served {
        let files = common::crm::prepared();
        let dir = std::env::temp_dir().join(format!("pgveil-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut policy = std::fs::read_to_string(common::crm::policy_file()).unwrap();
        for (old, new) in POLICY_EDITS {
            assert!(policy.contains(old), "{old}");
            policy = policy.replace(old, new);
        }
        std::fs::write(dir.join("policy.toml"), policy).unwrap();
        let addr = format!("127.0.0.1:{}", common::free_port());
        let config = dir.join("pgveil.toml");
        std::fs::write(
            &config,
            format!(
                "listen = {addr:?}\nupstream = {:?}\n\
                 policy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n\
                 [audit]\ndir = {:?}\napprovals = {:?}\nfsync_interval_ms = 0\n",
                Cluster::shared().addr(),
                dir.join("policy.toml"),
                files.keyring,
                files.master_key,
                dir.join("audit"),
                dir.join("approvals"),
            ),
        )
        .unwrap();
        let mut served = Served {
            child: None,
            addr,
            dir,
            config,
        };
        served.run();
        served
    }

    /// Starts `pgveil serve`, its log appended to `pgveil.log`.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pgveil.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(Instant::now() < deadline, "pgveil did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and waits for the process to end: the audit log is sealed.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let status = child.wait().unwrap();
            assert!(status.success(), "pgveil serve exited with {status}");
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgveil.log")).unwrap()
    }

    async fn connect(&self, user: &str) -> Client {
        common::connect_to(&self.addr, user).await
    }

    /// Runs `pgveil approve --config ... ARGS`.
    fn approve(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["approve", "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Writes an approval for support with `ticket`; its id.
    fn approval(&self, rows: u64, ticket: &str, expires: &str) -> String {
        let rows = rows.to_string();
        let out = self.approve(&[
            "--role",
            "support",
            "--column",
            "customers.national_id",
            "--rows",
            &rows,
            "--ticket",
            ticket,
            "--expires",
            expires,
            "--approver",
            "alice",
        ]);
        common::assert_success("pgveil approve", &out);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let id = stdout
            .strip_prefix("approval ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            stdout.contains(&format!(
                "role support, column public.customers.national_id, {rows} rows, ticket {ticket}"
            )),
            "{stdout}"
        );
        id.to_owned()
    }

    fn records(&self) -> Vec<Value> {
        common::audit_log(&self.dir.join("audit")).0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Customers of `segment` with these national IDs and addresses, written
/// through pgveil by the CRM application.
async fn customers(served: &Served, segment: &str, ids: &[&str]) {
    let app = served.connect("crm_user").await;
    for (i, id) in ids.iter().enumerate() {
        app.execute(
            "insert into customers (full_name, national_id, address, segment) \
             values ($1, $2, $3, $4)",
            &[
                &format!("Person {i}"),
                id,
                &format!("{i} Approval Road"),
                &segment,
            ],
        )
        .await
        .unwrap();
    }
}

/// The values of the one column of a simple query's rows.
fn values(messages: &[SimpleQueryMessage]) -> Vec<Option<String>> {
    common::simple_rows(messages)
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect()
}

/// The national IDs of a segment, as `client` reads them.
async fn national_ids(
    client: &Client,
    segment: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let messages = client
        .simple_query(&format!(
            "select national_id from customers where segment = '{segment}' order by id"
        ))
        .await?;
    Ok(values(&messages).into_iter().flatten().collect())
}

/// The message of a refusal, checked to be `42501`.
fn refused(result: Result<impl std::fmt::Debug, tokio_postgres::Error>) -> String {
    let err = result.expect_err("refused");
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
    err.as_db_error().unwrap().message().to_owned()
}

async fn addresses(client: &Client, segment: &str) -> Vec<String> {
    let messages = client
        .simple_query(&format!(
            "select address from customers where segment = '{segment}' order by id"
        ))
        .await
        .unwrap();
    values(&messages).into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_bound_column_is_revealed_only_under_a_ticket() {
    let mut served = Served::start("ticket");
    customers(&served, "ticket-seg", &["T1"]).await;
    let plain = vec!["0 Approval Road".to_string()];
    let masked = vec!["****".to_string()];
    let support = served.connect("support_user").await;
    assert_eq!(addresses(&support, "ticket-seg").await, masked, "no ticket");
    support
        .batch_execute("SET pgveil.ticket = 'CASE-1'")
        .await
        .unwrap();
    assert_eq!(addresses(&support, "ticket-seg").await, plain);
    support.batch_execute("RESET pgveil.ticket").await.unwrap();
    assert_eq!(addresses(&support, "ticket-seg").await, masked, "RESET");
    support
        .batch_execute("BEGIN; SET LOCAL pgveil.ticket = 'CASE-2'")
        .await
        .unwrap();
    assert_eq!(addresses(&support, "ticket-seg").await, plain, "SET LOCAL");
    support.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        addresses(&support, "ticket-seg").await,
        masked,
        "after a rolled-back SET LOCAL"
    );
    support
        .batch_execute("BEGIN; SET pgveil.ticket = 'CASE-3'; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(
        addresses(&support, "ticket-seg").await,
        masked,
        "after a rolled-back SET"
    );
    support
        .simple_query("select set_config('pgveil.ticket', 'CASE-4', false)")
        .await
        .unwrap();
    assert_eq!(addresses(&support, "ticket-seg").await, plain, "set_config");
    support.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(
        addresses(&support, "ticket-seg").await,
        masked,
        "DISCARD ALL"
    );
    // Declared at login, as the purpose can be.
    let (host, port) = served.addr.split_once(':').unwrap();
    let (at_login, connection) = tokio_postgres::connect(
        &format!(
            "host={host} port={port} user=support_user password=pw dbname=postgres \
             options='-c pgveil.ticket=CASE-5'"
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    assert_eq!(addresses(&at_login, "ticket-seg").await, plain, "at login");
    drop((support, at_login));
    served.stop();

    let records = served.records();
    let reads: Vec<(Option<&str>, &str)> = records
        .iter()
        .filter(|r| r["event"] == "statement" && r["role"] == "support_user")
        .filter_map(|r| {
            let column = r["columns"]
                .as_array()?
                .iter()
                .find(|c| c["column"] == "public.customers.address")?;
            Some((r["ticket"].as_str(), column["decision"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(
        reads,
        [
            (None, "masked"),
            (Some("CASE-1"), "plaintext"),
            (None, "masked"),
            (Some("CASE-2"), "plaintext"),
            (None, "masked"),
            (None, "masked"),
            (Some("CASE-4"), "plaintext"),
            (None, "masked"),
            (Some("CASE-5"), "plaintext"),
        ]
    );
    let (_, text) = common::audit_log(&served.dir.join("audit"));
    assert!(!text.contains("Approval Road"), "no value in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_honoured_until_used_up_expired_or_revoked_and_forgeries_refused() {
    let mut served = Served::start("approvals");
    let ids = ["A1", "A2", "A3", "A4", "A5", "A6"];
    customers(&served, "appr-seg", &ids).await;
    let all: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let support = served.connect("support_user").await;

    // Within the limit: no approval needed, no ticket either.
    let three = support
        .simple_query(
            "select national_id from customers where segment = 'appr-seg' order by id limit 3",
        )
        .await
        .unwrap();
    assert_eq!(values(&three).len(), 3);
    // Beyond it, without a ticket, then without an approval.
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(
        message.starts_with(
            "pgveil: reading more than 3 plaintext rows of column public.customers.national_id \
             in one statement needs an approval for role support"
        ),
        "{message}"
    );
    assert!(message.ends_with("the session has declared no ticket (SET pgveil.ticket)"));
    support
        .batch_execute("SET pgveil.ticket = 'CASE-123'")
        .await
        .unwrap();
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(
        message.contains(
            "(pgveil approve --role support --column public.customers.national_id --rows N \
             --ticket CASE-123): none is in force"
        ),
        "{message}"
    );
    // The session goes on after a refusal.
    assert_eq!(
        values(&support.simple_query("select 1").await.unwrap()),
        [Some("1".to_string())]
    );

    // An approval of 8 rows: one read of 6, then 2 are left.
    let approval = served.approval(8, "CASE-123", "2h");
    assert_eq!(national_ids(&support, "appr-seg").await.unwrap(), all);
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(
        message.ends_with(&format!("approval {approval} has 2 row(s) left")),
        "{message}"
    );
    support.batch_execute("RESET pgveil.ticket").await.unwrap();
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(message.ends_with("declared no ticket (SET pgveil.ticket)"));
    drop(support);

    // The usage survives a restart.
    served.stop();
    served.run();
    let support = served.connect("support_user").await;
    support
        .batch_execute("SET pgveil.ticket = 'CASE-123'")
        .await
        .unwrap();
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(message.ends_with(&format!("approval {approval} has 2 row(s) left")));
    let listed = served.approve(&["--list"]);
    common::assert_success("approve --list", &listed);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&format!(
            "{approval}  active  role support  column public.customers.national_id  \
             ticket CASE-123  rows 8  used 6  left 2"
        )),
        "{listed}"
    );

    // The count spans a portal's Executes, a cursor's FETCHes and a COPY.
    support
        .batch_execute("SET pgveil.ticket = 'CASE-NONE'")
        .await
        .unwrap();
    let mut support = support;
    {
        let tx = support.transaction().await.unwrap();
        let portal = tx
            .bind(
                "select national_id from customers where segment = $1 order by id",
                &[&"appr-seg"],
            )
            .await
            .unwrap();
        assert_eq!(tx.query_portal(&portal, 2).await.unwrap().len(), 2);
        refused(tx.query_portal(&portal, 2).await);
    }
    support
        .batch_execute(
            "BEGIN; DECLARE c CURSOR FOR select national_id from customers \
             where segment = 'appr-seg' order by id",
        )
        .await
        .unwrap();
    assert_eq!(
        values(&support.simple_query("FETCH 2 FROM c").await.unwrap()).len(),
        2
    );
    // The second FETCH through the extended protocol: the same cursor.
    refused(support.query("FETCH 2 FROM c", &[]).await);
    support.batch_execute("ROLLBACK").await.unwrap();
    // In a new transaction the cursor is new; one row at a time adds up too.
    support
        .batch_execute(
            "BEGIN; DECLARE c CURSOR FOR select national_id from customers \
             where segment = 'appr-seg' order by id",
        )
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(support.query("FETCH 1 FROM c", &[]).await.unwrap().len(), 1);
    }
    refused(support.query("FETCH 1 FROM c", &[]).await);
    support.batch_execute("ROLLBACK").await.unwrap();
    let copied = copy_out(
        &support,
        "copy (select national_id from customers where segment = 'appr-seg') to stdout",
    )
    .await;
    refused(copied);

    // An approval that expired.
    let expired = served.approval(100, "CASE-EXP", "1s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    support
        .batch_execute("SET pgveil.ticket = 'CASE-EXP'")
        .await
        .unwrap();
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(
        message.ends_with(&format!("approval {expired} has expired")),
        "{message}"
    );

    // An approval revoked after a use.
    let revoked = served.approval(100, "CASE-REV", "2h");
    support
        .batch_execute("SET pgveil.ticket = 'CASE-REV'")
        .await
        .unwrap();
    assert_eq!(national_ids(&support, "appr-seg").await.unwrap(), all);
    let out = served.approve(&["--revoke", &revoked, "--approver", "bob"]);
    common::assert_success("approve --revoke", &out);
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(
        message.ends_with(&format!("approval {revoked} is revoked")),
        "{message}"
    );

    // An approval file altered after it was signed, and one forged.
    let altered = served.approval(1, "CASE-ALT", "2h");
    let path = served
        .dir
        .join("approvals")
        .join(format!("{altered}.approval"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"rows\":1,", "\"rows\":1000,")).unwrap();
    support
        .batch_execute("SET pgveil.ticket = 'CASE-ALT'")
        .await
        .unwrap();
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(message.ends_with("none is in force"), "{message}");
    let forged_id = "apr-00000000000000f0";
    let forged = format!(
        "{{\"approval\":{{\"id\":\"{forged_id}\",\"role\":\"support\",\
         \"column\":\"public.customers.national_id\",\"rows\":1000,\"ticket\":\"CASE-FORGED\",\
         \"approver\":\"mallory\",\"created\":\"2026-01-01T00:00:00.000000Z\",\
         \"expires\":\"2099-01-01T00:00:00.000000Z\"}},\"sig\":\"{}\"}}\n",
        "A".repeat(86) + "=="
    );
    std::fs::write(
        served
            .dir
            .join("approvals")
            .join(format!("{forged_id}.approval")),
        forged,
    )
    .unwrap();
    support
        .batch_execute("SET pgveil.ticket = 'CASE-FORGED'")
        .await
        .unwrap();
    let message = refused(national_ids(&support, "appr-seg").await);
    assert!(message.ends_with("none is in force"), "{message}");
    let log = served.log();
    for id in [altered.as_str(), forged_id] {
        assert!(
            log.lines()
                .any(|line| line.contains("approval file refused, not honoured")
                    && line.contains(id)
                    && line.contains("forged or altered")),
            "no log line for {id}: {log}"
        );
    }
    let listed = served.approve(&["--list"]);
    assert_eq!(
        listed.status.code(),
        Some(1),
        "refused files make --list fail"
    );
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.matches("REFUSED").count(), 2, "{listed}");
    assert!(listed.contains(&format!("{revoked}  revoked")), "{listed}");
    assert!(listed.contains(&format!("{expired}  expired")), "{listed}");
    drop(support);
    served.stop();

    // Every use is a record; every refusal a failed statement, no value.
    let records = served.records();
    let uses: Vec<(&str, u64, u64, &str)> = records
        .iter()
        .filter(|r| r["event"] == "approval_use")
        .map(|r| {
            assert_eq!(r["role"], "support_user");
            assert_eq!(r["policy_role"], "support");
            assert_eq!(r["column"], "public.customers.national_id");
            (
                r["approval"].as_str().unwrap(),
                r["rows"].as_u64().unwrap(),
                r["rows_left"].as_u64().unwrap(),
                r["ticket"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        uses,
        [
            (approval.as_str(), 6, 2, "CASE-123"),
            (revoked.as_str(), 6, 94, "CASE-REV"),
        ]
    );
    let refusals = records
        .iter()
        .filter(|r| {
            r["event"] == "statement"
                && r["outcome"] == "42501"
                && r["columns"].as_array().unwrap().iter().any(|c| {
                    c["column"] == "public.customers.national_id" && c["decision"] == "denied"
                })
        })
        .count();
    assert_eq!(refusals, 13, "each refused read recorded as denied");
    let (_, text) = common::audit_log(&served.dir.join("audit"));
    for id in ids {
        assert!(!text.contains(&format!("\"{id}\"")), "no value in the log");
    }
}

/// The data of a `COPY ... TO STDOUT`, or its error.
async fn copy_out(client: &Client, sql: &str) -> Result<Vec<u8>, tokio_postgres::Error> {
    use futures_util::StreamExt;
    let stream = client.copy_out(sql).await?;
    let mut stream = std::pin::pin!(stream);
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    Ok(data)
}
