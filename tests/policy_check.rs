//! `pgveil policy check` compares the policy with a live database, and
//! `serve` refuses, at start and on reload, a policy naming a table or
//! column that does not exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Cluster, SUPERUSER, SUPERUSER_PASSWORD};
use pgveil::protect::crypto::MasterKey;
use pgveil::protect::keyring::Keyring;
use pgveil::protect::policy::Policy;

/// The database of these tests: the sample CRM, guards validated.
const DATABASE: &str = "checked";

/// A directory with the master key, keyring and maintenance password, and
/// the CRM set up in [`DATABASE`]; once per test binary.
fn prepared() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let cluster = Cluster::shared();
        cluster.psql_direct(&format!("create database {DATABASE}"));
        let crm = std::fs::read_to_string(project_file("policies/crm.sql")).unwrap();
        let out = common::psql(&cluster.addr(), SUPERUSER, SUPERUSER_PASSWORD, DATABASE)
            .args(["-c", &crm])
            .output()
            .unwrap();
        common::assert_success("crm.sql", &out);
        let dir = tempfile::Builder::new()
            .prefix("pgveil-check-")
            .tempdir()
            .unwrap();
        let (master, text) = MasterKey::generate().unwrap();
        common::write_private(&dir.path().join("master.key"), text.as_bytes());
        let policy = Policy::load(&[project_file("policies/crm.toml")]).unwrap();
        Keyring::init(&dir.path().join("keyring.toml"), &master, &policy.domains()).unwrap();
        common::write_private(&dir.path().join("password"), SUPERUSER_PASSWORD);
        // The tables are empty: every guard validates.
        let validate = pgveil::protect::guard::script(&policy)
            .lines()
            .filter_map(|line| line.strip_prefix("-- ALTER TABLE"))
            .map(|rest| format!("ALTER TABLE{rest}\n"))
            .collect::<String>();
        direct(&validate);
        dir
    })
    .path()
}

fn project_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `sql` as the superuser in [`DATABASE`].
fn direct(sql: &str) {
    let out = common::psql(
        &Cluster::shared().addr(),
        SUPERUSER,
        SUPERUSER_PASSWORD,
        DATABASE,
    )
    .args(["-c", sql])
    .output()
    .unwrap();
    common::assert_success(sql, &out);
}

/// A configuration in a directory of its own holding `policy` (the
/// sample CRM policy's text, possibly edited), with a `[maintenance]`
/// connection unless `maintenance` is false.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(policy: &str, listen: Option<&str>) -> Setup {
        let keys = prepared();
        let dir = tempfile::Builder::new()
            .prefix("pgveil-check-run-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let listen = listen.map_or(String::new(), |addr| format!("listen = {addr:?}\n"));
        std::fs::write(
            dir.path().join("pgveil.toml"),
            format!(
                "{listen}upstream = {:?}\npolicy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n\
                 [maintenance]\nuser = {SUPERUSER:?}\ndatabase = {DATABASE:?}\npassword_file = {:?}\n",
                Cluster::shared().addr(),
                dir.path().join("policy.toml"),
                keys.join("keyring.toml"),
                keys.join("master.key"),
                keys.join("password"),
            ),
        )
        .unwrap();
        Setup { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("pgveil.toml")
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    fn check(&self, format: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["policy", "check", "--format", format, "--config"])
            .arg(self.config())
            .output()
            .unwrap()
    }
}

fn sample_policy() -> String {
    std::fs::read_to_string(project_file("policies/crm.toml")).unwrap()
}

/// The sample policy with the first `from` replaced by `to`, and the line
/// it is on.
fn edited(from: &str, to: &str) -> (String, usize) {
    let text = sample_policy();
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("{from} in the policy"));
    let line = text[..at].matches('\n').count() + 1;
    (text.replacen(from, to, 1), line)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_policy_that_matches_the_database_passes() {
    let setup = Setup::new(&sample_policy(), None);
    let out = setup.check("table");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ok: the policy matches the database"),
        "{text}"
    );
    assert!(text.contains("public.customers.email"), "{text}");
    assert!(text.contains("validated"), "{text}");

    let json: serde_json::Value = serde_json::from_slice(&setup.check("json").stdout).unwrap();
    assert_eq!(json["findings"].as_array().unwrap().len(), 0, "{json}");
    let columns = json["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 5);
    for column in columns {
        assert_eq!(column["guard"], "validated", "{column}");
        assert_eq!(column["key_version"], 1, "{column}");
        assert_eq!(column["type_name"], "text", "{column}");
        assert_eq!(column["rows"]["plaintext"], 0, "{column}");
    }
}

