//! `pgveil audit`: verify, search and report on the access audit log, and
//! print its public key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_CONFIG, EXIT_FAILURE};
use crate::audit::{self, review};
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
    /// Write the access review of a period (the whole log by default):
    /// the verification first (status, files, records, key fingerprint),
    /// the time it was generated and the SHA-256 of the report's data;
    /// then per policy role and login user the statements, reads, writes,
    /// refusals and failed logins; the refused statements and failed
    /// logins; reads (without a declared purpose flagged) and writes per
    /// role, user, actor and column; alerts, one per statement; and
    /// (html) charts over time fit to the data. Without --config or
    /// --public-key the log is not verified and the report says so.
    /// Exits 1 when verification failed (the report is written all the
    /// same, saying so), 2 on an error.
    Report {
        /// The audit log directory.
        dir: PathBuf,
        #[command(flatten)]
        period: review::Period,
        /// pgveil's configuration, for its keyring and master key: the
        /// log is verified with every record's MAC, seals and signatures.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Without the keyring: the audit public key (base64, from
        /// `pgveil audit public-key`); verifies seals and signatures.
        #[arg(long, conflicts_with = "config")]
        public_key: Option<String>,
        /// Accept the newest file unsealed, as while pgveil is writing it.
        #[arg(long)]
        live: bool,
        /// Output: text tables, CSV (one table, a row per item with its
        /// section first), JSON (the report's data, whose SHA-256 the
        /// other formats print) or one self-contained HTML page.
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
            config,
            public_key,
            live,
            format,
            out,
        } => report_keys(config.as_deref(), public_key.as_deref(), live).and_then(|keys| {
            review::report(&dir, period, keys.as_ref(), format, out.as_deref())
                .map(|status| status != review::VerifyStatus::Failed)
                .map_err(|e| e.to_string())
        }),
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

/// The keys `audit report` verifies the log with, if any were given.
fn report_keys(
    config: Option<&Path>,
    public_key: Option<&str>,
    live: bool,
) -> Result<Option<review::VerifyKeys>, String> {
    use base64::Engine;
    let (mac, public) = match (config, public_key) {
        (Some(config), _) => {
            let keyring = audit_keyring(config)?;
            (
                Some(*keyring.audit_mac_key().map_err(|e| e.to_string())?),
                keyring
                    .audit_public_key_base64()
                    .map_err(|e| e.to_string())?,
            )
        }
        (None, Some(key)) => (None, key.to_owned()),
        (None, None) => return Ok(None),
    };
    let public = base64::engine::general_purpose::STANDARD
        .decode(public.trim())
        .map_err(|_| "the public key is not base64")?;
    Ok(Some(review::VerifyKeys { mac, public, live }))
}

/// Verifies a log; `Ok(false)` when it has been tampered with.
fn audit_verify(
    dir: &Path,
    config: Option<&Path>,
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
