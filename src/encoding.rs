//! Client encodings. CRMs in mainland China and Hong Kong often run with
//! `client_encoding` GBK, GB18030 or BIG5. pgveil normalizes plaintext to
//! UTF-8 before it encrypts it, and converts what it reveals back to each
//! reader's encoding, so a GBK writer and a UTF-8 reader see the same
//! name, and deterministic ciphertexts match whoever wrote them.
//!
//! The session's encoding is the one the server reports in ParameterStatus
//! (`client_encoding`), which follows `SET client_encoding` too.
//!
//! **Characters.** In SJIS, BIG5, GBK, GB18030 and UHC (the encodings
//! PostgreSQL accepts only from clients) a byte after the first of a
//! multibyte character may be an ASCII byte: 「許」 is `B3 5C` in BIG5,
//! 「乗」 `81 5C` in GBK, and `5C` is a backslash. Code that looks for
//! delimiters, quotes or escapes in client bytes (COPY data) must step over
//! whole characters, as PostgreSQL does; [`ClientEncoding::step`] tells it
//! how long each one is, counting as PostgreSQL's `pg_encoding_mblen` does
//! and checking the bytes after the first against the encoding's ranges.
//! In the other encodings every byte of a multibyte character has its high
//! bit set, so bytes can be looked at one by one.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// How the characters of an encoding are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chars {
    /// No byte of a multibyte character is ASCII: UTF-8, the EUC
    /// encodings, the single-byte ones.
    AsciiSafe,
    Gbk,
    Gb18030,
    Big5,
    Sjis,
    Uhc,
    /// An encoding whose multibyte characters may hold ASCII bytes, which
    /// pgveil cannot read (JOHAB).
    Unsupported,
}

/// A client encoding pgveil can convert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientEncoding {
    encoding: &'static Encoding,
    chars: Chars,
}

impl Default for ClientEncoding {
    fn default() -> Self {
        ClientEncoding {
            encoding: encoding_rs::UTF_8,
            chars: Chars::AsciiSafe,
        }
    }
}

/// What starts at a position of client bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A byte to look at on its own: ASCII, or any byte of an encoding
    /// whose multibyte characters hold no ASCII byte.
    Byte(u8),
    /// A multibyte character of this many bytes, none of which may be
    /// taken for a delimiter, quote or escape.
    Char(usize),
    /// The start of a character whose remaining bytes have not arrived.
    Incomplete,
    /// Bytes that are not a character of the encoding.
    Invalid,
}

impl ClientEncoding {
    /// The encoding PostgreSQL calls `name`. Names pgveil cannot convert
    /// are treated as UTF-8: text that is not valid UTF-8 is then refused
    /// rather than misread.
    pub fn from_pg_name(name: &str) -> Self {
        let (encoding, chars) = match name.to_ascii_uppercase().as_str() {
            "GBK" | "WIN936" | "CP936" => (encoding_rs::GBK, Chars::Gbk),
            "EUC_CN" => (encoding_rs::GBK, Chars::AsciiSafe),
            "GB18030" => (encoding_rs::GB18030, Chars::Gb18030),
            "BIG5" | "WIN950" | "CP950" => (encoding_rs::BIG5, Chars::Big5),
            "SJIS" | "SHIFT_JIS" | "SHIFT_JIS_2004" | "WIN932" | "MSKANJI" => {
                (encoding_rs::SHIFT_JIS, Chars::Sjis)
            }
            "EUC_JP" => (encoding_rs::EUC_JP, Chars::AsciiSafe),
            "EUC_KR" => (encoding_rs::EUC_KR, Chars::AsciiSafe),
            "UHC" | "WIN949" => (encoding_rs::EUC_KR, Chars::Uhc),
            "LATIN1" | "WIN1252" => (encoding_rs::WINDOWS_1252, Chars::AsciiSafe),
            "JOHAB" => (encoding_rs::UTF_8, Chars::Unsupported),
            _ => (encoding_rs::UTF_8, Chars::AsciiSafe),
        };
        ClientEncoding { encoding, chars }
    }

