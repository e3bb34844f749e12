//! One stored value: what it is, and what it becomes.
//!
//! A value is plaintext unless it starts like pgveil's envelope in its
//! column's form: `pgv1:` in a text column (the only form pgveil writes
//! there), the `PV` magic in a `bytea` column. A value that starts like one
//! is decrypted with its column's key domain, always, even when its header
//! names the current key and mode: a forged or damaged value with a good
//! header is found too. One that does not decrypt (malformed, altered,
//! under a key the domain does not have, copied from another domain) is
//! undecryptable: never changed, never shown, only counted.

use zeroize::Zeroizing;

use super::plan::{Form, Target};
use crate::protect::crypto::{self, parse_bytes, parse_field_into, Envelope, KeyRef, Mode};
use crate::protect::keyring::Keyring;

/// A stored value, as the batch read it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stored<'a> {
    /// From a text column.
    Text(&'a str),
    /// From a `bytea` column.
    Bytes(&'a [u8]),
}

/// The value to store instead.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum New {
    Text(String),
    Bytes(Vec<u8>),
}

/// What a value is, and its new form when it must change.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Already as the target asks.
    Keep,
    /// Plaintext in a column to encrypt.
    Encrypt(New),
    /// Ciphertext under another key than the domain's current one, or in
    /// the other mode: encrypted again.
    ReEncrypt {
        from: KeyRef,
        mode_changed: bool,
        new: New,
    },
    /// Ciphertext in a column to decrypt.
    Decrypt { from: KeyRef, new: New },
    /// Shaped like ciphertext, but it does not decrypt.
    Undecryptable,
    /// Decrypts, but its plaintext cannot be stored in the column (not
    /// UTF-8, for a text column).
    Unwritable,
}

impl Verdict {
    /// The value to store instead, if it changes.
    pub(super) fn new_value(&self) -> Option<&New> {
        match self {
            Verdict::Encrypt(new)
            | Verdict::ReEncrypt { new, .. }
            | Verdict::Decrypt { new, .. } => Some(new),
            Verdict::Keep | Verdict::Undecryptable | Verdict::Unwritable => None,
        }
    }
}

/// Judges one value for `target`, reading and writing `form`.
pub(super) fn judge(keyring: &Keyring, target: &Target, form: Form, stored: Stored<'_>) -> Verdict {
    let parsed = match stored {
        Stored::Text(text) if crypto::Form::of(text.as_bytes()) == Some(crypto::Form::Text) => {
            parse_field_into(text.as_bytes(), Vec::new()).map(|p| p.map(|(envelope, _)| envelope))
        }
        Stored::Text(_) => Ok(None),
        Stored::Bytes(bytes) => parse_bytes(bytes),
    };
    let envelope = match parsed {
        Ok(Some(envelope)) => envelope,
        Err(_) => return Verdict::Undecryptable,
        Ok(None) => {
            return match target {
                Target::Encrypt { domain, mode, .. } => {
                    let plaintext = match stored {
                        Stored::Text(text) => text.as_bytes(),
                        Stored::Bytes(bytes) => bytes,
                    };
                    encrypt(keyring, domain, *mode, form, plaintext)
                        .map_or(Verdict::Unwritable, Verdict::Encrypt)
                }
                Target::Decrypt { .. } => Verdict::Keep,
            };
        }
    };
    let (from, was) = (envelope.key_ref(), envelope.mode());
    let Ok(plaintext) = keyring.decrypt(target.domain(), envelope) else {
        return Verdict::Undecryptable;
    };
    match target {
        Target::Encrypt { key, mode, .. } if from == *key && was == *mode => Verdict::Keep,
        Target::Encrypt { domain, mode, .. } => {
            match encrypt(keyring, domain, *mode, form, &plaintext) {
                Some(new) => Verdict::ReEncrypt {
                    from,
                    mode_changed: was != *mode,
                    new,
                },
                None => Verdict::Unwritable,
            }
        }
        Target::Decrypt { .. } => match plaintext_value(form, plaintext) {
            Some(new) => Verdict::Decrypt { from, new },
            None => Verdict::Unwritable,
        },
    }
}

