//! The ciphers of one data key version, built once when the keyring loads:
//! envelope encryption and decryption in both modes, and pseudonyms.
//!
//! Also the AES-256-GCM layout `nonce || ciphertext || tag` with a random
//! nonce, which randomized envelopes and the keyring's wrapped keys share.
//!
//! Plaintext is only ever copied into the output buffer, where it is
//! encrypted in place; decryption works in place in the envelope's own
//! buffer, which becomes a zeroizing buffer first.

use std::fmt;
use std::ops::Deref;
use std::sync::Mutex;

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit, Nonce, Tag};
use aes_siv::siv::Aes256Siv;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::envelope::{Envelope, HEADER_LEN, NONCE_LEN, TAG_LEN};
use super::keys::{label, DataKey};
use super::{CryptoError, KeyRef, Mode};

/// The prefix of every pseudonym.
pub(crate) const PSEUDONYM_PREFIX: &str = "pgvp_";
/// How many bytes of the HMAC a pseudonym keeps.
const PSEUDONYM_LEN: usize = 16;

/// The ciphers of one data key version. Cheap to share: every method takes
/// `&self`, and the type is `Send + Sync`.
pub(crate) struct KeyCiphers {
    key_ref: KeyRef,
    gcm: Aes256Gcm,
    /// `Aes256Siv` needs `&mut self` (it reuses its CMAC state). One keyed
    /// instance is kept for whichever call finds it free; a call that finds
    /// it taken builds its own from `siv_key` rather than wait, so sessions
    /// never block each other here.
    siv: Mutex<Aes256Siv>,
    siv_key: Zeroizing<[u8; 64]>,
    /// Keyed once; each pseudonym starts from a clone.
    pseudonym: Hmac<Sha256>,
}

impl KeyCiphers {
    /// Derives the subkeys of `key`, which is `key_ref` in the keyring.
    pub(crate) fn new(key: &DataKey, key_ref: KeyRef) -> Self {
        let gcm_key: Zeroizing<[u8; 32]> = key.subkey(label::GCM);
        let hmac_key: Zeroizing<[u8; 32]> = key.subkey(label::PSEUDONYM);
        let siv_key: Zeroizing<[u8; 64]> = key.subkey(label::SIV);
        Self {
            key_ref,
            gcm: Aes256Gcm::new((&*gcm_key).into()),
            siv: Mutex::new(Aes256Siv::new((&*siv_key).into())),
            siv_key,
            pseudonym: hmac_sha256(hmac_key.as_ref()),
        }
    }

    /// The key these ciphers belong to.
    pub(crate) fn key_ref(&self) -> KeyRef {
        self.key_ref
    }

    /// Encrypts `plaintext` for `domain`. Deterministic mode gives the same
    /// envelope for the same plaintext, domain and key.
    pub(crate) fn encrypt(&self, domain: &str, mode: Mode, plaintext: &[u8]) -> Envelope {
        let header = Envelope::header(mode, self.key_ref);
        let aad = AssociatedData::new(&header, domain);
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_LEN + NONCE_LEN + TAG_LEN + plaintext.len(),
        ));
        out.extend_from_slice(&header);
        match mode {
            Mode::Randomized => gcm_seal_into(&self.gcm, &aad, plaintext, &mut out),
            Mode::Deterministic => self.siv_seal_into(&aad, plaintext, &mut out),
        }
        Envelope::from_sealed(std::mem::take(&mut *out), mode, self.key_ref)
    }

    /// Decrypts an envelope of `domain` made with this key, in the
    /// envelope's own buffer.
    pub(crate) fn decrypt(
        &self,
        domain: &str,
        envelope: Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (mode, key_ref) = (envelope.mode(), envelope.key_ref());
        if key_ref != self.key_ref {
            return Err(CryptoError::UnknownKey {
                domain: domain.into(),
                key: key_ref,
            });
        }
        let aad = AssociatedData::new(&Envelope::header(mode, key_ref), domain);
        let sealed = envelope.into_bytes();
        let opened = match mode {
            Mode::Randomized => gcm_open(&self.gcm, &aad, sealed, HEADER_LEN),
            Mode::Deterministic => self.siv_open(&aad, sealed, HEADER_LEN),
        };
        opened.ok_or_else(|| CryptoError::Authentication(domain.into()))
    }

    /// `pgvp_` + lowercase hex of the first 16 bytes of
    /// HMAC-SHA256(pseudonym subkey, plaintext).
    pub(crate) fn pseudonym(&self, plaintext: &[u8]) -> String {
        let mut mac = self.pseudonym.clone();
        mac.update(plaintext);
        let digest = mac.finalize().into_bytes();
        format!(
            "{PSEUDONYM_PREFIX}{}",
            hex::encode(&digest[..PSEUDONYM_LEN])
        )
    }

    /// Runs `f` with the shared SIV instance, or a fresh one if another
    /// call holds it.
    fn with_siv<R>(&self, f: impl FnOnce(&mut Aes256Siv) -> R) -> R {
        match self.siv.try_lock() {
            Ok(mut siv) => f(&mut siv),
            Err(_) => f(&mut Aes256Siv::new((&*self.siv_key).into())),
        }
    }

    /// Appends the synthetic IV and the ciphertext to `out`.
    fn siv_seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let iv_at = out.len();
        out.resize(iv_at + TAG_LEN, 0);
        out.extend_from_slice(plaintext);
        let iv = self
            .with_siv(|siv| {
                siv.encrypt_inout_detached([aad], InOutBuf::from(&mut out[iv_at + TAG_LEN..]))
            })
            .expect("AES-SIV fails only with more than 126 headers; there is one");
        out[iv_at..iv_at + TAG_LEN].copy_from_slice(&iv);
    }

    /// Opens `buf[at..]`, `iv || ciphertext`, in place: the result is `buf`
    /// holding only the plaintext.
    fn siv_open(&self, aad: &[u8], buf: Vec<u8>, at: usize) -> Option<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(buf);
        let (iv, ciphertext) = buf.get_mut(at..)?.split_first_chunk_mut::<TAG_LEN>()?;
        let iv = *iv;
        self.with_siv(|siv| {
            siv.decrypt_inout_detached([aad], InOutBuf::from(ciphertext), (&iv).into())
        })
        .ok()?;
        buf.drain(..at + TAG_LEN);
        Some(buf)
    }
}

