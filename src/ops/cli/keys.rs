//! `pgveil keys`: the master key and the keyring (init, new-master,
//! list, rewrap, rotate, retire).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{with_runtime, EXIT_CONFIG, EXIT_FAILURE};
use crate::ops::check::{domain_keys, keyring_listing, rows};
use crate::protect::crypto::{MasterKey, Suite};
use crate::protect::custody::{CreateKey, Custody, CustodyConfig};
use crate::protect::keyring::{KeyKind, Keyring};
use crate::protect::protection::load_policy;
use crate::proxy::config::Config;

#[derive(Subcommand)]
pub(super) enum KeysCommand {
    /// Create the keyring, or add keys for the policy's new key domains.
    /// The master key comes from --config's [master_key], --master-key-file
    /// or PGVEIL_MASTER_KEY.
    Init {
        /// Policy file or directory (default: --config's `policy`).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Keyring file to create or extend (default: --config's `keyring`).
        #[arg(long)]
        keyring: Option<PathBuf>,
        #[command(flatten)]
        master: MasterArgs,
        /// With a pkcs11 master key: create the AES-256 key in the token if
        /// it has none by that label (sensitive, never extractable).
        #[arg(long)]
        create_key: bool,
        /// The suite of a new keyring's keys: `aes` (AES-256-GCM,
        /// AES-256-SIV, HMAC-SHA256, Ed25519; the default) or `sm` (SM4-GCM,
        /// SM4-SIV, HMAC-SM3, SM2). An existing keyring keeps its own.
        #[arg(long)]
        suite: Option<Suite>,
    },
    /// Print a new random master key (base64 of 32 bytes).
    NewMaster,
    /// Wrap the keyring's keys under a new master key, of the same provider
    /// or another (a file key into a PKCS#11 token, a token into KMS...):
    /// the same keys, so no stored value changes. Afterwards point pgveil
    /// at the new master key.
    Rewrap {
        /// Keyring file, replaced atomically (default: --config's `keyring`).
        #[arg(long)]
        keyring: Option<PathBuf>,
        #[command(flatten)]
        master: MasterArgs,
        /// File holding the new base64 master key (`pgveil keys new-master`),
        /// readable by its owner only.
        #[arg(
            long,
            required_unless_present = "new_config",
            conflicts_with = "new_config"
        )]
        new_master_key_file: Option<PathBuf>,
        /// A configuration whose [master_key] (or master_key_file) is the
        /// new master key: the one pgveil is to start with.
        #[arg(long)]
        new_config: Option<PathBuf>,
        /// With a pkcs11 new master key: create it in the token if absent.
        #[arg(long)]
        create_key: bool,
    },
    /// Add a new version of data keys (of every domain, or of those named):
    /// new values are written with it once pgveil reloads (SIGHUP), older
    /// versions still decrypt, and `pgveil migrate` moves stored values
    /// onto it. The audit keys are not rotated.
    Rotate {
        /// Keyring file, replaced atomically (default: --config's `keyring`).
        #[arg(long)]
        keyring: Option<PathBuf>,
        #[command(flatten)]
        master: MasterArgs,
        /// A key domain to rotate (repeatable); all when absent.
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Make the new versions, and those later rotations add, keys of
        /// this suite (`aes` or `sm`): how a keyring moves from one suite
        /// to the other (then run `pgveil migrate`). The audit keys keep
        /// theirs.
        #[arg(long)]
        suite: Option<Suite>,
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

/// Where a `keys` command finds the master key.
#[derive(Args)]
pub(super) struct MasterArgs {
    /// File holding the base64 master key (the file provider).
    #[arg(long, conflicts_with = "config")]
    master_key_file: Option<PathBuf>,
    /// pgveil's configuration: its [master_key] (any provider) or
    /// master_key_file, and its keyring and policy unless given.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl MasterArgs {
    /// The master key's provider, and the configuration if one is named.
    fn resolve(&self) -> Result<(CustodyConfig, Option<Config>), String> {
        match (&self.master_key_file, &self.config) {
            (Some(path), _) => Ok((CustodyConfig::File { path: path.clone() }, None)),
            (None, Some(path)) => {
                let config = load_config(path)?;
                Ok((config.custody(), Some(config)))
            }
            (None, None) => Ok((CustodyConfig::Env, None)),
        }
    }
}

fn load_config(path: &Path) -> Result<Config, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    config
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config)
}

/// `given`, else the configuration's `what`.
fn path_or_config(
    given: Option<PathBuf>,
    config: Option<&Config>,
    what: &str,
    of_config: impl FnOnce(&Config) -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    given
        .or_else(|| config.and_then(of_config))
        .ok_or_else(|| format!("give --{what}, or --config naming a {what}"))
}

