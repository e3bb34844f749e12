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

use std::borrow::Cow;
use std::fmt;

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadCore, AeadInOut, KeyInit, Nonce, Tag};
use hmac::{Hmac, Mac};
use rand::Rng;
use ring::aead::{Aad, LessSafeKey, UnboundKey, AES_256_GCM};
use sha2::Sha256;
use sm3::Sm3;
use zeroize::Zeroizing;

use super::envelope::{Envelope, HEADER_LEN, NONCE_LEN, TAG_LEN};
use super::keys::{label, DataKey};
use super::siv::{Aes256SivCached, Sm4SivCached};
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
    /// The key's domain, and the associated data of its envelopes in each
    /// mode (by [`Mode::index`]), built once.
    domain: String,
    aad: [Vec<u8>; 2],
    gcm: Gcm,
    siv: Siv,
    /// Keyed once; each pseudonym starts from a clone.
    pseudonym: Pseudonym,
}

/// The randomized mode's cipher: AES-256-GCM from `ring` (BoringSSL's
/// assembly, a third faster than `aes-gcm` on a 20-byte value, see
/// BENCHMARKS.md), SM4-GCM from RustCrypto's generic GCM. The envelope is
/// the same whichever implementation wrote it: the tests open `ring`'s
/// with `aes-gcm` and the other way round. `ring` does not zeroize a key
/// schedule it drops (a keyring reloaded leaves the old one in freed
/// memory), where `aes-gcm` would; the live keys are in the process's
/// memory all the same.
enum Gcm {
    Aes(Box<LessSafeKey>),
    Sm(Box<Sm4Gcm>),
}

/// The deterministic mode's cipher: AES-256-SIV or SM4-SIV, keyed once
/// with S2V's share of the associated data kept ([`SivCached`]).
enum Siv {
    Aes(Box<Aes256SivCached>),
    Sm(Box<Sm4SivCached>),
}

/// The pseudonyms' keyed HMAC.
enum Pseudonym {
    Aes(Hmac<Sha256>),
    Sm(Hmac<Sm3>),
}

impl Siv {
    /// Encrypts `buf` in place; the synthetic IV.
    fn seal(&self, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            Siv::Aes(siv) => siv.seal(aad, buf),
            Siv::Sm(siv) => siv.seal(aad, buf),
        }
    }

    /// Decrypts `buf` in place if `iv` authenticates it.
    fn open(&self, aad: &[u8], buf: &mut [u8], iv: &[u8; TAG_LEN]) -> bool {
        match self {
            Siv::Aes(siv) => siv.open(aad, buf, iv),
            Siv::Sm(siv) => siv.open(aad, buf, iv),
        }
    }
}

impl KeyCiphers {
    /// Derives the subkeys of `key`, which is `key_ref` of `domain` in the
    /// keyring, in `suite`.
    pub(crate) fn new(key: &DataKey, key_ref: KeyRef, suite: Suite, domain: &str) -> Self {
        let aad = Mode::ALL.map(|mode| associated_data(mode, key_ref, suite, domain));
        let siv_aad = &aad[Mode::Deterministic.index()];
        let (gcm, siv, pseudonym) = match suite {
            Suite::Aes => {
                let gcm_key: Zeroizing<[u8; 32]> = key.subkey(suite, label::GCM);
                let hmac_key: Zeroizing<[u8; 32]> = key.subkey(suite, label::PSEUDONYM);
                (
                    Gcm::Aes(Box::new(aes_gcm_key(&gcm_key))),
                    Siv::Aes(Box::new(Aes256SivCached::new(
                        &*key.subkey::<64>(suite, label::SIV),
                        siv_aad,
                    ))),
                    Pseudonym::Aes(hmac_sha256(hmac_key.as_ref())),
                )
            }
            Suite::Sm => {
                let gcm_key: Zeroizing<[u8; 16]> = key.subkey(suite, label::SM4_GCM);
                let hmac_key: Zeroizing<[u8; 32]> = key.subkey(suite, label::PSEUDONYM_SM3);
                (
                    Gcm::Sm(Box::new(Sm4Gcm::new((&*gcm_key).into()))),
                    Siv::Sm(Box::new(Sm4SivCached::new(
                        &*key.subkey::<32>(suite, label::SM4_SIV),
                        siv_aad,
                    ))),
                    Pseudonym::Sm(hmac_sm3(hmac_key.as_ref())),
                )
            }
        };
        Self {
            key_ref,
            suite,
            domain: domain.into(),
            aad,
            gcm,
            siv,
            pseudonym,
        }
    }

