//! The counters every session adds to, exposed by the admin listener
//! (`proxy/admin.rs`) in Prometheus's text format.
//!
//! [`Metrics`] is one per server. Its counters and histograms are the
//! `prometheus` crate's, kept in atomics: moving one takes no lock. Each
//! label set is small, fixed and known in advance (a statement kind, a
//! decision, a SQLSTATE of pgveil's own table, a direction); nothing a
//! client says (a role, a database, query text) ever becomes a label. The
//! handles of the labelled series are looked up once, here, so that the
//! data path never hashes a label.
//!
//! Latency is measured per ReadyForQuery cycle ([`Cycles`]): from the
//! first message of a simple Query, an extended-protocol batch up to its
//! Sync, or a FunctionCall, as pgveil reads it from the client, to the
//! ReadyForQuery that answers it, as pgveil reads it from the server. The
//! client tap notes when each cycle started and the server tap takes the
//! oldest note at each ReadyForQuery; the server answers in order, so the
//! two meet without pairing statements one by one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use crate::protect::policy::Action;
use crate::wire::sqlstate;

/// Upper bounds of the latency buckets, in seconds: a proxy's own cost is
/// tens of microseconds, a slow statement seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// What a client message or a COPY is counted as in
/// `pgveil_statements_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatementKind {
    /// A simple-protocol Query message (which may hold several
    /// statements).
    Query,
    /// A Parse.
    Parse,
    /// A Bind.
    Bind,
    /// An Execute.
    Execute,
    /// A FunctionCall.
    FunctionCall,
    /// A COPY FROM STDIN whose data started (CopyInResponse).
    CopyIn,
    /// A COPY TO STDOUT whose data started (CopyOutResponse).
    CopyOut,
}

impl StatementKind {
    const ALL: [StatementKind; 7] = [
        StatementKind::Query,
        StatementKind::Parse,
        StatementKind::Bind,
        StatementKind::Execute,
        StatementKind::FunctionCall,
        StatementKind::CopyIn,
        StatementKind::CopyOut,
    ];

    fn label(self) -> &'static str {
        match self {
            StatementKind::Query => "query",
            StatementKind::Parse => "parse",
            StatementKind::Bind => "bind",
            StatementKind::Execute => "execute",
            StatementKind::FunctionCall => "function_call",
            StatementKind::CopyIn => "copy_in",
            StatementKind::CopyOut => "copy_out",
        }
    }
}

/// What a ReadyForQuery cycle was started by, the label of its latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CycleKind {
    /// A simple-protocol Query.
    Simple,
    /// Extended-protocol messages up to a Sync.
    Extended,
    /// A FunctionCall.
    FunctionCall,
}

impl CycleKind {
    const ALL: [CycleKind; 3] = [
        CycleKind::Simple,
        CycleKind::Extended,
        CycleKind::FunctionCall,
    ];

    fn label(self) -> &'static str {
        match self {
            CycleKind::Simple => "simple",
            CycleKind::Extended => "extended",
            CycleKind::FunctionCall => "function_call",
        }
    }

    fn code(self) -> u64 {
        match self {
            CycleKind::Simple => 1,
            CycleKind::Extended => 2,
            CycleKind::FunctionCall => 3,
        }
    }

    fn of_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(CycleKind::Simple),
            2 => Some(CycleKind::Extended),
            3 => Some(CycleKind::FunctionCall),
            _ => None,
        }
    }
}

/// Which leg a TLS handshake was made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leg {
    /// With a client.
    Client,
    /// With the upstream server.
    Upstream,
}

/// The decisions of `pgveil_revealed_values_total`, in the order of
/// [`decision_index`].
const DECISIONS: [&str; 5] = ["plaintext", "masked", "pseudonym", "null", "deny"];

/// The index of `action` in [`DECISIONS`].
pub(crate) fn decision_index(action: Action) -> usize {
    match action {
        Action::Plaintext => 0,
        Action::Masked => 1,
        Action::Pseudonym => 2,
        Action::Null => 3,
        Action::Deny => 4,
    }
}

/// Values revealed, by decision, counted where they are decided and
/// added to [`Metrics`] once per statement.
pub(crate) type Reveals = [u64; DECISIONS.len()];

