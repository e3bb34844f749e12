//! `pgveil demo`: a throwaway PostgreSQL with pgveil in front of it.
//!
//! The demo starts a cluster from the installed server programs, serves on
//! the configured address, prints commands to try, and on Ctrl-C stops
//! everything and removes what it created.

use std::io;

use thiserror::Error;

use crate::cluster::{Cluster, ClusterError, Options};
use crate::config::Config;
use crate::server::Server;

/// Login role and password of the demo.
const DEMO_USER: &str = "postgres";
const DEMO_PASSWORD: &str = "pgveil-demo";

/// Why the demo could not run.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error("cannot start PostgreSQL: {0}")]
    Cluster(#[from] ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
}

/// Runs the demo until `shutdown` completes.
pub async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(&Options {
            superuser: (DEMO_USER.into(), DEMO_PASSWORD.into()),
            hba: Vec::new(),
        })
    })?;
    config.upstream = cluster.addr();
    let server = Server::bind(config.clone(), None)
        .await
        .map_err(|source| DemoError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let listen = server.local_addr().map_err(|source| DemoError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    println!("{}", instructions(&listen.to_string(), &cluster.addr()));
    server.run(shutdown).await;
    tokio::task::block_in_place(|| drop(cluster));
    println!("pgveil demo: stopped PostgreSQL and removed its files");
    Ok(())
}

fn instructions(proxy: &str, direct: &str) -> String {
    let conn = |addr: &str| {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
        format!("psql \"host={host} port={port} user={DEMO_USER} password={DEMO_PASSWORD} dbname=postgres\"")
    };
    format!(
        "pgveil demo is running.\n\n\
         Through pgveil (what the CRM uses):\n  {}\n\n\
         PostgreSQL directly (what a DBA, a backup or a dump sees):\n  {}\n\n\
         Press Ctrl-C to stop; everything the demo created is removed.",
        conn(proxy),
        conn(direct)
    )
}
