//! The `env` and `file` providers: a master key pgveil holds itself
//! ([`MasterKey`]). Keys of the `aes` suite are sealed with AES-256-GCM
//! under the key as it is (the keyring's wrapping since its first
//! format), the check an HMAC-SHA256 of a fixed message under it; keys of
//! the `sm` suite with SM4-GCM under the 128-bit key HKDF-SM3 derives from
//! it, the check an HMAC-SM3.

use aes_gcm::{Aes256Gcm, KeyInit};
use hmac::Mac;
use zeroize::Zeroizing;

use super::{Aad, Custody, CustodyError, CustodyKind, CHECK_MESSAGE};
use crate::protect::crypto::{
    gcm_open, gcm_seal_into, hkdf_sm3, hmac_sha256, hmac_sm3, label, MasterKey, Sm4Gcm, Suite,
};

impl MasterKey {
    /// The cipher that wraps keys of the `aes` suite: AES-256-GCM under the
    /// master key itself.
    fn wrapping_cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.as_bytes().into())
    }

    /// The cipher that wraps keys of the `sm` suite.
    fn sm_wrapping_cipher(&self) -> Sm4Gcm {
        let key: Zeroizing<[u8; 16]> = hkdf_sm3(self.as_bytes(), label::SM4_WRAP);
        Sm4Gcm::new((&*key).into())
    }

    fn check_mac(&self, suite: Suite) -> Vec<u8> {
        match suite {
            Suite::Aes => hmac_sha256(self.as_bytes())
                .chain_update(CHECK_MESSAGE)
                .finalize()
                .into_bytes()
                .to_vec(),
            Suite::Sm => hmac_sm3(self.as_bytes())
                .chain_update(CHECK_MESSAGE)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
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
        let bytes = aad.to_bytes();
        match aad.suite {
            Suite::Aes => gcm_seal_into(&self.wrapping_cipher(), &bytes, plaintext, &mut sealed),
            Suite::Sm => gcm_seal_into(&self.sm_wrapping_cipher(), &bytes, plaintext, &mut sealed),
        }
        Ok(sealed)
    }

    fn open(
        &self,
        aad: Aad<'_>,
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CustodyError> {
        let bytes = aad.to_bytes();
        Ok(match aad.suite {
            Suite::Aes => gcm_open(&self.wrapping_cipher(), &bytes, sealed.to_vec(), 0),
            Suite::Sm => gcm_open(&self.sm_wrapping_cipher(), &bytes, sealed.to_vec(), 0),
        })
    }

    fn check_value(&self, suite: Suite) -> Result<Vec<u8>, CustodyError> {
        Ok(self.check_mac(suite))
    }

    fn check(&self, suite: Suite, check: &[u8]) -> Result<bool, CustodyError> {
        // Compared in constant time, by the MAC itself.
        let matches = match suite {
            Suite::Aes => hmac_sha256(self.as_bytes())
                .chain_update(CHECK_MESSAGE)
                .verify_slice(check),
            Suite::Sm => hmac_sm3(self.as_bytes())
                .chain_update(CHECK_MESSAGE)
                .verify_slice(check),
        };
        Ok(matches.is_ok())
    }
}