/// A server's counters. See the module documentation.
pub struct Metrics {
    registry: Registry,
    /// Client connections open now.
    pub(crate) connections_open: IntGauge,
    /// Client connections accepted.
    pub(crate) connections_total: IntCounter,
    statements: [IntCounter; StatementKind::ALL.len()],
    revealed: [IntCounter; DECISIONS.len()],
    refusals: IntCounterVec,
    /// Bytes read from clients and relayed to the server.
    pub(crate) bytes_from_clients: IntCounter,
    /// Bytes read from the server and relayed to clients.
    pub(crate) bytes_from_server: IntCounter,
    /// Connections to the upstream server that failed or timed out.
    pub(crate) upstream_connect_errors: IntCounter,
    /// TLS handshakes by leg: made, failed.
    tls: [[IntCounter; 2]; 2],
    reloads: [IntCounter; 2],
    last_reload_success: IntGauge,
    last_reload_time: Gauge,
    cycles: [Histogram; CycleKind::ALL.len()],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series registered, at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let register = |collector: Box<dyn Collector>| {
            registry
                .register(collector)
                .expect("metric names are distinct and valid");
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid metric name");
            register(Box::new(counter.clone()));
            counter
        };
        let family = |name: &str, help: &str, label: &[&str]| {
            let family =
                IntCounterVec::new(Opts::new(name, help), label).expect("a valid metric name");
            register(Box::new(family.clone()));
            family
        };
        let connections_open = IntGauge::new(
            "pgveil_connections_open",
            "Client connections open now (sessions, cancel requests and refused clients).",
        )
        .expect("a valid metric name");
        register(Box::new(connections_open.clone()));
        let connections_total = counter("pgveil_connections_total", "Client connections accepted.");
        let statements = family(
            "pgveil_statements_total",
            "Client statements by kind: Query, Parse, Bind, Execute and FunctionCall messages \
             received, and COPY data transfers started (copy_in, copy_out).",
            &["kind"],
        );
        let revealed = family(
            "pgveil_revealed_values_total",
            "Protected values read through pgveil, by the policy's decision.",
            &["decision"],
        );
        let refusals = family(
            "pgveil_refusals_total",
            "Errors pgveil raised itself (statements refused, results withheld, connections \
             refused), by SQLSTATE.",
            &["sqlstate"],
        );
        let bytes = family(
            "pgveil_relayed_bytes_total",
            "Bytes relayed after startup, by direction.",
            &["direction"],
        );
        let upstream_connect_errors = counter(
            "pgveil_upstream_connect_errors_total",
            "Connections to the upstream server that failed or timed out (TLS included).",
        );
        let tls = family(
            "pgveil_tls_handshakes_total",
            "TLS handshakes by leg (client, upstream) and outcome (ok, failed).",
            &["leg", "outcome"],
        );
        let reloads = family(
            "pgveil_reloads_total",
            "Reloads on SIGHUP, by outcome (ok, refused).",
            &["outcome"],
        );
        let last_reload_success = IntGauge::new(
            "pgveil_last_reload_success",
            "1 if the last reload was applied (or none was asked for yet), 0 if it was refused.",
        )
        .expect("a valid metric name");
        last_reload_success.set(1);
        register(Box::new(last_reload_success.clone()));
        let last_reload_time = Gauge::new(
            "pgveil_last_reload_timestamp_seconds",
            "When the last reload was asked for, in seconds since the Unix epoch (0: never).",
        )
        .expect("a valid metric name");
        register(Box::new(last_reload_time.clone()));
        let cycles = HistogramVec::new(
            HistogramOpts::new(
                "pgveil_query_cycle_seconds",
                "Time from the first message of a Query, an extended-protocol batch (up to its \
                 Sync) or a FunctionCall, as read from the client, to the server's \
                 ReadyForQuery answering it, by protocol.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["protocol"],
        )
        .expect("a valid metric name");
        register(Box::new(cycles.clone()));
        let outcome =
            |leg: &str| ["ok", "failed"].map(|outcome| tls.with_label_values(&[leg, outcome]));
        Self {
            connections_open,
            connections_total,
            statements: StatementKind::ALL.map(|k| statements.with_label_values(&[k.label()])),
            revealed: DECISIONS.map(|d| revealed.with_label_values(&[d])),
            refusals,
            bytes_from_clients: bytes.with_label_values(&["client_to_server"]),
            bytes_from_server: bytes.with_label_values(&["server_to_client"]),
            upstream_connect_errors,
            tls: [outcome("client"), outcome("upstream")],
            reloads: ["ok", "refused"].map(|o| reloads.with_label_values(&[o])),
            last_reload_success,
            last_reload_time,
            cycles: CycleKind::ALL.map(|k| cycles.with_label_values(&[k.label()])),
            registry,
        }
    }

    /// Counts a statement of `kind`.
    pub(crate) fn statement(&self, kind: StatementKind) {
        self.statements[kind as usize].inc();
    }

    /// Adds values revealed, by decision.
    pub(crate) fn revealed(&self, counts: &Reveals) {
        for (counter, &count) in self.revealed.iter().zip(counts) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
    }

