//! The `env` and `file` providers: a master key pgveil holds itself
//! ([`MasterKey`]), sealing with AES-256-GCM under the key as it is (the
//! keyring's wrapping since its first format), the check an HMAC-SHA256 of
//! a fixed message under it.

use aes_gcm::{Aes256Gcm, KeyInit};
use hmac::Mac;
use zeroize::Zeroizing;

use super::{Aad, Custody, CustodyError, CustodyKind, CHECK_MESSAGE};
use crate::protect::crypto::{gcm_open, gcm_seal_into, hmac_sha256, MasterKey};

impl MasterKey {
    /// The cipher that wraps keys: AES-256-GCM under the master key itself.
    fn wrapping_cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.as_bytes().into())
    }

    fn check_mac(&self) -> hmac::Hmac<sha2::Sha256> {
        hmac_sha256(self.as_bytes()).chain_update(CHECK_MESSAGE)
    }
}

impl Custody for MasterKey {
    fn kind(&self) -> CustodyKind {
        CustodyKind::Local
    }

    fn describe(&self) -> String {
        "PGVEIL_MASTER_KEY or master_key_file".into()
    }

    fn seal(&self, aad: Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let mut sealed = Vec::new();
        gcm_seal_into(
            &self.wrapping_cipher(),
            &aad.to_bytes(),
            plaintext,
            &mut sealed,
        );
        Ok(sealed)
    }

    fn open(
        &self,
        aad: Aad<'_>,
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CustodyError> {
        Ok(gcm_open(
            &self.wrapping_cipher(),
            &aad.to_bytes(),
            sealed.to_vec(),
            0,
        ))
    }

    fn check_value(&self) -> Result<Vec<u8>, CustodyError> {
        Ok(self.check_mac().finalize().into_bytes().to_vec())
    }

    fn check(&self, check: &[u8]) -> Result<bool, CustodyError> {
        Ok(self.check_mac().verify_slice(check).is_ok())
    }
}
