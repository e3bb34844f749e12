//! The envelope: pgveil's self-describing ciphertext, in its binary form
//! (`bytea` columns) and its text forms (text columns, and `bytea` printed
//! in text format, hex or escape). The layout is in the [`crate::protect::crypto`]
//! module doc.
//!
//! The recognition functions run on every field of every result row: on a
//! value that is not an envelope they compare a prefix and return.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{CryptoError, KeyRef, Mode};

/// The first bytes of every binary envelope.
pub(crate) const MAGIC: &[u8; 2] = b"PV";
/// The envelope format this pgveil writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// The prefix of an envelope stored in a text column.
pub(crate) const TEXT_PREFIX: &str = "pgv1:";
/// How a `bytea` envelope starts when PostgreSQL prints it as text:
/// `\x` followed by the hex of [`MAGIC`].
const BYTEA_HEX_PREFIX: &[u8] = b"\\x5056";
/// How it starts in the escape form (`bytea_output = 'escape'`): the
/// magic, then the format version in octal.
const BYTEA_ESCAPE_PREFIX: &[u8] = b"PV\\001";

/// Magic, format version, mode, key id and key version.
pub(crate) const HEADER_LEN: usize = 12;
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag and AES-SIV synthetic IV length.
pub(crate) const TAG_LEN: usize = 16;

/// A parsed envelope: its header is valid and its body long enough for its
/// mode. Whether it decrypts is for [`crate::protect::keyring::Keyring::decrypt`].
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
    mode: Mode,
    key_ref: KeyRef,
}

