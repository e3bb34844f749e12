//! The `pgveil` command line: one file per command, as their `--help`
//! lists them; this file parses and dispatches, and holds what they share
//! (exit codes, the runtime, the shutdown signal).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::ops::logging;
use crate::proxy::config::Config;
use approve::{approve, ApproveArgs};
use audit::{audit, AuditCommand};
use guard::{guard, GuardArgs};
use keys::{keys, KeysCommand};
use migrate::{migrate, MigrateArgs};
use policy::{policy, PolicyCommand};
use serve::{serve, ServeArgs};

mod approve;
mod audit;
mod guard;
mod keys;
mod migrate;
mod policy;
mod serve;

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
    /// Compare the column policy with the live database.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check and read the access audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the SQL that adds the database's ciphertext guards: a CHECK
    /// constraint per protected column that admits only NULL and pgveil's
    /// ciphertext. Pipe it to psql as the tables' owner; it can run again.
    Guard(GuardArgs),
    /// Bring the stored values in line with the policy and keyring, online:
    /// encrypt plaintext left in protected columns, re-encrypt values under
    /// an old key version or in the other mode, decrypt columns taken out
    /// of the policy (--decrypt). Resumable; audited; validates the guards.
    Migrate(MigrateArgs),
    /// Approve bulk access: more plaintext rows of a column with an
    /// approval limit (approval = { rows = N } in the policy), for the
    /// sessions of one policy role that declare one ticket, until it
    /// expires or its rows are used; signed with the audit key. Also
    /// --list and --revoke.
    Approve(ApproveArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// Address to listen on, IP:PORT.
    #[arg(long, default_value = "127.0.0.1:6432")]
    listen: String,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Demo(args) => demo(&args),
        Command::Keys(command) => keys(command),
        Command::Audit(command) => audit(command),
        Command::Policy(command) => policy(command),
        Command::Guard(args) => guard(&args),
        Command::Migrate(args) => migrate(&args),
        Command::Approve(args) => approve(&args),
    }
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
