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
//! aligned table, JSON lines or CSV. [`Report`] aggregates a [`Period`]:
//! per role, actor and protected column the statements and rows by
//! decision, refusals and purposes, totals, alerts and plaintext reads
//! over time; [`report`] writes it as text, CSV or one self-contained
//! HTML page.

mod filter;
mod html;
mod layout;
mod read;
mod report;
mod search;
mod text;
mod time;

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

use super::verify::Location;

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
    /// One row per role, actor, column and decision, with counts.
    Csv,
    /// One self-contained page with tables and charts, for offline use.
    Html,
}

/// Writes the access review of `period` in `dir` to the file `out`
/// (created only once the log has been read), or to standard output.
pub(crate) fn report(
    dir: &Path,
    period: Period,
    format: ReportFormat,
    out: Option<&Path>,
) -> Result<(), ReviewError> {
    let report = Report::build(Records::open(dir)?, period)?;
    match out {
        Some(path) => {
            let file = File::create(path).map_err(|source| ReviewError::Create {
                path: path.into(),
                source,
            })?;
            let mut file = BufWriter::new(file);
            write_report(&report, format, &mut file)?;
            file.flush()?;
        }
        None => write_report(&report, format, &mut io::stdout().lock())?,
    }
    Ok(())
}

/// Writes `report` in `format`.
pub(crate) fn write_report(
    report: &Report,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    match format {
        ReportFormat::Text => text::write_text(report, out),
        ReportFormat::Csv => text::write_csv(report, out),
        ReportFormat::Html => html::write_html(report, out),
    }?;
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_roles;
