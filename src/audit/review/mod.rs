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
mod layout;
mod read;
mod search;
mod time;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use filter::{EventKind, Filter, OutcomeFilter};
pub use read::Records;
pub use search::{search, SearchFormat};
pub use time::{parse_since, parse_until, Period};

use super::verify::Location;

/// Why a directory cannot be searched or reported on.
#[derive(Debug, Error)]
pub enum ReviewError {
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
    #[error("cannot write the output: {0}")]
    Write(#[from] io::Error),
}

#[cfg(test)]
mod tests;
