//! The two audit keys the writer needs: the MAC key that chains records and
//! the Ed25519 key that signs seals.

use std::fmt;
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use super::format::MacKey;
use crate::protect::keyring::{Keyring, KeyringError};

/// The audit MAC and signing keys. Shared with the writer as
/// `Arc<AuditKeys>`.
pub struct AuditKeys {
    mac: Zeroizing<[u8; 32]>,
    /// `mac`, keyed for record MACs.
    record_mac: MacKey,
    signer: Signer,
}

/// The keyring keeps its signing key to itself, so the keys either own
/// one or borrow the keyring's.
enum Signer {
    Owned(Ed25519KeyPair),
    Keyring(Arc<Keyring>),
}

impl AuditKeys {
    /// Keys given directly (tests, tools).
    pub fn new(mac_key: &[u8; 32], signing_key: Ed25519KeyPair) -> Self {
        Self {
            mac: Zeroizing::new(*mac_key),
            record_mac: MacKey::new(mac_key),
            signer: Signer::Owned(signing_key),
        }
    }

    /// The keyring's audit keys; fails if it lacks either.
    pub fn from_keyring(keyring: Arc<Keyring>) -> Result<Self, KeyringError> {
        let mac = Zeroizing::new(*keyring.audit_mac_key()?);
        keyring.audit_signing_key()?;
        Ok(Self {
            record_mac: MacKey::new(&mac),
            mac,
            signer: Signer::Keyring(keyring),
        })
    }

    pub(super) fn mac_key(&self) -> &[u8; 32] {
        &self.mac
    }

    pub(super) fn record_mac(&self) -> &MacKey {
        &self.record_mac
    }

    pub(super) fn signing_key(&self) -> &Ed25519KeyPair {
        match &self.signer {
            Signer::Owned(key) => key,
            Signer::Keyring(keyring) => keyring
                .audit_signing_key()
                .expect("from_keyring checked the signing key"),
        }
    }

    /// The raw 32-byte Ed25519 public key that verifies seals.
    pub(crate) fn public_key(&self) -> &[u8] {
        self.signing_key().public_key().as_ref()
    }
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKeys(..redacted..)")
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use super::*;
    use crate::protect::crypto::MasterKey;

    #[test]
    fn keyring_keys_are_the_keyrings_audit_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let master = MasterKey::generate().unwrap().0;
        Keyring::init(&path, &master, &[]).unwrap();
        let keyring = Arc::new(Keyring::load(&path, &master).unwrap());
        let keys = AuditKeys::from_keyring(keyring.clone()).unwrap();
        assert_eq!(keys.mac_key(), keyring.audit_mac_key().unwrap());
        let public = STANDARD.decode(keyring.audit_public_key_base64().unwrap());
        assert_eq!(keys.public_key(), public.unwrap());
        assert_eq!(format!("{keys:?}"), "AuditKeys(..redacted..)");
    }
}
