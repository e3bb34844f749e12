//! The keyring: every key domain's data keys and the audit keys, stored in
//! a TOML file wrapped by the master key, and loaded into ready ciphers.
//! The master key is reached through its provider ([`Custody`]): a local
//! key (`env`, `file`), a PKCS#11 token or AWS KMS.
//!
//! ```toml
//! format = 1
//! custody = "pkcs11"            # or "aws-kms"; absent for a local master key
//! suite = "sm"                  # the suite of new keys; absent for "aes"
//! master_check = "<base64 HMAC-SHA256(master, \"pgveil keyring check v1\")>"
//!
//! [[key]]                       # a data key
//! domain = "public.customers.email"
//! id = 1                        # unique within the keyring
//! version = 1                   # the highest version of a domain is active
//! suite = "sm"                  # the key's suite; absent for "aes"
//! created = "2026-11-25T10:00:00Z"
//! wrapped = "<base64 nonce || AES-256-GCM(master, key)>"  # SM4-GCM for "sm", or KMS's ciphertext
//!
//! [[signing_key]]               # an Ed25519 PKCS#8 document, or an SM2 private key ("sm")
//! domain = "pgveil.audit"
//! # same fields as [[key]]
//! ```
//!
//! The associated data of a wrapped key is `"pgveil key|DOMAIN|ID|VERSION"`
//! (`"pgveil signing key|…"` for signing keys, `|sm` after it for a key of
//! the `sm` suite; KMS takes the same fields as its EncryptionContext), so
//! an entry cannot be moved to another domain, id, version or suite.
//! `master_check` tells a wrong master key apart from a damaged entry: for
//! a local key an HMAC (HMAC-SM3 in a keyring of suite `sm`) under it,
//! for a token or KMS a fixed message they sealed (see `custody`).
//!
//! **Suites.** Each key has its suite ([`Suite`]): `keys init --suite sm`
//! makes every key of a new keyring, audit keys included, an `sm` one; `keys
//! rotate --suite sm` adds `sm` versions of data keys and makes `sm` the
//! keyring's suite, after which `migrate` re-encrypts stored values under
//! them. A keyring may hold keys of both suites; the key an envelope names
//! says how it opens (see [`crate::protect::crypto`]).
//!
//! The domain [`AUDIT_DOMAIN`] is reserved: its data key only yields the
//! audit log's MAC key (HMAC-SHA256, or HMAC-SM3 in the `sm` suite), and
//! it holds the key that signs audit files (Ed25519, or SM2). Audit keys
//! are never rotated, so the audit log keeps the suite the keyring was
//! made with.
//!
//! A loaded [`Keyring`] is read-only and `Send + Sync`: share it as
//! `Arc<Keyring>`. Its ciphers are built once, at load.

mod file;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::protect::crypto::{
    CryptoError, Envelope, KeyCiphers, KeyRef, Mode, RandomError, SealSigner, Suite,
};
use crate::protect::custody::{Custody, CustodyError, CustodyKind};
use file::{read_file, write_atomically, KeyringFile, Unwrapper};

/// The reserved domain holding the audit keys.
pub(crate) const AUDIT_DOMAIN: &str = "pgveil.audit";

/// The keyring file format this pgveil reads and writes.
const FORMAT: u32 = 1;

/// The two kinds of wrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A 32-byte data key (`[[key]]`).
    Data,
    /// The audit seals' signing key (`[[signing_key]]`): an Ed25519
    /// PKCS#8 document, or an SM2 private key.
    Signing,
}

impl KeyKind {
    fn aad_label(self) -> &'static str {
        match self {
            KeyKind::Data => "pgveil key",
            KeyKind::Signing => "pgveil signing key",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Data => "data key",
            KeyKind::Signing => "signing key",
        })
    }
}

