use super::*;

const KEY: KeyRef = KeyRef { id: 1, version: 1 };
const DOMAIN: &str = "public.customers.email";
const SUITES: [Suite; 2] = [Suite::Aes, Suite::Sm];
const MODES: [Mode; 2] = [Mode::Randomized, Mode::Deterministic];

fn ciphers_in(suite: Suite) -> KeyCiphers {
    KeyCiphers::new(&DataKey::generate().unwrap(), KEY, suite, DOMAIN)
}

fn plaintexts() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = [0, 1, 16, 100, 1024]
        .iter()
        .map(|&len| (0..len).map(|i| (i * 7) as u8).collect())
        .collect();
    all.push("张伟 王芳 李娜".as_bytes().to_vec());
    all
}

#[test]
fn round_trips_in_both_modes_and_suites() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        assert_eq!(c.suite(), suite);
        for mode in MODES {
            for plaintext in plaintexts() {
                let envelope = c.encrypt(DOMAIN, mode, &plaintext);
                assert_eq!(envelope.mode(), mode);
                assert_eq!(envelope.key_ref(), KEY);
                assert_eq!(
                    envelope.as_bytes().len(),
                    super::super::min_len(mode) + plaintext.len(),
                    "SM envelopes are as long as AES ones"
                );
                let parsed = Envelope::from_bytes(envelope.as_bytes().to_vec()).unwrap();
                assert_eq!(c.decrypt(DOMAIN, parsed).unwrap().as_slice(), plaintext);
            }
        }
    }
}

#[test]
fn deterministic_is_equal_and_randomized_is_not() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        for plaintext in plaintexts() {
            let det = |p: &[u8]| c.encrypt(DOMAIN, Mode::Deterministic, p);
            assert_eq!(det(&plaintext), det(&plaintext));
            let rnd = |p: &[u8]| c.encrypt(DOMAIN, Mode::Randomized, p);
            assert_ne!(rnd(&plaintext), rnd(&plaintext));
        }
        let a = c.encrypt(DOMAIN, Mode::Deterministic, b"a");
        let b = c.encrypt(DOMAIN, Mode::Deterministic, b"b");
        assert_ne!(a, b);
    }
}

#[test]
fn deterministic_output_depends_on_domain() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        let a = c.encrypt("a", Mode::Deterministic, b"same");
        let b = c.encrypt("b", Mode::Deterministic, b"same");
        assert_ne!(a, b);
    }
}

#[test]
fn another_domain_does_not_decrypt() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        for mode in MODES {
            let envelope = c.encrypt("public.a.x", mode, b"secret value");
            let err = c.decrypt("public.b.x", envelope).unwrap_err();
            assert!(matches!(err, CryptoError::Authentication(_)), "{err}");
            assert!(!err.to_string().contains("secret"));
        }
    }
}

/// The same data key in the other suite (a keyring entry whose suite was
/// edited) opens nothing: the suites derive other subkeys, run other
/// ciphers and authenticate their name in the associated data.
#[test]
fn the_other_suite_does_not_decrypt() {
    let key = DataKey::generate().unwrap();
    let aes = KeyCiphers::new(&key, KEY, Suite::Aes, DOMAIN);
    let sm = KeyCiphers::new(&key, KEY, Suite::Sm, DOMAIN);
    for mode in MODES {
        for (from, to) in [(&aes, &sm), (&sm, &aes)] {
            let envelope = from.encrypt(DOMAIN, mode, b"secret value");
            let err = to.decrypt(DOMAIN, envelope).unwrap_err();
            assert!(matches!(err, CryptoError::Authentication(_)), "{err}");
        }
        assert_ne!(
            aes.encrypt(DOMAIN, Mode::Deterministic, b"x"),
            sm.encrypt(DOMAIN, Mode::Deterministic, b"x")
        );
    }
    assert_ne!(aes.pseudonym(b"x"), sm.pseudonym(b"x"));
}

/// SM's associated data is not the AES one of any domain: the mark
/// holds a byte no domain name has.
#[test]
fn associated_data_names_the_suite() {
    let header = Envelope::header(Mode::Randomized, KEY);
    let aes = associated_data(Mode::Randomized, KEY, Suite::Aes, DOMAIN);
    let sm = associated_data(Mode::Randomized, KEY, Suite::Sm, DOMAIN);
    assert_eq!(aes, [&header[..], DOMAIN.as_bytes()].concat());
    assert_eq!(sm, [&header[..], b"\0sm", DOMAIN.as_bytes()].concat());
}

/// The associated data kept for the key's own domain is the one built for
/// any other: ciphers keyed for another domain write and read the same
/// envelopes of this one.
#[test]
fn kept_associated_data_is_the_built_one() {
    for suite in SUITES {
        let key = DataKey::generate().unwrap();
        let own = KeyCiphers::new(&key, KEY, suite, DOMAIN);
        let other = KeyCiphers::new(&key, KEY, suite, "public.other.column");
        assert_eq!(
            own.encrypt(DOMAIN, Mode::Deterministic, b"same"),
            other.encrypt(DOMAIN, Mode::Deterministic, b"same")
        );
        for mode in MODES {
            for (from, to) in [(&own, &other), (&other, &own)] {
                let envelope = from.encrypt(DOMAIN, mode, b"secret value");
                assert_eq!(&*to.decrypt(DOMAIN, envelope).unwrap(), b"secret value");
            }
        }
    }
}

#[test]
fn any_flipped_byte_fails() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        for mode in MODES {
            let good = c.encrypt(DOMAIN, mode, b"hello world").into_bytes();
            for at in 0..good.len() {
                for bit in [0x01, 0x80] {
                    let mut bytes = good.clone();
                    bytes[at] ^= bit;
                    let result = Envelope::from_bytes(bytes).and_then(|e| c.decrypt(DOMAIN, e));
                    let err = result.expect_err("a flipped byte must not decrypt");
                    if at >= HEADER_LEN {
                        assert!(matches!(err, CryptoError::Authentication(_)), "{at}: {err}");
                    }
                }
            }
        }
    }
}

