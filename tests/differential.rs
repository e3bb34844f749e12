//! Differential test against a real server: generated INSERTs (a seeded
//! generator, a few hundred) written through pgveil into a scratch table
//! with protected text and `bytea` columns and no ciphertext guards,
//! under every session setting that changes how PostgreSQL reads a
//! statement (`standard_conforming_strings` on and off, set before the
//! statement or in the same Query, `backslash_quote`,
//! `escape_string_warning`, the client encodings UTF8, GBK, GB18030,
//! BIG5, SJIS, LATIN1), in the simple and the extended protocol, as raw
//! protocol bytes in the client encoding. Then the table is read straight
//! from PostgreSQL: every value stored in a protected column must be
//! pgveil's ciphertext of exactly the value the generator meant, and a
//! statement that failed must have stored nothing. A statement that
//! PostgreSQL and pgveil read differently stores another value, or
//! plaintext, and fails the test.

mod common;

use std::sync::OnceLock;

use common::crm::{protect, Crm};
use common::{message, RawClient};
use pgveil::protect::policy::Policy;
use pgveil::text::encoding::ClientEncoding;

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS diff;
CREATE TABLE IF NOT EXISTS diff.scratch (
    id serial PRIMARY KEY,
    note text,
    extra text,
    secret text,
    code text,
    blob bytea
);
GRANT USAGE ON SCHEMA diff TO PUBLIC;
GRANT ALL ON diff.scratch TO PUBLIC;
GRANT ALL ON SEQUENCE diff.scratch_id_seq TO PUBLIC;
";

const POLICY: &str = r#"
[[column]]
table = "diff.scratch"
column = "secret"
encryption = "deterministic"

[[column]]
table = "diff.scratch"
column = "code"
encryption = "randomized"

[[column]]
table = "diff.scratch"
column = "blob"
encryption = "deterministic"
"#;

/// The scratch table behind its pgveil, once per test binary.
fn scratch() -> &'static Crm {
    static CRM: OnceLock<Crm> = OnceLock::new();
    CRM.get_or_init(|| protect(SCHEMA, Policy::from_str("diff.toml", POLICY).unwrap()))
}

/// Statements generated.
const STATEMENTS: usize = 300;

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Characters of values: quotes, backslashes, dollars, non-ASCII (乗,
/// 許 and ソ have a second byte `5C`, a backslash, in GBK, BIG5 and
/// SJIS).
const CHARS: &[&str] = &[
    "a", "Z", "0", " ", "'", "'", "\\", "\\", "\"", "$", "%", "\n", "中", "文", "乗", "許", "ソ",
    "é", "~",
];

const SPECIAL: &[&str] = &["pgv1:UFYBAQAAAAEAAAAB", "pgv1:", "\\x41", "$$", "\\'", "''"];

fn value(rng: &mut Rng, n: usize) -> String {
    if rng.below(6) == 0 {
        return rng.pick(SPECIAL).to_string();
    }
    let mut v = String::new();
    for _ in 0..rng.below(8) {
        v.push_str(rng.pick(CHARS));
    }
    // Somewhere, a mark no ciphertext can hold.
    let at = rng.below(v.chars().count() + 1);
    let at = v.char_indices().nth(at).map_or(v.len(), |(i, _)| i);
    v.insert_str(at, &format!("~{n}~"));
    v
}

/// A literal that PostgreSQL reads as `value` with
/// `standard_conforming_strings` set to `standard`.
fn literal(rng: &mut Rng, value: &str, standard: bool) -> String {
    let plain_body = |v: &str| {
        if standard {
            v.replace('\'', "''")
        } else {
            v.replace('\\', "\\\\").replace('\'', "''")
        }
    };
    match rng.below(7) {
        0 | 1 => format!("'{}'", plain_body(value)),
        // With the setting off, `\'` for a quote (which backslash_quote
        // may refuse).
        2 if !standard => format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'")),
        2 => format!("'{}'\n'{}'", plain_body(""), plain_body(value)),
        3 => format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''")),
        4 if !value.contains('$') => format!("$${value}$$"),
        4 => format!("$q${value}$q$"),
        5 => {
            let mut out = String::from("U&'");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("''"),
                    c if c.is_ascii() => out.push(c),
                    c => out.push_str(&format!("\\{:04X}", c as u32)),
                }
            }
            out + "'"
        }
        _ => format!("'{}'::text", plain_body(value)),
    }
}

