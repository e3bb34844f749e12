//! `pgveil serve`: the proxy, with its audit log and its reload on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{shutdown_signal, with_workers, EXIT_CONFIG, EXIT_FAILURE};
use crate::audit::approvals::ApprovalBook;
use crate::audit::{AuditHandle, AuditRecord, AuditSink, Outcome, SqlState, Timestamp};
use crate::ops::{check, logging};
use crate::protect::protection::{load_policy, Protection};
use crate::proxy::config::{Config, LogFormat};
use crate::proxy::server::Server;
use crate::proxy::tls::{Tls, TlsSlot};
use crate::session::metrics::Metrics;
use crate::session::protection::ProtectionSlot;
use crate::wire::sqlstate::CONFIG_FILE_ERROR;

#[derive(Args, Clone)]
pub(super) struct ServeArgs {
    /// Configuration file (see pgveil.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, IP:PORT (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// PostgreSQL server, HOST:PORT (overrides `upstream`).
    #[arg(long)]
    upstream: Option<String>,
    /// Log format (overrides `log_format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

impl ServeArgs {
    fn config(&self) -> Result<Config, crate::proxy::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = &self.listen {
            config.listen = listen.clone();
        }
        if let Some(upstream) = &self.upstream {
            config.upstream = upstream.clone();
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        config.validate()?;
        Ok(config)
    }
}

pub(super) fn serve(args: &ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgveil: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let tls = match Tls::load(&config) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("pgveil: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let audit_keys = match config.audit_keys() {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("pgveil: cannot open the audit log: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init(config.log_format, &config.log_level);
    // Sessions run on their own threads (`worker_threads` of them, see
    // proxy/workers.rs); this runtime accepts, reloads and serves [admin].
    with_workers(1, async {
        // Installed first, so that a SIGHUP never takes its default action,
        // which would end the process (with the audit log open).
        let hangup = hangup_signal();
        if let Err(errors) = checked(&config).await {
            eprintln!("pgveil: the policy does not fit the database:\n{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
        let veil = match config.protection() {
            Ok(veil) => veil,
            Err(e) => {
                eprintln!("pgveil: cannot protect columns: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        warn_unapprovable(&config, veil.as_ref());
        let server = match Server::bind_with_tls(config.clone(), veil, tls).await {
            Ok(server) => server,
            Err(e) => {
                let admin = config.admin.as_ref();
                let admin = admin.map_or(String::new(), |admin| format!(" and {}", admin.listen));
                tracing::error!("cannot listen on {}{admin}: {e}", config.listen);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let (server, audit) = match (&config.audit, audit_keys) {
            (Some(audit), Some(keys)) => {
                let book = match audit.approvals.as_deref() {
                    Some(dir) => match ApprovalBook::open(dir, keys.clone()) {
                        Ok(book) => Some(Arc::new(book)),
                        Err(e) => {
                            tracing::error!("cannot open the approvals directory: {e}");
                            return ExitCode::from(EXIT_CONFIG);
                        }
                    },
                    None => None,
                };
                match AuditSink::start(audit, keys) {
                    Ok((handle, _writer)) => {
                        let mut server = server.with_audit(handle.clone(), audit);
                        if let Some(book) = book {
                            server = server.with_approvals(book);
                        }
                        (server, Some(handle))
                    }
                    Err(e) => {
                        tracing::error!("cannot open the audit log: {e}");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                }
            }
            _ => (server, None),
        };
        let slots = Slots {
            protection: server.protection(),
            tls: server.tls(),
            metrics: server.metrics(),
        };
        tokio::spawn(reload_on_hangup(hangup, args.clone(), slots, audit));
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Warns of each column with an approval limit when there is no
/// approvals directory: its limit can never be lifted.
fn warn_unapprovable(config: &Config, veil: Option<&Protection>) {
    let approvals = config.audit.as_ref().and_then(|a| a.approvals.as_ref());
    let Some(veil) = veil.filter(|_| approvals.is_none()) else {
        return;
    };
    for column in veil.policy.columns().filter(|c| c.approval_rows.is_some()) {
        tracing::warn!(
            column = %column.qualified_name(),
            "the column has an approval limit but no approvals directory is configured \
             ([audit] approvals): reads beyond the limit are always refused"
        );
    }
}

/// Compares the configured policy with the database's schema (see
/// [`check::before_serving`]) and logs its warnings; `Err` with the errors
/// that make the policy unusable. A policy that does not load is left to
/// [`Config::protection`] to report.
async fn checked(config: &Config) -> Result<(), String> {
    let Some(Ok(policy)) = config.policy.as_deref().map(load_policy) else {
        return Ok(());
    };
    for warning in check::before_serving(config, &policy).await? {
        tracing::warn!("policy check: {warning}");
    }
    Ok(())
}

/// What a reload replaces, and where it is counted.
struct Slots {
    protection: ProtectionSlot,
    tls: TlsSlot,
    metrics: Arc<Metrics>,
}

/// Reloads the policy, keyring, master key and TLS certificates on each
/// SIGHUP: sessions that start afterwards use them, and open sessions
/// adopt the policy and keyring at their next statement; a reload that
/// fails keeps all of them as they are. Each reload, applied or refused,
/// is an audit record.
async fn reload_on_hangup(
    hangup: Option<tokio::signal::unix::Signal>,
    args: ServeArgs,
    slots: Slots,
    audit: Option<AuditHandle>,
) {
    let Some(mut hangup) = hangup else {
        return;
    };
    while hangup.recv().await.is_some() {
        let reason = match reload(&args, &slots).await {
            Ok(what) => {
                tracing::info!("reloaded on SIGHUP: {what}; sessions use it from now on");
                None
            }
            Err(e) => {
                tracing::error!(
                    "reload refused, the policy and TLS certificates in force stay: {e}"
                );
                Some(e)
            }
        };
        slots.metrics.reloaded(reason.is_none());
        if let Some(audit) = &audit {
            let outcome = match reason {
                None => Outcome::Ok,
                Some(_) => Outcome::Error(SqlState::new(CONFIG_FILE_ERROR).expect("a valid code")),
            };
            let record = AuditRecord::Reload {
                time: Timestamp::now(),
                outcome,
                reason,
            };
            if let Err(e) = audit.record(record) {
                tracing::error!("the reload could not be recorded in the audit log: {e}");
            }
        }
    }
}

/// Handles SIGHUP from now on (without a handler it would end the
/// process); `None`, logged, if it cannot be handled.
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| {
            tracing::warn!("cannot handle SIGHUP, so it cannot reload the policy: {e}")
        })
        .ok()
}

/// Reads the configuration again and, if its policy, keyring and TLS
/// certificates all load (and the policy fits the database), puts them in
/// force.
async fn reload(args: &ServeArgs, slots: &Slots) -> Result<&'static str, String> {
    let config = args
        .config()
        .map_err(|e| format!("invalid configuration: {e}"))?;
    checked(&config)
        .await
        .map_err(|errors| format!("the policy does not fit the database: {errors}"))?;
    let protection = config
        .protection()
        .map_err(|e| format!("cannot protect columns: {e}"))?;
    if protection.is_none() && slots.protection.is_protecting() {
        return Err(
            "the configuration names no policy and keyring any more; a reload never \
             turns protection off (restart pgveil to do that)"
                .into(),
        );
    }
    let tls = Tls::load(&config).map_err(|e| format!("cannot load TLS: {e}"))?;
    if tls.modes() != slots.tls.current().modes() {
        return Err(
            "the [tls] or [upstream_tls] section or mode changed; a reload only \
             reads their certificates and keys again (restart pgveil to change the rest)"
                .into(),
        );
    }
    let tls_on = tls.is_on();
    slots.tls.replace(tls);
    Ok(match (protection, tls_on) {
        (Some(protection), on) => {
            slots.protection.replace(protection);
            if on {
                "policy and keyring, TLS certificates"
            } else {
                "policy and keyring"
            }
        }
        (None, true) => "TLS certificates, no policy as before",
        (None, false) => "no policy, as before",
    })
}
