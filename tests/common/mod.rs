//! Test harness: throwaway PostgreSQL clusters and in-process pgveil proxies.
//!
//! Clusters come from `pgveil::ops::cluster` (initdb as the `postgres` OS user
//! when running as root, scram-sha-256, a random free port, a watchdog that
//! removes them when the test binary exits); this harness adds one login
//! role per authentication method.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use pgveil::proxy::config::Config;
use pgveil::proxy::server::Server;

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

/// A running PostgreSQL cluster with the test roles.
pub struct Cluster {
    inner: pgveil::ops::cluster::Cluster,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// The cluster shared by all tests of this binary.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(Cluster::start)
    }

    /// A new cluster of its own, for tests that stop or restart it.
    pub fn start() -> Cluster {
        let hba = ROLES
            .iter()
            .map(|(role, _, method)| format!("host all {role} 127.0.0.1/32 {method}"))
            .collect();
        let options = pgveil::ops::cluster::Options {
            superuser: (SUPERUSER.into(), SUPERUSER_PASSWORD.into()),
            hba,
        };
        let cluster = Cluster {
            inner: pgveil::ops::cluster::Cluster::start(&options)
                .expect("start a PostgreSQL cluster"),
        };
        cluster.create_roles();
        cluster
    }

    /// Address of the server itself.
    pub fn addr(&self) -> String {
        self.inner.addr()
    }

    /// The cluster's directory: data files, WAL and server log.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    /// Stops the server (fast mode: sessions are terminated).
    pub fn stop(&self) {
        self.inner.stop().unwrap();
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn restart(&self) {
        self.inner.restart().unwrap();
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
    /// The admin listener's address, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
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
    pub fn with_config(config: Config) -> Proxy {
        Proxy::with_veil(config, None)
    }

    /// Starts pgveil protecting the columns of `veil`.
    pub fn with_veil(
        config: Config,
        veil: Option<pgveil::protect::protection::Protection>,
    ) -> Proxy {
        Proxy::with_audit(config, veil, None)
    }

    /// Starts pgveil protecting the columns of `veil`, recording to the
    /// audit log `audit` describes, if given.
    pub fn with_audit(
        mut config: Config,
        veil: Option<pgveil::protect::protection::Protection>,
        audit: Option<(
            pgveil::audit::AuditConfig,
            std::sync::Arc<pgveil::audit::AuditKeys>,
        )>,
    ) -> Proxy {
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
                let mut server = Server::bind(config, veil).await.unwrap();
                if let Some((audit, keys)) = audit {
                    let (handle, _writer) = pgveil::audit::AuditSink::start(&audit, keys).unwrap();
                    server = server.with_audit(handle, &audit);
                }
                addr_tx
                    .send((server.local_addr().unwrap(), server.admin_addr()))
                    .unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let (addr, admin) = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Proxy {
            addr,
            admin,
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

/// The rows of a simple query's answer, as text.
pub fn simple_rows(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Connects through the proxy and passes the connection's asynchronous
/// messages (notices, notifications) to the returned receiver.
pub async fn connect_with_messages(
    proxy: &Proxy,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
) {
    use futures_util::StreamExt;
    let url = proxy.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres");
    let (client, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            let _ = tx.send(message);
        }
    });
    (client, rx)
}

/// A connection straight to the shared cluster's PostgreSQL, as the
/// superuser.
pub async fn direct() -> tokio_postgres::Client {
    try_connect(&format!(
        "host=127.0.0.1 port={} user={SUPERUSER} password='{SUPERUSER_PASSWORD}' dbname=postgres",
        Cluster::shared().addr().rsplit_once(':').unwrap().1
    ))
    .await
    .unwrap()
}

/// The whole data of a `COPY ... TO STDOUT`.
pub async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let stream = client.copy_out(sql).await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

/// Runs a `COPY ... FROM STDIN`, sending each chunk in a CopyData message
/// of its own; returns the rows copied.
pub async fn copy_in<'c>(
    client: &tokio_postgres::Client,
    sql: &str,
    chunks: impl IntoIterator<Item = &'c [u8]>,
) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = client.copy_in(sql).await?;
    futures_util::pin_mut!(sink);
    for chunk in chunks {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    sink.finish().await
}

/// The rows of a binary `COPY ... TO STDOUT` whose columns have these
/// types, each value as its bytes (a text value's UTF-8).
pub async fn binary_copy_out(
    client: &tokio_postgres::Client,
    sql: &str,
    types: &[tokio_postgres::types::Type],
) -> Result<Vec<Vec<Option<Vec<u8>>>>, tokio_postgres::Error> {
    use futures_util::TryStreamExt;
    use tokio_postgres::types::Type;
    let stream = client.copy_out(sql).await?;
    let rows: Vec<_> = tokio_postgres::binary_copy::BinaryCopyOutStream::new(stream, types)
        .try_collect()
        .await?;
    let value = |row: &tokio_postgres::binary_copy::BinaryCopyOutRow, i: usize| match types[i] {
        Type::BYTEA => row.get::<Option<Vec<u8>>>(i),
        _ => row.get::<Option<String>>(i).map(String::into_bytes),
    };
    Ok(rows
        .iter()
        .map(|row| (0..types.len()).map(|i| value(row, i)).collect())
        .collect())
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.code().code())
}

/// Writes a secret file (a master key) readable by its owner only, as
/// pgveil requires of a master key file.
pub fn write_private(path: &std::path::Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A client of the pgveil listening at `addr` (`IP:PORT`), as `user` with
/// the password every test user has.
pub async fn connect_to(addr: &str, user: &str) -> tokio_postgres::Client {
    let (host, port) = addr.split_once(':').unwrap();
    try_connect(&format!(
        "host={host} port={port} user={user} password=pw dbname=postgres connect_timeout=10"
    ))
    .await
    .unwrap()
}

pub fn free_port() -> u16 {
    pgveil::ops::cluster::free_port().unwrap()
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
        RawClient::login_with(addr, &[]).await
    }

    /// [`RawClient::login`] with more startup parameters.
    pub async fn login_with(addr: SocketAddr, params: &[(&str, &str)]) -> (RawClient, i32) {
        let mut client = RawClient::connect(addr).await;
        client
            .send(&startup_packet_with("trust_user", "postgres", params))
            .await;
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

    /// Reads up to ReadyForQuery: the DataRows' fields (`None` for NULL),
    /// and the ErrorResponse seen, as (SQLSTATE, message), if any.
    pub async fn rows_until_ready(
        &mut self,
    ) -> (Vec<Vec<Option<Vec<u8>>>>, Option<(String, String)>) {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.expect_message().await;
            match tag {
                b'D' => rows.push(data_row(&body)),
                b'E' => error = Some((error_field(&body, b'C'), error_field(&body, b'M'))),
                b'Z' => return (rows, error),
                _ => {}
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

/// The records of an audit log directory (its lines with an `event`), in
/// file order, compressed files included, and the log's whole text.
pub fn audit_log(dir: &std::path::Path) -> (Vec<serde_json::Value>, String) {
    use std::io::Read;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let mut text = String::new();
    for path in files {
        let file = std::fs::File::open(&path).unwrap();
        if path.extension().is_some_and(|e| e == "zst") {
            zstd::Decoder::new(file)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
        } else {
            std::io::BufReader::new(file)
                .read_to_string(&mut text)
                .unwrap();
        }
    }
    let records = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect();
    (records, text)
}

/// A field of an ErrorResponse body.
pub fn error_field(body: &[u8], code: u8) -> String {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&code))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

/// The fields of a DataRow body.
fn data_row(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut rest = &body[2..];
    (0..count)
        .map(|_| {
            let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
            rest = &rest[4..];
            (len >= 0).then(|| {
                let (value, tail) = rest.split_at(len as usize);
                rest = tail;
                value.to_vec()
            })
        })
        .collect()
}

/// A protocol 3.0 StartupMessage.
pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    startup_packet_with(user, database, &[])
}

/// A StartupMessage with more parameters.
pub fn startup_packet_with(user: &str, database: &str, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    let names = [("user", user), ("database", database)];
    for &(k, v) in names.iter().chain(params) {
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

/// Parse, Bind, Execute and Sync of `sql` as the unnamed statement, with
/// parameter values (`None` for NULL) in these formats (0 text, 1
/// binary), for what drivers will not send.
pub fn extended(sql: &str, params: &[Option<&[u8]>], formats: &[i16]) -> Vec<u8> {
    let mut parse = vec![0];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut bind = vec![0, 0];
    bind.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for format in formats {
        bind.extend_from_slice(&format.to_be_bytes());
    }
    bind.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for param in params {
        match param {
            Some(value) => {
                bind.extend_from_slice(&(value.len() as i32).to_be_bytes());
                bind.extend_from_slice(value);
            }
            None => bind.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    bind.extend_from_slice(&[0, 0]);
    [
        message(b'P', &parse),
        message(b'B', &bind),
        message(b'E', &[0, 0, 0, 0, 0]),
        message(b'S', &[]),
    ]
    .concat()
}
pub mod crm;
pub mod served;
