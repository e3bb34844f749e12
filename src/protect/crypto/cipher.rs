//! The ciphers of one data key version, built once when the keyring loads:
//! envelope encryption and decryption in both modes, and pseudonyms, in
//! the key's suite ([`Suite`]).
//!
//! Also the GCM layout `nonce || ciphertext || tag` with a random nonce,
//! which randomized envelopes and the keyring's wrapped keys share, for
//! AES-256-GCM and SM4-GCM alike.
//!
//! Plaintext is only ever copied into the output buffer, where it is
//! encrypted in place; decryption works in place in the envelope's own
//! buffer, which becomes a zeroizing buffer first.
//!
//! Every cipher is keyed once, here (key schedules, GHASH keys, the CMAC
//! subkeys of SIV, the HMAC pads): a page of values under one key pays
//! none of that per value, which matters most for SM4, whose software key
//! schedule costs about as much as a block.

use std::fmt;
use std::ops::Deref;
use std::sync::Mutex;

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadCore, AeadInOut, Aes256Gcm, KeyInit, Nonce, Tag};
use aes_siv::siv::Aes256Siv;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use sm3::Sm3;
use zeroize::Zeroizing;

use super::envelope::{Envelope, HEADER_LEN, NONCE_LEN, TAG_LEN};
use super::keys::{label, DataKey};
use super::siv::Sm4SivCached;
use super::suite::{hmac_sm3, Sm4Gcm};
use super::{CryptoError, KeyRef, Mode, Suite};

/// The prefix of every pseudonym.
pub(crate) const PSEUDONYM_PREFIX: &str = "pgvp_";
/// How many bytes of the HMAC a pseudonym keeps.
const PSEUDONYM_LEN: usize = 16;
/// Between the header and the domain in the associated data of the SM
/// suite: a domain name never holds a control character, so no AES
/// associated data (header, domain) equals an SM one.
const SM_AAD_MARK: &[u8] = b"\0sm";

/// The ciphers of one data key version. Cheap to share: every method takes
/// `&self`, and the type is `Send + Sync`.
pub(crate) struct KeyCiphers {
    key_ref: KeyRef,
    suite: Suite,
    gcm: Gcm,
    siv: Siv,
    /// Keyed once; each pseudonym starts from a clone.
    pseudonym: Pseudonym,
}

/// The randomized mode's cipher.
enum Gcm {
    Aes(Box<Aes256Gcm>),
    Sm(Box<Sm4Gcm>),
}

/// The deterministic mode's cipher: `aes-siv`'s AES-256-SIV, or SM4-SIV
/// keyed once with S2V's share of the associated data kept
/// ([`Sm4SivCached`]).
enum Siv {
    Aes(Box<Shared<Aes256Siv>>),
    Sm(Box<Sm4SivCached>),
}

/// The pseudonyms' keyed HMAC.
enum Pseudonym {
    Aes(Hmac<Sha256>),
    Sm(Hmac<Sm3>),
}

/// `Aes256Siv` needs `&mut self` (it reuses its CMAC state). One keyed
/// instance is kept for whichever call finds it free; a call that finds it
/// taken builds its own from `key` rather than wait, so sessions never
/// block each other here.
struct Shared<S> {
    cell: Mutex<S>,
    key: Zeroizing<[u8; 64]>,
}

impl Shared<Aes256Siv> {
    fn new(key: Zeroizing<[u8; 64]>) -> Self {
        Self {
            cell: Mutex::new(Aes256Siv::new((&*key).into())),
            key,
        }
    }

    /// Runs `f` with the shared instance, or a fresh one if another call
    /// holds it.
    fn with<R>(&self, f: impl FnOnce(&mut Aes256Siv) -> R) -> R {
        match self.cell.try_lock() {
            Ok(mut siv) => f(&mut siv),
            Err(_) => f(&mut Aes256Siv::new((&*self.key).into())),
        }
    }
}

impl Siv {
    /// Encrypts `buf` in place; the synthetic IV.
    fn seal(&self, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            Siv::Aes(siv) => siv
                .with(|siv| siv.encrypt_inout_detached([aad], InOutBuf::from(buf)))
                .expect("AES-SIV fails only with more than 126 headers; there is one")
                .into(),
            Siv::Sm(siv) => siv.seal(aad, buf),
        }
    }

    /// Decrypts `buf` in place if `iv` authenticates it.
    fn open(&self, aad: &[u8], buf: &mut [u8], iv: &[u8; TAG_LEN]) -> bool {
        match self {
            Siv::Aes(siv) => siv
                .with(|siv| siv.decrypt_inout_detached([aad], InOutBuf::from(buf), iv.into()))
                .is_ok(),
            Siv::Sm(siv) => siv.open(aad, buf, iv),
        }
    }
}

