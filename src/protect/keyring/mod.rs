//! The keyring: every key domain's data keys and the audit keys, stored in
//! a TOML file wrapped by the master key, and loaded into ready ciphers.
//!
//! ```toml
//! format = 1
//! master_check = "<base64 HMAC-SHA256(master, \"pgveil keyring check v1\")>"
//!
//! [[key]]                       # a data key
//! domain = "public.customers.email"
//! id = 1                        # unique within the keyring
//! version = 1                   # the highest version of a domain is active
//! created = "2026-11-25T10:00:00Z"
//! wrapped = "<base64 nonce || AES-256-GCM(master, key)>"
//!
//! [[signing_key]]               # an Ed25519 PKCS#8 document
//! domain = "pgveil.audit"
//! # same fields as [[key]]
//! ```
//!
//! The associated data of a wrapped key is `"pgveil key|DOMAIN|ID|VERSION"`
//! (`"pgveil signing key|…"` for signing keys), so an entry cannot be moved
//! to another domain, id or version. `master_check` tells a wrong master key
//! apart from a damaged entry.
//!
//! The domain [`AUDIT_DOMAIN`] is reserved: its data key only yields the
//! audit log's MAC key, and it holds the Ed25519 key that signs audit files.
//!
//! A loaded [`Keyring`] is read-only and `Send + Sync`: share it as
//! `Arc<Keyring>`. Its ciphers are built once, at load.

mod file;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::protect::crypto::{
    CryptoError, Envelope, KeyCiphers, KeyRef, MasterKey, Mode, RandomError,
};
use file::{read_file, write_atomically, KeyringFile, Unwrapper};

/// The reserved domain holding the audit keys.
pub const AUDIT_DOMAIN: &str = "pgveil.audit";

/// The keyring file format this pgveil reads and writes.
const FORMAT: u32 = 1;

