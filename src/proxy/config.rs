//! pgveil's configuration: the TOML file, overridden by command-line flags.
//!
//! Every key has a default, so `pgveil serve` runs with no file at all.
//! Errors name the file, the key and what is wrong with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::audit::{AuditConfig, AuditKeys};
use crate::protect::custody::CustodyConfig;
use crate::protect::protection::{load_keyring, Protection, ProtectionError};
use thiserror::Error;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The settings of a running proxy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address pgveil listens on.
    pub listen: String,
    /// The PostgreSQL server, `HOST:PORT`.
    pub upstream: String,
    /// Seconds a client may take from connecting to authenticating.
    pub startup_timeout_secs: u64,
    /// Seconds to wait for the upstream server to accept a connection.
    pub connect_timeout_secs: u64,
    /// Seconds sessions may run on after SIGINT/SIGTERM before being closed.
    pub shutdown_grace_secs: u64,
    /// Threads that run sessions; 0 for one per CPU.
    pub worker_threads: usize,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `pgveil=debug`.
    pub log_level: String,
    /// Column policy: a `.toml` file or a directory of them. Without it
    /// pgveil is a plain pass-through proxy.
    pub policy: Option<PathBuf>,
    /// The keyring made by `pgveil keys init`; required with `policy`.
    pub keyring: Option<PathBuf>,
    /// A file holding the base64 master key; without it the master key
    /// comes from the `PGVEIL_MASTER_KEY` environment variable. The same
    /// as `[master_key]` with `provider = "file"`.
    pub master_key_file: Option<PathBuf>,
    /// Where the master key is kept (`[master_key]`, see
    /// [`Config::custody`]): `env`, `file`, `pkcs11` or `aws-kms`.
    pub master_key: Option<CustodyConfig>,
    /// The access audit log (`[audit]`); off when absent.
    pub audit: Option<AuditConfig>,
    /// The connection pgveil's own commands make to the upstream server
    /// (`[maintenance]`): the policy check, `migrate`, `keys retire`.
    pub maintenance: Option<MaintenanceConfig>,
    /// TLS for clients (`[tls]`); without it SSLRequest is answered `N`.
    pub tls: Option<TlsConfig>,
    /// TLS to the upstream server (`[upstream_tls]`); plaintext when
    /// absent.
    pub upstream_tls: Option<UpstreamTlsConfig>,
    /// The most client sessions open at once; a client beyond it is
    /// refused with `53300`. 0 for no limit.
    pub max_client_conn: usize,
    /// The HTTP listener for metrics and health checks (`[admin]`); off
    /// when absent.
    pub admin: Option<AdminConfig>,
}

/// `[admin]`: where `/metrics`, `/healthz` and `/readyz` are served.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT` of the admin listener, such as `127.0.0.1:9187`.
    pub listen: String,
}

/// `[maintenance]`: how pgveil itself logs in to the upstream server, to
/// compare the policy with the schema (`pgveil policy check`, and `serve`
/// at start and on reload) and to migrate stored values. Clients never use
/// it. Unset values come from libpq's environment variables.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// The role; `PGUSER` when absent. `migrate` needs it to be able to
    /// update the protected tables.
    pub user: Option<String>,
    /// The database holding the protected tables; `PGDATABASE`, else the
    /// user's name, when absent.
    pub database: Option<String>,
    /// A file holding the password (readable by its owner only);
    /// `PGPASSWORD` when absent.
    pub password_file: Option<PathBuf>,
}

/// Whether clients must use TLS.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Clients may ask for TLS or not.
    #[default]
    Allow,
    /// A client that does not ask for TLS is refused (`28000`).
    Require,
}

/// `[tls]`: the certificate pgveil shows clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate, followed by its chain if any.
    pub cert: PathBuf,
    /// PEM private key of `cert`, readable by its owner only.
    pub key: PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them.
    pub client_ca: Option<PathBuf>,
    /// `allow` or `require`.
    #[serde(default)]
    pub mode: ClientTlsMode,
}

/// How pgveil connects to the upstream server, with libpq's `sslmode`
/// meanings.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plaintext.
    Disable,
    /// TLS when the server accepts it, plaintext (with a warning) when it
    /// answers `N`; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is checked against `ca`
    /// (chain only) when `ca` is given, else not at all.
    Require,
    /// TLS, the certificate signed by a CA of `ca`.
    VerifyCa,
    /// TLS, the certificate signed by a CA of `ca` and valid for the host
    /// name of `upstream`.
    #[default]
    VerifyFull,
}

/// `[upstream_tls]`: TLS to the upstream server.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`
    /// (the default).
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// PEM CA certificates the server's certificate must be signed by.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (and chain) pgveil presents to the server.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`, readable by its owner only.
    pub key: Option<PathBuf>,
}

