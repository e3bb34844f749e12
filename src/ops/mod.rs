//! Running pgveil: the command line, logging, the demo and test clusters.

pub mod cli;
pub mod cluster;
pub mod demo;
pub mod logging;