/// One key of a keyring, as `pgveil keys list` shows it: never its
/// material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyListing {
    /// A data key or the audit signing key.
    pub kind: KeyKind,
    /// Its domain (`pgveil.audit` for the audit keys).
    pub domain: String,
    /// Its id, unique in the keyring; ciphertext names it.
    pub id: u32,
    /// Its version within the domain.
    pub version: u32,
    /// Its suite: `aes` or `sm`.
    pub suite: Suite,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// Whether it is the newest of its domain and kind: the one new values
    /// are encrypted (or seals signed) with. Older versions still decrypt.
    pub current: bool,
}

/// A keyring that cannot be read, written or used.
#[derive(Debug, Error)]
pub enum KeyringError {
    /// The file cannot be read.
    #[error("cannot read keyring {path}: {source}")]
    Read {
        /// The keyring file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file cannot be written.
    #[error("cannot write keyring {path}: {source}")]
    Write {
        /// The keyring file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a keyring.
    #[error("keyring {path}: {message}")]
    Parse {
        /// The keyring file.
        path: PathBuf,
        /// What the parser says.
        message: String,
    },
    /// A keyring format this pgveil cannot read.
    #[error("keyring {path} has format {found}; this pgveil reads format {FORMAT}")]
    Format {
        /// The keyring file.
        path: PathBuf,
        /// The format or id found.
        found: u32,
    },
    /// The master key is not the keyring's.
    #[error("the master key does not match keyring {path} ({given} is wrong)")]
    WrongMasterKey {
        /// The keyring file.
        path: PathBuf,
        /// The provider and key given.
        given: String,
    },
    /// The keyring was wrapped by another kind of provider.
    #[error(
        "keyring {path} is wrapped by a {wrapped_by} master key, not by {given}; \
         configure [master_key] as it was wrapped, or move it with `pgveil keys rewrap`"
    )]
    WrongProvider {
        /// The keyring file.
        path: PathBuf,
        /// The kind of provider that wrapped it.
        wrapped_by: CustodyKind,
        /// The provider and key given.
        given: String,
    },
    /// The master key's provider cannot be reached or fails.
    #[error("keyring {path}: {source}")]
    Custody {
        /// The keyring file.
        path: PathBuf,
        /// What the provider says.
        source: Box<CustodyError>,
    },
    /// An entry does not unwrap with the master key.
    #[error(
        "keyring {path}: the {kind} of domain {domain} ({key}) does not unwrap \
         with the master key: the entry is damaged"
    )]
    Unwrap {
        /// The keyring file.
        path: PathBuf,
        /// Which kind of key.
        kind: KeyKind,
        /// The key domain.
        domain: String,
        /// The key.
        key: KeyRef,
    },
    /// An entry is malformed.
    #[error("keyring {path}: the {kind} of domain {domain} ({key}) {problem}")]
    BadEntry {
        /// The keyring file.
        path: PathBuf,
        /// Which kind of key.
        kind: KeyKind,
        /// The key domain.
        domain: String,
        /// The key.
        key: KeyRef,
        /// What is wrong.
        problem: &'static str,
    },
    /// Two keys share an id.
    #[error("keyring {path}: key id {id} is used more than once")]
    DuplicateId {
        /// The keyring file.
        path: PathBuf,
        /// The key id.
        id: u32,
    },
    /// Two keys of a domain share a version.
    #[error("keyring {path}: domain {domain} has more than one {kind} of version {version}")]
    DuplicateVersion {
        /// The keyring file.
        path: PathBuf,
        /// Which kind of key.
        kind: KeyKind,
        /// The key domain.
        domain: String,
        /// The version.
        version: u32,
    },
    /// Domains of the policy have no key.
    #[error("{}", missing_message(path, domains))]
    MissingDomains {
        /// The keyring file.
        path: PathBuf,
        /// The domains that have no key.
        domains: Vec<String>,
    },
    /// A key domain name that cannot be used.
    #[error("key domain name {domain:?} {problem}")]
    InvalidDomain {
        /// The key domain.
        domain: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A domain the keyring has no key for.
    #[error("keyring {path} has no key domain {domain}")]
    UnknownDomain {
        /// The keyring file.
        path: PathBuf,
        /// The key domain.
        domain: String,
    },
    /// A key version the domain does not have.
    #[error("keyring {path}: domain {domain} has no version {version}")]
    UnknownVersion {
        /// The keyring file.
        path: PathBuf,
        /// The key domain.
        domain: String,
        /// The version asked for.
        version: u32,
    },
    /// The version new values are written with cannot be retired.
    #[error(
        "keyring {path}: version {version} is the current key of domain {domain}, which new \
         values are written with; rotate first (`pgveil keys rotate`)"
    )]
    RetireCurrent {
        /// The keyring file.
        path: PathBuf,
        /// The key domain.
        domain: String,
        /// The version asked for.
        version: u32,
    },
    /// The audit keys are missing.
    #[error("keyring {path} has no {kind} for {AUDIT_DOMAIN}; run `pgveil keys init`")]
    NoAuditKey {
        /// The keyring file.
        path: PathBuf,
        /// Which kind of key.
        kind: KeyKind,
    },
    /// The audit MAC key and signing key are of different suites.
    #[error(
        "keyring {path}: the audit signing key (version {version}) is of suite {signing}, \
         the audit MAC key of suite {mac}; an audit file has one suite"
    )]
    AuditSuites {
        /// The keyring file.
        path: PathBuf,
        /// The signing key's version.
        version: u32,
        /// The MAC key's suite.
        mac: Suite,
        /// The signing key's suite.
        signing: Suite,
    },
    /// `keys init --suite` names another suite than an existing keyring's.
    #[error(
        "keyring {path} is of suite {found}, not {asked}; to move it, add keys of suite \
         {asked} with `pgveil keys rotate --suite {asked}`, then run `pgveil migrate`"
    )]
    SuiteMismatch {
        /// The keyring file.
        path: PathBuf,
        /// The keyring's suite.
        found: Suite,
        /// The suite asked for.
        asked: Suite,
    },
    /// The system random number generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