/// The most session threads accepted.
const MAX_WORKER_THREADS: usize = 1024;
/// The largest `max_client_conn` accepted.
const MAX_CLIENT_CONN: usize = 1_000_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            upstream: "127.0.0.1:5432".into(),
            startup_timeout_secs: 30,
            connect_timeout_secs: 10,
            shutdown_grace_secs: 30,
            worker_threads: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            policy: None,
            keyring: None,
            master_key_file: None,
            master_key: None,
            audit: None,
            maintenance: None,
            tls: None,
            upstream_tls: None,
            max_client_conn: 0,
            admin: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser says.
        message: String,
    },
    /// A setting has a value that cannot be used.
    #[error("{key}: {problem}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        validate_upstream(&self.upstream)?;
        for (key, secs) in [
            ("startup_timeout_secs", self.startup_timeout_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "must be at least 1 second".into(),
                });
            }
        }
        if let Some(audit) = &self.audit {
            audit.validate().map_err(|e| ConfigError::Invalid {
                key: e.key,
                problem: e.problem.into(),
            })?;
            if self.keyring.is_none() {
                return Err(ConfigError::Invalid {
                    key: "keyring",
                    problem: "is required with [audit]: it holds the audit log's keys".into(),
                });
            }
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::Invalid {
                key: "worker_threads",
                problem: format!("must be at most {MAX_WORKER_THREADS}"),
            });
        }
        if self.max_client_conn > MAX_CLIENT_CONN {
            return Err(ConfigError::Invalid {
                key: "max_client_conn",
                problem: format!("must be at most {MAX_CLIENT_CONN} (0 for no limit)"),
            });
        }
        if self.policy.is_some() && self.keyring.is_none() {
            return Err(ConfigError::Invalid {
                key: "keyring",
                problem: "is required when a policy is set (create one with `pgveil keys init`)"
                    .into(),
            });
        }
        if let Some(upstream_tls) = &self.upstream_tls {
            validate_upstream_tls(upstream_tls, &self.upstream)?;
        }
        if let Some(admin) = self.admin_addr()? {
            if self.listen_addr()? == admin && admin.port() != 0 {
                return Err(ConfigError::Invalid {
                    key: "admin.listen",
                    problem: "must differ from listen".into(),
                });
            }
        }
        if let Some(master_key) = &self.master_key {
            if self.master_key_file.is_some() {
                return Err(ConfigError::Invalid {
                    key: "master_key_file",
                    problem: "is set with [master_key]; keep one (master_key_file = PATH is \
                              [master_key] provider = \"file\", path = PATH)"
                        .into(),
                });
            }
            master_key
                .validate()
                .map_err(|problem| ConfigError::Invalid {
                    key: "master_key",
                    problem,
                })?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            ConfigError::Invalid {
                key: "log_level",
                problem: e.to_string(),
            }
        })?;
        Ok(())
    }

    /// The listen address, parsed.
    pub(crate) fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            problem: format!("{:?} is not an IP:PORT address", self.listen),
        })
    }

    /// The admin listener's address, parsed, when `[admin]` is set.
    pub(crate) fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(admin) = &self.admin else {
            return Ok(None);
        };
        admin
            .listen
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "admin.listen",
                problem: format!("{:?} is not an IP:PORT address", admin.listen),
            })
    }

    /// Where the master key is kept: `[master_key]`, else the file of
    /// `master_key_file`, else `PGVEIL_MASTER_KEY`.
    pub fn custody(&self) -> CustodyConfig {
        match (&self.master_key, &self.master_key_file) {
            (Some(custody), _) => custody.clone(),
            (None, Some(path)) => CustodyConfig::File { path: path.clone() },
            (None, None) => CustodyConfig::Env,
        }
    }

    /// How long a client may take to start up and authenticate.
    pub(crate) fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs)
    }

    /// How long connecting to the upstream server may take.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// How long sessions may run on after a shutdown signal.
    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The policy and keyring this configuration names, loaded with its
    /// master key; `None` without a policy and keyring. `serve` (at start
    /// and on reload) and `migrate` load them so.
    pub(crate) fn protection(&self) -> Result<Option<Protection>, ProtectionError> {
        match (&self.policy, &self.keyring) {
            (Some(policy), Some(keyring)) => {
                Protection::load(policy, keyring, &self.custody()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The audit log's keys, from the keyring, when `[audit]` is
    /// configured.
    pub(crate) fn audit_keys(&self) -> Result<Option<Arc<AuditKeys>>, String> {
        let (Some(_), Some(path)) = (&self.audit, &self.keyring) else {
            return Ok(None);
        };
        let keyring = load_keyring(path, &self.custody()).map_err(|e| e.to_string())?;
        let keys = AuditKeys::from_keyring(Arc::new(keyring)).map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(keys)))
    }
}

/// The host part of `upstream` (`HOST:PORT`, `[IPv6]:PORT`), as a TLS
/// server name is checked against it.
pub(crate) fn upstream_host(upstream: &str) -> &str {
    let host = upstream.rsplit_once(':').map_or(upstream, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn validate_upstream_tls(tls: &UpstreamTlsConfig, upstream: &str) -> Result<(), ConfigError> {
    let mode = tls.mode;
    if matches!(
        mode,
        UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull
    ) && tls.ca.is_none()
    {
        return Err(ConfigError::Invalid {
            key: "upstream_tls.ca",
            problem: format!(
                "is required with mode {:?} (the CA certificates the server's must be signed by)",
                mode_name(mode)
            ),
        });
    }
    match (&tls.cert, &tls.key) {
        (Some(_), None) => Err(ConfigError::Invalid {
            key: "upstream_tls.key",
            problem: "is required with upstream_tls.cert".into(),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            key: "upstream_tls.cert",
            problem: "is required with upstream_tls.key".into(),
        }),
        _ if mode == UpstreamTlsMode::Disable => Ok(()),
        _ => rustls::pki_types::ServerName::try_from(upstream_host(upstream))
            .map(drop)
            .map_err(|_| ConfigError::Invalid {
                key: "upstream",
                problem: format!(
                    "{upstream:?}: its host is neither a DNS name nor an IP address, \
                     so upstream_tls cannot check the server's certificate against it"
                ),
            }),
    }
}

/// A mode as the configuration spells it.
pub(crate) fn mode_name(mode: UpstreamTlsMode) -> &'static str {
    match mode {
        UpstreamTlsMode::Disable => "disable",
        UpstreamTlsMode::Prefer => "prefer",
        UpstreamTlsMode::Require => "require",
        UpstreamTlsMode::VerifyCa => "verify-ca",
        UpstreamTlsMode::VerifyFull => "verify-full",
    }
}

fn validate_upstream(upstream: &str) -> Result<(), ConfigError> {
    let invalid = |problem: &str| ConfigError::Invalid {
        key: "upstream",
        problem: format!("{upstream:?} {problem}"),
    };
    let (host, port) = upstream
        .rsplit_once(':')
        .ok_or_else(|| invalid("is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| invalid("has no valid port number"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:6432");
        assert_eq!(c.upstream, "127.0.0.1:5432");
        assert_eq!(c.startup_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_key() {
        assert!(parse("lisen = \"x\"").unwrap_err().contains("lisen"));
        assert!(parse("listen = \"nowhere\"")
            .unwrap_err()
            .starts_with("listen:"));
        assert!(parse("upstream = \"db\"")
            .unwrap_err()
            .starts_with("upstream:"));
        assert!(parse("startup_timeout_secs = 0")
            .unwrap_err()
            .starts_with("startup_timeout_secs:"));
        assert!(parse("startup_timeout_secs = \"x\"")
            .unwrap_err()
            .contains("startup_timeout_secs"));
        assert!(parse("log_format = \"xml\"")
            .unwrap_err()
            .contains("log_format"));
        assert!(parse("worker_threads = 5000")
            .unwrap_err()
            .starts_with("worker_threads:"));
    }

    #[test]
    fn audit_section_needs_a_keyring() {
        let with_keyring =
            parse("keyring = \"k.toml\"\n[audit]\ndir = \"/tmp/a\"\nscope = \"protected\"")
                .unwrap();
        assert_eq!(
            with_keyring.audit.unwrap().scope,
            crate::audit::Scope::Protected
        );
        assert!(parse("[audit]\ndir = \"/tmp/a\"")
            .unwrap_err()
            .starts_with("keyring:"));
        assert!(parse("keyring = \"k\"\n[audit]\nscope = \"some\"")
            .unwrap_err()
            .contains("scope"));
    }

    #[test]
    fn tls_sections_parse_with_their_defaults() {
        let c = parse("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"").unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.mode, ClientTlsMode::Allow);
        assert!(tls.client_ca.is_none());
        let c = parse("[tls]\ncert = \"c\"\nkey = \"k\"\nmode = \"require\"").unwrap();
        assert_eq!(c.tls.unwrap().mode, ClientTlsMode::Require);
        assert!(parse("[tls]\ncert = \"c\"").unwrap_err().contains("key"));
        assert!(parse("[tls]\ncert = \"c\"\nkey = \"k\"\nmode = \"prefer\"")
            .unwrap_err()
            .contains("mode"));
        let c = parse("[upstream_tls]\nca = \"ca.pem\"").unwrap();
        assert_eq!(c.upstream_tls.unwrap().mode, UpstreamTlsMode::VerifyFull);
        let c = parse("[upstream_tls]\nmode = \"require\"").unwrap();
        assert_eq!(c.upstream_tls.unwrap().mode, UpstreamTlsMode::Require);
        assert!(parse("").unwrap().upstream_tls.is_none());
    }

    #[test]
    fn upstream_tls_errors_name_the_key() {
        assert!(parse("[upstream_tls]")
            .unwrap_err()
            .starts_with("upstream_tls.ca:"));
        assert!(parse("[upstream_tls]\nmode = \"verify-ca\"")
            .unwrap_err()
            .starts_with("upstream_tls.ca:"));
        assert!(parse("[upstream_tls]\nmode = \"require\"\ncert = \"c\"")
            .unwrap_err()
            .starts_with("upstream_tls.key:"));
        assert!(parse("[upstream_tls]\nmode = \"sometimes\"")
            .unwrap_err()
            .contains("mode"));
        assert!(
            parse("upstream = \"bad_name!:5432\"\n[upstream_tls]\nca = \"ca\"")
                .unwrap_err()
                .starts_with("upstream:")
        );
        assert_eq!(upstream_host("[::1]:5432"), "::1");
        assert_eq!(upstream_host("db.example.com:5432"), "db.example.com");
    }

    #[test]
    fn admin_and_the_connection_limit_parse() {
        let c = parse("").unwrap();
        assert_eq!((c.max_client_conn, c.admin), (0, None));
        let c = parse("max_client_conn = 100\n[admin]\nlisten = \"127.0.0.1:9187\"").unwrap();
        assert_eq!(c.max_client_conn, 100);
        assert_eq!(
            c.admin_addr().unwrap(),
            Some("127.0.0.1:9187".parse().unwrap())
        );
        assert!(parse("[admin]\nlisten = \"localhost\"")
            .unwrap_err()
            .starts_with("admin.listen:"));
        assert!(parse("[admin]\nlisten = \"127.0.0.1:6432\"")
            .unwrap_err()
            .starts_with("admin.listen:"));
        assert!(parse("[admin]").unwrap_err().contains("listen"));
        assert!(parse("max_client_conn = -1")
            .unwrap_err()
            .contains("max_client_conn"));
        assert!(parse("max_client_conn = 2000000")
            .unwrap_err()
            .starts_with("max_client_conn:"));
    }

    #[test]
    fn the_master_key_is_env_by_default_or_a_file_or_a_provider() {
        assert_eq!(parse("").unwrap().custody(), CustodyConfig::Env);
        assert_eq!(
            parse("master_key_file = \"/k\"").unwrap().custody(),
            CustodyConfig::File { path: "/k".into() }
        );
        let kms = parse("[master_key]\nprovider = \"aws-kms\"\nkey_id = \"alias/k\"").unwrap();
        assert_eq!(kms.custody().provider(), "aws-kms");
        assert!(
            parse("master_key_file = \"/k\"\n[master_key]\nprovider = \"env\"")
                .unwrap_err()
                .starts_with("master_key_file:")
        );
        assert!(parse("[master_key]\nprovider = \"aws-kms\"\nkey_id = \"\"")
            .unwrap_err()
            .starts_with("master_key:"));
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../pgveil.example.toml");
        parse(text).unwrap();
    }

    #[test]
    fn the_example_master_key_tables_are_valid() {
        let text = include_str!("../../pgveil.example.toml");
        let tables: Vec<&str> = text.split("# [master_key]\n").skip(1).collect();
        assert_eq!(tables.len(), 2);
        for table in tables {
            let keys: String = table
                .lines()
                .map_while(|line| line.strip_prefix("# ").filter(|l| l.contains(" = ")))
                .map(|line| format!("{line}\n"))
                .collect();
            let config = parse(&format!("[master_key]\n{keys}")).unwrap();
            assert!(config.master_key.is_some(), "{keys}");
        }
    }

    #[test]
    fn the_example_audit_section_is_valid_and_compresses() {
        let text = include_str!("../../pgveil.example.toml");
        let start = text.find("# [audit]").unwrap();
        let uncommented: String = text[start..]
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.starts_with('[')
                    || line.split_once('=').is_some_and(|(key, _)| {
                        key.trim_end()
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = parse(&format!("keyring = \"k.toml\"\n{uncommented}")).unwrap();
        let audit = config.audit.unwrap();
        assert!(audit.compress);
        assert_eq!(audit.on_failure, crate::audit::OnFailure::Refuse);
        let off = parse("keyring = \"k\"\n[audit]\ncompress = false").unwrap();
        assert!(!off.audit.unwrap().compress);
    }
}
