//! What both directions of a session share: the ledger of declarations,
//! the session's text settings as the server reported them, the outcome
//! of the refusals and COPY TO statements in flight, and the server's
//! metrics with the session's cycles in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use crate::session::ledger::Ledger;
use crate::session::metrics::{Cycles, Metrics};
use crate::text::encoding::ClientEncoding;
use crate::wire::copy::options::CopyOptions;

/// State both taps of a session share.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) ledger: Mutex<Ledger>,
    /// Refusals sent in the extended protocol whose error has not come back.
    pub(crate) pending_refusals: AtomicUsize,
    /// The client sent Terminate: the server's close is expected.
    pub(crate) terminated: AtomicBool,
    /// The server sent a FATAL error, which explains its close itself.
    pub(crate) server_fatal: AtomicBool,
    /// The session's `client_encoding`, as the server last reported it.
    pub(crate) encoding: Mutex<ClientEncoding>,
    /// Whether `standard_conforming_strings` is on, as the server last
    /// reported it: how pgveil reads a plain literal's backslashes
    /// ([`sql::conform_literals`]).
    pub(crate) standard_strings: AtomicBool,
    /// The data options of the COPY TO statements sent, whose data has not
    /// started yet, in order.
    pub(crate) copy_out: Mutex<VecDeque<CopyOptions>>,
    /// The server's metrics, which both taps add to.
    pub(crate) metrics: Arc<Metrics>,
    /// The ReadyForQuery cycles started and not answered, for latency.
    pub(crate) cycles: Cycles,
}

impl SessionState {
    /// For a session that logged in with this encoding and these
    /// declarations, counted in `metrics`; `greeting` when the server's
    /// first ReadyForQuery is still to be relayed.
    pub(crate) fn new(
        encoding: ClientEncoding,
        standard_strings: bool,
        ledger: Ledger,
        metrics: Arc<Metrics>,
        greeting: bool,
    ) -> Self {
        Self {
            encoding: Mutex::new(encoding),
            standard_strings: AtomicBool::new(standard_strings),
            ledger: Mutex::new(ledger),
            metrics,
            cycles: Cycles::new(greeting),
            ..Self::default()
        }
    }

    /// The session's declarations, locked.
    pub(crate) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes COPY TO statements about to be sent.
    pub(crate) fn expect_copy_out(&self, options: Vec<CopyOptions>) {
        if !options.is_empty() {
            let mut queue = self.copy_out.lock().unwrap_or_else(|e| e.into_inner());
            queue.extend(options);
        }
    }

    /// The data options of the COPY TO whose data starts now, if known.
    pub(crate) fn next_copy_out(&self) -> Option<CopyOptions> {
        self.copy_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// The session's current client encoding.
    pub(crate) fn encoding(&self) -> ClientEncoding {
        *self.encoding.lock().unwrap_or_else(|e| e.into_inner())
    }
}
