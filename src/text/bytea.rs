//! `bytea` values as PostgreSQL writes them in text.
//!
//! PostgreSQL reads two text forms of a `bytea` (`byteain`): the hex form,
//! `\x` followed by pairs of hex digits in either case, with whitespace
//! allowed between the pairs, and the escape form, where a byte is itself
//! except that `\\` stands for a backslash and `\ooo` (first digit 0 to 3)
//! for the byte with that octal value. It writes (`byteaout`) the hex form
//! in lowercase, or with `bytea_output = 'escape'` the escape form, in
//! which every byte outside printable ASCII and the backslash is `\ooo`.
//!
//! pgveil decodes what clients write for a protected `bytea` column to its
//! bytes, so that the same bytes encrypt the same whatever form they were
//! written in, and writes revealed bytes in the form the server used.

/// The bytes a `bytea` text input stands for; `None` when PostgreSQL would
/// reject it.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    match text.strip_prefix(b"\\x") {
        Some(digits) => decode_hex(digits),
        None => decode_escape(text),
    }
}

/// The hex form: `\x` and two lowercase hex digits per byte.
pub fn hex(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_hex(bytes, &mut out);
    out
}

/// Appends the hex form of `bytes` to `out`.
pub(crate) fn write_hex(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + 2 + 2 * bytes.len(), 0);
    out[start..start + 2].copy_from_slice(b"\\x");
    hex::encode_to_slice(bytes, &mut out[start + 2..]).expect("sized for the hex digits");
}

/// The escape form, as `byteaout` writes it.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_escape(bytes, &mut out);
    out
}

/// Appends the escape form of `bytes` to `out`.
pub(crate) fn write_escape(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + bytes.len() / 4);
    for &byte in bytes {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(byte),
            _ => out.extend_from_slice(&[
                b'\\',
                b'0' + (byte >> 6),
                b'0' + ((byte >> 3) & 7),
                b'0' + (byte & 7),
            ]),
        }
    }
}

fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(digits.len() / 2);
    let mut rest = digits;
    while let Some((&first, tail)) = rest.split_first() {
        if matches!(first, b' ' | b'\n' | b'\t' | b'\r') {
            rest = tail;
            continue;
        }
        let (&second, tail) = tail.split_first()?;
        out.push((hex_value(first)? << 4) | hex_value(second)?);
        rest = tail;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

fn decode_escape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let (byte, len) = escaped_byte(rest)?;
        out.push(byte);
        rest = &rest[len..];
    }
    Some(out)
}

/// Fills `out` with the first bytes an escape-form text stands for;
/// returns how many bytes of the text they take, or `None` if the text
/// ends first or is not valid escape input there.
pub(crate) fn decode_escape_prefix(text: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut at = 0;
    for byte in out {
        let (decoded, len) = escaped_byte(text.get(at..)?)?;
        *byte = decoded;
        at += len;
    }
    Some(at)
}

/// The first byte an escape-form text stands for, and its length in the
/// text.
fn escaped_byte(text: &[u8]) -> Option<(u8, usize)> {
    match text {
        [b'\\', b'\\', ..] => Some((b'\\', 2)),
        [b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] => {
            Some((((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'), 4))
        }
        [b'\\', ..] | [] => None,
        [byte, ..] => Some((*byte, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_input_forms_as_postgresql_does() {
        assert_eq!(decode(b"\\x0102aBfF").unwrap(), [1, 2, 0xab, 0xff]);
        assert_eq!(decode(b"\\x 01\n02\t").unwrap(), [1, 2]);
        assert_eq!(decode(b"\\x").unwrap(), b"");
        assert_eq!(decode(b"ab\\\\c\\001\\377").unwrap(), b"ab\\c\x01\xff");
        assert_eq!(decode("é".as_bytes()).unwrap(), "é".as_bytes());
        assert_eq!(decode(b"").unwrap(), b"");
        for bad in [
            &b"\\x0"[..],
            b"\\x0 1",
            b"\\xzz",
            b"\\",
            b"a\\b",
            b"\\400",
            b"\\01",
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn writes_what_byteaout_writes_and_reads_it_back() {
        let bytes = b"PV\x01\x02 \"x\\\x7f\xff";
        assert_eq!(hex(bytes), b"\\x505601022022785c7fff");
        assert_eq!(escape(bytes), b"PV\\001\\002 \"x\\\\\\177\\377");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&hex(&all)).unwrap(), all);
        assert_eq!(decode(&escape(&all)).unwrap(), all);
    }

    #[test]
    fn an_escape_prefix_is_decoded_with_its_length() {
        let mut header = [0; 4];
        assert_eq!(
            decode_escape_prefix(b"PV\\001\\\\tail", &mut header),
            Some(8)
        );
        assert_eq!(header, *b"PV\x01\\");
        assert_eq!(decode_escape_prefix(b"PV\\0", &mut header), None);
        assert_eq!(decode_escape_prefix(b"PV", &mut header), None);
    }
}
