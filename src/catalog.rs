//! What pgveil asks the server as a session with a policy starts, right
//! after login and before the client's first ReadyForQuery, on the
//! session's own connection (so pgveil needs no credentials of its own).
//!
//! - The session's roles. A policy rule names a role; it applies to a
//!   session whose login role is that role or a member of it, directly or
//!   through other roles. Membership is followed through
//!   `pg_auth_members` only: a superuser is not treated as a member of
//!   every role, so a DBA does not see plaintext merely by being superuser.
//! - The columns of the protected tables, in order (for `INSERT` and
//!   `COPY` without a column list), with their types: a text type holds
//!   the text envelope, `bytea` the binary one, and any other type cannot
//!   hold ciphertext (see `rewrite`). A string type (`typcategory` `S`,
//!   domains included) but `name`, which would truncate ciphertext, counts
//!   as text; `bytea` is recognised by its output function, which every
//!   domain over it shares.
//! - The session's `pgveil.purpose` and `pgveil.actor` as the server has
//!   them at login, from the startup options or parameters, `ALTER ROLE`
//!   or `ALTER DATABASE ... SET`, or the server's configuration: the
//!   declarations the session starts with, and returns to on `RESET`.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use std::collections::HashMap;

use crate::declared::Values;
use crate::encoding::ClientEncoding;
use crate::policy::Policy;
use crate::protocol::reply::{error_field, frame_of};
use crate::protocol::{read_message, ReadError, Side};
use crate::reveal::Fields;
use crate::rewrite::{ColumnType, Columns};

const ROLES_QUERY: &str = "WITH RECURSIVE member_of(oid) AS (\
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user \
    UNION SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of ON m.member = member_of.oid) \
    SELECT r.rolname FROM pg_catalog.pg_roles r JOIN member_of USING (oid)";

const DECLARED_QUERY: &str = "SELECT pg_catalog.current_setting('pgveil.purpose', true), \
    pg_catalog.current_setting('pgveil.actor', true)";

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
    /// Column names and types in order, by (schema, table), for protected
    /// tables.
    pub columns: HashMap<(String, String), Vec<(String, ColumnType)>>,
    /// The session's declarations at login (empty values are none).
    pub declared: Values,
}

impl Catalog {
    /// Reads the catalog for `policy`, with text in the session's client
    /// `encoding`. The connection must be idle (after ReadyForQuery); it
    /// is idle again when this returns.
    pub async fn fetch<S>(
        server: &mut S,
        buf: &mut BytesMut,
        policy: &Policy,
        encoding: ClientEncoding,
    ) -> Result<Self, CatalogError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let roles = query(server, buf, encoding, ROLES_QUERY).await?;
        let declared = query(server, buf, encoding, DECLARED_QUERY).await?;
        let setting = |i: usize| {
            declared
                .first()
                .and_then(|row| row.get(i).cloned().flatten())
                .filter(|v| !v.is_empty())
        };
        let mut catalog = Catalog {
            roles: roles
                .into_iter()
                .filter_map(|mut row| row.pop().flatten())
                .collect(),
            columns: HashMap::new(),
            declared: Values {
                purpose: setting(0),
                actor: setting(1),
            },
        };
        for row in query(server, buf, encoding, &columns_query(policy)).await? {
            if let [Some(schema), Some(table), Some(column), Some(kind), Some(type_name)] = &row[..]
            {
                catalog
                    .columns
                    .entry((schema.clone(), table.clone()))
                    .or_default()
                    .push((column.clone(), column_type(kind, type_name)));
            }
        }
        Ok(catalog)
    }

    fn table(&self, schema: &str, table: &str) -> Option<&[(String, ColumnType)]> {
        self.columns
            .get(&(schema.to_owned(), table.to_owned()))
            .map(Vec::as_slice)
    }
}

impl Columns for Catalog {
    fn order(&self, schema: &str, table: &str) -> Option<Vec<String>> {
        let columns = self.table(schema, table)?;
        Some(columns.iter().map(|(name, _)| name.clone()).collect())
    }

    fn type_of(&self, schema: &str, table: &str, column: &str) -> Option<&ColumnType> {
        let columns = self.table(schema, table)?;
        columns
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, column_type)| column_type)
    }
}

/// A column's type from the kind the columns query gives it.
fn column_type(kind: &str, type_name: &str) -> ColumnType {
    match kind {
        "text" => ColumnType::Text,
        "bytea" => ColumnType::Bytea,
        _ => ColumnType::Other(type_name.to_owned()),
    }
}

/// The columns of the policy's tables, in order, with the kind of their
/// type (`text`, `bytea` or `other`) and its SQL name. Policy names are
/// validated identifiers, so they can be quoted as literals as they are.
fn columns_query(policy: &Policy) -> String {
    let tables: Vec<String> = policy
        .tables()
        .map(|(schema, table)| format!("('{schema}', '{table}')"))
        .collect();
    format!(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, \
         CASE WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' \
         WHEN t.typcategory = 'S' \
         AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc THEN 'text' \
         ELSE 'other' END, \
         pg_catalog.format_type(a.atttypid, a.atttypmod) \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         WHERE a.attnum > 0 AND NOT a.attisdropped \
         AND (n.nspname, c.relname) IN (VALUES {}) \
         ORDER BY n.nspname, c.relname, a.attnum",
        if tables.is_empty() {
            "(NULL, NULL)".to_owned()
        } else {
            tables.join(", ")
        }
    )
}

/// Runs one simple query and returns its rows as text.
async fn query<S>(
    server: &mut S,
    buf: &mut BytesMut,
    encoding: ClientEncoding,
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
                    .map(|f| f.map(|v| text(encoding, v)))
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

/// Server text in the client encoding as UTF-8; bytes that are not valid
/// in it are replaced.
fn text(encoding: ClientEncoding, bytes: &[u8]) -> String {
    encoding.decode(bytes).map_or_else(
        || String::from_utf8_lossy(bytes).into_owned(),
        |t| t.into_owned(),
    )
}
