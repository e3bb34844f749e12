//! Running pgveil, the layer above everything else.
//!
//! - [`cli`]: the `pgveil` command (serve, keys, guard, audit, migrate,
//!   demo).
//! - `logging`: the log subscriber, text or JSON.
//! - `demo`: a throwaway cluster with the sample CRM, behind pgveil.
//! - `check`: the policy compared with the live schema.
//! - `maintenance`: pgveil's own connection to the upstream server.
//! - `migrate`: `pgveil migrate`, the stored values brought in line with
//!   the policy and keyring.
//! - [`cluster`]: throwaway PostgreSQL clusters, for the demo and tests.

pub(crate) mod check;
pub mod cli;
pub mod cluster;
pub(crate) mod demo;
pub(crate) mod logging;
pub(crate) mod maintenance;
pub(crate) mod migrate;
