//! Protected `bytea` columns through pgveil: values are written as the
//! binary envelope whatever form the client used (hex or escape literals,
//! text or binary parameters, PREPARE/EXECUTE, UPDATE, ON CONFLICT, COPY
//! in text, CSV and binary, in GBK and BIG5 too, where text is converted
//! and `bytea` never is), equal bytes encrypt equally in a
//! deterministic column, each role reads what the policy grants in text
//! and binary formats and in COPY TO, and PostgreSQL holds only the
//! envelope. A protected column of a type that cannot hold ciphertext is
//! refused, as is `bytea` input that does not decode.

mod common;

use std::sync::OnceLock;

use pgveil::protect::policy::Policy;
use pgveil::text::bytea;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use common::crm::{protect, Crm};
use common::{
    error_field, message, simple_rows, sqlstate, Cluster, RawClient, SUPERUSER, SUPERUSER_PASSWORD,
};

const SCHEMA: &str = "\
    create table documents (\
        id bigserial primary key, title text, scan bytea, digest bytea, \
        reference char(120), pages integer, note text); \
    grant select, insert, update on documents to crm_app; \
    grant usage on sequence documents_id_seq to crm_app; \
    grant select on documents to support, analyst; \
    grant crm_app to trust_user;";

const POLICY: &str = r#"
[[column]]
table = "documents"
column = "title"
mask = "initial"
reveal = { crm_app = "plaintext", support = "masked" }

[[column]]
table = "documents"
column = "scan"
mask = "last4"
reveal = { crm_app = "plaintext", support = "masked", analyst = "pseudonym" }

[[column]]
table = "documents"
column = "digest"
encryption = "deterministic"
reveal = { crm_app = "plaintext", analyst = "pseudonym" }
default = "deny"

[[column]]
table = "documents"
column = "reference"
encryption = "deterministic"
reveal = { crm_app = "plaintext" }

[[column]]
table = "documents"
column = "pages"
reveal = { crm_app = "plaintext" }
"#;

/// A scanned document's bytes: NUL, a backslash, bytes above 0x7f.
const SCAN: &[u8] = b"\x00\x01%PDF-1.7 scan\\\xfe\xff end";
const DIGEST: &[u8] = b"\xde\xad\xbe\xef-digest-0001";

fn docs() -> &'static Crm {
    static DOCS: OnceLock<Crm> = OnceLock::new();
    DOCS.get_or_init(|| {
        let policy = Policy::from_str("docs.toml", POLICY).unwrap();
        // With the ciphertext guards: every write below must pass them.
        let schema = format!("{SCHEMA} {}", pgveil::protect::guard::install_sql(&policy));
        protect(&schema, policy)
    })
}

/// `\x` and the hex of `bytes`, as PostgreSQL prints a `bytea`.
fn hex(bytes: &[u8]) -> String {
    String::from_utf8(bytea::hex(bytes)).unwrap()
}

/// The first column of every row of a simple query, as text.
async fn column(client: &tokio_postgres::Client, sql: &str) -> Vec<Option<String>> {
    let messages = client.simple_query(sql).await.unwrap();
    simple_rows(&messages)
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect()
}

/// What PostgreSQL itself holds, as psql prints it.
fn stored(sql: &str) -> String {
    Cluster::shared().psql_direct(sql).trim().to_owned()
}

fn count(condition: &str) -> i64 {
    stored(&format!("select count(*) from documents where {condition}"))
        .parse()
        .unwrap()
}

/// The first value of `sql`'s row in binary format (extended protocol)
/// and in text format (simple protocol).
async fn binary_and_text(
    client: &tokio_postgres::Client,
    sql: &str,
) -> (Option<Vec<u8>>, Option<String>) {
    let row = client.query_one(sql, &[]).await.unwrap();
    (row.get(0), column(client, sql).await.remove(0))
}

async fn insert_scan(app: &tokio_postgres::Client, note: &str) -> i64 {
    app.query_one(
        "insert into documents (title, scan, note) values ($1, $2, $3) returning id",
        &[&"Passport Scan", &SCAN.to_vec(), &note],
    )
    .await
    .unwrap()
    .get(0)
}