impl fmt::Debug for KeyCiphers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCiphers({}, ..redacted..)", self.key_ref)
    }
}

/// An HMAC-SHA256 instance keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    Hmac::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The envelope header followed by the domain name: the header has a fixed
/// length, so no two (header, domain) pairs give the same bytes. Built for
/// every value, so kept on the stack for domains of usual length.
enum AssociatedData {
    Inline([u8; 128], usize),
    Heap(Vec<u8>),
}

impl AssociatedData {
    fn new(header: &[u8; HEADER_LEN], domain: &str) -> Self {
        let len = HEADER_LEN + domain.len();
        let mut inline = [0; 128];
        match inline.get_mut(..len) {
            Some(buf) => {
                buf[..HEADER_LEN].copy_from_slice(header);
                buf[HEADER_LEN..].copy_from_slice(domain.as_bytes());
                Self::Inline(inline, len)
            }
            None => Self::Heap([&header[..], domain.as_bytes()].concat()),
        }
    }
}

impl Deref for AssociatedData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Inline(buf, len) => &buf[..*len],
            Self::Heap(buf) => buf,
        }
    }
}

/// Appends a random nonce, the AES-256-GCM ciphertext of `plaintext` and
/// its tag to `out`. Nonces come from the thread's CSPRNG (`rand`'s
/// `ThreadRng`: ChaCha12, seeded and reseeded every 64 KiB from the
/// operating system), not a system call per value: a system call cost
/// twice the encryption of a short value. Whatever their source, NIST SP
/// 800-38D bounds random 96-bit nonces at 2^32 encryptions per key.
pub(crate) fn gcm_seal_into(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    let text_at = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::from(nonce),
            aad,
            InOutBuf::from(&mut out[text_at..]),
        )
        .expect("AES-GCM fails only past 64 GiB; PostgreSQL values are at most 1 GiB");
    out.extend_from_slice(&tag);
}