/// A `bytea` literal for `bytes`.
fn bytea_literal(rng: &mut Rng, bytes: &[u8], standard: bool) -> String {
    let hex = hex::encode(bytes);
    match (rng.below(2), standard) {
        (0, true) => format!("'\\x{hex}'"),
        (0, false) => format!("'\\\\x{hex}'"),
        _ => format!("E'\\\\x{hex}'"),
    }
}

/// One generated statement, what it means and how it is sent.
#[derive(Debug)]
struct Case {
    n: usize,
    encoding: &'static str,
    settings: String,
    sql: String,
    /// Parameter values, text format, for the extended protocol.
    params: Vec<Option<String>>,
    extended: bool,
    /// For the unprotected column, which the server reads itself.
    extra: String,
    secret: Option<String>,
    code: Option<String>,
    blob: Option<Vec<u8>>,
}

const ENCODINGS: &[&str] = &["UTF8", "GBK", "GB18030", "BIG5", "SJIS", "LATIN1"];

/// The characters of [`CHARS`] that pgveil (`encoding_rs`) and
/// PostgreSQL convert differently in an encoding, by encoding: the
/// generator leaves them out (see the ignored test at the end).
type Disagreeing = Vec<(&'static str, char)>;

async fn disagreeing(direct: &tokio_postgres::Client) -> Disagreeing {
    let mut found = Vec::new();
    for &encoding in ENCODINGS {
        let enc = ClientEncoding::named(encoding).unwrap();
        for c in CHARS.iter().flat_map(|s| s.chars()) {
            let bytes = enc.encode(c.encode_utf8(&mut [0; 4])).into_owned();
            let read: Result<String, _> = direct
                .query_one("SELECT convert_from($1, $2)", &[&bytes, &encoding])
                .await
                .map(|row| row.get(0));
            if read.ok() != Some(c.to_string()) {
                found.push((encoding, c));
            }
        }
    }
    found
}

/// Whether `text` survives the client encoding, read as PostgreSQL
/// reads it.
fn representable(encoding: &'static str, text: &str, disagreeing: &Disagreeing) -> bool {
    let enc = ClientEncoding::named(encoding).unwrap();
    enc.decode(&enc.encode(text)).as_deref() == Some(text)
        && !text.chars().any(|c| disagreeing.contains(&(encoding, c)))
}

fn case(rng: &mut Rng, n: usize, disagreeing: &Disagreeing) -> Case {
    let encoding = rng.pick(ENCODINGS);
    let standard = rng.below(2) == 0;
    let backslash_quote = rng.pick(&["on", "off", "safe_encoding"]);
    let warning = rng.pick(&["on", "off"]);
    // The setting changed in the same Query: pgveil reads the statement
    // with the setting the server last reported (ARCHITECTURE.md section
    // 10), and sends a text the server reads the same way whatever it is.
    let same_query = rng.below(4) == 0;
    let reported = if same_query { !standard } else { standard };
    let settings = format!(
        "SET client_encoding = '{encoding}'; SET standard_conforming_strings = {}; \
         SET backslash_quote = {backslash_quote}; SET escape_string_warning = {warning}",
        if reported { "on" } else { "off" }
    );
    let mut secret = Some(value(rng, n)).filter(|_| rng.below(8) != 0);
    let mut code = Some(value(rng, n));
    for v in [&mut secret, &mut code] {
        if v.as_deref()
            .is_some_and(|v| !representable(encoding, v, disagreeing))
        {
            *v = Some(format!("~{n}~plain"));
        }
    }
    let blob: Option<Vec<u8>> =
        (rng.below(3) != 0).then(|| (0..rng.below(5)).map(|i| (i * 37 + n) as u8).collect());
    let extended = rng.below(3) == 0;
    let parameters = extended && !same_query && rng.below(2) == 0;
    let mut params = Vec::new();
    let mut lit = |rng: &mut Rng, v: &Option<String>| match v {
        None => "NULL".to_owned(),
        Some(_) if parameters => {
            params.push(v.clone());
            format!("${}", params.len())
        }
        Some(v) => literal(rng, v, reported),
    };
    let extra = Some(value(rng, n).replace('~', "-"))
        .filter(|v| representable(encoding, v, disagreeing))
        .unwrap_or_else(|| format!("-{n}-plain"));
    let extra_sql = literal(rng, &extra, reported);
    let secret_sql = lit(rng, &secret);
    let code_sql = lit(rng, &code);
    let blob_sql = match &blob {
        None => "NULL".to_owned(),
        Some(b) if parameters => {
            params.push(Some(format!("\\x{}", hex::encode(b))));
            format!("${}", params.len())
        }
        Some(b) => bytea_literal(rng, b, reported),
    };
    let mut sql = format!(
        "INSERT INTO diff.scratch (note, extra, secret, code, blob) VALUES ('r{n}', {extra_sql}, \
         {secret_sql}, {code_sql}, {blob_sql})"
    );
    if same_query {
        sql = format!(
            "SET standard_conforming_strings = {}; {sql}",
            if standard { "on" } else { "off" }
        );
    }
    Case {
        n,
        encoding,
        settings,
        sql,
        params,
        extended: extended && !same_query,
        extra,
        secret,
        code,
        blob,
    }
}

/// Sends `case` through pgveil; the error, if any.
async fn send(client: &mut RawClient, case: &Case) -> Option<(String, String)> {
    let enc = ClientEncoding::named(case.encoding).unwrap();
    client.send(&common::query(&case.settings)).await;
    let (_, error) = client.rows_until_ready().await;
    assert_eq!(error, None, "{}", case.settings);
    let cstring = |text: &str| [&*enc.encode(text), &[0][..]].concat();
    if !case.extended {
        client.send(&message(b'Q', &cstring(&case.sql))).await;
    } else {
        let mut parse = vec![0];
        parse.extend(cstring(&case.sql));
        parse.extend([0, 0]);
        let mut bind = vec![0, 0, 0, 0];
        bind.extend((case.params.len() as i16).to_be_bytes());
        for param in &case.params {
            match param {
                Some(v) => {
                    let v = enc.encode(v);
                    bind.extend((v.len() as i32).to_be_bytes());
                    bind.extend(&*v);
                }
                None => bind.extend((-1i32).to_be_bytes()),
            }
        }
        bind.extend([0, 0]);
        let messages = [
            message(b'P', &parse),
            message(b'B', &bind),
            message(b'E', &[0, 0, 0, 0, 0]),
            message(b'S', &[]),
        ];
        client.send(&messages.concat()).await;
    }
    client.rows_until_ready().await.1
}

/// What a protected value stored in `column` decrypts to; `Err` with the
/// stored text when it is not pgveil's ciphertext.
fn decrypt(crm: &'static Crm, column: &str, stored: &[u8], bytea: bool) -> Result<Vec<u8>, String> {
    let domain = &crm.policy.column("diff", "scratch", column).unwrap().domain;
    let envelope = if bytea {
        pgveil::protect::crypto::parse_bytes(stored)
    } else {
        pgveil::protect::crypto::parse_text(stored)
    };
    let envelope = envelope
        .ok()
        .flatten()
        .ok_or_else(|| format!("not ciphertext: {:?}", String::from_utf8_lossy(stored)))?;
    crm.keyring
        .decrypt(domain, envelope)
        .map(|plain| plain.to_vec())
        .map_err(|e| format!("does not decrypt: {e}"))
}

#[tokio::test]
async fn generated_inserts_store_the_ciphertext_of_what_they_mean() {
    let crm = scratch();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let direct = common::direct().await;
    let disagreeing = disagreeing(&direct).await;
    let cases: Vec<Case> = (0..STATEMENTS)
        .map(|n| case(&mut rng, n, &disagreeing))
        .collect();
    let mut client = RawClient::login(crm.proxy.addr).await.0;
    let mut errors = Vec::new();
    for case in &cases {
        errors.push(send(&mut client, case).await);
    }
    let rows = direct
        .query(
            "SELECT note, secret, code, blob, extra FROM diff.scratch",
            &[],
        )
        .await
        .unwrap();
    let mut failures = Vec::new();
    let mut stored = 0;
    for (case, error) in cases.iter().zip(&errors) {
        let note = format!("r{}", case.n);
        let found: Vec<_> = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(0).as_deref() == Some(&note))
            .collect();
        let problem = match (error, found.as_slice()) {
            (Some(_), []) => None,
            (Some(e), _) => Some(format!("failed ({e:?}) but stored")),
            (None, [row]) => {
                stored += 1;
                let text = |i: usize| row.get::<_, Option<String>>(i).map(String::into_bytes);
                let check =
                    |column: &str, got: Option<Vec<u8>>, want: Option<Vec<u8>>, bytea| match (
                        got, want,
                    ) {
                        (None, None) => None,
                        (Some(got), Some(want)) => match decrypt(crm, column, &got, bytea) {
                            Ok(plain) if plain == want => None,
                            Ok(plain) => Some(format!(
                                "{column}: stored the ciphertext of {:?}, not {:?}",
                                String::from_utf8_lossy(&plain),
                                String::from_utf8_lossy(&want)
                            )),
                            Err(e) => Some(format!("{column}: {e}")),
                        },
                        (got, want) => Some(format!("{column}: stored {got:?}, meant {want:?}")),
                    };
                [
                    check(
                        "secret",
                        text(1),
                        case.secret.clone().map(String::into_bytes),
                        false,
                    ),
                    check(
                        "code",
                        text(2),
                        case.code.clone().map(String::into_bytes),
                        false,
                    ),
                    check("blob", row.get(3), case.blob.clone(), true),
                    // The server's own reading of an unprotected literal
                    // is what the generator meant too.
                    Some(format!(
                        "extra: stored {:?}",
                        row.get::<_, Option<String>>(4)
                    ))
                    .filter(|_| row.get::<_, Option<String>>(4) != Some(case.extra.clone())),
                ]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a}; {b}"))
            }
            (None, rows) => Some(format!("{} rows stored", rows.len())),
        };
        if let Some(problem) = problem {
            failures.push(format!("{problem}\n  {case:?}"));
        }
    }
    // No column holds a protected plaintext: each is marked with `~`,
    // which no ciphertext holds.
    for row in &rows {
        for i in [0, 1, 2, 4] {
            let value: Option<String> = row.get(i);
            if let Some(v) = value.filter(|v| v.contains('~')) {
                failures.push(format!("plaintext stored: {v:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {STATEMENTS} statements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let mut refused: Vec<&str> = errors
        .iter()
        .flatten()
        .map(|(code, _)| code.as_str())
        .collect();
    refused.sort_unstable();
    refused.dedup();
    eprintln!(
        "{stored} of {STATEMENTS} statements stored; errors: {refused:?}; characters left out: \
         {disagreeing:?}"
    );
    // Most statements are accepted, so the comparison is not vacuous.
    assert!(stored > STATEMENTS / 2, "only {stored} stored");
}

#[tokio::test]
async fn big5_values_are_encrypted_as_the_server_reads_them() {
    // `C7 B9` is ソ to encoding_rs (WHATWG Big5, with HKSCS) and Л to
    // PostgreSQL's BIG5: pgveil must store the ciphertext of what the
    // server reads, or refuse the text (it refuses: `encoding::BIG5_AGREED`).
    let crm = scratch();
    let direct = common::direct().await;
    let bytes = ClientEncoding::named("BIG5")
        .unwrap()
        .encode("ソ")
        .into_owned();
    let server: String = direct
        .query_one("SELECT convert_from($1, 'BIG5')", &[&bytes])
        .await
        .unwrap()
        .get(0);
    let mut client = RawClient::login(crm.proxy.addr).await.0;
    client
        .send(&common::query("SET client_encoding = 'BIG5'"))
        .await;
    assert_eq!(client.rows_until_ready().await.1, None);
    let sql = [
        &b"INSERT INTO diff.scratch (note, secret) VALUES ('big5', '"[..],
        &bytes,
        b"')\0",
    ]
    .concat();
    client.send(&message(b'Q', &sql)).await;
    if let Some((code, text)) = client.rows_until_ready().await.1 {
        assert_eq!(code, "22021", "{text}");
        let stored: i64 = direct
            .query_one("SELECT count(*) FROM diff.scratch WHERE note = 'big5'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, 0, "refused, nothing stored");
        return;
    }
    let stored: String = direct
        .query_one("SELECT secret FROM diff.scratch WHERE note = 'big5'", &[])
        .await
        .unwrap()
        .get(0);
    let plain = decrypt(crm, "secret", stored.as_bytes(), false).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain),
        server,
        "bytes {bytes:02x?}"
    );
}
