//! The PEM files TLS is configured with: certificate chains, private keys
//! and CA certificates. Each error names the configuration key and the
//! file; a private key file that group or others can read is refused before
//! it is read, by the rule of every secret file
//! (`protect::secret_file`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use zeroize::Zeroizing;

use crate::protect::secret_file::read_private;
use crate::proxy::config::ConfigError;

/// A configuration error about `key`, naming `path`.
pub(super) fn invalid(
    key: &'static str,
    path: &Path,
    problem: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: format!("{}: {problem}", path.display()),
    }
}

/// Reads a file, saying which key named it when it cannot.
fn read(key: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| invalid(key, path, format_args!("cannot read: {e}")))
}

/// The certificates of a PEM file, in order: a certificate and its chain,
/// or CA certificates. At least one.
pub(super) fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let text = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, format_args!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1), refused when
/// group or others can read the file.
pub(super) fn private_key(
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    // Refused before it is read when others than its owner may read it.
    let text = read_private(path, "TLS private key").map_err(|e| ConfigError::Invalid {
        key,
        problem: e.to_string(),
    })?;
    // The parser's errors quote no key bytes.
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        invalid(
            key,
            path,
            format_args!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

/// The CA certificates of a PEM file, as trust anchors.
pub(super) fn roots(key: &'static str, path: &Path) -> Result<Arc<RootCertStore>, ConfigError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, path)? {
        store
            .add(cert)
            .map_err(|e| invalid(key, path, format_args!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = certificates("tls.cert", &missing).unwrap_err().to_string();
        assert!(
            err.starts_with("tls.cert: ") && err.contains("missing.pem"),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let err = certificates("tls.cert", &junk).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = private_key("tls.key", &junk).unwrap_err().to_string();
        assert!(
            err.starts_with("tls.key: ") && err.contains("0644"),
            "{err}"
        );
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = private_key("tls.key", &junk).unwrap_err().to_string();
        assert!(err.contains("not a PEM private key"), "{err}");
    }
}