impl Envelope {
    /// The header of an envelope with this mode and key.
    pub(crate) fn header(mode: Mode, key_ref: KeyRef) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        header[..2].copy_from_slice(MAGIC);
        header[2] = FORMAT_VERSION;
        header[3] = mode.to_byte();
        header[4..8].copy_from_slice(&key_ref.id.to_be_bytes());
        header[8..].copy_from_slice(&key_ref.version.to_be_bytes());
        header
    }

    /// Wraps bytes that start with `header(mode, key_ref)`, as encryption
    /// writes them.
    pub(crate) fn from_sealed(bytes: Vec<u8>, mode: Mode, key_ref: KeyRef) -> Self {
        debug_assert_eq!(bytes[..HEADER_LEN], Self::header(mode, key_ref));
        Self {
            bytes,
            mode,
            key_ref,
        }
    }

    /// Parses a binary envelope.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, CryptoError> {
        let (mode, key_ref) = read_header(&bytes)?;
        if bytes.len() < min_len(mode) {
            return Err(CryptoError::Truncated);
        }
        Ok(Self {
            bytes,
            mode,
            key_ref,
        })
    }

    /// The mode the value was encrypted in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The key the value was encrypted with.
    pub(crate) fn key_ref(&self) -> KeyRef {
        self.key_ref
    }

    /// The binary form, for `bytea` columns.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The binary form, for `bytea` columns.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The text form, for text columns: `pgv1:` + URL-safe base64.
    pub(crate) fn to_text(&self) -> String {
        let mut text = String::with_capacity(TEXT_PREFIX.len() + self.bytes.len() * 4 / 3 + 3);
        text.push_str(TEXT_PREFIX);
        base64_simd::URL_SAFE_NO_PAD.encode_append(&self.bytes, &mut text);
        text
    }

    /// The binary form as PostgreSQL writes `bytea` in text format:
    /// `\x` + lowercase hex.
    #[cfg(test)]
    pub(crate) fn to_bytea_text(&self) -> String {
        format!("\\x{}", hex::encode(&self.bytes))
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("mode", &self.mode)
            .field("key_ref", &self.key_ref)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The mode and key a binary envelope's header names.
fn read_header(bytes: &[u8]) -> Result<(Mode, KeyRef), CryptoError> {
    if !bytes.starts_with(MAGIC) {
        return Err(if MAGIC.starts_with(bytes) {
            CryptoError::Truncated
        } else {
            CryptoError::Magic
        });
    }
    let &version = bytes.get(2).ok_or(CryptoError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(CryptoError::Version(version));
    }
    let &mode_byte = bytes.get(3).ok_or(CryptoError::Truncated)?;
    let mode = Mode::from_byte(mode_byte).ok_or(CryptoError::Mode(mode_byte))?;
    let header = bytes
        .first_chunk::<HEADER_LEN>()
        .ok_or(CryptoError::Truncated)?;
    let be_u32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
    let key_ref = KeyRef {
        id: be_u32(4),
        version: be_u32(8),
    };
    Ok((mode, key_ref))
}

/// The bytes of a field that encode its envelope's header, in whichever
/// form the field is: the same for every value under one key in one form,
/// so a decision made for the key can be found again by comparing them,
/// without decoding. `None` if the field does not start like an envelope
/// or is too short to hold a header.
pub(crate) fn encoded_header(field: &[u8]) -> Option<&[u8]> {
    let len = match Form::of(field)? {
        Form::Text => TEXT_PREFIX.len() + HEADER_LEN / 3 * 4,
        Form::ByteaHex => 2 + 2 * HEADER_LEN,
        Form::ByteaEscape => crate::text::bytea::decode_escape_prefix(field, &mut [0; HEADER_LEN])?,
        Form::Binary => HEADER_LEN,
    };
    field.get(..len)
}

/// The first four bytes of every binary envelope of `mode`: magic, format
/// version and mode. The database's ciphertext guards on `bytea` columns
/// compare them (see [`crate::protect::guard`]).
pub(crate) fn mode_prefix(mode: Mode) -> [u8; 4] {
    [MAGIC[0], MAGIC[1], FORMAT_VERSION, mode.to_byte()]
}

/// The length of the shortest binary envelope of `mode` (of an empty
/// plaintext): the header, and the nonce and tag or the synthetic IV.
pub(crate) fn min_len(mode: Mode) -> usize {
    HEADER_LEN
        + match mode {
            Mode::Randomized => NONCE_LEN + TAG_LEN,
            Mode::Deterministic => TAG_LEN,
        }
}

/// A regular expression (POSIX, as PostgreSQL's `~` reads it) that the text
/// form of every envelope of `mode` matches: [`text_pattern_head`], then
/// URL-safe base64 to the end. With [`text_min_len`] it makes the
/// database's ciphertext guards on text columns.
///
/// The length is checked apart, not with a bound in the expression
/// (`[A-Za-z0-9_-]{48,}`, as guards before 2026-12 wrote it): PostgreSQL
/// expands a bound into as many copies of its states, and such a check
/// took 19 µs a value against 1.6 µs for this one with the length check,
/// which made the guards cost more than anything else in an INSERT of
/// encrypted values (see BENCHMARKS.md).
pub(crate) fn text_pattern(mode: Mode) -> String {
    format!("{}[A-Za-z0-9_-]*$", text_pattern_head(mode))
}

/// How [`text_pattern`] starts, in guards of every generation:
/// [`TEXT_PREFIX`], the base64 of [`mode_prefix`] as far as it fills whole
/// characters (five, 30 bits), then the sixth character, which holds the
/// mode's last two bits and the first four of the key id.
pub(crate) fn text_pattern_head(mode: Mode) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = u32::from_be_bytes(mode_prefix(mode));
    let whole: String = (0..5)
        .map(|i| char::from(ALPHABET[((bits >> (26 - 6 * i)) & 63) as usize]))
        .collect();
    let sixth = ((bits & 3) << 4) as usize;
    let sixth = std::str::from_utf8(&ALPHABET[sixth..sixth + 16]).unwrap_or_default();
    format!("^{TEXT_PREFIX}{whole}[{sixth}]")
}

/// The length of the text form of the shortest envelope of `mode`
/// ([`min_len`]): [`TEXT_PREFIX`] and unpadded base64. Every character of
/// a text form is ASCII, so it is also its length in bytes.
pub(crate) fn text_min_len(mode: Mode) -> usize {
    TEXT_PREFIX.len() + (min_len(mode) * 4).div_ceil(3)
}

/// The key a field's envelope names, in any of its forms (see [`Form`]),
/// read from the header alone: the decision of what a reader sees needs
/// no more, and a value the reader may not see is never decoded further.
/// `None` if the field does not start like an envelope.
pub(crate) fn key_of(field: &[u8]) -> Option<KeyRef> {
    header_of(field).map(|(_, key)| key)
}