    /// Counts an error pgveil raised itself with `code`; a code outside
    /// pgveil's table ([`sqlstate::ALL`]) is counted as `other`, so the
    /// label stays bounded.
    pub(crate) fn refused(&self, code: &str) {
        let code = sqlstate::ALL
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("other");
        self.refusals.with_label_values(&[code]).inc();
    }

    /// Counts a TLS handshake on `leg`.
    pub(crate) fn tls_handshake(&self, leg: Leg, ok: bool) {
        self.tls[leg as usize][usize::from(!ok)].inc();
    }

    /// Records a reload asked for now: applied (`ok`) or refused.
    pub(crate) fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
        self.last_reload_success.set(i64::from(ok));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reload_time.set(now.as_secs_f64());
    }

    /// Records the latency of a cycle.
    pub(crate) fn cycle(&self, kind: CycleKind, took: Duration) {
        self.cycles[kind as usize].observe(took.as_secs_f64());
    }

    /// Every series, as the exposition format's encoder takes them.
    pub(crate) fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

/// How many cycles a session may have in flight with their latency
/// measured; those sent beyond it are answered unmeasured.
const CYCLE_SLOTS: usize = 32;

/// The ReadyForQuery cycles a session's client has started and the
/// server has not answered yet: when each started, for the latency
/// metric. Written by the client tap, read by the server tap; both run in
/// the session's one task, so the atomics are never contended.
#[derive(Debug)]
pub(crate) struct Cycles {
    epoch: Instant,
    /// Cycles started, and of those answered.
    sent: AtomicU64,
    answered: AtomicU64,
    /// CopyDone and CopyFail messages the client sent.
    copy_ends: AtomicU64,
    /// The first message of the batch being sent, in nanoseconds since
    /// `epoch` plus one (0: none yet).
    batch_start: AtomicU64,
    slots: [CycleSlot; CYCLE_SLOTS],
}

/// One cycle in flight.
#[derive(Debug, Default)]
struct CycleSlot {
    /// The cycle's number plus one, once the slot holds it.
    seq: AtomicU64,
    /// When it started, in nanoseconds since the epoch.
    started: AtomicU64,
    /// Its kind's code, and the CopyDone and CopyFail messages sent before
    /// it above 8 bits.
    info: AtomicU64,
}

