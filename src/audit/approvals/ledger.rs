//! The usage ledger: how many rows of each approval have been used, and
//! whether the proxy has seen it revoked, in `ID.used` next to the
//! approval. The proxy writes it (to a new file, synced, renamed over the
//! old one) before it reveals the rows it counts, so what was used
//! survives a restart or a crash; rows reserved and not yet shown when a
//! crash comes count as used. Each file carries a MAC under the audit MAC
//! key: an edited ledger (rows given back by hand) does not check, and an
//! approval whose ledger does not check is taken as used up.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::file_of;
use crate::audit::AuditKeys;

/// What the ledger says of one approval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Usage {
    /// Rows used (or reserved).
    pub(super) used: u64,
    /// The proxy saw a revocation.
    pub(super) revoked: bool,
    /// The file does not parse or its MAC does not check: taken as used
    /// up and revoked.
    pub(super) damaged: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    used: u64,
    revoked: bool,
    mac: String,
}

/// What the MAC of an approval's usage covers, in a domain of its own.
fn mac_input(id: &str, used: u64, revoked: bool) -> String {
    format!("pgveil approval usage\n{id}\n{used}\n{revoked}\n")
}

fn mac_key(keys: &AuditKeys) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, keys.mac_key())
}

/// The usage of approval `id`: none yet if it has no ledger.
pub(super) fn read(dir: &Path, id: &str, keys: &AuditKeys) -> Usage {
    let path = file_of(dir, id, "used");
    let text = match fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Usage::default(),
        Err(_) => return damaged(),
        Ok(text) => text,
    };
    let Ok(line) = serde_json::from_str::<Line>(text.trim_end()) else {
        return damaged();
    };
    let input = mac_input(&line.id, line.used, line.revoked);
    let checks = STANDARD
        .decode(&line.mac)
        .is_ok_and(|tag| hmac::verify(&mac_key(keys), input.as_bytes(), &tag).is_ok());
    if !checks || line.id != id {
        return damaged();
    }
    Usage {
        used: line.used,
        revoked: line.revoked,
        damaged: false,
    }
}

fn damaged() -> Usage {
    Usage {
        used: u64::MAX,
        revoked: true,
        damaged: true,
    }
}

/// Writes the usage of approval `id`, synced, replacing the old one only
/// once the new one is on disk.
pub(super) fn write(dir: &Path, id: &str, usage: Usage, keys: &AuditKeys) -> std::io::Result<()> {
    let line = Line {
        id: id.into(),
        used: usage.used,
        revoked: usage.revoked,
        mac: STANDARD.encode(hmac::sign(
            &mac_key(keys),
            mac_input(id, usage.used, usage.revoked).as_bytes(),
        )),
    };
    let text = serde_json::to_string(&line).expect("a ledger line serializes") + "\n";
    let path = file_of(dir, id, "used");
    let temporary = file_of(dir, id, "used.new");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::approvals::tests::keys;

    #[test]
    fn usage_round_trips_and_edits_do_not_check() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let id = "apr-0123456789abcdef";
        assert_eq!(read(dir.path(), id, &keys), Usage::default());
        let usage = Usage {
            used: 42,
            revoked: false,
            damaged: false,
        };
        write(dir.path(), id, usage, &keys).unwrap();
        assert_eq!(read(dir.path(), id, &keys), usage);
        let path = file_of(dir.path(), id, "used");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"used\":42", "\"used\":2")).unwrap();
        let edited = read(dir.path(), id, &keys);
        assert!(edited.damaged && edited.revoked && edited.used == u64::MAX);
        fs::write(&path, "not json").unwrap();
        assert!(read(dir.path(), id, &keys).damaged);
        // Another approval's ledger under this name does not check either.
        write(dir.path(), "apr-ffffffffffffffff", usage, &keys).unwrap();
        fs::copy(file_of(dir.path(), "apr-ffffffffffffffff", "used"), &path).unwrap();
        assert!(read(dir.path(), id, &keys).damaged);
    }
}
