//! The two cryptographic suites a key can belong to, and the primitives of
//! the SM suite: the SM4 ciphers of its envelopes (GCM and SIV over SM4),
//! HMAC-SM3 and HKDF-SM3.
//!
//! | use | `aes` (the default) | `sm` (GB/T 39786) |
//! |---|---|---|
//! | randomized envelopes | AES-256-GCM | SM4-GCM (RFC 8998's construction) |
//! | deterministic envelopes | AES-256-SIV | SM4-SIV: RFC 5297's S2V with CMAC-SM4, then SM4-CTR |
//! | subkeys of a data key | HKDF-SHA256 | HKDF-SM3 |
//! | pseudonyms, audit chain MAC | HMAC-SHA256 | HMAC-SM3 |
//! | audit file hash, seal signature | SHA-256, Ed25519 | SM3, SM2 (user id `1234567812345678`) |
//! | keys wrapped by a local master key | AES-256-GCM | SM4-GCM |
//!
//! Every cipher is RustCrypto's: `sm4` (GB/T 32907), `sm3` (GB/T 32905),
//! `sm2` (GB/T 32918), and the generic GCM of `aes-gcm`, CMAC (`cmac`),
//! CTR (`ctr`) and `hmac`/`hkdf`, instantiated with SM4 and SM3. SIV is
//! RFC 5297's composition of CMAC and CTR, as `aes-siv` composes them; the
//! data path keys it once per key (`siv.rs`), and its output is checked
//! against `aes-siv`'s generic `Siv<Sm4, Cmac<Sm4>>`. No block cipher,
//! hash or MAC here is pgveil's own. SM4 has 128-bit blocks and keys, so SM4-GCM keeps GCM's 96-bit
//! nonce and 128-bit tag and SM4-SIV its 128-bit synthetic IV: SM
//! envelopes have the same layout and lengths as AES ones.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::consts::U12;
use aes_gcm::AesGcm;
#[cfg(test)]
use aes_siv::siv::CmacSiv;
use hmac::{Hmac, KeyInit};
use serde::{Deserialize, Serialize};
use sm3::Sm3;
use sm4::Sm4;
use zeroize::Zeroizing;

/// SM4-GCM with a 96-bit nonce and a 128-bit tag.
pub(crate) type Sm4Gcm = AesGcm<Sm4, U12>;
/// SM4-SIV as `aes-siv`'s generic SIV makes it: S2V with CMAC-SM4, then
/// SM4-CTR; a 256-bit key (the CMAC key, then the CTR key). The data path
/// runs the same construction keyed once (`siv.rs`); the tests check the
/// two agree byte for byte.
#[cfg(test)]
pub(crate) type Sm4Siv = CmacSiv<Sm4>;

/// Which suite of algorithms a key (or a keyring's new keys) uses.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// AES-256-GCM, AES-256-SIV, HMAC-SHA256, Ed25519.
    #[default]
    Aes,
    /// SM4-GCM, SM4-SIV, HMAC-SM3, SM2: China's commercial cryptography.
    Sm,
}

impl Suite {
    /// The suite's name, as the keyring and the command line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes => "aes",
            Suite::Sm => "sm",
        }
    }

    /// Whether this is the default suite (`aes`), which keyring entries
    /// leave unsaid.
    pub(crate) fn is_default(&self) -> bool {
        *self == Suite::Aes
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "aes" => Ok(Suite::Aes),
            "sm" => Ok(Suite::Sm),
            other => Err(format!("unknown suite {other:?}: expected aes or sm")),
        }
    }
}

/// An HMAC-SM3 instance keyed with `key`.
pub(crate) fn hmac_sm3(key: &[u8]) -> Hmac<Sm3> {
    <Hmac<Sm3> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// `N` bytes of HKDF-SM3 (RFC 5869 over HMAC-SM3) of `ikm` for the use
/// named by `label`, with an empty salt.
pub(crate) fn hkdf_sm3<const N: usize>(ikm: &[u8], label: &[u8]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0; N]);
    hkdf::Hkdf::<Sm3>::new(None, ikm)
        .expand(label, out.as_mut())
        .expect("HKDF-SM3 yields up to 8160 bytes; subkeys are at most 64");
    out
}

#[cfg(test)]
mod tests;
