//! `pgveil policy check`: the policy compared with the live database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{with_runtime, EXIT_CONFIG};
use crate::ops::check;
use crate::protect::protection::load_policy;
use crate::proxy::config::Config;

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Compare the policy with the live schema through the [maintenance]
    /// connection: tables, columns and their types, roles, key domains,
    /// guards, and how many values of each column are still plaintext or
    /// under an older key. Exits 0 when nothing is wrong, 1 with warnings
    /// only, 2 with errors (a table, column or key that does not exist, a
    /// type that cannot hold ciphertext) or when it cannot check.
    Check(CheckArgs),
}

#[derive(Args)]
pub(super) struct CheckArgs {
    /// pgveil's configuration: its policy, keyring and [maintenance]
    /// connection.
    #[arg(long, short)]
    config: PathBuf,
    /// `table` for people, `json` for tools.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only the schema: do not read the rows to count plaintext and old
    /// key versions.
    #[arg(long)]
    schema_only: bool,
}

/// How the report is printed.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum Format {
    Table,
    Json,
}

pub(super) fn policy(command: PolicyCommand) -> ExitCode {
    let PolicyCommand::Check(args) = command;
    with_runtime(async {
        match check_policy(&args).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("pgveil policy check: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        }
    })
}

async fn check_policy(args: &CheckArgs) -> Result<u8, String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    let path = config
        .policy
        .as_deref()
        .ok_or("the configuration names no policy")?;
    let policy = load_policy(path).map_err(|e| e.to_string())?;
    let (client, target) = crate::ops::maintenance::connect(&config)
        .await
        .map_err(|e| e.to_string())?;
    let keys = check::keyring_listing(&config);
    let report = check::run(
        &client,
        target.to_string(),
        &policy,
        keys,
        !args.schema_only,
    )
    .await
    .map_err(|e| format!("reading the database: {e}"))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Table => check::print_table(&report, &mut out),
        Format::Json => check::print_json(&report, &mut out),
    }
    .map_err(|e| e.to_string())?;
    Ok(report.exit_code())
}
