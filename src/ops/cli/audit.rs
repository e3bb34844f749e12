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

/// How `audit verify` reports, after its options in `--help`.
const VERIFY_STATUSES: &str = "\
Each file, and so each of its records, is reported as:
  verified     the MAC chain (keyring) and the signed seal were checked
  chained      the MAC chain was checked; the file is still open (--live),
               not sealed yet
  sealed-only  the seal's signature was checked (covers every byte of the
               file), the record MACs not (--public-key: no keyring)
  unverified   still open and read without the keyring: nothing checks
               its records, an edited record cannot show

The first line of the output, and the exit code, give the log's status
(the first that applies, in this order):
  FAILED      1  a check failed: a record or file was altered, removed,
                 inserted, reordered or truncated (named), or a file is
                 unsealed without --live
  UNVERIFIED  4  some records were not checked (an open file without the
                 keyring): run with --config, or after pgveil sealed it
  INCOMPLETE  3  every record checked, but the log says records are
                 missing: gap records (counted), or an unclean_shutdown
                 record (a run killed or crashed: what it still held in
                 memory is lost, uncounted); each is listed with its place
  ok          0  every record checked, none missing
Exit code 2: bad arguments or configuration.";

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Verify every file of an audit log directory: the MAC chain across
    /// files (with the keyring), the seals and their signatures, and the
    /// records that say something is missing.
    ///
    /// It names the first broken record on any edit, deletion, insertion,
    /// reordering or truncation, and never says more than it checked: see
    /// below for what each status and exit code means.
    #[command(after_help = VERIFY_STATUSES)]
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
        /// Accept the newest file unsealed, as while pgveil is writing it
        /// (without the keyring its records are then unverified).
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
        } => {
            return match audit_verify(&dir, config.as_deref(), public_key.as_deref(), live) {
                Ok(status) => ExitCode::from(status.exit_code()),
                Err(e) => {
                    eprintln!("pgveil audit: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
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
        } => verify_keys(config.as_deref(), public_key.as_deref(), live).and_then(|keys| {
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

/// The keys `audit verify` and `audit report` check a log with: the MAC
/// and public keys of the keyring `config` names, or the public key alone;
/// `None` when neither was given.
fn verify_keys(
    config: Option<&Path>,
    public_key: Option<&str>,
    live: bool,
) -> Result<Option<review::VerifyKeys>, String> {
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
    // `sm2:` + base64 for an SM2 key, base64 alone for Ed25519.
    let public = SealVerifier::parse(public.trim())
        .map_err(|e| e.to_string())?
        .raw();
    Ok(Some(review::VerifyKeys { mac, public, live }))
}

/// Verifies a log and prints what it found; `Err` for bad arguments.
fn audit_verify(
    dir: &Path,
    config: Option<&Path>,
    public_key: Option<&str>,
    live: bool,
) -> Result<audit::Status, String> {
    let keys = verify_keys(config, public_key, live)?
        .ok_or("give --config (full check) or --public-key")?;
    let check = if keys.live {
        audit::verify_live
    } else {
        audit::verify
    };
    let result = check(dir, keys.mac.as_ref(), &keys.public);
    let status = audit::Status::of(&result);
    match result {
        Ok(report) => print_report(&report, status),
        Err(e) => println!("{status}: {e}"),
    }
    if SealVerifier::from_raw(&keys.public).is_ok_and(|key| key.suite() == Suite::Sm) {
        println!("suite: sm (HMAC-SM3 record MACs, SM3 file hashes, SM2 seal signatures)");
    }
    Ok(status)
}

/// The summary line, then how far each file was checked, then what the
/// log says is missing and what was not checked.
fn print_report(report: &audit::VerifyReport, status: audit::Status) {
    use audit::Coverage;
    println!(
        "{status}: {} file(s), {} record(s), seq {}..{}, record MACs {}",
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
    for coverage in [
        Coverage::Verified,
        Coverage::Chained,
        Coverage::SealedOnly,
        Coverage::Unverified,
    ] {
        let files: Vec<&audit::FileCheck> = report
            .checked
            .iter()
            .filter(|file| file.coverage == coverage)
            .collect();
        if !files.is_empty() {
            println!(
                "  {coverage}: {} record(s) in {} file(s): {}",
                report.records_by(coverage),
                files.len(),
                coverage.meaning()
            );
        }
    }
    if report.anchor_seq > 0 {
        println!(
            "note: the log starts at seq {} (older files removed by retention)",
            report.anchor_seq
        );
    }
    print_incomplete(report);
    for file in report
        .checked
        .iter()
        .filter(|file| file.coverage == Coverage::Unverified)
    {
        println!(
            "UNVERIFIED: {} (seq {}..{}) is open and was read without the keyring: \
             its {} record(s) may have been altered and nothing here would show it; \
             verify with --config, or once pgveil has sealed the file",
            file.file,
            file.anchor_seq + 1,
            file.last_seq,
            file.records()
        );
    }
}

/// What a verified log says about itself: records it could not write,
/// runs that ended without sealing it, files sealed by recovery.
fn print_incomplete(report: &audit::VerifyReport) {
    if report.lost > 0 || !report.gaps.is_empty() {
        println!(
            "INCOMPLETE: the log says {} record(s) were lost (never written), in {} gap record(s):",
            report.lost,
            report.gaps.len()
        );
        for gap in &report.gaps {
            println!("  {} (seq {}): {} lost", gap.at, gap.seq, gap.lost);
        }
    }
    for end in &report.unclean {
        println!(
            "INCOMPLETE: {} (seq {}): the run before ended without a clean shutdown \
             after seq {}; records it still held in memory were lost, how many cannot be known",
            end.at, end.seq, end.previous_last_seq
        );
    }
    for file in &report.recovered {
        println!("note: {file} was sealed by recovery, after a crash or a failed write");
    }
}
