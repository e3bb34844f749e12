//! What a reload replaces: the protection and the TLS certificates
//! sessions start with. SIGHUP (`ops/cli.rs`) loads new ones into the
//! slots; the server hands each new session what the slots hold then.

use std::sync::{Arc, RwLock};

use crate::protect::protection::Protection;
use crate::proxy::tls::Tls;

/// The protection new sessions take, which a reload replaces. A session
/// keeps the protection it started with until it ends.
#[derive(Clone, Default)]
pub struct ProtectionSlot(Arc<RwLock<Option<Arc<Protection>>>>);

impl ProtectionSlot {
    /// A slot holding `protection`, or nothing when no column is protected.
    pub(crate) fn new(protection: Option<Protection>) -> Self {
        Self(Arc::new(RwLock::new(protection.map(Arc::new))))
    }

    /// What a session starting now protects with.
    pub(crate) fn current(&self) -> Option<Arc<Protection>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether columns are protected now.
    pub fn is_protecting(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Makes `protection` the one sessions starting from now on use.
    pub fn replace(&self, protection: Protection) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(protection));
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
