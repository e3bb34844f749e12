//! The SM suite (SM4-GCM, SM4-SIV, HMAC-SM3, SM2) end to end against real
//! PostgreSQL, through `pgveil serve` as a program: a keyring made with
//! `keys init --suite sm`; writes in both protocols and COPY; each role
//! reading what the policy grants; equality search on a deterministic
//! SM4-SIV column; the database holding only envelopes of SM keys (under
//! the ciphertext guards, installed as always); the audit log verified
//! with the SM2 public key, and failing once a record is edited. Then a
//! keyring moved from `aes` to `sm` (`keys rotate --suite sm`, `migrate`)
//! while a client keeps writing and reading through pgveil.
//!
//! Each test has a schema of its own in the shared cluster, and its own
//! policy, keyring, configuration and audit directory.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, SUPERUSER, SUPERUSER_PASSWORD};
use pgveil::protect::crypto::{parse_bytes, parse_text, Suite};
use pgveil::protect::keyring::{KeyKind, Keyring};
use pgveil::protect::policy::Policy;

const TABLE: &str = "CREATE TABLE customers (id bigserial PRIMARY KEY, full_name text, \
    email text, phone text, document bytea, segment text)";

const POLICY: &str = r#"
[[column]]
table = "SCHEMA.customers"
column = "full_name"
encryption = "randomized"
mask = "initial"
reveal = { crm_app = "plaintext", support = "masked" }
[[column]]
table = "SCHEMA.customers"
column = "email"
encryption = "deterministic"
mask = "email"
reveal = { crm_app = "plaintext", support = "masked", analyst = "pseudonym" }
[[column]]
table = "SCHEMA.customers"
column = "phone"
encryption = "deterministic"
mask = "phone"
reveal = { crm_app = "plaintext", support = "masked" }
[[column]]
table = "SCHEMA.customers"
column = "document"
encryption = "randomized"
reveal = { crm_app = "plaintext" }
"#;

/// The protected text columns, in table order.
const COLUMNS: [&str; 3] = ["full_name", "email", "phone"];

/// A schema, its policy, a keyring made by the `pgveil keys` command line
/// and a configuration with `[maintenance]` and `[audit]`.
struct Env {
    dir: tempfile::TempDir,
    schema: &'static str,
    listen: String,
}

