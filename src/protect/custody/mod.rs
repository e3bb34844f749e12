//! Key custody: where the master key is kept, and the one thing the
//! keyring asks of it: seal a key under the master key, bound to its
//! kind, domain, id and version, and open it again.
//!
//! | provider | where the master key is | who runs the cipher |
//! |---|---|---|
//! | `env`, `file` ([`MasterKey`]) | `PGVEIL_MASTER_KEY` or a file (owner-only) | pgveil: AES-256-GCM, or SM4-GCM for keys of the `sm` suite |
//! | `pkcs11` | a non-extractable AES-256 key in a PKCS#11 token | the token: `CKM_AES_GCM` (both suites) |
//! | `aws-kms` | a KMS key | KMS: `Encrypt`/`Decrypt`, the binding as EncryptionContext |
//!
//! Every provider binds a sealed key to its [`Aad`]: the local key and the
//! token as GCM additional data (`"LABEL|DOMAIN|ID|VERSION"`, the
//! keyring's format since its first version, and `|sm` after it for a key
//! of the `sm` suite), KMS as an EncryptionContext of the same fields
//! (`suite = sm` added for the `sm` suite). An entry moved to another
//! domain, id, version or suite does not open.
//!
//! The suite of the key being sealed chooses the local key's cipher:
//! SM4-GCM under a 128-bit key that HKDF-SM3 derives from the master key,
//! and an HMAC-SM3 `master_check`, for the `sm` suite. A PKCS#11 token
//! keeps wrapping with its AES key in both suites: PKCS#11 (to 3.1) names
//! no SM4 mechanism, SoftHSM2 (on which the tests run) has none, and the
//! domestic HSMs that have one expose it under vendor-defined mechanism
//! numbers pgveil does not guess at. KMS wraps with its own key type.
//!
//! Each provider also makes the keyring's `master_check`, which tells a
//! wrong master key apart from a damaged entry: the local key's is an
//! HMAC-SHA256 under it; the token's and KMS's is a fixed message sealed by
//! the token or by KMS, which only the same key opens.
//!
//! A provider is opened from its [`CustodyConfig`] (the `[master_key]`
//! table of the configuration) for as long as a keyring is loaded or
//! changed, then dropped: the keyring keeps only the data keys.

mod kms;
mod local;
mod pkcs11;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::protect::crypto::{MasterKey, MasterKeyError, Suite};
pub use kms::{KmsConfig, KmsError};
pub use pkcs11::{Pkcs11Config, Pkcs11Error};

/// The fixed message sealed, by the token or KMS, into `master_check`.
const CHECK_MESSAGE: &[u8] = b"pgveil keyring check v1";

/// What a sealed key is bound to: the additional authenticated data of its
/// wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aad<'a> {
    /// What is sealed: `pgveil key`, `pgveil signing key`, or the check.
    pub(crate) label: &'a str,
    /// The key domain.
    pub(crate) domain: &'a str,
    /// The key id.
    pub(crate) id: u32,
    /// The key version.
    pub(crate) version: u32,
    /// The key's suite, which chooses the local key's cipher.
    pub(crate) suite: Suite,
}

impl Aad<'_> {
    /// The binding of `master_check` of a keyring of `suite`.
    pub(crate) const fn check(suite: Suite) -> Aad<'static> {
        Aad {
            label: "pgveil keyring check",
            domain: "",
            id: 0,
            version: 0,
            suite,
        }
    }

    /// `"LABEL|DOMAIN|ID|VERSION"`, the GCM additional data, and `|sm`
    /// after it in the `sm` suite.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let suite = match self.suite {
            Suite::Aes => "",
            Suite::Sm => "|sm",
        };
        format!(
            "{}|{}|{}|{}{suite}",
            self.label, self.domain, self.id, self.version
        )
        .into_bytes()
    }

    /// The same fields as name/value pairs (KMS's EncryptionContext).
    pub(crate) fn pairs(self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("pgveil", self.label.to_owned()),
            ("domain", self.domain.to_owned()),
            ("id", self.id.to_string()),
            ("version", self.version.to_string()),
        ];
        if self.suite != Suite::Aes {
            pairs.push(("suite", self.suite.name().to_owned()));
        }
        pairs
    }
}

/// Which kind of provider wrapped a keyring (its `custody` field; absent
/// for a local master key, as in keyrings written before providers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CustodyKind {
    /// A master key pgveil holds: `env` or `file`.
    Local,
    /// A key in a PKCS#11 token.
    Pkcs11,
    /// A key in AWS KMS.
    AwsKms,
}

impl fmt::Display for CustodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CustodyKind::Local => "local (env or file)",
            CustodyKind::Pkcs11 => "pkcs11",
            CustodyKind::AwsKms => "aws-kms",
        })
    }
}

/// Where the master key is kept: seals and opens the keyring's keys.
pub trait Custody {
    /// Which kind of provider this is.
    fn kind(&self) -> CustodyKind;

