//! Files holding secrets (the master key, TLS private keys, the
//! maintenance password): read only if their owner alone may read them,
//! as ssh refuses a private key that group or others can read.

use std::path::{Path, PathBuf};

use thiserror::Error;
use zeroize::Zeroizing;

/// A secret file that cannot be used.
#[derive(Debug, Error)]
pub enum SecretFileError {
    /// The file can be read or written by other users than its owner.
    #[error(
        "{what} file {} can be read by group or others (mode {mode:04o}): \
         anyone who can read it has the secret; run `chmod 600 {}` (or `chmod 400`) \
         and keep it owned by the user pgveil runs as",
        path.display(),
        path.display()
    )]
    Exposed {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file cannot be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The bytes of the secret file `path` (`what` names its content in
/// errors), refused before it is read if any of the permission bits 077
/// is set.
pub(crate) fn read_private(
    path: &Path,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        what,
        path: path.into(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    let mode = permission_bits(&metadata);
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed {
            what,
            path: path.into(),
            mode,
        });
    }
    Ok(Zeroizing::new(std::fs::read(path).map_err(read_error)?))
}

#[cfg(unix)]
fn permission_bits(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn permission_bits(_: &std::fs::Metadata) -> u32 {
    0
}
