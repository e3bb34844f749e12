//! pgveil: a transparent encryption proxy for PostgreSQL.
#![deny(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

pub mod audit;
#[cfg(test)]
mod fuzz;
pub mod ops;
pub mod protect;
pub mod proxy;
pub mod read;
pub mod session;
pub mod sql;
pub mod text;
pub mod wire;
pub mod write;
