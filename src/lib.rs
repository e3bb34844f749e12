//! pgveil: a transparent encryption proxy for PostgreSQL.
//!
//! A client connects to pgveil as it would to PostgreSQL. pgveil encrypts
//! the values a policy protects before they reach the server, reveals them
//! on the way back only as the policy allows the reader, and records every
//! access in a tamper-evident audit log.
//!
//! # The data path, folder by folder
//!
//! A connection is accepted by [`proxy`], which reads its startup packets
//! and relays authentication; from then on two relays move whole protocol
//! messages ([`wire`]) between client and server, each handing the
//! messages it must look at to the tap of its direction:
//!
//! - client → server, [`write`]: SQL is analysed by [`sql`], literals and
//!   parameters bound for protected columns are encrypted with the keys of
//!   [`protect`], and COPY data is encrypted field by field;
//! - server → client, [`read`]: each protected value of a row or of COPY
//!   data is revealed, masked, pseudonymised or denied by the policy of
//!   [`protect`], and what was revealed goes to the [`audit`] trail.
//!
//! The two taps share one [`session`]: what the session declared (purpose,
//! actor, prepared statements, in the order the server runs them), its text
//! settings, and the catalog read at login. [`text`] reads text as the
//! client and the server spell it (encodings, bytea). [`ops`] runs it all:
//! the command line, logging, the demo, throwaway test clusters, and the
//! commands that work on the database itself (`policy check`, `migrate`).
//!
//! # Layers
//!
//! The folders are layers, lowest first: [`text`], [`wire`], [`protect`],
//! [`sql`], [`session`], [`audit`], [`write`], [`read`], [`proxy`],
//! [`ops`]. A file uses only its own layer and those before it, and no two
//! files import each other in a cycle; `tests/layers.rs` fails otherwise.
//! `docs/ARCHITECTURE.md` follows a message through in detail.
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
