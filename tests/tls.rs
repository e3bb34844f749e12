//! TLS on both legs with real clients and a real PostgreSQL 15 whose
//! `ssl = on`: psql and tokio-postgres to pgveil under TLS (verify-full,
//! client certificates, `mode = "require"`), pgveil to the server under TLS
//! (each `[upstream_tls]` mode, a wrong CA, a wrong host name, `prefer`
//! falling back), SCRAM across both legs, cancel requests, bytes injected
//! after an SSLRequest, configuration errors and a SIGHUP that swaps the
//! certificate. The certificates are made here with rcgen.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{psql, sqlstate, test_config, write_private, Proxy, RawClient, ROLES};
use pgveil::proxy::config::{ClientTlsMode, Config, TlsConfig, UpstreamTlsConfig, UpstreamTlsMode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const SUPERUSER_PASSWORD: &str = "super-secret";

// ---------------------------------------------------------------- PKI

/// A certificate and its key, as PEM files.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA, able to sign certificates.
struct Ca {
    cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).unwrap();
        Ca {
            cert: path,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names) with common name `cn`, and its
    /// key (mode 0600), as `file`.crt and `file`.key.
    fn sign(&self, dir: &Path, file: &str, cn: &str, names: &[&str]) -> Pair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        write_private(&pair.key, key.serialize_pem());
        pair
    }
}

/// Everything the tests are signed with.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    /// A CA nobody trusts.
    other_ca: Ca,
    /// For `localhost` only (no IP address): pgveil's and the server's.
    server: Pair,
    /// A client certificate from `ca`.
    client: Pair,
    /// A client certificate from `other_ca`.
    stranger: Pair,
    /// pgveil's client certificate to the server, for the role `cert_user`.
    cert_user: Pair,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pgveil-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new(&dir, "test-ca");
        let other_ca = Ca::new(&dir, "other-ca");
        Pki {
            server: ca.sign(&dir, "server", "localhost", &["localhost"]),
            client: ca.sign(&dir, "client", "scram_user", &[]),
            stranger: other_ca.sign(&dir, "stranger", "scram_user", &[]),
            cert_user: ca.sign(&dir, "cert_user", "cert_user", &[]),
            dir,
            ca,
            other_ca,
        }
    })
}

// ---------------------------------------------------------------- cluster

/// A PostgreSQL 15 with `ssl = on` (the `localhost` certificate of the
/// test CA), the test roles, `cert_user` (certificate login, TLS only)
/// and `tls_only` (SCRAM, refused without TLS).
fn cluster() -> &'static pgveil::ops::cluster::Cluster {
    static CLUSTER: OnceLock<pgveil::ops::cluster::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut hba = vec![
            "hostssl all cert_user 127.0.0.1/32 cert".to_owned(),
            "hostnossl all tls_only 127.0.0.1/32 reject".to_owned(),
        ];
        hba.extend(
            ROLES
                .iter()
                .map(|(role, _, method)| format!("host all {role} 127.0.0.1/32 {method}")),
        );
        let options = pgveil::ops::cluster::Options {
            superuser: ("postgres".into(), SUPERUSER_PASSWORD.into()),
            hba,
        };
        let cluster = pgveil::ops::cluster::Cluster::start(&options).unwrap();
        let pki = pki();
        let files = [
            (&pki.server.cert, "server.crt"),
            (&pki.server.key, "server.key"),
            (&pki.ca.cert, "ca.crt"),
        ];
        for (from, to) in files {
            let to = cluster.dir.join(to);
            std::fs::copy(from, &to).unwrap();
            if is_root() {
                run("chown", &["postgres", to.to_str().unwrap()]);
            }
        }
        let dir = cluster.dir.display();
        let mut sql = format!(
            "ALTER SYSTEM SET ssl = on; ALTER SYSTEM SET ssl_cert_file = '{dir}/server.crt'; \
             ALTER SYSTEM SET ssl_key_file = '{dir}/server.key'; \
             ALTER SYSTEM SET ssl_ca_file = '{dir}/ca.crt'; SELECT pg_reload_conf();\n\
             CREATE ROLE cert_user LOGIN; CREATE ROLE tls_only LOGIN PASSWORD 'tls-pw';\n"
        );
        for (role, password, method) in ROLES {
            let encryption = if *method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            };
            sql.push_str(&format!(
                "SET password_encryption = '{encryption}'; \
                 CREATE ROLE {role} LOGIN PASSWORD '{password}';\n"
            ));
        }
        // Each statement its own -c: ALTER SYSTEM runs outside a
        // transaction.
        let mut cmd = psql(&cluster.addr(), "postgres", SUPERUSER_PASSWORD, "postgres");
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            cmd.args(["-c", statement]);
        }
        let out = cmd.output().unwrap();
        common::assert_success("psql", &out);
        // The reload is asynchronous: wait until the server speaks TLS.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = psql(&cluster.addr(), "postgres", SUPERUSER_PASSWORD, "postgres")
                .env("PGSSLMODE", "require")
                .args(["-c", "select 1"])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "ssl never came on: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    common::assert_success(program, &out);
}

