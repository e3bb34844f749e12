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
//! - The protected columns by table OID and column number, as a
//!   RowDescription names the column a field comes from, with the exact
//!   columns of views over them (`crate::read::shape`): values stored there
//!   unencrypted are revealed by their column's rule.
//! - The ciphertext guards of the protected columns ([`crate::protect::guard`]):
//!   which exist, and whether they are validated, so that missing ones
//!   can be warned about.
//! - The server-side objects over protected tables
//!   ([`crate::sql::ServerObjects`]): views that depend on one, directly
//!   or through other views (`pg_depend` of their `_RETURN` rule), with
//!   their definitions; rules whose actions depend on one or on such a
//!   view; functions and procedures whose body mentions one of their names
//!   (`prosrc`, ignoring case), depends on one (`pg_depend`, for `BEGIN
//!   ATOMIC` bodies) or mentions such a function; and the user triggers
//!   that run such a function. Rules and triggers on a protected table
//!   itself are left out: writes to it are encrypted by pgveil, so what
//!   they see of its protected columns is ciphertext (one that copies an
//!   unprotected value into a protected column fails on the guards). One
//!   query, views ordered inner first.
//! - The session's `pgveil.purpose`, `pgveil.actor` and `pgveil.ticket` as the server has
//!   them at login, from the startup options or parameters, `ALTER ROLE`
//!   or `ALTER DATABASE ... SET`, or the server's configuration: the
//!   declarations the session starts with, and returns to on `RESET`.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use std::collections::HashMap;

use crate::protect::guard::{self, Guard, GuardState, TYPE_KIND};
use crate::protect::policy::Policy;
use crate::session::ledger::Values;
use crate::sql::{CatalogObject, ColumnType, Columns, Kind, ServerObjects};
use crate::text::encoding::ClientEncoding;
use crate::wire::messages::data_row::Fields;
use crate::wire::reply::{error_field, frame_of};
use crate::wire::tags::{backend, error_field as field, frontend};
use crate::wire::{read_message, ReadError, Side};

/// The login role and every role it is a member of. The login role is the
/// one the client authenticated as, named by its bytes in the server
/// encoding (`{login}`, hex), not `session_user`, which a superuser can
/// change with `session_authorization` in the startup options.
fn roles_query(login: &str) -> String {
    format!(
        "WITH RECURSIVE member_of(oid) AS (\
         SELECT oid FROM pg_catalog.pg_roles WHERE pg_catalog.convert_to(rolname::pg_catalog.text, \
         pg_catalog.getdatabaseencoding()) OPERATOR(pg_catalog.=) pg_catalog.decode('{}', 'hex') \
         UNION SELECT m.roleid FROM pg_catalog.pg_auth_members m \
         JOIN member_of ON m.member OPERATOR(pg_catalog.=) member_of.oid) \
         SELECT r.rolname FROM pg_catalog.pg_roles r \
         JOIN member_of ON r.oid OPERATOR(pg_catalog.=) member_of.oid",
        hex::encode(login)
    )
}

/// What pgveil's queries on a client's session run under, whatever the
/// session set: `search_path` holds only `pg_catalog` (and `pg_temp`
/// last, which is never searched for operators and functions), so no
/// operator, function or table of a schema the client controls can stand
/// in for the built-in one; JIT is off (see [`objects_query`]). Both are
/// `set_config(..., true)`: they last until the end of the implicit
/// transaction that the statements of one Query share, and the session
/// gets its own settings back with it. Its one row is not a result.
const PINNED: &str = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true), \
    pg_catalog.set_config('jit', 'off', true); ";

const DECLARED_QUERY: &str = "SELECT pg_catalog.current_setting('pgveil.purpose', true), \
    pg_catalog.current_setting('pgveil.actor', true), \
    pg_catalog.current_setting('pgveil.ticket', true)";

