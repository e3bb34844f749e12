//! `pgveil audit`: verify, search and report on the access audit log, and
//! print its public key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_CONFIG, EXIT_FAILURE};
use crate::audit::{self, review};
use crate::protect::crypto::{SealVerifier, Suite};
use crate::protect::keyring::Keyring;
use crate::protect::protection::load_keyring;
use crate::proxy::config::Config;

#[derive(Subcommand)]
pub(super) enum AuditCommand {
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
        /// Without the keyring: the audit public key (from `pgveil audit
        /// public-key`: base64 of an Ed25519 key, or `sm2:` and base64 of an
        /// SM2 key); checks seals and signatures.
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

pub(super) fn audit(command: AuditCommand) -> ExitCode {
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
fn audit_keyring(config: &Path) -> Result<Keyring, String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let path = config
        .keyring
        .clone()
        .ok_or("the configuration names no keyring")?;
    load_keyring(&path, &config.custody()).map_err(|e| e.to_string())
}

/// Verifies a log; `Ok(false)` when it has been tampered with.
fn audit_verify(
    dir: &Path,
    config: Option<&Path>,
    public_key: Option<&str>,
    live: bool,
) -> Result<bool, String> {
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
    let public = SealVerifier::parse(&public).map_err(|e| e.to_string())?;
    let suite = public.suite();
    let public = public.raw();
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
            if suite == Suite::Sm {
                println!("suite: sm (HMAC-SM3 record MACs, SM3 file hashes, SM2 seal signatures)");
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
