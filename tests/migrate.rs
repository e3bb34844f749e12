//! `pgveil migrate` against real PostgreSQL: legacy plaintext encrypted
//! while an application writes through a running `pgveil serve`, a run
//! killed and resumed, a mode change, `--decrypt`, `--dry-run`, forged
//! values, tables without a primary key or with a composite one, and the
//! migration's audit log.
//!
//! Each test has a schema of its own in the shared cluster, and its own
//! policy, keyring, configuration and audit directory.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, SUPERUSER, SUPERUSER_PASSWORD};
use pgveil::protect::crypto::{parse_bytes, parse_text, MasterKey};
use pgveil::protect::keyring::Keyring;
use pgveil::protect::policy::Policy;

/// A schema's tables, a policy for them and everything `pgveil migrate`
/// and `pgveil serve` need to run on them.
struct Env {
    dir: tempfile::TempDir,
    schema: &'static str,
    policy: PathBuf,
    config: PathBuf,
    master: MasterKey,
    listen: String,
}

impl Env {
    /// Creates `schema`, runs `sql` in it (as the superuser) and writes a
    /// policy (`policy`, with `SCHEMA` standing for the schema), a keyring
    /// for it and a configuration.
    fn new(schema: &'static str, sql: &str, policy: &str) -> Env {
        common::crm::prepared();
        Cluster::shared().psql_direct(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
             SET search_path = {schema}; {sql}; \
             GRANT USAGE ON SCHEMA {schema} TO crm_app; \
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO crm_app; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO crm_app"
        ));
        let dir = tempfile::Builder::new()
            .prefix("pgveil-migrate-")
            .tempdir()
            .unwrap();
        let path = |name: &str| dir.path().join(name);
        let (master, text) = MasterKey::generate().unwrap();
        common::write_private(&path("master.key"), text.as_bytes());
        common::write_private(&path("password"), SUPERUSER_PASSWORD);
        let listen = format!("127.0.0.1:{}", common::free_port());
        std::fs::write(
            path("pgveil.toml"),
            format!(
                "listen = {listen:?}\nupstream = {:?}\nlog_format = \"json\"\n\
                 policy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n\
                 [maintenance]\nuser = {SUPERUSER:?}\ndatabase = \"postgres\"\npassword_file = {:?}\n\
                 [audit]\ndir = {:?}\n",
                Cluster::shared().addr(),
                path("policy.toml"),
                path("keyring.toml"),
                path("master.key"),
                path("password"),
                path("audit"),
            ),
        )
        .unwrap();
        let env = Env {
            policy: path("policy.toml"),
            config: path("pgveil.toml"),
            dir,
            schema,
            master,
            listen,
        };
        env.set_policy(policy);
        let domains = env.load_policy().domains();
        Keyring::init(&env.path("keyring.toml"), &env.master, &domains).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_policy(&self, policy: &str) {
        std::fs::write(&self.policy, policy.replace("SCHEMA", self.schema)).unwrap();
    }

    fn load_policy(&self) -> Policy {
        Policy::load(std::slice::from_ref(&self.policy)).unwrap()
    }

    fn keyring(&self) -> Keyring {
        Keyring::load(&self.path("keyring.toml"), &self.master).unwrap()
    }

    /// Runs `pgveil migrate --config ... ARGS`.
    fn migrate(&self, args: &[&str]) -> Output {
        self.migrate_command(args).output().unwrap()
    }

