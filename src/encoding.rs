//! Client encodings. CRMs in mainland China and Hong Kong often run with
//! `client_encoding` GBK, GB18030 or BIG5. pgveil normalizes plaintext to
//! UTF-8 before it encrypts it, and converts what it reveals back to each
//! reader's encoding, so a GBK writer and a UTF-8 reader see the same
//! name, and deterministic ciphertexts match whoever wrote them.
//!
//! The session's encoding is the one the server reports in ParameterStatus
//! (`client_encoding`), which follows `SET client_encoding` too.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// A client encoding pgveil can convert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientEncoding(&'static Encoding);

impl Default for ClientEncoding {
    fn default() -> Self {
        ClientEncoding(encoding_rs::UTF_8)
    }
}

impl ClientEncoding {
    /// The encoding PostgreSQL calls `name`. Names pgveil cannot convert
    /// are treated as UTF-8: text that is not valid UTF-8 is then refused
    /// rather than misread.
    pub fn from_pg_name(name: &str) -> Self {
        let encoding = match name.to_ascii_uppercase().as_str() {
            "GBK" | "WIN936" | "CP936" | "EUC_CN" => encoding_rs::GBK,
            "GB18030" => encoding_rs::GB18030,
            "BIG5" | "WIN950" | "CP950" => encoding_rs::BIG5,
            "SJIS" | "SHIFT_JIS" | "SHIFT_JIS_2004" => encoding_rs::SHIFT_JIS,
            "EUC_JP" => encoding_rs::EUC_JP,
            "EUC_KR" | "UHC" => encoding_rs::EUC_KR,
            "LATIN1" | "WIN1252" => encoding_rs::WINDOWS_1252,
            _ => encoding_rs::UTF_8,
        };
        ClientEncoding(encoding)
    }

    /// Client bytes as UTF-8 text; `None` if they are not valid in the
    /// encoding.
    pub fn decode<'b>(&self, bytes: &'b [u8]) -> Option<Cow<'b, str>> {
        self.0
            .decode_without_bom_handling_and_without_replacement(bytes)
    }

    /// UTF-8 text in the client's encoding. A character the encoding
    /// cannot represent becomes `?`.
    pub fn encode<'t>(&self, text: &'t str) -> Cow<'t, [u8]> {
        if self.0 == encoding_rs::UTF_8 {
            return Cow::Borrowed(text.as_bytes());
        }
        let (bytes, _, unmappable) = self.0.encode(text);
        if !unmappable {
            return bytes;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let (bytes, _, unmappable) = self.0.encode(c.encode_utf8(&mut buf));
            out.extend_from_slice(if unmappable { b"?" } else { &bytes });
        }
        Cow::Owned(out)
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
    fn invalid_bytes_and_unmappable_characters() {
        let utf8 = ClientEncoding::default();
        assert!(utf8.decode(b"\xff\xfe").is_none());
        let latin1 = ClientEncoding::from_pg_name("LATIN1");
        assert_eq!(&*latin1.encode("a张b"), b"a?b");
    }
}
