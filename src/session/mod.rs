//! State of one session that both directions share.

pub mod catalog;
pub mod ledger;
pub mod state;
pub mod tap;