/// Opens `buf[at..]`, `nonce || ciphertext || tag` as written by
/// [`gcm_seal_into`], in place: the result is `buf` holding only the
/// plaintext. `None` if it is too short or fails authentication.
pub(crate) fn gcm_open(
    cipher: &Aes256Gcm,
    aad: &[u8],
    buf: Vec<u8>,
    at: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(buf);
    let (nonce, rest) = buf.get_mut(at..)?.split_first_chunk_mut::<NONCE_LEN>()?;
    let nonce = Nonce::from(*nonce);
    let (ciphertext, tag) = rest.split_last_chunk_mut::<TAG_LEN>()?;
    let tag = Tag::from(*tag);
    cipher
        .decrypt_inout_detached(&nonce, aad, InOutBuf::from(ciphertext), &tag)
        .ok()?;
    let len = buf.len() - TAG_LEN;
    buf.truncate(len);
    buf.drain(..at + NONCE_LEN);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: KeyRef = KeyRef { id: 1, version: 1 };
    const DOMAIN: &str = "public.customers.email";

    fn ciphers() -> KeyCiphers {
        KeyCiphers::new(&DataKey::generate().unwrap(), KEY)
    }

    fn plaintexts() -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = [0, 1, 16, 100, 1024]
            .iter()
            .map(|&len| (0..len).map(|i| (i * 7) as u8).collect())
            .collect();
        all.push("张伟 王芳 李娜".as_bytes().to_vec());
        all
    }

    #[test]
    fn round_trips_in_both_modes() {
        let c = ciphers();
        for mode in [Mode::Randomized, Mode::Deterministic] {
            for plaintext in plaintexts() {
                let envelope = c.encrypt(DOMAIN, mode, &plaintext);
                assert_eq!(envelope.mode(), mode);
                assert_eq!(envelope.key_ref(), KEY);
                let parsed = Envelope::from_bytes(envelope.as_bytes().to_vec()).unwrap();
                assert_eq!(c.decrypt(DOMAIN, parsed).unwrap().as_slice(), plaintext);
            }
        }
    }

    #[test]
    fn deterministic_is_equal_and_randomized_is_not() {
        let c = ciphers();
        for plaintext in plaintexts() {
            let det = |p: &[u8]| c.encrypt(DOMAIN, Mode::Deterministic, p);
            assert_eq!(det(&plaintext), det(&plaintext));
            let rnd = |p: &[u8]| c.encrypt(DOMAIN, Mode::Randomized, p);
            assert_ne!(rnd(&plaintext), rnd(&plaintext));
        }
        let a = c.encrypt(DOMAIN, Mode::Deterministic, b"a");
        let b = c.encrypt(DOMAIN, Mode::Deterministic, b"b");
        assert_ne!(a, b);
    }

    #[test]
    fn deterministic_output_depends_on_domain() {
        let c = ciphers();
        let a = c.encrypt("a", Mode::Deterministic, b"same");
        let b = c.encrypt("b", Mode::Deterministic, b"same");
        assert_ne!(a, b);
    }

    #[test]
    fn another_domain_does_not_decrypt() {
        let c = ciphers();
        for mode in [Mode::Randomized, Mode::Deterministic] {
            let envelope = c.encrypt("public.a.x", mode, b"secret value");
            let err = c.decrypt("public.b.x", envelope).unwrap_err();
            assert!(matches!(err, CryptoError::Authentication(_)), "{err}");
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn any_flipped_byte_fails() {
        let c = ciphers();
        for mode in [Mode::Randomized, Mode::Deterministic] {
            let good = c.encrypt(DOMAIN, mode, b"hello world").into_bytes();
            for at in 0..good.len() {
                for bit in [0x01, 0x80] {
                    let mut bytes = good.clone();
                    bytes[at] ^= bit;
                    let result = Envelope::from_bytes(bytes).and_then(|e| c.decrypt(DOMAIN, e));
                    let err = result.expect_err("a flipped byte must not decrypt");
                    if at >= HEADER_LEN {
                        assert!(matches!(err, CryptoError::Authentication(_)), "{at}: {err}");
                    }
                }
            }
        }
    }

    #[test]
    fn edited_mode_byte_fails_authentication() {
        let c = ciphers();
        let mut bytes = c
            .encrypt(DOMAIN, Mode::Deterministic, &[0; 40])
            .into_bytes();
        bytes[3] = Mode::Randomized.to_byte();
        let envelope = Envelope::from_bytes(bytes).unwrap();
        let err = c.decrypt(DOMAIN, envelope).unwrap_err();
        assert!(matches!(err, CryptoError::Authentication(_)), "{err}");
    }

    #[test]
    fn envelope_of_another_key_is_refused() {
        let c = ciphers();
        let other = KeyCiphers::new(&DataKey::generate().unwrap(), KeyRef { id: 2, version: 1 });
        let envelope = other.encrypt(DOMAIN, Mode::Randomized, b"x");
        let err = c.decrypt(DOMAIN, envelope).unwrap_err();
        assert!(matches!(err, CryptoError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn pseudonyms_are_stable_and_keyed() {
        let c = ciphers();
        let token = c.pseudonym("张伟".as_bytes());
        assert_eq!(token, c.pseudonym("张伟".as_bytes()));
        assert_ne!(token, c.pseudonym("王芳".as_bytes()));
        assert_ne!(token, ciphers().pseudonym("张伟".as_bytes()));
        let hex = token.strip_prefix(PSEUDONYM_PREFIX).unwrap();
        assert_eq!(hex.len(), 2 * PSEUDONYM_LEN);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(
            format!("{:?}", ciphers()),
            "KeyCiphers(id 1, version 1, ..redacted..)"
        );
    }

    #[test]
    fn gcm_open_rejects_short_input() {
        let gcm = Aes256Gcm::new(&[0; 32].into());
        for len in 0..NONCE_LEN + TAG_LEN {
            assert!(gcm_open(&gcm, b"", vec![0; len], 0).is_none());
        }
    }
}
