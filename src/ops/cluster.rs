//! Throwaway PostgreSQL clusters, for `pgveil demo` and the test suite.
//!
//! A cluster lives in a fresh temporary directory: `initdb` (run as the
//! `postgres` OS user when pgveil runs as root, since initdb refuses root),
//! scram-sha-256 authentication, loopback only, a free port. A watchdog
//! process stops the server and removes the directory once the process
//! that made it is gone, however that process ends.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;

/// Where PostgreSQL's server programs are looked for, newest supported first.
const SEARCHED_VERSIONS: &[&str] = &["15", "16", "17", "14", "13"];

/// A cluster that could not be made or driven.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server programs not found in /usr/lib/postgresql/*/bin; \
         install them (Debian/Ubuntu: apt-get install postgresql-15) or set PGVEIL_PG_BIN"
    )]
    /// No PostgreSQL server programs were found.
    NoServer,
    /// A server program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// What it wrote to standard error.
        stderr: String,
    },
    /// A file or process could not be handled.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How to set a cluster up.
pub struct Options {
    /// Superuser name and password.
    pub superuser: (String, String),
    /// `pg_hba.conf` lines placed before the catch-all scram-sha-256 line.
    pub hba: Vec<String>,
}

/// A running throwaway cluster. Dropping it stops the server and removes
/// its directory.
pub struct Cluster {
    /// The port it listens on, on loopback.
    pub port: u16,
    /// Its data directory (the socket directory too).
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    /// Creates and starts a cluster.
    pub fn start(options: &Options) -> Result<Cluster, ClusterError> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pgveil-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let cluster = Cluster {
            port: free_port()?,
            dir,
            bin: server_bin_dir()?,
        };
        cluster.watch()?;
        cluster.init(options)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// `127.0.0.1:PORT` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init(&self, options: &Options) -> Result<(), ClusterError> {
        let (user, password) = &options.superuser;
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, password)?;
        chown_to_postgres(&self.dir)?;
        let mut initdb = as_postgres(&self.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                user,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb)?;
        std::fs::remove_file(&pwfile)?;
        let mut hba = options.hba.join("\n");
        hba.push_str("\nhost all all 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(self.data().join("pg_hba.conf"), hba)?;
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            self.port,
            self.dir.display()
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&settings);
        std::fs::write(conf, text)?;
        chown_to_postgres(&self.dir)
    }

    /// Starts a process that stops the server and removes the directory
    /// once this process is gone.
    fn watch(&self) -> Result<(), ClusterError> {
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
        // The watchdog outlives this process on purpose: it is never waited on.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.args(args).arg("-D").arg(self.data());
        run(cmd).map(drop)
    }

    fn start_server(&self) -> Result<(), ClusterError> {
        let log = self.dir.join("server.log");
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log.to_string_lossy()])
    }

    /// Stops the server (fast mode: open sessions are terminated).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-w", "-m", "fast"])
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.start_server()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-w", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of `initdb`, `pg_ctl` and `postgres`.
pub fn server_bin_dir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("PGVEIL_PG_BIN") {
        return Ok(dir.into());
    }
    SEARCHED_VERSIONS
        .iter()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .find(|dir| dir.join("initdb").exists())
        .ok_or(ClusterError::NoServer)
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether the process runs as root. One of the two `unsafe` blocks of
/// the crate (the other runs the audit compressor at idle priority).
#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
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

fn chown_to_postgres(dir: &Path) -> Result<(), ClusterError> {
    if is_root() {
        let mut cmd = Command::new("chown");
        cmd.args(["-R", "postgres:postgres"]).arg(dir);
        run(cmd)?;
    }
    Ok(())
}

fn run(mut cmd: Command) -> Result<Output, ClusterError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(out);
    }
    Err(ClusterError::Failed {
        program,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}
