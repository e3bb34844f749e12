//! COPY through pgveil in client encodings whose multibyte characters hold
//! ASCII bytes (GBK, BIG5), and with the CSV options that decide what is
//! NULL (FORCE_NOT_NULL, FORCE_NULL) or quoted (FORCE_QUOTE): what reaches
//! the database is ciphertext of the UTF-8 text, what readers get is what
//! PostgreSQL itself would have written.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

use common::crm::crm;
use common::{
    assert_success, copy_in, message, query, simple_rows, sqlstate, Cluster, RawClient, SUPERUSER,
    SUPERUSER_PASSWORD,
};

fn in_encoding(encoding: &str, text: &str) -> Vec<u8> {
    pgveil::text::encoding::ClientEncoding::from_pg_name(encoding)
        .encode(text)
        .into_owned()
}

/// psql in `encoding`, through pgveil as `crm_user` or directly to the
/// server as the superuser, running `sql` (written in `encoding`) with
/// `stdin`; its output bytes.
fn psql(encoding: &str, through_pgveil: bool, sql: &str, stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut command = if through_pgveil {
        common::psql(&crm().proxy.addr(), "crm_user", "pw", "postgres")
    } else {
        common::psql(
            &Cluster::shared().addr(),
            SUPERUSER,
            SUPERUSER_PASSWORD,
            "postgres",
        )
    };
    let mut child = command
        .env("PGCLIENTENCODING", encoding)
        .arg("-c")
        .arg(std::ffi::OsStr::from_bytes(&in_encoding(encoding, sql)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success("psql", &out);
    out.stdout
}

/// A simple query's rows, through pgveil as `crm_user`.
async fn rows(sql: &str) -> Vec<Vec<Option<String>>> {
    let app = crm().connect("crm_user").await;
    simple_rows(&app.simple_query(sql).await.unwrap())
}

/// The first column of [`rows`].
async fn column(sql: &str) -> Vec<Option<String>> {
    let rows = rows(sql).await;
    rows.into_iter().map(|mut row| row.remove(0)).collect()
}

/// Every protected value of a segment as stored, checked to be NULL or
/// ciphertext and to hold none of `plaintexts`.
fn assert_stored_encrypted(segment: &str, plaintexts: &[&str]) {
    let stored = Cluster::shared().psql_direct(&format!(
        "select concat_ws('|', coalesce(full_name, 'NULL'), coalesce(email, 'NULL'), \
         coalesce(phone, 'NULL')) from customers where segment = '{segment}' order by id"
    ));
    assert!(!stored.trim().is_empty(), "rows of {segment}");
    for value in stored.lines().flat_map(|line| line.split('|')) {
        assert!(
            value == "NULL" || value.starts_with("pgv1:"),
            "{segment}: {value:?} stored"
        );
    }
    for plaintext in plaintexts {
        assert!(!stored.contains(plaintext), "{plaintext} stored in clear");
    }
}

#[tokio::test]
async fn copy_from_stdin_in_gbk_and_big5_encrypts_the_utf8_text() {
    // 乗 is 81 5C in GBK and 許 B3 5C in BIG5: a backslash as their
    // second byte, before delimiters and line ends.
    assert_eq!(in_encoding("GBK", "乗"), b"\x81\x5c");
    assert_eq!(in_encoding("GBK", "癩"), b"\xb0\x5d");
    assert_eq!(in_encoding("BIG5", "許"), b"\xb3\x5c");
    let crm = crm();
    for (encoding, options, data, segment) in [
        (
            "GBK",
            "",
            "乗\tcopy-gbk\t乗@例子.中国乗\n癩乗\tcopy-gbk\tgbk2@example.org\n",
            "copy-gbk",
        ),
        (
            "BIG5",
            "(format csv, escape '\\')",
            "\"許功\",copy-big5,\"a許@example.org\"\n許,copy-big5,b@example.org許\n",
            "copy-big5",
        ),
    ] {
        let writer = crm.connect("crm_user").await;
        writer
            .batch_execute(&format!("set client_encoding to '{encoding}'"))
            .await
            .unwrap();
        let sql = format!("copy customers (full_name, segment, email) from stdin {options}");
        let data = in_encoding(encoding, data);
        // Split inside a character.
        let (a, b) = data.split_at(data.iter().position(|&b| b >= 0x80).unwrap() + 1);
        let rows = copy_in(&writer, &sql, [a, b]).await.unwrap();
        assert_eq!(rows, 2, "{encoding}");
        assert_stored_encrypted(segment, &["乗", "癩", "許", "例子", "gbk2", "example"]);
    }
    // A UTF-8 reader sees the same names, and finds them by e-mail.
    let names = column(
        "select full_name from customers where segment in ('copy-gbk', 'copy-big5') order by id",
    )
    .await;
    assert_eq!(
        names,
        ["乗", "癩乗", "許功", "許"]
            .map(|s| Some(s.to_owned()))
            .to_vec()
    );
    let found = column("select segment from customers where email = '乗@例子.中国乗'").await;
    assert_eq!(found, vec![Some("copy-gbk".to_owned())]);
    let found = column("select full_name from customers where email = 'b@example.org許'").await;
    assert_eq!(found, vec![Some("許".to_owned())]);
    // A GBK reader gets them in GBK.
    let out = psql(
        "GBK",
        true,
        "select full_name from customers where segment = 'copy-gbk' order by id",
        b"",
    );
    assert_eq!(out, in_encoding("GBK", "乗\n癩乗\n"));
    // Bytes that are no GBK character fail the COPY, which writes nothing.
    let writer = crm.connect("crm_user").await;
    writer
        .batch_execute("set client_encoding to 'GBK'")
        .await
        .unwrap();
    let err = copy_in(
        &writer,
        "copy customers (full_name, segment) from stdin",
        [&b"Fine\tbad-gbk\nSecret\x81\tbad-gbk\n"[..]],
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), Some("57014"), "CopyFail: {err}");
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.contains("pgveil:") && message.contains("line 2"),
        "{message}"
    );
    assert!(!message.contains("Secret"), "{message}");
    let stored =
        Cluster::shared().psql_direct("select count(*) from customers where segment = 'bad-gbk'");
    assert_eq!(stored.trim(), "0");
}

