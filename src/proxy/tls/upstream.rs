//! TLS to the upstream server: the SSLRequest, the handshake and the check
//! of the server's certificate by `[upstream_tls] mode`, with libpq's
//! meanings. Cancel requests take the same path as sessions.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::warn;

use super::pem::{certificates, invalid, private_key, roots};
use super::stream::Stream;
use super::verify::{ChainOnly, Unverified};
use super::{ALPN_POSTGRESQL, VERSIONS};
use crate::proxy::config::{
    mode_name, upstream_host, ConfigError, UpstreamTlsConfig, UpstreamTlsMode,
};

/// An SSLRequest: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// What `[upstream_tls]` loads to, when its mode is not `disable`.
pub(crate) struct UpstreamTls {
    mode: UpstreamTlsMode,
    connector: TlsConnector,
    /// The host of `upstream`, which `verify-full` checks the certificate
    /// against.
    name: ServerName<'static>,
    /// The CA file, for messages.
    ca: Option<PathBuf>,
}

/// Why TLS to the upstream server failed. The texts start with
/// "upstream TLS" so the log says which leg.
#[derive(Debug, Error)]
pub(crate) enum UpstreamTlsError {
    /// The server answered `N` and the mode does not allow plaintext.
    #[error(
        "upstream TLS: the server does not accept TLS (it answered N to the SSLRequest), \
         and upstream_tls mode {mode} requires it"
    )]
    Refused {
        /// The mode in force.
        mode: &'static str,
    },
    /// Neither `S` nor `N`.
    #[error("upstream TLS: the server answered the SSLRequest with {0:#04x}, neither S nor N")]
    Unexpected(u8),
    /// The certificate does not name the upstream host.
    #[error("upstream TLS: certificate of the server not valid for name {name:?}: {detail}")]
    WrongName {
        /// The host of `upstream`.
        name: String,
        /// What rustls says.
        detail: rustls::Error,
    },
    /// The certificate is not signed by a CA of `upstream_tls.ca`.
    #[error(
        "upstream TLS: certificate of the server not signed by a CA of upstream_tls.ca ({ca}): {detail}"
    )]
    UnknownIssuer {
        /// The CA file.
        ca: String,
        /// What rustls says.
        detail: rustls::Error,
    },
    /// Any other handshake or connection failure.
    #[error("upstream TLS: {0}")]
    Handshake(io::Error),
}

impl UpstreamTls {
    /// Reads the CA and client certificate `config` names; `None` for mode
    /// `disable`.
    pub(super) fn load(
        config: &UpstreamTlsConfig,
        upstream: &str,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Self>, ConfigError> {
        if config.mode == UpstreamTlsMode::Disable {
            return Ok(None);
        }
        let name = ServerName::try_from(upstream_host(upstream).to_owned()).map_err(|_| {
            ConfigError::Invalid {
                key: "upstream",
                problem: format!("{upstream:?} has a host that is no DNS name or IP address"),
            }
        })?;
        let roots = config
            .ca
            .as_deref()
            .map(|ca| roots("upstream_tls.ca", ca))
            .transpose()?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
            match (&roots, config.mode) {
                (None, UpstreamTlsMode::Prefer | UpstreamTlsMode::Require) => {
                    Arc::new(Unverified(provider.signature_verification_algorithms))
                }
                (None, _) => {
                    return Err(ConfigError::Invalid {
                        key: "upstream_tls.ca",
                        problem: format!("is required with mode {}", mode_name(config.mode)),
                    })
                }
                (Some(roots), mode) => {
                    let path = config.ca.as_deref().unwrap_or_else(|| "".as_ref());
                    let webpki = WebPkiServerVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| invalid("upstream_tls.ca", path, e))?;
                    // As libpq: with a CA, require checks the chain like
                    // verify-ca.
                    match mode {
                        UpstreamTlsMode::VerifyFull => webpki,
                        _ => Arc::new(ChainOnly(webpki)),
                    }
                }
            };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| ConfigError::Invalid {
                key: "upstream_tls",
                problem: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("upstream_tls.cert", cert)?;
                let private = private_key("upstream_tls.key", key)?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    invalid(
                        "upstream_tls.key",
                        key,
                        format_args!("does not go with upstream_tls.cert {}: {e}", cert.display()),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Some(Self {
            mode: config.mode,
            connector: TlsConnector::from(Arc::new(client)),
            name,
            ca: config.ca.clone(),
        }))
    }

    /// The mode in force.
    pub(crate) fn mode(&self) -> UpstreamTlsMode {
        self.mode
    }

    /// Asks the server on `tcp` for TLS and makes the handshake; with mode
    /// `prefer`, a server that answers `N` gets the connection in plaintext,
    /// with a warning each time.
    pub(crate) async fn connect(&self, mut tcp: TcpStream) -> Result<Stream, UpstreamTlsError> {
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(UpstreamTlsError::Handshake)?;
        // One byte, read straight from the socket: anything the server sent
        // after it stays unread and goes to the TLS handshake, which fails
        // on it (CVE-2021-23222).
        let answer = tcp.read_u8().await.map_err(UpstreamTlsError::Handshake)?;
        match answer {
            b'S' => {}
            b'N' if self.mode == UpstreamTlsMode::Prefer => {
                warn!(
                    "upstream TLS: the server does not accept TLS (it answered N); \
                     this session goes on in plaintext, as upstream_tls mode prefer allows"
                );
                return Ok(Stream::Plain(tcp));
            }
            b'N' => {
                return Err(UpstreamTlsError::Refused {
                    mode: mode_name(self.mode),
                })
            }
            other => return Err(UpstreamTlsError::Unexpected(other)),
        }
        match self.connector.connect(self.name.clone(), tcp).await {
            Ok(tls) => Ok(Stream::Connected(Box::new(tls))),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// A handshake error, said plainly when it is about the certificate.
    fn explain(&self, e: io::Error) -> UpstreamTlsError {
        let certificate = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|tls| match tls {
                rustls::Error::InvalidCertificate(c) => Some((c.clone(), tls.clone())),
                _ => None,
            });
        match certificate {
            Some((
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                detail,
            )) => UpstreamTlsError::WrongName {
                name: self.name.to_str().into_owned(),
                detail,
            },
            Some((CertificateError::UnknownIssuer, detail)) => UpstreamTlsError::UnknownIssuer {
                ca: self
                    .ca
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                detail,
            },
            _ => UpstreamTlsError::Handshake(e),
        }
    }
}