/// The pseudonym of [`SCAN`] in the `scan` column.
fn scan_pseudonym(docs: &Crm) -> String {
    let domain = &docs
        .policy
        .column("public", "documents", "scan")
        .unwrap()
        .domain;
    docs.keyring.pseudonym(domain, SCAN).unwrap()
}

#[tokio::test]
async fn each_role_reads_bytea_as_the_policy_grants_in_text_and_binary_formats() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let id = insert_scan(&app, "roles").await;
    let select = format!("select scan, title from documents where id = {id}");
    let both = |user: &'static str| {
        let select = select.clone();
        async move { binary_and_text(&docs.connect(user).await, &select).await }
    };
    assert_eq!(
        both("crm_user").await,
        (Some(SCAN.to_vec()), Some(hex(SCAN)))
    );
    // A mask of bytes is the redact mask's four bytes, whatever the mask.
    assert_eq!(
        both("support_user").await,
        (Some(b"****".to_vec()), Some(hex(b"****")))
    );
    let token = scan_pseudonym(docs);
    assert!(token.starts_with("pgvp_"));
    assert_eq!(
        both("analyst_user").await,
        (
            Some(token.clone().into_bytes()),
            Some(hex(token.as_bytes()))
        )
    );
    let dba = common::try_connect(&docs.proxy.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres"))
        .await
        .unwrap();
    assert_eq!(
        binary_and_text(&dba, &select).await,
        (None, None),
        "default: null"
    );

    let raw = stored(&format!("select scan from documents where id = {id}"));
    assert!(raw.starts_with("\\x505601"), "the binary envelope: {raw}");
    assert!(!raw.contains(&hex(SCAN)[2..]), "{raw}");
    let raw = stored(&format!("select title from documents where id = {id}"));
    assert!(
        raw.starts_with("pgv1:"),
        "text columns keep the text envelope"
    );
}

#[tokio::test]
async fn the_escape_output_format_is_revealed_in_escape_form() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let id = insert_scan(&app, "escape").await;
    app.batch_execute("set bytea_output = 'escape'")
        .await
        .unwrap();
    let sql = format!("select scan from documents where id = {id}");
    let escaped = String::from_utf8(bytea::escape(SCAN)).unwrap();
    assert_eq!(column(&app, &sql).await, [Some(escaped)]);
    let support = docs.connect("support_user").await;
    support
        .batch_execute("set bytea_output = 'escape'")
        .await
        .unwrap();
    assert_eq!(column(&support, &sql).await, [Some("****".to_owned())]);
}

/// Runs `sql` through the extended protocol with text-format parameters,
/// as `trust_user` (a member of crm_app); returns the SQLSTATE of its
/// error, if any.
async fn with_text_params(sql: &str, params: &[&[u8]]) -> Option<String> {
    let (mut client, _) = RawClient::login(docs().proxy.addr).await;
    let mut parse = vec![0];
    parse.extend(sql.as_bytes());
    parse.extend([0, 0, 0]);
    let mut bind = vec![0, 0, 0, 0];
    bind.extend((params.len() as i16).to_be_bytes());
    for param in params {
        bind.extend((param.len() as i32).to_be_bytes());
        bind.extend(*param);
    }
    bind.extend([0, 0]);
    let mut batch = message(b'P', &parse);
    batch.extend(message(b'B', &bind));
    batch.extend(message(b'E', &[0; 5]));
    batch.extend(message(b'S', &[]));
    client.send(&batch).await;
    let mut error = None;
    loop {
        match client.expect_message().await {
            (b'E', body) => error = Some(error_field(&body, b'C')),
            (b'Z', _) => return error,
            _ => {}
        }
    }
}

