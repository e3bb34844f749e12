//! The keys that sign audit seals: Ed25519 in the `aes` suite, SM2 (GB/T
//! 32918, over SM3 with the standard's default user id
//! `1234567812345678`) in the `sm` suite; and the text form of their
//! public keys, which says the algorithm:
//!
//! - Ed25519: standard base64 of the 32-byte key, as pgveil has always
//!   printed it (`ed25519:` before it is accepted too);
//! - SM2: `sm2:` + standard base64 of the 65-byte uncompressed SEC1 point.
//!
//! In the keyring an Ed25519 key is its PKCS#8 document (ring's), an SM2
//! key its 32-byte private scalar. SM2 signatures are `r || s`, 64 bytes,
//! signed deterministically (RFC 6979's nonce, as RustCrypto's `sm2` does).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sm2::dsa::signature::{Signer, Verifier};
use thiserror::Error;
use zeroize::Zeroizing;

use super::{fill_random, RandomError, Suite};

/// GB/T 32918's default user id (`ENTL_A || ID_A` of the Z hash).
pub(crate) const SM2_DEFAULT_ID: &str = "1234567812345678";
/// How the text of an SM2 public key starts.
const SM2_PREFIX: &str = "sm2:";
/// Accepted before an Ed25519 public key's base64.
const ED25519_PREFIX: &str = "ed25519:";
/// An Ed25519 public key's length.
pub(crate) const ED25519_PUBLIC_LEN: usize = 32;
/// An SM2 public key's length, uncompressed SEC1 (`04 || x || y`).
pub(crate) const SM2_PUBLIC_LEN: usize = 65;

/// A key that signs audit seals.
pub enum SealSigner {
    /// The `aes` suite's.
    Ed25519(Ed25519KeyPair),
    /// The `sm` suite's.
    Sm2(Box<sm2::dsa::SigningKey>),
}

impl SealSigner {
    /// A new key of `suite`, as the keyring stores it (secret).
    pub(crate) fn generate(suite: Suite) -> Result<Zeroizing<Vec<u8>>, RandomError> {
        match suite {
            Suite::Aes => {
                // ring returns the PKCS#8 document in a buffer it does not zeroize.
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| RandomError)?;
                Ok(Zeroizing::new(pkcs8.as_ref().to_vec()))
            }
            Suite::Sm => loop {
                // A scalar in [1, n - 2]; any other (probability about
                // 2^-32) is drawn again.
                let mut scalar = Zeroizing::new(vec![0; 32]);
                fill_random(&mut scalar)?;
                if sm2::dsa::SigningKey::from_slice(SM2_DEFAULT_ID, &scalar).is_ok() {
                    return Ok(scalar);
                }
            },
        }
    }

    /// The key stored as `secret` (see [`SealSigner::generate`]); `None`
    /// if it is not one.
    pub(crate) fn from_secret(suite: Suite, secret: &[u8]) -> Option<Self> {
        match suite {
            Suite::Aes => Ed25519KeyPair::from_pkcs8(secret).ok().map(Self::Ed25519),
            Suite::Sm => sm2::dsa::SigningKey::from_slice(SM2_DEFAULT_ID, secret)
                .ok()
                .map(|key| Self::Sm2(Box::new(key))),
        }
    }

    /// The suite the key belongs to.
    pub fn suite(&self) -> Suite {
        match self {
            Self::Ed25519(_) => Suite::Aes,
            Self::Sm2(_) => Suite::Sm,
        }
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.sign(message).as_ref().to_vec(),
            Self::Sm2(key) => {
                let signature: sm2::dsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }

    /// The raw public key: 32 bytes (Ed25519) or 65 (SM2, SEC1).
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.public_key().as_ref().to_vec(),
            Self::Sm2(key) => key.verifying_key().to_sec1_bytes().to_vec(),
        }
    }

    /// The public key's text form (see the module doc).
    pub fn public_key_text(&self) -> String {
        public_key_text(&self.public_key())
    }
}

impl fmt::Debug for SealSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealSigner({}, ..redacted..)", self.suite())
    }
}

/// The text form of a raw public key (its length says its algorithm).
fn public_key_text(raw: &[u8]) -> String {
    if raw.len() == SM2_PUBLIC_LEN {
        format!("{SM2_PREFIX}{}", STANDARD.encode(raw))
    } else {
        STANDARD.encode(raw)
    }
}

/// A public key that cannot be used to verify seals.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PublicKeyError {
    /// Not base64.
    #[error("the audit public key is not valid base64 (expected the output of `pgveil audit public-key`)")]
    NotBase64,
    /// Of a length no algorithm has.
    #[error(
        "the audit public key is {0} bytes long: an Ed25519 key has {ED25519_PUBLIC_LEN}, \
         an SM2 key (sm2:...) {SM2_PUBLIC_LEN}"
    )]
    Length(usize),
    /// Not a point of the SM2 curve.
    #[error("the audit public key is not an SM2 public key")]
    NotSm2,
}

/// A public key that verifies seals.
pub enum SealVerifier {
    /// Ed25519's 32 bytes.
    Ed25519([u8; ED25519_PUBLIC_LEN]),
    /// SM2's point, with the default user id.
    Sm2(Box<sm2::dsa::VerifyingKey>),
}

