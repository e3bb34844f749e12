//! Ends of sessions and of pgveil itself: the upstream server dying or
//! restarting, graceful shutdown, and the command line.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{query, test_config, Cluster, Proxy, RawClient};
use pgveil::proxy::config::Config;

#[tokio::test]
async fn upstream_restart_mid_session() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster);
    let (mut client, _) = RawClient::login(proxy.addr).await;
    let survivor = proxy.connect().await;
    cluster.stop();
    // The server says why it closes (57P01); pgveil relays that and closes.
    let (code, _) = client.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "57P01");
    assert!(survivor.simple_query("select 1").await.is_err());
    cluster.restart();
    let client = proxy.connect().await;
    let row = client.query_one("select 'back'::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "back");
}

#[tokio::test]
async fn upstream_killed_gives_connection_failure() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster);
    let (mut client, pid) = RawClient::login(proxy.addr).await;
    // SIGKILL: the backend dies without a word.
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, message) = client.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "08006", "{message}");
}

#[tokio::test]
async fn graceful_shutdown_drains_then_closes() {
    let cluster = Cluster::shared();
    let mut proxy = Proxy::with_config(Config {
        upstream: cluster.addr(),
        shutdown_grace_secs: 2,
        ..test_config()
    });
    let addr = proxy.addr;
    let (mut idle, _) = RawClient::login(addr).await;
    let (mut busy, _) = RawClient::login(addr).await;
    busy.send(&query("select pg_sleep(1), 'finished'")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopping = std::thread::spawn(move || proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused during shutdown"
    );
    // The running query finishes within the grace period.
    let mut finished = false;
    while let Some((tag, body)) = busy.message().await {
        finished |= tag == b'D' && body.windows(8).any(|w| w == b"finished");
        if tag == b'Z' {
            break;
        }
    }
    assert!(finished);
    // The idle session is closed after the grace period, with 57P01.
    let (code, _) = idle.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "57P01");
    stopping.join().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(15));
}