#[test]
fn edited_mode_byte_fails_authentication() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        let mut bytes = c
            .encrypt(DOMAIN, Mode::Deterministic, &[0; 40])
            .into_bytes();
        bytes[3] = Mode::Randomized.to_byte();
        let envelope = Envelope::from_bytes(bytes).unwrap();
        let err = c.decrypt(DOMAIN, envelope).unwrap_err();
        assert!(matches!(err, CryptoError::Authentication(_)), "{err}");
    }
}

#[test]
fn envelope_of_another_key_is_refused() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        let other = KeyCiphers::new(
            &DataKey::generate().unwrap(),
            KeyRef { id: 2, version: 1 },
            suite,
            DOMAIN,
        );
        let envelope = other.encrypt(DOMAIN, Mode::Randomized, b"x");
        let err = c.decrypt(DOMAIN, envelope).unwrap_err();
        assert!(matches!(err, CryptoError::UnknownKey { .. }), "{err}");
    }
}

#[test]
fn pseudonyms_are_stable_and_keyed() {
    for suite in SUITES {
        let c = ciphers_in(suite);
        let token = c.pseudonym("张伟".as_bytes());
        assert_eq!(token, c.pseudonym("张伟".as_bytes()));
        assert_ne!(token, c.pseudonym("王芳".as_bytes()));
        assert_ne!(token, ciphers_in(suite).pseudonym("张伟".as_bytes()));
        let hex = token.strip_prefix(PSEUDONYM_PREFIX).unwrap();
        assert_eq!(hex.len(), 2 * PSEUDONYM_LEN);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}

/// The SM suite's pseudonym is HMAC-SM3 under the subkey HKDF-SM3
/// derives, computed here independently.
#[test]
fn sm_pseudonyms_are_hmac_sm3() {
    let key = DataKey::generate().unwrap();
    let c = KeyCiphers::new(&key, KEY, Suite::Sm, DOMAIN);
    let subkey: Zeroizing<[u8; 32]> =
        super::super::suite::hkdf_sm3(key.as_bytes(), label::PSEUDONYM_SM3);
    let mac = hmac_sm3(subkey.as_ref())
        .chain_update(b"alice")
        .finalize()
        .into_bytes();
    assert_eq!(
        c.pseudonym(b"alice"),
        format!("pgvp_{}", hex::encode(&mac[..16]))
    );
}

#[test]
fn debug_is_redacted() {
    assert_eq!(
        format!("{:?}", ciphers_in(Suite::Sm)),
        "KeyCiphers(id 1, version 1, sm, ..redacted..)"
    );
}

#[test]
fn gcm_open_rejects_short_input() {
    let gcm = aes_gcm::Aes256Gcm::new(&[0; 32].into());
    let ring_gcm = aes_gcm_key(&[0; 32]);
    let sm = Sm4Gcm::new(&[0; 16].into());
    for len in 0..NONCE_LEN + TAG_LEN {
        assert!(gcm_open(&gcm, b"", vec![0; len], 0).is_none());
        assert!(ring_open(&ring_gcm, b"", vec![0; len], 0).is_none());
        assert!(gcm_open(&sm, b"", vec![0; len], 0).is_none());
    }
}

/// Randomized AES envelopes are sealed and opened by `ring`; those that
/// `aes-gcm` wrote (every pgveil before it) open, and `aes-gcm` opens
/// `ring`'s: one layout, one cipher, at every length around the block
/// size, with a header before the nonce as in an envelope.
#[test]
fn ring_and_aes_gcm_read_each_other() {
    let mut key = [0u8; 32];
    crate::protect::crypto::fill_random(&mut key).unwrap();
    let (ring_gcm, rust_gcm) = (aes_gcm_key(&key), aes_gcm::Aes256Gcm::new(&key.into()));
    let aad = b"header and domain";
    for len in 0..70 {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
        let mut by_ring = b"head".to_vec();
        ring_seal_into(&ring_gcm, aad, &plaintext, &mut by_ring);
        let mut by_rust = b"head".to_vec();
        gcm_seal_into(&rust_gcm, aad, &plaintext, &mut by_rust);
        assert_eq!(by_ring.len(), by_rust.len());
        for sealed in [&by_ring, &by_rust] {
            let opened = [
                gcm_open(&rust_gcm, aad, sealed.clone(), 4),
                ring_open(&ring_gcm, aad, sealed.clone(), 4),
            ];
            for opened in opened {
                assert_eq!(opened.as_deref().map(Vec::as_slice), Some(&plaintext[..]));
            }
            let mut flipped = sealed.clone();
            *flipped.last_mut().unwrap() ^= 1;
            assert!(ring_open(&ring_gcm, aad, flipped.clone(), 4).is_none());
            assert!(ring_open(&ring_gcm, b"other", sealed.clone(), 4).is_none());
        }
    }
}

/// Many threads on one key: the kept share of S2V is taken by one, the
/// others compute their own; all agree.
#[test]
fn concurrent_deterministic_encryption_agrees() {
    for suite in SUITES {
        concurrent_deterministic_encryption_agrees_in(suite);
    }
}

fn concurrent_deterministic_encryption_agrees_in(suite: Suite) {
    let c = ciphers_in(suite);
    let expected = c.encrypt(DOMAIN, Mode::Deterministic, b"same");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(c.encrypt(DOMAIN, Mode::Deterministic, b"same"), expected);
                }
            });
        }
    });
}
