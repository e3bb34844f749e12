//! The keyring file on disk: its serde form, the master key check, the
//! wrapping and unwrapping of entries under the master key, and atomic
//! writes of a file only its owner can read.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::Mac;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KeyKind, KeyringError, AUDIT_DOMAIN, FORMAT};
use crate::protect::crypto::{
    gcm_open, gcm_seal_into, hmac_sha256, DataKey, KeyRef, MasterKey, RandomError,
};

/// The message whose HMAC under the master key is `master_check`.
const MASTER_CHECK_MESSAGE: &[u8] = b"pgveil keyring check v1";

/// The first line of every keyring file pgveil writes.
pub(super) const FILE_COMMENT: &str =
    "# pgveil keyring: keys wrapped by the master key. Change it with `pgveil keys`.\n";

/// The file, as serialized.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyringFile {
    format: u32,
    master_check: String,
    #[serde(default, rename = "key")]
    pub(super) keys: Vec<KeyEntry>,
    #[serde(default, rename = "signing_key")]
    pub(super) signing_keys: Vec<KeyEntry>,
}

/// Read first, so that a newer format is reported as such rather than as
/// unknown fields.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// One wrapped key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyEntry {
    pub(super) domain: String,
    id: u32,
    pub(super) version: u32,
    /// RFC 3339 UTC; informational.
    created: String,
    wrapped: String,
}

impl KeyringFile {
    /// What the file holds, without a secret: every key's kind, domain,
    /// id, version and creation time, and whether it is the newest of its
    /// domain and kind (the one new values are written with).
    pub(super) fn listing(&self) -> Vec<super::KeyListing> {
        let newest = |entries: &[KeyEntry], entry: &KeyEntry| {
            entries
                .iter()
                .filter(|other| other.domain == entry.domain)
                .all(|other| other.version <= entry.version)
        };
        let kinds = [
            (KeyKind::Data, &self.keys),
            (KeyKind::Signing, &self.signing_keys),
        ];
        let mut listing: Vec<super::KeyListing> = kinds
            .into_iter()
            .flat_map(|(kind, entries)| {
                entries.iter().map(move |entry| super::KeyListing {
                    kind,
                    domain: entry.domain.clone(),
                    id: entry.id,
                    version: entry.version,
                    created: entry.created.clone(),
                    current: newest(entries, entry),
                })
            })
            .collect();
        listing.sort_by(|a, b| (&a.domain, a.kind, a.version).cmp(&(&b.domain, b.kind, b.version)));
        listing
    }
}

impl KeyEntry {
    pub(super) fn key_ref(&self) -> KeyRef {
        KeyRef {
            id: self.id,
            version: self.version,
        }
    }
}

/// The cipher that wraps keys: AES-256-GCM under the master key itself.
fn wrapping_cipher(master: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(master.as_bytes().into())
}

fn wrap_aad(kind: KeyKind, domain: &str, key: KeyRef) -> Vec<u8> {
    format!("{}|{domain}|{}|{}", kind.aad_label(), key.id, key.version).into_bytes()
}

fn master_check(master: &MasterKey) -> hmac::Hmac<sha2::Sha256> {
    hmac_sha256(master.as_bytes()).chain_update(MASTER_CHECK_MESSAGE)
}

pub(super) fn read_file(path: &Path) -> Result<KeyringFile, KeyringError> {
    let text = fs::read_to_string(path).map_err(|source| KeyringError::Read {
        path: path.into(),
        source,
    })?;
    let parse_error = |e: toml::de::Error| KeyringError::Parse {
        path: path.into(),
        message: e.to_string(),
    };
    let FormatOnly { format } = toml::from_str(&text).map_err(parse_error)?;
    if format != FORMAT {
        return Err(KeyringError::Format {
            path: path.into(),
            found: format,
        });
    }
    toml::from_str(&text).map_err(parse_error)
}

/// Writes `text` to a new file beside `path`, readable by its owner only,
/// then renames it over `path`.
pub(super) fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp{}", std::process::id()));
    let temp = dir.join(temp_name);
    let _ = fs::remove_file(&temp);
    let written = write_new_private(&temp, text).and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // Make the rename itself durable.
    fs::File::open(dir)?.sync_all()
}