/// The cluster's port.
fn server_port() -> u16 {
    cluster().port
}

// ---------------------------------------------------------------- pgveil

fn client_tls(mode: ClientTlsMode, client_ca: Option<&Path>) -> TlsConfig {
    TlsConfig {
        cert: pki().server.cert.clone(),
        key: pki().server.key.clone(),
        client_ca: client_ca.map(Path::to_path_buf),
        mode,
    }
}

fn upstream_tls(mode: UpstreamTlsMode, ca: Option<&Path>) -> UpstreamTlsConfig {
    UpstreamTlsConfig {
        mode,
        ca: ca.map(Path::to_path_buf),
        cert: None,
        key: None,
    }
}

/// pgveil in front of the TLS cluster, reached as `upstream_host`.
fn proxy(
    upstream_host: &str,
    tls: Option<TlsConfig>,
    upstream: Option<UpstreamTlsConfig>,
) -> Proxy {
    Proxy::with_config(Config {
        upstream: format!("{upstream_host}:{}", server_port()),
        tls,
        upstream_tls: upstream,
        ..test_config()
    })
}

/// `localhost:PORT` of a proxy, the name its certificate is for.
fn by_name(proxy: &Proxy) -> String {
    format!("localhost:{}", proxy.addr.port())
}

/// psql through `addr` as `user`, with libpq settings from `env`, running
/// `sql`.
fn psql_with(addr: &str, user: &str, password: &str, env: &[(&str, &str)], sql: &str) -> Output {
    let mut cmd = psql(addr, user, password, "postgres");
    cmd.env("PGSSLMODE", "disable")
        .env("PGGSSENCMODE", "disable");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.args(["-c", sql]).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether the server side of the session (pgveil to PostgreSQL) is TLS.
const UPSTREAM_SSL: &str = "select ssl::text from pg_stat_ssl where pid = pg_backend_pid()";

// ---------------------------------------------------------------- tokio-postgres

/// A rustls client trusting `ca`, with a client certificate if given.
fn rustls_client(ca: &Path, cert: Option<&Pair>) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(pair) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&pair.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&pair.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Connects with tokio-postgres under TLS (verify-full against the test
/// CA, host `localhost`), with `extra` settings.
async fn tls_connect(
    proxy: &Proxy,
    user: &str,
    password: &str,
    extra: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let url = format!(
        "host=localhost port={} user={user} password='{password}' dbname=postgres \
         sslmode=require connect_timeout=10 {extra}",
        proxy.addr.port()
    );
    let (client, connection) =
        tokio_postgres::connect(&url, rustls_client(&pki().ca.cert, None)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

// ---------------------------------------------------------------- clients to pgveil

#[test]
fn psql_over_tls_with_require_and_verify_full_and_plaintext_still_allowed() {
    let proxy = proxy(
        "127.0.0.1",
        Some(client_tls(ClientTlsMode::Allow, None)),
        None,
    );
    let ca = pki().ca.cert.to_str().unwrap();
    for env in [
        vec![("PGSSLMODE", "require")],
        vec![("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca)],
    ] {
        // SCRAM with libpq's default channel_binding=prefer: the client
        // claims binding, which a plaintext server leg accepts.
        let out = psql_with(
            &by_name(&proxy),
            "scram_user",
            "scram-pw",
            &env,
            "\\conninfo",
        );
        common::assert_success("psql", &out);
        assert!(
            stdout(&out).contains("SSL connection (protocol: TLSv1.3"),
            "{env:?}: {}",
            stdout(&out)
        );
        let out = psql_with(
            &by_name(&proxy),
            "md5_user",
            "md5-pw",
            &env,
            "select current_user",
        );
        common::assert_success("psql", &out);
        assert_eq!(stdout(&out), "md5_user");
    }
    // verify-full checks the name: 127.0.0.1 is not in the certificate.
    let out = psql_with(
        &proxy.addr(),
        "scram_user",
        "scram-pw",
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca)],
        "select 1",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match host name"),
        "{}",
        stderr(&out)
    );
    // A CA the client does not trust fails verify-ca.
    let out = psql_with(
        &by_name(&proxy),
        "scram_user",
        "scram-pw",
        &[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", pki().other_ca.cert.to_str().unwrap()),
        ],
        "select 1",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("certificate verify failed"),
        "{}",
        stderr(&out)
    );
    // mode allow: plaintext still works, and is plaintext.
    let out = psql_with(&proxy.addr(), "scram_user", "scram-pw", &[], "\\conninfo");
    common::assert_success("psql", &out);
    assert!(!stdout(&out).contains("SSL"), "{}", stdout(&out));
}

#[tokio::test]
async fn tokio_postgres_over_tls_and_cancel_across_it() {
    let proxy = proxy(
        "127.0.0.1",
        Some(client_tls(ClientTlsMode::Allow, None)),
        None,
    );
    let client = tls_connect(&proxy, "scram_user", "scram-pw", "")
        .await
        .unwrap();
    let row = client
        .query_one("select current_user::text, $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("scram_user".into(), 42)
    );
    // A cancel request over TLS reaches the server.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(rustls_client(&pki().ca.cert, None))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the cancel ended the sleep")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
}

#[test]
fn client_certificates_are_required_and_checked() {
    let ca = pki().ca.cert.clone();
    let proxy = proxy(
        "127.0.0.1",
        Some(client_tls(ClientTlsMode::Allow, Some(&ca))),
        None,
    );
    let tls = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.to_str().unwrap()),
    ];
    let with = |pair: &Pair| {
        let mut env = tls.to_vec();
        env.push(("PGSSLCERT", pair.cert.to_str().unwrap()));
        env.push(("PGSSLKEY", pair.key.to_str().unwrap()));
        psql_with(
            &by_name(&proxy),
            "scram_user",
            "scram-pw",
            &env,
            "select current_user",
        )
    };
    let good = with(&pki().client);
    common::assert_success("psql with a good certificate", &good);
    assert_eq!(stdout(&good), "scram_user");
    let stranger = with(&pki().stranger);
    assert!(
        !stranger.status.success(),
        "a certificate of another CA got in"
    );
    assert!(stderr(&stranger).contains("SSL"), "{}", stderr(&stranger));
    let none = psql_with(&by_name(&proxy), "scram_user", "scram-pw", &tls, "select 1");
    assert!(!none.status.success(), "no certificate got in");
    assert!(
        stderr(&none).contains("certificate required"),
        "{}",
        stderr(&none)
    );
    // Plaintext is no way around it: the client CA makes sense only with
    // TLS, and mode allow lets plaintext in, as documented.
    let plain = psql_with(&proxy.addr(), "scram_user", "scram-pw", &[], "select 1");
    common::assert_success("plaintext under mode allow", &plain);
}

#[tokio::test]
async fn mode_require_refuses_plaintext_clients_with_28000() {
    let proxy = proxy(
        "127.0.0.1",
        Some(client_tls(ClientTlsMode::Require, None)),
        None,
    );
    let err = common::try_connect(&proxy.url("scram_user", "scram-pw", "postgres"))
        .await
        .expect_err("a plaintext client is refused");
    assert_eq!(sqlstate(&err), Some("28000"), "{err}");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("pgveil requires TLS"),
        "{err}"
    );
    let out = psql_with(&proxy.addr(), "scram_user", "scram-pw", &[], "select 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pgveil requires TLS"),
        "{}",
        stderr(&out)
    );
    // sslmode=prefer takes TLS and gets in; so does tokio-postgres with TLS.
    let out = psql_with(
        &proxy.addr(),
        "scram_user",
        "scram-pw",
        &[("PGSSLMODE", "prefer")],
        "select 7",
    );
    common::assert_success("psql sslmode=prefer", &out);
    assert_eq!(stdout(&out), "7");
    let client = tls_connect(&proxy, "md5_user", "md5-pw", "").await.unwrap();
    client.simple_query("select 1").await.unwrap();
    drop(client);
    // A plaintext cancel request is still relayed, as PostgreSQL relays
    // one: psql 15's Ctrl-C sends it that way, whatever sslmode.
    let sleeper = psql(&proxy.addr(), "scram_user", "scram-pw", "postgres")
        .env("PGSSLMODE", "require")
        .args(["-c", "select pg_sleep(60)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run("kill", &["-INT", &sleeper.id().to_string()]);
    let out = sleeper.wait_with_output().unwrap();
    assert!(
        stderr(&out).contains("canceling statement due to user request"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn gssenc_is_refused_ssl_accepted_and_bytes_after_the_request_refused() {
    let proxy = proxy(
        "127.0.0.1",
        Some(client_tls(ClientTlsMode::Allow, None)),
        None,
    );
    use tokio::io::AsyncReadExt;
    let gssenc = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut raw = RawClient::connect(proxy.addr).await;
    raw.send(&gssenc).await;
    assert_eq!(raw.stream.read_u8().await.unwrap(), b'N');
    raw.send(&ssl).await;
    assert_eq!(raw.stream.read_u8().await.unwrap(), b'S');
    // A StartupMessage sent with the SSLRequest, before its answer, could
    // have been injected: refused in plaintext, never taken as part of the
    // TLS session.
    let mut raw = RawClient::connect(proxy.addr).await;
    let mut both = ssl.to_vec();
    both.extend(common::startup_packet("trust_user", "postgres"));
    raw.send(&both).await;
    let (code, message) = raw.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "08P01");
    assert!(
        message.contains("unencrypted data after SSL request"),
        "{message}"
    );
}

// ---------------------------------------------------------------- pgveil to the server

#[tokio::test]
async fn upstream_verify_full_encrypts_and_checks_the_server() {
    let ca = pki().ca.cert.clone();
    let good = proxy(
        "localhost",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyFull, Some(&ca))),
    );
    let client = good.connect_as("scram_user", "scram-pw").await;
    let row = client.query_one(UPSTREAM_SSL, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "true");
    // A role the server admits only under TLS.
    good.connect_as("tls_only", "tls-pw").await;
    // A plaintext pgveil cannot log that role in: the server leg is what
    // made the difference.
    let plain = proxy("localhost", None, None);
    let err = common::try_connect(&plain.url("tls_only", "tls-pw", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), Some("28000"), "{err}");

    // Wrong CA.
    let other = pki().other_ca.cert.clone();
    let wrong_ca = proxy(
        "localhost",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyFull, Some(&other))),
    );
    let err = common::try_connect(&wrong_ca.url("scram_user", "scram-pw", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), Some("08001"), "{err}");
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.contains("upstream TLS: certificate of the server not signed by a CA"),
        "{message}"
    );
    assert!(message.contains("other-ca.crt"), "{message}");

    // Wrong host name: the certificate is for localhost, not 127.0.0.1.
    let wrong_name = proxy(
        "127.0.0.1",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyFull, Some(&ca))),
    );
    let err = common::try_connect(&wrong_name.url("scram_user", "scram-pw", "postgres"))
        .await
        .err()
        .unwrap();
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.contains("certificate of the server not valid for name \"127.0.0.1\""),
        "{message}"
    );
    // verify-ca checks only the chain: the same name is fine.
    let chain_only = proxy(
        "127.0.0.1",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyCa, Some(&ca))),
    );
    chain_only.connect_as("scram_user", "scram-pw").await;
    let wrong_chain = proxy(
        "127.0.0.1",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyCa, Some(&other))),
    );
    assert!(
        common::try_connect(&wrong_chain.url("scram_user", "scram-pw", "postgres"))
            .await
            .is_err()
    );
    // require without a CA encrypts and checks nothing.
    let require = proxy(
        "127.0.0.1",
        None,
        Some(upstream_tls(UpstreamTlsMode::Require, None)),
    );
    let client = require.connect_as("md5_user", "md5-pw").await;
    let row = client.query_one(UPSTREAM_SSL, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "true");
}

