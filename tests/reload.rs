//! SIGHUP reloads the policy and keyring of a running `pgveil serve`:
//! sessions that start afterwards use the new policy, the sessions already
//! open go on and adopt it at their next statement, and a policy that does
//! not load leaves the one in force.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::crm::crm;
use common::Cluster;

const EMAIL: &str = "wang.fang@example.cn";

/// `pgveil serve` run as a program with a copy of the CRM policy that the
/// test edits.
struct Served {
    child: Child,
    addr: String,
    dir: PathBuf,
    policy: PathBuf,
    config: PathBuf,
}

impl Served {
    fn start() -> Served {
        let files = common::crm::prepared();
        let dir = std::env::temp_dir().join(format!("pgveil-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.toml");
        std::fs::copy(common::crm::policy_file(), &policy).unwrap();
        let addr = format!("127.0.0.1:{}", common::free_port());
        let config = dir.join("pgveil.toml");
        std::fs::write(
            &config,
            format!(
                "listen = {addr:?}\nupstream = {:?}\nlog_format = \"json\"\n\
                 policy = {policy:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n\
                 [audit]\ndir = {:?}\n",
                Cluster::shared().addr(),
                files.keyring,
                files.master_key,
                dir.join("audit"),
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(dir.join("pgveil.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "pgveil did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Served {
            child,
            addr,
            dir,
            policy,
            config,
        }
    }

    async fn connect(&self, user: &str) -> tokio_postgres::Client {
        common::connect_to(&self.addr, user).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgveil.log")).unwrap()
    }

    /// Sends `signal` and, for SIGHUP, waits until the log has one more
    /// line containing `expect`.
    fn hangup(&self, expect: &str) {
        let before = self.log().matches(expect).count();
        send(&self.child, "-HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(expect).count() == before {
            assert!(
                Instant::now() < deadline,
                "no {expect:?} after SIGHUP: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn send(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The e-mail of customer `id` as `client` reads it.
async fn email(client: &tokio_postgres::Client, id: i64) -> Option<String> {
    client
        .query_one(&format!("select email from customers where id = {id}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// The e-mail of customer `id` by a statement `client` prepared.
async fn prepared_email(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    id: i64,
) -> Option<String> {
    client.query_one(statement, &[&id]).await.unwrap().get(0)
}

/// The policy file with support's rule for e-mail replaced.
fn with_support_email(policy: &Path, action: &str) -> String {
    let text = std::fs::read_to_string(common::crm::policy_file()).unwrap();
    let old = r#"reveal = { crm_app = "plaintext", support = "masked", analyst = "pseudonym" }"#;
    let new = format!(
        r#"reveal = {{ crm_app = "plaintext", support = "{action}", analyst = "pseudonym" }}"#
    );
    // The e-mail rule is the first of the two identical lines (e-mail, then phone).
    let at = text.find(old).expect("the sample policy's e-mail rule");
    let edited = format!("{}{new}{}", &text[..at], &text[at + old.len()..]);
    std::fs::write(policy, &edited).unwrap();
    edited
}

#[tokio::test]
async fn sighup_reloads_the_policy_for_new_sessions_and_keeps_it_when_the_new_one_fails() {
    let crm = crm();
    let stored = crm.encrypt("email", EMAIL);
    let id: i64 = Cluster::shared()
        .psql_direct(&format!(
            "insert into customers (full_name, email, segment) values (NULL, '{stored}', 'reload') \
             returning id"
        ))
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let masked = crm.mask("email", EMAIL);
    let mut served = Served::start();

    let before = served.connect("support_user").await;
    assert_eq!(email(&before, id).await.as_deref(), Some(masked.as_str()));
    // A statement prepared, and a transaction opened, before the reload.
    let prepared = before
        .prepare("select email from customers where id = $1")
        .await
        .unwrap();
    assert_eq!(
        prepared_email(&before, &prepared, id).await.as_deref(),
        Some(masked.as_str())
    );
    let in_transaction = served.connect("support_user").await;
    in_transaction.batch_execute("begin").await.unwrap();
    assert_eq!(
        email(&in_transaction, id).await.as_deref(),
        Some(masked.as_str())
    );

    // Support loses e-mail: sessions started after the reload read NULL,
    // and so do the sessions already open, from their next statement,
    // prepared before or not, inside a transaction or not: none is dropped.
    with_support_email(&served.policy, "null");
    served.hangup("reloaded on SIGHUP");
    assert!(served.alive(), "SIGHUP ended pgveil: {}", served.log());
    let after = served.connect("support_user").await;
    assert_eq!(email(&after, id).await, None);
    assert_eq!(email(&before, id).await, None);
    assert_eq!(prepared_email(&before, &prepared, id).await, None);
    assert_eq!(email(&in_transaction, id).await, None);
    in_transaction.batch_execute("commit").await.unwrap();
    // The application still reads plaintext.
    let app = served.connect("crm_user").await;
    assert_eq!(email(&app, id).await.as_deref(), Some(EMAIL));

    // A policy that does not load: refused, the last good one stays.
    std::fs::write(
        &served.policy,
        "[[column]]\ntable = \"customers\"\ncolumn = \"email\"\nmask = \"nonsense\"\n",
    )
    .unwrap();
    served.hangup("reload refused");
    assert!(served.alive(), "{}", served.log());
    assert!(served.log().contains("nonsense"), "{}", served.log());
    let still = served.connect("support_user").await;
    assert_eq!(email(&still, id).await, None);

    // A configuration without a policy cannot turn protection off.
    with_support_email(&served.policy, "masked");
    let config = std::fs::read_to_string(&served.config).unwrap();
    std::fs::write(
        &served.config,
        config
            .lines()
            .filter(|l| !l.starts_with("policy"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    served.hangup("never turns protection off");
    let app = served.connect("crm_user").await;
    assert_eq!(email(&app, id).await.as_deref(), Some(EMAIL));
    let raw = served.connect("support_user").await;
    assert_eq!(email(&raw, id).await, None, "still the policy that hid it");

    // Restored: the next reload applies the masked rule again.
    std::fs::write(&served.config, config).unwrap();
    served.hangup("reloaded on SIGHUP");
    let restored = served.connect("support_user").await;
    assert_eq!(email(&restored, id).await.as_deref(), Some(masked.as_str()));
    // The session opened before the first reload has followed them all.
    assert_eq!(email(&before, id).await.as_deref(), Some(masked.as_str()));
    assert_eq!(
        prepared_email(&before, &prepared, id).await.as_deref(),
        Some(masked.as_str())
    );

    // No plaintext of the e-mail in what pgveil logged.
    assert!(!served.log().contains(EMAIL));
    send(&served.child, "-TERM");
    let status = served.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", served.log());

    // Each reload is in the audit log, applied or refused with why.
    let (records, text) = common::audit_log(&served.dir.join("audit"));
    let reloads: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["event"] == "reload").collect();
    assert_eq!(reloads.len(), 4, "{text}");
    let outcomes: Vec<&str> = reloads
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "F0000", "F0000", "ok"], "{text}");
    assert!(reloads[0].get("reason").is_none(), "{text}");
    assert!(
        reloads[1]["reason"].as_str().unwrap().contains("nonsense"),
        "{text}"
    );
    assert!(
        reloads[2]["reason"]
            .as_str()
            .unwrap()
            .contains("never turns protection off"),
        "{text}"
    );
    assert!(!text.contains(EMAIL));
    // The log with its reload records verifies: chain and seals.
    use base64::Engine;
    let keyring = common::crm::keyring();
    let public = base64::engine::general_purpose::STANDARD
        .decode(keyring.audit_public_key_base64().unwrap())
        .unwrap();
    let report = pgveil::audit::verify(
        &served.dir.join("audit"),
        Some(keyring.audit_mac_key().unwrap()),
        &public,
    )
    .unwrap();
    assert!(report.records >= 4, "{report:?}");
}