impl Env {
    fn new(schema: &'static str, suite: Option<&str>) -> Env {
        common::crm::prepared();
        Cluster::shared().psql_direct(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
             SET search_path = {schema}; {TABLE}; \
             GRANT USAGE ON SCHEMA {schema} TO crm_app, support, analyst; \
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO crm_app; \
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO support, analyst; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO crm_app"
        ));
        let dir = tempfile::Builder::new()
            .prefix("pgveil-sm-")
            .tempdir()
            .unwrap();
        let env = Env {
            dir,
            schema,
            listen: format!("127.0.0.1:{}", common::free_port()),
        };
        let (_, text) = pgveil::protect::crypto::MasterKey::generate().unwrap();
        common::write_private(&env.path("master.key"), text.as_bytes());
        common::write_private(&env.path("password"), SUPERUSER_PASSWORD);
        std::fs::write(env.path("policy.toml"), POLICY.replace("SCHEMA", schema)).unwrap();
        std::fs::write(
            env.path("pgveil.toml"),
            format!(
                "listen = {:?}\nupstream = {:?}\nlog_format = \"json\"\nshutdown_grace_secs = 1\n\
                 policy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n\
                 [maintenance]\nuser = {SUPERUSER:?}\ndatabase = \"postgres\"\npassword_file = {:?}\n\
                 [audit]\ndir = {:?}\ncompress = false\nfsync_interval_ms = 0\n",
                env.listen,
                Cluster::shared().addr(),
                env.path("policy.toml"),
                env.path("keyring.toml"),
                env.path("master.key"),
                env.path("password"),
                env.path("audit"),
            ),
        )
        .unwrap();
        let mut init = vec!["keys", "init", "--config", env.config()];
        if let Some(suite) = suite {
            init.extend(["--suite", suite]);
        }
        let said = env.ok(&init);
        let expected = format!("suite {}", suite.unwrap_or("aes"));
        assert!(said.contains(&expected), "{said}");
        // The guards, as an administrator installs them: they admit the
        // envelopes of both suites.
        let guards = env.ok(&["guard", "--policy", env.path_str("policy.toml")]);
        Cluster::shared().psql_direct(&guards);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self, name: &str) -> &str {
        // Leaked: a few short strings per test.
        Box::leak(
            self.path(name)
                .to_str()
                .unwrap()
                .to_owned()
                .into_boxed_str(),
        )
    }

    fn config(&self) -> &str {
        self.path_str("pgveil.toml")
    }

    /// `pgveil ARGS`.
    fn pgveil(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(args)
            .env_remove("PGVEIL_MASTER_KEY")
            .output()
            .unwrap()
    }

    /// `pgveil ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.pgveil(args);
        common::assert_success(&format!("pgveil {}", args.join(" ")), &out);
        String::from_utf8(out.stdout).unwrap()
    }

    fn policy(&self) -> Policy {
        Policy::load(&[self.path("policy.toml")]).unwrap()
    }

    fn keyring(&self) -> Keyring {
        let master =
            pgveil::protect::crypto::MasterKey::from_file(&self.path("master.key")).unwrap();
        Keyring::load(&self.path("keyring.toml"), &master).unwrap()
    }

    /// The suite of every key id of the keyring, as `keys list` shows it.
    fn suites(&self) -> HashMap<u32, Suite> {
        Keyring::list(&self.path("keyring.toml"))
            .unwrap()
            .into_iter()
            .filter(|k| k.kind == KeyKind::Data)
            .map(|k| (k.id, k.suite))
            .collect()
    }

    fn serve(&self) -> Served {
        let log = self.path("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["serve", "--config", self.config()])
            .env_remove("PGVEIL_MASTER_KEY")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let served = Served {
            child,
            addr: self.listen.clone(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgveil serve did not start: {}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    /// Every stored protected value, straight from PostgreSQL: (id, column,
    /// the text of a text column or the bytes of `document`).
    async fn raw(&self) -> Vec<(i64, &'static str, Stored)> {
        let direct = common::direct().await;
        let rows = direct
            .query(
                &format!(
                    "SELECT id, full_name, email, phone, document FROM {}.customers ORDER BY id",
                    self.schema
                ),
                &[],
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        for row in rows {
            let id: i64 = row.get(0);
            for (i, column) in COLUMNS.iter().enumerate() {
                if let Some(text) = row.get::<_, Option<String>>(i + 1) {
                    out.push((id, *column, Stored::Text(text)));
                }
            }
            if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(4) {
                out.push((id, "document", Stored::Bytes(bytes)));
            }
        }
        out
    }

    /// Asserts that every stored protected value is an envelope of a key
    /// of `suite`, that decrypts (with this test's copy of the keyring) to
    /// no value a plaintext check finds in its raw form; returns how many.
    async fn assert_all_stored_in(&self, suite: Suite, plaintexts: &[String]) -> usize {
        let suites = self.suites();
        let keyring = self.keyring();
        let raw = self.raw().await;
        for (id, column, stored) in &raw {
            let envelope = match stored {
                Stored::Text(text) => {
                    for plain in plaintexts {
                        assert!(!text.contains(plain.as_str()), "{column} {id}: {text}");
                    }
                    parse_text(text.as_bytes()).unwrap()
                }
                Stored::Bytes(bytes) => parse_bytes(bytes).unwrap(),
            }
            .unwrap_or_else(|| panic!("{column} of row {id} holds plaintext"));
            let header = envelope.as_bytes()[4..8].to_vec();
            let key_id = u32::from_be_bytes(header.try_into().unwrap());
            assert_eq!(
                suites.get(&key_id),
                Some(&suite),
                "{column} of row {id} is under key {key_id}"
            );
            let domain = format!("{}.customers.{column}", self.schema);
            keyring.decrypt(&domain, envelope).unwrap();
        }
        raw.len()
    }
}

enum Stored {
    Text(String),
    Bytes(Vec<u8>),
}

struct Served {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Served {
    async fn connect(&self, user: &str) -> tokio_postgres::Client {
        common::connect_to(&self.addr, user).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn reload(&self) {
        let before = self.log().matches("reloaded on SIGHUP").count();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("reloaded on SIGHUP").count() == before {
            assert!(Instant::now() < deadline, "no reload: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the audit log is sealed before pgveil exits.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}: {}", self.log());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A customer: full name, e-mail, phone, document.
fn customer(n: u64) -> (String, String, String, Vec<u8>) {
    (
        format!("王芳 Wang Fang {n}"),
        format!("wang.fang{n}@example.cn"),
        format!("+86 139 0000 {n:04}"),
        format!("passport scan {n}").into_bytes(),
    )
}

async fn insert(app: &tokio_postgres::Client, schema: &str, n: u64) {
    let (name, email, phone, document) = customer(n);
    app.execute(
        &format!(
            "INSERT INTO {schema}.customers (full_name, email, phone, document, segment) \
             VALUES ($1, $2, $3, $4, 'sm')"
        ),
        &[&name, &email, &phone, &document],
    )
    .await
    .unwrap();
}

/// The row of customer `n` found by its e-mail through pgveil (extended
/// protocol): its full name and phone.
async fn find(app: &tokio_postgres::Client, schema: &str, n: u64) -> Vec<(String, String)> {
    app.query(
        &format!("SELECT full_name, phone FROM {schema}.customers WHERE email = $1"),
        &[&customer(n).1],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sm_suite_end_to_end() {
    let env = Env::new("sm_e2e", Some("sm"));
    let schema = env.schema;
    let listed = env.ok(&[
        "keys",
        "list",
        "--keyring",
        env.path_str("keyring.toml"),
        "--format",
        "json",
    ]);
    assert_eq!(listed.lines().count(), 4 + 2, "{listed}");
    assert!(
        listed.lines().all(|line| line.contains("\"suite\":\"sm\"")),
        "{listed}"
    );
    let mut served = env.serve();
    let app = served.connect("crm_user").await;

    // Writes: extended protocol, simple protocol with literals, COPY.
    for n in 1..=5 {
        insert(&app, schema, n).await;
    }
    let (name, email, phone, _) = customer(6);
    app.simple_query(&format!(
        "INSERT INTO {schema}.customers (full_name, email, phone, document, segment) \
         VALUES ('{name}', '{email}', '{phone}', '\\x7363616e2036', 'sm')"
    ))
    .await
    .unwrap();
    let copied: String = (7..=9)
        .map(|n| {
            let (name, email, phone, document) = customer(n);
            format!(
                "{name}\t{email}\t{phone}\t\\\\x{}\tsm\n",
                hex::encode(document)
            )
        })
        .collect();
    let rows = common::copy_in(
        &app,
        &format!("COPY {schema}.customers (full_name, email, phone, document, segment) FROM STDIN"),
        [copied.as_bytes()],
    )
    .await
    .unwrap();
    assert_eq!(rows, 3);

    // The application reads plaintext.
    let read = app
        .query(
            &format!(
                "SELECT full_name, email, phone, document FROM {schema}.customers ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(read.len(), 9);
    for (i, row) in read.iter().enumerate() {
        let n = i as u64 + 1;
        let (name, email, phone, document) = customer(n);
        assert_eq!(row.get::<_, String>(0), name);
        assert_eq!(row.get::<_, String>(1), email);
        assert_eq!(row.get::<_, String>(2), phone);
        let expected = if n == 6 { b"scan 6".to_vec() } else { document };
        assert_eq!(row.get::<_, Vec<u8>>(3), expected, "row {n}");
    }

    // Support reads masks, the analyst a pseudonym of the e-mail and
    // nothing else.
    let policy = env.policy();
    let mask = |column: &str, plain: &str| {
        policy
            .column(schema, "customers", column)
            .unwrap()
            .mask
            .apply(plain)
    };
    let support = served.connect("support_user").await;
    let rows = support
        .query(
            &format!(
                "SELECT full_name, email, phone, document FROM {schema}.customers ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let (name, email, phone, _) = customer(i as u64 + 1);
        assert_eq!(row.get::<_, String>(0), mask("full_name", &name));
        assert_eq!(row.get::<_, String>(1), mask("email", &email));
        assert_eq!(row.get::<_, String>(2), mask("phone", &phone));
        assert_eq!(row.get::<_, Option<Vec<u8>>>(3), None);
    }
    let analyst = served.connect("analyst_user").await;
    let pseudonyms = analyst
        .query(
            &format!("SELECT email, full_name FROM {schema}.customers ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    let keyring = env.keyring();
    let domain = format!("{schema}.customers.email");
    for (i, row) in pseudonyms.iter().enumerate() {
        let email = customer(i as u64 + 1).1;
        assert_eq!(
            row.get::<_, String>(0),
            keyring.pseudonym(&domain, email.as_bytes()).unwrap()
        );
        assert_eq!(row.get::<_, Option<String>>(1), None);
    }

    // Equality search on the deterministic SM4-SIV columns, in both
    // protocols, finds the rows however they were written.
    for n in [1, 6, 8] {
        let (name, _, phone, _) = customer(n);
        assert_eq!(find(&app, schema, n).await, [(name.clone(), phone.clone())]);
        let by_phone = common::simple_rows(
            &app.simple_query(&format!(
                "SELECT full_name FROM {schema}.customers WHERE phone = '{phone}'"
            ))
            .await
            .unwrap(),
        );
        assert_eq!(by_phone, [[Some(name)]]);
    }
    assert!(find(&app, schema, 99).await.is_empty());

    // COPY out: plaintext to the application, masks to support.
    let out = common::copy_out(
        &app,
        &format!("COPY (SELECT full_name, email FROM {schema}.customers ORDER BY id) TO STDOUT"),
    )
    .await;
    let expected: String = (1..=9)
        .map(|n| {
            let (name, email, _, _) = customer(n);
            format!("{name}\t{email}\n")
        })
        .collect();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    let out = common::copy_out(
        &support,
        &format!("COPY {schema}.customers (email) TO STDOUT"),
    )
    .await;
    let out = String::from_utf8(out).unwrap();
    for n in 1..=9 {
        assert!(out.contains(&mask("email", &customer(n).1)), "{out}");
    }

    // PostgreSQL holds nothing but envelopes of SM keys.
    let plaintexts: Vec<String> = (1..=9)
        .flat_map(|n| {
            let (name, email, phone, _) = customer(n);
            [name, email, phone]
        })
        .collect();
    assert_eq!(env.assert_all_stored_in(Suite::Sm, &plaintexts).await, 36);
    drop((app, support, analyst));
    served.stop();

    // The audit log: its public key is SM2's, and it verifies with it.
    let public = env.ok(&["audit", "public-key", "--config", env.config()]);
    let public = public.trim();
    assert!(public.starts_with("sm2:"), "{public}");
    let audit = env.path_str("audit");
    let said = env.ok(&["audit", "verify", audit, "--public-key", public]);
    assert!(
        said.starts_with("ok: ") && said.contains("suite: sm"),
        "{said}"
    );
    let said = env.ok(&["audit", "verify", audit, "--config", env.config()]);
    assert!(said.contains("record MACs checked"), "{said}");
    let file = std::fs::read_dir(audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().next().unwrap().contains("\"suite\":\"sm\""));
    assert!(text.lines().last().unwrap().contains("\"sm3\":"));
    // The review commands read it unchanged.
    let found = env.ok(&[
        "audit",
        "search",
        audit,
        "--role",
        "support_user",
        "--format",
        "json",
    ]);
    assert!(found.contains("\"decision\":\"masked\""), "{found}");
    let report = env.ok(&[
        "audit",
        "report",
        audit,
        "--since",
        "2000-01-01",
        "--until",
        "2999-12-31",
        "--format",
        "text",
    ]);
    assert!(report.contains("support_user"), "{report}");

    // A record edited: verification fails, and says where.
    let edited = text.replacen("\"role\":\"support_user\"", "\"role\":\"crm_user\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();
    let out = env.pgveil(&["audit", "verify", audit, "--public-key", public]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with("FAILED: ") && said.contains("hash"),
        "{said}"
    );
    let out = env.pgveil(&["audit", "verify", audit, "--config", env.config()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("MAC does not match"), "{said}");
}

/// A keyring of the `aes` suite moved to `sm` while a client writes and
/// reads through pgveil: `keys rotate --suite sm`, a reload, `migrate`.
/// Values written before the move read back throughout; afterwards every
/// stored value is under an SM key and equality search finds every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_moves_from_aes_to_sm_while_the_application_works() {
    const BEFORE: u64 = 300;
    let env = Env::new("sm_move", None);
    let schema = env.schema;
    let served = env.serve();
    let app = served.connect("crm_user").await;
    for n in 1..=BEFORE {
        insert(&app, schema, n).await;
    }
    let plaintexts: Vec<String> = (1..=3).map(|n| customer(n).1).collect();
    env.assert_all_stored_in(Suite::Aes, &plaintexts).await;

    // The application keeps writing and reading its own rows, and an old
    // one, through pgveil during the whole move.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        let client = served.connect("crm_user").await;
        tokio::spawn(async move {
            let mut n = 100_000;
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                insert(&client, schema, n).await;
                written += 1;
                let rows = client
                    .query(
                        &format!(
                            "SELECT full_name, email FROM {schema}.customers \
                             WHERE id = (SELECT max(id) FROM {schema}.customers) OR id = $1 \
                             ORDER BY id"
                        ),
                        &[&((n % BEFORE) as i64 + 1)],
                    )
                    .await
                    .unwrap();
                let old = customer(n % BEFORE + 1);
                assert_eq!(rows[0].get::<_, String>(0), old.0, "an old row");
                assert_eq!(rows[0].get::<_, String>(1), old.1, "an old row");
                assert!(rows.len() == 2, "the new row");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };

    let said = env.ok(&["keys", "rotate", "--config", env.config(), "--suite", "sm"]);
    assert!(said.contains("suite sm) is now current"), "{said}");
    served.reload();
    // What the application writes from now on is under SM keys; a row
    // written after the reload is found by its e-mail at once.
    let app = served.connect("crm_user").await;
    insert(&app, schema, 50_000).await;
    assert_eq!(find(&app, schema, 50_000).await.len(), 1);

    let out = env.pgveil(&["migrate", "--config", env.config()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let written = worker.await.unwrap();
    assert!(written > 0);

    // Every value is now under an SM key, and every row reads back and is
    // found by its e-mail.
    let stored = env.assert_all_stored_in(Suite::Sm, &plaintexts).await;
    let total = app
        .query_one(&format!("SELECT count(*) FROM {schema}.customers"), &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(stored as i64, total * 4);
    let rows = app
        .query(
            &format!(
                "SELECT id, full_name, email FROM {schema}.customers WHERE id <= $1 ORDER BY id"
            ),
            &[&(BEFORE as i64)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), BEFORE as usize);
    let mut seen = HashSet::new();
    for row in &rows {
        let n = row.get::<_, i64>(0) as u64;
        let (name, email, _, _) = customer(n);
        assert_eq!(
            (row.get::<_, String>(1), row.get::<_, String>(2)),
            (name, email)
        );
        seen.insert(n);
    }
    assert_eq!(seen.len(), BEFORE as usize);
    for n in [1, 150, BEFORE] {
        assert_eq!(find(&app, schema, n).await.len(), 1, "customer {n}");
    }
    let checked = env.pgveil(&[
        "policy",
        "check",
        "--config",
        env.config(),
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    for column in report["columns"].as_array().unwrap() {
        assert_eq!(
            column["rows"]["old_versions"],
            serde_json::json!({}),
            "{column}"
        );
    }
}
