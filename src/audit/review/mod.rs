//! Reading the audit log for people: `pgveil audit search` finds records,
//! `pgveil audit report` summarizes a period as an access review.
//!
//! Both read every record of a directory in file order ([`Records`]),
//! skipping each file's header and seal and ignoring a last line that was
//! only partly written (an open file). Reading does *not* check the MAC
//! chain or the seals: that is [`verify`](super::verify), which whoever
//! relies on a search or a report should run on the same directory first.
//!
//! [`Filter`] selects records for a search, written by [`search`] as an
//! aligned table, JSON lines or CSV. [`Report`] aggregates a [`Period`]
//! (the whole log by default) as an access review: per policy role and
//! login user the statements, reads, writes, refusals and failed logins;
//! the refused statements and failed logins themselves; per role, user,
//! actor and protected column the reads by decision (those without a
//! declared purpose flagged) and the writes; one alert per statement
//! over a bulk threshold; plaintext reads over time. [`report`] verifies
//! the log first when given its keys ([`verified`]) and writes the review
//! as text, CSV, JSON or one self-contained HTML page, each headed by the
//! verification, the time it was generated and the SHA-256 of the
//! report's data (the JSON form).

mod csv;
mod filter;
mod html;
mod layout;
mod read;
mod report;
mod search;
mod text;
mod time;
mod verified;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use thiserror::Error;

pub(crate) use filter::Filter;
pub(crate) use read::Records;
pub(crate) use report::Report;
pub(crate) use search::{search, SearchFormat};
pub(crate) use time::Period;
pub(crate) use verified::Status as VerifyStatus;
pub(crate) use verified::VerifyKeys;

use super::verify::Location;
use super::Timestamp;

/// Why a directory cannot be searched or reported on.
#[derive(Debug, Error)]
pub(crate) enum ReviewError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no audit files in {0}")]
    NoFiles(PathBuf),
    #[error("{at}: not an audit file header")]
    NoHeader { at: Location },
    #[error("{at}: not an audit record ({source})")]
    Unparseable {
        at: Location,
        source: serde_json::Error,
    },
    #[error("the period is empty: --since must be before --until")]
    EmptyPeriod,
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write the output: {0}")]
    Write(#[from] io::Error),
}

/// How `report` writes the review.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    /// Readable text tables.
    #[default]
    Text,
    /// One table, a row per item with its section first (for
    /// spreadsheets).
    Csv,
    /// The report's data, one JSON object: what the digest in the other
    /// formats is the SHA-256 of.
    Json,
    /// One self-contained page with tables and charts, for offline use.
    Html,
}

/// What heads every format besides the report's data: when it was
/// generated and the digest of the data.
pub(crate) struct Head {
    pub generated: Timestamp,
    /// SHA-256 (hex) of [`Report::json`].
    pub digest: String,
}

impl Head {
    pub(crate) fn of(report: &Report, generated: Timestamp) -> Self {
        Self {
            generated,
            digest: report.digest(),
        }
    }
}

/// Writes the access review of `period` in `dir` to the file `out`
/// (created only once the log has been read), or to standard output.
/// With `keys`, the log is verified first and the review says how that
/// went; returns the verification's status.
pub(crate) fn report(
    dir: &Path,
    period: Period,
    keys: Option<&VerifyKeys>,
    format: ReportFormat,
    out: Option<&Path>,
) -> Result<verified::Status, ReviewError> {
    let verification = match keys {
        Some(keys) => verified::verify_dir(dir, keys),
        None => verified::Verification::not_run(),
    };
    let report = Report::build(Records::open(dir)?, period, verification)?;
    let head = Head::of(&report, Timestamp::now());
    match out {
        Some(path) => {
            let file = File::create(path).map_err(|source| ReviewError::Create {
                path: path.into(),
                source,
            })?;
            let mut file = BufWriter::new(file);
            write_report(&report, &head, format, &mut file)?;
            file.flush()?;
        }
        None => write_report(&report, &head, format, &mut io::stdout().lock())?,
    }
    Ok(report.verification.status)
}

/// Writes `report` in `format`.
pub(crate) fn write_report(
    report: &Report,
    head: &Head,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    match format {
        ReportFormat::Text => text::write_text(report, head, out),
        ReportFormat::Csv => csv::write_csv(report, head, out),
        ReportFormat::Json => out.write_all(report.json().as_bytes()),
        ReportFormat::Html => html::write_html(report, head, out),
    }?;
    Ok(())
}

#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_roles;