impl SealVerifier {
    /// Parses the text form of a public key (see the module doc).
    pub fn parse(text: &str) -> Result<Self, PublicKeyError> {
        let text = text.trim();
        let (sm2, base64) = match text.strip_prefix(SM2_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix(ED25519_PREFIX).unwrap_or(text)),
        };
        let raw = STANDARD
            .decode(base64)
            .map_err(|_| PublicKeyError::NotBase64)?;
        match (sm2, raw.len()) {
            (false, ED25519_PUBLIC_LEN) | (true, SM2_PUBLIC_LEN) => Self::from_raw(&raw),
            (_, len) => Err(PublicKeyError::Length(len)),
        }
    }

    /// A raw public key, its algorithm told by its length: 32 bytes
    /// Ed25519, 65 bytes SM2 (uncompressed SEC1).
    pub fn from_raw(raw: &[u8]) -> Result<Self, PublicKeyError> {
        match raw.len() {
            ED25519_PUBLIC_LEN => Ok(Self::Ed25519(raw.try_into().expect("32 bytes"))),
            SM2_PUBLIC_LEN => sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DEFAULT_ID, raw)
                .map(|key| Self::Sm2(Box::new(key)))
                .map_err(|_| PublicKeyError::NotSm2),
            len => Err(PublicKeyError::Length(len)),
        }
    }

    /// The suite the key belongs to.
    pub fn suite(&self) -> Suite {
        match self {
            Self::Ed25519(_) => Suite::Aes,
            Self::Sm2(_) => Suite::Sm,
        }
    }

    /// The raw key (see [`SealVerifier::from_raw`]).
    pub fn raw(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.to_vec(),
            Self::Sm2(key) => key.to_sec1_bytes().to_vec(),
        }
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ed25519(key) => UnparsedPublicKey::new(&ED25519, key)
                .verify(message, signature)
                .is_ok(),
            Self::Sm2(key) => sm2::dsa::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }
}

impl fmt::Debug for SealVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealVerifier({})", self.suite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_suites_sign_and_verify_through_the_text_form() {
        for suite in [Suite::Aes, Suite::Sm] {
            let secret = SealSigner::generate(suite).unwrap();
            let signer = SealSigner::from_secret(suite, &secret).unwrap();
            assert_eq!(signer.suite(), suite);
            let text = signer.public_key_text();
            assert_eq!(text.starts_with("sm2:"), suite == Suite::Sm, "{text}");
            let verifier = SealVerifier::parse(&text).unwrap();
            assert_eq!(verifier.suite(), suite);
            let signature = signer.sign(b"seal");
            assert!(verifier.verify(b"seal", &signature));
            assert!(!verifier.verify(b"seaL", &signature));
            let mut bad = signature.clone();
            bad[5] ^= 1;
            assert!(!verifier.verify(b"seal", &bad));
            assert!(!verifier.verify(b"seal", &signature[..10]));
            let raw = SealVerifier::from_raw(&signer.public_key()).unwrap();
            assert!(raw.verify(b"seal", &signature));
            // A key of the other suite does not verify it.
            let other = SealSigner::generate(match suite {
                Suite::Aes => Suite::Sm,
                Suite::Sm => Suite::Aes,
            })
            .unwrap();
            let other_suite = if suite == Suite::Aes {
                Suite::Sm
            } else {
                Suite::Aes
            };
            let other = SealSigner::from_secret(other_suite, &other).unwrap();
            assert!(!SealVerifier::parse(&other.public_key_text())
                .unwrap()
                .verify(b"seal", &signature));
            assert_eq!(
                format!("{signer:?}"),
                format!("SealSigner({suite}, ..redacted..)")
            );
        }
    }

    #[test]
    fn an_sm2_secret_is_not_read_as_ed25519_or_back() {
        let sm = SealSigner::generate(Suite::Sm).unwrap();
        assert!(SealSigner::from_secret(Suite::Aes, &sm).is_none());
        let ed = SealSigner::generate(Suite::Aes).unwrap();
        assert!(SealSigner::from_secret(Suite::Sm, &ed).is_none());
    }

    #[test]
    fn bad_public_keys_say_what_is_wrong() {
        assert_eq!(
            SealVerifier::parse("not base64!").unwrap_err(),
            PublicKeyError::NotBase64
        );
        assert_eq!(
            SealVerifier::parse(&STANDARD.encode([1; 20])).unwrap_err(),
            PublicKeyError::Length(20)
        );
        // 65 bytes without the sm2: prefix, and 32 with it.
        assert_eq!(
            SealVerifier::parse(&STANDARD.encode([4; 65])).unwrap_err(),
            PublicKeyError::Length(65)
        );
        assert_eq!(
            SealVerifier::parse(&format!("sm2:{}", STANDARD.encode([4; 32]))).unwrap_err(),
            PublicKeyError::Length(32)
        );
        assert_eq!(
            SealVerifier::parse(&format!("sm2:{}", STANDARD.encode([4; 65]))).unwrap_err(),
            PublicKeyError::NotSm2
        );
    }
}
