use super::*;
use crate::sql::Target;
use crate::wire::copy::options::{ColumnSet, CopyOptions};

const POLICY: &str = r#"
[[column]]
table = "customers"
column = "email"
encryption = "deterministic"

[[column]]
table = "customers"
column = "full_name"

[[column]]
table = "customers"
column = "doc"
"#;

/// `pgv1:` + the hex of the plaintext; `bytes:` + the hex of bytes.
pub(super) struct Fake;

impl Encryptor for Fake {
    fn encrypt(&self, _: &ColumnPolicy, plaintext: &str) -> Result<String, EncryptError> {
        Ok(ct(plaintext))
    }

    fn encrypt_bytes(&self, _: &ColumnPolicy, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
        Ok(format!("bytes:{}", hex::encode(plaintext)).into_bytes())
    }
}

/// Returns whatever it was built with.
struct Fixed(Result<&'static str, &'static str>);

impl Encryptor for Fixed {
    fn encrypt(&self, _: &ColumnPolicy, _: &str) -> Result<String, EncryptError> {
        self.0
            .map(str::to_owned)
            .map_err(|e| EncryptError(e.into()))
    }

    fn encrypt_bytes(&self, column: &ColumnPolicy, _: &[u8]) -> Result<Vec<u8>, EncryptError> {
        self.encrypt(column, "").map(String::into_bytes)
    }
}

pub(super) fn ct(plaintext: &str) -> String {
    format!("pgv1:{}", hex::encode(plaintext))
}

pub(super) fn policy() -> Policy {
    Policy::from_str("t.toml", POLICY).unwrap()
}

/// A COPY of `customers` with these columns and PostgreSQL's defaults;
/// `doc` is a `bytea` column.
pub(super) fn copy(format: CopyFormat, columns: &[&str]) -> CopyIn {
    let csv = format == CopyFormat::Csv;
    let policy = policy();
    let storage = |column: &str| match column {
        "doc" => Storage::Bytea,
        _ => Storage::Text,
    };
    CopyIn {
        table: ("public".into(), "customers".into()),
        columns: columns
            .iter()
            .map(|c| {
                policy.column("public", "customers", c).map(|p| Target {
                    column: std::sync::Arc::new(p.into()),
                    storage: storage(c),
                })
            })
            .collect(),
        options: CopyOptions {
            format,
            delimiter: if csv { "," } else { "\t" }.into(),
            null: if csv { "" } else { "\\N" }.into(),
            quote: "\"".into(),
            escape: "\"".into(),
            header: false,
            force_not_null: ColumnSet::None,
            force_null: ColumnSet::None,
            encoding: None,
            protected: Vec::new(),
        },
    }
}

fn text_copy() -> CopyIn {
    copy(CopyFormat::Text, &["id", "email", "full_name"])
}

fn csv_copy() -> CopyIn {
    copy(CopyFormat::Csv, &["id", "email", "full_name"])
}

fn run_with(copy: &CopyIn, enc: &dyn Encryptor, chunks: &[&[u8]]) -> Result<Vec<u8>, CopyError> {
    run_in(ClientEncoding::default(), copy, enc, chunks)
}

fn run_in(
    encoding: ClientEncoding,
    copy: &CopyIn,
    enc: &dyn Encryptor,
    chunks: &[&[u8]],
) -> Result<Vec<u8>, CopyError> {
    let policy = policy();
    let mut copy_enc = CopyEncryptor::new(copy, &policy, enc, encoding)?;
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(copy_enc.feed(chunk)?);
    }
    out.extend(copy_enc.finish()?);
    Ok(out)
}

/// The output for `data`, checked to be the same however the data is
/// split into CopyData messages.
fn encrypted(copy: &CopyIn, data: &str) -> String {
    String::from_utf8(encrypted_in(
        ClientEncoding::default(),
        copy,
        data.as_bytes(),
    ))
    .unwrap()
}

