//! Column encryption: keys, ciphers and the self-describing ciphertext
//! ("envelope") that pgveil stores in PostgreSQL.
//!
//! Every protected value belongs to a *key domain*: one column, or a named
//! group of columns that must be compared or joined. A domain has data keys
//! ([`DataKey`]), kept in the keyring wrapped by the [`MasterKey`]. Each
//! data key belongs to a [`Suite`], `aes` or `sm` (`suite.rs` has the
//! table of what each uses). From each data key HKDF (HKDF-SHA256, or
//! HKDF-SM3 in the `sm` suite) derives one subkey per use ([`KeyCiphers`]):
//!
//! - [`Mode::Randomized`]: AES-256-GCM (SM4-GCM) with a random 96-bit
//!   nonce. Equal plaintexts give different ciphertexts.
//! - [`Mode::Deterministic`]: AES-256-SIV (RFC 5297, 512-bit key; SM4-SIV:
//!   S2V with CMAC-SM4 and SM4-CTR, 256-bit key). Equal
//!   plaintexts in the same domain and key version give byte-identical
//!   ciphertexts, so the proxy can search for equality by encrypting the
//!   literal; nothing but equality within the domain leaks.
//! - Pseudonyms: `pgvp_` + lowercase hex of the first 16 bytes of
//!   HMAC-SHA256 (HMAC-SM3) of the plaintext. Stable, not reversible
//!   without the key.
//!
//! # Envelope layout (format version 1)
//!
//! ```text
//! offset  size  field
//! 0       2     magic b"PV"
//! 2       1     format version, 1
//! 3       1     mode: 1 randomized, 2 deterministic
//! 4       4     key id, u32 big-endian
//! 8       4     key version, u32 big-endian
//! 12      ..    randomized:    12-byte nonce || GCM ciphertext || 16-byte tag
//!               deterministic: 16-byte synthetic IV || SIV ciphertext
//! ```
//!
//! The associated data is the 12-byte header followed by the domain name's
//! bytes, so the mode, the key reference and the domain are authenticated:
//! a value copied into another domain, or with an edited header, does not
//! decrypt. In the `sm` suite the bytes `\0sm` stand between the header and
//! the domain (a domain name holds no control character, so no SM
//! associated data is an AES one).
//!
//! # Where the suite is recorded
//!
//! Both suites write this same layout, version 1: the envelope names its
//! key (id and version), and the keyring records each key's suite (its
//! entry's `suite`, bound to the key by the wrapping's additional data).
//! Key ids are unique in a keyring, so the key id an envelope names
//! decides its suite: one proxy reads both, and envelopes written before
//! suites existed read unchanged, as `aes`. The suite was kept out of the
//! header on purpose. The database's ciphertext guards
//! ([`crate::protect::guard`]) pin the header's first four bytes (magic,
//! version, mode) and SM envelopes have the same lengths as AES ones, so
//! guards already installed admit SM envelopes as they are: a keyring
//! moves from `aes` to `sm` (`keys rotate --suite sm`, then `migrate`)
//! while the application writes through pgveil, without dropping and
//! adding guards, and `policy check`, `migrate` and the reveal path, which
//! read the mode and key from the header, need no change. The suite is
//! authenticated all the same: the associated data above differs per
//! suite, and the two suites derive different subkeys and run different
//! ciphers, so an envelope never opens under the other suite.
//!
//! `bytea` columns hold the binary envelope. Text columns hold
//! `pgv1:` + URL-safe base64 without padding of the binary envelope.
//! PostgreSQL prints `bytea` in text format as `\x` + hex (or, with
//! `bytea_output = 'escape'`, in the escape form), so a text-format field
//! may also be `\x5056…` or `PV\001…`; [`parse_field`] reads every form and
//! says which it was ([`Form`]).
//!
//! Key bytes and plaintexts live in zeroizing buffers, key types print as
//! `..redacted..`, and no error message contains a plaintext or key byte.

mod cipher;
mod envelope;
mod keys;
mod signing;
mod siv;
mod suite;

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub(crate) use cipher::KeyCiphers;
#[cfg(test)]
pub(crate) use envelope::TEXT_PREFIX;
pub(crate) use envelope::{
    encoded_header, header_of, key_of, min_len, mode_prefix, parse_field_into, text_min_len,
    text_pattern, text_pattern_head, Envelope, Form,
};
pub use envelope::{parse_bytes, parse_text};
pub use keys::MasterKey;
pub(crate) use keys::{DataKey, MasterKeyError};

pub(crate) use cipher::{gcm_open, gcm_seal_into, hmac_sha256};
pub(crate) use keys::label;
pub use signing::{PublicKeyError, SealSigner, SealVerifier};
pub use suite::Suite;
pub(crate) use suite::{hkdf_sm3, hmac_sm3, Sm4Gcm};

/// How a domain's values are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// AES-256-GCM or SM4-GCM, random nonce: equal values look different.
    Randomized,
    /// AES-256-SIV or SM4-SIV: equal values look equal within the domain.
    Deterministic,
}

impl Mode {
    /// Both modes, in the order of [`Mode::index`].
    pub(crate) const ALL: [Mode; 2] = [Mode::Randomized, Mode::Deterministic];

    /// 0 or 1, for tables of one entry per mode.
    pub(crate) fn index(self) -> usize {
        match self {
            Mode::Randomized => 0,
            Mode::Deterministic => 1,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Mode::Randomized => 1,
            Mode::Deterministic => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Mode::Randomized),
            2 => Some(Mode::Deterministic),
            _ => None,
        }
    }
}

/// Names one data key: its id, unique within the keyring, and its version
/// within the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRef {
    /// Unique within the keyring.
    pub id: u32,
    /// Counts up within the key's domain.
    pub version: u32,
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "id {}, version {}", self.id, self.version)
    }
}

/// The operating system's random number generator failed.
#[derive(Debug, Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Fills `out` from the system random number generator.
pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), RandomError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| RandomError)
}

/// A value that cannot be encrypted, parsed or decrypted. Messages name
/// the domain and key, never a plaintext or key byte.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// Not valid text or bytea of the named encoding.
    #[error("encrypted value is not valid {0}")]
    Encoding(&'static str),
    /// Not a pgveil envelope.
    #[error("encrypted value does not start with the pgveil magic bytes")]
    Magic,
    /// An envelope format this pgveil cannot read.
    #[error("encrypted value has format version {0}; this pgveil reads version 1")]
    Version(u8),
    /// An unknown encryption mode.
    #[error("encrypted value has unknown mode byte {0}")]
    Mode(u8),
    /// Shorter than its header says.
    #[error("encrypted value is truncated")]
    Truncated,
    /// The keyring has no key for the domain.
    #[error("no key for domain {0}")]
    UnknownDomain(String),
    /// The value names a key the domain does not have.
    #[error("encrypted value names key {key}, which is not a key of domain {domain}")]
    UnknownKey {
        /// The domain.
        domain: String,
        /// The key the value names.
        key: KeyRef,
    },
    /// The value does not decrypt: altered, or of another domain.
    #[error(
        "encrypted value failed authentication in domain {0} \
         (it was altered, or belongs to another domain)"
    )]
    Authentication(String),
}
