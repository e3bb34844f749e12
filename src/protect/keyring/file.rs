//! The keyring file on disk: its serde form, the master key check, the
//! wrapping and unwrapping of entries by the master key's provider
//! ([`Custody`]), and atomic writes of a file only its owner can read.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{KeyKind, KeyringError, AUDIT_DOMAIN, FORMAT};
use crate::protect::crypto::{DataKey, KeyRef, SealSigner, Suite};
use crate::protect::custody::{Aad, Custody, CustodyError, CustodyKind};

/// The first line of every keyring file pgveil writes.
pub(super) const FILE_COMMENT: &str =
    "# pgveil keyring: keys wrapped by the master key. Change it with `pgveil keys`.\n";

/// The file, as serialized.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyringFile {
    format: u32,
    /// The provider that wrapped the keys; absent for a local master key
    /// (`env` or `file`), as in keyrings written before providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custody: Option<CustodyKind>,
    /// The suite of the keys `keys rotate` adds and of `master_check`;
    /// absent for `aes`, as in keyrings written before suites.
    #[serde(default, skip_serializing_if = "Suite::is_default")]
    pub(super) suite: Suite,
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
    /// The key's suite; absent for `aes`, as in keyrings written before
    /// suites. Bound to the key by the wrapping.
    #[serde(default, skip_serializing_if = "Suite::is_default")]
    pub(super) suite: Suite,
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
                    suite: entry.suite,
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

/// What a wrapped key is bound to: `"LABEL|DOMAIN|ID|VERSION"` (and its
/// suite, which chooses a local master key's cipher).
fn wrap_aad(kind: KeyKind, domain: &str, key: KeyRef, suite: Suite) -> Aad<'_> {
    Aad {
        label: kind.aad_label(),
        domain,
        id: key.id,
        version: key.version,
        suite,
    }
}

