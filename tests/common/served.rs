//! `pgveil serve` run as a program in front of the sample CRM, logging
//! JSON lines to a file: signalled, killed and started again as an
//! operator would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{crm, free_port, Cluster};

/// The `pgveil` binary.
pub fn pgveil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

/// A running `pgveil serve`.
pub struct Served {
    child: Child,
    pub addr: String,
    /// Its configuration file.
    pub config: PathBuf,
    log: PathBuf,
}

impl Served {
    /// Starts the binary with the CRM's policy and keys and `audit` as
    /// its `[audit]` section, giving sessions 30 s at shutdown; waits
    /// until it listens.
    pub fn start(name: &str, audit: &str) -> Served {
        Self::start_with(name, "shutdown_grace_secs = 30\n", audit)
    }

    /// The same, with `settings` (top-level keys, one a line) instead of
    /// the grace period.
    pub fn start_with(name: &str, settings: &str, audit: &str) -> Served {
        let files = crm::prepared();
        let dir = std::env::temp_dir().join(format!("pgveil-served-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join("pgveil.toml");
        std::fs::write(
            &config,
            format!(
                "listen = {addr:?}\nupstream = {:?}\nlog_format = \"json\"\n{settings}\
                 policy = {:?}\nkeyring = {:?}\nmaster_key_file = {:?}\n[audit]\n{audit}\n",
                Cluster::shared().addr(),
                crm::policy_file(),
                files.keyring,
                files.master_key,
            ),
        )
        .unwrap();
        Self::run(config, addr, dir.join("pgveil.log"))
    }

    /// Starts `pgveil serve --config config`, its log to `log`; waits
    /// until it listens on `addr`.
    fn run(config: PathBuf, addr: String, log: PathBuf) -> Served {
        let child = pgveil()
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgveil did not start listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Served {
            child,
            addr,
            config,
            log,
        }
    }

    /// The same configuration started again (after [`Self::kill`] or
    /// [`Self::wait`]), logging to a new file.
    pub fn start_again(config: &Path, addr: &str, run: usize) -> Served {
        let log = config.with_file_name(format!("pgveil-{run}.log"));
        Self::run(config.into(), addr.into(), log)
    }

    pub async fn connect(&self, user: &str) -> tokio_postgres::Client {
        super::connect_to(&self.addr, user).await
    }

    /// What pgveil logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGTERM.
    pub fn signal(&self) {
        self.send("TERM");
    }

    /// Sends `signal` (`TERM`, `INT`, `HUP`...).
    pub fn send(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`, and waits until the process is gone.
    pub fn kill(mut self) -> String {
        self.send("KILL");
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed: {status}");
        self.log()
    }

    /// Waits for a successful exit; returns the log.
    pub fn wait(mut self) -> String {
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "pgveil exit status {status}: {}",
            self.log()
        );
        self.log()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