impl KeyCiphers {
    /// Derives the subkeys of `key`, which is `key_ref` in the keyring, in
    /// `suite`.
    pub(crate) fn new(key: &DataKey, key_ref: KeyRef, suite: Suite) -> Self {
        let (gcm, siv, pseudonym) = match suite {
            Suite::Aes => {
                let gcm_key: Zeroizing<[u8; 32]> = key.subkey(suite, label::GCM);
                let hmac_key: Zeroizing<[u8; 32]> = key.subkey(suite, label::PSEUDONYM);
                (
                    Gcm::Aes(Box::new(Aes256Gcm::new((&*gcm_key).into()))),
                    Siv::Aes(Box::new(Shared::new(key.subkey(suite, label::SIV)))),
                    Pseudonym::Aes(hmac_sha256(hmac_key.as_ref())),
                )
            }
            Suite::Sm => {
                let gcm_key: Zeroizing<[u8; 16]> = key.subkey(suite, label::SM4_GCM);
                let hmac_key: Zeroizing<[u8; 32]> = key.subkey(suite, label::PSEUDONYM_SM3);
                (
                    Gcm::Sm(Box::new(Sm4Gcm::new((&*gcm_key).into()))),
                    Siv::Sm(Box::new(Sm4SivCached::new(
                        &key.subkey(suite, label::SM4_SIV),
                    ))),
                    Pseudonym::Sm(hmac_sm3(hmac_key.as_ref())),
                )
            }
        };
        Self {
            key_ref,
            suite,
            gcm,
            siv,
            pseudonym,
        }
    }

    /// The key these ciphers belong to.
    pub(crate) fn key_ref(&self) -> KeyRef {
        self.key_ref
    }

    /// The suite of the key.
    #[cfg(test)]
    pub(crate) fn suite(&self) -> Suite {
        self.suite
    }

    /// Encrypts `plaintext` for `domain`. Deterministic mode gives the same
    /// envelope for the same plaintext, domain and key.
    pub(crate) fn encrypt(&self, domain: &str, mode: Mode, plaintext: &[u8]) -> Envelope {
        let header = Envelope::header(mode, self.key_ref);
        let aad = AssociatedData::new(&header, self.suite, domain);
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_LEN + NONCE_LEN + TAG_LEN + plaintext.len(),
        ));
        out.extend_from_slice(&header);
        match mode {
            Mode::Randomized => match &self.gcm {
                Gcm::Aes(gcm) => gcm_seal_into(&**gcm, &aad, plaintext, &mut out),
                Gcm::Sm(gcm) => gcm_seal_into(&**gcm, &aad, plaintext, &mut out),
            },
            Mode::Deterministic => siv_seal_into(&self.siv, &aad, plaintext, &mut out),
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
        let aad = AssociatedData::new(&Envelope::header(mode, key_ref), self.suite, domain);
        let sealed = envelope.into_bytes();
        let opened = match (mode, &self.gcm) {
            (Mode::Randomized, Gcm::Aes(gcm)) => gcm_open(&**gcm, &aad, sealed, HEADER_LEN),
            (Mode::Randomized, Gcm::Sm(gcm)) => gcm_open(&**gcm, &aad, sealed, HEADER_LEN),
            (Mode::Deterministic, _) => siv_open(&self.siv, &aad, sealed, HEADER_LEN),
        };
        opened.ok_or_else(|| CryptoError::Authentication(domain.into()))
    }

    /// `pgvp_` + lowercase hex of the first 16 bytes of HMAC-SHA256 (the
    /// `aes` suite) or HMAC-SM3 (the `sm` suite) of the plaintext under the
    /// pseudonym subkey.
    pub(crate) fn pseudonym(&self, plaintext: &[u8]) -> String {
        let digest: [u8; 32] = match &self.pseudonym {
            Pseudonym::Aes(mac) => mac
                .clone()
                .chain_update(plaintext)
                .finalize()
                .into_bytes()
                .into(),
            Pseudonym::Sm(mac) => mac
                .clone()
                .chain_update(plaintext)
                .finalize()
                .into_bytes()
                .into(),
        };
        format!(
            "{PSEUDONYM_PREFIX}{}",
            hex::encode(&digest[..PSEUDONYM_LEN])
        )
    }
}

