//! Key custody: `pgveil serve`, as a program, serving the sample CRM with
//! its master key in a PKCS#11 token (SoftHSM2, a token the test makes)
//! and in AWS KMS (moto's KMS emulator, started by the test), with no
//! master key in the environment or on disk; a provider that cannot be
//! reached refuses the start (exit 2) and a reload (the keys in force
//! stay); a wrong PIN or key label is said plainly; and `keys rewrap`
//! moves a keyring from a file key into the token with every stored value
//! still readable.
//!
//! SoftHSM2 and the emulator's venv (`target/moto`) are installed by
//! `./dev deps`; a test fails, naming what is missing, without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{crm, Cluster};
use pgveil::protect::policy::Policy;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-user";
const SO_PIN: &str = "0815-officer";
const REGION: &str = "eu-west-1";

/// Customers written through pgveil: (full_name, email, phone, national_id,
/// address).
const CUSTOMERS: &[[&str; 5]] = &[
    [
        "李娜 Li Na",
        "li.na@example.cn",
        "+86 139 1234 5678",
        "110101198502020022",
        "1 Chang'an Ave, Beijing",
    ],
    [
        "Jean Dupont",
        "jean.dupont@example.fr",
        "+33 6 12 34 56 78",
        "1850275123456",
        "12 rue de Rivoli, Paris",
    ],
    [
        "Ana Souza",
        "ana.souza@example.br",
        "+55 11 91234 5678",
        "52998224725",
        "Av. Paulista 1000, São Paulo",
    ],
];

const COLUMNS: [&str; 5] = ["full_name", "email", "phone", "national_id", "address"];

/// A SoftHSM2 token of the test's own, in a directory of its own.
struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
    label: String,
}

impl Token {
    fn new(label: &str) -> Token {
        assert!(
            Path::new(MODULE).exists() && which("softhsm2-util"),
            "SoftHSM2 is missing ({MODULE}, softhsm2-util): run `./dev deps` \
             (apt-get install softhsm2)"
        );
        let dir = tempfile::Builder::new()
            .prefix("pgveil-hsm-")
            .tempdir()
            .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        common::assert_success("softhsm2-util --init-token", &out);
        Token {
            dir,
            conf,
            label: label.into(),
        }
    }

    /// `[master_key]` for the key labelled `key`, the PIN in `pin_env`.
    fn section(&self, key: &str) -> String {
        format!(
            "[master_key]\nprovider = \"pkcs11\"\nmodule = {MODULE:?}\ntoken = {:?}\n\
             key = {key:?}\npin_env = \"TEST_PKCS11_PIN\"\n",
            self.label
        )
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// moto's server, the KMS emulator, on a free port.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn venv() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto/bin")
    }

    fn start() -> Moto {
        let server = Moto::venv().join("moto_server");
        assert!(
            server.exists(),
            "the KMS emulator is missing ({}): run `./dev deps`, which installs \
             moto[server] into target/moto",
            server.display()
        );
        let port = common::free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for_port(&format!("127.0.0.1:{port}"), "moto_server");
        Moto { child, endpoint }
    }

