//! TLS with clients: the certificate pgveil shows, the client certificates
//! it may demand, and the handshake after an SSLRequest.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::pem::{certificates, invalid, private_key, roots};
use super::stream::Stream;
use super::{ALPN_POSTGRESQL, VERSIONS};
use crate::proxy::config::{ClientTlsMode, ConfigError, TlsConfig};

/// What `[tls]` loads to.
pub(crate) struct ClientTls {
    mode: ClientTlsMode,
    acceptor: TlsAcceptor,
}

impl ClientTls {
    /// Reads the certificate, key and client CAs `config` names.
    pub(super) fn load(
        config: &TlsConfig,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, ConfigError> {
        let chain = certificates("tls.cert", &config.cert)?;
        let key = private_key("tls.key", &config.key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| invalid("tls", &config.cert, e))?;
        let builder = match &config.client_ca {
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    roots("tls.client_ca", path)?,
                    provider.clone(),
                )
                .build()
                .map_err(|e| invalid("tls.client_ca", path, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_single_cert(chain, key).map_err(|e| {
            invalid(
                "tls.key",
                &config.key,
                format_args!("does not go with tls.cert {}: {e}", config.cert.display()),
            )
        })?;
        server.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Self {
            mode: config.mode,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Whether clients must use TLS.
    pub(crate) fn mode(&self) -> ClientTlsMode {
        self.mode
    }

    /// The TLS handshake on a connection that has been answered `S`.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let tls = self.acceptor.accept(tcp).await?;
        Ok(Stream::Accepted(Box::new(tls)))
    }
}

/// Whether the client has sent bytes that are waiting to be read. After an
/// SSLRequest a client waits for the answer before it sends its TLS
/// handshake, so bytes already there were not sent by a client that waits:
/// they may have been injected to be taken as part of the encrypted session
/// (CVE-2021-23214), and the connection is refused, as PostgreSQL does.
pub(crate) fn has_unread_bytes(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(tcp.poll_peek(&mut cx, &mut buf), Poll::Ready(Ok(n)) if n > 0)
}
