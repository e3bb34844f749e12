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
    /// EUC_CN: its bytes as in [`Chars::AsciiSafe`], read with GBK's
    /// table but for [`EUC_CN_DIFFER`].
    EucCn,
    /// An encoding pgveil cannot read (JOHAB, whose multibyte characters
    /// may hold ASCII bytes, MULE_INTERNAL, EUC_TW, names it does not know).
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

/// The BIG5 characters that encoding_rs (the WHATWG Big5 index, with
/// HKSCS) and PostgreSQL's BIG5 read as the same character, as ranges of
/// codes (lead byte, trail byte) whose valid codes all agree. Outside
/// them the two disagree (267 codes, such as `C7 B9`, ソ to one and Л to
/// the other, or `A1 45`) or PostgreSQL refuses the code (4,877 HKSCS
/// codes): pgveil then refuses the text, as unreadable, rather than
/// encrypt another character than the server would store. Measured
/// against PostgreSQL 15's `convert_from(..., 'BIG5')` over every code.
const BIG5_AGREED: &[(u16, u16)] = &[
    (0xa140, 0xa144),
    (0xa146, 0xa14d),
    (0xa14f, 0xa159),
    (0xa15b, 0xa1c1),
    (0xa1c4, 0xa1c4),
    (0xa1c6, 0xa1e2),
    (0xa1e4, 0xa1f1),
    (0xa1f4, 0xa1fd),
    (0xa243, 0xa243),
    (0xa245, 0xa245),
    (0xa248, 0xa2cb),
    (0xa2cd, 0xa2cd),
    (0xa2cf, 0xa3bf),
    (0xa440, 0xc67e),
    (0xc940, 0xf9dc),
];

/// The EUC_CN codes that encoding_rs's GBK reads as other characters
/// than PostgreSQL's EUC_CN (`A1 A4`: · and ・, `A1 AA`: — and ―).
const EUC_CN_DIFFER: &[u16] = &[0xa1a4, 0xa1aa];

/// The two-byte GB18030 codes that encoding_rs (GB18030-2022, as WHATWG
/// reads it) and PostgreSQL 15 (GB18030-2005) read as other characters:
/// vertical forms, a few ideographs and their private-use places.
const GB18030_DIFFER: &[u16] = &[
    0xa3a0, 0xa6d9, 0xa6da, 0xa6db, 0xa6dc, 0xa6dd, 0xa6de, 0xa6df, 0xa6ec, 0xa6ed, 0xa6f3, 0xa8bc,
    0xfe59, 0xfe61, 0xfe66, 0xfe67, 0xfe6d, 0xfe7e, 0xfe90, 0xfea0,
];

/// Whether no two-byte character of `bytes` is in `codes`; with
/// `four_byte`, GB18030's four-byte sequences are stepped over whole.
fn none_of(bytes: &[u8], codes: &[u16], four_byte: bool) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] < 0x80 {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            None => return true,
            Some(b'0'..=b'9') if four_byte => i += 4,
            Some(&trail) => {
                if codes.contains(&u16::from_be_bytes([bytes[i], trail])) {
                    return false;
                }
                i += 2;
            }
        }
    }
    true
}

/// Whether every two-byte character of BIG5 `bytes` is one PostgreSQL
/// and encoding_rs read alike ([`BIG5_AGREED`]); ASCII passes, and bytes
/// that are not BIG5 are left to the decoder to refuse.
fn big5_agreed(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] < 0x80 {
            i += 1;
            continue;
        }
        let Some(&trail) = bytes.get(i + 1) else {
            return true;
        };
        let code = u16::from_be_bytes([bytes[i], trail]);
        if !BIG5_AGREED
            .iter()
            .any(|&(from, to)| (from..=to).contains(&code))
        {
            return false;
        }
        i += 2;
    }
    true
}