    /// Client bytes as UTF-8 text; `None` if they are not valid in the
    /// encoding.
    pub fn decode<'b>(&self, bytes: &'b [u8]) -> Option<Cow<'b, str>> {
        self.encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
    }

    /// UTF-8 text in the client's encoding. A character the encoding
    /// cannot represent becomes `?`.
    pub fn encode<'t>(&self, text: &'t str) -> Cow<'t, [u8]> {
        if self.encoding == encoding_rs::UTF_8 {
            return Cow::Borrowed(text.as_bytes());
        }
        let (bytes, _, unmappable) = self.encoding.encode(text);
        if !unmappable {
            return bytes;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let (bytes, _, unmappable) = self.encoding.encode(c.encode_utf8(&mut buf));
            out.extend_from_slice(if unmappable { b"?" } else { &bytes });
        }
        Cow::Owned(out)
    }

    /// Whether pgveil can find characters in this encoding's bytes: false
    /// for an encoding whose multibyte characters may hold ASCII bytes and
    /// that pgveil does not know.
    pub fn delimits_characters(&self) -> bool {
        self.chars != Chars::Unsupported
    }

    /// What starts at `bytes[0]` (`bytes` must not be empty).
    pub fn step(&self, bytes: &[u8]) -> Step {
        let first = bytes[0];
        if first < 0x80 {
            return Step::Byte(first);
        }
        let second = |range: fn(u8) -> bool| match bytes.get(1) {
            None => Step::Incomplete,
            Some(&b) if range(b) => Step::Char(2),
            Some(_) => Step::Invalid,
        };
        match self.chars {
            Chars::AsciiSafe | Chars::Unsupported => Step::Byte(first),
            _ if first == 0x80 || first == 0xff => Step::Invalid,
            Chars::Gbk => second(|b| matches!(b, 0x40..=0x7e | 0x80..=0xfe)),
            Chars::Big5 => second(|b| matches!(b, 0x40..=0x7e | 0xa1..=0xfe)),
            Chars::Uhc => second(|b| matches!(b, 0x41..=0x5a | 0x61..=0x7a | 0x81..=0xfe)),
            Chars::Sjis => match first {
                0xa1..=0xdf => Step::Char(1),
                0x81..=0x9f | 0xe0..=0xfc => second(|b| matches!(b, 0x40..=0x7e | 0x80..=0xfc)),
                _ => Step::Invalid,
            },
            Chars::Gb18030 => match bytes.get(1) {
                Some(0x30..=0x39) => gb18030_four(bytes),
                _ => second(|b| matches!(b, 0x40..=0x7e | 0x80..=0xfe)),
            },
        }
    }
}

/// A four-byte GB18030 character: lead, digit, lead, digit.
fn gb18030_four(bytes: &[u8]) -> Step {
    match bytes.get(2..4) {
        None => match bytes.get(2) {
            None | Some(0x81..=0xfe) => Step::Incomplete,
            Some(_) => Step::Invalid,
        },
        Some([0x81..=0xfe, 0x30..=0x39]) => Step::Char(4),
        Some(_) => Step::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_and_big5_round_trip() {
        for name in ["GBK", "gb18030", "BIG5"] {
            let enc = ClientEncoding::from_pg_name(name);
            let encoded = enc.encode("張偉 张伟 Zhang");
            assert_ne!(&*encoded, "張偉 张伟 Zhang".as_bytes(), "{name}");
            if name != "BIG5" {
                assert_eq!(enc.decode(&encoded).unwrap(), "張偉 张伟 Zhang");
            }
        }
        let big5 = ClientEncoding::from_pg_name("BIG5");
        assert_eq!(big5.decode(&big5.encode("張偉")).unwrap(), "張偉");
    }

    #[test]
    fn characters_whose_trail_bytes_are_ascii() {
        let gbk = ClientEncoding::from_pg_name("GBK");
        assert_eq!(&*gbk.encode("乗"), b"\x81\x5c");
        assert_eq!(gbk.step(b"\x81\x5c\t"), Step::Char(2));
        assert_eq!(gbk.step(b"\\x"), Step::Byte(b'\\'));
        assert_eq!(gbk.step(b"\x81"), Step::Incomplete);
        assert_eq!(gbk.step(b"\x81\t"), Step::Invalid);
        assert_eq!(gbk.step(b"\x80\x40"), Step::Invalid);
        let big5 = ClientEncoding::from_pg_name("BIG5");
        assert_eq!(&*big5.encode("許"), b"\xb3\x5c");
        assert_eq!(big5.step(b"\xb3\x5c"), Step::Char(2));
        assert_eq!(big5.step(b"\xb3\x80"), Step::Invalid);
        let gb18030 = ClientEncoding::from_pg_name("GB18030");
        let emoji = gb18030.encode("😀");
        assert_eq!(gb18030.step(&emoji), Step::Char(4));
        assert_eq!(gb18030.step(&emoji[..3]), Step::Incomplete);
        assert_eq!(gb18030.step(b"\x94\x39\x20"), Step::Invalid);
        assert_eq!(gb18030.step(&gb18030.encode("乗")), Step::Char(2));
        let sjis = ClientEncoding::from_pg_name("SJIS");
        assert_eq!(sjis.step(&sjis.encode("ソ")), Step::Char(2));
        assert_eq!(sjis.step(&sjis.encode("ｿ")), Step::Char(1));
        let uhc = ClientEncoding::from_pg_name("UHC");
        assert_eq!(uhc.step(&uhc.encode("갂")), Step::Char(2));
        // Encodings whose multibyte characters hold no ASCII byte.
        for name in ["UTF8", "EUC_JP", "EUC_KR", "EUC_CN", "LATIN1"] {
            let enc = ClientEncoding::from_pg_name(name);
            assert_eq!(enc.step(b"\xb3\x5c"), Step::Byte(0xb3), "{name}");
            assert!(enc.delimits_characters());
        }
        assert!(!ClientEncoding::from_pg_name("JOHAB").delimits_characters());
    }

    #[test]
    fn invalid_bytes_and_unmappable_characters() {
        let utf8 = ClientEncoding::default();
        assert!(utf8.decode(b"\xff\xfe").is_none());
        let latin1 = ClientEncoding::from_pg_name("LATIN1");
        assert_eq!(&*latin1.encode("a张b"), b"a?b");
    }
}
