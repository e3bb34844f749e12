//! Files that hold secrets (the master key, TLS private keys): one rule for
//! all of them, as ssh has for a private key. A file that group or others
//! may read or write is refused before it is read.

use std::io;
use std::path::Path;

/// The permission bits of `path` when group or others may read or write
/// it (any of the bits 077); `None` when only its owner can.
#[cfg(unix)]
pub(crate) fn exposed_mode(path: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Without Unix permissions there is nothing to check.
#[cfg(not(unix))]
pub(crate) fn exposed_mode(path: &Path) -> io::Result<Option<u32>> {
    std::fs::metadata(path).map(|_| None)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_only_passes_and_group_or_other_bits_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "x").unwrap();
        for (mode, exposed) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                exposed_mode(&path).unwrap(),
                exposed.then_some(mode),
                "{mode:o}"
            );
        }
        assert!(exposed_mode(&dir.path().join("missing")).is_err());
    }
}
