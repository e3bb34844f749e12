//! The packets a connection opens with, before any typed message.
//!
//! A client's first packet is a length word and a request code: a
//! StartupMessage (protocol 3.x, followed by `name\0value\0` pairs), an
//! SSLRequest or GSSENCRequest, or a CancelRequest. This module reads one
//! such packet with PostgreSQL's size limit and parses what pgveil needs.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
const MAX_STARTUP_LEN: usize = 10_000;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const CANCEL_LEN: usize = 16;

/// One packet from a client that has not started a session yet.
#[derive(Debug)]
pub(crate) enum Packet {
    /// SSLRequest: answered `N` until pgveil terminates TLS.
    SslRequest,
    /// GSSENCRequest: answered `N`.
    GssEncRequest,
    /// CancelRequest, kept whole (process id and secret key) to be relayed.
    Cancel(Bytes),
    /// StartupMessage, kept whole to be relayed, with its parameters.
    Startup(Startup),
}

/// A parsed StartupMessage.
#[derive(Debug)]
pub(crate) struct Startup {
    /// The packet as received, length word included.
    pub raw: Bytes,
    /// Startup parameters (`user`, `database`, `options`, ...).
    pub params: BTreeMap<String, String>,
}

impl Startup {
    /// The login role named by the client.
    pub(crate) fn user(&self) -> &str {
        self.params
            .get("user")
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The database, which defaults to the user name as in PostgreSQL.
    pub(crate) fn database(&self) -> &str {
        self.params
            .get("database")
            .map(String::as_str)
            .unwrap_or_else(|| self.user())
    }
}

/// Why a startup packet was refused. The texts follow PostgreSQL's.
#[derive(Debug, Error)]
pub(crate) enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    Unsupported { major: u16, minor: u16 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Layout,
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// The client closed between packets, as health checks and clients
    /// that give up after an SSL refusal do. Not worth a warning.
    #[error("client closed the connection before starting a session")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one startup-phase packet.
pub(crate) async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<Packet, StartupError> {
    let len = match r.read_u32().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(StartupError::Closed)
        }
        Err(e) => return Err(e.into()),
    };
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::BadLength);
    }
    let mut raw = BytesMut::with_capacity(len);
    raw.extend_from_slice(&(len as u32).to_be_bytes());
    raw.resize(len, 0);
    r.read_exact(&mut raw[4..]).await?;
    let raw = raw.freeze();
    let code = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    match code {
        SSL_REQUEST => Ok(Packet::SslRequest),
        GSSENC_REQUEST => Ok(Packet::GssEncRequest),
        CANCEL_REQUEST if len == CANCEL_LEN => Ok(Packet::Cancel(raw)),
        CANCEL_REQUEST => Err(StartupError::BadLength),
        _ if code >> 16 == 3 => {
            let params = parse_params(&raw[8..])?;
            let startup = Startup { raw, params };
            if startup.user().is_empty() {
                return Err(StartupError::NoUser);
            }
            Ok(Packet::Startup(startup))
        }
        _ => Err(StartupError::Unsupported {
            major: (code >> 16) as u16,
            minor: code as u16,
        }),
    }
}

/// Parses `name\0value\0 ... \0`.
fn parse_params(body: &[u8]) -> Result<BTreeMap<String, String>, StartupError> {
    let Some((&0, pairs)) = body.split_last() else {
        return Err(StartupError::Layout);
    };
    let mut fields = pairs.split(|&b| b == 0);
    let mut params = BTreeMap::new();
    if pairs.is_empty() {
        return Ok(params);
    }
    // `pairs` ends with the terminator of the last value, so the final
    // split is an empty remainder.
    while let Some(name) = fields.next() {
        if name.is_empty() {
            break;
        }
        let value = fields.next().ok_or(StartupError::Layout)?;
        params.insert(
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn parses_a_startup_message() {
        let bytes = packet(196_608, b"user\0alice\0database\0crm\0\0");
        let Packet::Startup(s) = read_packet(&mut &bytes[..]).await.unwrap() else {
            panic!("not a startup packet");
        };
        assert_eq!((s.user(), s.database()), ("alice", "crm"));
        assert_eq!(&s.raw[..], &bytes[..]);
    }

    #[tokio::test]
    async fn database_defaults_to_user() {
        let bytes = packet(196_608, b"user\0bob\0\0");
        let Packet::Startup(s) = read_packet(&mut &bytes[..]).await.unwrap() else {
            panic!("not a startup packet");
        };
        assert_eq!(s.database(), "bob");
    }

    #[tokio::test]
    async fn refuses_bad_packets() {
        let no_user = packet(196_608, b"database\0x\0\0");
        assert!(matches!(
            read_packet(&mut &no_user[..]).await,
            Err(StartupError::NoUser)
        ));
        let unterminated = packet(196_608, b"user\0x");
        assert!(matches!(
            read_packet(&mut &unterminated[..]).await,
            Err(StartupError::Layout)
        ));
        let v2 = packet(2 << 16, b"\0");
        assert!(matches!(
            read_packet(&mut &v2[..]).await,
            Err(StartupError::Unsupported { .. })
        ));
        let huge = 1_000_000u32.to_be_bytes();
        assert!(matches!(
            read_packet(&mut &huge[..]).await,
            Err(StartupError::BadLength)
        ));
        assert!(matches!(
            read_packet(&mut &packet(SSL_REQUEST, b"")[..]).await,
            Ok(Packet::SslRequest)
        ));
    }
}