    /// A new symmetric key, made through the emulator's KMS API.
    fn create_key(&self) -> String {
        let script = "import boto3, sys\n\
            kms = boto3.client('kms', endpoint_url=sys.argv[1], region_name=sys.argv[2],\n\
                aws_access_key_id='testing', aws_secret_access_key='testing')\n\
            print(kms.create_key(Description='pgveil custody test')['KeyMetadata']['Arn'])\n";
        let out = Command::new(Moto::venv().join("python"))
            .args(["-c", script, &self.endpoint, REGION])
            .output()
            .unwrap();
        common::assert_success("create a KMS key", &out);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kms_section(key_id: &str, endpoint: &str) -> String {
    format!(
        "[master_key]\nprovider = \"aws-kms\"\nkey_id = {key_id:?}\nregion = {REGION:?}\n\
         endpoint = {endpoint:?}\n"
    )
}

fn wait_for_port(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A working directory with a pgveil configuration for the CRM.
struct Setup {
    dir: tempfile::TempDir,
    keyring: PathBuf,
    /// The environment of every pgveil run: the token's configuration,
    /// the PIN, the emulator's credentials. Never a master key.
    env: Vec<(&'static str, String)>,
}

impl Setup {
    fn new(token: Option<&Token>) -> Setup {
        crm::prepared();
        let dir = tempfile::Builder::new()
            .prefix("pgveil-custody-")
            .tempdir()
            .unwrap();
        let mut env = vec![
            ("TEST_PKCS11_PIN", PIN.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ];
        if let Some(token) = token {
            env.push(("SOFTHSM2_CONF", token.conf.display().to_string()));
        }
        Setup {
            keyring: dir.path().join("keyring.toml"),
            dir,
            env,
        }
    }

    /// Writes configuration `name` with the CRM policy, this keyring and
    /// `master_key` (the rest of the file, e.g. a `[master_key]` table).
    fn config(&self, name: &str, listen: &str, master_key: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "listen = {listen:?}\nupstream = {:?}\npolicy = {:?}\nkeyring = {:?}\n\
                 log_format = \"json\"\nshutdown_grace_secs = 1\n{master_key}",
                Cluster::shared().addr(),
                crm::policy_file(),
                self.keyring,
            ),
        )
        .unwrap();
        path
    }

    /// Runs `pgveil ARGS` with this setup's environment.
    fn pgveil(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgveil"));
        command
            .args(args)
            .env_remove("PGVEIL_MASTER_KEY")
            .env_remove("PGVEIL_PKCS11_PIN")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        command
    }

    /// `pgveil serve --config CONFIG`, listening.
    fn serve(&self, config: &Path, listen: &str) -> Served {
        let log = self
            .dir
            .path()
            .join(format!("serve-{}.log", listen.replace(':', "-")));
        let child = self
            .command(&["serve", "--config", config.to_str().unwrap()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut served = Served {
            child,
            log,
            addr: listen.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(listen).is_err() {
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!("pgveil serve ended ({status}): {}", served.log());
            }
            assert!(Instant::now() < deadline, "pgveil did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    /// `pgveil serve --config CONFIG`, which must refuse to start with exit
    /// 2; returns what it said.
    fn serve_refused(&self, config: &Path) -> String {
        let mut child = self
            .command(&["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("pgveil serve did not refuse to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{stderr}");
        eprintln!("refused as it should be:\n{stderr}");
        stderr
    }
}

fn listen_addr() -> String {
    format!("127.0.0.1:{}", common::free_port())
}

fn assert_ran(what: &str, out: &Output) -> String {
    common::assert_success(what, out);
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Served {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl Served {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGHUP, then waits for a log line containing `expect`.
    fn hangup(&self, expect: &str) {
        let before = self.log().matches(expect).count();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.log().matches(expect).count() == before {
            assert!(
                Instant::now() < deadline,
                "no {expect:?} after SIGHUP: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

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

/// The CRM workload through pgveil at `addr`: the customers written by the
/// application, under `segment`; returns their ids.
async fn write_customers(addr: &str, segment: &str) -> Vec<i64> {
    let app = common::connect_to(addr, "crm_user").await;
    let mut ids = Vec::new();
    for customer in CUSTOMERS {
        let row = app
            .query_one(
                "insert into customers (full_name, email, phone, national_id, address, segment) \
                 values ($1, $2, $3, $4, $5, $6) returning id",
                &[
                    &customer[0],
                    &customer[1],
                    &customer[2],
                    &customer[3],
                    &customer[4],
                    &segment,
                ],
            )
            .await
            .unwrap();
        ids.push(row.get(0));
    }
    // And one in a simple query, with literals.
    let [name, email, phone, national_id, address] = CUSTOMERS[0].map(|v| v.replace('\'', "''"));
    app.simple_query(&format!(
        "update customers set full_name = '{name}', email = '{email}', phone = '{phone}', \
         national_id = '{national_id}', address = '{address}' where id = {}",
        ids[0]
    ))
    .await
    .unwrap();
    ids
}

/// The customers' columns as `user` reads them through pgveil at `addr`,
/// under the declared `purpose` if any.
async fn read_as(
    addr: &str,
    user: &str,
    purpose: Option<&str>,
    ids: &[i64],
) -> Vec<Vec<Option<String>>> {
    let client = common::connect_to(addr, user).await;
    if let Some(purpose) = purpose {
        client
            .batch_execute(&format!("set pgveil.purpose = '{purpose}'"))
            .await
            .unwrap();
    }
    let mut rows = Vec::new();
    for id in ids {
        let row = client
            .query_one(
                "select full_name, email, phone, national_id, address from customers \
                 where id = $1",
                &[id],
            )
            .await
            .unwrap();
        rows.push((0..5).map(|i| row.get::<_, Option<String>>(i)).collect());
    }
    rows
}

/// Each role reads what the policy grants, equality search on the
/// deterministic e-mail finds its row (unless `search` is false: after a
/// rotation, until `migrate`), and PostgreSQL holds ciphertext only.
async fn check_reads(addr: &str, ids: &[i64], search: bool) {
    let policy = Policy::load(&[crm::policy_file()]).unwrap();
    let mask = |column: &str, plain: &str| {
        policy
            .column("public", "customers", column)
            .unwrap()
            .mask
            .apply(plain)
    };
    let plain: Vec<Vec<Option<String>>> = CUSTOMERS
        .iter()
        .map(|c| c.iter().map(|v| Some((*v).to_owned())).collect())
        .collect();

    let app = read_as(addr, "crm_user", Some("kyc"), ids).await;
    assert_eq!(app, plain, "the application reads plaintext");
    let app = read_as(addr, "crm_user", None, ids).await;
    assert!(
        app.iter().all(|row| row[3].is_none()),
        "national_id needs kyc"
    );

    let support = read_as(addr, "support_user", None, ids).await;
    for (row, customer) in support.iter().zip(CUSTOMERS) {
        for (i, column) in COLUMNS.iter().enumerate() {
            assert_eq!(row[i], Some(mask(column, customer[i])), "support, {column}");
        }
    }

    let analyst = read_as(addr, "analyst_user", None, ids).await;
    for row in &analyst {
        assert_eq!(row[0], None);
        assert!(row[1].as_deref().unwrap().starts_with("pgvp_"), "{row:?}");
        assert!(row[2].as_deref().unwrap().starts_with("pgvp_"), "{row:?}");
    }

    let kyc = read_as(addr, "kyc_user", Some("kyc"), ids).await;
    for (row, customer) in kyc.iter().zip(CUSTOMERS) {
        assert_eq!(
            row[3].as_deref(),
            Some(customer[3]),
            "kyc reads national_id"
        );
        assert_eq!(row[1], None);
    }

    if search {
        let app = common::connect_to(addr, "crm_user").await;
        let found: Vec<i64> = app
            .query(
                "select id from customers where email = $1 and id = any($2)",
                &[&CUSTOMERS[1][1], &ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            found,
            [ids[1]],
            "equality search on the deterministic e-mail"
        );
    }

    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let stored = Cluster::shared().psql_direct(&format!(
        "select full_name, email, phone, national_id, address from customers \
         where id in ({list})"
    ));
    let values: Vec<&str> = stored.lines().flat_map(|l| l.split('|')).collect();
    assert_eq!(values.len(), ids.len() * 5, "{stored}");
    for value in values {
        assert!(value.starts_with("pgv1:"), "not ciphertext: {value}");
    }
    for customer in CUSTOMERS {
        for value in customer {
            assert!(
                !stored.contains(value),
                "plaintext in the database: {value}"
            );
        }
    }
}

/// A keyring of the SM suite under a token's key: PKCS#11 has no SM4
/// mechanism (SoftHSM2 offers none), so the token's AES key wraps the SM
/// keys, each bound to its suite; the keyring opens through the token.
#[test]
fn pkcs11_an_sm_keyring_is_wrapped_by_the_tokens_key() {
    let token = Token::new("pgveil-sm");
    let setup = Setup::new(Some(&token));
    let config = setup.config(
        "pgveil.toml",
        &listen_addr(),
        &token.section("pgveil-master"),
    );
    let config = config.to_str().unwrap();
    let out = setup.pgveil(&[
        "keys",
        "init",
        "--config",
        config,
        "--create-key",
        "--suite",
        "sm",
    ]);
    let said = assert_ran("keys init --suite sm", &out);
    assert!(said.contains("suite sm"), "{said}");
    let keyring = std::fs::read_to_string(&setup.keyring).unwrap();
    assert!(
        keyring.contains("custody = \"pkcs11\"") && keyring.contains("\nsuite = \"sm\"\n"),
        "{keyring}"
    );
    assert_ran(
        "keys rotate",
        &setup.pgveil(&["keys", "rotate", "--config", config]),
    );
    // Opened through the token: the audit key is SM2's.
    let out = setup.pgveil(&["audit", "public-key", "--config", config]);
    let public = assert_ran("audit public-key", &out);
    assert!(public.starts_with("sm2:"), "{public}");
    let listed = assert_ran(
        "keys list",
        &setup.pgveil(&["keys", "list", "--keyring", setup.keyring.to_str().unwrap()]),
    );
    assert!(
        listed.lines().skip(1).all(|line| line.contains(" sm ")),
        "{listed}"
    );
}

#[tokio::test]
async fn pkcs11_the_crm_served_with_the_master_key_in_a_token() {
    let token = Token::new("pgveil-crm");
    let setup = Setup::new(Some(&token));
    let listen = listen_addr();
    let config = setup.config("pgveil.toml", &listen, &token.section("pgveil-master"));

    // The key must exist unless --create-key.
    let out = setup.pgveil(&["keys", "init", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    assert!(
        said.contains("master key provider pkcs11")
            && said.contains("no AES key labelled \"pgveil-master\""),
        "{said}"
    );
    let started = Instant::now();
    let out = setup.pgveil(&[
        "keys",
        "init",
        "--config",
        config.to_str().unwrap(),
        "--create-key",
    ]);
    let said = assert_ran("keys init --create-key", &out);
    assert!(said.contains("created keyring"), "{said}");
    let keyring = std::fs::read_to_string(&setup.keyring).unwrap();
    assert!(keyring.contains("custody = \"pkcs11\""), "{keyring}");

    let mut served = setup.serve(&config, &listen);
    let ids = write_customers(&served.addr, "custody-pkcs11").await;
    check_reads(&served.addr, &ids, true).await;
    // A rotation through the token, then a reload: what is stored still
    // reads, and new values are written under the new versions.
    let out = setup.pgveil(&["keys", "rotate", "--config", config.to_str().unwrap()]);
    assert_ran("keys rotate", &out);
    served.hangup("reloaded on SIGHUP");
    check_reads(&served.addr, &ids, false).await;
    let rotated = write_customers(&served.addr, "custody-pkcs11").await;
    check_reads(&served.addr, &rotated, true).await;
    served.stop();
    eprintln!("pkcs11 workload: {:?}", started.elapsed());

    // A wrong PIN: refused at start, saying so.
    let mut wrong_pin = setup.command(&["serve", "--config", config.to_str().unwrap()]);
    wrong_pin.env("TEST_PKCS11_PIN", "0000");
    let out = wrong_pin.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    assert!(
        said.contains("master key provider pkcs11") && said.contains("refused the PIN"),
        "{said}"
    );
    assert!(!said.contains(PIN), "{said}");

    // A wrong key label, and a key that exists but is not the keyring's.
    let other = setup.config("other-key.toml", &listen, &token.section("no-such-key"));
    let said = setup.serve_refused(&other);
    assert!(
        said.contains("no AES key labelled \"no-such-key\"") && said.contains("pgveil-crm"),
        "{said}"
    );
    let out = setup.pgveil(&[
        "keys",
        "init",
        "--config",
        other.to_str().unwrap(),
        "--keyring",
        setup
            .dir
            .path()
            .join("other-keyring.toml")
            .to_str()
            .unwrap(),
        "--create-key",
    ]);
    assert_ran("keys init with another key", &out);
    let said = setup.serve_refused(&other);
    assert!(
        said.contains("the master key does not match keyring") && said.contains("no-such-key"),
        "{said}"
    );

    // A token or module that cannot be reached: refused, naming them.
    let section = token.section("pgveil-master");
    let missing_token = setup.config(
        "missing-token.toml",
        &listen,
        &section.replace("pgveil-crm", "absent-token"),
    );
    let said = setup.serve_refused(&missing_token);
    assert!(
        said.contains("master key provider pkcs11")
            && said.contains("no token is labelled \"absent-token\""),
        "{said}"
    );
    let missing_module = setup.config(
        "missing-module.toml",
        &listen,
        &section.replace(MODULE, "/nonexistent/libpkcs11.so"),
    );
    let said = setup.serve_refused(&missing_module);
    assert!(
        said.contains("master key provider pkcs11 (module /nonexistent/libpkcs11.so")
            && said.contains("cannot load the module"),
        "{said}"
    );

    // Without the token's configuration the master key is nowhere.
    let out = setup
        .command(&["serve", "--config", config.to_str().unwrap()])
        .env("SOFTHSM2_CONF", token.dir.path().join("absent.conf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn aws_kms_the_crm_served_with_the_master_key_in_kms() {
    let mut moto = Moto::start();
    let key_arn = moto.create_key();
    let setup = Setup::new(None);
    let listen = listen_addr();
    let config = setup.config(
        "pgveil.toml",
        &listen,
        &kms_section(&key_arn, &moto.endpoint),
    );
    let started = Instant::now();
    let out = setup.pgveil(&["keys", "init", "--config", config.to_str().unwrap()]);
    let said = assert_ran("keys init", &out);
    assert!(said.contains("aws-kms key arn:aws:kms:"), "{said}");
    let keyring = std::fs::read_to_string(&setup.keyring).unwrap();
    assert!(keyring.contains("custody = \"aws-kms\""), "{keyring}");

    let served = setup.serve(&config, &listen);
    let ids = write_customers(&served.addr, "custody-kms").await;
    check_reads(&served.addr, &ids, true).await;
    eprintln!("aws-kms workload: {:?}", started.elapsed());

    // Another KMS key is not the keyring's: refused clearly.
    let other = moto.create_key();
    let elsewhere = setup.config("other.toml", &listen, &kms_section(&other, &moto.endpoint));
    let said = setup.serve_refused(&elsewhere);
    // KMS answers IncorrectKeyException, which pgveil reads as a wrong key;
    // moto answers AccessDeniedException, which pgveil reports as it is.
    assert!(
        said.contains("master key provider aws-kms")
            && said.contains(&other)
            && (said.contains("the master key does not match keyring")
                || said.contains("Decrypt failed: AccessDeniedException")),
        "{said}"
    );

    // KMS unreachable at a reload: refused and logged, the keys in force stay.
    moto.stop();
    served.hangup("reload refused");
    let log = served.log();
    assert!(
        log.contains("master key provider aws-kms") && log.contains(&key_arn),
        "{log}"
    );
    check_reads(&served.addr, &ids, true).await;
    drop(served);

    // ... and at start: refused with exit 2, naming the provider and the error.
    let said = setup.serve_refused(&config);
    assert!(
        said.contains("master key provider aws-kms")
            && said.contains(&moto.endpoint)
            && said.contains("Decrypt failed"),
        "{said}"
    );

    // No credentials: refused before any call.
    let out = setup
        .command(&["keys", "rotate", "--config", config.to_str().unwrap()])
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no AWS credentials"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn rewrap_moves_a_keyring_from_a_key_file_into_a_token() {
    let token = Token::new("pgveil-rewrap");
    let setup = Setup::new(Some(&token));
    let master_file = setup.dir.path().join("master.key");
    let out = setup.pgveil(&["keys", "new-master"]);
    common::write_private(&master_file, assert_ran("keys new-master", &out));
    let listen = listen_addr();
    let with_file = setup.config(
        "file.toml",
        &listen,
        &format!("master_key_file = {master_file:?}\n"),
    );
    let out = setup.pgveil(&["keys", "init", "--config", with_file.to_str().unwrap()]);
    assert_ran("keys init", &out);
    let mut served = setup.serve(&with_file, &listen);
    let ids = write_customers(&served.addr, "custody-rewrap").await;
    check_reads(&served.addr, &ids, true).await;
    served.stop();

    // This time the PIN is in a file only its owner can read.
    let pin_file = setup.dir.path().join("pkcs11.pin");
    common::write_private(&pin_file, format!("{PIN}\n"));
    let section = token.section("moved-master").replace(
        "pin_env = \"TEST_PKCS11_PIN\"",
        &format!("pin_file = {pin_file:?}"),
    );
    let with_token = setup.config("token.toml", &listen, &section);
    let out = setup.pgveil(&[
        "keys",
        "rewrap",
        "--master-key-file",
        master_file.to_str().unwrap(),
        "--keyring",
        setup.keyring.to_str().unwrap(),
        "--new-config",
        with_token.to_str().unwrap(),
        "--create-key",
    ]);
    let said = assert_ran("keys rewrap into the token", &out);
    assert!(said.contains("under pkcs11"), "{said}");
    {
        // A PIN file others can read is refused, unread.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let said = setup.serve_refused(&with_token);
        assert!(
            said.contains("master key provider pkcs11")
                && said.contains("PKCS#11 PIN file")
                && said.contains("chmod 600"),
            "{said}"
        );
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The master key can now leave the disk: the token alone opens it.
    std::fs::remove_file(&master_file).unwrap();
    let served = setup.serve(&with_token, &listen);
    check_reads(&served.addr, &ids, true).await;
    drop(served);

    // A file key no longer opens it, and says why.
    let (_, text) = pgveil::protect::crypto::MasterKey::generate().unwrap();
    common::write_private(&master_file, text.as_bytes());
    let said = setup.serve_refused(&with_file);
    assert!(said.contains("is wrapped by a pkcs11 master key"), "{said}");
}
