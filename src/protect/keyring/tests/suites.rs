//! Keyrings of the `sm` suite, and keyrings moving between suites.

use super::*;

fn sm_fixture(domains: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.toml");
    let master = MasterKey::generate().unwrap().0;
    let report = Keyring::init_in(&path, &master, &strings(domains), Some(Suite::Sm)).unwrap();
    assert!(report.created);
    Fixture {
        _dir: dir,
        path,
        master,
    }
}

#[test]
fn an_sm_keyring_records_its_suite_and_every_key_is_sm() {
    let f = sm_fixture(&[EMAIL, NAME]);
    let text = fs::read_to_string(&f.path).unwrap();
    assert!(text.contains("\nsuite = \"sm\"\n"), "{text}");
    assert_eq!(text.matches("suite = \"sm\"").count(), 1 + 3 + 1, "{text}");
    for key in Keyring::list(&f.path).unwrap() {
        assert_eq!(key.suite, Suite::Sm, "{key:?}");
    }
    let keyring = f.load().unwrap();
    assert_eq!(keyring.audit_mac_suite().unwrap(), Suite::Sm);
    assert_eq!(keyring.audit_signing_key().unwrap().suite(), Suite::Sm);
    assert!(keyring
        .audit_public_key_base64()
        .unwrap()
        .starts_with("sm2:"));
    for mode in [Mode::Randomized, Mode::Deterministic] {
        let stored = keyring
            .encrypt_text(EMAIL, mode, b"wang@example.cn")
            .unwrap();
        let envelope = parse_text(stored.as_bytes()).unwrap().unwrap();
        let reloaded = f.load().unwrap();
        assert_eq!(
            &reloaded.decrypt(EMAIL, envelope.clone()).unwrap()[..],
            b"wang@example.cn"
        );
        // Another domain of the same keyring does not open it.
        assert!(matches!(
            reloaded.decrypt(NAME, envelope),
            Err(CryptoError::UnknownKey { .. })
        ));
    }
    // An AES keyring has no suite lines at all: older pgveils read it.
    let aes = fixture(&[EMAIL]);
    assert!(!fs::read_to_string(&aes.path).unwrap().contains("suite"));
}

/// A key entry's suite is bound to it: edited, the entry no longer
/// unwraps (and neither does the keyring's check, for the keyring's
/// suite).
#[test]
fn an_entrys_suite_cannot_be_edited() {
    let f = sm_fixture(&[EMAIL]);
    let text = fs::read_to_string(&f.path).unwrap();
    // The first data key's suite line, not the keyring's.
    let at = text.find("[[key]]").unwrap();
    let edited = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("suite = \"sm\"\n", "", 1)
    );
    fs::write(&f.path, &edited).unwrap();
    let err = f.load().unwrap_err();
    assert!(matches!(err, KeyringError::Unwrap { .. }), "{err}");

    fs::write(&f.path, text.replacen("suite = \"sm\"\n", "", 1)).unwrap();
    let err = f.load().unwrap_err();
    assert!(matches!(err, KeyringError::WrongMasterKey { .. }), "{err}");
}

#[test]
fn init_keeps_an_existing_keyrings_suite() {
    let f = sm_fixture(&[EMAIL]);
    let report = Keyring::init(&f.path, &f.master, &strings(&[EMAIL, NAME])).unwrap();
    assert_eq!(report.added, strings(&[NAME]));
    let name = Keyring::list(&f.path)
        .unwrap()
        .into_iter()
        .find(|k| k.domain == NAME)
        .unwrap();
    assert_eq!(name.suite, Suite::Sm);
    let err = Keyring::init_in(&f.path, &f.master, &[], Some(Suite::Aes)).unwrap_err();
    assert!(matches!(err, KeyringError::SuiteMismatch { .. }), "{err}");
    assert!(err.to_string().contains("keys rotate --suite aes"), "{err}");
}