fn missing_message(path: &Path, domains: &[String]) -> String {
    domains
        .iter()
        .map(|domain| {
            format!(
                "policy column domain {domain} has no key in keyring {}; run `pgveil keys init`",
                path.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `Keyring::init` did.
#[derive(Debug, PartialEq, Eq)]
pub struct InitReport {
    /// Whether the file was created rather than extended.
    pub created: bool,
    /// Domains that received keys, in order; [`AUDIT_DOMAIN`] among them
    /// when its data or signing key was added.
    pub added: Vec<String>,
}

/// A loaded keyring: ciphers for every domain, and the audit keys.
pub struct Keyring {
    path: PathBuf,
    /// Each domain's keys by ascending version; the last is active.
    domains: HashMap<String, Vec<KeyCiphers>>,
    audit_mac: Option<(Suite, Zeroizing<[u8; 32]>)>,
    audit_signing: Option<SealSigner>,
}

impl Keyring {
    /// Reads the keyring at `path` and unwraps every key with `master`.
    pub fn load(path: &Path, master: &dyn Custody) -> Result<Self, KeyringError> {
        Self::open(path, &read_file(path)?, master)
    }

    /// Creates the keyring at `path` (mode 0600) with a version-1 key for
    /// each of `domains` and the audit keys; if it exists, adds keys only
    /// for the domains (and audit keys) it lacks. Writes atomically. A new
    /// keyring's keys are of the `aes` suite.
    pub fn init(
        path: &Path,
        master: &dyn Custody,
        domains: &[String],
    ) -> Result<InitReport, KeyringError> {
        Self::init_in(path, master, domains, None)
    }

    /// [`Keyring::init`], the keys of a new keyring of `suite` (`aes` when
    /// `None`). An existing keyring gets keys of its own suite; naming
    /// another is refused ([`KeyringError::SuiteMismatch`]).
    pub fn init_in(
        path: &Path,
        master: &dyn Custody,
        domains: &[String],
        suite: Option<Suite>,
    ) -> Result<InitReport, KeyringError> {
        for domain in domains {
            validate_domain(domain)?;
        }
        let (mut file, created) = match read_file(path) {
            Ok(file) => {
                Self::open(path, &file, master)?;
                if let Some(asked) = suite.filter(|asked| *asked != file.suite) {
                    return Err(KeyringError::SuiteMismatch {
                        path: path.into(),
                        found: file.suite,
                        asked,
                    });
                }
                (file, false)
            }
            Err(KeyringError::Read { ref source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                (
                    KeyringFile::new(path, master, suite.unwrap_or_default())?,
                    true,
                )
            }
            Err(e) => return Err(e),
        };
        let added = file.add_missing(path, master, domains)?;
        if created || !added.is_empty() {
            write_atomically(path, &file.to_text()).map_err(|source| KeyringError::Write {
                path: path.into(),
                source,
            })?;
        }
        Ok(InitReport { created, added })
    }

    fn open(path: &Path, file: &KeyringFile, master: &dyn Custody) -> Result<Self, KeyringError> {
        file.check_master(path, master)?;
        file.check_unique(path)?;
        let unwrapper = Unwrapper::new(path, master);
        let mut domains: HashMap<String, Vec<KeyCiphers>> = HashMap::new();
        let mut audit_mac = None;
        for entry in &file.keys {
            let key = unwrapper.data_key(entry)?;
            if entry.domain == AUDIT_DOMAIN {
                let mac = (entry.suite, key.audit_mac_key(entry.suite));
                keep_latest(&mut audit_mac, entry.version, mac);
            } else {
                let ciphers = KeyCiphers::new(&key, entry.key_ref(), entry.suite, &entry.domain);
                domains
                    .entry(entry.domain.clone())
                    .or_default()
                    .push(ciphers);
            }
        }
        for keys in domains.values_mut() {
            keys.sort_by_key(|k| k.key_ref().version);
        }
        let mut audit_signing = None;
        for entry in &file.signing_keys {
            keep_latest(
                &mut audit_signing,
                entry.version,
                unwrapper.signing_key(entry)?,
            );
        }
        // Both audit keys make one file format: they must be of one suite.
        if let (Some((_, (mac_suite, _))), Some((version, signer))) = (&audit_mac, &audit_signing) {
            if signer.suite() != *mac_suite {
                return Err(KeyringError::AuditSuites {
                    path: path.into(),
                    version: *version,
                    mac: *mac_suite,
                    signing: signer.suite(),
                });
            }
        }
        Ok(Self {
            path: path.into(),
            domains,
            audit_mac: audit_mac.map(|(_, key)| key),
            audit_signing: audit_signing.map(|(_, key)| key),
        })
    }

    /// The keys of the keyring file at `path`, without any secret: no
    /// master key is needed and none is read. The listing is not a proof
    /// of the file's integrity; [`Keyring::load`] checks that.
    pub fn list(path: &Path) -> Result<Vec<KeyListing>, KeyringError> {
        let file = read_file(path)?;
        file.check_unique(path)?;
        Ok(file.listing())
    }

    /// Wraps the keyring at `path` under the master key `new` instead of
    /// `old`, which may be of another provider (a file key into a token):
    /// the same data and audit keys, so no stored value changes.
    /// The result is opened with `new` before it replaces the file
    /// (atomically, readable by its owner only); on any error the file is
    /// left as it was.
    pub fn rewrap(
        path: &Path,
        old: &dyn Custody,
        new: &dyn Custody,
    ) -> Result<usize, KeyringError> {
        let file = read_file(path)?;
        file.check_unique(path)?;
        let rewrapped = file.rewrapped(path, old, new)?;
        Self::replace(path, &rewrapped, new)?;
        Ok(rewrapped.keys.len() + rewrapped.signing_keys.len())
    }

    /// Adds a new version of the data key of each of `domains` (every data
    /// domain when empty), which becomes the one new values are written
    /// with; older versions stay, to decrypt what is stored under them.
    /// The result is opened with `master` before it replaces the file
    /// atomically; on any error the file is left as it was.
    pub fn rotate(
        path: &Path,
        master: &dyn Custody,
        domains: &[String],
    ) -> Result<Vec<(String, KeyRef)>, KeyringError> {
        Self::rotate_to(path, master, domains, None)
    }

    /// [`Keyring::rotate`], the new versions of suite `suite` if given,
    /// which then becomes the keyring's (the suite of the keys later
    /// rotations add): how a keyring moves from `aes` to `sm` or back.
    /// Values stored under the older versions still decrypt, in their own
    /// suite; `migrate` re-encrypts them under the new versions.
    pub fn rotate_to(
        path: &Path,
        master: &dyn Custody,
        domains: &[String],
        suite: Option<Suite>,
    ) -> Result<Vec<(String, KeyRef)>, KeyringError> {
        let mut file = read_file(path)?;
        Self::open(path, &file, master)?;
        if let Some(suite) = suite {
            file.set_suite(path, master, suite)?;
        }
        let domains = if domains.is_empty() {
            file.data_domains()
        } else {
            domains.to_vec()
        };
        let mut added = Vec::new();
        for domain in domains {
            let key = file.add_version(path, master, &domain)?;
            added.push((domain, key));
        }
        Self::replace(path, &file, master)?;
        Ok(added)
    }

    /// Removes version `version` of `domain`'s data key, which must not be
    /// its current one: values still stored under it could no longer be
    /// read (the caller checks the database first). Written as
    /// [`Keyring::rotate`] writes.
    pub fn retire(
        path: &Path,
        master: &dyn Custody,
        domain: &str,
        version: u32,
    ) -> Result<KeyRef, KeyringError> {
        let mut file = read_file(path)?;
        Self::open(path, &file, master)?;
        let key = file.remove_version(path, domain, version)?;
        Self::replace(path, &file, master)?;
        Ok(key)
    }

    /// Opens `file` with `master`, then writes it over `path`.
    fn replace(path: &Path, file: &KeyringFile, master: &dyn Custody) -> Result<(), KeyringError> {
        Self::open(path, file, master)?;
        write_atomically(path, &file.to_text()).map_err(|source| KeyringError::Write {
            path: path.into(),
            source,
        })
    }

    /// The file this keyring was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails, naming each one, if any of `domains` has no key.
    pub(crate) fn require_domains(&self, domains: &[String]) -> Result<(), KeyringError> {
        let mut missing: Vec<String> = Vec::new();
        for domain in domains {
            validate_domain(domain)?;
            if !self.domains.contains_key(domain) && !missing.contains(domain) {
                missing.push(domain.clone());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(KeyringError::MissingDomains {
                path: self.path.clone(),
                domains: missing,
            })
        }
    }

    /// Encrypts with the domain's active key.
    pub fn encrypt(
        &self,
        domain: &str,
        mode: Mode,
        plaintext: &[u8],
    ) -> Result<Envelope, CryptoError> {
        Ok(self.active(domain)?.encrypt(domain, mode, plaintext))
    }

    /// Encrypts into the text form, for text columns.
    pub fn encrypt_text(
        &self,
        domain: &str,
        mode: Mode,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        Ok(self.encrypt(domain, mode, plaintext)?.to_text())
    }

    /// Encrypts into the binary form, for `bytea` columns.
    pub(crate) fn encrypt_bytes(
        &self,
        domain: &str,
        mode: Mode,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        Ok(self.encrypt(domain, mode, plaintext)?.into_bytes())
    }

    /// Decrypts a value of `domain`, with whichever of its key versions the
    /// envelope names.
    pub fn decrypt(
        &self,
        domain: &str,
        envelope: Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.ciphers(domain, envelope.key_ref())?
            .decrypt(domain, envelope)
    }

    /// The ciphers of key `key` of `domain`, which open its envelopes.
    pub(crate) fn ciphers(&self, domain: &str, key: KeyRef) -> Result<&KeyCiphers, CryptoError> {
        self.keys(domain)?
            .iter()
            .find(|k| k.key_ref() == key)
            .ok_or_else(|| CryptoError::UnknownKey {
                domain: domain.into(),
                key,
            })
    }

    /// The pseudonym of `plaintext` under the domain's active key:
    /// `pgvp_` + 32 lowercase hex digits.
    pub fn pseudonym(&self, domain: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        Ok(self.active(domain)?.pseudonym(plaintext))
    }

    /// The key that chain-MACs the audit log.
    pub fn audit_mac_key(&self) -> Result<&[u8; 32], KeyringError> {
        self.audit_mac
            .as_ref()
            .map(|(_, key)| &**key)
            .ok_or_else(|| self.no_audit_key(KeyKind::Data))
    }

    /// The suite of the audit MAC key: HMAC-SHA256 (`aes`) or HMAC-SM3
    /// (`sm`).
    pub fn audit_mac_suite(&self) -> Result<Suite, KeyringError> {
        self.audit_mac
            .as_ref()
            .map(|(suite, _)| *suite)
            .ok_or_else(|| self.no_audit_key(KeyKind::Data))
    }

    /// The key that signs audit files: Ed25519 or SM2.
    pub fn audit_signing_key(&self) -> Result<&SealSigner, KeyringError> {
        self.audit_signing
            .as_ref()
            .ok_or_else(|| self.no_audit_key(KeyKind::Signing))
    }

    /// The audit files' public key in its text form: standard base64 of
    /// the 32 bytes of an Ed25519 key, `sm2:` + base64 of an SM2 point
    /// (see [`crate::protect::crypto::SealVerifier::parse`]).
    pub fn audit_public_key_base64(&self) -> Result<String, KeyringError> {
        Ok(self.audit_signing_key()?.public_key_text())
    }

    fn no_audit_key(&self, kind: KeyKind) -> KeyringError {
        KeyringError::NoAuditKey {
            path: self.path.clone(),
            kind,
        }
    }

    /// The key new values of `domain` are encrypted with: its newest
    /// version.
    pub(crate) fn current_key(&self, domain: &str) -> Result<KeyRef, CryptoError> {
        Ok(self.active(domain)?.key_ref())
    }

    /// The key ids and versions of a domain (none if it has no key).
    pub(crate) fn key_refs(&self, domain: &str) -> impl Iterator<Item = KeyRef> + '_ {
        self.domains
            .get(domain)
            .into_iter()
            .flatten()
            .map(KeyCiphers::key_ref)
    }

    fn keys(&self, domain: &str) -> Result<&[KeyCiphers], CryptoError> {
        self.domains
            .get(domain)
            .map(Vec::as_slice)
            .ok_or_else(|| CryptoError::UnknownDomain(domain.into()))
    }

    fn active(&self, domain: &str) -> Result<&KeyCiphers, CryptoError> {
        let keys = self.keys(domain)?;
        Ok(keys.last().expect("a domain is only listed with keys"))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

/// Keeps in `slot` the value with the highest version.
fn keep_latest<T>(slot: &mut Option<(u32, T)>, version: u32, value: T) {
    if slot.as_ref().is_none_or(|(latest, _)| *latest < version) {
        *slot = Some((version, value));
    }
}

fn validate_domain(domain: &str) -> Result<(), KeyringError> {
    let problem = if domain.is_empty() {
        "is empty"
    } else if domain == AUDIT_DOMAIN {
        "is reserved for pgveil's audit keys"
    } else if domain.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(KeyringError::InvalidDomain {
        domain: domain.into(),
        problem,
    })
}

#[cfg(test)]
mod tests;