#[tokio::test]
async fn equal_bytes_encrypt_equally_whatever_form_they_were_written_in() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let insert = "insert into documents (digest, note) values ($1, $2)";
    app.execute(insert, &[&DIGEST.to_vec(), &"det-binary"])
        .await
        .unwrap();
    let escape_form = String::from_utf8(bytea::escape(DIGEST)).unwrap();
    let digest = hex(DIGEST);
    for sql in [
        format!(
            "insert into documents (digest, note) values ('{digest}', 'det-hex'), \
             ('{escape_form}', 'det-escape')"
        ),
        "prepare put_digest (bytea, text) as insert into documents (digest, note) values ($1, $2)"
            .to_owned(),
        format!("execute put_digest ('{digest}', 'det-execute')"),
    ] {
        app.batch_execute(&sql).await.unwrap();
    }
    let text_param = digest.to_uppercase().replace("\\X", "\\x");
    assert_eq!(
        with_text_params(insert, &[text_param.as_bytes(), b"det-text-param"]).await,
        None
    );
    assert_eq!(
        stored(
            "select count(distinct digest) || ' ' || count(*) || ' ' || \
             bool_and(starts_with(digest::text, '\\x50560102')) \
             from documents where note like 'det-%'"
        ),
        "1 5 true",
        "one deterministic envelope for all five spellings"
    );
    let notes = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|row| row.get(0)).collect()
    };
    let found = app
        .query(
            "select note from documents where digest = $1 order by note",
            &[&DIGEST.to_vec()],
        )
        .await
        .unwrap();
    let expected = [
        "det-binary",
        "det-escape",
        "det-execute",
        "det-hex",
        "det-text-param",
    ];
    assert_eq!(notes(found), expected);
    let by_literal = column(
        &app,
        &format!("select note from documents where digest in ('{digest}', '\\x00') order by note"),
    )
    .await;
    assert_eq!(by_literal, expected.map(|n| Some(n.to_owned())));
}

async fn scan_and_digest(app: &tokio_postgres::Client, id: i64) -> (Vec<u8>, Option<Vec<u8>>) {
    let row = app
        .query_one("select scan, digest from documents where id = $1", &[&id])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn update_and_upsert_encrypt_bytea() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let id = insert_scan(&app, "update").await;
    app.execute(
        "update documents set scan = $1 where id = $2",
        &[&b"\x01updated".to_vec(), &id],
    )
    .await
    .unwrap();
    assert_eq!(
        scan_and_digest(&app, id).await,
        (b"\x01updated".to_vec(), None)
    );
    app.batch_execute(&format!(
        "insert into documents (id, scan, note) values ({id}, '\\x0c0d', 'upsert') \
         on conflict (id) do update set scan = excluded.scan, digest = '\\x0e'"
    ))
    .await
    .unwrap();
    assert_eq!(
        scan_and_digest(&app, id).await,
        (vec![0x0c, 0x0d], Some(vec![0x0e]))
    );
    let raw = stored(&format!(
        "select scan || digest from documents where id = {id}"
    ));
    assert!(
        raw.starts_with("\\x50560101") && raw.contains("50560102"),
        "randomized then deterministic: {raw}"
    );
}

#[tokio::test]
async fn a_char_column_pads_its_ciphertext_and_is_still_revealed_and_searched() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    app.batch_execute("insert into documents (reference, note) values ('REF-0042', 'padded')")
        .await
        .unwrap();
    let raw = stored("select reference from documents where note = 'padded'");
    assert!(raw.starts_with("pgv1:"), "{raw}");
    let found = column(
        &app,
        "select reference from documents where reference = 'REF-0042'",
    )
    .await;
    assert_eq!(found, [Some("REF-0042".to_owned())]);
}

#[tokio::test]
async fn a_protected_column_of_another_type_refuses_writes() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let message = "pgveil: column public.documents.pages is protected but has type integer, \
                   which cannot hold its ciphertext; a protected column must be of a text type \
                   or bytea";
    let err = app
        .simple_query("insert into documents (pages, note) values ('12', 'typed')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42804"));
    assert_eq!(err.as_db_error().unwrap().message(), message);
    let err = app
        .execute(
            "insert into documents (pages, note) values ($1, 'typed')",
            &[&12i32],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42804"));
    let Err(err) = app
        .copy_in::<_, bytes::Bytes>("copy documents (pages, note) from stdin")
        .await
    else {
        panic!("COPY into an integer protected column was accepted");
    };
    assert_eq!(sqlstate(&err), Some("42804"));
    assert_eq!(count("note = 'typed'"), 0);
    // NULL needs no ciphertext.
    app.batch_execute("insert into documents (pages, note) values (null, 'typed-null')")
        .await
        .unwrap();
    assert_eq!(count("note = 'typed-null'"), 1);
}