/// Why the catalog could not be read.
#[derive(Debug, Error)]
pub(crate) enum CatalogError {
    #[error("the server refused a catalog lookup (SQLSTATE {0})")]
    Server(String),
    #[error("the server closed the connection during a catalog lookup")]
    Closed,
    #[error("invalid message from the server during a catalog lookup: {0}")]
    Read(#[from] ReadError),
}

/// What a session's policy decisions need from the catalog.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// The login role and every role it is a member of.
    pub roles: Vec<String>,
    /// Column names and types in order, by (schema, table), for protected
    /// tables.
    pub columns: HashMap<(String, String), Vec<(String, ColumnType)>>,
    /// The protected columns by table OID and column number, as a
    /// RowDescription names the column a field comes from:
    /// `(schema, table, column)`.
    pub attributes: HashMap<(u32, i16), (String, String, String)>,
    /// The guard of each protected column of the tables that exist.
    pub guards: Vec<GuardState>,
    /// Views, rules, triggers and functions over protected tables.
    pub objects: ServerObjects,
    /// The session's declarations at login (empty values are none).
    pub declared: Values,
}

impl Catalog {
    /// Reads the catalog for `policy` and the `login` role, with text in
    /// the session's client `encoding`. The connection must be idle (after ReadyForQuery); it
    /// is idle again when this returns.
    pub(crate) async fn fetch<S>(
        server: &mut S,
        buf: &mut BytesMut,
        policy: &Policy,
        login: &str,
        encoding: ClientEncoding,
    ) -> Result<Self, CatalogError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let roles = query(server, buf, encoding, &roles_query(login)).await?;
        let declared = query(server, buf, encoding, DECLARED_QUERY).await?;
        let setting = |i: usize| {
            declared
                .first()
                .and_then(|row| row.get(i).cloned().flatten())
                .filter(|v| !v.is_empty())
        };
        let mut attributes = HashMap::new();
        let mut catalog = Catalog {
            roles: roles
                .into_iter()
                .filter_map(|mut row| row.pop().flatten())
                .collect(),
            columns: HashMap::new(),
            guards: guards(server, buf, policy, encoding).await?,
            objects: server_objects(server, buf, policy, encoding, &mut attributes).await?,
            attributes,
            declared: Values {
                purpose: setting(0),
                actor: setting(1),
                ticket: setting(2),
            },
        };
        for row in query(server, buf, encoding, &columns_query(policy)).await? {
            if let [Some(schema), Some(table), Some(column), Some(kind), Some(type_name), Some(oid), Some(attnum)] =
                &row[..]
            {
                if policy.column(schema, table, column).is_some() {
                    if let (Ok(oid), Ok(attnum)) = (oid.parse(), attnum.parse()) {
                        let name = (schema.clone(), table.clone(), column.clone());
                        catalog.attributes.insert((oid, attnum), name);
                    }
                }
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

    fn may_hold_unencrypted(&self, schema: &str, table: &str, column: &str) -> bool {
        let name = format!("{schema}.{table}.{column}");
        !self
            .guards
            .iter()
            .any(|(guarded, guard)| *guarded == name && *guard == Guard::Valid)
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
    format!(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, {TYPE_KIND}, \
         pg_catalog.format_type(a.atttypid, a.atttypmod), c.oid::text, a.attnum::text \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
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
    encoding: ClientEncoding,
) -> Result<Vec<GuardState>, CatalogError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if policy.columns().next().is_none() {
        return Ok(Vec::new());
    }
    let rows = query(server, buf, encoding, &guards_query(policy)).await?;
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

/// Reads the server-side objects over the policy's tables, and adds the
/// views' exact columns (see `sql::views`) to `attributes`, by view
/// OID and column number, as a RowDescription names them.
async fn server_objects<S>(
    server: &mut S,
    buf: &mut BytesMut,
    policy: &Policy,
    encoding: ClientEncoding,
    attributes: &mut HashMap<(u32, i16), (String, String, String)>,
) -> Result<ServerObjects, CatalogError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if policy.tables().next().is_none() {
        return Ok(ServerObjects::default());
    }
    let rows = query(server, buf, encoding, &objects_query(policy)).await?;
    let mut views = HashMap::new();
    let objects = rows.into_iter().filter_map(|row| {
        let [Some(kind), Some(schema), Some(name), hook, Some(table), definition, oid] =
            <[Option<String>; 7]>::try_from(row).ok()?
        else {
            return None;
        };
        let kind = match (kind.as_str(), hook) {
            ("view", _) => Kind::View,
            ("rule", Some(rule)) => Kind::Rule(rule),
            ("trigger", Some(trigger)) => Kind::Trigger(trigger),
            ("function", _) => Kind::Function,
            _ => return None,
        };
        if let (Kind::View, Some(oid)) = (&kind, oid.and_then(|o| o.parse::<u32>().ok())) {
            views.insert(oid, (schema.clone(), name.clone()));
        }
        Some(CatalogObject {
            kind,
            schema,
            name,
            table,
            definition,
        })
    });
    let objects = ServerObjects::new(policy, objects.collect());
    if !views.is_empty() {
        let oids: Vec<String> = views.keys().map(u32::to_string).collect();
        let sql = format!(
            "SELECT a.attrelid::text, a.attnum::text, a.attname::text \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid IN ({}) AND a.attnum > 0 AND NOT a.attisdropped",
            oids.join(", ")
        );
        for row in query(server, buf, encoding, &sql).await? {
            let [Some(oid), Some(attnum), Some(column)] = &row[..] else {
                continue;
            };
            let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
                continue;
            };
            let Some((schema, name)) = views.get(&oid) else {
                continue;
            };
            if let Some(exact) = objects.exact_column(schema, name, column) {
                let exact = (
                    exact.schema.clone(),
                    exact.table.clone(),
                    exact.column.clone(),
                );
                attributes.insert((oid, attnum), exact);
            }
        }
    }
    Ok(objects)
}

/// The server-side objects over the policy's tables, as rows of kind,
/// schema, name, rule or trigger name, the protected table
/// (`schema.table`) and a view's definition. The names searched for in
/// function bodies are folded to lowercase, like the bodies; only
/// functions outside `pg_catalog` and `information_schema` are searched.
///
/// The planner's estimates for the recursive searches are far too high,
/// enough to make PostgreSQL JIT-compile the query, which takes longer
/// than running it (a second, against milliseconds): so JIT is turned off
/// for pgveil's queries ([`PINNED`]).
fn objects_query(policy: &Policy) -> String {
    format!(
        "WITH RECURSIVE protected AS (\
           SELECT c.oid FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE (n.nspname, c.relname) IN (VALUES {tables})), \
         views(oid, base, depth) AS (\
           SELECT r.ev_class, d.refobjid, 1 FROM pg_catalog.pg_rewrite r \
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
             AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
           WHERE r.rulename = '_RETURN' AND d.refobjid IN (SELECT oid FROM protected) \
             AND r.ev_class <> d.refobjid \
           UNION \
           SELECT r.ev_class, v.base, v.depth + 1 FROM views v \
           JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass \
             AND d.refobjid = v.oid AND d.classid = 'pg_catalog.pg_rewrite'::regclass \
           JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
           WHERE r.rulename = '_RETURN' AND r.ev_class <> v.oid), \
         view AS (SELECT oid, min(base) AS base, max(depth) AS depth FROM views GROUP BY oid), \
         exposing AS (SELECT oid, oid AS base FROM protected UNION ALL SELECT oid, base FROM view), \
         names AS (SELECT e.base, lower(c.relname::text) AS name FROM exposing e \
           JOIN pg_catalog.pg_class c ON c.oid = e.oid), \
         procs AS MATERIALIZED (\
           SELECT p.oid, lower(p.proname::text) AS name, lower(p.prosrc) AS src \
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')), \
         funcs(oid, base) AS (\
           SELECT p.oid, x.base FROM procs p \
           JOIN LATERAL (\
             SELECT m.base FROM names m WHERE strpos(p.src, m.name) > 0 \
             UNION ALL SELECT e.base FROM pg_catalog.pg_depend d \
             JOIN exposing e ON e.oid = d.refobjid \
             WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass \
             LIMIT 1) x ON true \
           UNION \
           SELECT p.oid, f.base FROM funcs f \
           JOIN procs q ON q.oid = f.oid \
           JOIN procs p ON p.oid <> f.oid AND strpos(p.src, q.name) > 0), \
         func AS (SELECT DISTINCT ON (oid) oid, base FROM funcs ORDER BY oid, base), \
         object(kind, oid, hook, base, depth) AS (\
           SELECT 'view', oid, NULL::text, base, depth FROM view \
           UNION ALL \
           SELECT DISTINCT ON (r.oid) 'rule', r.ev_class, r.rulename::text, e.base, 0 \
           FROM pg_catalog.pg_rewrite r \
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
             AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
             AND d.refobjid <> r.ev_class \
           JOIN exposing e ON e.oid = d.refobjid \
           WHERE r.rulename <> '_RETURN' AND r.ev_class NOT IN (SELECT oid FROM protected) \
           UNION ALL \
           SELECT 'trigger', t.tgrelid, t.tgname::text, f.base, 0 FROM pg_catalog.pg_trigger t \
           JOIN func f ON f.oid = t.tgfoid \
           WHERE NOT t.tgisinternal AND t.tgrelid NOT IN (SELECT oid FROM protected)) \
         SELECT o.kind, n.nspname::text, c.relname::text, o.hook, \
           bn.nspname || '.' || bc.relname, \
           CASE o.kind WHEN 'view' THEN pg_catalog.pg_get_viewdef(o.oid) END, o.oid::text \
         FROM object o \
         JOIN pg_catalog.pg_class c ON c.oid = o.oid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class bc ON bc.oid = o.base \
         JOIN pg_catalog.pg_namespace bn ON bn.oid = bc.relnamespace \
         UNION ALL \
         SELECT 'function', n.nspname::text, p.proname::text, NULL, \
           bn.nspname || '.' || bc.relname, NULL, NULL \
         FROM func f \
         JOIN pg_catalog.pg_proc p ON p.oid = f.oid \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         JOIN pg_catalog.pg_class bc ON bc.oid = f.base \
         JOIN pg_catalog.pg_namespace bn ON bn.oid = bc.relnamespace \
         ORDER BY 1 DESC, 2, 3",
        tables = table_values(policy)
    )
}

/// Runs one simple query under [`PINNED`] settings and returns its rows
/// as text. The text is sent in the client encoding, as the server reads
/// it.
async fn query<S>(
    server: &mut S,
    buf: &mut BytesMut,
    encoding: ClientEncoding,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, CatalogError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = encoding.encode(&format!("{PINNED}{sql}")).into_owned();
    body.push(0);
    server
        .write_all(&frame_of(frontend::QUERY, &body))
        .await
        .map_err(ReadError::Io)?;
    // Under TLS, written bytes wait in their record until flushed.
    server.flush().await.map_err(ReadError::Io)?;
    let mut rows = Vec::new();
    let mut refused = None;
    // The first CommandComplete ends the row of PINNED.
    let mut pinned = false;
    loop {
        let (tag, frame) = read_message(server, Side::Backend, buf)
            .await?
            .ok_or(CatalogError::Closed)?;
        match tag {
            backend::DATA_ROW if pinned => rows.push(
                Fields::of(&frame)
                    .map(|f| f.map(|v| text(encoding, v)))
                    .collect(),
            ),
            backend::COMMAND_COMPLETE => pinned = true,
            backend::ERROR => {
                let code = error_field(&frame, field::CODE).unwrap_or(b"?????");
                refused = Some(String::from_utf8_lossy(code).into_owned());
            }
            backend::READY_FOR_QUERY => break,
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
