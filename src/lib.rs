//! pgveil: a transparent encryption proxy for PostgreSQL.

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
