//! `pgveil migrate`: the flags, and the run (`ops::migrate`) with its exit
//! code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use super::{shutdown_signal, with_runtime, EXIT_CONFIG};
use crate::ops::logging;
use crate::ops::migrate::{self, DecryptColumn, Options, DEFAULT_BATCH_SIZE};
use crate::proxy::config::Config;

#[derive(Args)]
pub(super) struct MigrateArgs {
    /// Configuration file: its policy, keyring and master key, its
    /// upstream and [maintenance] login, its [audit] directory.
    #[arg(long, short)]
    config: PathBuf,
    /// Turn a column taken out of the policy back into plaintext:
    /// SCHEMA.TABLE.COLUMN (or TABLE.COLUMN, in public). Repeatable.
    #[arg(long, value_name = "SCHEMA.TABLE.COLUMN")]
    decrypt: Vec<String>,
    /// The key domain of the --decrypt columns' values, when it is not
    /// the column's own SCHEMA.TABLE.COLUMN (a shared `key_domain` of the
    /// policy). Columns of different domains take a run each.
    #[arg(long, requires = "decrypt")]
    key_domain: Option<String>,
    /// Print what would change, per column, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rows per batch; each batch is one short transaction.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
    /// Read at most this many rows a second, to spare a busy server.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_rows_per_second: Option<u64>,
    /// Where to keep the progress of an interrupted run (default: next to
    /// the keyring, KEYRING.migrate-state.json).
    #[arg(long)]
    state: Option<PathBuf>,
}

pub(super) fn migrate(args: &MigrateArgs) -> ExitCode {
    let config = match Config::load(&args.config).and_then(|c| c.validate().map(|()| c)) {
        Ok(config) => config,
        Err(e) => return refuse(format!("invalid configuration: {e}")),
    };
    let protection = match config.protection() {
        Ok(Some(protection)) => protection,
        Ok(None) => return refuse("the configuration names no policy and keyring".into()),
        Err(e) => return refuse(format!("cannot load the protection: {e}")),
    };
    let decrypt = match args
        .decrypt
        .iter()
        .map(|name| decrypt_column(name, args.key_domain.as_deref()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(decrypt) => decrypt,
        Err(e) => return refuse(e),
    };
    let options = Options {
        decrypt,
        dry_run: args.dry_run,
        batch_size: args.batch_size as usize,
        max_rows_per_second: args.max_rows_per_second,
        state: args.state.clone(),
    };
    logging::init(config.log_format, "warn");
    with_runtime(async {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            eprintln!("pgveil migrate: stopping after the batch under way");
            stopping.store(true, Ordering::Relaxed);
        });
        match migrate::run(&config, &protection, &options, &stop).await {
            Ok(report) => {
                let _ = report.print(&mut std::io::stdout().lock());
                ExitCode::from(report.exit_code())
            }
            Err(e) => refuse(e.to_string()),
        }
    })
}

fn refuse(message: String) -> ExitCode {
    eprintln!("pgveil migrate: {message}");
    ExitCode::from(EXIT_CONFIG)
}

/// A `--decrypt` argument: `SCHEMA.TABLE.COLUMN` or `TABLE.COLUMN`,
/// unquoted names folded to lowercase as PostgreSQL (and the policy) fold
/// them; its key domain is `domain` or the qualified column name.
fn decrypt_column(name: &str, domain: Option<&str>) -> Result<DecryptColumn, String> {
    let parts: Vec<String> = name.split('.').map(str::to_ascii_lowercase).collect();
    let (schema, table, column) = match parts.as_slice() {
        [table, column] => ("public".to_owned(), table.clone(), column.clone()),
        [schema, table, column] => (schema.clone(), table.clone(), column.clone()),
        _ => return Err(format!("--decrypt {name}: expected SCHEMA.TABLE.COLUMN")),
    };
    if [&schema, &table, &column].iter().any(|p| p.is_empty()) {
        return Err(format!("--decrypt {name}: expected SCHEMA.TABLE.COLUMN"));
    }
    let domain = domain.map_or_else(|| format!("{schema}.{table}.{column}"), str::to_owned);
    Ok(DecryptColumn {
        schema,
        table,
        column,
        domain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_names_are_qualified_and_folded() {
        let column = decrypt_column("CRM.Customers.Email", None).unwrap();
        assert_eq!(
            (
                column.schema.as_str(),
                column.table.as_str(),
                column.column.as_str()
            ),
            ("crm", "customers", "email")
        );
        assert_eq!(column.domain, "crm.customers.email");
        let column = decrypt_column("customers.email", Some("contact")).unwrap();
        assert_eq!(
            (column.schema.as_str(), column.domain.as_str()),
            ("public", "contact")
        );
        for bad in ["email", "a.b.c.d", "a..c"] {
            assert!(decrypt_column(bad, None).is_err(), "{bad}");
        }
    }
}
