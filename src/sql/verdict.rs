//! What analysing a statement text answers: relay it as it is, relay a
//! rewritten text, encrypt the COPY data that follows, or refuse it
//! ([`Verdict`]); with what each statement does to the session's
//! SQL-prepared statements ([`Analysis`]).

use super::columns::ColumnRefId;
use super::copy::CopyIn;
use super::refusal::Refusal;
use super::settings::Effect;
use super::targets::ParamSlot;

/// What to do with a statement text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it as it is.
    Unchanged,
    /// Relay this text instead.
    Rewritten(Rewrite),
    /// Relay it as it is, but encrypt the COPY data that follows.
    CopyIn(CopyIn),
    /// Answer with this error instead of relaying it.
    Refused(Refusal),
}

/// A statement text with its protected values encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The text to relay instead.
    pub sql: String,
    /// The statement's own `$n` parameters to encrypt at Bind time.
    pub params: Vec<ParamSlot>,
    /// The protected columns the text writes values to, for the audit log.
    pub written: Vec<ColumnRefId>,
}

/// What to do with a statement text, and what each of its statements
/// does to the session's SQL-prepared statements once the server has run
/// it ([`Effect::Prepare`], [`Effect::Deallocate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Analysis {
    /// What to do with the text.
    pub verdict: Verdict,
    /// By statement, in order; empty when the text was not parsed or is
    /// refused.
    pub effects: Vec<Vec<Effect>>,
}