    /// The associated data of an envelope of `mode` and `domain` under
    /// this key: kept for the key's own domain, built for another (which
    /// then does not authenticate).
    fn aad(&self, mode: Mode, domain: &str) -> Cow<'_, [u8]> {
        match domain == self.domain {
            true => Cow::Borrowed(&self.aad[mode.index()]),
            false => Cow::Owned(associated_data(mode, self.key_ref, self.suite, domain)),
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
        let aad = self.aad(mode, domain);
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_LEN + NONCE_LEN + TAG_LEN + plaintext.len(),
        ));
        out.extend_from_slice(&header);
        match mode {
            Mode::Randomized => match &self.gcm {
                Gcm::Aes(gcm) => ring_seal_into(gcm, &aad, plaintext, &mut out),
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
        let aad = self.aad(mode, domain);
        let sealed = envelope.into_bytes();
        let opened = match (mode, &self.gcm) {
            (Mode::Randomized, Gcm::Aes(gcm)) => ring_open(gcm, &aad, sealed, HEADER_LEN),
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

/// The associated data of an envelope of `mode` under `key_ref` in
/// `suite` and `domain`: the envelope header followed by the domain name
/// (in the `sm` suite, the header, [`SM_AAD_MARK`], then the domain). The
/// header has a fixed length, so no two (header, suite, domain) give the
/// same bytes.
fn associated_data(mode: Mode, key_ref: KeyRef, suite: Suite, domain: &str) -> Vec<u8> {
    let mark = match suite {
        Suite::Aes => &[][..],
        Suite::Sm => SM_AAD_MARK,
    };
    [
        &Envelope::header(mode, key_ref)[..],
        mark,
        domain.as_bytes(),
    ]
    .concat()
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
    let (nonce, text_at) = nonce_then_plaintext(plaintext, out);
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::<U12>::from(nonce),
            aad,
            InOutBuf::from(&mut out[text_at..]),
        )
        .expect("GCM fails only past 64 GiB; PostgreSQL values are at most 1 GiB");
    out.extend_from_slice(&tag);
}

/// Appends a fresh random nonce, then `plaintext`, to `out`, for GCM to
/// encrypt in place: the nonce, and where the plaintext starts.
fn nonce_then_plaintext(plaintext: &[u8], out: &mut Vec<u8>) -> ([u8; NONCE_LEN], usize) {
    let mut nonce = [0; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    let text_at = out.len();
    out.extend_from_slice(plaintext);
    (nonce, text_at)
}

/// AES-256-GCM keyed with `key`, from `ring`.
fn aes_gcm_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 256-bit AES key"))
}

/// [`gcm_seal_into`] with `ring`'s AES-256-GCM: the same layout, the same
/// nonces.
fn ring_seal_into(key: &LessSafeKey, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let (nonce, text_at) = nonce_then_plaintext(plaintext, out);
    let tag = key
        .seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[text_at..],
        )
        .expect("GCM fails only past 64 GiB; PostgreSQL values are at most 1 GiB");
    out.extend_from_slice(tag.as_ref());
}

/// [`gcm_open`] with `ring`'s AES-256-GCM.
fn ring_open(key: &LessSafeKey, aad: &[u8], buf: Vec<u8>, at: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(buf);
    let (nonce, sealed) = buf.get_mut(at..)?.split_first_chunk_mut::<NONCE_LEN>()?;
    let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
    let len = key.open_in_place(nonce, Aad::from(aad), sealed).ok()?.len();
    buf.truncate(at + NONCE_LEN + len);
    buf.drain(..at + NONCE_LEN);
    Some(buf)
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