/// A provider's error, for the keyring at `path`.
pub(super) fn custody_error(path: &Path) -> impl FnOnce(CustodyError) -> KeyringError + '_ {
    |source| KeyringError::Custody {
        path: path.into(),
        source: Box::new(source),
    }
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
    pub(super) fn new(
        path: &Path,
        master: &dyn Custody,
        suite: Suite,
    ) -> Result<Self, KeyringError> {
        let kind = master.kind();
        Ok(Self {
            format: FORMAT,
            custody: (kind != CustodyKind::Local).then_some(kind),
            suite,
            master_check: STANDARD.encode(master.check_value(suite).map_err(custody_error(path))?),
            keys: Vec::new(),
            signing_keys: Vec::new(),
        })
    }

    pub(super) fn to_text(&self) -> String {
        let body = toml::to_string(self).expect("strings and integers serialize to TOML");
        format!("{FILE_COMMENT}{body}")
    }

    /// Fails unless `master` is the provider and key this file was
    /// wrapped with.
    pub(super) fn check_master(
        &self,
        path: &Path,
        master: &dyn Custody,
    ) -> Result<(), KeyringError> {
        let wrapped_by = self.custody.unwrap_or(CustodyKind::Local);
        if wrapped_by != master.kind() {
            return Err(KeyringError::WrongProvider {
                path: path.into(),
                wrapped_by,
                given: master.describe(),
            });
        }
        let expected = STANDARD
            .decode(&self.master_check)
            .map_err(|_| KeyringError::Parse {
                path: path.into(),
                message: "master_check is not valid base64".into(),
            })?;
        if master
            .check(self.suite, &expected)
            .map_err(custody_error(path))?
        {
            Ok(())
        } else {
            Err(KeyringError::WrongMasterKey {
                path: path.into(),
                given: master.describe(),
            })
        }
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

    /// Adds version-1 keys, in the keyring's suite, for the domains, and
    /// audit keys, that have none; returns the domains that received keys.
    pub(super) fn add_missing(
        &mut self,
        path: &Path,
        master: &dyn Custody,
        domains: &[String],
    ) -> Result<Vec<String>, KeyringError> {
        let wrapper = Wrapper {
            path,
            master,
            suite: self.suite,
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let mut added: Vec<String> = Vec::new();
        let wanted = domains.iter().map(String::as_str).chain([AUDIT_DOMAIN]);
        for domain in wanted {
            if !self.keys.iter().any(|e| e.domain == domain) {
                let key = DataKey::generate()?;
                let entry = wrapper.wrap(KeyKind::Data, domain, self.next_id(), key.as_bytes())?;
                self.keys.push(entry);
                added.push(domain.into());
            }
        }
        if self.signing_keys.is_empty() {
            let secret = SealSigner::generate(self.suite)?;
            let entry = wrapper.wrap(KeyKind::Signing, AUDIT_DOMAIN, self.next_id(), &secret)?;
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
        old: &dyn Custody,
        new: &dyn Custody,
    ) -> Result<KeyringFile, KeyringError> {
        self.check_master(path, old)?;
        let unwrapper = Unwrapper::new(path, old);
        let rewrap = |kind: KeyKind, entries: &[KeyEntry]| -> Result<Vec<KeyEntry>, KeyringError> {
            entries
                .iter()
                .map(|entry| {
                    let secret = unwrapper.unwrap(kind, entry)?;
                    seal_entry(
                        new,
                        kind,
                        &entry.domain,
                        entry.key_ref(),
                        entry.suite,
                        &entry.created,
                        &secret,
                    )
                    .map_err(custody_error(path))
                })
                .collect()
        };
        Ok(KeyringFile {
            keys: rewrap(KeyKind::Data, &self.keys)?,
            signing_keys: rewrap(KeyKind::Signing, &self.signing_keys)?,
            ..KeyringFile::new(path, new, self.suite)?
        })
    }

    /// Makes `suite` the keyring's: the suite of the keys added from now
    /// on, and of `master_check`, made again with `master`.
    pub(super) fn set_suite(
        &mut self,
        path: &Path,
        master: &dyn Custody,
        suite: Suite,
    ) -> Result<(), KeyringError> {
        if suite != self.suite {
            self.suite = suite;
            self.master_check =
                STANDARD.encode(master.check_value(suite).map_err(custody_error(path))?);
        }
        Ok(())
    }

    /// Adds a new version of `domain`'s data key, in the keyring's suite,
    /// which becomes the one new values are written with; the older
    /// versions stay to decrypt.
    pub(super) fn add_version(
        &mut self,
        path: &Path,
        master: &dyn Custody,
        domain: &str,
    ) -> Result<KeyRef, KeyringError> {
        let newest = self.newest_version(path, domain)?;
        let key = KeyRef {
            id: self.next_id(),
            version: newest + 1,
        };
        let secret = DataKey::generate()?;
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.keys.push(
            seal_entry(
                master,
                KeyKind::Data,
                domain,
                key,
                self.suite,
                &created,
                secret.as_bytes(),
            )
            .map_err(custody_error(path))?,
        );
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
struct Wrapper<'a> {
    path: &'a Path,
    master: &'a dyn Custody,
    suite: Suite,
    created: String,
}

impl Wrapper<'_> {
    fn wrap(
        &self,
        kind: KeyKind,
        domain: &str,
        id: u32,
        secret: &[u8],
    ) -> Result<KeyEntry, KeyringError> {
        seal_entry(
            self.master,
            kind,
            domain,
            KeyRef { id, version: 1 },
            self.suite,
            &self.created,
            secret,
        )
        .map_err(custody_error(self.path))
    }
}

/// A key entry of `suite` holding `secret` sealed by `master`, bound to
/// its kind, domain, id, version and suite.
#[allow(clippy::too_many_arguments)]
fn seal_entry(
    master: &dyn Custody,
    kind: KeyKind,
    domain: &str,
    key: KeyRef,
    suite: Suite,
    created: &str,
    secret: &[u8],
) -> Result<KeyEntry, CustodyError> {
    let sealed = master.seal(wrap_aad(kind, domain, key, suite), secret)?;
    Ok(KeyEntry {
        domain: domain.into(),
        id: key.id,
        version: key.version,
        suite,
        created: created.into(),
        wrapped: STANDARD.encode(sealed),
    })
}

/// Unwraps a file's keys, naming the entry in every error.
pub(super) struct Unwrapper<'a> {
    path: &'a Path,
    master: &'a dyn Custody,
}

impl<'a> Unwrapper<'a> {
    pub(super) fn new(path: &'a Path, master: &'a dyn Custody) -> Self {
        Self { path, master }
    }

    pub(super) fn data_key(&self, entry: &KeyEntry) -> Result<DataKey, KeyringError> {
        let bytes = self.unwrap(KeyKind::Data, entry)?;
        DataKey::from_slice(&bytes)
            .ok_or_else(|| self.bad_entry(KeyKind::Data, entry, "is not 32 bytes long"))
    }

    pub(super) fn signing_key(&self, entry: &KeyEntry) -> Result<SealSigner, KeyringError> {
        if entry.domain != AUDIT_DOMAIN {
            return Err(self.bad_entry(KeyKind::Signing, entry, "is not in the audit domain"));
        }
        let secret = self.unwrap(KeyKind::Signing, entry)?;
        SealSigner::from_secret(entry.suite, &secret).ok_or_else(|| {
            let problem = match entry.suite {
                Suite::Aes => "is not an Ed25519 PKCS#8 key",
                Suite::Sm => "is not an SM2 private key",
            };
            self.bad_entry(KeyKind::Signing, entry, problem)
        })
    }

    fn unwrap(&self, kind: KeyKind, entry: &KeyEntry) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let sealed = STANDARD
            .decode(&entry.wrapped)
            .map_err(|_| self.bad_entry(kind, entry, "is not valid base64"))?;
        let aad = wrap_aad(kind, &entry.domain, entry.key_ref(), entry.suite);
        self.master
            .open(aad, &sealed)
            .map_err(custody_error(self.path))?
            .ok_or_else(|| KeyringError::Unwrap {
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