/// [`encrypted`] for data in `encoding`.
fn encrypted_in(encoding: ClientEncoding, copy: &CopyIn, data: &[u8]) -> Vec<u8> {
    let whole = run_in(encoding, copy, &Fake, &[data]).unwrap();
    for split in 0..=data.len() {
        let (a, b) = data.split_at(split);
        assert_eq!(
            run_in(encoding, copy, &Fake, &[a, b]).unwrap(),
            whole,
            "split at {split}"
        );
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(
        run_in(encoding, copy, &Fake, &bytes).unwrap(),
        whole,
        "byte by byte"
    );
    whole
}

/// The error for `data`, checked not to contain the word "secret".
fn error(copy: &CopyIn, data: &[u8]) -> CopyError {
    let err = run_with(copy, &Fake, &[data]).unwrap_err();
    assert!(err.message.starts_with("pgveil: "), "{}", err.message);
    assert!(!err.message.contains("secret"), "{}", err.message);
    err
}

// Text format.

#[test]
fn text_rows() {
    let out = encrypted(
        &text_copy(),
        "1\talice@example.com\tAlice Smith\n2\tbob@example.org\tBob\n",
    );
    assert_eq!(
        out,
        format!(
            "1\t{}\t{}\n2\t{}\t{}\n",
            ct("alice@example.com"),
            ct("Alice Smith"),
            ct("bob@example.org"),
            ct("Bob")
        )
    );
}

#[test]
fn text_escapes_are_decoded_before_encryption() {
    let out = encrypted(&text_copy(), "\\x31\ta\\tb@x\tone\\ntwo\\\\three\n");
    assert_eq!(
        out,
        format!("\\x31\t{}\t{}\n", ct("a\tb@x"), ct("one\ntwo\\three"))
    );
    let out = encrypted(
        &text_copy(),
        "2\t\\101\\x42c\\xg\\q\t\\7\\0101\\b\\f\\r\\v\n",
    );
    assert_eq!(
        out,
        format!(
            "2\t{}\t{}\n",
            ct("ABcxgq"),
            ct("\u{7}\u{8}1\u{8}\u{c}\r\u{b}")
        )
    );
}

#[test]
fn text_null_is_compared_before_decoding() {
    let out = encrypted(&text_copy(), "\\N\t\\N\t\\\\N\n");
    assert_eq!(out, format!("\\N\t\\N\t{}\n", ct("\\N")));
}

#[test]
fn text_line_terminators() {
    let out = encrypted(&text_copy(), "1\ta\tb\r\n2\tc\td\\\r\n3\te\tf");
    assert_eq!(
        out,
        format!(
            "1\t{}\t{}\r\n2\t{}\t{}\n3\t{}\t{}",
            ct("a"),
            ct("b"),
            ct("c"),
            ct("d\r"),
            ct("e"),
            ct("f")
        )
    );
}

#[test]
fn text_backslash_newline_is_data() {
    let out = encrypted(&text_copy(), "1\ta\tfirst\\\nsecond\n");
    assert_eq!(out, format!("1\t{}\t{}\n", ct("a"), ct("first\nsecond")));
    let err = error(&text_copy(), b"1\ta\tb\\\nc\n2\tsecret\n");
    assert_eq!(
        err.message,
        "pgveil: line 3 of the COPY data has 2 fields, expected 3"
    );
}

#[test]
fn text_end_of_data_marker() {
    let out = encrypted(&text_copy(), "1\ta\tb\n\\.\n4\tsecret\tafter\n");
    assert_eq!(out, format!("1\t{}\t{}\n\\.\n", ct("a"), ct("b")));
    let out = encrypted(&text_copy(), "1\ta\tb\r\n\\.\r\nmore");
    assert_eq!(out, format!("1\t{}\t{}\r\n\\.\r\n", ct("a"), ct("b")));
    assert_eq!(encrypted(&text_copy(), "\\."), "\\.");
}

#[test]
fn text_end_of_data_marker_inside_a_row_is_refused() {
    for data in ["1\tsecret\\.\tb\n", "\\.x\n", "1\ta\tb\\.\n"] {
        let err = error(&text_copy(), data.as_bytes());
        assert_eq!(err.sqlstate, "22P04");
        assert!(err.message.contains("line 1 "), "{}", err.message);
    }
}

#[test]
fn text_custom_delimiter_and_null() {
    let mut copy = text_copy();
    copy.options.delimiter = "|".into();
    copy.options.null = "NULL".into();
    let out = encrypted(&copy, "1|NULL|a\\|b\tc\nNULL|\\NULL|\n");
    assert_eq!(
        out,
        format!("1|NULL|{}\nNULL|{}|{}\n", ct("a|b\tc"), ct("NULL"), ct(""))
    );
}

#[test]
fn text_chinese() {
    let out = encrypted(&text_copy(), "1\t张伟@例子.中国\t张伟\n");
    assert_eq!(
        out,
        format!("1\t{}\t{}\n", ct("张伟@例子.中国"), ct("张伟"))
    );
}

#[test]
fn text_header_passes_through() {
    let mut copy = text_copy();
    copy.options.header = true;
    let out = encrypted(&copy, "id\temail\tfull_name\n1\ta\tb\n");
    assert_eq!(
        out,
        format!("id\temail\tfull_name\n1\t{}\t{}\n", ct("a"), ct("b"))
    );
}

#[test]
fn unprotected_columns_are_copied_as_written() {
    let copy = copy(CopyFormat::Text, &["id", "note", "email"]);
    let out = encrypted(&copy, "\\x41\ta\\\\b\\nc\\\r\\\n\tz\n");
    assert_eq!(out, format!("\\x41\ta\\\\b\\nc\\\r\\\n\t{}\n", ct("z")));
}

// Client encodings whose multibyte characters hold ASCII bytes.

fn in_encoding(name: &str, text: &str) -> Vec<u8> {
    ClientEncoding::from_pg_name(name).encode(text).into_owned()
}

#[test]
fn gbk_trail_backslash_is_not_an_escape() {
    let gbk = ClientEncoding::from_pg_name("GBK");
    // 乗 is 81 5C: before a tab or a line break, a backslash would escape it.
    let data = in_encoding("GBK", "乗\t乗\t癩乗\n2\tb@x\t\\x41\\350\\250\\261\\乗\n");
    assert_eq!(data[..3], *b"\x81\x5c\t");
    let out = encrypted_in(gbk, &text_copy(), &data);
    let mut expected = in_encoding("GBK", "乗");
    expected.extend(
        format!(
            "\t{}\t{}\n2\t{}\t{}\n",
            ct("乗"),
            ct("癩乗"),
            ct("b@x"),
            ct("A許乗")
        )
        .bytes(),
    );
    assert_eq!(
        out, expected,
        "escapes stand for UTF-8 bytes, as on the server"
    );
}

#[test]
fn big5_csv_with_backslash_as_escape() {
    let big5 = ClientEncoding::from_pg_name("BIG5");
    let mut copy = csv_copy();
    copy.options.escape = "\\".into();
    copy.options.delimiter = "|".into();
    // 許 is B3 5C, 四 is A5 7C.
    let data = in_encoding("BIG5", "許四|\"許\"|\"四\\\"許\"\n");
    let out = encrypted_in(big5, &copy, &data);
    let mut expected = in_encoding("BIG5", "許四");
    expected.extend(format!("|{}|{}\n", ct("許"), ct("四\"許")).bytes());
    assert_eq!(out, expected);
}

#[test]
fn other_encodings_step_over_whole_characters() {
    for name in ["GB18030", "SJIS", "UHC", "EUC_JP", "EUC_KR", "LATIN1"] {
        let encoding = ClientEncoding::from_pg_name(name);
        let text = match name {
            "GB18030" => "😀乗",
            "SJIS" | "EUC_JP" => "ソ表ｿ",
            "UHC" | "EUC_KR" => "갂한",
            _ => "Zoë",
        };
        let data = [
            in_encoding(name, text),
            b"\tx\t".to_vec(),
            in_encoding(name, text),
            b"\n".to_vec(),
        ]
        .concat();
        let out = encrypted_in(encoding, &text_copy(), &data);
        let expected = [
            in_encoding(name, text),
            format!("\t{}\t{}\n", ct("x"), ct(text)).into_bytes(),
        ]
        .concat();
        assert_eq!(out, expected, "{name}");
    }
}

#[test]
fn invalid_characters_are_refused() {
    let gbk = ClientEncoding::from_pg_name("GBK");
    for data in [&b"1\tsecret\x81\tb\n"[..], b"1\tsecret\tb\x81", b"\x81\t\n"] {
        let err = run_in(gbk, &text_copy(), &Fake, &[data]).unwrap_err();
        assert_eq!(err.sqlstate, "22021", "{data:?}");
        assert!(err.message.contains("line 1 "), "{}", err.message);
        assert!(!err.message.contains("secret"));
    }
    let gbk_bytes = in_encoding("GBK", "乗");
    let err = run_with(
        &text_copy(),
        &Fake,
        &[&[b"1\tx\t", &gbk_bytes[..], b"\n"].concat()],
    )
    .unwrap_err();
    assert_eq!(err.sqlstate, "22021", "GBK bytes read as UTF-8");
    let err = CopyEncryptor::new(
        &text_copy(),
        &policy(),
        &Fake,
        ClientEncoding::from_pg_name("JOHAB"),
    )
    .err()
    .unwrap();
    assert_eq!(err.sqlstate, "0A000");
    assert!(err.message.contains("client encoding"), "{}", err.message);
}

// CSV.

#[test]
fn csv_quoted_fields() {
    let out = encrypted(
        &csv_copy(),
        "1,\"a,b@x.org\",\"Smith, John\"\n2,x@y,\"He said \"\"hi\"\"\"\n",
    );
    assert_eq!(
        out,
        format!(
            "1,{},{}\n2,{},{}\n",
            ct("a,b@x.org"),
            ct("Smith, John"),
            ct("x@y"),
            ct("He said \"hi\"")
        )
    );
}

#[test]
fn csv_quotes_may_start_inside_a_field() {
    let out = encrypted(&csv_copy(), "1,ab\"c,d\"e,\"\"\"\"\n");
    assert_eq!(out, format!("1,{},{}\n", ct("abc,de"), ct("\"")));
}

#[test]
fn csv_embedded_line_breaks() {
    let out = encrypted(
        &csv_copy(),
        "1,x@y,\"line1\nline2\r\nline3\"\r\n\"2\n\",z@w,plain\n3,\"\",",
    );
    assert_eq!(
        out,
        format!(
            "1,{},{}\r\n\"2\n\",{},{}\n3,{},",
            ct("x@y"),
            ct("line1\nline2\r\nline3"),
            ct("z@w"),
            ct("plain"),
            ct("")
        )
    );
}

#[test]
fn csv_null_and_empty_string() {
    let out = encrypted(&csv_copy(), "1,,\"\"\n,\"\",\n");
    assert_eq!(out, format!("1,,{}\n,{},\n", ct(""), ct("")));
    let mut copy = csv_copy();
    copy.options.null = "NULL".into();
    let out = encrypted(&copy, "1,NULL,\"NULL\"\n2,,N\"ULL\"\n");
    assert_eq!(
        out,
        format!("1,NULL,{}\n2,{},{}\n", ct("NULL"), ct(""), ct("NULL"))
    );
}

#[test]
fn csv_force_not_null_and_force_null() {
    let mut copy = csv_copy();
    copy.options.force_not_null = ColumnSet::Named(vec!["email".into()]);
    copy.options.force_null = ColumnSet::All;
    let out = encrypted(&copy, "1,,\"\"\n2,\"\",\n3,x,\"\"\"\"\n");
    assert_eq!(
        out,
        format!("1,{},\"\"\n2,\"\",\n3,{},{}\n", ct(""), ct("x"), ct("\""))
    );
    copy.options.null = "NA".into();
    copy.options.force_null = ColumnSet::Named(vec!["full_name".into()]);
    let out = encrypted(&copy, "NA,NA,\"NA\"\n1,\"NA\",N\"A\"\n");
    assert_eq!(
        out,
        format!("NA,{},\"NA\"\n1,{},N\"A\"\n", ct("NA"), ct("NA"))
    );
    // Text format has neither option (the server refuses them there).
    let mut copy = text_copy();
    copy.options.force_not_null = ColumnSet::All;
    assert_eq!(
        encrypted(&copy, "1\t\\N\tx\n"),
        format!("1\t\\N\t{}\n", ct("x"))
    );
}

#[test]
fn csv_header_passes_through() {
    let mut copy = csv_copy();
    copy.options.header = true;
    let out = encrypted(&copy, "\"id\",\"e\nmail\",full_name\n1,a,b\n");
    assert_eq!(
        out,
        format!("\"id\",\"e\nmail\",full_name\n1,{},{}\n", ct("a"), ct("b"))
    );
}

#[test]
fn csv_custom_quote_and_escape() {
    let mut copy = csv_copy();
    copy.options.quote = "'".into();
    copy.options.escape = "\\".into();
    copy.options.delimiter = ";".into();
    let out = encrypted(&copy, "1;'it\\'s; ok';'back\\\\slash \\n \"q\"'\n");
    assert_eq!(
        out,
        format!("1;{};{}\n", ct("it's; ok"), ct("back\\slash \\n \"q\""))
    );
    let out = encrypted(&copy, "2;'a\\'\n\\\\';b\\\n");
    assert_eq!(out, format!("2;{};{}\n", ct("a'\n\\"), ct("b\\")));
}

#[test]
fn csv_end_of_data_marker() {
    let out = encrypted(&csv_copy(), "1,a,b\n\\.\n2,secret,x\n");
    assert_eq!(out, format!("1,{},{}\n\\.\n", ct("a"), ct("b")));
    let copy = copy(CopyFormat::Csv, &["email"]);
    let out = encrypted(&copy, "\"\\.\"\n\\.x\n");
    assert_eq!(out, format!("{}\n{}\n", ct("\\."), ct("\\.x")));
}

// Errors.

#[test]
fn wrong_field_count() {
    let err = error(&text_copy(), b"1\tsecret@x.org\n");
    assert_eq!(err.sqlstate, "22P04");
    assert_eq!(
        err.message,
        "pgveil: line 1 of the COPY data has 2 fields, expected 3"
    );
    let err = error(&csv_copy(), b"1,a,b\n2,\"x\ny\",secret,4\n5,6\n");
    assert_eq!(
        err.message,
        "pgveil: line 2 of the COPY data has 4 fields, expected 3"
    );
    let err = error(&text_copy(), b"\n");
    assert_eq!(
        err.message,
        "pgveil: line 1 of the COPY data has 1 fields, expected 3"
    );
}

#[test]
fn unterminated_quote_at_finish() {
    let err = error(&csv_copy(), b"1,a,b\n2,\"secret@x.org,\n");
    assert_eq!(err.sqlstate, "22P04");
    assert_eq!(
        err.message,
        "pgveil: line 2 of the COPY data ends inside a quoted CSV field"
    );
}

#[test]
fn bytea_fields_are_decoded_and_written_as_hex() {
    let text = copy(CopyFormat::Text, &["id", "doc"]);
    assert_eq!(
        run_with(&text, &Fake, &[b"1\t\\\\x00ff\n2\tab\\\\\\\\c\n3\t\\N\n"]).unwrap(),
        b"1\t\\\\x62797465733a30306666\n2\t\\\\x62797465733a3631363235633633\n3\t\\N\n"
    );
    let csv = copy(CopyFormat::Csv, &["id", "doc"]);
    assert_eq!(
        run_with(&csv, &Fake, &[b"1,\"\\x00ff\"\n"]).unwrap(),
        b"1,\\x62797465733a30306666\n"
    );
    let err = run_with(&text, &Fake, &[b"1\t\\\\xzz secret\n"]).unwrap_err();
    assert_eq!(err.sqlstate, "22P02");
    assert_eq!(
        err.message,
        "pgveil: line 1 of the COPY data has a value for bytea column public.customers.doc \
         that is not valid bytea input"
    );
}

#[test]
fn oversized_row() {
    let policy = policy();
    let rows = || match CopyEncryptor::new(&text_copy(), &policy, &Fake, ClientEncoding::default())
        .unwrap()
    {
        CopyEncryptor::Rows(mut rows) => {
            rows.max_row = 16;
            rows
        }
        CopyEncryptor::Binary(_) => unreachable!("a text COPY"),
    };
    let mut copy_enc = rows();
    assert!(copy_enc.feed(b"1\tsecret").unwrap().is_empty());
    let err = copy_enc.feed(b"@example.com").unwrap_err();
    assert_eq!(err.sqlstate, "54000");
    assert_eq!(
        err.message,
        "pgveil: line 1 of the COPY data is longer than 16 bytes"
    );

    let err = rows().feed(b"1\ta\tb\n1\tsecret@x.org\tb\n").unwrap_err();
    assert_eq!(
        err.message,
        "pgveil: line 2 of the COPY data is longer than 16 bytes"
    );
    assert_eq!(MAX_ROW, 64 * 1024 * 1024);
}

#[test]
fn protected_values_must_be_valid_text() {
    for data in [
        &b"1\t\\377secret\tb\n"[..],
        b"1\t\xffsecret\tb\n",
        b"1\tsecret\\000\tb\n",
    ] {
        let err = error(&text_copy(), data);
        assert_eq!(err.sqlstate, "22021");
        assert_eq!(
            err.message,
            "pgveil: line 1 of the COPY data has a value for column public.customers.email \
             that is not valid text in the client encoding"
        );
    }
    // Unprotected fields are the server's to check.
    let out = encrypted(&text_copy(), "\\377\ta\tb\n");
    assert_eq!(out, format!("\\377\t{}\t{}\n", ct("a"), ct("b")));
}

#[test]
fn literal_carriage_return_in_a_protected_value() {
    for (copy, data) in [
        (text_copy(), &b"1\tsecret\rx\tb\n"[..]),
        (csv_copy(), b"1,a,secret\rx\n"),
        (
            copy(CopyFormat::Text, &["id", "full_name"]),
            b"1\tsecret\r2\tx\r",
        ),
    ] {
        let err = error(&copy, data);
        assert_eq!(err.sqlstate, "22P04");
        assert!(err.message.contains("carriage return"), "{}", err.message);
        assert!(
            err.message.contains("column public.customers."),
            "{}",
            err.message
        );
    }
}

#[test]
fn encryption_failure() {
    let err = run_with(
        &text_copy(),
        &Fixed(Err("key unavailable")),
        &[b"1\tsecret\tb\n"],
    )
    .unwrap_err();
    assert_eq!(err.sqlstate, "XX000");
    assert_eq!(
        err.message,
        "pgveil: cannot encrypt the value of column public.customers.email on line 1 of \
         the COPY data: key unavailable"
    );
}

#[test]
fn ciphertext_that_cannot_be_written_is_refused() {
    for (copy, ciphertext, data) in [
        (text_copy(), "a\tb", &b"1\tsecret\tb\n"[..]),
        (text_copy(), "\\N", b"1\tsecret\tb\n"),
        (csv_copy(), "", b"1,secret,b\n"),
    ] {
        let err = run_with(&copy, &Fixed(Ok(ciphertext)), &[data]).unwrap_err();
        assert_eq!(err.sqlstate, "XX000");
        assert!(err.message.contains("cannot be written"), "{}", err.message);
    }
}

#[test]
fn unusable_options_are_refused() {
    for (delimiter, message) in [
        (
            "::",
            "pgveil: COPY option DELIMITER must be a single one-byte character",
        ),
        (
            "é",
            "pgveil: COPY option DELIMITER must be a single one-byte character",
        ),
        (
            ":",
            "pgveil: COPY option DELIMITER cannot be ':' when the table has protected \
             columns: it ends lines or can appear in ciphertext",
        ),
    ] {
        let mut copy = csv_copy();
        copy.options.delimiter = delimiter.into();
        let err = CopyEncryptor::new(&copy, &policy(), &Fake, ClientEncoding::default())
            .err()
            .unwrap();
        assert_eq!((err.sqlstate, err.message.as_str()), ("0A000", message));
    }
    let mut copy = csv_copy();
    copy.options.quote = "\n".into();
    assert!(CopyEncryptor::new(&copy, &policy(), &Fake, ClientEncoding::default()).is_err());
}

#[test]
fn a_protected_column_without_policy_is_refused() {
    let mut copy = text_copy();
    copy.columns[0] = Some(Target {
        column: std::sync::Arc::new(ColumnRefId {
            schema: "public".into(),
            table: "customers".into(),
            column: "phone".into(),
        }),
        storage: Storage::Text,
    });
    let err = CopyEncryptor::new(&copy, &policy(), &Fake, ClientEncoding::default())
        .err()
        .unwrap();
    assert_eq!(err.sqlstate, "XX000");
    assert!(
        err.message.contains("public.customers.phone"),
        "{}",
        err.message
    );
}

#[test]
fn long_row_in_small_messages() {
    let name = "n".repeat(1 << 20);
    let data = format!("1\ta@b\t{name}\n2\t\\N\tx");
    let chunks: Vec<&[u8]> = data.as_bytes().chunks(1000).collect();
    let out = run_with(&text_copy(), &Fake, &chunks).unwrap();
    let expected = format!("1\t{}\t{}\n2\t\\N\t{}", ct("a@b"), ct(&name), ct("x"));
    assert!(out == expected.as_bytes());
}