#[tokio::test]
async fn bytea_input_that_does_not_decode_is_refused_and_writes_nothing() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let err = app
        .simple_query("insert into documents (scan, note) values ('\\xzz-secret', 'bad-bytea')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22P02"));
    let message = err.as_db_error().unwrap().message();
    assert_eq!(
        message,
        "pgveil: the value for bytea column public.documents.scan is not valid bytea input"
    );
    assert_eq!(
        with_text_params(
            "insert into documents (scan, note) values ($1, 'bad-bytea')",
            &[b"\\x0-secret"]
        )
        .await
        .as_deref(),
        Some("22P02")
    );
    let data = b"\\\\x0a\tbad-bytea\nsecret\\\\q\tbad-bytea\n";
    let sql = "copy documents (scan, note) from stdin";
    let err = common::copy_in(&app, sql, [&data[..]]).await.unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some(
            "COPY from stdin failed: pgveil: line 2 of the COPY data has a value for bytea \
             column public.documents.scan that is not valid bytea input"
        )
    );
    assert_eq!(count("note = 'bad-bytea'"), 0);
}

async fn copy_text(client: &tokio_postgres::Client, columns: &str, format: &str) -> String {
    let sql = format!(
        "copy (select {columns} from documents where note = 'copy-bytea' order by id) \
         to stdout (format {format})"
    );
    String::from_utf8(common::copy_out(client, &sql).await).unwrap()
}

async fn copy_binary(
    client: &tokio_postgres::Client,
    columns: &str,
    types: &[Type],
) -> Result<Vec<Vec<Option<Vec<u8>>>>, tokio_postgres::Error> {
    let sql = format!(
        "copy (select {columns} from documents where note = 'copy-bytea' order by id) \
         to stdout (format binary)"
    );
    common::binary_copy_out(client, &sql, types).await
}

#[tokio::test]
async fn copy_in_and_out_of_bytea_columns_in_every_format() {
    let docs = docs();
    let app = docs.connect("crm_user").await;
    let copy = "copy documents (title, scan, digest, note) from stdin";
    for (options, data) in [
        ("", &b"Copy One\t\\\\x00015c\t\\\\x0a0b\tcopy-bytea\n"[..]),
        ("(format csv)", b"Copy Two,\\x00ff,\"\\x0a0b\",copy-bytea\n"),
    ] {
        let sql = format!("{copy} {options}");
        let copied = common::copy_in(&app, &sql, [data]).await.unwrap();
        assert_eq!(copied, 1, "{options}");
    }
    let sink = app
        .copy_in(&format!("{copy} (format binary)"))
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::BYTEA, Type::BYTEA, Type::TEXT]);
    futures_util::pin_mut!(writer);
    let (scan, digest) = (vec![1u8, 2, 3], vec![0x0au8, 0x0b]);
    let row: [&(dyn ToSql + Sync); 4] = [&"Copy Three", &scan, &digest, &"copy-bytea"];
    writer.as_mut().write(&row).await.unwrap();
    assert_eq!(writer.finish().await.unwrap(), 1);
    assert_eq!(
        stored(
            "select count(distinct digest) || ' ' || bool_and(starts_with(scan::text, '\\x50560101')) \
             from documents where note = 'copy-bytea'"
        ),
        "1 true",
        "text, CSV and binary COPY encrypt the same bytes equally"
    );

    assert_eq!(
        copy_text(&app, "title, scan, digest", "text").await,
        "Copy One\t\\\\x00015c\t\\\\x0a0b\nCopy Two\t\\\\x00ff\t\\\\x0a0b\n\
         Copy Three\t\\\\x010203\t\\\\x0a0b\n"
    );
    assert_eq!(
        copy_text(&app, "scan, digest", "csv").await,
        "\\x00015c,\\x0a0b\n\\x00ff,\\x0a0b\n\\x010203,\\x0a0b\n"
    );
    let rows = copy_binary(&app, "title, scan", &[Type::TEXT, Type::BYTEA])
        .await
        .unwrap();
    let expected: Vec<Vec<Option<Vec<u8>>>> = [
        ("Copy One", &[0u8, 1, 0x5c][..]),
        ("Copy Two", &[0, 0xff]),
        ("Copy Three", &[1, 2, 3]),
    ]
    .iter()
    .map(|(title, scan)| vec![Some(title.as_bytes().to_vec()), Some(scan.to_vec())])
    .collect();
    assert_eq!(rows, expected);

    let support = docs.connect("support_user").await;
    assert_eq!(
        copy_text(&support, "title, scan", "text").await,
        "C*** O***\t\\\\x2a2a2a2a\nC*** T***\t\\\\x2a2a2a2a\nC*** T***\t\\\\x2a2a2a2a\n"
    );
    let rows = copy_binary(&support, "scan", &[Type::BYTEA]).await.unwrap();
    assert_eq!(rows, vec![vec![Some(b"****".to_vec())]; 3]);
    // Support is denied the digest, in binary COPY as in text.
    let err = copy_binary(&support, "title, digest", &[Type::TEXT, Type::BYTEA])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "{err}");
    let one: i32 = support.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

