//! pgveil's own connection to the upstream server (`[maintenance]`), for
//! the commands that read the schema or rewrite stored values: `policy
//! check`, `migrate`, `keys retire`, and `serve`'s check of its policy.
//!
//! The session is pinned before any query: `search_path` is `pg_catalog`
//! only, strings conform to the standard and the encoding is UTF-8, so
//! that what pgveil sends means the same whatever the role's or the
//! database's defaults say. Every name pgveil writes into a query is
//! schema-qualified and quoted.

use std::path::PathBuf;

use thiserror::Error;
use tokio_postgres::{Client, NoTls};

use crate::protect::secret_file::{read_private, SecretFileError};
use crate::proxy::config::Config;

/// The settings every maintenance session runs under.
const PINNED: &str = "SET search_path = pg_catalog, pg_temp; \
    SET standard_conforming_strings = on; \
    SET client_encoding = 'UTF8'; \
    SET bytea_output = 'hex'; \
    SET DateStyle = 'ISO'";

/// The maintenance connection cannot be made.
#[derive(Debug, Error)]
pub(crate) enum MaintenanceError {
    /// No role to log in as.
    #[error(
        "no role to connect to {upstream} as: set `user` in [maintenance] \
         (or PGUSER)"
    )]
    NoUser {
        /// The upstream server.
        upstream: String,
    },
    /// The password file cannot be used.
    #[error("[maintenance] password_file: {0}")]
    Password(#[from] SecretFileError),
    /// The password file is not UTF-8 text.
    #[error("[maintenance] password_file {0} is not UTF-8 text")]
    PasswordText(PathBuf),
    /// The server refused or could not be reached.
    #[error("cannot connect to {upstream} database {database} as {user}: {}", reason(.source))]
    Connect {
        /// The upstream server.
        upstream: String,
        /// The database.
        database: String,
        /// The role.
        user: String,
        /// Why.
        source: tokio_postgres::Error,
    },
}

/// Why a connection failed, in full: tokio-postgres's own message names
/// only the kind of failure ("db error", "error connecting to server"),
/// and its cause the rest (the server's message, the socket's error). A
/// server's error is its message and SQLSTATE, without the DETAIL.
pub(crate) fn reason(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    reason
}

/// Where and as whom a maintenance session logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `HOST:PORT`.
    pub(crate) upstream: String,
    /// The database.
    pub(crate) database: String,
    /// The role.
    pub(crate) user: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} database {} as {}",
            self.upstream, self.database, self.user
        )
    }
}

/// A maintenance session, settings pinned, and whom it logged in as.
pub(crate) async fn connect(config: &Config) -> Result<(Client, Target), MaintenanceError> {
    let section = config.maintenance.clone().unwrap_or_default();
    let env = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    let user = section
        .user
        .or_else(|| env("PGUSER"))
        .ok_or_else(|| MaintenanceError::NoUser {
            upstream: config.upstream.clone(),
        })?;
    let database = section
        .database
        .or_else(|| env("PGDATABASE"))
        .unwrap_or_else(|| user.clone());
    let password = match &section.password_file {
        Some(path) => {
            let bytes = read_private(path, "maintenance password")?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| MaintenanceError::PasswordText(path.clone()))?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => env("PGPASSWORD"),
    };
    let (host, port) = config
        .upstream
        .rsplit_once(':')
        .expect("a validated upstream is HOST:PORT");
    let mut pg = tokio_postgres::Config::new();
    pg.host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(port.parse().expect("a validated upstream has a port"))
        .user(&user)
        .dbname(&database)
        .application_name("pgveil maintenance")
        .connect_timeout(config.connect_timeout());
    if let Some(password) = &password {
        pg.password(password);
    }
    let target = Target {
        upstream: config.upstream.clone(),
        database,
        user,
    };
    let failed = |source| MaintenanceError::Connect {
        upstream: target.upstream.clone(),
        database: target.database.clone(),
        user: target.user.clone(),
        source,
    };
    let (client, connection) = pg.connect(NoTls).await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("maintenance connection ended: {e}");
        }
    });
    client.batch_execute(PINNED).await.map_err(failed)?;
    Ok((client, target))
}