/// The two kinds of wrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A 32-byte data key (`[[key]]`).
    Data,
    /// An Ed25519 PKCS#8 document (`[[signing_key]]`).
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
    #[error(
        "the master key does not match keyring {path} \
         (PGVEIL_MASTER_KEY or master_key_file is wrong)"
    )]
    WrongMasterKey {
        /// The keyring file.
        path: PathBuf,
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
    /// The audit keys are missing.
    #[error("keyring {path} has no {kind} for {AUDIT_DOMAIN}; run `pgveil keys init`")]
    NoAuditKey {
        /// The keyring file.
        path: PathBuf,
        /// Which kind of key.
        kind: KeyKind,
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
    audit_mac: Option<Zeroizing<[u8; 32]>>,
    audit_signing: Option<Ed25519KeyPair>,
}

impl Keyring {
    /// Reads the keyring at `path` and unwraps every key with `master`.
    pub fn load(path: &Path, master: &MasterKey) -> Result<Self, KeyringError> {
        Self::open(path, &read_file(path)?, master)
    }

    /// Creates the keyring at `path` (mode 0600) with a version-1 key for
    /// each of `domains` and the audit keys; if it exists, adds keys only
    /// for the domains (and audit keys) it lacks. Writes atomically.
    pub fn init(
        path: &Path,
        master: &MasterKey,
        domains: &[String],
    ) -> Result<InitReport, KeyringError> {
        for domain in domains {
            validate_domain(domain)?;
        }
        let (mut file, created) = match read_file(path) {
            Ok(file) => {
                Self::open(path, &file, master)?;
                (file, false)
            }
            Err(KeyringError::Read { ref source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                (KeyringFile::new(master), true)
            }
            Err(e) => return Err(e),
        };
        let added = file.add_missing(master, domains)?;
        if created || !added.is_empty() {
            write_atomically(path, &file.to_text()).map_err(|source| KeyringError::Write {
                path: path.into(),
                source,
            })?;
        }
        Ok(InitReport { created, added })
    }

    fn open(path: &Path, file: &KeyringFile, master: &MasterKey) -> Result<Self, KeyringError> {
        file.check_master(path, master)?;
        file.check_unique(path)?;
        let unwrapper = Unwrapper::new(path, master);
        let mut domains: HashMap<String, Vec<KeyCiphers>> = HashMap::new();
        let mut audit_mac = None;
        for entry in &file.keys {
            let key = unwrapper.data_key(entry)?;
            if entry.domain == AUDIT_DOMAIN {
                keep_latest(&mut audit_mac, entry.version, key.audit_mac_key());
            } else {
                let ciphers = KeyCiphers::new(&key, entry.key_ref());
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
        Ok(Self {
            path: path.into(),
            domains,
            audit_mac: audit_mac.map(|(_, key)| key),
            audit_signing: audit_signing.map(|(_, key)| key),
        })
    }

    /// The file this keyring was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails, naming each one, if any of `domains` has no key.
    pub fn require_domains(&self, domains: &[String]) -> Result<(), KeyringError> {
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
    pub fn encrypt_bytes(
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
    pub fn ciphers(&self, domain: &str, key: KeyRef) -> Result<&KeyCiphers, CryptoError> {
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
            .as_deref()
            .ok_or_else(|| self.no_audit_key(KeyKind::Data))
    }

    /// The key pair that signs audit files.
    pub fn audit_signing_key(&self) -> Result<&Ed25519KeyPair, KeyringError> {
        self.audit_signing
            .as_ref()
            .ok_or_else(|| self.no_audit_key(KeyKind::Signing))
    }

    /// The audit files' Ed25519 public key, standard base64 of 32 bytes.
    pub fn audit_public_key_base64(&self) -> Result<String, KeyringError> {
        Ok(STANDARD.encode(self.audit_signing_key()?.public_key()))
    }

    fn no_audit_key(&self, kind: KeyKind) -> KeyringError {
        KeyringError::NoAuditKey {
            path: self.path.clone(),
            kind,
        }
    }

    /// The key ids and versions of a domain (none if it has no key).
    pub fn key_refs(&self, domain: &str) -> impl Iterator<Item = KeyRef> + '_ {
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
mod tests {
    use std::fs;

    use super::file::FILE_COMMENT;
    use super::*;
    use crate::protect::crypto::parse_text;

    const EMAIL: &str = "public.customers.email";
    const NAME: &str = "public.customers.name";

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        master: MasterKey,
    }

    fn fixture(domains: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let master = MasterKey::generate().unwrap().0;
        Keyring::init(&path, &master, &strings(domains)).unwrap();
        Fixture {
            _dir: dir,
            path,
            master,
        }
    }

    fn strings(domains: &[&str]) -> Vec<String> {
        domains.iter().map(|d| d.to_string()).collect()
    }

    impl Fixture {
        fn load(&self) -> Result<Keyring, KeyringError> {
            Keyring::load(&self.path, &self.master)
        }

        fn edit(&self, edit: impl FnOnce(String) -> String) {
            let text = fs::read_to_string(&self.path).unwrap();
            fs::write(&self.path, edit(text)).unwrap();
        }
    }

    #[test]
    fn init_creates_a_private_file_with_all_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.toml");
        let master = MasterKey::generate().unwrap().0;
        let report = Keyring::init(&path, &master, &strings(&[EMAIL, NAME, EMAIL])).unwrap();
        assert_eq!(
            report,
            InitReport {
                created: true,
                added: strings(&[EMAIL, NAME, AUDIT_DOMAIN]),
            }
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(FILE_COMMENT));
        assert_eq!(text.matches("[[key]]").count(), 3);
        assert_eq!(text.matches("[[signing_key]]").count(), 1);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        let keyring = Keyring::load(&path, &master).unwrap();
        keyring.require_domains(&strings(&[EMAIL, NAME])).unwrap();
    }

    #[test]
    fn values_round_trip_through_a_reloaded_keyring() {
        let f = fixture(&[EMAIL]);
        let keyring = f.load().unwrap();
        let name = "张伟".as_bytes();
        let text = keyring.encrypt_text(EMAIL, Mode::Randomized, name).unwrap();
        let bytes = keyring
            .encrypt_bytes(EMAIL, Mode::Deterministic, name)
            .unwrap();

        let reloaded = f.load().unwrap();
        let envelope = parse_text(text.as_bytes()).unwrap().unwrap();
        assert_eq!(reloaded.decrypt(EMAIL, envelope).unwrap().as_slice(), name);
        let envelope = Envelope::from_bytes(bytes.clone()).unwrap();
        assert_eq!(reloaded.decrypt(EMAIL, envelope).unwrap().as_slice(), name);
        let again = reloaded
            .encrypt_bytes(EMAIL, Mode::Deterministic, name)
            .unwrap();
        assert_eq!(again, bytes, "deterministic across loads");
    }

    #[test]
    fn values_of_one_domain_do_not_decrypt_in_another() {
        let f = fixture(&[EMAIL, NAME]);
        let keyring = f.load().unwrap();
        let envelope = keyring.encrypt(EMAIL, Mode::Deterministic, b"x").unwrap();
        let err = keyring.decrypt(NAME, envelope.clone()).unwrap_err();
        assert!(matches!(err, CryptoError::UnknownKey { .. }), "{err}");
        let err = keyring.decrypt("public.other", envelope).unwrap_err();
        assert_eq!(err.to_string(), "no key for domain public.other");
    }

    #[test]
    fn altered_text_never_decrypts_or_panics() {
        let f = fixture(&[EMAIL]);
        let keyring = f.load().unwrap();
        let text = keyring
            .encrypt_text(EMAIL, Mode::Randomized, b"abc")
            .unwrap();
        for at in crate::protect::crypto::TEXT_PREFIX.len()..text.len() {
            let mut altered = text.clone().into_bytes();
            altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
            let result = parse_text(&altered)
                .and_then(|e| keyring.decrypt(EMAIL, e.expect("still has the prefix")));
            assert!(result.is_err(), "position {at}");
        }
    }

    #[test]
    fn second_init_adds_only_missing_domains() {
        let f = fixture(&[EMAIL]);
        let before = f.load().unwrap();
        let envelope = before.encrypt(EMAIL, Mode::Randomized, b"kept").unwrap();
        let pseudonym = before.pseudonym(EMAIL, b"kept").unwrap();

        let report = Keyring::init(&f.path, &f.master, &strings(&[EMAIL, NAME])).unwrap();
        assert_eq!(
            report,
            InitReport {
                created: false,
                added: strings(&[NAME]),
            }
        );
        let report = Keyring::init(&f.path, &f.master, &strings(&[EMAIL, NAME])).unwrap();
        assert!(report.added.is_empty());

        let after = f.load().unwrap();
        assert_eq!(after.decrypt(EMAIL, envelope).unwrap().as_slice(), b"kept");
        assert_eq!(after.pseudonym(EMAIL, b"kept").unwrap(), pseudonym);
        let name = after.encrypt(NAME, Mode::Randomized, b"n").unwrap();
        assert_eq!(name.key_ref(), KeyRef { id: 4, version: 1 });
    }

    #[test]
    fn wrong_master_key_is_refused_clearly() {
        let f = fixture(&[EMAIL]);
        let other = MasterKey::generate().unwrap().0;
        let expected = format!(
            "the master key does not match keyring {} \
             (PGVEIL_MASTER_KEY or master_key_file is wrong)",
            f.path.display()
        );
        let err = Keyring::load(&f.path, &other).unwrap_err();
        assert_eq!(err.to_string(), expected);
        let err = Keyring::init(&f.path, &other, &strings(&[NAME])).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn tampered_wrapped_key_is_refused() {
        let f = fixture(&[EMAIL]);
        f.edit(|text| {
            let at = text.find("wrapped = \"").unwrap() + 20;
            let mut bytes = text.into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        });
        let err = f.load().unwrap_err().to_string();
        assert!(
            err.contains("data key of domain public.customers.email (id 1, version 1)")
                && err.contains("does not unwrap"),
            "{err}"
        );
    }

    #[test]
    fn entry_moved_to_another_version_does_not_unwrap() {
        let f = fixture(&[EMAIL]);
        f.edit(|text| text.replacen("version = 1", "version = 2", 1));
        let err = f.load().unwrap_err();
        assert!(matches!(err, KeyringError::Unwrap { .. }), "{err}");
    }

    #[test]
    fn malformed_files_are_refused() {
        let f = fixture(&[EMAIL]);
        let original = fs::read_to_string(&f.path).unwrap();
        let cases = [
            ("id = 2", "id = 1", "key id 1 is used more than once"),
            ("format = 1", "format = 2\nextra = 1", "has format 2"),
            ("[[key]]", "[[key]]\ncomment = \"x\"", "comment"),
            ("master_check = \"", "master_check = \"!", "master_check"),
            ("wrapped = \"", "wrapped = \"!", "not valid base64"),
        ];
        for (from, to, expected) in cases {
            fs::write(&f.path, original.replacen(from, to, 1)).unwrap();
            let err = f.load().unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn duplicate_versions_are_refused() {
        let f = fixture(&[EMAIL]);
        f.edit(|text| {
            let start = text.find("[[key]]").unwrap();
            let end = text[start + 1..].find("[[key]]").unwrap() + start + 1;
            let copy = text[start..end].replacen("id = 1", "id = 9", 1);
            format!("{text}\n{copy}")
        });
        let err = f.load().unwrap_err().to_string();
        assert!(err.contains("more than one data key of version 1"), "{err}");
    }

    #[test]
    fn missing_domains_are_each_named() {
        let f = fixture(&[EMAIL]);
        let keyring = f.load().unwrap();
        let err = keyring
            .require_domains(&strings(&[EMAIL, "public.a.b", "public.c.d", "public.a.b"]))
            .unwrap_err()
            .to_string();
        let line = |d: &str| {
            format!(
                "policy column domain {d} has no key in keyring {}; run `pgveil keys init`",
                f.path.display()
            )
        };
        assert_eq!(
            err,
            format!("{}\n{}", line("public.a.b"), line("public.c.d"))
        );
    }

    #[test]
    fn reserved_and_empty_domains_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let master = MasterKey::generate().unwrap().0;
        for domain in [AUDIT_DOMAIN, "", "a\nb"] {
            let err = Keyring::init(&path, &master, &strings(&[domain])).unwrap_err();
            assert!(matches!(err, KeyringError::InvalidDomain { .. }), "{err}");
        }
        assert!(!path.exists());
        let keyring = fixture(&[]).load().unwrap();
        assert!(keyring
            .encrypt(AUDIT_DOMAIN, Mode::Randomized, b"x")
            .is_err());
    }

    #[test]
    fn pseudonyms_are_stable_and_domain_separated() {
        let f = fixture(&[EMAIL, NAME]);
        let keyring = f.load().unwrap();
        let token = keyring.pseudonym(EMAIL, b"alice@example.com").unwrap();
        assert!(token.starts_with("pgvp_") && token.len() == 5 + 32);
        assert_eq!(
            f.load()
                .unwrap()
                .pseudonym(EMAIL, b"alice@example.com")
                .unwrap(),
            token
        );
        assert_ne!(
            keyring.pseudonym(NAME, b"alice@example.com").unwrap(),
            token
        );
    }

    #[test]
    fn audit_keys_are_stable_and_usable() {
        let f = fixture(&[EMAIL]);
        let keyring = f.load().unwrap();
        let reloaded = f.load().unwrap();
        assert_eq!(
            keyring.audit_mac_key().unwrap(),
            reloaded.audit_mac_key().unwrap()
        );
        let public = keyring.audit_public_key_base64().unwrap();
        assert_eq!(public, reloaded.audit_public_key_base64().unwrap());
        let public = STANDARD.decode(public).unwrap();
        assert_eq!(public.len(), 32);
        let signature = keyring.audit_signing_key().unwrap().sign(b"audit file");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(b"audit file", signature.as_ref())
            .unwrap();
    }

    #[test]
    fn missing_audit_keys_are_reported() {
        let f = fixture(&[EMAIL]);
        f.edit(|text| text[..text.find("[[signing_key]]").unwrap()].to_string());
        let keyring = f.load().unwrap();
        assert!(keyring.audit_mac_key().is_ok());
        let err = keyring.audit_signing_key().unwrap_err().to_string();
        assert!(err.contains("has no signing key for pgveil.audit"), "{err}");
        let report = Keyring::init(&f.path, &f.master, &[]).unwrap();
        assert_eq!(report.added, strings(&[AUDIT_DOMAIN]));
        assert!(f.load().unwrap().audit_signing_key().is_ok());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let f = fixture(&[EMAIL]);
        let keyring = f.load().unwrap();
        let debug = format!("{keyring:?}");
        assert!(
            debug.contains("..redacted..") && debug.contains(EMAIL),
            "{debug}"
        );
        let mac = keyring.audit_mac_key().unwrap();
        assert!(!debug.contains(&hex::encode(mac)));
        assert!(!debug.contains(&format!("{mac:?}")));
        assert!(!debug.contains(&format!("{:?}", &mac[..4])));
    }

    #[test]
    fn keyring_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Keyring>();
    }
}