/// Appends the synthetic IV and the ciphertext to `out`.
fn siv_seal_into(siv: &Siv, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let iv_at = out.len();
    out.resize(iv_at + TAG_LEN, 0);
    out.extend_from_slice(plaintext);
    let iv = siv.seal(aad, &mut out[iv_at + TAG_LEN..]);
    out[iv_at..iv_at + TAG_LEN].copy_from_slice(&iv);
}

/// Opens `buf[at..]`, `iv || ciphertext`, in place: the result is `buf`
/// holding only the plaintext.
fn siv_open(siv: &Siv, aad: &[u8], buf: Vec<u8>, at: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(buf);
    let (iv, ciphertext) = buf.get_mut(at..)?.split_first_chunk_mut::<TAG_LEN>()?;
    let iv = *iv;
    if !siv.open(aad, ciphertext, &iv) {
        return None;
    }
    buf.drain(..at + TAG_LEN);
    Some(buf)
}

impl fmt::Debug for KeyCiphers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyCiphers({}, {}, ..redacted..)",
            self.key_ref, self.suite
        )
    }
}

/// An HMAC-SHA256 instance keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The envelope header followed by the domain name (in the `sm` suite,
/// the header, [`SM_AAD_MARK`], then the domain): the header has a fixed
/// length, so no two (header, suite, domain) give the same bytes. Built for
/// every value, so kept on the stack for domains of usual length.
enum AssociatedData {
    Inline([u8; 128], usize),
    Heap(Vec<u8>),
}

impl AssociatedData {
    fn new(header: &[u8; HEADER_LEN], suite: Suite, domain: &str) -> Self {
        let mark = match suite {
            Suite::Aes => &[][..],
            Suite::Sm => SM_AAD_MARK,
        };
        let parts = [&header[..], mark, domain.as_bytes()];
        let len = parts.iter().map(|p| p.len()).sum();
        let mut inline = [0; 128];
        match inline.get_mut(..len) {
            Some(mut buf) => {
                for part in parts {
                    let (head, rest) = buf.split_at_mut(part.len());
                    head.copy_from_slice(part);
                    buf = rest;
                }
                Self::Inline(inline, len)
            }
            None => Self::Heap(parts.concat()),
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

/// Appends a random nonce, the GCM ciphertext of `plaintext` (AES-256-GCM
/// or SM4-GCM) and its tag to `out`. Nonces come from the thread's CSPRNG
/// (`rand`'s `ThreadRng`: ChaCha12, seeded and reseeded every 64 KiB from
/// the operating system), not a system call per value: a system call cost
/// twice the encryption of a short value. Whatever their source, NIST SP
/// 800-38D bounds random 96-bit nonces at 2^32 encryptions per key.
pub(crate) fn gcm_seal_into<C>(cipher: &C, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>)
where
    C: AeadInOut + AeadCore<NonceSize = U12, TagSize = U16>,
{
    let mut nonce = [0; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    let text_at = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::<U12>::from(nonce),
            aad,
            InOutBuf::from(&mut out[text_at..]),
        )
        .expect("GCM fails only past 64 GiB; PostgreSQL values are at most 1 GiB");
    out.extend_from_slice(&tag);
}

/// Opens `buf[at..]`, `nonce || ciphertext || tag` as written by
/// [`gcm_seal_into`], in place: the result is `buf` holding only the
/// plaintext. `None` if it is too short or fails authentication.
pub(crate) fn gcm_open<C>(
    cipher: &C,
    aad: &[u8],
    buf: Vec<u8>,
    at: usize,
) -> Option<Zeroizing<Vec<u8>>>
where
    C: AeadInOut + AeadCore<NonceSize = U12, TagSize = U16>,
{
    let mut buf = Zeroizing::new(buf);
    let (nonce, rest) = buf.get_mut(at..)?.split_first_chunk_mut::<NONCE_LEN>()?;
    let nonce = Nonce::<U12>::from(*nonce);
    let (ciphertext, tag) = rest.split_last_chunk_mut::<TAG_LEN>()?;
    let tag = Tag::<U16>::from(*tag);
    cipher
        .decrypt_inout_detached(&nonce, aad, InOutBuf::from(ciphertext), &tag)
        .ok()?;
    let len = buf.len() - TAG_LEN;
    buf.truncate(len);
    buf.drain(..at + NONCE_LEN);
    Some(buf)
}

#[cfg(test)]
mod tests;
