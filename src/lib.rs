//! pgveil: a transparent encryption proxy for PostgreSQL.
//!
//! A client connects to pgveil as if it were PostgreSQL. Each connection is
//! a [`session`]: it relays startup and authentication, then two
//! [`relay`]s move protocol messages ([`protocol`]) between client and
//! server. The [`server`] accepts connections and shuts down gracefully.
//! See `docs/ARCHITECTURE.md` for how a message flows through.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod logging;
pub mod policy;
pub mod protocol;
pub mod relay;
pub mod rewrite;
pub mod roles;
pub mod server;
pub mod session;
