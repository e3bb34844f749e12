use super::*;

fn parse(text: &str) -> Result<CustodyConfig, String> {
    #[derive(Deserialize)]
    struct Wrapper {
        master_key: CustodyConfig,
    }
    let wrapper: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
    wrapper.master_key.validate()?;
    Ok(wrapper.master_key)
}

#[test]
fn the_binding_is_the_keyrings_first_format() {
    let aad = Aad {
        label: "pgveil key",
        domain: "public.customers.email",
        id: 3,
        version: 2,
        suite: Suite::Aes,
    };
    assert_eq!(aad.to_bytes(), b"pgveil key|public.customers.email|3|2");
    let pairs = aad.pairs();
    assert_eq!(pairs.len(), 4);
    assert_eq!(pairs[0], ("pgveil", "pgveil key".to_owned()));
    assert_eq!(pairs[3], ("version", "2".to_owned()));
    let sm = Aad {
        suite: Suite::Sm,
        ..aad
    };
    assert_eq!(sm.to_bytes(), b"pgveil key|public.customers.email|3|2|sm");
    assert_eq!(sm.pairs()[4], ("suite", "sm".to_owned()));
}

#[test]
fn each_provider_parses_with_its_own_keys() {
    assert_eq!(
        parse("[master_key]\nprovider = \"env\"").unwrap(),
        CustodyConfig::Env
    );
    assert_eq!(
        parse("[master_key]\nprovider = \"file\"\npath = \"/k\"").unwrap(),
        CustodyConfig::File { path: "/k".into() }
    );
    let pkcs11 = parse(
        "[master_key]\nprovider = \"pkcs11\"\nmodule = \"/m.so\"\ntoken = \"t\"\nkey = \"k\"\n\
         pin_file = \"/pin\"",
    )
    .unwrap();
    assert!(
        matches!(&pkcs11, CustodyConfig::Pkcs11(c) if c.token == "t" && c.pin_file.is_some()),
        "{pkcs11:?}"
    );
    let kms = parse(
        "[master_key]\nprovider = \"aws-kms\"\nkey_id = \"alias/pgveil\"\nregion = \"eu-west-1\"\n\
         endpoint = \"http://127.0.0.1:1\"",
    )
    .unwrap();
    assert_eq!(kms.provider(), "aws-kms");
}

#[test]
fn unknown_or_misplaced_keys_are_refused() {
    let err = parse("[master_key]\nprovider = \"hsm\"").unwrap_err();
    assert!(err.contains("hsm"), "{err}");
    let err = parse("[master_key]\nprovider = \"file\"\npath = \"/k\"\ntoken = \"t\"").unwrap_err();
    assert!(err.contains("token"), "{err}");
    let err = parse(
        "[master_key]\nprovider = \"pkcs11\"\nmodule = \"/m.so\"\ntoken = \"t\"\nkey = \"k\"\n\
         key_id = \"x\"",
    )
    .unwrap_err();
    assert!(err.contains("key_id"), "{err}");
    let err = parse(
        "[master_key]\nprovider = \"pkcs11\"\nmodule = \"/m.so\"\ntoken = \"t\"\nkey = \"k\"\n\
         pin_env = \"P\"\npin_file = \"/p\"",
    )
    .unwrap_err();
    assert!(err.contains("pin_env and pin_file"), "{err}");
    let err =
        parse("[master_key]\nprovider = \"aws-kms\"\nkey_id = \"k\"\nendpoint = \"localhost\"")
            .unwrap_err();
    assert!(err.contains("endpoint"), "{err}");
}

#[test]
fn a_local_key_seals_bound_to_its_aad_and_checks() {
    let (master, _) = MasterKey::generate().unwrap();
    let (other, _) = MasterKey::generate().unwrap();
    for suite in [Suite::Aes, Suite::Sm] {
        let aad = Aad {
            label: "pgveil key",
            domain: "d",
            id: 1,
            version: 1,
            suite,
        };
        let sealed = master.seal(aad, b"secret").unwrap();
        assert_eq!(
            master.open(aad, &sealed).unwrap().unwrap().as_slice(),
            b"secret"
        );
        let moved = Aad { version: 2, ..aad };
        assert!(master.open(moved, &sealed).unwrap().is_none());
        assert!(other.open(aad, &sealed).unwrap().is_none());
        let check = master.check_value(suite).unwrap();
        assert!(master.check(suite, &check).unwrap());
        assert!(!other.check(suite, &check).unwrap());
    }
    // A key sealed in one suite does not open in the other: SM4-GCM under
    // another key, and another binding.
    let aad = |suite| Aad {
        label: "pgveil key",
        domain: "d",
        id: 1,
        version: 1,
        suite,
    };
    let sm = master.seal(aad(Suite::Sm), b"secret").unwrap();
    assert!(master.open(aad(Suite::Aes), &sm).unwrap().is_none());
    let aes = master.seal(aad(Suite::Aes), b"secret").unwrap();
    assert!(master.open(aad(Suite::Sm), &aes).unwrap().is_none());
    let check = master.check_value(Suite::Sm).unwrap();
    assert_eq!(check.len(), 32);
    assert!(!master.check(Suite::Aes, &check).unwrap());
}

/// The `sm` suite's local wrapping is SM4-GCM under HKDF-SM3 of the master
/// key, computed here independently.
#[test]
fn a_local_key_wraps_sm_keys_with_sm4_gcm() {
    use aes_gcm::KeyInit;
    use zeroize::Zeroizing;

    use crate::protect::crypto::{gcm_open, hkdf_sm3, label, Sm4Gcm};
    let (master, _) = MasterKey::generate().unwrap();
    let aad = Aad {
        label: "pgveil key",
        domain: "d",
        id: 4,
        version: 2,
        suite: Suite::Sm,
    };
    let sealed = master.seal(aad, b"secret").unwrap();
    let key: Zeroizing<[u8; 16]> = hkdf_sm3(master.as_bytes(), label::SM4_WRAP);
    let opened = gcm_open(
        &Sm4Gcm::new((&*key).into()),
        b"pgveil key|d|4|2|sm",
        sealed,
        0,
    );
    assert_eq!(opened.unwrap().as_slice(), b"secret");
}

#[test]
fn only_pkcs11_creates_keys_and_errors_name_the_provider() {
    let err = CustodyConfig::Env
        .open(CreateKey::IfAbsent)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--create-key") && err.contains("env"), "{err}");
    let config = CustodyConfig::Pkcs11(Pkcs11Config {
        module: "/nonexistent/libpkcs11.so".into(),
        token: "t".into(),
        key: "k".into(),
        pin_env: None,
        pin_file: None,
    });
    let err = config.open(CreateKey::No).err().unwrap().to_string();
    assert!(
        err.starts_with("master key provider pkcs11 (module /nonexistent/libpkcs11.so")
            && err.contains("cannot load the module"),
        "{err}"
    );
    let err = CustodyConfig::File {
        path: "/nonexistent/master.key".into(),
    }
    .open(CreateKey::No)
    .err()
    .unwrap()
    .to_string();
    assert!(err.starts_with("master key provider file: "), "{err}");
}