/// Values for `documents (title, scan)`, twice, as PostgreSQL itself
/// writes them: the SQL names the title by its UTF-8 bytes, so it means
/// the same in any client encoding.
fn twice(title: &str, scan: &[u8]) -> String {
    format!(
        "select pg_catalog.convert_from('{}', 'UTF8') as title, '{}'::bytea as scan \
         from generate_series(1, 2)",
        hex(title.as_bytes()),
        hex(scan)
    )
}

#[tokio::test]
async fn copy_in_gbk_and_big5_converts_text_and_never_bytea() {
    let docs = docs();
    // The second byte of 乗 in GBK and of 許 and 功 in BIG5 is 5C, a
    // backslash; the scan holds those bytes too, which are no text.
    let scan = b"\x81\x5c\xb3\x5c\t|\\";
    for (encoding, title) in [("GBK", "乗 Scan"), ("BIG5", "許功 Scan")] {
        let note = format!("copy-{encoding}");
        let set = format!("set client_encoding to '{encoding}'");
        let (app, direct) = (docs.connect("crm_user").await, common::direct().await);
        app.batch_execute(&set).await.unwrap();
        direct.batch_execute(&set).await.unwrap();
        let copy = "copy documents (title, scan, note) from stdin";
        let name = pgveil::text::encoding::ClientEncoding::from_pg_name(encoding).encode(title);
        let row = [&name[..], format!("\t\\{}\t{note}\n", hex(scan)).as_bytes()].concat();
        assert_eq!(common::copy_in(&app, copy, [&row[..]]).await.unwrap(), 1);
        let values = format!(
            "copy (select title, scan, '{note}' from ({}) v limit 1) to stdout (format binary)",
            twice(title, scan)
        );
        let binary = common::copy_out(&direct, &values).await;
        let copy = format!("{copy} (format binary)");
        let copied = common::copy_in(&app, &copy, [&binary[..]]).await.unwrap();
        assert_eq!(copied, 1);
        let sealed = format!(
            "note = '{note}' and starts_with(title, 'pgv1:') \
             and starts_with(scan::text, '\\x5056')"
        );
        assert_eq!(count(&sealed), 2, "{encoding}: both rows hold ciphertext");
        // A UTF-8 reader gets the same title, and the scan's bytes as written.
        let utf8 = docs.connect("crm_user").await;
        let select = "select title, scan from documents where note = $1";
        for row in utf8.query(select, &[&note]).await.unwrap() {
            assert_eq!(row.get::<_, String>(0), title, "{encoding}");
            assert_eq!(row.get::<_, Vec<u8>>(1), scan, "{encoding}");
        }
        // COPY TO in the encoding, as PostgreSQL writes the same values.
        let stored = format!("select title, scan from documents where note = '{note}' order by id");
        for options in [
            "",
            "(format csv)",
            "(format csv, force_quote *)",
            "(format binary)",
        ] {
            let through = format!("copy ({stored}) to stdout {options}");
            let reference = format!("copy ({}) to stdout {options}", twice(title, scan));
            assert_eq!(
                common::copy_out(&app, &through).await,
                common::copy_out(&direct, &reference).await,
                "{encoding} {options}"
            );
        }
    }
}