    /// The provider and its key, for messages; never a secret.
    fn describe(&self) -> String;

    /// `plaintext` sealed under the master key, bound to `aad`.
    fn seal(&self, aad: Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// What `sealed` holds, or `None` if it does not open with this master
    /// key and `aad` (another key, another binding, or damaged); `Err` when
    /// the provider itself fails.
    fn open(&self, aad: Aad<'_>, sealed: &[u8])
        -> Result<Option<Zeroizing<Vec<u8>>>, CustodyError>;

    /// A new keyring's `master_check`, for a keyring of `suite`: by
    /// default the fixed check message sealed by the provider.
    fn check_value(&self, suite: Suite) -> Result<Vec<u8>, CustodyError> {
        self.seal(Aad::check(suite), CHECK_MESSAGE)
    }

    /// Whether `check` (the `master_check` of a keyring of `suite`) was
    /// made with this master key.
    fn check(&self, suite: Suite, check: &[u8]) -> Result<bool, CustodyError> {
        Ok(self
            .open(Aad::check(suite), check)?
            .is_some_and(|message| message.as_slice() == CHECK_MESSAGE))
    }
}

/// `[master_key]`: where the master key is kept. `provider` chooses; the
/// other keys are the provider's.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(tag = "provider", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CustodyConfig {
    /// The base64 master key in `PGVEIL_MASTER_KEY` (the default).
    #[default]
    Env,
    /// The base64 master key in a file readable by its owner only (what
    /// the top-level `master_key_file` means).
    File {
        /// The file.
        path: PathBuf,
    },
    /// An AES-256 key inside a PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// A symmetric key of AWS KMS.
    AwsKms(KmsConfig),
}

/// Whether opening a provider may create its key when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateKey {
    /// The key must exist.
    No,
    /// Create it if absent (`keys init --create-key`); PKCS#11 only.
    IfAbsent,
}

impl CustodyConfig {
    /// The provider's name as the configuration spells it.
    pub fn provider(&self) -> &'static str {
        match self {
            CustodyConfig::Env => "env",
            CustodyConfig::File { .. } => "file",
            CustodyConfig::Pkcs11(_) => "pkcs11",
            CustodyConfig::AwsKms(_) => "aws-kms",
        }
    }

    /// Checks the values that parse but cannot work, without contacting
    /// the provider.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CustodyConfig::Env | CustodyConfig::File { .. } => Ok(()),
            CustodyConfig::Pkcs11(config) => config.validate(),
            CustodyConfig::AwsKms(config) => config.validate(),
        }
    }

    fn local_error(&self) -> impl FnOnce(MasterKeyError) -> CustodyError {
        let provider = self.provider();
        move |source| CustodyError::MasterKey { provider, source }
    }

    /// Reaches the provider and its key.
    pub fn open(&self, create: CreateKey) -> Result<Box<dyn Custody>, CustodyError> {
        if create == CreateKey::IfAbsent && !matches!(self, CustodyConfig::Pkcs11(_)) {
            return Err(CustodyError::CannotCreate {
                provider: self.provider(),
            });
        }
        Ok(match self {
            CustodyConfig::Env => Box::new(MasterKey::from_env().map_err(self.local_error())?),
            CustodyConfig::File { path } => {
                Box::new(MasterKey::from_file(path).map_err(self.local_error())?)
            }
            CustodyConfig::Pkcs11(config) => Box::new(
                pkcs11::Pkcs11Custody::open(config, create).map_err(|source| {
                    CustodyError::Pkcs11 {
                        provider: config.describe(),
                        source,
                    }
                })?,
            ),
            CustodyConfig::AwsKms(config) => Box::new(kms::KmsCustody::open(config).map_err(
                |source| CustodyError::Kms {
                    provider: config.describe(),
                    source,
                },
            )?),
        })
    }
}

/// A master key that cannot be reached or used.
#[derive(Debug, Error)]
pub enum CustodyError {
    /// The local master key (`env` or `file`) cannot be had.
    #[error("master key provider {provider}: {source}")]
    MasterKey {
        /// `env` or `file`.
        provider: &'static str,
        /// What is wrong.
        source: MasterKeyError,
    },
    /// The PKCS#11 token or its key cannot be used.
    #[error("master key provider pkcs11 ({provider}): {source}")]
    Pkcs11 {
        /// The module, token and key.
        provider: String,
        /// What went wrong.
        source: Pkcs11Error,
    },
    /// KMS or its key cannot be used.
    #[error("master key provider aws-kms ({provider}): {source}")]
    Kms {
        /// The key, region and endpoint.
        provider: String,
        /// What went wrong.
        source: KmsError,
    },
    /// `--create-key` with a provider whose keys pgveil does not create.
    #[error(
        "master key provider {provider}: pgveil creates keys only in a PKCS#11 token \
         (--create-key); create the {provider} key first"
    )]
    CannotCreate {
        /// The provider.
        provider: &'static str,
    },
}

#[cfg(test)]
mod tests;
