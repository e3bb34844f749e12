//! The two audit keys the writer needs: the MAC key that chains records and
//! the key that signs seals (and approvals, `approvals/`), of one suite:
//! HMAC-SHA256 and Ed25519 (`aes`), or HMAC-SM3 and SM2 (`sm`).
//! [`AuditKeys::sign`] and [`signature_verifies`] are the one place that
//! approvals learn which signature scheme the key uses.

use std::fmt;
use std::sync::Arc;

use ring::signature::Ed25519KeyPair;
use zeroize::Zeroizing;

use super::format::MacKey;
use crate::protect::crypto::{SealSigner, Suite};
use crate::protect::keyring::{Keyring, KeyringError};

/// The audit MAC and signing keys. Shared with the writer as
/// `Arc<AuditKeys>`.
pub struct AuditKeys {
    mac: Zeroizing<[u8; 32]>,
    /// `mac`, keyed for record MACs.
    record_mac: MacKey,
    signer: Signer,
    /// The signing key's raw public key.
    public: Vec<u8>,
}

/// The keyring keeps its signing key to itself, so the keys either own
/// one or borrow the keyring's.
enum Signer {
    Owned(SealSigner),
    Keyring(Arc<Keyring>),
}

impl AuditKeys {
    /// Keys of the `aes` suite given directly (tests, tools).
    pub fn new(mac_key: &[u8; 32], signing_key: Ed25519KeyPair) -> Self {
        Self::with_signer(mac_key, SealSigner::Ed25519(signing_key))
    }

    /// Keys given directly, of the suite of `signer`.
    pub fn with_signer(mac_key: &[u8; 32], signer: SealSigner) -> Self {
        Self {
            mac: Zeroizing::new(*mac_key),
            record_mac: MacKey::new(signer.suite(), mac_key),
            public: signer.public_key(),
            signer: Signer::Owned(signer),
        }
    }

    /// The keyring's audit keys; fails if it lacks either.
    pub fn from_keyring(keyring: Arc<Keyring>) -> Result<Self, KeyringError> {
        let mac = Zeroizing::new(*keyring.audit_mac_key()?);
        let signer = keyring.audit_signing_key()?;
        let public = signer.public_key();
        // The keyring checked that both keys are of one suite.
        Ok(Self {
            record_mac: MacKey::new(signer.suite(), &mac),
            mac,
            public,
            signer: Signer::Keyring(keyring),
        })
    }

    pub(super) fn mac_key(&self) -> &[u8; 32] {
        &self.mac
    }

    pub(super) fn record_mac(&self) -> &MacKey {
        &self.record_mac
    }

    pub(super) fn signing_key(&self) -> &SealSigner {
        match &self.signer {
            Signer::Owned(key) => key,
            Signer::Keyring(keyring) => keyring
                .audit_signing_key()
                .expect("from_keyring checked the signing key"),
        }
    }

    /// The suite of the keys: what the files they write say and use.
    pub(crate) fn suite(&self) -> Suite {
        self.signing_key().suite()
    }

    /// The raw public key that verifies seals: 32 bytes (Ed25519) or 65
    /// (SM2, uncompressed SEC1).
    pub(crate) fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The audit key's signature of `message`, which
    /// [`signature_verifies`] checks with [`AuditKeys::public_key`].
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signing_key().sign(message)
    }
}

/// Whether `signature` is the signature of `message` by the audit key
/// whose public key is `public_key` (as [`AuditKeys::public_key`] gives
/// it, or `pgveil audit public-key` prints it, decoded).
/// The suite is the key's: 32 bytes are Ed25519, 65 SM2.
pub(crate) fn signature_verifies(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use crate::protect::crypto::SealVerifier;
    SealVerifier::from_raw(public_key).is_ok_and(|key| key.verify(message, signature))
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
        assert_eq!(keys.suite(), Suite::Aes);
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

    #[test]
    fn an_sm_keyring_gives_hmac_sm3_and_sm2_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let master = MasterKey::generate().unwrap().0;
        Keyring::init_in(&path, &master, &[], Some(Suite::Sm)).unwrap();
        let keyring = Arc::new(Keyring::load(&path, &master).unwrap());
        let keys = AuditKeys::from_keyring(keyring.clone()).unwrap();
        assert_eq!(keys.suite(), Suite::Sm);
        assert_eq!(keyring.audit_mac_suite().unwrap(), Suite::Sm);
        let text = keyring.audit_public_key_base64().unwrap();
        let raw = STANDARD.decode(text.strip_prefix("sm2:").unwrap()).unwrap();
        assert_eq!(keys.public_key(), raw.as_slice());
        assert_eq!(raw.len(), 65);
    }
}
