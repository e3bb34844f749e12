//! Accepting connections and running each session.

pub mod config;
pub mod relay;
pub mod server;
pub mod session;