#[test]
fn each_typo_is_named_on_its_line_with_the_nearest_name() {
    let cases = [
        (
            "column = \"email\"",
            "column = \"emial\"",
            2,
            "column public.customers.emial does not exist; did you mean email?",
        ),
        (
            "table = \"customers\"",
            "table = \"customer\"",
            2,
            "table public.customer does not exist; did you mean customers?",
        ),
        (
            "crm_app = \"plaintext\"",
            "crm_ap = \"plaintext\"",
            1,
            "role crm_ap (in the reveal of public.customers.full_name) does not exist; \
             did you mean crm_app?",
        ),
    ];
    for (from, to, code, message) in cases {
        let (policy, line) = edited(from, to);
        let setup = Setup::new(&policy, None);
        let out = setup.check("table");
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(code), "{to}: {text}");
        let expected = format!("{}:{line}: {message}", setup.policy().display());
        assert!(
            text.contains(&expected),
            "{to}: want {expected:?} in\n{text}"
        );

        let json: serde_json::Value = serde_json::from_slice(&setup.check("json").stdout).unwrap();
        let finding = &json["findings"][0];
        assert_eq!(finding["message"], message, "{json}");
        assert_eq!(
            finding["at"],
            format!("{}:{line}", setup.policy().display()),
            "{json}"
        );
    }
}

#[test]
fn types_that_cannot_hold_ciphertext_and_legacy_rows_are_found() {
    direct(
        "create table if not exists legacy (id int primary key, email text, score int, \
         code varchar(20)); \
         insert into legacy values (1, 'a@example.cn', 1, 'x'), (2, 'b@example.cn', 2, 'y'), \
         (3, null, 3, null) on conflict do nothing",
    );
    let policy = "[[column]]\ntable = \"legacy\"\ncolumn = \"email\"\n\
                  [[column]]\ntable = \"legacy\"\ncolumn = \"score\"\n\
                  [[column]]\ntable = \"legacy\"\ncolumn = \"code\"\n";
    let setup = Setup::new(policy, None);
    let out = setup.check("json");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let messages: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    assert!(
        has("column public.legacy.score is of type integer, which cannot hold ciphertext"),
        "{messages:?}"
    );
    assert!(
        has("column public.legacy.code is character varying(20), which cannot hold any ciphertext"),
        "{messages:?}"
    );
    assert!(
        has("column public.legacy.email holds 2 plaintext value(s); run `pgveil migrate`"),
        "{messages:?}"
    );
    assert!(
        has("column public.legacy.email has no ciphertext guard"),
        "{messages:?}"
    );
    assert!(
        has("key domain public.legacy.email of column public.legacy.email has no key"),
        "{messages:?}"
    );
    let email = &json["columns"][1];
    assert_eq!(email["column"], "public.legacy.email");
    assert_eq!(email["rows"]["values"], 2);
    assert_eq!(email["rows"]["plaintext"], 2);
    assert_eq!(email["guard"], "missing");
    // Errors come first.
    assert_eq!(json["findings"][0]["severity"], "error");
    // No value is ever printed.
    assert!(!stdout(&out).contains("a@example.cn"));
}

#[test]
fn serve_refuses_a_misspelt_column_at_start_and_on_reload() {
    let (typo, line) = edited("column = \"email\"", "column = \"emial\"");
    let setup = Setup::new(&typo, Some("127.0.0.1:1"));
    let out = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["serve", "--config"])
        .arg(setup.config())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "{}:{line}: column public.customers.emial does not exist; did you mean email?",
        setup.policy().display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    // Started with the good policy, a reload to the misspelt one is refused.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let setup = Setup::new(&sample_policy(), Some(&addr));
    let log = setup.dir.path().join("pgveil.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["serve", "--config"])
        .arg(setup.config())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "pgveil did not start: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(setup.policy(), &typo).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("reload refused") {
            assert!(
                text.contains("column public.customers.emial does not exist; did you mean email?"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    let _ = child.kill();
    let _ = child.wait();
}
