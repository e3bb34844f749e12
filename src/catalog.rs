//! What pgveil asks the server as a session with a policy starts, right
//! after login and before the client's first ReadyForQuery, on the
//! session's own connection (so pgveil needs no credentials of its own).
//!
//! - The session's roles. A policy rule names a role; it applies to a
//!   session whose login role is that role or a member of it, directly or
//!   through other roles. Membership is followed through
//!   `pg_auth_members` only: a superuser is not treated as a member of
//!   every role, so a DBA does not see plaintext merely by being superuser.
//! - The column order of the protected tables, for `INSERT` and `COPY`
//!   without a column list.
//! - The ciphertext guards of the protected columns ([`crate::guard`]):
//!   which exist, and whether they are validated, so that missing ones
//!   can be warned about.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use std::collections::HashMap;

use crate::guard::{self, Guard, GuardState};
use crate::policy::Policy;
use crate::protocol::reply::{error_field, frame_of};
use crate::protocol::{read_message, ReadError, Side};
use crate::reveal::Fields;

const ROLES_QUERY: &str = "WITH RECURSIVE member_of(oid) AS (\
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user \
    UNION SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of ON m.member = member_of.oid) \
    SELECT r.rolname FROM pg_catalog.pg_roles r JOIN member_of USING (oid)";

/// Why the catalog could not be read.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("the server refused a catalog lookup (SQLSTATE {0})")]
    Server(String),
    #[error("the server closed the connection during a catalog lookup")]
    Closed,
    #[error("invalid message from the server during a catalog lookup: {0}")]
    Read(#[from] ReadError),
}

/// What a session's policy decisions need from the catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The login role and every role it is a member of.
    pub roles: Vec<String>,
    /// Column names in order, by (schema, table), for protected tables.
    pub columns: HashMap<(String, String), Vec<String>>,
    /// The guard of each protected column of the tables that exist.
    pub guards: Vec<GuardState>,
}

impl Catalog {
    /// Reads the catalog for `policy`. The connection must be idle (after
    /// ReadyForQuery); it is idle again when this returns.
    pub async fn fetch<S>(
        server: &mut S,
        buf: &mut BytesMut,
        policy: &Policy,
    ) -> Result<Self, CatalogError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let roles = query(server, buf, ROLES_QUERY).await?;
        let mut catalog = Catalog {
            roles: roles
                .into_iter()
                .filter_map(|mut row| row.pop().flatten())
                .collect(),
            columns: HashMap::new(),
            guards: guards(server, buf, policy).await?,
        };
        for row in query(server, buf, &columns_query(policy)).await? {
            if let [Some(schema), Some(table), Some(column)] = &row[..] {
                catalog
                    .columns
                    .entry((schema.clone(), table.clone()))
                    .or_default()
                    .push(column.clone());
            }
        }
        Ok(catalog)
    }

    /// The column order of a table, as [`crate::rewrite::ColumnOrder`] wants.
    pub fn column_order(&self, schema: &str, table: &str) -> Option<Vec<String>> {
        self.columns
            .get(&(schema.to_owned(), table.to_owned()))
            .cloned()
    }
}

/// The columns of the policy's tables, in order. Policy names are
/// validated identifiers, so they can be quoted as literals as they are.
fn columns_query(policy: &Policy) -> String {
    format!(
        "SELECT n.nspname::text, c.relname::text, a.attname::text \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attnum > 0 AND NOT a.attisdropped \
         AND (n.nspname, c.relname) IN (VALUES {}) \
         ORDER BY n.nspname, c.relname, a.attnum",
        table_values(policy)
    )
}

/// The policy's tables as a `VALUES` list of `(schema, table)`, or one row
/// of NULLs when there are none.
fn table_values(policy: &Policy) -> String {
    let tables: Vec<String> = policy
        .tables()
        .map(|(schema, table)| format!("('{schema}', '{table}')"))
        .collect();
    if tables.is_empty() {
        "(NULL, NULL)".to_owned()
    } else {
        tables.join(", ")
    }
}

/// Reads the guard of every protected column whose table exists.
async fn guards<S>(
    server: &mut S,
    buf: &mut BytesMut,
    policy: &Policy,
) -> Result<Vec<GuardState>, CatalogError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if policy.columns().next().is_none() {
        return Ok(Vec::new());
    }
    let rows = query(server, buf, &guards_query(policy)).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match &row[..] {
            [Some(column), validated] => {
                let guard = match validated.as_deref() {
                    None => Guard::Missing,
                    Some("t") => Guard::Valid,
                    Some(_) => Guard::NotValidated,
                };
                Some((column.clone(), guard))
            }
            _ => None,
        })
        .collect())
}

/// For each protected column of an existing table: its qualified name and
/// whether its guard is validated (NULL when there is none). Policy names
/// are validated identifiers, so they can be quoted as literals as they are.
fn guards_query(policy: &Policy) -> String {
    let columns: Vec<String> = policy
        .columns()
        .map(|c| {
            format!(
                "('{}', '{}', '{}', '{}')",
                c.schema,
                c.table,
                c.column,
                guard::constraint_name(&c.column)
            )
        })
        .collect();
    format!(
        "SELECT g.schema || '.' || g.tbl || '.' || g.col, k.convalidated \
         FROM (VALUES {}) AS g(schema, tbl, col, guard) \
         JOIN pg_catalog.pg_namespace n ON n.nspname = g.schema \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = g.tbl \
         LEFT JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid AND k.conname = g.guard \
         AND k.contype = 'c' ORDER BY 1",
        columns.join(", ")
    )
}

/// Runs one simple query and returns its rows as text.
async fn query<S>(
    server: &mut S,
    buf: &mut BytesMut,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, CatalogError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    server
        .write_all(&frame_of(b'Q', &body))
        .await
        .map_err(ReadError::Io)?;
    let mut rows = Vec::new();
    let mut refused = None;
    loop {
        let (tag, frame) = read_message(server, Side::Backend, buf)
            .await?
            .ok_or(CatalogError::Closed)?;
        match tag {
            b'D' => rows.push(
                Fields::of(&frame)
                    .map(|f| f.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .collect(),
            ),
            b'E' => {
                let code = error_field(&frame, b'C').unwrap_or(b"?????");
                refused = Some(String::from_utf8_lossy(code).into_owned());
            }
            b'Z' => break,
            _ => {}
        }
    }
    match refused {
        Some(code) => Err(CatalogError::Server(code)),
        None => Ok(rows),
    }
}