/// `plaintext` encrypted under the domain's current key, in `form`.
/// `None` only if the domain has no key, which the plan has ruled out.
fn encrypt(
    keyring: &Keyring,
    domain: &str,
    mode: Mode,
    form: Form,
    plaintext: &[u8],
) -> Option<New> {
    let envelope: Envelope = keyring.encrypt(domain, mode, plaintext).ok()?;
    Some(match form {
        Form::Text => New::Text(envelope.to_text()),
        Form::Bytes => New::Bytes(envelope.into_bytes()),
    })
}

/// A decrypted value as its column stores it.
fn plaintext_value(form: Form, plaintext: Zeroizing<Vec<u8>>) -> Option<New> {
    match form {
        Form::Text => String::from_utf8(plaintext.to_vec()).ok().map(New::Text),
        Form::Bytes => Some(New::Bytes(plaintext.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protect::crypto::MasterKey;

    const DOMAIN: &str = "public.customers.email";

    fn keyring(dir: &tempfile::TempDir) -> Keyring {
        let path = dir.path().join("keyring.toml");
        let (master, _) = MasterKey::generate().unwrap();
        Keyring::init(&path, &master, &[DOMAIN.into(), "other".into()]).unwrap();
        Keyring::load(&path, &master).unwrap()
    }

    fn encrypt_to(keyring: &Keyring, mode: Mode) -> Target {
        Target::Encrypt {
            domain: DOMAIN.into(),
            mode,
            key: keyring.current_key(DOMAIN).unwrap(),
        }
    }

    fn text(new: &New) -> &str {
        match new {
            New::Text(text) => text,
            New::Bytes(_) => panic!("bytes"),
        }
    }

    fn decrypted(keyring: &Keyring, new: &New) -> Vec<u8> {
        let envelope = match new {
            New::Text(text) => crypto::parse_text(text.as_bytes()).unwrap().unwrap(),
            New::Bytes(bytes) => parse_bytes(bytes).unwrap().unwrap(),
        };
        keyring.decrypt(DOMAIN, envelope).unwrap().to_vec()
    }

    #[test]
    fn plaintext_is_encrypted_and_current_ciphertext_kept() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = keyring(&dir);
        let target = encrypt_to(&keyring, Mode::Deterministic);
        // "PV" starts the binary magic, but a text column's envelope is `pgv1:`.
        for plaintext in ["alice@example.com", "PVC pipes", "\\x5056", ""] {
            let Verdict::Encrypt(new) =
                judge(&keyring, &target, Form::Text, Stored::Text(plaintext))
            else {
                panic!("{plaintext:?} is plaintext");
            };
            assert!(text(&new).starts_with("pgv1:"));
            assert_eq!(decrypted(&keyring, &new), plaintext.as_bytes());
            let again = judge(&keyring, &target, Form::Text, Stored::Text(text(&new)));
            assert!(matches!(again, Verdict::Keep), "{again:?}");
        }
    }

    #[test]
    fn other_modes_and_keys_are_encrypted_again() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = keyring(&dir);
        let current = keyring.current_key(DOMAIN).unwrap();
        let randomized = keyring
            .encrypt_text(DOMAIN, Mode::Randomized, b"alice")
            .unwrap();
        let target = encrypt_to(&keyring, Mode::Deterministic);
        let Verdict::ReEncrypt {
            from,
            mode_changed,
            new,
        } = judge(&keyring, &target, Form::Text, Stored::Text(&randomized))
        else {
            panic!("another mode");
        };
        assert_eq!((from, mode_changed), (current, true));
        assert_eq!(decrypted(&keyring, &new), b"alice");
        // Deterministic: the same plaintext gives the same value.
        let Verdict::Encrypt(direct) = judge(&keyring, &target, Form::Text, Stored::Text("alice"))
        else {
            panic!();
        };
        assert_eq!(new, direct);
        // A value under another key of the domain than the current one.
        let newer = KeyRef {
            id: current.id,
            version: current.version + 1,
        };
        let target = Target::Encrypt {
            domain: DOMAIN.into(),
            mode: Mode::Randomized,
            key: newer,
        };
        let verdict = judge(&keyring, &target, Form::Text, Stored::Text(&randomized));
        assert!(
            matches!(verdict, Verdict::ReEncrypt { from, mode_changed: false, .. } if from == current),
            "{verdict:?}"
        );
    }

    #[test]
    fn what_does_not_decrypt_is_undecryptable() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = keyring(&dir);
        let target = encrypt_to(&keyring, Mode::Randomized);
        let good = keyring
            .encrypt_text(DOMAIN, Mode::Randomized, b"alice")
            .unwrap();
        let mut altered = good.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let other_domain = keyring
            .encrypt_text("other", Mode::Randomized, b"alice")
            .unwrap();
        for forged in [
            "pgv1:",
            "pgv1:not base64!",
            "pgv1:UFYBAQAAAAEAAAAB",
            &altered,
            &other_domain,
        ] {
            let verdict = judge(&keyring, &target, Form::Text, Stored::Text(forged));
            assert!(
                matches!(verdict, Verdict::Undecryptable),
                "{forged}: {verdict:?}"
            );
        }
        for forged in [&b"PV"[..], b"PV\x01\x01garbage"] {
            let verdict = judge(&keyring, &target, Form::Bytes, Stored::Bytes(forged));
            assert!(matches!(verdict, Verdict::Undecryptable), "{verdict:?}");
        }
        // Undecryptable whatever the target.
        let decrypt = Target::Decrypt {
            domain: DOMAIN.into(),
        };
        assert!(matches!(
            judge(&keyring, &decrypt, Form::Text, Stored::Text(&altered)),
            Verdict::Undecryptable
        ));
    }

    #[test]
    fn bytea_values_use_the_binary_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = keyring(&dir);
        let target = encrypt_to(&keyring, Mode::Randomized);
        let Verdict::Encrypt(new) =
            judge(&keyring, &target, Form::Bytes, Stored::Bytes(&[0, 1, 2]))
        else {
            panic!();
        };
        let New::Bytes(bytes) = &new else { panic!() };
        assert!(bytes.starts_with(b"PV\x01\x01"));
        assert_eq!(decrypted(&keyring, &new), [0, 1, 2]);
        assert!(matches!(
            judge(&keyring, &target, Form::Bytes, Stored::Bytes(bytes)),
            Verdict::Keep
        ));
        let decrypt = Target::Decrypt {
            domain: DOMAIN.into(),
        };
        let Verdict::Decrypt { new, .. } =
            judge(&keyring, &decrypt, Form::Bytes, Stored::Bytes(bytes))
        else {
            panic!();
        };
        assert_eq!(new, New::Bytes(vec![0, 1, 2]));
    }

    #[test]
    fn decrypting_gives_plaintext_and_leaves_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = keyring(&dir);
        let decrypt = Target::Decrypt {
            domain: DOMAIN.into(),
        };
        let stored = keyring
            .encrypt_text(DOMAIN, Mode::Deterministic, "张伟".as_bytes())
            .unwrap();
        let Verdict::Decrypt { from, new } =
            judge(&keyring, &decrypt, Form::Text, Stored::Text(&stored))
        else {
            panic!();
        };
        assert_eq!(from, keyring.current_key(DOMAIN).unwrap());
        assert_eq!(new, New::Text("张伟".into()));
        assert!(matches!(
            judge(&keyring, &decrypt, Form::Text, Stored::Text("张伟")),
            Verdict::Keep
        ));
        // Bytes that are not UTF-8 cannot go back into a text column.
        let binary = keyring
            .encrypt_text(DOMAIN, Mode::Randomized, &[0xff, 0xfe])
            .unwrap();
        assert!(matches!(
            judge(&keyring, &decrypt, Form::Text, Stored::Text(&binary)),
            Verdict::Unwritable
        ));
    }
}
