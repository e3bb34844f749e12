//! The keyring: creation, loading, wrapping and the ways a keyring file can be wrong.

use std::fs;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::file::FILE_COMMENT;
use super::*;
use crate::protect::crypto::{parse_text, MasterKey};
use crate::protect::custody::Custody;

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
    assert_eq!(keyring.audit_mac_suite().unwrap(), Suite::Aes);
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

#[test]
fn rotation_adds_a_current_version_and_old_values_still_decrypt() {
    let f = fixture(&[EMAIL, NAME]);
    let before = f.load().unwrap();
    let old = before
        .encrypt_text(EMAIL, Mode::Randomized, b"wang@example.cn")
        .unwrap();
    let old_det = before
        .encrypt_text(EMAIL, Mode::Deterministic, b"wang@example.cn")
        .unwrap();

    let added = Keyring::rotate(&f.path, &f.master, &strings(&[EMAIL])).unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].0, EMAIL);
    assert_eq!(added[0].1.version, 2);
    let after = f.load().unwrap();
    assert_eq!(after.current_key(EMAIL).unwrap(), added[0].1);
    assert_eq!(
        after.current_key(NAME).unwrap().version,
        1,
        "only the named domain"
    );
    let envelope = parse_text(old.as_bytes()).unwrap().unwrap();
    assert_eq!(
        &after.decrypt(EMAIL, envelope).unwrap()[..],
        b"wang@example.cn"
    );
    let new_det = after
        .encrypt_text(EMAIL, Mode::Deterministic, b"wang@example.cn")
        .unwrap();
    assert_ne!(new_det, old_det, "a new version encrypts differently");
    let envelope = parse_text(new_det.as_bytes()).unwrap().unwrap();
    assert_eq!(envelope.key_ref(), added[0].1);

    // Without a domain, every data domain; the audit keys never.
    let all = Keyring::rotate(&f.path, &f.master, &[]).unwrap();
    let domains: Vec<&str> = all.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(domains, [EMAIL, NAME]);
    assert!(matches!(
        Keyring::rotate(&f.path, &f.master, &strings(&[AUDIT_DOMAIN])),
        Err(KeyringError::InvalidDomain { .. })
    ));
    assert!(matches!(
        Keyring::rotate(&f.path, &f.master, &strings(&["public.nope.x"])),
        Err(KeyringError::UnknownDomain { .. })
    ));
}

#[test]
fn retiring_removes_an_old_version_never_the_current_one() {
    let f = fixture(&[EMAIL]);
    let v1 = f
        .load()
        .unwrap()
        .encrypt_text(EMAIL, Mode::Randomized, b"x")
        .unwrap();
    assert!(matches!(
        Keyring::retire(&f.path, &f.master, EMAIL, 1),
        Err(KeyringError::RetireCurrent { version: 1, .. })
    ));
    Keyring::rotate(&f.path, &f.master, &[]).unwrap();
    let wrong = MasterKey::generate().unwrap().0;
    let before = fs::read(&f.path).unwrap();
    assert!(matches!(
        Keyring::retire(&f.path, &wrong, EMAIL, 1),
        Err(KeyringError::WrongMasterKey { .. })
    ));
    assert!(matches!(
        Keyring::retire(&f.path, &f.master, EMAIL, 7),
        Err(KeyringError::UnknownVersion { version: 7, .. })
    ));
    assert_eq!(
        fs::read(&f.path).unwrap(),
        before,
        "refusals change nothing"
    );

    let retired = Keyring::retire(&f.path, &f.master, EMAIL, 1).unwrap();
    assert_eq!(retired.version, 1);
    let keyring = f.load().unwrap();
    let envelope = parse_text(v1.as_bytes()).unwrap().unwrap();
    assert!(keyring.decrypt(EMAIL, envelope).is_err(), "v1 is gone");
    let versions: Vec<u32> = Keyring::list(&f.path)
        .unwrap()
        .iter()
        .filter(|k| k.domain == EMAIL)
        .map(|k| k.version)
        .collect();
    assert_eq!(versions, [2]);
}

/// A provider of another kind over a local key (or failing), for the
/// keyring's side of custody.
struct Token {
    key: MasterKey,
    down: bool,
}

impl Custody for Token {
    fn kind(&self) -> CustodyKind {
        CustodyKind::Pkcs11
    }

    fn describe(&self) -> String {
        "the test token".into()
    }

    fn seal(
        &self,
        aad: crate::protect::custody::Aad<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CustodyError> {
        if self.down {
            return Err(CustodyError::CannotCreate { provider: "down" });
        }
        self.key.seal(aad, plaintext)
    }

    fn open(
        &self,
        aad: crate::protect::custody::Aad<'_>,
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, CustodyError> {
        if self.down {
            return Err(CustodyError::CannotCreate { provider: "down" });
        }
        self.key.open(aad, sealed)
    }
}

#[test]
fn rewrap_moves_a_keyring_to_another_provider_which_it_then_requires() {
    let f = fixture(&[EMAIL]);
    let stored = f
        .load()
        .unwrap()
        .encrypt_text(EMAIL, Mode::Deterministic, b"x@example.com")
        .unwrap();
    let token = Token {
        key: MasterKey::generate().unwrap().0,
        down: false,
    };
    assert_eq!(Keyring::rewrap(&f.path, &f.master, &token).unwrap(), 3);
    let text = fs::read_to_string(&f.path).unwrap();
    assert!(text.contains("custody = \"pkcs11\""), "{text}");

    let moved = Keyring::load(&f.path, &token).unwrap();
    let envelope = parse_text(stored.as_bytes()).unwrap().unwrap();
    assert_eq!(
        moved.decrypt(EMAIL, envelope).unwrap().as_slice(),
        b"x@example.com"
    );

    let err = f.load().unwrap_err();
    assert!(matches!(err, KeyringError::WrongProvider { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("is wrapped by a pkcs11 master key"),
        "{err}"
    );

    let other = Token {
        key: MasterKey::generate().unwrap().0,
        down: false,
    };
    let err = Keyring::load(&f.path, &other).unwrap_err().to_string();
    assert!(err.contains("(the test token is wrong)"), "{err}");

    // A provider that fails: the keyring says so, and is left as it was.
    let down = Token {
        key: MasterKey::generate().unwrap().0,
        down: true,
    };
    let err = Keyring::load(&f.path, &down).unwrap_err();
    assert!(matches!(err, KeyringError::Custody { .. }), "{err}");
    assert!(Keyring::rewrap(&f.path, &token, &down).is_err());
    assert!(Keyring::rotate(&f.path, &down, &[]).is_err());
    assert_eq!(fs::read_to_string(&f.path).unwrap(), text);

    // And back to a local key.
    assert_eq!(Keyring::rewrap(&f.path, &token, &f.master).unwrap(), 3);
    assert!(!fs::read_to_string(&f.path).unwrap().contains("custody"));
    f.load().unwrap();
}

mod suites;
