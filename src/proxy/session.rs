//! One client connection, from its first byte to its close.
//!
//! A session reads the client's startup packets, connects to PostgreSQL,
//! relays the authentication exchange (the server decides; pgveil never
//! sees a usable password), and then runs two relays side by side: client
//! to server and server to client. When either ends, both are stopped and
//! the client is told why if it can still understand a message.
//!
//! Either leg may be under TLS (`proxy::tls`): an SSLRequest is answered `S`
//! and the handshake made when `[tls]` is configured, and the server is
//! asked for TLS when `[upstream_tls]` is. The rest of the session reads
//! and writes a [`Stream`] and does not tell the two apart.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::trail::{AuditSetup, Trail};
use crate::audit::{AuditRecord, Login, Outcome, Peer, SqlState, Timestamp};
use crate::protect::policy::Policy;
use crate::proxy::config::{ClientTlsMode, Config};
use crate::proxy::relay::{self, End, Ending};
use crate::proxy::tls::{has_unread_bytes, Stream, Tls, TlsSlot};
use crate::read::tap::ServerTap;
use crate::session::catalog::{Catalog, CatalogError};
use crate::session::ledger::Ledger;
use crate::session::protection::{Adopted, ProtectionSlot};
use crate::session::state::SessionState;
use crate::text::encoding::ClientEncoding;
use crate::wire::reply::{self, Severity};
use crate::wire::sqlstate;
use crate::wire::startup::{self, Packet, StartupError};
use crate::wire::tags::{backend, error_field, frontend};
use crate::wire::{read_message, FrameError, ReadError, Side};
use crate::write::tap::ClientTap;