/// The single-byte encodings PostgreSQL names `key` (normalized).
fn single_byte(key: &str) -> Option<&'static Encoding> {
    use encoding_rs as e;
    Some(match key {
        "latin2" | "iso88592" => e::ISO_8859_2,
        "latin3" | "iso88593" => e::ISO_8859_3,
        "latin4" | "iso88594" => e::ISO_8859_4,
        "latin5" | "iso88599" => e::WINDOWS_1254,
        "latin6" | "iso885910" => e::ISO_8859_10,
        "latin7" | "iso885913" => e::ISO_8859_13,
        "latin8" | "iso885914" => e::ISO_8859_14,
        "latin9" | "iso885915" => e::ISO_8859_15,
        "latin10" | "iso885916" => e::ISO_8859_16,
        "iso88595" => e::ISO_8859_5,
        "iso88596" => e::ISO_8859_6,
        "iso88597" => e::ISO_8859_7,
        "iso88598" => e::ISO_8859_8,
        "koi8" | "koi8r" => e::KOI8_R,
        "koi8u" => e::KOI8_U,
        "win866" | "windows866" | "alt" => e::IBM866,
        "win874" | "windows874" => e::WINDOWS_874,
        "win1250" | "windows1250" => e::WINDOWS_1250,
        "win1251" | "windows1251" | "win" => e::WINDOWS_1251,
        "win1253" | "windows1253" => e::WINDOWS_1253,
        "win1254" | "windows1254" => e::WINDOWS_1254,
        "win1255" | "windows1255" => e::WINDOWS_1255,
        "win1256" | "windows1256" => e::WINDOWS_1256,
        "win1257" | "windows1257" => e::WINDOWS_1257,
        "win1258" | "windows1258" | "abc" | "tcvn" | "tcvn5712" | "vscii" => e::WINDOWS_1258,
        _ => return None,
    })
}

/// Whether client bytes hold a byte with the high bit set right before a
/// backslash: in SJIS, BIG5, GBK, GB18030 and JOHAB the two may be one
/// character (`81 5C` is 「乗」 in GBK), in UTF-8 and the other encodings
/// two, so such text reads differently in different encodings, and a
/// backslash decides where a string literal ends.
pub(crate) fn backslash_after_multibyte(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w[0] >= 0x80 && w[1] == b'\\')
}

