//! `pgveil keys`: the master key and the keyring (init, new-master,
//! list, rewrap).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::EXIT_CONFIG;
use crate::protect::crypto::MasterKey;
use crate::protect::keyring::{KeyKind, Keyring};
use crate::protect::protection::load_policy;

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
