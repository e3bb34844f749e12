//! pgveil: a transparent encryption proxy for PostgreSQL.
//!
//! A client connects to pgveil as if it were PostgreSQL. Each connection is
//! a [`session`]: it relays startup and authentication, then two
//! [`relay`]s move protocol messages ([`protocol`]) between client and
//! server. The [`server`] accepts connections and shuts down gracefully.
//! Protected values are encrypted by [`crypto`] with keys from the
//! [`keyring`].
//! See `docs/ARCHITECTURE.md` for how a message flows through.

pub mod audit;
pub mod bulk;
pub mod bytea;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod copy_binary;
pub mod copy_in;
pub mod copy_out;
pub mod copy_syntax;
pub mod crypto;
pub mod declared;
pub mod demo;
pub mod encoding;
pub mod encrypt;
#[cfg(test)]
mod fuzz;
pub mod guard;
pub mod keyring;
pub mod logging;
pub mod policy;
pub mod protocol;
pub mod relay;
pub mod reveal;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod shape;
pub mod trail;
pub mod veil;