fn pgveil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("pgveil-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, key) in [
        ("listen = \"not an address\"\n", "listen"),
        ("upstream = \"nohost\"\n", "upstream"),
        ("startup_timeout_secs = \"soon\"\n", "startup_timeout_secs"),
        ("no_such_key = 1\n", "no_such_key"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = pgveil()
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    let out = pgveil()
        .args([
            "serve",
            "--listen",
            "nowhere",
            "--upstream",
            "127.0.0.1:5432",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_with_flags_only_then_sigterm() {
    let cluster = Cluster::shared();
    let port = common::free_port();
    let child = pgveil()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &cluster.addr(),
        ])
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "pgveil did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = common::psql(&addr, "scram_user", "scram-pw", "postgres")
        .args(["-c", "select 'via the binary'"])
        .output()
        .unwrap();
    common::assert_success("psql", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "via the binary"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pgveil exit status {}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    // JSON lines naming the session's user; never the query text.
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("scram_user")),
        "{log}"
    );
    assert!(
        !log.contains("via the binary"),
        "query text leaked into the log"
    );
}

#[test]
fn demo_serves_the_sample_crm_then_cleans_up() {
    use std::io::{BufRead, BufReader};
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = pgveil()
        .args(["demo", "--listen", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut direct_port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("user=postgres") {
            direct_port = line
                .split("port=")
                .nth(1)
                .and_then(|p| p.split(' ').next())
                .map(str::to_owned);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let direct_port = direct_port.expect("the direct connection line");
    let read = |addr: &str, user: &str| {
        let out = common::psql(addr, user, "pgveil-demo", "postgres")
            .args([
                "-c",
                "select email from customers where full_name is not null order by id limit 1",
            ])
            .output()
            .unwrap();
        common::assert_success("psql", &out);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(read(&addr, "crm_user"), "zhang.wei@example.com");
    assert_eq!(read(&addr, "support_user"), "z***@example.com");
    let out = common::psql(
        &format!("127.0.0.1:{direct_port}"),
        "postgres",
        "pgveil-demo",
        "postgres",
    )
    .args(["-c", "select email from customers order by id limit 1"])
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pgv1:"));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.iter().any(|l| l.contains("removed its files")),
        "{rest:?}"
    );
}

/// A policy, keyring and master key file in a fresh directory; returns the
/// directory and the config file naming them.
fn protected_setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("pgveil-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.toml");
    let out = pgveil().args(["keys", "new-master"]).output().unwrap();
    common::write_private(&dir.join("master.key"), &out.stdout);
    let out = pgveil()
        .args(["keys", "init", "--policy"])
        .arg(&policy)
        .arg("--keyring")
        .arg(dir.join("keyring.toml"))
        .arg("--master-key-file")
        .arg(dir.join("master.key"))
        .output()
        .unwrap();
    common::assert_success("keys init", &out);
    let config = dir.join("pgveil.toml");
    std::fs::write(
        &config,
        format!(
            "policy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n",
            policy,
            dir.join("keyring.toml"),
            dir.join("master.key")
        ),
    )
    .unwrap();
    (dir, config)
}

/// `pgveil serve` with `config`, expected to refuse to start: its error
/// output. A serve that starts instead is stopped and the test fails,
/// rather than waiting on it for ever.
fn refused_start(config: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut child = pgveil()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env_remove("PGVEIL_MASTER_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pgveil serve started with {} instead of refusing",
                config.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{status:?}: {stderr}");
    stderr
}

#[test]
fn serve_refuses_to_start_without_the_right_keys_or_with_a_bad_policy() {
    let (dir, config) = protected_setup("start");
    // Wrong master key.
    let right = std::fs::read(dir.join("master.key")).unwrap();
    let out = pgveil().args(["keys", "new-master"]).output().unwrap();
    common::write_private(&dir.join("master.key"), &out.stdout);
    let stderr = refused_start(&config, &[]);
    assert!(stderr.contains("master key does not match"), "{stderr}");
    common::write_private(&dir.join("master.key"), &right);
    // The right key, in a file others can read: refused, as ssh refuses
    // such a private key, with what to do.
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("master.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stderr = refused_start(&config, &[]);
        assert!(
            stderr.contains("can be read by group or others (mode 0644)")
                && stderr.contains(&format!("chmod 600 {}", key.display())),
            "{stderr}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // No master key at all.
    let text = std::fs::read_to_string(&config).unwrap();
    let without = dir.join("no-master.toml");
    std::fs::write(
        &without,
        text.lines()
            .filter(|l| !l.starts_with("master_key_file"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let stderr = refused_start(&without, &[]);
    assert!(stderr.contains("PGVEIL_MASTER_KEY"), "{stderr}");
    // A policy column whose domain has no key: a policy with a new column.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[column]]\ntable = \"customers\"\ncolumn = \"email\"\nmask = \"nonsense\"\n",
    )
    .unwrap();
    let with_bad = dir.join("bad-policy.toml");
    std::fs::write(
        &with_bad,
        text.replace(
            &format!(
                "{:?}",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.toml")
            ),
            &format!("{bad:?}"),
        ),
    )
    .unwrap();
    let stderr = refused_start(&with_bad, &[]);
    assert!(
        stderr.contains("bad.toml:4"),
        "the file and line of the bad mask: {stderr}"
    );
    let new_column = dir.join("new.toml");
    std::fs::write(
        &new_column,
        "[[column]]\ntable = \"orders\"\ncolumn = \"note\"\n",
    )
    .unwrap();
    let with_new = dir.join("new-policy.toml");
    std::fs::write(
        &with_new,
        text.replace(
            &format!(
                "{:?}",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.toml")
            ),
            &format!("{new_column:?}"),
        ),
    )
    .unwrap();
    let stderr = refused_start(&with_new, &[]);
    assert!(
        stderr.contains("public.orders.note") && stderr.contains("keys init"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The runtime threads of process `pid` once at least `expected` of them
/// carry their name (each thread names itself as it starts running, so
/// under load a worker can still have the process's name when pgveil says
/// it is ready), or after ten seconds.
fn named_runtime_threads(pid: u32, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let threads = runtime_threads(pid);
        if threads >= expected || Instant::now() > deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The session threads of process `pid`, by the name pgveil gives them
/// (`pgveil-session-N`, cut to 15 bytes by the kernel).
fn runtime_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|c| c.starts_with("pgveil-session"))
        })
        .count()
}

#[test]
fn worker_threads_sets_the_session_threads() {
    let dir = tempfile::tempdir().unwrap();
    for workers in [1, 3] {
        let config = dir.path().join(format!("w{workers}.toml"));
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:0\"\nworker_threads = {workers}\n"),
        )
        .unwrap();
        let mut child = pgveil()
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready by its own word: a probe connection would start a session,
        // and with it a blocking thread to resolve the upstream address.
        let log = std::io::BufReader::new(child.stderr.take().unwrap());
        let ready = std::io::BufRead::lines(log)
            .any(|line| line.unwrap().contains("accepting connections"));
        assert!(ready, "pgveil did not start");
        // The session threads, started before the listener is ready.
        let threads = named_runtime_threads(child.id(), workers);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(threads, workers);
    }
}

#[test]
fn keys_list_shows_every_key_and_no_secret() {
    let (dir, _config) = protected_setup("list");
    let keyring = dir.join("keyring.toml");
    let policy =
        pgveil::protect::policy::Policy::load(&[
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.toml")
        ])
        .unwrap();
    // No master key is needed: none is in the environment or named.
    let table = pgveil()
        .args(["keys", "list", "--keyring"])
        .arg(&keyring)
        .env_remove("PGVEIL_MASTER_KEY")
        .output()
        .unwrap();
    common::assert_success("keys list", &table);
    let table = String::from_utf8(table.stdout).unwrap();
    let json = pgveil()
        .args(["keys", "list", "--format", "json", "--keyring"])
        .arg(&keyring)
        .env_remove("PGVEIL_MASTER_KEY")
        .output()
        .unwrap();
    common::assert_success("keys list --format json", &json);
    let rows: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every domain of the policy, and the audit keys, at version 1, current.
    let mut domains = policy.domains();
    domains.push("pgveil.audit".into());
    for domain in &domains {
        let row = rows
            .iter()
            .find(|r| r["domain"] == domain.as_str() && r["kind"] == "data")
            .unwrap_or_else(|| panic!("{domain} not listed: {rows:?}"));
        assert_eq!(row["version"], 1, "{row}");
        assert_eq!(row["current"], true, "{row}");
        assert!(table
            .lines()
            .any(|l| l.starts_with(domain.as_str()) && l.ends_with("current")));
    }
    assert!(rows
        .iter()
        .any(|r| r["domain"] == "pgveil.audit" && r["kind"] == "signing"));
    assert_eq!(rows.len(), domains.len() + 1, "{rows:?}");
    // No key material and no master key appears in either form.
    let file = std::fs::read_to_string(&keyring).unwrap();
    let master = std::fs::read_to_string(dir.join("master.key")).unwrap();
    let secrets: Vec<&str> = file
        .lines()
        .filter_map(|l| l.strip_prefix("wrapped = "))
        .chain(
            file.lines()
                .filter_map(|l| l.strip_prefix("master_check = ")),
        )
        .map(|v| v.trim_matches('"'))
        .chain([master.trim()])
        .collect();
    assert!(secrets.len() > domains.len(), "{file}");
    for secret in secrets {
        assert!(!table.contains(secret) && !rows.iter().any(|r| r.to_string().contains(secret)));
    }
    // A file that is not a keyring: a clear error, exit 2 (as every `keys` error).
    let out = pgveil()
        .args(["keys", "list", "--keyring"])
        .arg(dir.join("pgveil.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pgveil keys: keyring") && stderr.contains("format"),
        "{stderr}"
    );
}

#[test]
fn keys_rewrap_moves_the_keyring_to_a_new_master_key_and_no_value_changes() {
    use pgveil::protect::crypto::{MasterKey, Mode};
    use pgveil::protect::keyring::Keyring;
    let (dir, _config) = protected_setup("rewrap");
    let keyring = dir.join("keyring.toml");
    let old_key = dir.join("master.key");
    let list = || {
        let out = pgveil()
            .args(["keys", "list", "--format", "json", "--keyring"])
            .arg(&keyring)
            .output()
            .unwrap();
        common::assert_success("keys list", &out);
        String::from_utf8(out.stdout).unwrap()
    };
    let before_list = list();
    let before_file = std::fs::read_to_string(&keyring).unwrap();
    let domain = "public.customers.email";
    let stored = Keyring::load(&keyring, &MasterKey::from_file(&old_key).unwrap())
        .unwrap()
        .encrypt(domain, Mode::Randomized, b"li.wei@example.cn")
        .unwrap();
    let new_key = dir.join("new-master.key");
    let out = pgveil().args(["keys", "new-master"]).output().unwrap();
    common::write_private(&new_key, &out.stdout);
    let rewrap = |current: &std::path::Path| {
        pgveil()
            .args(["keys", "rewrap", "--keyring"])
            .arg(&keyring)
            .arg("--master-key-file")
            .arg(current)
            .arg("--new-master-key-file")
            .arg(&new_key)
            .env_remove("PGVEIL_MASTER_KEY")
            .output()
            .unwrap()
    };

    // With the wrong current key: refused, the file untouched.
    let out = rewrap(&new_key);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("master key does not match"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&keyring).unwrap(), before_file);

    let out = rewrap(&old_key);
    common::assert_success("keys rewrap", &out);
    let after_file = std::fs::read_to_string(&keyring).unwrap();
    // Every wrapped key and the master check changed; ids, versions and
    // creation times did not.
    let wrapped = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("wrapped = ") || l.starts_with("master_check = "))
            .map(str::to_owned)
            .collect()
    };
    let (old_wrapped, new_wrapped) = (wrapped(&before_file), wrapped(&after_file));
    assert_eq!(old_wrapped.len(), new_wrapped.len());
    assert!(
        old_wrapped.iter().all(|w| !new_wrapped.contains(w)),
        "{after_file}"
    );
    assert_eq!(list(), before_list);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keyring).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // The new key opens it and reads what was stored before; the old no
    // longer does.
    let reopened = Keyring::load(&keyring, &MasterKey::from_file(&new_key).unwrap()).unwrap();
    assert_eq!(
        reopened.decrypt(domain, stored).unwrap().as_slice(),
        b"li.wei@example.cn"
    );
    let err = Keyring::load(&keyring, &MasterKey::from_file(&old_key).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("master key does not match"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
