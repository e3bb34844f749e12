//! The session's roles, as PostgreSQL knows them.
//!
//! A policy rule names a role; it applies to a session whose login role is
//! that role or a member of it, directly or through other roles. Right
//! after login, before the client's first ReadyForQuery, pgveil asks the
//! server on the session's own connection (so it needs no credentials of
//! its own). Membership is followed through `pg_auth_members` only: a
//! superuser is not treated as a member of every role, so a DBA does not
//! see plaintext merely by being superuser.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::protocol::reply::error_field;
use crate::protocol::{read_message, ReadError, Side};

const ROLES_QUERY: &str = "WITH RECURSIVE member_of(oid) AS (\
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user \
    UNION SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of ON m.member = member_of.oid) \
    SELECT r.rolname FROM pg_catalog.pg_roles r JOIN member_of USING (oid)";

/// Why the roles could not be learned.
#[derive(Debug, Error)]
pub enum RolesError {
    #[error("the server refused the role lookup (SQLSTATE {0})")]
    Server(String),
    #[error("the server closed the connection during the role lookup")]
    Closed,
    #[error("invalid message from the server during the role lookup: {0}")]
    Read(#[from] ReadError),
    #[error("malformed row in the role lookup")]
    Malformed,
}

/// Asks the server for the session's roles. The connection must be idle
/// (after ReadyForQuery); it is idle again when this returns.
pub async fn fetch<S>(server: &mut S, buf: &mut BytesMut) -> Result<Vec<String>, RolesError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut query = BytesMut::new();
    query.extend_from_slice(b"Q");
    query.extend_from_slice(&((ROLES_QUERY.len() + 5) as i32).to_be_bytes());
    query.extend_from_slice(ROLES_QUERY.as_bytes());
    query.extend_from_slice(b"\0");
    server.write_all(&query).await.map_err(ReadError::Io)?;
    let mut roles = Vec::new();
    let mut refused = None;
    loop {
        let (tag, frame) = read_message(server, Side::Backend, buf)
            .await?
            .ok_or(RolesError::Closed)?;
        match tag {
            b'D' => roles.push(first_field(&frame)?),
            b'E' => {
                let code = error_field(&frame, b'C').unwrap_or(b"?????");
                refused = Some(String::from_utf8_lossy(code).into_owned());
            }
            b'Z' => break,
            _ => {}
        }
    }
    match refused {
        Some(code) => Err(RolesError::Server(code)),
        None => Ok(roles),
    }
}

/// The first column of a DataRow, as text.
fn first_field(frame: &[u8]) -> Result<String, RolesError> {
    let body = frame.get(5..).ok_or(RolesError::Malformed)?;
    let len = body.get(2..6).ok_or(RolesError::Malformed)?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let value = usize::try_from(len)
        .ok()
        .and_then(|len| body.get(6..6 + len))
        .ok_or(RolesError::Malformed)?;
    Ok(String::from_utf8_lossy(value).into_owned())
}
