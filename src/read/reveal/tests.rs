//! Tests of revealing rows; [`veil`] and [`reader`] serve the tests of
//! COPY TO as well.

use super::*;
use crate::protect::crypto::MasterKey;
use crate::protect::keyring::Keyring;
use crate::protect::policy::Policy;
use crate::sql::Encryptor;
use crate::wire::reply;

const POLICY: &str = r#"
[[column]]
table = "t"
column = "secret"
reveal = { reader = "plaintext", masker = "masked" }
default = "deny"

[[column]]
table = "t"
column = "kyc"
reveal = { reader = "plaintext" }
purposes = ["kyc"]
default = "null"
"#;

/// A veil protecting `public.t.secret` (plaintext for `reader`,
/// masked for `masker`, denied to anyone else) and `public.t.kyc`.
pub(crate) fn veil() -> Protection {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.toml");
    let policy = Policy::from_str("t.toml", POLICY).unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    Keyring::init(&path, &master, &policy.domains()).unwrap();
    Protection::new(policy, Keyring::load(&path, &master).unwrap())
}

/// Rewrites one DataRow frame for `reader`, with a fresh revealer (see
/// [`Revealer::rewrite_row`]); the frame itself when it holds no ciphertext.
/// `Err` carries the ErrorResponse to send instead when a value is denied.
fn data_row(veil: &Protection, reader: &Recipient<'_>, frame: Bytes) -> Result<Bytes, Bytes> {
    if !has_ciphertext(&frame) {
        return Ok(frame);
    }
    let revealed = Revealer::default().rewrite_row(veil, reader, &frame, None)?;
    Ok(revealed.unwrap_or(frame))
}

fn row(fields: &[Option<&[u8]>]) -> Bytes {
    reply::frame_of(b'D', &crate::wire::copy::binary::tests::tuple_bytes(fields))
}

fn read(veil: &Protection, roles: &[&str], frame: Bytes) -> Result<Vec<Option<Vec<u8>>>, Bytes> {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let out = data_row(veil, &reader(&roles, None), frame)?;
    Ok(Fields::of(&out).map(|f| f.map(<[u8]>::to_vec)).collect())
}

#[test]
fn each_action_and_untouched_rows() {
    let veil = veil();
    let column = veil.policy.column("public", "t", "secret").unwrap();
    let ciphertext = veil.encrypt(column, "top secret").unwrap();
    let frame = row(&[Some(b"plain"), None, Some(ciphertext.as_bytes())]);
    let plain = read(&veil, &["reader"], frame.clone()).unwrap();
    assert_eq!(
        plain,
        vec![Some(b"plain".to_vec()), None, Some(b"top secret".to_vec())]
    );
    let masked = read(&veil, &["masker"], frame.clone()).unwrap();
    assert_eq!(
        masked[2],
        Some(column.mask.apply("top secret").into_bytes())
    );
    let denied = read(&veil, &["nobody"], frame).unwrap_err();
    assert_eq!(reply::error_field(&denied, b'C'), Some(&b"42501"[..]));
    let message = reply::error_field(&denied, b'M').unwrap();
    assert!(String::from_utf8_lossy(message).contains("public.t.secret"));
    // A row without ciphertext is passed on as the same bytes.
    let untouched = row(&[Some(b"a"), Some(b"pgv1")]);
    assert_eq!(
        data_row(&veil, &reader(&[], None), untouched.clone()).unwrap(),
        untouched
    );
}

/// A reader with these roles and purpose, and no trail.
pub(crate) fn reader<'a>(roles: &'a [String], purpose: Option<&'a str>) -> Recipient<'a> {
    Recipient {
        roles,
        purpose,
        ticket: None,
        encoding: ClientEncoding::default(),
        trail: None,
        result: Default::default(),
    }
}

fn fields(row: Option<Bytes>) -> Vec<Option<Vec<u8>>> {
    let row = row.expect("the row changes");
    Fields::of(&row).map(|f| f.map(<[u8]>::to_vec)).collect()
}

#[test]
fn a_session_revealer_follows_the_declared_purpose() {
    let veil = veil();
    let column = veil.policy.column("public", "t", "kyc").unwrap();
    let frame = row(&[Some(veil.encrypt(column, "X123").unwrap().as_bytes())]);
    let roles = vec!["reader".to_string()];
    let mut revealer = Revealer::default();
    for (purpose, expected) in [
        (Some("kyc"), Some(b"X123".to_vec())),
        (None, None),
        (Some("marketing"), None),
        (Some("kyc"), Some(b"X123".to_vec())),
    ] {
        let out = revealer.rewrite_row(&veil, &reader(&roles, purpose), &frame, None);
        assert_eq!(fields(out.unwrap()), vec![expected], "{purpose:?}");
    }
}

#[test]
fn one_value_is_decided_for_each_reader() {
    let veil = veil();
    let column = veil.policy.column("public", "t", "secret").unwrap();
    let frame = row(&[Some(veil.encrypt(column, "top secret").unwrap().as_bytes())]);
    let roles = |r: &str| vec![r.to_string()];
    let (plain, masked, nobody) = (roles("reader"), roles("masker"), roles("nobody"));
    // Twice each, with fresh revealers: nothing carries over between readers.
    for _ in 0..2 {
        let out = Revealer::default().rewrite_row(&veil, &reader(&plain, None), &frame, None);
        assert_eq!(fields(out.unwrap()), vec![Some(b"top secret".to_vec())]);
        let out = Revealer::default().rewrite_row(&veil, &reader(&masked, None), &frame, None);
        let expected = column.mask.apply("top secret").into_bytes();
        assert_eq!(fields(out.unwrap()), vec![Some(expected)]);
        let out = Revealer::default().rewrite_row(&veil, &reader(&nobody, None), &frame, None);
        assert!(out.is_err(), "denied");
    }
}

#[test]
fn bytea_values_are_revealed_in_the_form_of_their_ciphertext() {
    let veil = veil();
    let column = veil.policy.column("public", "t", "secret").unwrap();
    let plaintext = b"\x00secret\\\xff";
    let envelope = veil.encrypt_bytes(column, plaintext).unwrap();
    let frame = row(&[
        Some(&envelope),
        Some(&bytea::hex(&envelope)),
        Some(&bytea::escape(&envelope)),
    ]);
    let forms = |bytes: &[u8]| {
        vec![
            Some(bytes.to_vec()),
            Some(bytea::hex(bytes)),
            Some(bytea::escape(bytes)),
        ]
    };
    // Twice, so the second read uses the revealer's decision.
    for _ in 0..2 {
        assert_eq!(
            read(&veil, &["reader"], frame.clone()).unwrap(),
            forms(plaintext)
        );
        assert_eq!(
            read(&veil, &["masker"], frame.clone()).unwrap(),
            forms(b"****")
        );
        assert!(read(&veil, &["nobody"], frame.clone()).is_err());
    }
}

#[test]
fn forged_or_damaged_ciphertext_is_passed_on_not_decrypted() {
    let veil = veil();
    let column = veil.policy.column("public", "t", "secret").unwrap();
    let mut ciphertext = veil.encrypt(column, "top secret").unwrap().into_bytes();
    let last = ciphertext.len() - 1;
    ciphertext[last] = if ciphertext[last] == b'A' { b'B' } else { b'A' };
    let out = read(&veil, &["reader"], row(&[Some(&ciphertext)])).unwrap();
    assert_eq!(out, vec![Some(ciphertext)]);
    let forged = b"pgv1:not-really".to_vec();
    assert_eq!(
        read(&veil, &["reader"], row(&[Some(&forged)])).unwrap(),
        vec![Some(forged)]
    );
}