/// What starts at a position of client bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
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
    /// The encoding PostgreSQL calls `name`. An encoding pgveil cannot
    /// read (JOHAB, MULE_INTERNAL, EUC_TW, or a name it does not know) is
    /// read as UTF-8 but does not [delimit characters](Self::delimits_characters):
    /// text that is not valid UTF-8 is refused rather than misread, and
    /// COPY data and statements whose reading depends on it are refused.
    pub fn from_pg_name(name: &str) -> Self {
        Self::named(name).unwrap_or(ClientEncoding {
            encoding: encoding_rs::UTF_8,
            chars: Chars::Unsupported,
        })
    }

    /// The encoding PostgreSQL calls `name` (any of its spellings: case
    /// and characters other than letters and digits do not count, as in
    /// PostgreSQL's `pg_char_to_encoding`), if pgveil can read it.
    pub fn named(name: &str) -> Option<Self> {
        use encoding_rs as e;
        let key: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let (encoding, chars) = match key.as_str() {
            "utf8" | "unicode" | "sqlascii" => (e::UTF_8, Chars::AsciiSafe),
            "gbk" | "win936" | "windows936" | "cp936" => (e::GBK, Chars::Gbk),
            "euccn" => (e::GBK, Chars::EucCn),
            "gb18030" => (e::GB18030, Chars::Gb18030),
            "big5" | "win950" | "windows950" | "cp950" => (e::BIG5, Chars::Big5),
            "sjis" | "shiftjis" | "shiftjis2004" | "win932" | "windows932" | "mskanji" => {
                (e::SHIFT_JIS, Chars::Sjis)
            }
            "eucjp" | "eucjis2004" => (e::EUC_JP, Chars::AsciiSafe),
            "euckr" => (e::EUC_KR, Chars::AsciiSafe),
            "uhc" | "win949" | "windows949" => (e::EUC_KR, Chars::Uhc),
            "latin1" | "iso88591" | "win1252" | "windows1252" => {
                (e::WINDOWS_1252, Chars::AsciiSafe)
            }
            other => (single_byte(other)?, Chars::AsciiSafe),
        };
        Some(ClientEncoding { encoding, chars })
    }

    /// Whether PostgreSQL reads every character of `bytes` as encoding_rs
    /// does ([`BIG5_AGREED`], [`EUC_CN_DIFFER`], [`GB18030_DIFFER`]).
    fn readable(&self, bytes: &[u8]) -> bool {
        match self.chars {
            Chars::Big5 => big5_agreed(bytes),
            Chars::EucCn => none_of(bytes, EUC_CN_DIFFER, false),
            Chars::Gb18030 => none_of(bytes, GB18030_DIFFER, true),
            _ => true,
        }
    }

    /// Client bytes as UTF-8 text; `None` if they are not valid in the
    /// encoding, or hold a character PostgreSQL reads otherwise or not at
    /// all ([`Self::readable`]).
    pub fn decode<'b>(&self, bytes: &'b [u8]) -> Option<Cow<'b, str>> {
        if !self.readable(bytes) {
            return None;
        }
        self.encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
    }

    /// UTF-8 text in the client's encoding. A character the encoding
    /// cannot represent (in BIG5, as PostgreSQL reads it) becomes `?`.
    pub fn encode<'t>(&self, text: &'t str) -> Cow<'t, [u8]> {
        if self.encoding == encoding_rs::UTF_8 {
            return Cow::Borrowed(text.as_bytes());
        }
        let (bytes, _, unmappable) = self.encoding.encode(text);
        if !unmappable && self.readable(&bytes) {
            return bytes;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let (bytes, _, unmappable) = self.encoding.encode(c.encode_utf8(&mut buf));
            let readable = !unmappable && self.readable(&bytes);
            out.extend_from_slice(if readable { &bytes } else { b"?" });
        }
        Cow::Owned(out)
    }

    /// Whether pgveil can find characters in this encoding's bytes: false
    /// for an encoding whose multibyte characters may hold ASCII bytes and
    /// that pgveil does not know.
    pub(crate) fn delimits_characters(&self) -> bool {
        self.chars != Chars::Unsupported
    }

    /// What starts at `bytes[0]` (`bytes` must not be empty).
    pub(crate) fn step(&self, bytes: &[u8]) -> Step {
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
            Chars::AsciiSafe | Chars::EucCn | Chars::Unsupported => Step::Byte(first),
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
    fn encodings_are_found_by_any_of_postgresqls_spellings() {
        let named = |name| ClientEncoding::named(name).map(|e| e.encoding.name());
        assert_eq!(named("utf-8"), Some("UTF-8"));
        assert_eq!(named("Unicode"), Some("UTF-8"));
        assert_eq!(named("win936"), Some("GBK"));
        assert_eq!(named("Shift_JIS"), Some("Shift_JIS"));
        assert_eq!(named("latin2"), Some("ISO-8859-2"));
        assert_eq!(named("ISO_8859_5"), Some("ISO-8859-5"));
        assert_eq!(named("KOI8"), Some("KOI8-R"));
        assert_eq!(named("WIN1251"), Some("windows-1251"));
        for unreadable in ["JOHAB", "MULE_INTERNAL", "EUC_TW", "klingon"] {
            assert_eq!(named(unreadable), None, "{unreadable}");
            assert!(!ClientEncoding::from_pg_name(unreadable).delimits_characters());
        }
        assert!(backslash_after_multibyte(b"\xe4\xb8\x81\\'"));
        assert!(!backslash_after_multibyte(b"a\\b \xe4\xb8\x81"));
    }

    #[test]
    fn big5_characters_postgresql_reads_otherwise_are_refused() {
        let big5 = ClientEncoding::from_pg_name("BIG5");
        assert_eq!(big5.decode(b"\xb3\x5c").as_deref(), Some("許"));
        // ソ to encoding_rs, Л to PostgreSQL; and an HKSCS code.
        assert_eq!(big5.decode(b"a\xc7\xb9"), None);
        assert_eq!(big5.decode(b"\x87\x40"), None);
        assert_eq!(&*big5.encode("許ソ"), b"\xb3\x5c?");
        let gb18030 = ClientEncoding::from_pg_name("GB18030");
        assert_eq!(gb18030.decode(b"\xa6\xd9"), None);
        assert!(gb18030.decode(b"\x81\x30\x81\x30\xc4\xe3").is_some());
        let euc_cn = ClientEncoding::from_pg_name("EUC_CN");
        assert_eq!(euc_cn.decode(b"\xa1\xa4"), None);
        assert_eq!(euc_cn.decode(b"\xc4\xe3").as_deref(), Some("你"));
    }

    #[test]
    fn invalid_bytes_and_unmappable_characters() {
        let utf8 = ClientEncoding::default();
        assert!(utf8.decode(b"\xff\xfe").is_none());
        let latin1 = ClientEncoding::from_pg_name("LATIN1");
        assert_eq!(&*latin1.encode("a张b"), b"a?b");
    }
}
