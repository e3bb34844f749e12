//! One session's state, shared by its two directions.
//!
//! - [`ledger`]: what the session has declared (purpose, actor, prepared
//!   statements), applied in the order the server answers.
//! - `catalog`: what is read on the session's connection at login: the
//!   reader's roles, the protected columns' types and guards, the objects
//!   that could stand in for them.
//! - [`protection`]: the protection in force, which reloads replace, and
//!   the chain of those a session has adopted.
//! - `state`: the state both taps hold (the ledger, the client encoding,
//!   `standard_conforming_strings`, refusals and COPY TO in flight).
//! - `tap`: the interface a direction's handler offers its relay.

pub(crate) mod catalog;
pub mod ledger;
pub mod protection;
pub(crate) mod state;
pub(crate) mod tap;
