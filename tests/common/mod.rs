//! Test harness: throwaway PostgreSQL clusters and in-process pgveil proxies.
//!
//! A cluster is created with `initdb` (as the `postgres` OS user when the
//! tests run as root), scram-sha-256 authentication and a random free port.
//! A watchdog process stops it and removes its directory when the test
//! binary exits, however it exits.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use pgveil::config::Config;
use pgveil::server::Server;

/// The superuser's name and password in every test cluster.
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "super-secret";

/// Login roles created in every cluster: (name, password, pg_hba method).
pub const ROLES: &[(&str, &str, &str)] = &[
    ("scram_user", "scram-pw", "scram-sha-256"),
    ("md5_user", "md5-pw", "md5"),
    ("clear_user", "clear-pw", "password"),
    ("trust_user", "", "trust"),
];

/// A running PostgreSQL cluster owned by this test process.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// The cluster shared by all tests of this binary.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(Cluster::start)
    }

    /// A new cluster of its own, for tests that stop or restart it.
    pub fn start() -> Cluster {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let bin = server_bin_dir();
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pgveil-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Cluster {
            port: free_port(),
            dir,
            bin,
        };
        cluster.init();
        cluster.watch();
        cluster.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log"));
        cluster.create_roles();
        cluster
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Address of the server itself.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn init(&self) {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        chown_to_postgres(&self.dir);
        let initdb = self.bin.join("initdb");
        let out = as_postgres(&initdb)
            .args(["-D"])
            .arg(self.data())
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert_success("initdb", &out);
        let mut hba = String::new();
        for (role, _, method) in ROLES {
            hba.push_str(&format!("host all {role} 127.0.0.1/32 {method}\n"));
        }
        hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(self.data().join("pg_hba.conf"), hba).unwrap();
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            self.port,
            self.dir.display()
        );
        let mut existing = std::fs::read_to_string(self.data().join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(self.data().join("postgresql.conf"), existing).unwrap();
        chown_to_postgres(&self.dir);
    }

    /// Starts a process that stops the cluster and removes its directory
    /// once this test process is gone.
    fn watch(&self) {
        let stop = format!(
            "{} stop -m immediate -D '{}'",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        );
        let stop = if is_root() {
            format!("runuser -u postgres -- {stop}")
        } else {
            stop
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        use std::os::unix::process::CommandExt;
        // The watchdog outlives this process on purpose: it is never waited on.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start cluster watchdog");
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&str>) {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.args(args);
        if let Some(log) = log {
            cmd.arg(self.dir.join(log));
        }
        cmd.arg("-D").arg(self.data());
        let out = cmd.output().expect("run pg_ctl");
        assert_success("pg_ctl", &out);
    }

    /// Stops the server (fast mode: sessions are terminated).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"], None);
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn restart(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log"));
    }

    fn create_roles(&self) {
        let mut sql = String::new();
        for (role, password, method) in ROLES {
            let encryption = if *method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            };
            sql.push_str(&format!(
                "SET password_encryption = '{encryption}'; CREATE ROLE {role} LOGIN PASSWORD '{password}';\n"
            ));
        }
        self.psql_direct(&sql);
    }

    /// Runs SQL directly against the server as the superuser.
    pub fn psql_direct(&self, sql: &str) -> String {
        let out = psql(&self.addr(), SUPERUSER, SUPERUSER_PASSWORD, "postgres")
            .args(["-c", sql])
            .output()
            .unwrap();
        assert_success("psql", &out);
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A psql command line for `addr` (`HOST:PORT`), quiet and unaligned.
pub fn psql(addr: &str, user: &str, password: &str, database: &str) -> Command {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", host, "-p", port, "-U", user, "-d", database])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    cmd
}

/// A pgveil proxy running on its own thread and runtime.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts pgveil in front of `cluster` with default settings.
    pub fn start(cluster: &Cluster) -> Proxy {
        Proxy::with_config(Config {
            upstream: cluster.addr(),
            ..test_config()
        })
    }

    /// Starts pgveil with `config` (its `listen` is replaced by a free port).
    pub fn with_config(mut config: Config) -> Proxy {
        config.listen = "127.0.0.1:0".into();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Proxy {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `HOST:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// A tokio-postgres connection string through the proxy.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "host={} port={} user={user} password='{password}' dbname={database} connect_timeout=10",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// Connects as the superuser through the proxy.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_as(SUPERUSER, SUPERUSER_PASSWORD).await
    }

    /// Connects as `user` through the proxy, failing the test on error.
    pub async fn connect_as(&self, user: &str, password: &str) -> tokio_postgres::Client {
        try_connect(&self.url(user, password, "postgres"))
            .await
            .unwrap()
    }

    /// Asks the proxy to shut down and waits until it has.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Test defaults: short timeouts so failures show quickly.
pub fn test_config() -> Config {
    Config {
        shutdown_grace_secs: 2,
        ..Config::default()
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.code().code())
}

fn server_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PGVEIL_PG_BIN") {
        return dir.into();
    }
    for version in ["15", "16", "17", "14", "13"] {
        let dir = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    panic!("PostgreSQL server binaries not found: install postgresql-15 or set PGVEIL_PG_BIN");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(dir: &Path) {
    if is_root() {
        let out = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .output()
            .unwrap();
        assert_success("chown", &out);
    }
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hand-driven protocol client, for what drivers will not send.
pub struct RawClient {
    pub stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects without sending anything.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and logs in as `trust_user`, returning the client after
    /// the first ReadyForQuery and the server's BackendKeyData process id.
    pub async fn login(addr: SocketAddr) -> (RawClient, i32) {
        let mut client = RawClient::connect(addr).await;
        client.send(&startup_packet("trust_user", "postgres")).await;
        let mut pid = 0;
        loop {
            let (tag, body) = client.expect_message().await;
            match tag {
                b'K' => pid = i32::from_be_bytes(body[..4].try_into().unwrap()),
                b'Z' => return (client, pid),
                b'E' => panic!("login failed: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one message; `None` when the connection closes first.
    pub async fn message(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let body = self.buf[5..=len].to_vec();
                    let tag = self.buf[0];
                    self.buf.drain(..=len);
                    return Some((tag, body));
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn expect_message(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(30), self.message())
            .await
            .expect("a message within 30 s")
            .expect("a message before the connection closed")
    }

    /// Reads until the connection closes; returns the ErrorResponse seen,
    /// as (SQLSTATE, message), if any.
    pub async fn error_then_close(&mut self) -> Option<(String, String)> {
        let mut error = None;
        let read = async {
            while let Some((tag, body)) = self.message().await {
                if tag == b'E' {
                    error = Some((error_field(&body, b'C'), error_field(&body, b'M')));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("connection closed within 30 s");
        error
    }
}

/// A field of an ErrorResponse body.
pub fn error_field(body: &[u8], code: u8) -> String {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&code))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

/// A protocol 3.0 StartupMessage.
pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// A typed message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}