#[tokio::test]
async fn upstream_client_certificate_logs_in_a_cert_role() {
    let ca = pki().ca.cert.clone();
    let mut tls = upstream_tls(UpstreamTlsMode::VerifyFull, Some(&ca));
    tls.cert = Some(pki().cert_user.cert.clone());
    tls.key = Some(pki().cert_user.key.clone());
    let proxy = proxy("localhost", None, Some(tls));
    let client = proxy.connect_as("cert_user", "").await;
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "cert_user");
    // Without the certificate, the server refuses that role.
    let plain = proxy_without_cert();
    let err = common::try_connect(&plain.url("cert_user", "", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), Some("28000"), "{err}");
}

fn proxy_without_cert() -> Proxy {
    let ca = pki().ca.cert.clone();
    proxy(
        "localhost",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyFull, Some(&ca))),
    )
}

#[tokio::test]
async fn prefer_falls_back_to_plaintext_only_when_the_server_says_n() {
    // A pgveil without [tls] answers N, like a server without ssl.
    let plain_hop = proxy("127.0.0.1", None, None);
    let hop = |mode| {
        Proxy::with_config(Config {
            upstream: plain_hop.addr(),
            upstream_tls: Some(upstream_tls(mode, None)),
            ..test_config()
        })
    };
    let prefer = hop(UpstreamTlsMode::Prefer);
    let client = prefer.connect_as("scram_user", "scram-pw").await;
    client.simple_query("select 1").await.unwrap();
    let require = hop(UpstreamTlsMode::Require);
    let err = common::try_connect(&require.url("scram_user", "scram-pw", "postgres"))
        .await
        .err()
        .unwrap();
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.contains("the server does not accept TLS"),
        "{message}"
    );
    // prefer against a server with TLS takes it.
    let prefer = proxy(
        "127.0.0.1",
        None,
        Some(upstream_tls(UpstreamTlsMode::Prefer, None)),
    );
    let client = prefer.connect_as("scram_user", "scram-pw").await;
    let row = client.query_one(UPSTREAM_SSL, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "true");
}

