//! The `pgveil` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::audit::{
    self, review, AuditHandle, AuditKeys, AuditRecord, AuditSink, Outcome, SqlState, Timestamp,
};
use crate::ops::logging;
use crate::protect::crypto::MasterKey;
use crate::protect::keyring::{KeyKind, Keyring};
use crate::protect::protection::{load_keyring, load_policy, Protection, ProtectionError};
use crate::proxy::config::{Config, LogFormat};
use crate::proxy::reload::{ProtectionSlot, TlsSlot};
use crate::proxy::server::Server;
use crate::proxy::tls::Tls;
use crate::wire::sqlstate::CONFIG_FILE_ERROR;

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "pgveil",
    version,
    about = "Transparent column-encryption proxy for PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accept PostgreSQL clients and relay them to the upstream server.
    Serve(ServeArgs),
    /// Start a throwaway PostgreSQL with pgveil in front of it.
    Demo(DemoArgs),
    /// Manage the master key and the keyring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check and read the access audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the SQL that adds the database's ciphertext guards: a CHECK
    /// constraint per protected column that admits only NULL and pgveil's
    /// ciphertext. Pipe it to psql as the tables' owner; it can run again.
    Guard(GuardArgs),
}

#[derive(Args)]
struct GuardArgs {
    /// Policy file or directory.
    #[arg(long)]
    policy: PathBuf,
    /// Print only the statements that validate the guards, checking the
    /// rows written before they were added.
    #[arg(long)]
    validate: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify every file of an audit log directory: the MAC chain across
    /// files (with the keyring), the seals and their signatures. Exits 1
    /// naming the first broken record on any edit, deletion, insertion,
    /// reordering or truncation.
    Verify {
        /// The audit log directory.
        dir: PathBuf,
        /// pgveil's configuration, for its keyring and master key: checks
        /// every record's MAC too.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Without the keyring: the audit public key (base64, from
        /// `pgveil audit public-key`); checks seals and signatures.
        #[arg(long, conflicts_with = "config")]
        public_key: Option<String>,
        /// Accept the newest file unsealed, as while pgveil is writing it.
        #[arg(long)]
        live: bool,
    },
    /// Print the records of an audit log directory that match every
    /// option given. Reads without verifying: run `pgveil audit verify`
    /// first to know the log was not altered.
    Search {
        /// The audit log directory.
        dir: PathBuf,
        #[command(flatten)]
        filter: review::Filter,
        /// Output: aligned columns, JSON lines as stored (without seq and
        /// mac) or CSV.
        #[arg(long, value_enum, default_value_t)]
        format: review::SearchFormat,
    },
    /// Write the access review of a period: per role, actor and protected
    /// column the rows by decision, statements, refusals and purposes;
    /// totals; alerts; and (html) charts of access over time. Reads
    /// without verifying: run `pgveil audit verify` first.
    Report {
        /// The audit log directory.
        dir: PathBuf,
        #[command(flatten)]
        period: review::Period,
        /// Output: text tables, CSV (a row per role, actor, column and
        /// decision) or one self-contained HTML page.
        #[arg(long, value_enum, default_value_t)]
        format: review::ReportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the audit log's public key (base64), for auditors who verify
    /// without the keyring.
    PublicKey {
        /// pgveil's configuration, for its keyring and master key.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the keyring, or add keys for the policy's new key domains.
    /// The master key comes from PGVEIL_MASTER_KEY or --master-key-file.
    Init {
        /// Policy file or directory.
        #[arg(long)]
        policy: PathBuf,
        /// Keyring file to create or extend.
        #[arg(long)]
        keyring: PathBuf,
        /// File holding the base64 master key.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    /// Print a new random master key (base64 of 32 bytes).
    NewMaster,
    /// Wrap the keyring's keys under a new master key: the same keys, so no
    /// stored value changes. The current master key comes from
    /// PGVEIL_MASTER_KEY or --master-key-file; afterwards point pgveil at the
    /// new one.
    Rewrap {
        /// Keyring file, replaced atomically.
        #[arg(long)]
        keyring: PathBuf,
        /// File holding the current base64 master key.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// File holding the new base64 master key (`pgveil keys new-master`),
        /// readable by its owner only.
        #[arg(long)]
        new_master_key_file: PathBuf,
    },
    /// List the keys of a keyring: domain, kind, version, id, when created
    /// and which version new values are written with. Prints no secret and
    /// needs no master key.
    List {
        /// Keyring file.
        #[arg(long)]
        keyring: PathBuf,
        /// `table` for people, `json` (one object per key) for tools.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

/// How `keys list` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Args)]
struct DemoArgs {
    /// Address to listen on, IP:PORT.
    #[arg(long, default_value = "127.0.0.1:6432")]
    listen: String,
}

#[derive(Args, Clone)]
struct ServeArgs {
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

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Demo(args) => demo(&args),
        Command::Keys(command) => keys(command),
        Command::Audit(command) => audit(command),
        Command::Guard(args) => guard(&args),
    }
}

fn audit(command: AuditCommand) -> ExitCode {
    let result = match command {
        AuditCommand::Verify {
            dir,
            config,
            public_key,
            live,
        } => audit_verify(&dir, config.as_deref(), public_key.as_deref(), live),
        AuditCommand::Search {
            dir,
            filter,
            format,
        } => review::search(&dir, &filter, format, &mut std::io::stdout().lock())
            .map(|()| true)
            .map_err(|e| e.to_string()),
        AuditCommand::Report {
            dir,
            period,
            format,
            out,
        } => review::report(&dir, period, format, out.as_deref())
            .map(|()| true)
            .map_err(|e| e.to_string()),
        AuditCommand::PublicKey { config } => audit_keyring(&config)
            .and_then(|keyring| keyring.audit_public_key_base64().map_err(|e| e.to_string()))
            .map(|key| {
                println!("{key}");
                true
            }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            eprintln!("pgveil audit: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The keyring named by a configuration file.
fn audit_keyring(config: &std::path::Path) -> Result<Keyring, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let path = config
        .keyring
        .clone()
        .ok_or("the configuration names no keyring")?;
    load_keyring(&path, config.master_key_file.as_deref()).map_err(|e| e.to_string())
}

/// Verifies a log; `Ok(false)` when it has been tampered with.
fn audit_verify(
    dir: &std::path::Path,
    config: Option<&std::path::Path>,
    public_key: Option<&str>,
    live: bool,
) -> Result<bool, String> {
    use base64::Engine;
    let keyring = config.map(audit_keyring).transpose()?;
    let (mac, public) = match (&keyring, public_key) {
        (Some(keyring), _) => (
            Some(*keyring.audit_mac_key().map_err(|e| e.to_string())?),
            keyring
                .audit_public_key_base64()
                .map_err(|e| e.to_string())?,
        ),
        (None, Some(key)) => (None, key.to_owned()),
        (None, None) => return Err("give --config (full check) or --public-key".into()),
    };
    let public = base64::engine::general_purpose::STANDARD
        .decode(public.trim())
        .map_err(|_| "the public key is not base64")?;
    let check = if live {
        audit::verify_live
    } else {
        audit::verify
    };
    match check(dir, mac.as_ref(), &public) {
        Ok(report) => {
            println!(
                "ok: {} file(s), {} record(s), seq {}..{}, record MACs {}",
                report.files,
                report.records,
                report.anchor_seq,
                report.last_seq,
                if report.macs_checked {
                    "checked"
                } else {
                    "not checked (no keyring)"
                }
            );
            if report.anchor_seq > 0 {
                println!(
                    "note: the log starts at seq {} (older files removed by retention)",
                    report.anchor_seq
                );
            }
            print_incomplete(&report);
            Ok(true)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(false)
        }
    }
}

/// What a verified log says about itself: records it could not write,
/// files sealed by recovery.
fn print_incomplete(report: &audit::VerifyReport) {
    if report.lost > 0 {
        println!(
            "INCOMPLETE: the log says {} record(s) were lost (never written), in {} gap record(s):",
            report.lost,
            report.gaps.len()
        );
        for gap in &report.gaps {
            println!("  {} (seq {}): {} lost", gap.at, gap.seq, gap.lost);
        }
    }
    for file in &report.recovered {
        println!("note: {file} was sealed by recovery, after a crash or a failed write");
    }
}

fn guard(args: &GuardArgs) -> ExitCode {
    match load_policy(&args.policy) {
        Ok(policy) if args.validate => print!("{}", crate::protect::guard::validate_sql(&policy)),
        Ok(policy) => print!("{}", crate::protect::guard::script(&policy)),
        Err(e) => {
            eprintln!("pgveil guard: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    ExitCode::SUCCESS
}

fn keys(command: KeysCommand) -> ExitCode {
    let result = match command {
        KeysCommand::Init {
            policy,
            keyring,
            master_key_file,
        } => keys_init(&policy, &keyring, master_key_file.as_deref()),
        KeysCommand::NewMaster => MasterKey::generate()
            .map(|(_, text)| println!("{}", text.as_str()))
            .map_err(|e| e.to_string()),
        KeysCommand::List { keyring, format } => keys_list(&keyring, format),
        KeysCommand::Rewrap {
            keyring,
            master_key_file,
            new_master_key_file,
        } => keys_rewrap(&keyring, master_key_file.as_deref(), &new_master_key_file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgveil keys: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn keys_init(
    policy: &std::path::Path,
    keyring: &std::path::Path,
    master_key_file: Option<&std::path::Path>,
) -> Result<(), String> {
    let policy = load_policy(policy).map_err(|e| e.to_string())?;
    let master = MasterKey::load(master_key_file).map_err(|e| e.to_string())?;
    let report = Keyring::init(keyring, &master, &policy.domains()).map_err(|e| e.to_string())?;
    let verb = if report.created { "created" } else { "updated" };
    println!("{verb} keyring {}", keyring.display());
    for domain in &report.added {
        println!("  added key for domain {domain}");
    }
    Ok(())
}

fn keys_rewrap(
    keyring: &std::path::Path,
    master_key_file: Option<&std::path::Path>,
    new_master_key_file: &std::path::Path,
) -> Result<(), String> {
    let old = MasterKey::load(master_key_file).map_err(|e| e.to_string())?;
    let new = MasterKey::from_file(new_master_key_file)
        .map_err(|e| format!("the new master key: {e}"))?;
    let count = Keyring::rewrap(keyring, &old, &new).map_err(|e| e.to_string())?;
    println!(
        "rewrapped {count} keys of {} under the master key in {}; \
         give pgveil that key (master_key_file or PGVEIL_MASTER_KEY) before it next starts",
        keyring.display(),
        new_master_key_file.display()
    );
    Ok(())
}

fn keys_list(keyring: &std::path::Path, format: ListFormat) -> Result<(), String> {
    let keys = Keyring::list(keyring).map_err(|e| e.to_string())?;
    match format {
        ListFormat::Json => {
            for key in &keys {
                println!("{}", serde_json::to_string(key).map_err(|e| e.to_string())?);
            }
        }
        ListFormat::Table => {
            let width = keys
                .iter()
                .map(|k| k.domain.len())
                .max()
                .unwrap_or(0)
                .max(6);
            println!(
                "{:width$}  {:7}  {:>7}  {:>4}  {:20}  WRITES",
                "DOMAIN", "KIND", "VERSION", "ID", "CREATED"
            );
            for key in &keys {
                let kind = match key.kind {
                    KeyKind::Data => "data",
                    KeyKind::Signing => "signing",
                };
                let writes = if key.current { "current" } else { "older" };
                println!(
                    "{:width$}  {kind:7}  {:>7}  {:>4}  {:20}  {writes}",
                    key.domain, key.version, key.id, key.created
                );
            }
        }
    }
    Ok(())
}

fn demo(args: &DemoArgs) -> ExitCode {
    let config = Config {
        listen: args.listen.clone(),
        log_level: "warn".into(),
        ..Config::default()
    };
    if let Err(e) = config.validate() {
        eprintln!("pgveil: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    logging::init(config.log_format, &config.log_level);
    with_runtime(async {
        match crate::ops::demo::run(config, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgveil demo: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

/// Runs `main` on a multi-threaded runtime with one worker per CPU.
fn with_runtime(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    with_workers(0, main)
}

/// Runs `main` on a multi-threaded runtime with `workers` threads (0: one
/// per CPU, or `TOKIO_WORKER_THREADS`).
fn with_workers(workers: usize, main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => {
            eprintln!("pgveil: cannot start the runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgveil: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let veil = match configured_protection(&config) {
        Ok(veil) => veil,
        Err(e) => {
            eprintln!("pgveil: cannot protect columns: {e}");
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
    let audit_keys = match audit_keys(&config) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("pgveil: cannot open the audit log: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init(config.log_format, &config.log_level);
    with_workers(config.worker_threads, async {
        let server = match Server::bind_with_tls(config.clone(), veil, tls).await {
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
        let slots = Slots {
            protection: server.protection(),
            tls: server.tls(),
        };
        tokio::spawn(reload_on_hangup(args.clone(), slots, audit));
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// The audit log's keys, when `[audit]` is configured.
fn audit_keys(config: &Config) -> Result<Option<Arc<AuditKeys>>, String> {
    let (Some(_), Some(path)) = (&config.audit, &config.keyring) else {
        return Ok(None);
    };
    let keyring =
        load_keyring(path, config.master_key_file.as_deref()).map_err(|e| e.to_string())?;
    let keys = AuditKeys::from_keyring(Arc::new(keyring)).map_err(|e| e.to_string())?;
    Ok(Some(Arc::new(keys)))
}

/// What a reload replaces.
struct Slots {
    protection: ProtectionSlot,
    tls: TlsSlot,
}

/// Reloads the policy, keyring, master key and TLS certificates on each
/// SIGHUP, for the sessions that start afterwards; a reload that fails
/// keeps all of them as they are. Each reload, applied or refused, is an
/// audit record. Without a handler SIGHUP would end the process.
async fn reload_on_hangup(args: ServeArgs, slots: Slots, audit: Option<AuditHandle>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP, so it cannot reload the policy: {e}");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        let reason = match reload(&args, &slots) {
            Ok(what) => {
                tracing::info!("reloaded on SIGHUP: {what}; sessions that start now use it");
                None
            }
            Err(e) => {
                tracing::error!(
                    "reload refused, the policy and TLS certificates in force stay: {e}"
                );
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

/// Reads the configuration again and, if its policy, keyring and TLS
/// certificates all load, makes them the ones new sessions use.
fn reload(args: &ServeArgs, slots: &Slots) -> Result<&'static str, String> {
    let config = args
        .config()
        .map_err(|e| format!("invalid configuration: {e}"))?;
    let protection =
        configured_protection(&config).map_err(|e| format!("cannot protect columns: {e}"))?;
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

/// The policy and keyring `config` names, loaded; `None` without them.
fn configured_protection(config: &Config) -> Result<Option<Protection>, ProtectionError> {
    match (&config.policy, &config.keyring) {
        (Some(policy), Some(keyring)) => {
            Protection::load(policy, keyring, config.master_key_file.as_deref()).map(Some)
        }
        _ => Ok(None),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
