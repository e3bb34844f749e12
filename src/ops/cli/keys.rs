//! `pgveil keys`: the master key and the keyring (init, new-master,
//! list, rewrap, rotate, retire).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{with_runtime, EXIT_CONFIG, EXIT_FAILURE};
use crate::ops::check::{domain_keys, keyring_listing, rows};
use crate::protect::crypto::MasterKey;
use crate::protect::keyring::{KeyKind, Keyring};
use crate::protect::protection::load_policy;
use crate::proxy::config::Config;

#[derive(Subcommand)]
pub(super) enum KeysCommand {
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
    /// Add a new version of data keys (of every domain, or of those named):
    /// new values are written with it once pgveil reloads (SIGHUP), older
    /// versions still decrypt, and `pgveil migrate` moves stored values
    /// onto it. The audit keys are not rotated.
    Rotate {
        /// Keyring file, replaced atomically.
        #[arg(long)]
        keyring: PathBuf,
        /// File holding the base64 master key.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// A key domain to rotate (repeatable); all when absent.
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Remove an old version of a domain's data key. Refused while the
    /// database (through [maintenance]) still holds values under it, and
    /// for the current version.
    Retire {
        /// pgveil's configuration: its keyring, master key, policy and
        /// [maintenance] connection.
        #[arg(long, short)]
        config: PathBuf,
        /// The key domain.
        #[arg(long)]
        domain: String,
        /// The version to remove.
        #[arg(long)]
        version: u32,
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
pub(super) enum ListFormat {
    Table,
    Json,
}

pub(super) fn keys(command: KeysCommand) -> ExitCode {
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
        KeysCommand::Rotate {
            keyring,
            master_key_file,
            domains,
        } => keys_rotate(&keyring, master_key_file.as_deref(), &domains),
        KeysCommand::Retire {
            config,
            domain,
            version,
        } => {
            return with_runtime(async {
                match keys_retire(&config, &domain, version).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(Refusal::Config(e)) => {
                        eprintln!("pgveil keys retire: {e}");
                        ExitCode::from(EXIT_CONFIG)
                    }
                    Err(Refusal::InUse(e)) => {
                        eprintln!("pgveil keys retire: {e}");
                        ExitCode::from(EXIT_FAILURE)
                    }
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgveil keys: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn keys_init(policy: &Path, keyring: &Path, master_key_file: Option<&Path>) -> Result<(), String> {
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
    keyring: &Path,
    master_key_file: Option<&Path>,
    new_master_key_file: &Path,
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

fn keys_list(keyring: &Path, format: ListFormat) -> Result<(), String> {
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

fn keys_rotate(
    keyring: &Path,
    master_key_file: Option<&Path>,
    domains: &[String],
) -> Result<(), String> {
    let master = MasterKey::load(master_key_file).map_err(|e| e.to_string())?;
    let added = Keyring::rotate(keyring, &master, domains).map_err(|e| e.to_string())?;
    for (domain, key) in &added {
        println!(
            "rotated {domain}: version {} (key id {}) is now current",
            key.version, key.id
        );
    }
    println!(
        "next: reload pgveil (SIGHUP) so that it writes with the new versions, then run \
         `pgveil migrate` to move stored values onto them; until then a deterministic \
         column's equality search finds only values already under the new version, so \
         migrate soon after. Retire an old version with `pgveil keys retire` once \
         `pgveil policy check` finds no value under it."
    );
    Ok(())
}

/// Why `keys retire` did not retire.
enum Refusal {
    /// The configuration, keyring or database cannot be used.
    Config(String),
    /// Values are still stored under the version.
    InUse(String),
}

/// Retires a key version once no column of its domain holds a value
/// under it, as the database says.
async fn keys_retire(config: &Path, domain: &str, version: u32) -> Result<(), Refusal> {
    let config = Config::load(config).map_err(|e| Refusal::Config(e.to_string()))?;
    config
        .validate()
        .map_err(|e| Refusal::Config(e.to_string()))?;
    let (Some(policy_path), Some(keyring)) = (&config.policy, &config.keyring) else {
        return Err(Refusal::Config(
            "the configuration names no policy and keyring".into(),
        ));
    };
    let policy = load_policy(policy_path).map_err(|e| Refusal::Config(e.to_string()))?;
    let master = MasterKey::load(config.master_key_file.as_deref())
        .map_err(|e| Refusal::Config(e.to_string()))?;
    let keys = keyring_listing(&config).map_err(Refusal::Config)?;
    let (refs, current) = domain_keys(&keys, domain).ok_or_else(|| {
        Refusal::Config(format!(
            "keyring {} has no key domain {domain}",
            keyring.display()
        ))
    })?;
    let (client, target) = crate::ops::maintenance::connect(&config)
        .await
        .map_err(|e| Refusal::Config(e.to_string()))?;
    let mut in_use = Vec::new();
    let mut checked = 0;
    for column in policy.columns().filter(|c| c.domain == domain) {
        let kind = column_kind(&client, column)
            .await
            .map_err(Refusal::Config)?;
        let counts = rows::count(&client, column, &kind, &refs, current)
            .await
            .map_err(|e| Refusal::Config(format!("reading {target}: {e}")))?;
        checked += 1;
        if let Some(n) = counts.old_versions.get(&version).filter(|n| **n > 0) {
            in_use.push(format!(
                "{}.{}.{}: {n} value(s)",
                column.schema, column.table, column.column
            ));
        }
    }
    if !in_use.is_empty() {
        return Err(Refusal::InUse(format!(
            "version {version} of {domain} still encrypts stored values ({}); run \
             `pgveil migrate` first",
            in_use.join(", ")
        )));
    }
    if checked == 0 {
        eprintln!("note: no policy column uses key domain {domain}; no stored value was checked");
    }
    let key = Keyring::retire(keyring, &master, domain, version).map_err(|e| match e {
        crate::protect::keyring::KeyringError::RetireCurrent { .. } => {
            Refusal::InUse(e.to_string())
        }
        e => Refusal::Config(e.to_string()),
    })?;
    println!(
        "retired {domain} version {} (key id {}); reload pgveil (SIGHUP) so that it forgets it",
        key.version, key.id
    );
    Ok(())
}

/// `text` or `bytea`: how a protected column's values are read.
async fn column_kind(
    client: &tokio_postgres::Client,
    column: &crate::protect::policy::ColumnPolicy,
) -> Result<String, String> {
    let sql = format!(
        "SELECT {} FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
        crate::protect::guard::TYPE_KIND
    );
    let table = format!(
        "{}.{}",
        rows::quote(&column.schema),
        rows::quote(&column.table)
    );
    let row = client
        .query_opt(&sql, &[&table, &column.column])
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "column {}.{}.{} does not exist; run `pgveil policy check`",
                column.schema, column.table, column.column
            )
        })?;
    Ok(row.get(0))
}
