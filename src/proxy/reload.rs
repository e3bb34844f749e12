//! What a reload replaces: the protection sessions start with. SIGHUP
//! (`ops/cli/serve.rs`) loads a new one into the slot; the server hands each
//! new session what the slot holds then.

use std::sync::{Arc, RwLock};

use crate::protect::protection::Protection;

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