/// The mode and key a field's envelope names, from its header alone, as
/// [`key_of`] reads it: what `pgveil policy check` counts per column.
pub(crate) fn header_of(field: &[u8]) -> Option<(Mode, KeyRef)> {
    let mut header = [0u8; HEADER_LEN];
    match Form::of(field)? {
        Form::Text => {
            // 16 base64 characters are exactly the 12 header bytes.
            let chars = field.get(TEXT_PREFIX.len()..TEXT_PREFIX.len() + HEADER_LEN / 3 * 4)?;
            URL_SAFE_NO_PAD.decode_slice(chars, &mut header).ok()?;
        }
        Form::ByteaHex => {
            hex::decode_to_slice(field.get(2..2 + 2 * HEADER_LEN)?, &mut header).ok()?;
        }
        Form::ByteaEscape => {
            crate::text::bytea::decode_escape_prefix(field, &mut header)?;
        }
        Form::Binary => header = *field.first_chunk()?,
    }
    read_header(&header).ok()
}

/// How an envelope is written in a result field: which column type holds
/// it and in which format the server sent it. A revealed value is written
/// in the same form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// `pgv1:` + base64: a text column, in text or binary format.
    Text,
    /// `\x` + hex: a `bytea` column in text format.
    ByteaHex,
    /// The escape form: a `bytea` column in text format, with
    /// `bytea_output = 'escape'`.
    ByteaEscape,
    /// The envelope's own bytes: a `bytea` column in binary format.
    Binary,
}

impl Form {
    /// The form a field would have if it were an envelope; `None` when it
    /// does not start like one. Compares at most three prefixes.
    pub(crate) fn of(field: &[u8]) -> Option<Form> {
        if field.starts_with(TEXT_PREFIX.as_bytes()) {
            Some(Form::Text)
        } else if field.starts_with(BYTEA_HEX_PREFIX) {
            Some(Form::ByteaHex)
        } else if field.starts_with(MAGIC) {
            Some(if field.starts_with(BYTEA_ESCAPE_PREFIX) {
                Form::ByteaEscape
            } else {
                Form::Binary
            })
        } else {
            None
        }
    }
}

/// Whether a text-format field starts like an envelope: `pgv1:` (text
/// column) or `\x5056` or `PV\001` (`bytea` column). Only compares
/// prefixes.
pub(crate) fn looks_encrypted_text(field: &[u8]) -> bool {
    Form::of(field).is_some_and(|form| form != Form::Binary)
}

/// Parses a field in any form: `Ok(None)` if it does not start like an
/// envelope (see [`Form::of`]), an error if it does but is not a valid
/// one. A text envelope may be followed by spaces, as a `char(n)` column
/// pads it.
pub(crate) fn parse_field(field: &[u8]) -> Result<Option<(Envelope, Form)>, CryptoError> {
    parse_field_into(field, Vec::new())
}

/// [`parse_field`], decoding into `buf` (emptied first), so that a caller
/// reading many values can reuse one allocation.
pub(crate) fn parse_field_into(
    field: &[u8],
    mut buf: Vec<u8>,
) -> Result<Option<(Envelope, Form)>, CryptoError> {
    let Some(form) = Form::of(field) else {
        return Ok(None);
    };
    buf.clear();
    match form {
        Form::Text => {
            let base64 = field[TEXT_PREFIX.len()..].trim_ascii_end();
            // `base64-simd`, twice as fast as `base64` on an envelope's
            // length, and as strict: no padding, no stray bits.
            base64_simd::URL_SAFE_NO_PAD
                .decode_append(base64, &mut buf)
                .map_err(|_| CryptoError::Encoding("base64"))?
        }
        Form::ByteaHex => {
            let hex = &field[2..];
            buf.resize(hex.len() / 2, 0);
            if hex::decode_to_slice(hex, &mut buf).is_err() {
                return Err(CryptoError::Encoding("hex"));
            }
        }
        Form::ByteaEscape => {
            buf = crate::text::bytea::decode(field).ok_or(CryptoError::Encoding("bytea escape"))?
        }
        Form::Binary => buf.extend_from_slice(field),
    }
    Envelope::from_bytes(buf).map(|envelope| Some((envelope, form)))
}

