//! Raw key material: the master key that wraps the keyring's keys, and the
//! data keys from which HKDF derives one subkey per use: HKDF-SHA256 in
//! the `aes` suite, HKDF-SM3 in the `sm` suite.
//!
//! Both hold their bytes in zeroizing buffers and print as
//! `..redacted..`. Parsing errors say where the master key came from and
//! what is wrong with it, never what it was.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hkdf;
use thiserror::Error;
use zeroize::Zeroizing;

use super::suite::hkdf_sm3;
use super::{fill_random, RandomError, Suite};
use crate::protect::secret_file::{read_private, SecretFileError};

/// Length in bytes of a master key and of a data key.
const KEY_LEN: usize = 32;

/// The environment variable holding the base64 master key.
pub(crate) const MASTER_KEY_ENV: &str = "PGVEIL_MASTER_KEY";

/// HKDF `info` labels, one per subkey use, so no two uses share a key.
pub(crate) mod label {
    pub(crate) const GCM: &[u8] = b"pgveil v1 aes-256-gcm";
    pub(crate) const SIV: &[u8] = b"pgveil v1 aes-256-siv";
    pub(crate) const PSEUDONYM: &[u8] = b"pgveil v1 pseudonym hmac-sha256";
    pub(crate) const AUDIT_MAC: &[u8] = b"pgveil v1 audit mac";
    pub(crate) const SM4_GCM: &[u8] = b"pgveil v1 sm4-gcm";
    pub(crate) const SM4_SIV: &[u8] = b"pgveil v1 sm4-siv";
    pub(crate) const PSEUDONYM_SM3: &[u8] = b"pgveil v1 pseudonym hmac-sm3";
    pub(crate) const AUDIT_MAC_SM3: &[u8] = b"pgveil v1 audit mac hmac-sm3";
    /// The SM4 key a local master key wraps the `sm` suite's keys with.
    pub(crate) const SM4_WRAP: &[u8] = b"pgveil v1 sm4-gcm key wrapping";
}

/// The key that wraps every key of the keyring: 32 bytes, given to pgveil
/// as base64 text, never stored in the policy or the keyring.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

/// Where a master key's text came from, for error messages.
#[derive(Debug)]
pub enum KeySource {
    /// Given as text.
    Text,
    /// The environment variable.
    Env,
    /// A file.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Text => f.write_str("text"),
            KeySource::Env => write!(f, "in {MASTER_KEY_ENV}"),
            KeySource::File(path) => write!(f, "in file {}", path.display()),
        }
    }
}

/// A master key that cannot be had.
#[derive(Debug, Error)]
pub enum MasterKeyError {
    /// Neither the environment variable nor a file gives one.
    #[error(
        "no master key: set {MASTER_KEY_ENV} to the base64 of 32 random bytes, \
         or configure a master key file"
    )]
    NotSet,
    /// The key file cannot be read, or others than its owner may read it.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// The key is not base64.
    #[error("the master key {origin} is not valid base64")]
    NotBase64 {
        /// Where the text came from.
        origin: KeySource,
    },
    /// The key is not 32 bytes long.
    #[error("the master key {origin} decodes to {len} bytes; it must be the base64 of 32 bytes")]
    WrongLength {
        /// Where the text came from.
        origin: KeySource,
        /// The bytes it decodes to.
        len: usize,
    },
}

impl MasterKey {
    /// Parses base64 text (standard alphabet); trailing whitespace is
    /// ignored.
    #[cfg(test)]
    pub(crate) fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        Self::parse(text.as_bytes(), KeySource::Text)
    }

    /// Reads the key from `PGVEIL_MASTER_KEY`.
    pub(crate) fn from_env() -> Result<Self, MasterKeyError> {
        let value = std::env::var_os(MASTER_KEY_ENV).ok_or(MasterKeyError::NotSet)?;
        let text = Zeroizing::new(value.into_encoded_bytes());
        Self::parse(&text, KeySource::Env)
    }

    /// Reads the key from a file holding its base64 text. As ssh does
    /// for a private key, a file that group or others may read is refused
    /// before it is read.
    pub fn from_file(path: &Path) -> Result<Self, MasterKeyError> {
        let text = read_private(path, "master key")?;
        Self::parse(&text, KeySource::File(path.into()))
    }

    /// The key in `file` if one is given, else in the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, MasterKeyError> {
        match file {
            Some(path) => Self::from_file(path),
            None => Self::from_env(),
        }
    }

    /// A new random key and its base64 text.
    pub fn generate() -> Result<(Self, Zeroizing<String>), RandomError> {
        let mut bytes = Zeroizing::new([0; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        let text = Zeroizing::new(STANDARD.encode(bytes.as_ref()));
        Ok((Self(bytes), text))
    }

    fn parse(text: &[u8], origin: KeySource) -> Result<Self, MasterKeyError> {
        let Ok(decoded) = STANDARD.decode(text.trim_ascii_end()) else {
            return Err(MasterKeyError::NotBase64 { origin });
        };
        let decoded = Zeroizing::new(decoded);
        let bytes = decoded
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength {
                origin,
                len: decoded.len(),
            })?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..redacted..)")
    }
}

