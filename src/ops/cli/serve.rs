//! `pgveil serve`: the proxy, with its audit log and its reload on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{shutdown_signal, with_workers, EXIT_CONFIG, EXIT_FAILURE};
use crate::audit::{AuditHandle, AuditRecord, AuditSink, Outcome, SqlState, Timestamp};
use crate::ops::logging;
use crate::proxy::config::{Config, LogFormat};
use crate::proxy::reload::ProtectionSlot;
use crate::proxy::server::Server;
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
    let veil = match config.protection() {
        Ok(veil) => veil,
        Err(e) => {
            eprintln!("pgveil: cannot protect columns: {e}");
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
    with_workers(config.worker_threads, async {
        let server = match Server::bind(config.clone(), veil).await {
            Ok(server) => server,
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", config.listen);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let (server, audit) = match (&config.audit, audit_keys) {
            (Some(audit), Some(keys)) => match AuditSink::start(audit, keys) {
                Ok((handle, _writer)) => (server.with_audit(handle.clone(), audit), Some(handle)),
                Err(e) => {
                    tracing::error!("cannot open the audit log: {e}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            },
            _ => (server, None),
        };
        tokio::spawn(reload_on_hangup(args.clone(), server.protection(), audit));
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Reloads the policy, keyring and master key on each SIGHUP, for the
/// sessions that start afterwards; a reload that fails keeps the protection
/// in force. Each reload, applied or refused, is an audit record. Without a
/// handler SIGHUP would end the process.
async fn reload_on_hangup(args: ServeArgs, slot: ProtectionSlot, audit: Option<AuditHandle>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP, so it cannot reload the policy: {e}");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        let reason = match reload(&args, &slot) {
            Ok(what) => {
                tracing::info!("reloaded on SIGHUP: {what}; sessions that start now use it");
                None
            }
            Err(e) => {
                tracing::error!("reload refused, the policy in force stays: {e}");
                Some(e)
            }
        };
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

/// Reads the configuration again and, if its policy and keyring load,
/// makes them the ones new sessions use.
fn reload(args: &ServeArgs, slot: &ProtectionSlot) -> Result<&'static str, String> {
    let config = args
        .config()
        .map_err(|e| format!("invalid configuration: {e}"))?;
    let protection = config
        .protection()
        .map_err(|e| format!("cannot protect columns: {e}"))?;
    match protection {
        Some(protection) => {
            slot.replace(protection);
            Ok("policy and keyring")
        }
        None if slot.is_protecting() => Err("the configuration names no policy and keyring any \
             more; a reload never turns protection off (restart pgveil to do that)"
            .into()),
        None => Ok("no policy, as before"),
    }
}