// ---------------------------------------------------------------- SCRAM across both legs

#[tokio::test]
async fn scram_across_two_tls_legs() {
    let ca = pki().ca.cert.clone();
    let proxy = proxy(
        "localhost",
        Some(client_tls(ClientTlsMode::Require, None)),
        Some(upstream_tls(UpstreamTlsMode::VerifyFull, Some(&ca))),
    );
    // A client that does not claim channel binding logs in.
    let client = tls_connect(&proxy, "scram_user", "scram-pw", "channel_binding=disable")
        .await
        .unwrap();
    let row = client.query_one(UPSTREAM_SSL, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "true");
    // A wrong password is still the server's refusal.
    let err = tls_connect(&proxy, "scram_user", "wrong", "channel_binding=disable")
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), Some("28P01"), "{err}");
    // One that claims it (tokio-postgres's and libpq's default, prefer)
    // is told why it cannot, by pgveil, not by a puzzling server error.
    let err = tls_connect(&proxy, "scram_user", "scram-pw", "")
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), Some("08P01"), "{err}");
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.contains("channel binding cannot pass through pgveil"),
        "{message}"
    );
    assert!(message.contains("channel_binding=disable"), "{message}");

    let ca = ca.to_str().unwrap();
    let tls = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env = tls.to_vec();
        env.extend_from_slice(extra);
        psql_with(
            &by_name(&proxy),
            "scram_user",
            "scram-pw",
            &env,
            "select current_user",
        )
    };
    let out = with(&[("PGCHANNELBINDING", "disable")]);
    common::assert_success("psql channel_binding=disable", &out);
    assert_eq!(stdout(&out), "scram_user");
    let out = with(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("channel binding cannot pass through pgveil"),
        "{}",
        stderr(&out)
    );
    // channel_binding=require: libpq refuses by itself, saying the server
    // offered no method with channel binding.
    let out = with(&[("PGCHANNELBINDING", "require")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("channel binding is required, but server did not offer"),
        "{}",
        stderr(&out)
    );
    // md5 and a plaintext client leg are unaffected.
    let out = psql_with(
        &by_name(&proxy),
        "md5_user",
        "md5-pw",
        &tls,
        "select current_user",
    );
    common::assert_success("psql md5", &out);
}