/// One version of a domain's key: 32 random bytes, stored wrapped by the
/// master key. It is never used directly, only through derived subkeys.
pub(crate) struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A new random key.
    pub(crate) fn generate() -> Result<Self, RandomError> {
        let mut bytes = Zeroizing::new([0; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    /// A key from unwrapped bytes, if there are exactly 32 of them.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(Zeroizing::new(bytes.try_into().ok()?)))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key that chain-MACs the audit log, derived from the data key of
    /// the audit domain in its suite.
    pub(crate) fn audit_mac_key(&self, suite: Suite) -> Zeroizing<[u8; KEY_LEN]> {
        match suite {
            Suite::Aes => self.subkey(suite, label::AUDIT_MAC),
            Suite::Sm => self.subkey(suite, label::AUDIT_MAC_SM3),
        }
    }

    /// The subkey of `N` bytes for the use named by `label`: HKDF with an
    /// empty salt (the data key is already uniformly random), over SHA-256
    /// in the `aes` suite and SM3 in the `sm` suite.
    pub(crate) fn subkey<const N: usize>(&self, suite: Suite, label: &[u8]) -> Zeroizing<[u8; N]> {
        match suite {
            Suite::Aes => hkdf_sha256(self.0.as_ref(), label),
            Suite::Sm => hkdf_sm3(self.0.as_ref(), label),
        }
    }
}

/// `N` bytes of HKDF-SHA256 (ring's) of `ikm` for the use named by
/// `label`, with an empty salt.
pub(crate) fn hkdf_sha256<const N: usize>(ikm: &[u8], label: &[u8]) -> Zeroizing<[u8; N]> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let mut out = Zeroizing::new([0; N]);
    let labels = [label];
    hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
        .extract(ikm)
        .expand(&labels, Len(N))
        .and_then(|okm| okm.fill(out.as_mut()))
        .expect("HKDF-SHA256 yields up to 8160 bytes; subkeys are at most 64");
    out
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..redacted..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_TEXT: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn parses_base64_with_trailing_whitespace() {
        let key = MasterKey::from_base64(&format!("{KEY_TEXT}\n  \n")).unwrap();
        let expected: Vec<u8> = (0..32).collect();
        assert_eq!(key.as_bytes().as_slice(), expected.as_slice());
    }

    #[test]
    fn generated_key_parses_back() {
        let (key, text) = MasterKey::generate().unwrap();
        assert_eq!(
            MasterKey::from_base64(&text).unwrap().as_bytes(),
            key.as_bytes()
        );
    }

    #[test]
    fn parse_errors_do_not_echo_the_input() {
        let secret_ish = "c2VjcmV0LXZhbHVlLXNob3J0"; // base64 of 18 bytes
        let err = MasterKey::from_base64(secret_ish).unwrap_err().to_string();
        assert_eq!(
            err,
            "the master key text decodes to 18 bytes; it must be the base64 of 32 bytes"
        );
        let err = MasterKey::from_base64("not base64 at all!")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the master key text is not valid base64");
        assert!(!err.contains("at all"));
    }

    #[test]
    fn reads_the_environment_variable() {
        // The only test that touches this variable.
        std::env::set_var(MASTER_KEY_ENV, "short-secret");
        let err = MasterKey::from_env().unwrap_err().to_string();
        assert_eq!(
            err,
            "the master key in PGVEIL_MASTER_KEY is not valid base64"
        );
        std::env::set_var(MASTER_KEY_ENV, KEY_TEXT);
        assert!(MasterKey::from_env().is_ok());
        std::env::remove_var(MASTER_KEY_ENV);
        let err = MasterKey::from_env().unwrap_err();
        assert!(matches!(err, MasterKeyError::NotSet), "{err}");
    }

    /// Writes `text` to `path`, readable by its owner only.
    fn write_private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn reads_key_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        write_private(&path, &format!("{KEY_TEXT}\n"));
        assert!(MasterKey::from_file(&path).is_ok());

        write_private(&path, "!!!!\n");
        let err = MasterKey::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("in file") && err.contains("master.key"),
            "{err}"
        );
        assert!(!err.contains("!!!!"));

        let missing = dir.path().join("absent.key");
        let err = MasterKey::from_file(&missing).unwrap_err().to_string();
        assert!(err.starts_with("cannot read master key file"), "{err}");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_unread() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        write_private(&path, &format!("{KEY_TEXT}\n"));
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::from_file(&path).unwrap_err();
            assert!(
                matches!(err, MasterKeyError::File(SecretFileError::Exposed { mode: m, .. }) if m == mode),
                "{mode:o}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
            assert!(
                text.contains("chmod 600") && text.contains("master.key"),
                "{text}"
            );
            assert!(!text.contains(KEY_TEXT), "{text}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(MasterKey::from_file(&path).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let key = MasterKey::from_base64(KEY_TEXT).unwrap();
        assert_eq!(format!("{key:?}"), "MasterKey(..redacted..)");
        let data = DataKey::generate().unwrap();
        assert_eq!(format!("{data:?}"), "DataKey(..redacted..)");
        assert_eq!(format!("{data:#?}"), "DataKey(..redacted..)");
    }

    #[test]
    fn subkeys_differ_by_label() {
        let key = DataKey::generate().unwrap();
        let a: Zeroizing<[u8; 32]> = key.subkey(Suite::Aes, label::GCM);
        let b: Zeroizing<[u8; 32]> = key.subkey(Suite::Aes, label::PSEUDONYM);
        let again: Zeroizing<[u8; 32]> = key.subkey(Suite::Aes, label::GCM);
        assert_ne!(a.as_ref(), b.as_ref());
        assert_eq!(a.as_ref(), again.as_ref());
        assert_ne!(a.as_ref(), key.as_bytes());
        let sm: Zeroizing<[u8; 32]> = key.subkey(Suite::Sm, label::GCM);
        assert_ne!(a.as_ref(), sm.as_ref());
    }
}