impl Default for Cycles {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Cycles {
    /// For a session whose greeting's ReadyForQuery is still to pass the
    /// server tap (`greeting`), which then answers no cycle of the
    /// client's.
    pub(crate) fn new(greeting: bool) -> Self {
        let cycles = Self {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            copy_ends: AtomicU64::new(0),
            batch_start: AtomicU64::new(0),
            slots: Default::default(),
        };
        if greeting {
            // A cycle without a slot: answered unmeasured.
            cycles.sent.store(1, Ordering::Relaxed);
        }
        cycles
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// The client sent an extended-protocol message other than Sync: the
    /// batch starts now unless it started before.
    pub(crate) fn batch_message(&self) {
        if self.batch_start.load(Ordering::Relaxed) == 0 {
            let now = self.nanos(Instant::now());
            self.batch_start.store(now + 1, Ordering::Relaxed);
        }
    }

    /// The client sent CopyDone or CopyFail.
    pub(crate) fn copy_ended(&self) {
        self.copy_ends.fetch_add(1, Ordering::Relaxed);
    }

    /// The client sent a message the server answers with a ReadyForQuery:
    /// a Query, a FunctionCall or a Sync (its batch started at its first
    /// message).
    pub(crate) fn start(&self, kind: CycleKind) {
        let batch = self.batch_start.swap(0, Ordering::Relaxed);
        let started = match (kind, batch) {
            (CycleKind::Extended, 1..) => batch - 1,
            _ => self.nanos(Instant::now()),
        };
        let seq = self.sent.load(Ordering::Relaxed);
        if seq - self.answered.load(Ordering::Relaxed) < CYCLE_SLOTS as u64 {
            let slot = &self.slots[seq as usize % CYCLE_SLOTS];
            slot.started.store(started, Ordering::Relaxed);
            let copy_ends = self.copy_ends.load(Ordering::Relaxed);
            slot.info
                .store(copy_ends << 8 | kind.code(), Ordering::Relaxed);
            slot.seq.store(seq + 1, Ordering::Relaxed);
        }
        self.sent.store(seq + 1, Ordering::Relaxed);
    }

    /// The server sent ReadyForQuery, after `copies_in` CopyInResponses
    /// in the session: the kind and latency of the cycle it answers, if
    /// measured. A Sync sent while a COPY FROM STDIN's data was flowing is
    /// ignored by the server and answers nothing: it is passed over, and
    /// the cycle it belongs to is taken as starting with it.
    pub(crate) fn answered(&self, copies_in: u64) -> Option<(CycleKind, Duration)> {
        let mut started = None;
        let mut first = true;
        loop {
            let seq = self.answered.load(Ordering::Relaxed);
            if seq == self.sent.load(Ordering::Relaxed) {
                return None;
            }
            self.answered.store(seq + 1, Ordering::Relaxed);
            let slot = &self.slots[seq as usize % CYCLE_SLOTS];
            let held = slot.seq.load(Ordering::Relaxed) == seq + 1;
            let (kind, copy_ends) = if held {
                let info = slot.info.load(Ordering::Relaxed);
                (CycleKind::of_code(info & 0xff), info >> 8)
            } else {
                (None, 0)
            };
            if first {
                first = false;
                started = held.then(|| slot.started.load(Ordering::Relaxed));
            }
            let ignored = kind == Some(CycleKind::Extended) && copy_ends < copies_in;
            if !ignored {
                let now = self.nanos(Instant::now());
                return Some((kind?, Duration::from_nanos(now.saturating_sub(started?))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_pair_in_order_and_pass_over_the_greeting() {
        let cycles = Cycles::new(true);
        cycles.start(CycleKind::Simple);
        cycles.batch_message();
        cycles.start(CycleKind::Extended);
        assert_eq!(cycles.answered(0), None, "the greeting's");
        assert_eq!(cycles.answered(0).unwrap().0, CycleKind::Simple);
        assert_eq!(cycles.answered(0).unwrap().0, CycleKind::Extended);
        assert_eq!(cycles.answered(0), None, "nothing in flight");
        cycles.start(CycleKind::FunctionCall);
        assert_eq!(cycles.answered(0).unwrap().0, CycleKind::FunctionCall);
    }

    #[test]
    fn an_extended_batch_starts_at_its_first_message() {
        let cycles = Cycles::new(false);
        cycles.batch_message();
        std::thread::sleep(Duration::from_millis(20));
        cycles.batch_message();
        cycles.start(CycleKind::Extended);
        let (_, took) = cycles.answered(0).unwrap();
        assert!(took >= Duration::from_millis(20), "{took:?}");
    }

    #[test]
    fn a_sync_sent_during_copy_in_answers_nothing() {
        let cycles = Cycles::new(false);
        // Parse/Bind/Execute of a COPY FROM STDIN, Sync (ignored by the
        // server once the COPY starts), data, CopyDone, Sync.
        cycles.batch_message();
        cycles.start(CycleKind::Extended);
        cycles.copy_ended();
        cycles.start(CycleKind::Extended);
        cycles.start(CycleKind::Simple);
        assert_eq!(cycles.answered(1).unwrap().0, CycleKind::Extended);
        assert_eq!(cycles.answered(1).unwrap().0, CycleKind::Simple);
        assert_eq!(cycles.answered(1), None);
    }

    #[test]
    fn cycles_beyond_the_slots_go_unmeasured_but_stay_paired() {
        let cycles = Cycles::new(false);
        for _ in 0..CYCLE_SLOTS + 3 {
            cycles.start(CycleKind::Simple);
        }
        for _ in 0..CYCLE_SLOTS {
            assert!(cycles.answered(0).is_some());
        }
        for _ in 0..3 {
            assert_eq!(cycles.answered(0), None);
        }
        cycles.start(CycleKind::Extended);
        assert_eq!(cycles.answered(0).unwrap().0, CycleKind::Extended);
    }

    #[test]
    fn series_are_exposed_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.statement(StatementKind::Bind);
        metrics.refused(sqlstate::INSUFFICIENT_PRIVILEGE);
        metrics.refused("12345");
        metrics.revealed(&[1, 0, 2, 0, 0]);
        metrics.tls_handshake(Leg::Upstream, false);
        metrics.cycle(CycleKind::Simple, Duration::from_micros(300));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&metrics.gather())
            .unwrap();
        for line in [
            "pgveil_statements_total{kind=\"bind\"} 1",
            "pgveil_refusals_total{sqlstate=\"42501\"} 1",
            "pgveil_refusals_total{sqlstate=\"other\"} 1",
            "pgveil_revealed_values_total{decision=\"pseudonym\"} 2",
            "pgveil_tls_handshakes_total{leg=\"upstream\",outcome=\"failed\"} 1",
            "pgveil_query_cycle_seconds_bucket{protocol=\"simple\",le=\"0.0005\"} 1",
            "pgveil_last_reload_success 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
