//! State of one session that both directions share.

pub(crate) mod catalog;
pub mod ledger;
pub(crate) mod state;
pub(crate) mod tap;