#[tokio::test]
async fn scram_with_a_plaintext_client_and_tls_to_the_server() {
    let ca = pki().ca.cert.clone();
    let proxy = proxy(
        "localhost",
        None,
        Some(upstream_tls(UpstreamTlsMode::VerifyFull, Some(&ca))),
    );
    // psql with its defaults (channel_binding=prefer) over plaintext.
    let out = psql_with(&proxy.addr(), "scram_user", "scram-pw", &[], UPSTREAM_SSL);
    common::assert_success("psql", &out);
    assert_eq!(stdout(&out), "true");
    let client = proxy.connect_as("scram_user", "scram-pw").await;
    // Cancel requests go to the server over TLS too.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the cancel ended the sleep")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
}

// ---------------------------------------------------------------- pgveil serve

/// `pgveil serve` with `config` (TOML); its exit status and stderr, if
/// it exits within 10 s.
fn serve_briefly(config: &str) -> (Option<std::process::ExitStatus>, String) {
    let dir = pki().dir.join(format!("serve-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgveil.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.join("pgveil.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn unusable_certificates_stop_serve_with_exit_2_naming_the_key_and_file() {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let pki = pki();
    let missing = pki.dir.join("missing.crt");
    let (status, log) = serve_briefly(&format!(
        "listen = {listen:?}\n[tls]\ncert = {missing:?}\nkey = {:?}\n",
        pki.server.key
    ));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("tls.cert") && log.contains("missing.crt"),
        "{log}"
    );

    let exposed = pki.dir.join("exposed.key");
    std::fs::copy(&pki.server.key, &exposed).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, log) = serve_briefly(&format!(
        "listen = {listen:?}\n[tls]\ncert = {:?}\nkey = {exposed:?}\n",
        pki.server.cert
    ));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("tls.key") && log.contains("0644") && log.contains("chmod 600"),
        "{log}"
    );

    // A key that is not the certificate's.
    let (status, log) = serve_briefly(&format!(
        "listen = {listen:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
        pki.server.cert, pki.client.key
    ));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("tls.key") && log.contains("does not go with tls.cert"),
        "{log}"
    );

    let (status, log) = serve_briefly(&format!(
        "listen = {listen:?}\n[upstream_tls]\nca = {:?}\n",
        pki.server.key
    ));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(log.contains("upstream_tls.ca"), "{log}");
}