/// Reaches the provider.
fn open(custody: &CustodyConfig, create: bool) -> Result<Box<dyn Custody>, String> {
    let create = if create {
        CreateKey::IfAbsent
    } else {
        CreateKey::No
    };
    custody.open(create).map_err(|e| e.to_string())
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
            master,
            create_key,
            suite,
        } => keys_init(policy, keyring, &master, create_key, suite),
        KeysCommand::NewMaster => MasterKey::generate()
            .map(|(_, text)| println!("{}", text.as_str()))
            .map_err(|e| e.to_string()),
        KeysCommand::List { keyring, format } => keys_list(&keyring, format),
        KeysCommand::Rewrap {
            keyring,
            master,
            new_master_key_file,
            new_config,
            create_key,
        } => keys_rewrap(
            keyring,
            &master,
            new_master_key_file,
            new_config.as_deref(),
            create_key,
        ),
        KeysCommand::Rotate {
            keyring,
            master,
            domains,
            suite,
        } => keys_rotate(keyring, &master, &domains, suite),
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

fn keys_init(
    policy: Option<PathBuf>,
    keyring: Option<PathBuf>,
    master: &MasterArgs,
    create_key: bool,
    suite: Option<Suite>,
) -> Result<(), String> {
    let (custody, config) = master.resolve()?;
    let policy = path_or_config(policy, config.as_ref(), "policy", |c| c.policy.clone())?;
    let keyring = path_or_config(keyring, config.as_ref(), "keyring", |c| c.keyring.clone())?;
    let policy = load_policy(&policy).map_err(|e| e.to_string())?;
    let master = open(&custody, create_key)?;
    let report = Keyring::init_in(&keyring, master.as_ref(), &policy.domains(), suite)
        .map_err(|e| e.to_string())?;
    let verb = if report.created { "created" } else { "updated" };
    let suite = match suite {
        Some(suite) if report.created => format!(", suite {suite}"),
        None if report.created => ", suite aes".into(),
        _ => String::new(),
    };
    println!(
        "{verb} keyring {} under {}{suite}",
        keyring.display(),
        master.describe()
    );
    for domain in &report.added {
        println!("  added key for domain {domain}");
    }
    Ok(())
}

fn keys_rewrap(
    keyring: Option<PathBuf>,
    master: &MasterArgs,
    new_master_key_file: Option<PathBuf>,
    new_config: Option<&Path>,
    create_key: bool,
) -> Result<(), String> {
    let (old_custody, config) = master.resolve()?;
    let keyring = path_or_config(keyring, config.as_ref(), "keyring", |c| c.keyring.clone())?;
    let (new_custody, next_step) = match (new_master_key_file, new_config) {
        (Some(path), _) => {
            let next = format!(
                "give pgveil the key in {} (master_key_file or PGVEIL_MASTER_KEY)",
                path.display()
            );
            (CustodyConfig::File { path }, next)
        }
        (None, Some(path)) => {
            let next = format!("start pgveil with the [master_key] of {}", path.display());
            (load_config(path)?.custody(), next)
        }
        (None, None) => return Err("give --new-master-key-file or --new-config".into()),
    };
    let old = open(&old_custody, false)?;
    let new = open(&new_custody, create_key).map_err(|e| format!("the new master key: {e}"))?;
    let count = Keyring::rewrap(&keyring, old.as_ref(), new.as_ref()).map_err(|e| e.to_string())?;
    println!(
        "rewrapped {count} keys of {} under {}; {next_step} before it next starts \
         (a running pgveil keeps the keys it has; SIGHUP after its configuration changes)",
        keyring.display(),
        new.describe()
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
                "{:width$}  {:7}  {:>7}  {:>4}  {:5}  {:20}  WRITES",
                "DOMAIN", "KIND", "VERSION", "ID", "SUITE", "CREATED"
            );
            for key in &keys {
                let kind = match key.kind {
                    KeyKind::Data => "data",
                    KeyKind::Signing => "signing",
                };
                let writes = if key.current { "current" } else { "older" };
                println!(
                    "{:width$}  {kind:7}  {:>7}  {:>4}  {:5}  {:20}  {writes}",
                    key.domain,
                    key.version,
                    key.id,
                    key.suite.name(),
                    key.created
                );
            }
        }
    }
    Ok(())
}

fn keys_rotate(
    keyring: Option<PathBuf>,
    master: &MasterArgs,
    domains: &[String],
    suite: Option<Suite>,
) -> Result<(), String> {
    let (custody, config) = master.resolve()?;
    let keyring = path_or_config(keyring, config.as_ref(), "keyring", |c| c.keyring.clone())?;
    let master = open(&custody, false)?;
    let added =
        Keyring::rotate_to(&keyring, master.as_ref(), domains, suite).map_err(|e| e.to_string())?;
    let of_suite = suite.map(|s| format!(", suite {s}")).unwrap_or_default();
    for (domain, key) in &added {
        println!(
            "rotated {domain}: version {} (key id {}{of_suite}) is now current",
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
    let master = open(&config.custody(), false).map_err(Refusal::Config)?;
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
    let key = Keyring::retire(keyring, master.as_ref(), domain, version).map_err(|e| match e {
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