/// Why a session could not start.
#[derive(Debug, Error)]
enum StartError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Read(#[from] ReadError),
    #[error("expected a password message, got message type {0:#04x}")]
    UnexpectedMessage(u8),
    #[error("timed out before authentication completed")]
    Timeout,
    /// `[tls] mode = "require"` and the client did not ask for TLS.
    #[error(
        "pgveil requires TLS: this client did not ask for encryption \
         (connect with sslmode=require or stronger)"
    )]
    TlsRequired,
    /// Bytes arrived after an SSLRequest, before the answer to it.
    #[error("received unencrypted data after SSL request")]
    UnencryptedAfterSslRequest,
    /// The TLS handshake with the client failed; nothing can be said to it.
    #[error("TLS handshake with the client failed: {0}")]
    ClientHandshake(std::io::Error),
    /// The client, under TLS, claims SCRAM channel binding, which the
    /// server, under TLS too, would refuse as a downgrade.
    #[error(
        "SCRAM channel binding cannot pass through pgveil: the client is connected over TLS \
         and supports channel binding, and the server (over TLS too) would refuse the login \
         as a downgrade attack, since pgveil removes the SCRAM-SHA-256-PLUS mechanism (each \
         leg has its own TLS session); connect with channel_binding=disable"
    )]
    ChannelBinding,
    #[error("could not connect to upstream server {upstream}: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream server closed the connection during startup")]
    UpstreamClosed,
    #[error("cannot read the catalog for the session: {0}")]
    Catalog(#[from] CatalogError),
    /// The server refused the login; its ErrorResponse has been relayed.
    #[error("login refused by server (SQLSTATE {0})")]
    Refused(String),
    /// The client hung up, as psql does before prompting for a password.
    #[error("client closed the connection during startup")]
    ClientLeft,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl StartError {
    /// The error to send the client, if it has not been told already.
    fn reply(&self) -> Option<Bytes> {
        let code = match self {
            StartError::Startup(StartupError::NoUser) | StartError::TlsRequired => {
                sqlstate::INVALID_AUTHORIZATION
            }
            StartError::Startup(StartupError::Io(_) | StartupError::Closed)
            | StartError::Read(ReadError::Io(_))
            | StartError::Io(_)
            | StartError::Refused(_)
            | StartError::ClientHandshake(_)
            | StartError::ClientLeft => return None,
            StartError::Startup(_)
            | StartError::Frame(_)
            | StartError::Read(_)
            | StartError::UnencryptedAfterSslRequest
            | StartError::ChannelBinding
            | StartError::UnexpectedMessage(_) => sqlstate::PROTOCOL_VIOLATION,
            StartError::Timeout => sqlstate::PROTOCOL_VIOLATION,
            StartError::Connect { .. } => sqlstate::CANNOT_CONNECT,
            StartError::UpstreamClosed | StartError::Catalog(_) => sqlstate::CONNECTION_FAILURE,
        };
        Some(reply::error(Severity::Fatal, code, &self.to_string()))
    }
}

/// What every session shares: settings, protection, the audit log.
pub(super) struct Services {
    pub config: Config,
    /// The policy and keys sessions start with, when columns are
    /// protected.
    pub protection: ProtectionSlot,
    /// The TLS certificates sessions start with.
    pub tls: TlsSlot,
    /// The audit log, when audit is on.
    pub audit: Option<AuditSetup>,
    /// Cancelled when pgveil must close every session now.
    pub close_all: CancellationToken,
}

/// A client connection and what pgveil knows about it.
pub(super) struct Session {
    id: u64,
    client: Stream,
    peer: SocketAddr,
    /// The protection in force when the session started, kept to its end.
    veil: Option<Adopted>,
    /// The TLS in force when the session started.
    tls: Arc<Tls>,
    services: Arc<Services>,
    /// The database and role, once the client has named them.
    login: Option<Login>,
}

impl Session {
    pub(super) fn new(
        id: u64,
        client: TcpStream,
        peer: SocketAddr,
        services: Arc<Services>,
    ) -> Self {
        Self {
            id,
            client: Stream::Plain(client),
            peer,
            veil: Adopted::first(&services.protection),
            tls: services.tls.current(),
            services,
            login: None,
        }
    }

    fn audit_peer(&self) -> Peer {
        Peer {
            connection: self.id,
            client: self.peer.to_string().into(),
        }
    }

    fn audit_record(&self, record: impl FnOnce(Peer) -> AuditRecord) {
        if let Some(audit) = &self.services.audit {
            // A record the log cannot take is counted and warned about by
            // the sink.
            let _ = audit.handle.record(record(self.audit_peer()));
        }
    }

    /// Records how authentication ended, once the client named a login.
    fn audit_login(&self, outcome: Outcome) {
        if let Some(login) = self.login.clone() {
            self.audit_record(|peer| AuditRecord::Authentication {
                time: Timestamp::now(),
                peer,
                login,
                outcome,
            });
        }
    }

    /// Runs the session to its end. Errors are logged, never raised.
    pub(super) async fn run(mut self) {
        let span = tracing::info_span!(
            "session",
            conn = self.id,
            client = %self.peer,
            user = tracing::field::Empty,
            database = tracing::field::Empty,
        );
        self.audit_record(|peer| AuditRecord::Connect {
            time: Timestamp::now(),
            peer,
        });
        let fut = async {
            match timeout(self.services.config.startup_timeout(), self.start(&span)).await {
                Ok(Ok(Some(started))) => self.serve(started).await,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => self.fail_start(e).await,
                Err(_) => self.fail_start(StartError::Timeout).await,
            }
        };
        tracing::Instrument::instrument(fut, span.clone()).await;
        self.client.close().await;
    }

    async fn fail_start(&mut self, e: StartError) {
        match &e {
            StartError::ClientLeft | StartError::Startup(StartupError::Closed) => debug!("{e}"),
            StartError::Io(_) | StartError::Startup(StartupError::Io(_)) => {
                info!("connection lost during startup: {e}")
            }
            StartError::Refused(_) | StartError::TlsRequired => info!("{e}"),
            _ => warn!("{e}"),
        }
        let refused = match &e {
            StartError::Refused(code) => Some(code.as_str()),
            StartError::TlsRequired => Some(sqlstate::INVALID_AUTHORIZATION),
            StartError::ChannelBinding => Some(sqlstate::PROTOCOL_VIOLATION),
            _ => None,
        };
        if let Some(Ok(code)) = refused.map(SqlState::new) {
            self.audit_login(Outcome::Error(code));
        }
        if let Some(reply) = e.reply() {
            let _ = self.client.send(&reply).await;
        }
    }

    /// Startup and authentication. `None` when the connection had no
    /// session to start (a cancel request).
    async fn start(&mut self, span: &tracing::Span) -> Result<Option<Started>, StartError> {
        let startup = match self.negotiate().await? {
            Packet::Startup(s) => s,
            Packet::Cancel(raw) => {
                self.relay_cancel(raw).await;
                return Ok(None);
            }
            Packet::SslRequest | Packet::GssEncRequest => unreachable!("answered by negotiate"),
        };
        span.record("user", startup.user());
        span.record("database", startup.database());
        self.login = Some(Login {
            database: startup.database().into(),
            role: startup.user().into(),
        });
        let required = self
            .tls
            .clients
            .as_ref()
            .is_some_and(|tls| tls.mode() == ClientTlsMode::Require);
        if required && !self.client.is_tls() {
            return Err(StartError::TlsRequired);
        }
        let mut upstream = self.connect().await?;
        upstream.send(&startup.raw).await?;
        let started = self.authenticate(upstream).await?;
        info!("authenticated");
        self.audit_login(Outcome::Ok);
        Ok(Some(started))
    }

    /// Reads packets until a StartupMessage or CancelRequest. An SSLRequest
    /// is answered `S` and the handshake made when `[tls]` is configured,
    /// `N` otherwise; a GSSENCRequest is answered `N`. Once under TLS,
    /// another request for encryption is refused as PostgreSQL does.
    async fn negotiate(&mut self) -> Result<Packet, StartError> {
        loop {
            let packet = startup::read_packet(&mut self.client).await?;
            let (major, minor) = match packet {
                Packet::SslRequest if self.client.is_tls() => (1234, 5679),
                Packet::GssEncRequest if self.client.is_tls() => (1234, 5680),
                Packet::SslRequest => {
                    self.start_tls().await?;
                    continue;
                }
                Packet::GssEncRequest => {
                    self.client.send(reply::REFUSE_ENCRYPTION).await?;
                    continue;
                }
                packet => return Ok(packet),
            };
            return Err(StartupError::Unsupported { major, minor }.into());
        }
    }

    /// Answers an SSLRequest: `S` and the TLS handshake, or `N` without
    /// `[tls]`.
    async fn start_tls(&mut self) -> Result<(), StartError> {
        let tls = self.tls.clone();
        let (Some(accept), Stream::Plain(tcp)) = (&tls.clients, &self.client) else {
            return Ok(self.client.send(reply::REFUSE_ENCRYPTION).await?);
        };
        if has_unread_bytes(tcp) {
            return Err(StartError::UnencryptedAfterSslRequest);
        }
        self.client.send(reply::ACCEPT_ENCRYPTION).await?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.client, Stream::Closed) else {
            unreachable!("matched as plain above");
        };
        self.client = accept
            .accept(tcp)
            .await
            .map_err(StartError::ClientHandshake)?;
        debug!("TLS with the client");
        Ok(())
    }

    /// Connects to the upstream server, under TLS if `[upstream_tls]` says
    /// so, within the connect timeout.
    async fn connect(&self) -> Result<Stream, StartError> {
        let upstream = &self.services.config.upstream;
        let failed = |reason: String| StartError::Connect {
            upstream: upstream.clone(),
            reason,
        };
        let connect = async {
            let tcp = TcpStream::connect(upstream)
                .await
                .map_err(|e| failed(e.to_string()))?;
            tcp.set_nodelay(true)?;
            match &self.tls.upstream {
                Some(tls) => tls.connect(tcp).await.map_err(|e| failed(e.to_string())),
                None => Ok(Stream::Plain(tcp)),
            }
        };
        timeout(self.services.config.connect_timeout(), connect)
            .await
            .map_err(|_| failed("timed out".into()))?
    }

    /// Forwards a CancelRequest: the key in it is the server's own, passed
    /// through in BackendKeyData, so the server finds the right backend.
    async fn relay_cancel(&self, raw: Bytes) {
        match self.connect().await {
            Ok(mut upstream) => {
                if let Err(e) = upstream.send(&raw).await {
                    warn!("could not relay cancel request: {e}");
                }
                // The server closes the connection once it has read the key.
                let _ = upstream.read(&mut [0u8; 1]).await;
                debug!("cancel request relayed");
            }
            Err(e) => warn!("could not relay cancel request: {e}"),
        }
    }

    /// Relays authentication until the server accepts or refuses the login.
    async fn authenticate(&mut self, mut upstream: Stream) -> Result<Started, StartError> {
        let mut from_server = BytesMut::new();
        let mut from_client = BytesMut::new();
        loop {
            let (tag, frame) = read_message(&mut upstream, Side::Backend, &mut from_server)
                .await?
                .ok_or(StartError::UpstreamClosed)?;
            match tag {
                backend::AUTHENTICATION => {
                    let code = auth_code(&frame);
                    let stripped = reply::strip_channel_binding(&frame);
                    // The server offered SCRAM-SHA-256-PLUS: it is under TLS
                    // and would refuse a client that claims binding.
                    let plus_removed = stripped.as_ref().is_some_and(|s| s.len() != frame.len());
                    self.client.send(&stripped.unwrap_or(frame)).await?;
                    match code {
                        AUTH_OK => break,
                        AUTH_SASL_FINAL => {}
                        _ => {
                            self.relay_password(&mut upstream, &mut from_client, plus_removed)
                                .await?
                        }
                    }
                }
                backend::ERROR => {
                    self.client.send(&frame).await?;
                    let code = reply::error_field(&frame, error_field::CODE).unwrap_or(b"?????");
                    return Err(StartError::Refused(String::from_utf8_lossy(code).into()));
                }
                backend::NEGOTIATE_PROTOCOL => self.client.send(&frame).await?,
                other => return Err(StartError::Frame(FrameError::UnknownType(other))),
            }
        }
        let greeting = match self.veil.take() {
            Some(veil) => {
                let greeting = self
                    .greet(&mut upstream, &mut from_server, &veil.protection().policy)
                    .await;
                self.veil = Some(veil);
                greeting?
            }
            None => Greeting::default(),
        };
        Ok(Started {
            upstream,
            from_server,
            from_client,
            greeting,
        })
    }

    /// Relays the server's greeting up to its first ReadyForQuery, noting
    /// the client encoding; asks the server for the session's roles and
    /// declarations; then lets the client go on.
    async fn greet(
        &mut self,
        upstream: &mut Stream,
        from_server: &mut BytesMut,
        policy: &Policy,
    ) -> Result<Greeting, StartError> {
        let mut encoding = ClientEncoding::default();
        let mut standard_strings = true;
        loop {
            let (tag, frame) = read_message(upstream, Side::Backend, from_server)
                .await?
                .ok_or(StartError::UpstreamClosed)?;
            if tag == backend::READY_FOR_QUERY {
                let login = self.login.as_ref().map_or("", |l| &*l.role);
                let catalog =
                    Catalog::fetch(upstream, from_server, policy, login, encoding).await?;
                self.client.send(&frame).await?;
                debug!(roles = ?catalog.roles, "session roles");
                crate::protect::guard::warn_unguarded(&catalog.guards);
                return Ok(Greeting {
                    catalog,
                    encoding,
                    standard_strings,
                });
            }
            if let Some(name) = crate::wire::messages::parameter_status::client_encoding(&frame)
                .filter(|_| tag == backend::PARAMETER_STATUS)
            {
                encoding = ClientEncoding::from_pg_name(name);
            }
            if let Some(on) = crate::wire::messages::parameter_status::standard_strings(&frame)
                .filter(|_| tag == backend::PARAMETER_STATUS)
            {
                standard_strings = on;
            }
            self.client.send(&frame).await?;
            if tag == backend::ERROR {
                return Err(StartError::UpstreamClosed);
            }
        }
    }

    /// Forwards the client's answer to an authentication request. When
    /// `plus_removed`, the request offered SCRAM without the server's
    /// `-PLUS` mechanisms, and a client that claims channel binding is
    /// refused with the reason instead of by the server with a riddle.
    async fn relay_password(
        &mut self,
        upstream: &mut Stream,
        from_client: &mut BytesMut,
        plus_removed: bool,
    ) -> Result<(), StartError> {
        let Some((tag, frame)) =
            read_message(&mut self.client, Side::Frontend, from_client).await?
        else {
            if plus_removed {
                info!(
                    "the client left when offered SCRAM without channel binding, as a client \
                     that requires it does (channel_binding=require): channel binding cannot \
                     pass through pgveil, which ends each leg's TLS itself"
                );
            }
            return Err(StartError::ClientLeft);
        };
        match tag {
            frontend::PASSWORD if plus_removed && reply::claims_channel_binding(&frame) => {
                Err(StartError::ChannelBinding)
            }
            frontend::PASSWORD => Ok(upstream.send(&frame).await?),
            frontend::TERMINATE => Err(StartError::ClientLeft),
            other => Err(StartError::UnexpectedMessage(other)),
        }
    }

    /// Relays both directions until the session ends.
    async fn serve(&mut self, started: Started) {
        let Started {
            mut upstream,
            from_server,
            from_client,
            greeting,
        } = started;
        let trail = match (&self.services.audit, &self.login) {
            (Some(audit), Some(login)) => Some(Trail::new(audit, self.audit_peer(), login.clone())),
            _ => None,
        };
        let (mut client_rx, mut client_tx) = self.client.split();
        let (mut server_rx, mut server_tx) = upstream.split();
        let stop = self.services.close_all.child_token();
        let catalog = greeting.catalog;
        let shared = SessionState::new(
            greeting.encoding,
            greeting.standard_strings,
            Ledger::new(catalog.declared.clone()),
        );

        let upward = async {
            let mut tap = ClientTap::new(
                self.veil.as_ref(),
                &self.services.protection,
                &shared,
                &catalog,
                trail.as_ref(),
            );
            let outcome = relay::relay(
                Side::Frontend,
                &mut client_rx,
                &mut server_tx,
                from_client,
                &mut tap,
                &stop,
            )
            .await;
            stop.cancel();
            outcome
        };
        let downward = async {
            let mut tap = ServerTap::new(
                self.veil.as_ref(),
                &self.services.protection,
                &shared,
                &catalog.roles,
                &catalog.attributes,
                trail.as_ref(),
            );
            let outcome = relay::relay(
                Side::Backend,
                &mut server_rx,
                &mut client_tx,
                from_server,
                &mut tap,
                &stop,
            )
            .await;
            stop.cancel();
            outcome
        };
        let (up, down) = tokio::join!(upward, downward);
        let farewell = self.farewell(&up, &down, &shared);
        if let Some(message) = farewell {
            let _ = self.client.send(&message).await;
        }
        let (statements, rows) = trail.as_ref().map_or((0, 0), Trail::totals);
        self.audit_record(|peer| AuditRecord::Disconnect {
            time: Timestamp::now(),
            peer,
            statements,
            rows,
        });
        info!("disconnected");
    }

    /// Logs how the session ended and picks the error the client should get.
    fn farewell(&self, up: &Ending, down: &Ending, shared: &SessionState) -> Option<Bytes> {
        let (code, message) = match (&up.end, &down.end) {
            (End::Protocol(e), _) => {
                warn!("client broke the protocol: {e}");
                (
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid frontend message: {e}"),
                )
            }
            (_, End::Protocol(e)) => {
                warn!("server broke the protocol: {e}");
                (
                    sqlstate::CONNECTION_FAILURE,
                    format!("invalid message from upstream server: {e}"),
                )
            }
            (End::ReadFailed(e) | End::WriteFailed(e), _) => {
                debug!("client connection failed: {e}");
                return None;
            }
            (End::Closed, _) => return None,
            (_, End::Closed | End::ReadFailed(_)) => {
                if shared.terminated.load(Ordering::Relaxed)
                    || shared.server_fatal.load(Ordering::Relaxed)
                {
                    return None;
                }
                warn!("upstream server closed the connection");
                (
                    sqlstate::CONNECTION_FAILURE,
                    "upstream server closed the connection unexpectedly".to_owned(),
                )
            }
            (_, End::WriteFailed(_)) => return None,
            (End::Stopped, End::Stopped) => {
                info!("closing session: pgveil is shutting down");
                (
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection because pgveil is shutting down".to_owned(),
                )
            }
        };
        down.at_boundary
            .then(|| reply::error(Severity::Fatal, code, &message))
    }
}

/// A session past authentication.
struct Started {
    upstream: Stream,
    /// Server bytes read past AuthenticationOk.
    from_server: BytesMut,
    /// Client bytes read past its last authentication message.
    from_client: BytesMut,
    greeting: Greeting,
}

/// What pgveil learns as a session with a policy starts.
#[derive(Default)]
struct Greeting {
    catalog: Catalog,
    /// The client encoding the server reported.
    encoding: ClientEncoding,
    /// Whether `standard_conforming_strings` is on, as the server reported.
    standard_strings: bool,
}

const AUTH_OK: i32 = 0;
const AUTH_SASL_FINAL: i32 = 12;

fn auth_code(frame: &[u8]) -> i32 {
    frame
        .get(5..9)
        .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