#[test]
fn sighup_swaps_the_certificate_and_keeps_it_when_the_new_one_is_broken() {
    let pki = pki();
    let dir = pki.dir.join("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("live.crt");
    let key = dir.join("live.key");
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    write_private(&key, std::fs::read(&pki.server.key).unwrap());
    let port = common::free_port();
    let config = dir.join("pgveil.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{}\"\n\
             [tls]\ncert = {cert:?}\nkey = {key:?}\nmode = \"require\"\n",
            server_port()
        ),
    )
    .unwrap();
    let log = dir.join("pgveil.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pgveil did not start: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr = format!("localhost:{port}");
    let trusting = |ca: &Path| {
        psql_with(
            &addr,
            "scram_user",
            "scram-pw",
            &[
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", ca.to_str().unwrap()),
                ("PGCHANNELBINDING", "disable"),
            ],
            "select current_user",
        )
    };
    let hangup = |expect: &str| {
        let before = read_log().matches(expect).count();
        run("kill", &["-HUP", &child.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_log().matches(expect).count() == before {
            assert!(Instant::now() < deadline, "no {expect:?}: {}", read_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    common::assert_success("psql, first certificate", &trusting(&pki.ca.cert));
    assert!(!trusting(&pki.other_ca.cert).status.success());

    // The certificate changes to one of the other CA.
    let next = pki.other_ca.sign(&dir, "next", "localhost", &["localhost"]);
    std::fs::copy(&next.cert, &cert).unwrap();
    std::fs::copy(&next.key, &key).unwrap();
    hangup("reloaded on SIGHUP");
    common::assert_success("psql, new certificate", &trusting(&pki.other_ca.cert));
    assert!(
        !trusting(&pki.ca.cert).status.success(),
        "the old certificate is still shown"
    );

    // A broken certificate: refused, the one in force stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    hangup("reload refused");
    assert!(read_log().contains("tls.cert"), "{}", read_log());
    common::assert_success("psql after a refused reload", &trusting(&pki.other_ca.cert));

    // Turning TLS off takes a restart, not a reload.
    std::fs::copy(&next.cert, &cert).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("mode = \"require\"", "mode = \"allow\""),
    )
    .unwrap();
    hangup("restart pgveil to change the rest");
    let plain = psql_with(
        &format!("127.0.0.1:{port}"),
        "scram_user",
        "scram-pw",
        &[],
        "select 1",
    );
    assert!(!plain.status.success(), "mode require must still hold");

    assert!(child.try_wait().unwrap().is_none(), "{}", read_log());
    run("kill", &["-TERM", &child.id().to_string()]);
    assert!(child.wait().unwrap().success(), "{}", read_log());
    assert!(!read_log().contains("scram-pw"), "a password in the log");
}