fn write_new_private(path: &Path, text: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

impl KeyringFile {
    pub(super) fn new(master: &MasterKey) -> Self {
        Self {
            format: FORMAT,
            master_check: STANDARD.encode(master_check(master).finalize().into_bytes()),
            keys: Vec::new(),
            signing_keys: Vec::new(),
        }
    }

    pub(super) fn to_text(&self) -> String {
        let body = toml::to_string(self).expect("strings and integers serialize to TOML");
        format!("{FILE_COMMENT}{body}")
    }

    pub(super) fn check_master(&self, path: &Path, master: &MasterKey) -> Result<(), KeyringError> {
        let expected = STANDARD
            .decode(&self.master_check)
            .map_err(|_| KeyringError::Parse {
                path: path.into(),
                message: "master_check is not valid base64".into(),
            })?;
        master_check(master)
            .verify_slice(&expected)
            .map_err(|_| KeyringError::WrongMasterKey { path: path.into() })
    }

    fn entries(&self) -> impl Iterator<Item = (KeyKind, &KeyEntry)> {
        let data = self.keys.iter().map(|e| (KeyKind::Data, e));
        data.chain(self.signing_keys.iter().map(|e| (KeyKind::Signing, e)))
    }

    pub(super) fn check_unique(&self, path: &Path) -> Result<(), KeyringError> {
        let mut ids = HashSet::new();
        let mut versions = HashSet::new();
        for (kind, entry) in self.entries() {
            if !ids.insert(entry.id) {
                return Err(KeyringError::DuplicateId {
                    path: path.into(),
                    id: entry.id,
                });
            }
            if !versions.insert((kind, entry.domain.as_str(), entry.version)) {
                return Err(KeyringError::DuplicateVersion {
                    path: path.into(),
                    kind,
                    domain: entry.domain.clone(),
                    version: entry.version,
                });
            }
        }
        Ok(())
    }

    /// Adds version-1 keys for the domains, and audit keys, that have none;
    /// returns the domains that received keys.
    pub(super) fn add_missing(
        &mut self,
        master: &MasterKey,
        domains: &[String],
    ) -> Result<Vec<String>, KeyringError> {
        let wrapper = Wrapper {
            cipher: wrapping_cipher(master),
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let mut added: Vec<String> = Vec::new();
        let wanted = domains.iter().map(String::as_str).chain([AUDIT_DOMAIN]);
        for domain in wanted {
            if !self.keys.iter().any(|e| e.domain == domain) {
                let key = DataKey::generate()?;
                let entry = wrapper.wrap(KeyKind::Data, domain, self.next_id(), key.as_bytes());
                self.keys.push(entry);
                added.push(domain.into());
            }
        }
        if self.signing_keys.is_empty() {
            // ring returns the PKCS#8 document in a buffer it does not zeroize.
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|_| RandomError)?;
            let entry = wrapper.wrap(
                KeyKind::Signing,
                AUDIT_DOMAIN,
                self.next_id(),
                pkcs8.as_ref(),
            );
            self.signing_keys.push(entry);
            if !added.iter().any(|d| d == AUDIT_DOMAIN) {
                added.push(AUDIT_DOMAIN.into());
            }
        }
        Ok(added)
    }

    /// The same keys wrapped under `new` instead of `old`: every entry is
    /// unwrapped with `old` (any that does not unwrap stops it) and sealed
    /// again under `new`, keeping its kind, domain, id, version and
    /// creation time; the master check becomes `new`'s.
    pub(super) fn rewrapped(
        &self,
        path: &Path,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<KeyringFile, KeyringError> {
        self.check_master(path, old)?;
        let unwrapper = Unwrapper::new(path, old);
        let cipher = wrapping_cipher(new);
        let rewrap = |kind: KeyKind, entries: &[KeyEntry]| -> Result<Vec<KeyEntry>, KeyringError> {
            entries
                .iter()
                .map(|entry| {
                    let secret = unwrapper.unwrap(kind, entry)?;
                    Ok(seal_entry(
                        &cipher,
                        kind,
                        &entry.domain,
                        entry.key_ref(),
                        &entry.created,
                        &secret,
                    ))
                })
                .collect()
        };
        Ok(KeyringFile {
            keys: rewrap(KeyKind::Data, &self.keys)?,
            signing_keys: rewrap(KeyKind::Signing, &self.signing_keys)?,
            ..KeyringFile::new(new)
        })
    }

    /// Adds a new version of `domain`'s data key, which becomes the one new
    /// values are written with; the older versions stay to decrypt.
    pub(super) fn add_version(
        &mut self,
        path: &Path,
        master: &MasterKey,
        domain: &str,
    ) -> Result<KeyRef, KeyringError> {
        let newest = self.newest_version(path, domain)?;
        let key = KeyRef {
            id: self.next_id(),
            version: newest + 1,
        };
        let secret = DataKey::generate()?;
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.keys.push(seal_entry(
            &wrapping_cipher(master),
            KeyKind::Data,
            domain,
            key,
            &created,
            secret.as_bytes(),
        ));
        Ok(key)
    }

    /// Removes version `version` of `domain`'s data key; never its newest.
    pub(super) fn remove_version(
        &mut self,
        path: &Path,
        domain: &str,
        version: u32,
    ) -> Result<KeyRef, KeyringError> {
        let newest = self.newest_version(path, domain)?;
        if version == newest {
            return Err(KeyringError::RetireCurrent {
                path: path.into(),
                domain: domain.into(),
                version,
            });
        }
        let at = self
            .keys
            .iter()
            .position(|e| e.domain == domain && e.version == version)
            .ok_or_else(|| KeyringError::UnknownVersion {
                path: path.into(),
                domain: domain.into(),
                version,
            })?;
        Ok(self.keys.remove(at).key_ref())
    }

    /// The newest version of a data domain's key. The audit domain is
    /// refused: its older keys are what verifies older audit files.
    fn newest_version(&self, path: &Path, domain: &str) -> Result<u32, KeyringError> {
        if domain == AUDIT_DOMAIN {
            return Err(KeyringError::InvalidDomain {
                domain: domain.into(),
                problem: "holds the audit log's keys, which are not rotated or retired                           (older audit files are verified with them)",
            });
        }
        self.keys
            .iter()
            .filter(|e| e.domain == domain)
            .map(|e| e.version)
            .max()
            .ok_or_else(|| KeyringError::UnknownDomain {
                path: path.into(),
                domain: domain.into(),
            })
    }

    /// The data domains, audit excluded, sorted.
    pub(super) fn data_domains(&self) -> Vec<String> {
        let domains: std::collections::BTreeSet<&str> = self
            .keys
            .iter()
            .map(|e| e.domain.as_str())
            .filter(|d| *d != AUDIT_DOMAIN)
            .collect();
        domains.into_iter().map(String::from).collect()
    }

    fn next_id(&self) -> u32 {
        self.entries().map(|(_, e)| e.id).max().unwrap_or(0) + 1
    }
}

/// Wraps new keys under the master key.
struct Wrapper {
    cipher: Aes256Gcm,
    created: String,
}

impl Wrapper {
    fn wrap(&self, kind: KeyKind, domain: &str, id: u32, secret: &[u8]) -> KeyEntry {
        seal_entry(
            &self.cipher,
            kind,
            domain,
            KeyRef { id, version: 1 },
            &self.created,
            secret,
        )
    }
}

/// A key entry holding `secret` sealed under `cipher`, bound to its kind,
/// domain, id and version.
fn seal_entry(
    cipher: &Aes256Gcm,
    kind: KeyKind,
    domain: &str,
    key: KeyRef,
    created: &str,
    secret: &[u8],
) -> KeyEntry {
    let mut sealed = Vec::new();
    gcm_seal_into(cipher, &wrap_aad(kind, domain, key), secret, &mut sealed);
    KeyEntry {
        domain: domain.into(),
        id: key.id,
        version: key.version,
        created: created.into(),
        wrapped: STANDARD.encode(sealed),
    }
}

/// Unwraps a file's keys, naming the entry in every error.
pub(super) struct Unwrapper<'a> {
    path: &'a Path,
    cipher: Aes256Gcm,
}

impl<'a> Unwrapper<'a> {
    pub(super) fn new(path: &'a Path, master: &MasterKey) -> Self {
        Self {
            path,
            cipher: wrapping_cipher(master),
        }
    }

    pub(super) fn data_key(&self, entry: &KeyEntry) -> Result<DataKey, KeyringError> {
        let bytes = self.unwrap(KeyKind::Data, entry)?;
        DataKey::from_slice(&bytes)
            .ok_or_else(|| self.bad_entry(KeyKind::Data, entry, "is not 32 bytes long"))
    }

    pub(super) fn signing_key(&self, entry: &KeyEntry) -> Result<Ed25519KeyPair, KeyringError> {
        if entry.domain != AUDIT_DOMAIN {
            return Err(self.bad_entry(KeyKind::Signing, entry, "is not in the audit domain"));
        }
        let pkcs8 = self.unwrap(KeyKind::Signing, entry)?;
        Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| self.bad_entry(KeyKind::Signing, entry, "is not an Ed25519 PKCS#8 key"))
    }

    fn unwrap(&self, kind: KeyKind, entry: &KeyEntry) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let sealed = STANDARD
            .decode(&entry.wrapped)
            .map_err(|_| self.bad_entry(kind, entry, "is not valid base64"))?;
        let aad = wrap_aad(kind, &entry.domain, entry.key_ref());
        gcm_open(&self.cipher, &aad, sealed, 0).ok_or_else(|| KeyringError::Unwrap {
            path: self.path.into(),
            kind,
            domain: entry.domain.clone(),
            key: entry.key_ref(),
        })
    }

    fn bad_entry(&self, kind: KeyKind, entry: &KeyEntry, problem: &'static str) -> KeyringError {
        KeyringError::BadEntry {
            path: self.path.into(),
            kind,
            domain: entry.domain.clone(),
            key: entry.key_ref(),
            problem,
        }
    }
}