#[test]
fn psql_reads_bytea_as_hex_and_binary_copy_round_trips() {
    let docs = docs();
    let psql = |args: &[&str]| {
        let out = common::psql(&docs.proxy.addr(), "crm_user", "pw", "postgres")
            .args(args)
            .output()
            .unwrap();
        common::assert_success("psql", &out);
        String::from_utf8(out.stdout).unwrap()
    };
    psql(&[
        "-c",
        "insert into documents (scan, digest, note) values ('\\x0102ff', '\\x0a', 'psql')",
    ]);
    assert_eq!(
        psql(&[
            "-c",
            "select scan, digest from documents where note = 'psql'"
        ]),
        "\\x0102ff|\\x0a\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docs.bin");
    let file = file.to_str().unwrap();
    psql(&[
        "-c",
        &format!(
            "\\copy (select scan, digest, 'psql-copy' from documents where note = 'psql') \
             to '{file}' with (format binary)"
        ),
    ]);
    let written = std::fs::read(file).unwrap();
    assert!(written.starts_with(b"PGCOPY\n\xff\r\n\0"));
    assert!(
        written.windows(3).any(|w| w == [1, 2, 0xff]),
        "the file holds the plaintext bytes"
    );
    psql(&[
        "-c",
        &format!("\\copy documents (scan, digest, note) from '{file}' with (format binary)"),
    ]);
    assert_eq!(
        psql(&[
            "-c",
            "select scan, digest from documents where note = 'psql-copy'"
        ]),
        "\\x0102ff|\\x0a\n"
    );
    let raw = stored("select scan from documents where note = 'psql-copy'");
    assert!(
        raw.starts_with("\\x505601") && !raw.contains("0102ff"),
        "{raw}"
    );
}

#[tokio::test]
async fn bytea_values_not_stored_encrypted_are_revealed_by_the_columns_rules() {
    let docs = docs();
    // Written around pgveil, as before it was deployed: the guard is
    // dropped and added again, NOT VALID, in one transaction.
    let guard = pgveil::protect::guard::install_sql(&docs.policy);
    Cluster::shared().psql_direct(&format!(
        "begin; alter table documents drop constraint pgveil_guard_scan; \
         insert into documents (scan, note) values ('\\x{}'::bytea, 'legacy-bytea'); \
         {guard} commit;",
        hex::encode(SCAN)
    ));
    let select = "select scan from documents where note = 'legacy-bytea'";
    let both = |user: &'static str| async move {
        binary_and_text(&docs.connect(user).await, select).await
    };
    assert_eq!(
        both("crm_user").await,
        (Some(SCAN.to_vec()), Some(hex(SCAN))),
        "plaintext granted: as stored"
    );
    assert_eq!(
        both("support_user").await,
        (Some(b"****".to_vec()), Some(hex(b"****")))
    );
    let token = scan_pseudonym(docs);
    assert_eq!(
        both("analyst_user").await,
        (
            Some(token.clone().into_bytes()),
            Some(hex(token.as_bytes()))
        ),
        "the pseudonym its encrypted twin gets"
    );
    let support = docs.connect("support_user").await;
    let rows = copy_binary(&support, "scan", &[Type::BYTEA]).await.unwrap();
    assert!(rows.iter().all(|r| r[0].as_deref() != Some(SCAN)));
}
