//! Running pgveil: the command line, logging, the demo and test clusters.

pub mod cli;
pub mod cluster;
pub(crate) mod demo;
pub(crate) mod logging;