#[tokio::test]
async fn copy_data_is_read_in_the_encoding_in_force_when_it_starts() {
    let addr = crm().proxy.addr;
    Cluster::shared().psql_direct("grant crm_app to trust_user");
    let (mut raw, _) = RawClient::login(addr).await;
    // The COPY is sent before the server has answered the SET.
    raw.send(
        &[
            query("set client_encoding to 'GBK'"),
            query("copy customers (full_name, segment) from stdin"),
        ]
        .concat(),
    )
    .await;
    assert_eq!(raw.rows_until_ready().await.1, None);
    loop {
        match raw.expect_message().await {
            (b'G', _) => break,
            (tag, body) => assert_ne!(tag, b'E', "{}", String::from_utf8_lossy(&body)),
        }
    }
    let data = in_encoding("GBK", "乗\tpipelined-gbk\n");
    raw.send(&[message(b'd', &data), message(b'c', &[])].concat())
        .await;
    assert_eq!(raw.rows_until_ready().await.1, None);
    assert_stored_encrypted("pipelined-gbk", &["乗"]);
    let names = column("select full_name from customers where segment = 'pipelined-gbk'").await;
    assert_eq!(names, vec![Some("乗".to_owned())]);
}

#[tokio::test]
async fn psql_copy_in_big5_is_encrypted() {
    psql(
        "BIG5",
        true,
        "\\copy customers (full_name, segment) from stdin",
        &in_encoding("BIG5", "許\tpsql-big5\n功能\\t許\tpsql-big5\n"),
    );
    assert_stored_encrypted("psql-big5", &["許", "功能"]);
    let names =
        column("select full_name from customers where segment = 'psql-big5' order by id").await;
    assert_eq!(names, vec![Some("許".into()), Some("功能\t許".into())]);
}

