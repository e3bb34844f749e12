//! The listener: accepts clients, starts a session for each, and shuts
//! down gracefully.
//!
//! On shutdown the listener closes first, so new clients are refused at
//! once; open sessions may run on for the configured grace period, after
//! which each is closed with a FATAL `57P01` error.
//!
//! Each accepted connection runs on one of the session threads
//! (`proxy/workers.rs`), the one with the fewest sessions.
//!
//! With `[admin]`, the admin listener (`proxy/admin.rs`) serves the
//! server's metrics and health checks until the server stops; with
//! `max_client_conn`, a semaphore holds one permit per session that may be
//! open at once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::audit::approvals::ApprovalBook;
use crate::audit::bulk_reads::BulkWatch;
use crate::audit::trail::AuditSetup;
use crate::audit::{AuditConfig, AuditHandle};
use crate::protect::protection::Protection;
use crate::proxy::admin::{self, Probe};
use crate::proxy::config::{mode_name, ClientTlsMode, Config};
use crate::proxy::session::{Services, Session};
use crate::proxy::tls::{Tls, TlsSlot};
use crate::proxy::workers::Workers;
use crate::session::metrics::Metrics;
use crate::session::protection::ProtectionSlot;

/// Pause after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long closed sessions get to say goodbye after the grace period.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A bound, not yet running, proxy.
pub struct Server {
    listener: TcpListener,
    config: Config,
    protection: ProtectionSlot,
    tls: TlsSlot,
    audit: Option<AuditSetup>,
    metrics: Arc<Metrics>,
    /// The admin listener, with `[admin]`.
    admin: Option<TcpListener>,
    /// The threads that run sessions.
    workers: Workers,
}

impl Server {
    /// Binds the listen address of `config`; sessions protect the columns
    /// of `veil`, if given, and use the TLS `config` names (a certificate
    /// that does not load is an `InvalidInput` error).
    pub async fn bind(config: Config, veil: Option<Protection>) -> io::Result<Self> {
        let tls = Tls::load(&config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::bind_with_tls(config, veil, tls).await
    }

    /// [`Server::bind`] with TLS already loaded from `config`.
    pub async fn bind_with_tls(
        config: Config,
        veil: Option<Protection>,
        tls: Tls,
    ) -> io::Result<Self> {
        let addr = config
            .listen_addr()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let admin_addr = config
            .admin_addr()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        let config_threads = config.worker_threads;
        let admin = match admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("the admin listener {addr}: {e}"))
            })?),
            None => None,
        };
        Ok(Self {
            listener,
            config,
            protection: ProtectionSlot::new(veil),
            tls: TlsSlot::new(tls),
            audit: None,
            metrics: Arc::new(Metrics::new()),
            admin,
            workers: Workers::start(config_threads)?,
        })
    }

    /// The slot of the protection sessions start with, for reloading it.
    pub fn protection(&self) -> ProtectionSlot {
        self.protection.clone()
    }

    /// The slot of the TLS sessions start with, for reloading it.
    pub fn tls(&self) -> TlsSlot {
        self.tls.clone()
    }

    /// Records connections and statements in the audit log of `handle`,
    /// as `config` says.
    pub fn with_audit(mut self, handle: AuditHandle, config: &AuditConfig) -> Self {
        self.audit = Some(AuditSetup {
            handle,
            scope: config.scope,
            bulk: config
                .bulk
                .clone()
                .map(|bulk| Arc::new(BulkWatch::new(bulk))),
            approvals: None,
        });
        self
    }

    /// Honours the approvals of `book` (`[audit] approvals`); after
    /// [`Server::with_audit`], whose records their uses are.
    pub fn with_approvals(mut self, book: Arc<ApprovalBook>) -> Self {
        if let Some(audit) = &mut self.audit {
            audit.approvals = Some(book);
        }
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the admin listener bound, with `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|admin| admin.local_addr().ok())
    }

    /// The server's counters, for what is counted outside sessions
    /// (reloads).
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` completes, then drains sessions.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let grace = self.config.shutdown_grace();
        let audit = self.audit.as_ref().map(|audit| audit.handle.clone());
        let draining = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        if let Some(listener) = self.admin {
            let probe = Probe {
                metrics: self.metrics.clone(),
                upstream: self.config.upstream.clone(),
                connect_timeout: self.config.connect_timeout(),
                policy_configured: self.config.policy.is_some(),
                protection: self.protection.clone(),
                audit: audit.clone(),
                draining: draining.clone(),
            };
            tokio::spawn(admin::serve(listener, Arc::new(probe), admin_stop.clone()));
        }
        let slots = match self.config.max_client_conn {
            0 => None,
            limit => Some(Arc::new(Semaphore::new(limit))),
        };
        let services = Arc::new(Services {
            config: self.config,
            protection: self.protection,
            tls: self.tls,
            audit: self.audit,
            close_all: CancellationToken::new(),
            metrics: self.metrics,
            slots,
        });
        let sessions = TaskTracker::new();
        let (client_tls, upstream_tls) = services.tls.current().modes();
        info!(
            listen = %self.listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            upstream = %services.config.upstream,
            client_tls = client_tls.map_or("off", |mode| match mode {
                ClientTlsMode::Allow => "allow",
                ClientTlsMode::Require => "require",
            }),
            upstream_tls = upstream_tls.map_or("off", mode_name),
            "pgveil is accepting connections"
        );
        tokio::pin!(shutdown);
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        next_id += 1;
                        if let Err(e) = stream.set_nodelay(true) {
                            warn!(%peer, "cannot set TCP_NODELAY: {e}");
                        }
                        let services = services.clone();
                        // Counts as a session until the session ends.
                        let tracked = sessions.token();
                        let id = next_id;
                        self.workers.spawn(stream, move |stream| async move {
                            Session::new(id, stream, peer, services).run().await;
                            drop(tracked);
                        });
                    }
                    Err(e) => {
                        error!("accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(self.listener);
        draining.cancel();
        drain(sessions, services.close_all.clone(), grace).await;
        if let Some(audit) = audit {
            drop(services);
            if let Err(e) = audit.shutdown().await {
                error!("audit log not sealed cleanly: {e}");
            }
        }
        admin_stop.cancel();
    }
}

/// Waits for sessions to end, closing those still open after `grace`.
async fn drain(sessions: TaskTracker, close_all: CancellationToken, grace: Duration) {
    sessions.close();
    if sessions.is_empty() {
        info!("stopped");
        return;
    }
    info!(
        open = sessions.len(),
        "shutting down; waiting for open sessions"
    );
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        warn!(
            open = sessions.len(),
            "grace period over; closing open sessions"
        );
        close_all.cancel();
        let _ = tokio::time::timeout(CLOSE_WAIT, sessions.wait()).await;
    }
    info!("stopped");
}
