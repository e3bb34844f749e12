//! TLS on both legs of a session, with rustls and its ring provider, TLS
//! 1.2 and 1.3 only.
//!
//! - `accept`: `[tls]`, the certificate clients see, the client
//!   certificates pgveil may demand, and the handshake after an SSLRequest
//!   answered `S`.
//! - `upstream`: `[upstream_tls]`, TLS to the server with libpq's modes;
//!   `verify` holds the certificate checks of those modes.
//! - `pem`: the PEM files, with errors that name the key and the file.
//! - `stream`: a leg, plain or under TLS, as the session reads and writes
//!   it.
//!
//! [`Tls`] is what both sections load to. A session takes the one in force
//! when it starts; SIGHUP loads a new one into the [`TlsSlot`].

mod accept;
mod pem;
mod stream;
mod upstream;
mod verify;

use std::sync::{Arc, RwLock};

use rustls::SupportedProtocolVersion;

pub(crate) use accept::{has_unread_bytes, ClientTls};
pub(crate) use stream::Stream;
pub(crate) use upstream::UpstreamTls;

use crate::proxy::config::{ClientTlsMode, Config, ConfigError, UpstreamTlsMode};

/// TLS 1.3 and 1.2; nothing older.
const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ALPN protocol name PostgreSQL uses (from version 17).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// TLS as configured: for clients, to the server, both or neither.
#[derive(Default)]
pub struct Tls {
    /// `[tls]`, when clients may use TLS.
    pub(crate) clients: Option<ClientTls>,
    /// `[upstream_tls]`, unless absent or `disable`.
    pub(crate) upstream: Option<UpstreamTls>,
}

impl Tls {
    /// Reads the certificates and keys `config` names. Errors name the
    /// configuration key and the file.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        // ring, already a dependency, rather than aws-lc-rs and its C build.
        // rustls deprecates ring's provider for lacking post-quantum key
        // exchange (X25519MLKEM768); TLS 1.3 and 1.2 work as before.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clients = config
            .tls
            .as_ref()
            .map(|tls| ClientTls::load(tls, &provider))
            .transpose()?;
        let upstream = match &config.upstream_tls {
            Some(tls) => UpstreamTls::load(tls, &config.upstream, &provider)?,
            None => None,
        };
        Ok(Self { clients, upstream })
    }

    /// The modes in force, `None` for a leg without TLS: what a reload
    /// leaves as it is.
    pub fn modes(&self) -> (Option<ClientTlsMode>, Option<UpstreamTlsMode>) {
        (
            self.clients.as_ref().map(ClientTls::mode),
            self.upstream.as_ref().map(UpstreamTls::mode),
        )
    }

    /// Whether either leg uses TLS.
    pub fn is_on(&self) -> bool {
        self.clients.is_some() || self.upstream.is_some()
    }
}

/// The TLS certificates and keys new sessions take, which a reload
/// replaces. A session keeps the TLS it started with.
#[derive(Clone, Default)]
pub struct TlsSlot(Arc<RwLock<Arc<Tls>>>);

impl TlsSlot {
    /// A slot holding `tls`.
    pub(crate) fn new(tls: Tls) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(tls))))
    }

    /// What a session starting now uses.
    pub(crate) fn current(&self) -> Arc<Tls> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `tls` the one sessions starting from now on use.
    pub fn replace(&self, tls: Tls) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tls);
    }
}