#[tokio::test]
async fn copy_to_stdout_is_written_as_postgresql_writes_it_in_each_encoding() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    // 四 is A5 7C in BIG5: a '|' as its second byte.
    let names = ["許功", "四\\許", "Tab\tName, \"Q\"", ""];
    for name in names {
        app.execute(
            "insert into customers (full_name, segment) values ($1, 'copy-out-enc')",
            &[&name],
        )
        .await
        .unwrap();
    }
    let values: Vec<String> = names
        .iter()
        .map(|n| format!("('{}', 'copy-out-enc')", n.replace('\'', "''")))
        .collect();
    for encoding in ["UTF8", "BIG5", "GBK"] {
        for options in [
            "(delimiter '|')",
            "(format csv)",
            "(format csv, force_quote *)",
            "(format csv, force_quote (full_name), delimiter '|')",
            "(format csv, escape '\\', quote '|')",
        ] {
            let through = psql(
                encoding,
                true,
                &format!(
                    "copy (select full_name, segment from customers where segment = 'copy-out-enc' \
                     order by id) to stdout {options}"
                ),
                b"",
            );
            let reference = psql(
                encoding,
                false,
                &format!(
                    "copy (select * from (values {}) v (full_name, segment)) to stdout {options}",
                    values.join(", ")
                ),
                b"",
            );
            assert_eq!(
                String::from_utf8_lossy(&through),
                String::from_utf8_lossy(&reference),
                "{encoding} {options}"
            );
            assert_eq!(through, reference, "{encoding} {options}");
        }
    }
}

#[tokio::test]
async fn force_not_null_and_force_null_are_honoured_as_postgresql_does() {
    let crm = crm();
    Cluster::shared().psql_direct(
        "create table if not exists force_twin (id bigserial, full_name text, email text, \
         phone text, segment text); grant all on force_twin, force_twin_id_seq to crm_app",
    );
    let app = crm.connect("crm_user").await;
    let data =
        ",a@example.org,\"\",SEG\n\"\",\"\",,SEG\nNA,\"NA\",NA,SEG\n\"NA\",N\"A\",\"\",SEG\n";
    for (i, options) in [
        "(format csv, force_not_null (full_name, email), force_null (phone))",
        "(format csv, null 'NA', force_not_null (full_name), force_null (email, phone))",
        "(format csv, force_null (full_name, email, phone))",
        "(format csv, null 'NA', force_not_null (full_name, email, phone), force_null (full_name))",
    ]
    .into_iter()
    .enumerate()
    {
        let segment = format!("force-{i}");
        for table in ["customers", "force_twin"] {
            let sql =
                format!("copy {table} (full_name, email, phone, segment) from stdin {options}");
            let data = data.replace("SEG", &segment);
            let rows = copy_in(&app, &sql, [data.as_bytes()]).await.unwrap();
            assert_eq!(rows, 4, "{options}");
        }
        assert_stored_encrypted(&segment, &["a@example.org"]);
        let stored = Cluster::shared().psql_direct(&format!(
            "select count(*) from customers where segment = '{segment}' and \
             ('' in (full_name, email, phone) or 'NA' in (full_name, email, phone))"
        ));
        assert_eq!(
            stored.trim(),
            "0",
            "{options}: empty strings are encrypted too"
        );
        // What pgveil stored reads back as what PostgreSQL stores.
        let read = |table: &str| {
            format!(
                "select full_name, email, phone from {table} where segment = '{segment}' order by id"
            )
        };
        let through = rows(&read("customers")).await;
        let twin = rows(&read("force_twin")).await;
        assert_eq!(through, twin, "{options}");
    }
}