    fn migrate_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgveil"));
        command
            .arg("migrate")
            .arg("--config")
            .arg(&self.config)
            .args(args);
        command
    }

    /// `pgveil serve` with this configuration.
    fn serve(&self) -> Served {
        let log = self.path("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgveil serve did not start: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Served {
            child,
            addr: self.listen.clone(),
            log,
        }
    }

    /// The first column of `sql`'s rows, straight from PostgreSQL.
    fn direct(&self, sql: &str) -> Vec<String> {
        Cluster::shared()
            .psql_direct(sql)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The plaintext of a stored text value of `column` (its own domain).
    fn decrypt(&self, keyring: &Keyring, table: &str, column: &str, stored: &str) -> String {
        let envelope = parse_text(stored.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{table}.{column} holds plaintext"));
        let domain = format!("{}.{table}.{column}", self.schema);
        String::from_utf8(keyring.decrypt(&domain, envelope).unwrap().to_vec()).unwrap()
    }
}

struct Served {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Served {
    async fn connect(&self) -> tokio_postgres::Client {
        common::connect_to(&self.addr, "crm_user").await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Reloads the policy (SIGHUP) and waits until it is in force.
    fn reload(&self) {
        let before = self.log().matches("reloaded on SIGHUP").count();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches("reloaded on SIGHUP").count() == before {
            assert!(Instant::now() < deadline, "no reload: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The exit code, stdout and stderr of a run.
fn ran(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// What the application last wrote to a row: full name, e-mail, address.
type Written = (Option<String>, Option<String>, Option<String>);

const CUSTOMERS: &str = "CREATE TABLE customers (id bigserial PRIMARY KEY, full_name text, \
    email varchar(200), address text, segment text)";

const CUSTOMERS_POLICY: &str = r#"
[[column]]
table = "SCHEMA.customers"
column = "full_name"
reveal = { crm_app = "plaintext" }
[[column]]
table = "SCHEMA.customers"
column = "email"
encryption = "deterministic"
reveal = { crm_app = "plaintext" }
[[column]]
table = "SCHEMA.customers"
column = "address"
reveal = { crm_app = "plaintext" }
"#;

/// `n` legacy rows: plaintext, written straight to PostgreSQL.
fn legacy_rows(n: u64) -> String {
    format!(
        "INSERT INTO customers (full_name, email, address, segment) \
         SELECT 'Name ' || g, 'user' || g || '@example.com', g || ' Main Street', 'legacy' \
         FROM generate_series(1, {n}) AS g"
    )
}

fn legacy(id: u64) -> (String, String, String) {
    (
        format!("Name {id}"),
        format!("user{id}@example.com"),
        format!("{id} Main Street"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_rows_are_encrypted_while_the_application_writes_through_pgveil() {
    const ROWS: u64 = 100_000;
    let env = Env::new(
        "mig_live",
        &format!("{CUSTOMERS}; {}", legacy_rows(ROWS)),
        CUSTOMERS_POLICY,
    );
    let served = env.serve();

    // A second writer of the audit directory is refused, not forked.
    let port = common::free_port();
    let second = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("is being written by another pgveil process"),
        "{}",
        text(&second.stderr)
    );

    // The application: updates random rows through pgveil for as long as
    // the migration runs, remembering what it wrote last.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let app = served.connect().await;
    let table = format!("{}.customers", env.schema);
    let writer = {
        let (stop, writes, table) = (stop.clone(), writes.clone(), table.clone());
        tokio::spawn(async move {
            let contact = app
                .prepare(&format!(
                    "UPDATE {table} SET email = $1, address = $2 WHERE id = $3"
                ))
                .await
                .unwrap();
            let name = app
                .prepare(&format!("UPDATE {table} SET full_name = $1 WHERE id = $2"))
                .await
                .unwrap();
            let segment = app
                .prepare(&format!("UPDATE {table} SET segment = $1 WHERE id = $2"))
                .await
                .unwrap();
            let mut written: HashMap<i64, Written> = HashMap::new();
            let mut n: u64 = 0;
            let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let id = (seed % ROWS) as i64 + 1;
                n += 1;
                let entry = written.entry(id).or_default();
                match n % 3 {
                    0 => {
                        let (email, address) =
                            (format!("new{n}@example.com"), format!("{n} New Road"));
                        app.execute(&contact, &[&email, &address, &id])
                            .await
                            .unwrap();
                        entry.1 = Some(email);
                        entry.2 = Some(address);
                    }
                    1 => {
                        let full_name = format!("Renamed {n}");
                        app.execute(&name, &[&full_name, &id]).await.unwrap();
                        entry.0 = Some(full_name);
                    }
                    _ => {
                        // Moves the row without touching its protected values.
                        app.execute(&segment, &[&format!("s{n}"), &id])
                            .await
                            .unwrap();
                    }
                }
                writes.fetch_add(1, Ordering::Relaxed);
            }
            written
        })
    };
    while writes.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let migrate = {
        let command = env.migrate_command(&["--batch-size", "500"]);
        tokio::task::spawn_blocking(move || {
            let mut command = command;
            command.output().unwrap()
        })
    };
    let out = migrate.await.unwrap();
    let during = writes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let (code, stdout, stderr) = ran(&out);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        during > 100,
        "the application wrote only {during} times during the migration"
    );
    assert!(
        stdout.contains("done: every value is as the policy asks"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}.customers (by primary key id): {ROWS} rows",
            env.schema
        )),
        "{stdout}"
    );

    // Straight from PostgreSQL: no plaintext left.
    let plaintext = env.direct(&format!(
        "SELECT count(*) FROM {table} WHERE full_name NOT LIKE 'pgv1:%' \
         OR email NOT LIKE 'pgv1:%' OR address NOT LIKE 'pgv1:%'"
    ));
    assert_eq!(plaintext, ["0"]);
    // Through pgveil, as the application: every row holds its latest value.
    let app = served.connect().await;
    let rows = app
        .query(
            &format!("SELECT id, full_name, email, address FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, ROWS);
    for row in &rows {
        let id: i64 = row.get(0);
        let (full_name, email, address) = legacy(id as u64);
        let latest = written.get(&id).cloned().unwrap_or_default();
        let got: (String, String, String) = (row.get(1), row.get(2), row.get(3));
        assert_eq!(
            got,
            (
                latest.0.unwrap_or(full_name),
                latest.1.unwrap_or(email),
                latest.2.unwrap_or(address)
            ),
            "row {id}"
        );
    }
    // The deterministic column is searchable through pgveil.
    let untouched = (1..=ROWS as i64)
        .find(|id| !written.contains_key(id))
        .unwrap();
    let found = app
        .query(
            &format!("SELECT id FROM {table} WHERE email = $1"),
            &[&legacy(untouched as u64).1],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, i64>(0), untouched);

    // The migration's audit records: one per column, in a chain of their
    // own beside serve's, which verifies.
    let migrate_dir = env.path("audit").join("migrate");
    let (records, log) = common::audit_log(&migrate_dir);
    let migrations: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "migration")
        .collect();
    assert_eq!(migrations.len(), 3, "{log}");
    for record in &migrations {
        assert_eq!(record["action"], "encrypt", "{record}");
        assert_eq!(record["outcome"], "ok", "{record}");
        assert_eq!(record["to_version"], 1, "{record}");
        assert_eq!(record["role"], SUPERUSER, "{record}");
        assert!(record["table"]
            .as_str()
            .unwrap()
            .ends_with("mig_live.customers"));
    }
    let encrypted: u64 = migrations.iter().map(|r| r["rows"].as_u64().unwrap()).sum();
    // Rows the application rewrote before the migration reached them
    // needed nothing.
    assert!(
        encrypted <= 3 * ROWS && encrypted > 3 * ROWS - 3 * during,
        "{encrypted}"
    );
    assert!(
        !log.contains("Main Street") && !log.contains("@example.com"),
        "{log}"
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["audit", "verify"])
        .arg(&migrate_dir)
        .arg("--config")
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let search = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args([
            "audit",
            "search",
            "--event",
            "migration",
            "--column",
            "customers.email",
        ])
        .arg(&migrate_dir)
        .output()
        .unwrap();
    assert!(
        text(&search.stdout).contains("mig_live.customers.email"),
        "{}",
        text(&search.stdout)
    );
    // No protected value in anything migrate printed.
    assert!(!stdout.contains("Main Street") && !stderr.contains("Main Street"));
    assert!(!stdout.contains("@example.com") && !stderr.contains("@example.com"));
    // The state of a finished run is gone: a rerun reads everything and
    // changes nothing.
    assert!(!env.path("keyring.migrate-state.json").exists());
    let (code, stdout, _) = ran(&env.migrate(&[]));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!("{ROWS} rows; this run read {ROWS}")),
        "{stdout}"
    );
    assert!(stdout.contains("  email      deterministic v1"), "{stdout}");
    drop(served);
}

#[test]
fn a_run_killed_mid_way_resumes_without_redoing_committed_batches() {
    const ROWS: u64 = 20_000;
    let env = Env::new(
        "mig_kill",
        &format!("{CUSTOMERS}; {}", legacy_rows(ROWS)),
        CUSTOMERS_POLICY,
    );
    let state = env.path("keyring.migrate-state.json");
    let mut child = env
        .migrate_command(&["--batch-size", "200", "--max-rows-per-second", "4000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.exists() || saved_rows(&state) < 2_000 {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no progress saved"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved = saved_rows(&state);
    assert!(saved < ROWS, "the run was not killed mid-way");
    let encrypted: u64 = env
        .direct("SELECT count(*) FROM mig_kill.customers WHERE email LIKE 'pgv1:%'")[0]
        .parse()
        .unwrap();
    // Every batch the state counts is committed; at most the batch after
    // it committed before the state was written.
    assert!(
        encrypted >= saved && encrypted <= saved + 200,
        "{encrypted} encrypted, {saved} saved"
    );

    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The second run read only what the first had not done.
    assert!(
        stdout.contains(&format!("{ROWS} rows; this run read {} in", ROWS - saved)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "resumed after {saved} rows done by an earlier run"
        )),
        "{stdout}"
    );
    assert!(!state.exists(), "a finished run removes its state");
    // No row damaged: each decrypts to its legacy value.
    let keyring = env.keyring();
    let stored = env.direct(
        "SELECT id || '|' || full_name || '|' || email || '|' || address FROM mig_kill.customers",
    );
    assert_eq!(stored.len() as u64, ROWS);
    for line in stored {
        let parts: Vec<&str> = line.split('|').collect();
        let id: u64 = parts[0].parse().unwrap();
        let got = (
            env.decrypt(&keyring, "customers", "full_name", parts[1]),
            env.decrypt(&keyring, "customers", "email", parts[2]),
            env.decrypt(&keyring, "customers", "address", parts[3]),
        );
        assert_eq!(got, legacy(id), "row {id}");
    }
    // The audit record covers the whole table, both runs.
    let (records, log) = common::audit_log(&env.path("audit").join("migrate"));
    let email = records
        .iter()
        .find(|r| r["column"] == "mig_kill.customers.email")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(email["resumed"], true, "{email}");
    let rows = email["rows"].as_u64().unwrap();
    assert!(rows > ROWS - 200 && rows <= ROWS, "{email}");
}

/// The numbers of a column's line in a report's table.
fn counts(report: &str, column: &str) -> Vec<u64> {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{column} ")))
        .unwrap_or_else(|| panic!("no line for {column}: {report}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The rows the state file says are done.
fn saved_rows(state: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(state) else {
        return 0;
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    json["current"]["rows"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_mode_change_equality_lookups_find_the_migrated_rows() {
    let randomized = CUSTOMERS_POLICY.replace("encryption = \"deterministic\"\n", "");
    let env = Env::new("mig_mode", CUSTOMERS, &randomized);
    let served = env.serve();
    let app = served.connect().await;
    let insert = "INSERT INTO mig_mode.customers (full_name, email, address) VALUES ($1, $2, $3)";
    for id in 1..=300u64 {
        let (name, email, address) = legacy(id);
        app.execute(insert, &[&name, &email, &address])
            .await
            .unwrap();
    }
    Cluster::shared().psql_direct(&pgveil::protect::guard::install_sql(&env.load_policy()));
    let lookup = "SELECT full_name FROM mig_mode.customers WHERE email = $1";
    let email = legacy(42).1;
    // Randomized: pgveil refuses to compare.
    let refused = app.query(lookup, &[&email]).await.unwrap_err();
    assert_eq!(common::sqlstate(&refused), Some("0A000"), "{refused}");

    // The policy says deterministic now; pgveil serve reloads it.
    env.set_policy(CUSTOMERS_POLICY);
    served.reload();
    // The old guard admits randomized ciphertext only: migrate says how to
    // replace it and writes nothing.
    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "ALTER TABLE \"mig_mode\".\"customers\" DROP CONSTRAINT \"pgveil_guard_email\";"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("admits randomized ciphertext only"),
        "{stderr}"
    );
    Cluster::shared()
        .psql_direct("ALTER TABLE mig_mode.customers DROP CONSTRAINT pgveil_guard_email");
    Cluster::shared().psql_direct(&pgveil::protect::guard::install_sql(&env.load_policy()));

    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // values, encrypted, re-encrypted (old version, other mode), decrypted,
    // undecryptable, refused, current
    assert_eq!(
        counts(&stdout, "email"),
        [300, 0, 0, 300, 0, 0, 0, 0],
        "{stdout}"
    );
    assert_eq!(
        counts(&stdout, "address"),
        [300, 0, 0, 0, 0, 0, 0, 300],
        "{stdout}"
    );
    assert!(
        stdout.contains("mig_mode.customers.email: pgveil_guard_email validated"),
        "{stdout}"
    );
    let app = served.connect().await;
    let found = app.query(lookup, &[&email]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, String>(0), "Name 42");
    let (records, _) = common::audit_log(&env.path("audit").join("migrate"));
    let again = records
        .iter()
        .find(|r| r["column"] == "mig_mode.customers.email" && r["action"] == "re_encrypt")
        .unwrap();
    assert_eq!(
        (again["rows"].as_u64(), again["mode"].as_str()),
        (Some(300), Some("deterministic"))
    );
    assert_eq!(again["from_versions"], serde_json::json!([1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_taken_out_of_the_policy_is_decrypted_on_request() {
    let env = Env::new("mig_dec", CUSTOMERS, CUSTOMERS_POLICY);
    let served = env.serve();
    let app = served.connect().await;
    let insert = "INSERT INTO mig_dec.customers (full_name, email, address) VALUES ($1, $2, $3)";
    for id in 1..=200u64 {
        let (name, email, address) = legacy(id);
        app.execute(insert, &[&name, &email, &address])
            .await
            .unwrap();
    }
    drop(served);
    Cluster::shared().psql_direct(&pgveil::protect::guard::install_sql(&env.load_policy()));
    let decrypt = ["--decrypt", "mig_dec.customers.address"];

    // Still in the policy: refused.
    let (code, _, stderr) = ran(&env.migrate(&decrypt));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--decrypt mig_dec.customers.address: the policy still protects it"),
        "{stderr}"
    );

    // Out of the policy, but its guard would refuse the plaintext.
    let without: String = CUSTOMERS_POLICY
        .split("[[column]]")
        .filter(|entry| !entry.contains("\"address\""))
        .collect::<Vec<_>>()
        .join("[[column]]");
    env.set_policy(&without);
    let (code, _, stderr) = ran(&env.migrate(&decrypt));
    assert_eq!(code, 2);
    let drop = "ALTER TABLE \"mig_dec\".\"customers\" DROP CONSTRAINT \"pgveil_guard_address\";";
    assert!(stderr.contains(drop), "{stderr}");
    assert_eq!(
        env.direct("SELECT count(*) FROM mig_dec.customers WHERE address LIKE 'pgv1:%'"),
        ["200"],
        "nothing written"
    );

    Cluster::shared().psql_direct(drop);
    let (code, stdout, stderr) = ran(&env.migrate(&decrypt));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let addresses = env.direct("SELECT id || '|' || address FROM mig_dec.customers");
    assert_eq!(addresses.len(), 200);
    for line in addresses {
        let (id, address) = line.split_once('|').unwrap();
        assert_eq!(address, legacy(id.parse().unwrap()).2);
    }
    // The columns still in the policy stay encrypted.
    assert_eq!(
        env.direct("SELECT count(*) FROM mig_dec.customers WHERE email LIKE 'pgv1:%' AND full_name LIKE 'pgv1:%'"),
        ["200"]
    );
    let (records, _) = common::audit_log(&env.path("audit").join("migrate"));
    let decrypted = records.iter().find(|r| r["action"] == "decrypt").unwrap();
    assert_eq!(decrypted["column"], "mig_dec.customers.address");
    assert_eq!(decrypted["rows"], 200);
    assert!(decrypted.get("to_version").is_none(), "{decrypted}");
}

#[test]
fn a_dry_run_changes_nothing_and_forged_values_are_left_and_reported() {
    let env = Env::new(
        "mig_dry",
        &format!("{CUSTOMERS}; {}", legacy_rows(500)),
        CUSTOMERS_POLICY,
    );
    let keyring = env.keyring();
    // A value pgveil wrote, then altered; and one made up.
    let good = keyring
        .encrypt_text(
            "mig_dry.customers.email",
            pgveil::protect::crypto::Mode::Deterministic,
            b"secret-17@example.org",
        )
        .unwrap();
    let mut altered = good.into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'x' { b'y' } else { b'x' };
    let altered = String::from_utf8(altered).unwrap();
    let forged = "pgv1:UFYBAgAAAAEAAAABnotarealvaluenotarealvaluenot";
    Cluster::shared().psql_direct(&format!(
        "UPDATE mig_dry.customers SET email = '{altered}' WHERE id = 17; \
         UPDATE mig_dry.customers SET address = '{forged}' WHERE id = 18"
    ));
    let snapshot =
        || env.direct("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM mig_dry.customers t");
    let before = snapshot();

    let (code, stdout, stderr) = ran(&env.migrate(&["--dry-run"]));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_eq!(snapshot(), before, "a dry run writes nothing");
    assert!(!env.path("keyring.migrate-state.json").exists());
    assert!(!env.path("audit").exists(), "nor audit records");
    assert!(stdout.contains("dry run: nothing is written"), "{stdout}");
    // values, plaintext, old version, other mode, to decrypt, undecryptable, current
    assert_eq!(
        counts(&stdout, "email"),
        [500, 499, 0, 0, 0, 1, 0],
        "{stdout}"
    );
    assert_eq!(
        counts(&stdout, "address"),
        [500, 499, 0, 0, 0, 1, 0],
        "{stdout}"
    );
    assert_eq!(
        counts(&stdout, "full_name"),
        [500, 500, 0, 0, 0, 0, 0],
        "{stdout}"
    );
    assert!(
        stdout.contains("left: mig_dry.customers.email: 1 undecryptable"),
        "{stdout}"
    );

    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("left: mig_dry.customers.address: 1 undecryptable"),
        "{stdout}"
    );
    assert_eq!(
        env.direct("SELECT email FROM mig_dry.customers WHERE id = 17"),
        std::slice::from_ref(&altered)
    );
    assert_eq!(
        env.direct("SELECT address FROM mig_dry.customers WHERE id = 18"),
        [forged]
    );
    assert_eq!(
        env.direct("SELECT count(*) FROM mig_dry.customers WHERE email NOT LIKE 'pgv1:%' OR address NOT LIKE 'pgv1:%'"),
        ["0"]
    );
    for out in [&stdout, &stderr] {
        assert!(!out.contains(&altered) && !out.contains(forged) && !out.contains("Main Street"));
    }
    let (records, _) = common::audit_log(&env.path("audit").join("migrate"));
    let email = records
        .iter()
        .find(|r| r["column"] == "mig_dry.customers.email")
        .unwrap();
    assert_eq!(
        (email["undecryptable"].as_u64(), email["outcome"].as_str()),
        (Some(1), Some("XX001"))
    );
}

#[test]
fn tables_without_a_primary_key_or_with_a_composite_one() {
    let sql = "CREATE TABLE notes (body text, n int); \
        INSERT INTO notes SELECT 'note ' || g, g FROM generate_series(1, 3000) AS g; \
        CREATE TABLE accounts (region text, num int, secret char(80), photo bytea, \
            PRIMARY KEY (region, num)); \
        INSERT INTO accounts SELECT 'r' || (g % 7), g, 'secret ' || g, \
            decode(lpad(to_hex(g), 8, '0'), 'hex') FROM generate_series(1, 3000) AS g";
    let policy = r#"
[[column]]
table = "SCHEMA.notes"
column = "body"
[[column]]
table = "SCHEMA.accounts"
column = "secret"
[[column]]
table = "SCHEMA.accounts"
column = "photo"
encryption = "deterministic"
"#;
    let env = Env::new("mig_keys", sql, policy);
    // Rows move while the table without a key is walked by ctid.
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut moved = 0;
            while !stop.load(Ordering::Relaxed) {
                Cluster::shared().psql_direct(
                    "UPDATE mig_keys.notes SET n = n + 1 WHERE n % 50 = (extract(epoch FROM now())::int % 50)",
                );
                moved += 1;
            }
            moved
        })
    };
    let (code, stdout, stderr) = ran(&env.migrate(&["--batch-size", "250"]));
    stop.store(true, Ordering::Relaxed);
    assert!(mover.join().unwrap() > 0);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("mig_keys.notes (by ctid, "), "{stdout}");
    assert!(
        stdout.contains("mig_keys.accounts (by primary key region, num): 3000 rows"),
        "{stdout}"
    );

    let keyring = env.keyring();
    let notes = env.direct("SELECT body FROM mig_keys.notes");
    assert_eq!(notes.len(), 3000);
    let mut bodies: Vec<String> = notes
        .iter()
        .map(|b| env.decrypt(&keyring, "notes", "body", b))
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (1..=3000).map(|g| format!("note {g}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    let accounts = env.direct(
        "SELECT num || '|' || secret || '|' || encode(photo, 'hex') FROM mig_keys.accounts",
    );
    assert_eq!(accounts.len(), 3000);
    for line in accounts {
        let parts: Vec<&str> = line.split('|').collect();
        let num: u32 = parts[0].parse().unwrap();
        assert_eq!(
            env.decrypt(&keyring, "accounts", "secret", parts[1].trim_end()),
            format!("secret {num}")
        );
        let photo = parse_bytes(&hex::decode(parts[2]).unwrap())
            .unwrap()
            .unwrap();
        let plain = keyring.decrypt("mig_keys.accounts.photo", photo).unwrap();
        assert_eq!(plain.as_slice(), num.to_be_bytes());
    }
}

#[test]
fn guards_are_validated_at_the_end_and_a_row_they_refuse_is_reported() {
    let env = Env::new(
        "mig_guard",
        &format!("{CUSTOMERS}; {}", legacy_rows(300)),
        CUSTOMERS_POLICY,
    );
    // A forged value, then the guards, added NOT VALID: the rows already
    // there are not checked, new row versions are.
    let forged = "pgv1:UFYBAgAAAAEAAAABnotarealvaluenotarealvaluenot";
    Cluster::shared().psql_direct(&format!(
        "UPDATE mig_guard.customers SET address = '{forged}' WHERE id = 7"
    ));
    Cluster::shared().psql_direct(&pgveil::protect::guard::install_sql(&env.load_policy()));

    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    // Row 7 cannot be written: its forged address is not randomized
    // ciphertext, so the address guard refuses the row's new version.
    assert!(
        stdout.contains(
            "refused 1 rows: new row for relation \"customers\" violates check constraint \
             \"pgveil_guard_address\" (SQLSTATE 23514, constraint pgveil_guard_address, \
             table customers)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("mig_guard.customers.address: pgveil_guard_address failed to validate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("left: mig_guard.customers.address: 1 undecryptable"),
        "{stdout}"
    );
    assert!(!stdout.contains(forged) && !stderr.contains(forged));
    assert_eq!(
        env.direct("SELECT count(*) FROM mig_guard.customers WHERE email NOT LIKE 'pgv1:%'"),
        ["1"]
    );

    // Any new version of row 7 breaks the address guard, so the operator
    // deals with the row itself (here: deletes it); the next run finds
    // the rest done and every guard validates.
    Cluster::shared().psql_direct("DELETE FROM mig_guard.customers WHERE id = 7");
    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for column in ["full_name", "email", "address"] {
        assert!(
            stdout.contains(&format!(
                "mig_guard.customers.{column}: pgveil_guard_{column} validated"
            )),
            "{stdout}"
        );
    }
    assert_eq!(
        counts(&stdout, "email"),
        [299, 0, 0, 0, 0, 0, 0, 299],
        "{stdout}"
    );
    assert_eq!(
        env.direct(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'pgveil_guard_%' \
             AND conrelid = 'mig_guard.customers'::regclass AND convalidated"
        ),
        ["3"]
    );
}

/// `pgveil keys ARGS`: exit code, stdout and stderr.
fn keys(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .arg("keys")
        .args(args)
        .output()
        .unwrap();
    ran(&out)
}

/// What `pgveil policy check --format json` says of `column`'s values.
fn checked_rows(env: &Env, column: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["policy", "check", "--format", "json", "--config"])
        .arg(&env.config)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == column)
        .unwrap_or_else(|| panic!("{column} in {report}"))["rows"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_then_migrate_then_retire() {
    let env = Env::new("mig_rotate", CUSTOMERS, CUSTOMERS_POLICY);
    let config = env.config.to_str().unwrap().to_owned();
    let keyring = env.path("keyring.toml");
    let master = env.path("master.key");
    let (keyring, master) = (keyring.to_str().unwrap(), master.to_str().unwrap());
    let domain = "mig_rotate.customers.email";
    let served = env.serve();
    let app = served.connect().await;
    let insert = "INSERT INTO mig_rotate.customers (full_name, email, address) VALUES ($1, $2, $3)";
    for id in 1..=200u64 {
        let (name, email, address) = legacy(id);
        app.execute(insert, &[&name, &email, &address])
            .await
            .unwrap();
    }
    let retire = [
        "retire",
        "--config",
        &config,
        "--domain",
        domain,
        "--version",
        "1",
    ];

    // Version 1 is the current one: it cannot be retired.
    let (code, _, stderr) = keys(&retire);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is the current key of domain"), "{stderr}");

    // Rotate every domain; once reloaded, new values are written with v2.
    let (code, stdout, stderr) =
        keys(&["rotate", "--keyring", keyring, "--master-key-file", master]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("rotated {domain}: version 2")),
        "{stdout}"
    );
    served.reload();
    let app = served.connect().await;
    let (name, email, address) = legacy(201);
    app.execute(insert, &[&name, &email, &address])
        .await
        .unwrap();
    let rows = checked_rows(&env, "mig_rotate.customers.email");
    assert_eq!(rows["old_versions"]["1"], 200, "{rows}");
    assert_eq!(rows["current"], 1, "{rows}");

    // Values are still under version 1: retiring it is refused, nothing
    // removed.
    let (code, _, stderr) = keys(&retire);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("version 1 of mig_rotate.customers.email still encrypts stored values")
            && stderr.contains("200 value(s)"),
        "{stderr}"
    );
    let (_, listed, _) = keys(&["list", "--keyring", keyring, "--format", "json"]);
    assert_eq!(
        listed.matches(&format!("\"domain\":\"{domain}\"")).count(),
        2,
        "{listed}"
    );

    // Migrate moves them onto version 2; then version 1 can go.
    let (code, stdout, stderr) = ran(&env.migrate(&[]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let rows = checked_rows(&env, "mig_rotate.customers.email");
    assert_eq!(rows["old_versions"], serde_json::json!({}), "{rows}");
    assert_eq!(rows["current"], 201, "{rows}");
    let (code, stdout, stderr) = keys(&retire);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("retired {domain} version 1")),
        "{stdout}"
    );
    let (_, listed, _) = keys(&["list", "--keyring", keyring, "--format", "json"]);
    let versions: Vec<u64> = listed
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|k| k["domain"] == domain)
        .map(|k| k["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2]);

    // Reloaded without version 1, every row still reads, and an old row
    // is found by its e-mail.
    served.reload();
    let app = served.connect().await;
    let all = app
        .query(
            "SELECT id, email FROM mig_rotate.customers ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 201);
    for row in &all {
        let id: i64 = row.get(0);
        assert_eq!(row.get::<_, String>(1), legacy(id as u64).1);
    }
    let found = app
        .query(
            "SELECT full_name FROM mig_rotate.customers WHERE email = $1",
            &[&legacy(7).1],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, String>(0), "Name 7");
}
