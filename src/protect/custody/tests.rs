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
    };
    assert_eq!(aad.to_bytes(), b"pgveil key|public.customers.email|3|2");
    let pairs = aad.pairs();
    assert_eq!(pairs[0], ("pgveil", "pgveil key".to_owned()));
    assert_eq!(pairs[3], ("version", "2".to_owned()));
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
    let aad = Aad {
        label: "pgveil key",
        domain: "d",
        id: 1,
        version: 1,
    };
    let sealed = master.seal(aad, b"secret").unwrap();
    assert_eq!(
        master.open(aad, &sealed).unwrap().unwrap().as_slice(),
        b"secret"
    );
    let moved = Aad { version: 2, ..aad };
    assert!(master.open(moved, &sealed).unwrap().is_none());
    let (other, _) = MasterKey::generate().unwrap();
    assert!(other.open(aad, &sealed).unwrap().is_none());
    let check = master.check_value().unwrap();
    assert!(master.check(&check).unwrap());
    assert!(!other.check(&check).unwrap());
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