/// Parses a text-format field (see [`looks_encrypted_text`]) as
/// [`parse_field`] does.
pub fn parse_text(field: &[u8]) -> Result<Option<Envelope>, CryptoError> {
    if !looks_encrypted_text(field) {
        return Ok(None);
    }
    parse_field(field).map(|parsed| parsed.map(|(envelope, _)| envelope))
}

/// Parses a binary-format `bytea` field: `Ok(None)` if it does not start
/// with [`MAGIC`], an error if it does but is not a valid envelope.
pub fn parse_bytes(field: &[u8]) -> Result<Option<Envelope>, CryptoError> {
    if !field.starts_with(MAGIC) {
        return Ok(None);
    }
    Envelope::from_bytes(field.to_vec()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: KeyRef = KeyRef { id: 7, version: 3 };

    fn sample(mode: Mode, body_len: usize) -> Vec<u8> {
        let mut bytes = Envelope::header(mode, KEY).to_vec();
        bytes.extend((0..body_len).map(|i| i as u8));
        bytes
    }

    #[test]
    fn header_layout() {
        assert_eq!(
            Envelope::header(Mode::Deterministic, KEY),
            [b'P', b'V', 1, 2, 0, 0, 0, 7, 0, 0, 0, 3]
        );
    }

    #[test]
    fn text_patterns_pin_the_header_and_the_mode() {
        let randomized = text_pattern(Mode::Randomized);
        let deterministic = text_pattern(Mode::Deterministic);
        assert_eq!(randomized, "^pgv1:UFYBA[QRSTUVWXYZabcdef][A-Za-z0-9_-]*$");
        assert_eq!(
            deterministic,
            "^pgv1:UFYBA[ghijklmnopqrstuv][A-Za-z0-9_-]*$"
        );
        assert!(randomized.starts_with(&text_pattern_head(Mode::Randomized)));
        // The shortest envelopes are exactly as long as the minimum.
        for mode in [Mode::Randomized, Mode::Deterministic] {
            let mut bytes = Envelope::header(mode, KeyRef { id: 3, version: 1 }).to_vec();
            bytes.resize(min_len(mode), 0);
            let text = Envelope::from_bytes(bytes).unwrap().to_text();
            assert_eq!(text.len(), text_min_len(mode));
        }
        assert_eq!(
            (
                text_min_len(Mode::Randomized),
                text_min_len(Mode::Deterministic)
            ),
            (59, 43)
        );
        for (mode, pattern) in [
            (Mode::Randomized, randomized),
            (Mode::Deterministic, deterministic),
        ] {
            let class = &pattern[pattern.find('[').unwrap() + 1..pattern.find(']').unwrap()];
            for id in [0, 7, 0x1000_0000, 0xf000_0000, u32::MAX] {
                let mut bytes = Envelope::header(mode, KeyRef { id, version: 1 }).to_vec();
                bytes.extend([0; 28]);
                let text = Envelope::from_bytes(bytes).unwrap().to_text();
                assert!(text.starts_with("pgv1:UFYBA"), "{text}");
                assert!(class.contains(&text[10..11]), "{text} {pattern}");
            }
            assert_eq!(mode_prefix(mode)[..3], *b"PV\x01");
        }
    }

    #[test]
    fn all_forms_parse_to_the_same_envelope() {
        let env = Envelope::from_bytes(sample(Mode::Randomized, 40)).unwrap();
        assert_eq!((env.mode(), env.key_ref()), (Mode::Randomized, KEY));
        let text = env.to_text();
        assert!(text.starts_with("pgv1:") && text.is_ascii());
        assert!(!text.contains('='));
        let hex_form = env.to_bytea_text();
        assert!(hex_form.starts_with("\\x505601"));
        let escape_form = crate::text::bytea::escape(env.as_bytes());
        assert!(escape_form.starts_with(b"PV\\001\\001"));
        let padded = format!("{text}   ");
        for form in [
            text.as_bytes(),
            hex_form.as_bytes(),
            &escape_form,
            padded.as_bytes(),
        ] {
            assert!(looks_encrypted_text(form));
            assert_eq!(parse_text(form).unwrap(), Some(env.clone()));
        }
        assert_eq!(parse_bytes(env.as_bytes()).unwrap(), Some(env.clone()));
        let forms = [
            (text.as_bytes(), Form::Text),
            (hex_form.as_bytes(), Form::ByteaHex),
            (&escape_form, Form::ByteaEscape),
            (env.as_bytes(), Form::Binary),
        ];
        for (field, form) in forms {
            assert_eq!(parse_field(field).unwrap(), Some((env.clone(), form)));
        }
        assert!(!looks_encrypted_text(env.as_bytes()), "binary is not text");
    }

    #[test]
    fn the_key_is_read_from_the_header_of_every_form() {
        let env = Envelope::from_bytes(sample(Mode::Deterministic, 20)).unwrap();
        let text = env.to_text();
        let hex_form = env.to_bytea_text();
        let other = Envelope::from_bytes(sample(Mode::Deterministic, 30)).unwrap();
        let (other_text, other_hex) = (other.to_text(), other.to_bytea_text());
        let escape_form = crate::text::bytea::escape(env.as_bytes());
        let other_escape = crate::text::bytea::escape(other.as_bytes());
        let forms = [
            (text.as_bytes(), other_text.as_bytes()),
            (hex_form.as_bytes(), other_hex.as_bytes()),
            (&escape_form[..], &other_escape[..]),
            (env.as_bytes(), other.as_bytes()),
        ];
        for (form, same_key) in forms {
            assert_eq!(key_of(form), Some(KEY));
            assert_eq!(encoded_header(form), encoded_header(same_key));
            assert_ne!(encoded_header(form), None);
        }
        let mut bad_version = sample(Mode::Randomized, 40);
        bad_version[2] = 9;
        let headless: [&[u8]; 5] = [
            b"pgv1:not-really",
            b"pgv1:UFY",
            b"\\x5056",
            b"PV\x01",
            &bad_version,
        ];
        for field in headless {
            assert_eq!(key_of(field), None, "{field:?}");
        }
    }

    #[test]
    fn ordinary_values_are_not_envelopes() {
        for field in [
            &b""[..],
            b"hello",
            b"pgv1",
            b"PGV1:abc",
            b"\\x",
            b"\\x4142",
            "张伟".as_bytes(),
            b"alice@example.com",
        ] {
            assert!(!looks_encrypted_text(field));
            assert_eq!(parse_text(field).unwrap(), None);
            assert_eq!(key_of(field), None);
        }
        assert_eq!(parse_bytes(b"\x00\x01binary").unwrap(), None);
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        let text = |bytes: &[u8]| format!("pgv1:{}", URL_SAFE_NO_PAD.encode(bytes));
        let good = sample(Mode::Randomized, NONCE_LEN + TAG_LEN);
        let mut bad_magic = good.clone();
        bad_magic[1] = b'X';
        let mut bad_version = good.clone();
        bad_version[2] = 2;
        let mut bad_mode = good.clone();
        bad_mode[3] = 9;
        let cases: Vec<(String, &str)> = vec![
            ("pgv1:!!!".into(), "base64"),
            ("pgv1:QUJD=".into(), "base64"),
            ("\\x5056zz".into(), "hex"),
            ("\\x50560".into(), "hex"),
            (text(b""), "truncated"),
            (text(b"P"), "truncated"),
            (text(&good[..good.len() - 1]), "truncated"),
            (text(&good[..HEADER_LEN]), "truncated"),
            (text(&good[..3]), "truncated"),
            (text(&bad_magic), "magic"),
            (text(&bad_version), "version 2"),
            (text(&bad_mode), "mode byte 9"),
        ];
        for (field, expected) in cases {
            let err = parse_text(field.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{field}: {err}");
        }
        assert!(Envelope::from_bytes(sample(Mode::Deterministic, TAG_LEN)).is_ok());
        assert!(Envelope::from_bytes(sample(Mode::Deterministic, TAG_LEN - 1)).is_err());
        assert!(parse_bytes(b"PV").is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = sample(Mode::Randomized, NONCE_LEN + TAG_LEN);
        for len in 0..good.len() {
            assert!(Envelope::from_bytes(good[..len].to_vec()).is_err(), "{len}");
        }
    }
}
