//! The admin listener (`[admin] listen`): metrics and health checks over
//! HTTP/1, on an address of its own, apart from the clients' port.
//!
//! - `GET /metrics`: every series of the server's [`Metrics`] and, with
//!   audit on, the audit log's queue depth and records written and lost,
//!   in Prometheus's text format (the `prometheus` crate's encoder).
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 when pgveil can serve a session: the upstream
//!   server accepts a TCP connection within [`READY_CONNECT_TIMEOUT`], the
//!   policy is loaded when one is configured, the audit log can take
//!   records when audit is on, and pgveil is not shutting down; otherwise
//!   503 with one line per check that failed.
//!
//! HTTP is hyper's; each connection is a task of its own, and a client
//! that does not send its request headers within [`HEADER_TIMEOUT`] is
//! dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntGauge, TextEncoder};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::audit::AuditHandle;
use crate::session::metrics::Metrics;
use crate::session::protection::ProtectionSlot;

/// The longest `/readyz` waits for the upstream server to accept a
/// connection (or the connect timeout, if shorter).
pub(crate) const READY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client of the admin listener may take to send its request
/// headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the admin endpoints look at.
pub(super) struct Probe {
    pub metrics: Arc<Metrics>,
    /// The upstream server, `HOST:PORT`.
    pub upstream: String,
    /// How long `/readyz` waits for the upstream server.
    pub connect_timeout: Duration,
    /// Whether the configuration names a policy, which must then be
    /// loaded.
    pub policy_configured: bool,
    pub protection: ProtectionSlot,
    /// The audit log, with audit on.
    pub audit: Option<AuditHandle>,
    /// Cancelled when pgveil starts shutting down.
    pub draining: CancellationToken,
}

/// Serves the admin endpoints on `listener` until `stop` is cancelled.
pub(super) async fn serve(listener: TcpListener, probe: Arc<Probe>, stop: CancellationToken) {
    info!(
        admin = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "serving /metrics, /healthz and /readyz"
    );
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    error!("admin accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let probe = probe.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let probe = probe.clone();
                async move { Ok::<_, Infallible>(probe.respond(&request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = connection => if let Err(e) = served {
                    debug!(%peer, "admin connection ended: {e}");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

impl Probe {
    /// The answer to one request.
    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/metrics" => self.metrics(),
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.unready().await {
                None => text(StatusCode::OK, "ready\n".into()),
                Some(reasons) => text(StatusCode::SERVICE_UNAVAILABLE, reasons),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }

    /// `/metrics`.
    fn metrics(&self) -> Response<Full<Bytes>> {
        let mut families = self.metrics.gather();
        if let Some(audit) = &self.audit {
            families.extend(audit_families(audit));
        }
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        if let Err(e) = encoder.encode(&families, &mut body) {
            error!("cannot encode the metrics: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        if let Ok(format) = HeaderValue::from_str(encoder.format_type()) {
            response.headers_mut().insert(CONTENT_TYPE, format);
        }
        response
    }

    /// `/readyz`: `None` when ready, else a line for each check that
    /// failed.
    async fn unready(&self) -> Option<String> {
        let mut failed = String::new();
        if self.draining.is_cancelled() {
            failed.push_str("shutdown: pgveil is shutting down\n");
        }
        if self.policy_configured && !self.protection.is_protecting() {
            failed.push_str("policy: the configured policy is not loaded\n");
        }
        if self.audit.as_ref().is_some_and(|audit| !audit.healthy()) {
            failed.push_str(
                "audit: the audit log cannot take records (its writer failed or its queue is full)\n",
            );
        }
        let wait = self.connect_timeout.min(READY_CONNECT_TIMEOUT);
        match timeout(wait, TcpStream::connect(&self.upstream)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed.push_str(&format!(
                "upstream: cannot connect to {}: {e}\n",
                self.upstream
            )),
            Err(_) => failed.push_str(&format!(
                "upstream: {} did not accept a connection within {wait:?}\n",
                self.upstream
            )),
        }
        (!failed.is_empty()).then_some(failed)
    }
}

/// The audit log's series, read as they are now.
fn audit_families(audit: &AuditHandle) -> Vec<MetricFamily> {
    let gauge = |name: &str, help: &str, value: u64| {
        let gauge = IntGauge::new(name, help).expect("a valid metric name");
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge.collect()
    };
    let counter = |name: &str, help: &str, value: u64| {
        let counter = IntCounter::new(name, help).expect("a valid metric name");
        counter.inc_by(value);
        counter.collect()
    };
    [
        gauge(
            "pgveil_audit_queue_depth",
            "Audit records queued for the writer.",
            audit.queued() as u64,
        ),
        counter(
            "pgveil_audit_records_written_total",
            "Audit records written to the log.",
            audit.written(),
        ),
        counter(
            "pgveil_audit_records_lost_total",
            "Audit records that could not be logged (queue full or writer failed).",
            audit.dropped(),
        ),
        gauge(
            "pgveil_audit_up",
            "1 while the audit log can take records, 0 while it cannot.",
            u64::from(audit.healthy()),
        ),
    ]
    .concat()
}

/// A plain-text response.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
