//! Accepting connections and running each session.

pub mod config;
pub(crate) mod relay;
pub mod server;
pub(crate) mod session;
