//! `pgveil demo`: the sample CRM behind pgveil, on a throwaway PostgreSQL.
//!
//! The demo starts a cluster from the installed server programs, loads the
//! sample schema (`policies/crm.sql`) directly, makes a keyring for the
//! sample policy (`policies/crm.toml`) with a master key that lives only in
//! memory, serves on the configured address, writes the sample customers
//! (`policies/crm-sample.sql`) through pgveil so they are stored encrypted,
//! and prints commands to try as each role. On Ctrl-C it stops everything
//! and removes what it created.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::ops::cluster::{server_bin_dir, Cluster, ClusterError, Options};
use crate::protect::crypto::MasterKey;
use crate::protect::keyring::Keyring;
use crate::protect::policy::Policy;
use crate::protect::protection::Protection;
use crate::proxy::config::Config;
use crate::proxy::server::Server;

const SCHEMA: &str = include_str!("../../policies/crm.sql");
const POLICY: &str = include_str!("../../policies/crm.toml");
const SAMPLE: &str = include_str!("../../policies/crm-sample.sql");
/// Every demo login's password.
const PASSWORD: &str = "pgveil-demo";
/// Demo logins and the policy role each belongs to.
const USERS: &[(&str, &str)] = &[
    ("crm_user", "crm_app"),
    ("support_user", "support"),
    ("analyst_user", "analyst"),
    ("kyc_user", "kyc_officer"),
];

/// Why the demo could not run.
#[derive(Debug, Error)]
pub(super) enum DemoError {
    #[error("cannot start PostgreSQL: {0}")]
    Cluster(#[from] ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error("cannot set up the sample CRM: {0}")]
    Setup(String),
}

/// Runs the demo until `shutdown` completes.
pub(super) async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(&Options {
            superuser: ("postgres".into(), PASSWORD.into()),
            hba: Vec::new(),
        })
    })?;
    tokio::task::block_in_place(|| load_schema(&cluster))?;
    let veil = tokio::task::block_in_place(|| make_veil(&cluster.dir))?;
    config.upstream = cluster.addr();
    let listen_error = |source| DemoError::Listen {
        addr: config.listen.clone(),
        source,
    };
    let server = Server::bind(config.clone(), Some(veil))
        .await
        .map_err(listen_error)?;
    let listen = server.local_addr().map_err(listen_error)?.to_string();
    let serving = tokio::spawn(server.run(shutdown));
    tokio::task::block_in_place(|| psql(&listen, "crm_user", SAMPLE))?;
    println!("{}", instructions(&listen, &cluster.addr()));
    let _ = serving.await;
    tokio::task::block_in_place(|| drop(cluster));
    println!("pgveil demo: stopped PostgreSQL and removed its files");
    Ok(())
}

/// The schema and the demo logins, directly on the server.
fn load_schema(cluster: &Cluster) -> Result<(), DemoError> {
    let mut sql = String::from(SCHEMA);
    for (user, role) in USERS {
        sql.push_str(&format!(
            "\nCREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}' IN ROLE {role};"
        ));
    }
    psql(&cluster.addr(), "postgres", &sql)
}

fn make_veil(dir: &Path) -> Result<Protection, DemoError> {
    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    let policy = || Policy::from_str("policies/crm.toml", POLICY).map_err(|e| setup(&e));
    let (master, _) = MasterKey::generate().map_err(|e| setup(&e))?;
    let path: PathBuf = dir.join("keyring.toml");
    Keyring::init(&path, &master, &policy()?.domains()).map_err(|e| setup(&e))?;
    let keyring = Keyring::load(&path, &master).map_err(|e| setup(&e))?;
    Ok(Protection::new(policy()?, keyring))
}

/// Runs `sql` with the psql that comes with the server programs.
fn psql(addr: &str, user: &str, sql: &str) -> Result<(), DemoError> {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
    let out = Command::new(server_bin_dir()?.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port])
        .args(["-U", user, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .map_err(|e| DemoError::Setup(format!("cannot run psql: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(DemoError::Setup(
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

fn instructions(proxy: &str, direct: &str) -> String {
    let conn = |addr: &str, user: &str| {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
        format!("psql \"host={host} port={port} user={user} password={PASSWORD} dbname=postgres\"")
    };
    let query = "SELECT full_name, email, phone, national_id FROM customers;";
    let mut text = String::from(
        "pgveil demo is running: the sample CRM, with personal data encrypted.\n\n\
         Through pgveil, as each role (then try the query below):\n",
    );
    for (user, role) in USERS {
        text.push_str(&format!("  {role:<12} {}\n", conn(proxy, user)));
    }
    text.push_str(&format!(
        "\n  {query}\n\
         \x20 SET pgveil.purpose = 'kyc';   -- crm_app and kyc_officer then see national_id\n\
         \x20 SELECT * FROM customers WHERE email = 'li.na@example.com';\n\
         \x20 SELECT * FROM customers ORDER BY full_name;   -- refused: encrypted column\n\n\
         PostgreSQL directly, as a DBA, a backup or a dump sees it (ciphertext):\n  {}\n\n\
         Press Ctrl-C to stop; everything the demo created is removed.",
        conn(direct, "postgres")
    ));
    text
}