/// `keys rotate --suite sm`: new SM versions become current, old AES
/// values still decrypt, the keyring's suite (and check) become SM's, the
/// audit keys stay as they were.
#[test]
fn rotating_to_another_suite_moves_the_keyring() {
    let f = fixture(&[EMAIL, NAME]);
    let before = f.load().unwrap();
    let public = before.audit_public_key_base64().unwrap();
    let old = before
        .encrypt_text(EMAIL, Mode::Deterministic, b"wang@example.cn")
        .unwrap();
    let added = Keyring::rotate_to(&f.path, &f.master, &[], Some(Suite::Sm)).unwrap();
    assert_eq!(added.len(), 2);
    let text = fs::read_to_string(&f.path).unwrap();
    assert!(text.contains("\nsuite = \"sm\"\n"), "{text}");
    let after = f.load().unwrap();
    let listing = Keyring::list(&f.path).unwrap();
    for key in &listing {
        let expected = if key.current && key.kind == KeyKind::Data && key.domain != AUDIT_DOMAIN {
            Suite::Sm
        } else {
            Suite::Aes
        };
        assert_eq!(key.suite, expected, "{key:?}");
    }
    let envelope = parse_text(old.as_bytes()).unwrap().unwrap();
    assert_eq!(
        &after.decrypt(EMAIL, envelope).unwrap()[..],
        b"wang@example.cn"
    );
    let new = after
        .encrypt_text(EMAIL, Mode::Deterministic, b"wang@example.cn")
        .unwrap();
    assert_ne!(new, old);
    let envelope = parse_text(new.as_bytes()).unwrap().unwrap();
    assert_eq!(envelope.key_ref(), after.current_key(EMAIL).unwrap());
    assert_eq!(after.audit_public_key_base64().unwrap(), public);

    // A later rotation without --suite stays in the keyring's new suite.
    Keyring::rotate(&f.path, &f.master, &strings(&[NAME])).unwrap();
    let name = Keyring::list(&f.path)
        .unwrap()
        .into_iter()
        .filter(|k| k.domain == NAME)
        .max_by_key(|k| k.version)
        .unwrap();
    assert_eq!((name.version, name.suite), (3, Suite::Sm));
    // Rewrap keeps each key's suite.
    let (new_master, _) = MasterKey::generate().unwrap();
    Keyring::rewrap(&f.path, &f.master, &new_master).unwrap();
    let rewrapped = Keyring::load(&f.path, &new_master).unwrap();
    let envelope = parse_text(new.as_bytes()).unwrap().unwrap();
    assert_eq!(
        &rewrapped.decrypt(EMAIL, envelope).unwrap()[..],
        b"wang@example.cn"
    );
    let suites = |listing: Vec<KeyListing>| -> Vec<(u32, Suite)> {
        listing.into_iter().map(|k| (k.id, k.suite)).collect()
    };
    let mut expected = suites(listing);
    expected.push((name.id, Suite::Sm));
    expected.sort();
    let mut found = suites(Keyring::list(&f.path).unwrap());
    found.sort();
    assert_eq!(found, expected);
}

/// Audit keys of two suites in one keyring are refused: a file has one.
#[test]
fn audit_keys_of_two_suites_are_refused() {
    let aes = fixture(&[]);
    let sm = sm_fixture(&[]);
    // The SM keyring's signing key, moved into the AES one by rewrapping
    // the SM keyring under the AES keyring's master key first.
    Keyring::rewrap(&sm.path, &sm.master, &aes.master).unwrap();
    let sm_text = fs::read_to_string(&sm.path).unwrap();
    let signing = &sm_text[sm_text.find("[[signing_key]]").unwrap()..];
    let aes_text = fs::read_to_string(&aes.path).unwrap();
    let mixed = format!(
        "{}{}",
        &aes_text[..aes_text.find("[[signing_key]]").unwrap()],
        signing
    );
    fs::write(&aes.path, mixed).unwrap();
    let err = aes.load().unwrap_err();
    assert!(matches!(err, KeyringError::AuditSuites { .. }), "{err}");
}
