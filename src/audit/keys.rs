//! The two audit keys the writer needs: the MAC key that chains records and
//! the Ed25519 key that signs seals (and approvals, `approvals/`).
//! [`AuditKeys::sign`] and [`signature_verifies`] are the one place that
//! knows which signature scheme the key uses.

use std::fmt;
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
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

    /// The audit key's signature of `message`, which
    /// [`signature_verifies`] checks with [`AuditKeys::public_key`].
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signing_key().sign(message).as_ref().to_vec()
    }
}

/// Whether `signature` is the signature of `message` by the audit key
/// whose public key is `public_key` (as [`AuditKeys::public_key`] gives
/// it, or `pgveil audit public-key` prints it, decoded).
pub(crate) fn signature_verifies(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
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
        let signature = keys.sign(b"approval");
        assert!(signature_verifies(
            keys.public_key(),
            b"approval",
            &signature
        ));
        assert!(!signature_verifies(
            keys.public_key(),
            b"approvaL",
            &signature
        ));
        assert!(!signature_verifies(&[0; 32], b"approval", &signature));
    }
}
