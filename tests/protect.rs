//! Writing and searching protected columns through pgveil: values reach
//! PostgreSQL only as ciphertext, authorized readers get them back, equality
//! search works on deterministic columns, unsafe statements are refused
//! with a clear error and write nothing, and the declared purpose governs
//! plaintext.

mod common;

use common::crm::crm;
use common::{
    message, query, simple_rows, sqlstate, Cluster, RawClient, SUPERUSER, SUPERUSER_PASSWORD,
};
use tokio_postgres::SimpleQueryMessage;

/// Every value of customer `id` as PostgreSQL itself stores it.
fn stored(id: i64) -> String {
    Cluster::shared().psql_direct(&format!(
        "select concat_ws('|', full_name, email, phone, national_id, address) from customers where id = {id}"
    ))
}

fn first_row(messages: &[SimpleQueryMessage]) -> Vec<Option<String>> {
    simple_rows(messages).into_iter().next().expect("a row")
}

/// Checks that pgveil refuses `sql` (simple protocol) with 0A000 and a
/// message naming `column` and quoting none of `secrets`.
async fn assert_refused(app: &tokio_postgres::Client, sql: &str, column: &str, secrets: &[&str]) {
    let err = app.simple_query(sql).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"), "{sql}: {err}");
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.starts_with("pgveil:") && message.contains(column),
        "{message}"
    );
    for secret in secrets {
        assert!(!message.contains(secret), "{message}");
    }
}

fn count_where(condition: &str) -> i64 {
    Cluster::shared()
        .psql_direct(&format!("select count(*) from customers where {condition}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn simple_protocol_insert_is_encrypted_and_read_back() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let rows = app
        .simple_query(
            "insert into customers (full_name, email, phone, address, segment) \
             values ('王芳', 'wang.fang@example.com', E'+852 9123\\x204567', $$1 Queen's Road$$, 'gold') \
             returning id, email",
        )
        .await
        .unwrap();
    let row = first_row(&rows);
    let id: i64 = row[0].as_deref().unwrap().parse().unwrap();
    assert_eq!(
        row[1].as_deref(),
        Some("wang.fang@example.com"),
        "RETURNING is revealed"
    );
    let raw = stored(id);
    for plain in ["王芳", "wang.fang", "9123", "Queen"] {
        assert!(!raw.contains(plain), "{plain} stored in clear: {raw}");
    }
    assert!(raw.starts_with("pgv1:"), "{raw}");
    let back = first_row(
        &app.simple_query(&format!(
            "select full_name, email, phone, address, segment from customers where id = {id}"
        ))
        .await
        .unwrap(),
    );
    let expected = [
        "王芳",
        "wang.fang@example.com",
        "+852 9123 4567",
        "1 Queen's Road",
        "gold",
    ];
    assert_eq!(back, expected.map(|s| Some(s.to_owned())).to_vec());
}

#[tokio::test]
async fn extended_protocol_parameters_are_encrypted_and_searchable() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let insert = app
        .prepare("insert into customers (full_name, email, phone) values ($1, $2, $3) returning id")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let email = format!("param{i}@example.com");
        let row = app
            .query_one(&insert, &[&"李雷", &email, &"+86 139 0000 0000"])
            .await
            .unwrap();
        ids.push(row.get::<_, i64>(0));
    }
    for id in &ids {
        assert!(!stored(*id).contains("example.com"));
    }
    // Equality search with a parameter and with a literal, on the
    // deterministic email column.
    let row = app
        .query_one(
            "select id, full_name from customers where email = $1",
            &[&"param1@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), ids[1]);
    assert_eq!(row.get::<_, &str>(1), "李雷");
    let rows = app
        .simple_query("select id from customers where email in ('param0@example.com', 'param2@example.com') order by id")
        .await
        .unwrap();
    let found: Vec<i64> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(found, vec![ids[0], ids[2]]);
    // UPDATE with a parameter, as support may.
    let support = crm.connect("support_user").await;
    let n = support
        .execute(
            "update customers set phone = $1 where id = $2",
            &[&"+86 139 1111 2222", &ids[0]],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(!stored(ids[0]).contains("1111"));
    let phone: String = app
        .query_one("select phone from customers where id = $1", &[&ids[0]])
        .await
        .unwrap()
        .get(0);
    assert_eq!(phone, "+86 139 1111 2222");
}

#[tokio::test]
async fn unsafe_statements_are_refused_and_write_nothing() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    for (sql, column) in [
        (
            "insert into customers (email, segment) values (lower('X@EXAMPLE.COM'), 'refused')",
            "public.customers.email",
        ),
        (
            "insert into customers (full_name, segment) select 'x', 'refused' from generate_series(1, 3)",
            "public.customers.full_name",
        ),
        (
            "select id from customers order by full_name",
            "public.customers.full_name",
        ),
        (
            "select id from customers where email like '%@example.com'",
            "public.customers.email",
        ),
        (
            "select id from customers where full_name = 'Alice'",
            "public.customers.full_name",
        ),
    ] {
        assert_refused(&app, sql, column, &["X@EXAMPLE", "Alice"]).await;
    }
    // The same through the extended protocol; the session goes on.
    let err = app
        .query("select id from customers where email like $1", &[&"%x%"])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"), "{err}");
    let one: i32 = app.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        count_where("segment = 'refused'"),
        0,
        "a refused statement wrote nothing"
    );
}

#[tokio::test]
async fn a_refusal_aborts_the_transaction_like_an_error() {
    let crm = crm();
    let mut app = crm.connect("crm_user").await;
    let tx = app.transaction().await.unwrap();
    tx.execute("insert into customers (segment) values ('tx-test')", &[])
        .await
        .unwrap();
    let err = tx
        .execute(
            "insert into customers (email) values (upper($1))",
            &[&"a@b.c"],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"));
    let err = tx.execute("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("25P02"), "the transaction is aborted");
    // COMMIT of an aborted transaction rolls it back.
    tx.commit().await.unwrap();
    assert_eq!(count_where("segment = 'tx-test'"), 0);
}

async fn national_id(app: &tokio_postgres::Client, id: i64) -> Option<String> {
    let sql = format!("select national_id from customers where id = {id}");
    first_row(&app.simple_query(&sql).await.unwrap())[0].clone()
}

#[tokio::test]
async fn national_id_needs_the_declared_purpose() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let id: i64 = app
        .query_one(
            "insert into customers (national_id) values ($1) returning id",
            &[&"110101199003071234"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        national_id(&app, id).await,
        None,
        "no purpose: the default (null)"
    );
    app.batch_execute("set pgveil.purpose = 'kyc'")
        .await
        .unwrap();
    assert_eq!(
        national_id(&app, id).await.as_deref(),
        Some("110101199003071234")
    );
    app.batch_execute("reset pgveil.purpose").await.unwrap();
    assert_eq!(national_id(&app, id).await, None);
    // SET LOCAL lasts until the transaction ends.
    app.batch_execute("begin; select set_config('pgveil.purpose', 'kyc', true)")
        .await
        .unwrap();
    assert_eq!(
        national_id(&app, id).await.as_deref(),
        Some("110101199003071234")
    );
    app.batch_execute("commit").await.unwrap();
    assert_eq!(national_id(&app, id).await, None);
    // A purpose set in a transaction that rolls back is undone.
    app.batch_execute("begin; set pgveil.purpose = 'kyc'; rollback")
        .await
        .unwrap();
    assert_eq!(national_id(&app, id).await, None);
    // So is one followed by an error in the same query.
    app.batch_execute("set pgveil.purpose = 'kyc'; select 1/0")
        .await
        .unwrap_err();
    assert_eq!(national_id(&app, id).await, None);
    // Another purpose is not enough.
    app.batch_execute("set pgveil.purpose = 'marketing'")
        .await
        .unwrap();
    assert_eq!(national_id(&app, id).await, None);
}

#[tokio::test]
async fn the_dba_sees_only_ciphertext_directly() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    app.execute(
        "insert into customers (email, full_name) values ($1, $2)",
        &[&"dba.check@example.com", &"Secret Person"],
    )
    .await
    .unwrap();
    let rows = common::direct()
        .await
        .query(
            "select coalesce(email, '') || coalesce(full_name, '') from customers",
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let value: String = row.get(0);
        assert!(!value.contains("dba.check") && !value.contains("Secret Person"));
    }
}

/// psql through pgveil as `crm_user` in `encoding`, with raw statement
/// bytes; returns raw output bytes.
fn psql_in(encoding: &str, sql: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let out = common::psql(&crm().proxy.addr(), "crm_user", "pw", "postgres")
        .env("PGCLIENTENCODING", encoding)
        .arg("-c")
        .arg(std::ffi::OsStr::from_bytes(sql))
        .output()
        .unwrap();
    common::assert_success("psql", &out);
    out.stdout
}

fn in_encoding(encoding: &str, text: &str) -> Vec<u8> {
    pgveil::text::encoding::ClientEncoding::from_pg_name(encoding)
        .encode(text)
        .into_owned()
}

#[tokio::test]
async fn gbk_and_big5_clients_share_plaintext_with_utf8_clients() {
    let crm = crm();
    let mut insert = b"insert into customers (full_name, email) values ('".to_vec();
    insert.extend(in_encoding("GBK", "张伟"));
    insert.extend(b"', 'gbk.writer@example.com')");
    psql_in("GBK", &insert);
    let mut insert = b"insert into customers (full_name, email) values ('".to_vec();
    insert.extend(in_encoding("BIG5", "陳大文"));
    insert.extend(b"', 'big5.writer@example.com')");
    psql_in("BIG5", &insert);

    let app = crm.connect("crm_user").await;
    let name = |email: &'static str| {
        let app = &app;
        async move {
            app.query_one(
                "select full_name from customers where email = $1",
                &[&email],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    assert_eq!(name("gbk.writer@example.com").await, "张伟");
    assert_eq!(name("big5.writer@example.com").await, "陳大文");
    // Each reader gets the name in its own encoding.
    let out = psql_in(
        "BIG5",
        b"select full_name from customers where email = 'big5.writer@example.com'",
    );
    assert_eq!(
        out,
        [in_encoding("BIG5", "陳大文"), b"\n".to_vec()].concat()
    );
    let out = psql_in(
        "GBK",
        b"select full_name from customers where email = 'gbk.writer@example.com'",
    );
    assert_eq!(out, [in_encoding("GBK", "张伟"), b"\n".to_vec()].concat());
    let stored = Cluster::shared().psql_direct("select string_agg(full_name, ',') from customers");
    assert!(!stored.contains("张伟") && !stored.contains("陳大文"));
}

#[tokio::test]
async fn insert_without_a_column_list_uses_the_catalog_order() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let rows = app
        .simple_query(
            "insert into customers values \
             (default, 'No List', 'nocols@example.com', '+1 555 0100', null, '1 Main St', 'std', default) \
             returning id",
        )
        .await
        .unwrap();
    let id: i64 = first_row(&rows)[0].as_deref().unwrap().parse().unwrap();
    let raw = stored(id);
    assert!(
        !raw.contains("nocols") && !raw.contains("No List") && !raw.contains("Main St"),
        "{raw}"
    );
    let row = app
        .query_one(
            "select full_name, segment from customers where email = $1",
            &[&"nocols@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, &str>(1)),
        ("No List", "std")
    );
}

/// All rows' first column of a simple query, as text.
async fn column(client: &tokio_postgres::Client, sql: &str) -> Vec<Option<String>> {
    let messages = client.simple_query(sql).await.unwrap();
    simple_rows(&messages)
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect()
}

#[tokio::test]
async fn values_are_revealed_wherever_they_appear_in_results() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    app.batch_execute(
        "insert into customers (email, full_name, segment) values ('everywhere@example.com', 'Every Where', 'seg-x')",
    )
    .await
    .unwrap();
    let cond = "email = 'everywhere@example.com'";
    let expect = vec![Some("everywhere@example.com".to_owned())];
    for sql in [
        format!("select coalesce(email, 'none') from customers where {cond}"),
        format!("select e from (select email as e from customers where {cond}) sub"),
        format!("with c as (select email from customers where {cond}) select email from c"),
        format!("select email from customers where {cond} union all select email from customers where false"),
        format!("select a.email from customers a join customers b on a.email = b.email where a.{cond}"),
    ] {
        assert_eq!(column(&app, &sql).await, expect, "{sql}");
    }
    // A view, a cursor and SQL-level PREPARE/EXECUTE.
    Cluster::shared().psql_direct(
        "create or replace view customer_emails as select id, email from customers; \
         grant select on customer_emails to crm_app",
    );
    let ids = column(&app, &format!("select id from customers where {cond}")).await;
    let id = ids[0].clone().unwrap();
    assert_eq!(
        column(
            &app,
            &format!("select email from customer_emails where id = {id}")
        )
        .await,
        expect
    );
    app.batch_execute(&format!(
        "begin; declare cur cursor for select email from customers where {cond}"
    ))
    .await
    .unwrap();
    assert_eq!(column(&app, "fetch 1 from cur").await, expect);
    app.batch_execute("commit").await.unwrap();
    app.batch_execute(
        "prepare by_email (text) as select full_name from customers where email = $1",
    )
    .await
    .unwrap();
    assert_eq!(
        column(&app, "execute by_email ('everywhere@example.com')").await,
        vec![Some("Every Where".to_owned())]
    );
    app.batch_execute("prepare add_customer (text, text) as insert into customers (email, segment) values ($1, $2)")
        .await
        .unwrap();
    app.batch_execute("execute add_customer ('executed@example.com', 'seg-y')")
        .await
        .unwrap();
    let raw = Cluster::shared()
        .psql_direct("select string_agg(email, ',') from customers where segment = 'seg-y'");
    assert!(
        raw.starts_with("pgv1:") && !raw.contains("executed@"),
        "{raw}"
    );
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

/// After a CRM workload through pgveil (simple and extended inserts,
/// updates, searches, a refused statement), none of its plaintext is in a
/// dump of the database, nor anywhere in the cluster's files: tables, WAL,
/// server log.
#[tokio::test]
async fn no_plaintext_reaches_the_database_dump_wal_or_log() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let secrets = [
        "Leak Canary Person",
        "leak.canary@example.net",
        "+49 30 55501234",
        "LEAKID987654321",
        "77 Canary Wharf Lane",
        "Updated Canary Phone 0099",
        "金丝雀测试",
    ];
    app.batch_execute(&format!(
        "insert into customers (full_name, email, phone, national_id, address, segment) \
         values ('{}', '{}', '{}', '{}', '{}', 'CanaryVisibleSegment')",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
    ))
    .await
    .unwrap();
    app.execute(
        "insert into customers (full_name, email) values ($1, $2)",
        &[&secrets[6], &"canary2@example.net"],
    )
    .await
    .unwrap();
    app.execute(
        "update customers set phone = $1 where email = $2",
        &[&secrets[5], &secrets[1]],
    )
    .await
    .unwrap();
    app.simple_query(&format!(
        "select * from customers where email = '{}'",
        secrets[1]
    ))
    .await
    .unwrap();
    // Refused, and so never sent: its literal must not reach the server log.
    app.simple_query(&format!(
        "select * from customers where full_name like '{}%'",
        secrets[0]
    ))
    .await
    .unwrap_err();
    Cluster::shared().psql_direct("checkpoint");

    let (host, port) = Cluster::shared()
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let dump = std::process::Command::new("pg_dump")
        .args(["-h", &host, "-p", &port, "-U", SUPERUSER, "postgres"])
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    common::assert_success("pg_dump", &dump);
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("pgv1:"), "the dump holds ciphertext");
    // The scan works: the unprotected column's value is found in the files.
    assert!(!files_containing(Cluster::shared().dir(), b"CanaryVisibleSegment").is_empty());
    for secret in secrets {
        assert!(!dump.contains(secret), "{secret} is in the dump");
        let found = files_containing(Cluster::shared().dir(), secret.as_bytes());
        assert!(found.is_empty(), "{secret} is in {found:?}");
    }
}

#[tokio::test]
async fn copy_from_stdin_is_encrypted_in_text_and_csv() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    for (format, data) in [
        (
            "text",
            "Copy Text One\tcopy.text1@example.org\t+1 555 0001\tcopy-seg\nCopy\\tTab\tcopy.text2@example.org\t\\N\tcopy-seg\n",
        ),
        (
            "csv",
            "\"Copy, Csv\",copy.csv1@example.org,\"+1 555 0003\",copy-seg\n赵六,copy.csv2@example.org,,copy-seg\n",
        ),
    ] {
        let sql = format!(
            "copy customers (full_name, email, phone, segment) from stdin (format {format})"
        );
        // Rows split across CopyData messages.
        let (a, b) = data.as_bytes().split_at(data.len() / 2 + 3);
        let copied = common::copy_in(&app, &sql, [a, b]).await.unwrap();
        assert_eq!(copied, 2, "{format}");
    }
    let raw = Cluster::shared().psql_direct("select string_agg(concat_ws('|', full_name, email, phone), ';') from customers where segment = 'copy-seg'");
    for plain in ["Copy Text", "copy.text1", "Copy, Csv", "赵六", "555 0003"] {
        assert!(!raw.contains(plain), "{plain} stored in clear");
    }
    let names = column(
        &app,
        "select full_name from customers where segment = 'copy-seg' order by id",
    )
    .await;
    assert_eq!(
        names,
        ["Copy Text One", "Copy\tTab", "Copy, Csv", "赵六"]
            .map(|s| Some(s.to_owned()))
            .to_vec()
    );
    let phones = column(
        &app,
        "select phone from customers where email = 'copy.text2@example.org'",
    )
    .await;
    assert_eq!(phones, vec![None], "\\N stays NULL");
    let phones = column(
        &app,
        "select phone from customers where email = 'copy.csv2@example.org'",
    )
    .await;
    assert_eq!(phones, vec![None], "an empty unquoted CSV field is NULL");
}

#[tokio::test]
async fn copy_data_that_cannot_be_encrypted_fails_the_copy_and_writes_nothing() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let data = b"Good Row\tgood@x.org\tbad-copy\nBad Row Secret\tonly-two-fields\n";
    let sql = "copy customers (full_name, email, segment) from stdin";
    let err = common::copy_in(&app, sql, [&data[..]]).await.unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("pgveil:") && message.contains("fields"),
        "{err}"
    );
    assert!(!message.contains("Secret"));
    assert_eq!(count_where("segment = 'bad-copy'"), 0);
    let one: i32 = app.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// Binary COPY data of a query, as PostgreSQL itself writes it.
async fn binary_data(query: &str) -> Vec<u8> {
    let sql = format!("copy ({query}) to stdout (format binary)");
    common::copy_out(&common::direct().await, &sql).await
}

/// Sends `data` into a binary COPY through pgveil in CopyData messages of
/// seven bytes, cutting the header and every tuple.
async fn binary_copy_in(
    app: &tokio_postgres::Client,
    data: &[u8],
) -> Result<u64, tokio_postgres::Error> {
    let sql = "copy customers (full_name, email, segment) from stdin (format binary)";
    common::copy_in(app, sql, data.chunks(7)).await
}

#[tokio::test]
async fn binary_copy_from_stdin_is_encrypted_and_a_bad_tuple_writes_nothing() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let data = binary_data(
        "values ('Binary Copier', 'binary.copy@example.org', 'bin-copy'), \
         ('钱八', 'binary.copy2@example.org', 'bin-copy'), (null, null, 'bin-copy')",
    )
    .await;
    assert_eq!(binary_copy_in(&app, &data).await.unwrap(), 3);
    let raw = Cluster::shared().psql_direct(
        "select string_agg(full_name || email, ';') from customers where segment = 'bin-copy'",
    );
    assert!(
        raw.starts_with("pgv1:") && !raw.contains("Binary Copier") && !raw.contains("binary.copy"),
        "{raw}"
    );
    let names = column(
        &app,
        "select full_name from customers where email = 'binary.copy2@example.org'",
    )
    .await;
    assert_eq!(names, [Some("钱八".to_owned())]);
    // A tuple of two fields for three columns fails the COPY: nothing of it
    // is written, not even the good tuple before it.
    let mut bad = binary_data("values ('Good Row', 'good.bin@example.org', 'bin-bad')").await;
    let two = binary_data("values ('Secret Two', 'bin-bad')").await;
    bad.truncate(bad.len() - 2);
    bad.extend_from_slice(&two[19..]);
    let err = binary_copy_in(&app, &bad).await.unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap();
    assert!(
        message.contains("line 2 of the COPY data has 2 fields, expected 3"),
        "{message}"
    );
    assert!(!message.contains("Secret"));
    assert_eq!(count_where("segment = 'bin-bad'"), 0);
}

async fn binary_copy_out(client: &tokio_postgres::Client) -> Vec<Vec<Option<String>>> {
    use tokio_postgres::types::Type;
    let sql = "copy (select full_name, email, segment from customers where segment = 'bin-out') \
               to stdout (format binary)";
    let rows = common::binary_copy_out(client, sql, &[Type::TEXT, Type::TEXT, Type::TEXT]);
    let text = |value: Option<Vec<u8>>| value.map(|v| String::from_utf8(v).unwrap());
    rows.await
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(text).collect())
        .collect()
}

#[tokio::test]
async fn binary_copy_to_stdout_is_revealed_per_role() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    app.batch_execute(
        "insert into customers (full_name, email, segment) values \
         ('Binary Reader', 'binary.reader@example.org', 'bin-out')",
    )
    .await
    .unwrap();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        binary_copy_out(&app).await,
        [vec![
            some("Binary Reader"),
            some("binary.reader@example.org"),
            some("bin-out")
        ]]
    );
    let support = crm.connect("support_user").await;
    assert_eq!(
        binary_copy_out(&support).await,
        [vec![
            some(&crm.mask("full_name", "Binary Reader")),
            some(&crm.mask("email", "binary.reader@example.org")),
            some("bin-out")
        ]]
    );
    let analyst = crm.connect("analyst_user").await;
    let row = binary_copy_out(&analyst).await.remove(0);
    assert_eq!(row[0], None, "no name for analysts");
    assert!(row[1].as_deref().unwrap().starts_with("pgvp_"), "{row:?}");
}

#[test]
fn psql_binary_copy_to_a_file_is_revealed_per_role() {
    let crm = crm();
    Cluster::shared()
        .psql_direct("create table binary_check (reader text, full_name text, email text)");
    let out = common::psql(&crm.proxy.addr(), "crm_user", "pw", "postgres")
        .args([
            "-c",
            "insert into customers (full_name, email, segment) \
             values ('Psql Binary', 'psql.binary@example.org', 'psql-bin')",
        ])
        .output()
        .unwrap();
    common::assert_success("psql insert", &out);
    let dir = tempfile::tempdir().unwrap();
    for user in ["crm_user", "support_user"] {
        let file = dir.path().join(format!("{user}.bin"));
        let file = file.to_str().unwrap();
        let out = common::psql(&crm.proxy.addr(), user, "pw", "postgres")
            .args([
                "-c",
                &format!(
                    "\\copy (select '{user}', full_name, email from customers \
                     where segment = 'psql-bin') to '{file}' with (format binary)"
                ),
            ])
            .output()
            .unwrap();
        common::assert_success("psql \\copy", &out);
        // Read the file back directly: what pgveil gave the reader.
        Cluster::shared().psql_direct(&format!(
            "\\copy binary_check from '{file}' with (format binary)"
        ));
    }
    let seen = Cluster::shared().psql_direct(
        "select reader || '|' || full_name || '|' || email from binary_check order by 1",
    );
    assert_eq!(
        seen,
        format!(
            "crm_user|Psql Binary|psql.binary@example.org\nsupport_user|{}|{}\n",
            crm.mask("full_name", "Psql Binary"),
            crm.mask("email", "psql.binary@example.org")
        )
    );
}

#[tokio::test]
async fn execute_of_a_prepared_insert_is_encrypted_wherever_it_appears() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    app.batch_execute(
        "prepare add_exec (text) as insert into customers (email, segment) values ($1, 'exec-seg'); \
         execute add_exec ('same.text@example.org')",
    )
    .await
    .unwrap();
    app.batch_execute("select 1; execute add_exec ('after.other@example.org')")
        .await
        .unwrap();
    app.batch_execute("begin; explain analyze execute add_exec ('explained@example.org'); commit")
        .await
        .unwrap();
    // Through the extended protocol, and a PREPARE sent that way.
    app.execute("execute add_exec ('extended@example.org')", &[])
        .await
        .unwrap();
    app.execute(
        "prepare add_ext (text) as insert into customers (email, segment) values ($1, 'exec-seg')",
        &[],
    )
    .await
    .unwrap();
    app.batch_execute("execute add_ext ('prepared.extended@example.org')")
        .await
        .unwrap();
    let raw = Cluster::shared().psql_direct(
        "select count(*) || ' ' || string_agg(email, ';') from customers where segment = 'exec-seg'",
    );
    assert!(
        raw.starts_with("5 pgv1:") && !raw.contains("@example.org"),
        "{raw}"
    );
    let emails = column(
        &app,
        "select email from customers where segment = 'exec-seg' order by id",
    )
    .await;
    assert_eq!(
        emails,
        [
            "same.text@example.org",
            "after.other@example.org",
            "explained@example.org",
            "extended@example.org",
            "prepared.extended@example.org"
        ]
        .map(|s| Some(s.to_owned()))
    );
}

#[test]
fn psql_copy_from_stdin_uses_the_simple_protocol_and_is_encrypted() {
    use std::io::Write;
    let crm = crm();
    let mut child = common::psql(&crm.proxy.addr(), "crm_user", "pw", "postgres")
        .args([
            "-c",
            "\\copy customers (full_name, email, segment) from stdin with (format csv)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            "Psql Copier,psql.copy@example.org,psql-copy\n孙七,psql.copy2@example.org,psql-copy\n"
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    common::assert_success("psql \\copy", &out);
    let raw = Cluster::shared().psql_direct(
        "select string_agg(full_name || email, ';') from customers where segment = 'psql-copy'",
    );
    assert!(
        !raw.contains("Psql Copier") && !raw.contains("孙七") && raw.contains("pgv1:"),
        "{raw}"
    );
    let out = common::psql(&crm.proxy.addr(), "crm_user", "pw", "postgres")
        .args([
            "-c",
            "select full_name from customers where email = 'psql.copy2@example.org'",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "孙七");
}

async fn copy(client: &tokio_postgres::Client, format: &str) -> String {
    use futures_util::TryStreamExt;
    let sql = format!(
        "copy (select full_name, email, segment from customers where segment = 'copy-out') to stdout (format {format})"
    );
    let chunks: Vec<bytes::Bytes> = client
        .copy_out(&sql)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

#[tokio::test]
async fn copy_to_stdout_is_revealed_per_role_in_text_and_csv() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    app.batch_execute(
        "insert into customers (full_name, email, segment) values (E'Tab\\tName, \"Q\"', 'copyout@example.org', 'copy-out')",
    )
    .await
    .unwrap();
    assert_eq!(
        copy(&app, "text").await,
        "Tab\\tName, \"Q\"\tcopyout@example.org\tcopy-out\n"
    );
    assert_eq!(
        copy(&app, "csv").await,
        "\"Tab\tName, \"\"Q\"\"\",copyout@example.org,copy-out\n"
    );
    let support = crm.connect("support_user").await;
    let masked = copy(&support, "text").await;
    assert!(
        masked.contains(&crm.mask("email", "copyout@example.org")),
        "{masked}"
    );
    // psql's COPY TO uses the simple protocol.
    let out = common::psql(&crm.proxy.addr(), "crm_user", "pw", "postgres")
        .args([
            "-c",
            "copy (select email from customers where segment = 'copy-out') to stdout",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "copyout@example.org\n"
    );
}

#[tokio::test]
async fn upsert_encrypts_both_the_insert_and_the_update() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let id: i64 = app
        .query_one(
            "insert into customers (email, segment) values ('upsert1@example.org', 'upsert') returning id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    app.batch_execute(&format!(
        "insert into customers (id, email, phone, segment) values ({id}, 'upsert2@example.org', '+1 555 0777', 'upsert') \
         on conflict (id) do update set email = excluded.email, phone = '+1 555 0888'"
    ))
    .await
    .unwrap();
    let raw = stored(id);
    assert!(!raw.contains("upsert2") && !raw.contains("0888"), "{raw}");
    let row = app
        .query_one("select email, phone from customers where id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, &str>(1)),
        ("upsert2@example.org", "+1 555 0888")
    );
}

/// The ids of rows whose first column is an id.
fn ids_of(rows: &[tokio_postgres::Row]) -> Vec<i64> {
    rows.iter().map(|r| r.get::<_, i64>(0)).collect()
}

/// The ids a simple query returns in its first column.
async fn simple_ids(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    let rows = client.simple_query(sql).await.unwrap();
    simple_rows(&rows)
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn equality_with_any_array_encrypts_every_element() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let row = app
            .query_one(
                "insert into customers (email, segment) values ($1, 'any-test') returning id",
                &[&format!("any{i}@example.com")],
            )
            .await
            .unwrap();
        ids.push(row.get::<_, i64>(0));
    }
    // A text[] parameter (binary format, as tokio-postgres and asyncpg send it).
    let emails = vec!["any0@example.com", "any2@example.com"];
    let rows = app
        .query(
            "select id from customers where email = any($1) order by id",
            &[&emails],
        )
        .await
        .unwrap();
    assert_eq!(ids_of(&rows), vec![ids[0], ids[2]]);
    // Literal arrays, as client-side binding writes them.
    for array in [
        r#"'{any0@example.com, "any2@example.com"}'"#,
        r#"E'{"any0@example.com",any2@example.com}'::text[]"#,
        "array['any0@example.com', 'any2@example.com']",
        "array[$$any0@example.com$$, 'any2@example.com']::text[]",
    ] {
        let sql = format!("select id from customers where email = any({array}) order by id");
        assert_eq!(
            simple_ids(&app, &sql).await,
            vec![ids[0], ids[2]],
            "{array}"
        );
    }
    let sql = "select id from customers where segment = 'any-test' \
               and email <> all('{any0@example.com,any1@example.com}') order by id";
    assert_eq!(simple_ids(&app, sql).await, vec![ids[2]]);
    // SQL PREPARE / EXECUTE with the array as the argument.
    app.simple_query(
        "prepare by_emails(text[]) as select id from customers where email = any($1) order by id",
    )
    .await
    .unwrap();
    let sql = "execute by_emails('{any1@example.com,any2@example.com}')";
    assert_eq!(simple_ids(&app, sql).await, vec![ids[1], ids[2]]);
    // What cannot be encrypted element by element is refused.
    for (sql, column) in [
        (
            "select id from customers where full_name = any('{Alice}')",
            "public.customers.full_name",
        ),
        (
            "select id from customers where email = any('{{a@b.c},{Alice@b.c}}')",
            "public.customers.email",
        ),
        (
            "select id from customers where email = any(string_to_array('Alice@b.c', ','))",
            "public.customers.email",
        ),
    ] {
        assert_refused(&app, sql, column, &["Alice"]).await;
    }
    let err = app
        .query(
            "select id from customers where full_name = any($1)",
            &[&emails],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"), "{err}");
}

#[tokio::test]
async fn orm_batch_inserts_through_select_are_encrypted() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let names = vec!["Ünnest Eins", "Ünnest Zwei"];
    let emails = vec!["unnest1@example.com", "unnest2@example.com"];
    let segments = vec!["batch-test", "batch-test"];
    // Django's bulk_create: arrays as parameters...
    let mut ids = ids_of(
        &app.query(
            "insert into \"customers\" (\"full_name\", \"email\", \"segment\") \
             select * from unnest(($1)::text[], ($2)::text[], ($3)::text[]) returning \"customers\".\"id\"",
            &[&names, &emails, &segments],
        )
        .await
        .unwrap(),
    );
    // ... and as literals (client-side binding).
    ids.extend(
        simple_ids(
            &app,
            "insert into \"customers\" (\"full_name\", \"email\", \"segment\") \
             select * from unnest(('{\"Ünnest Drei\"}')::text[], (E'{unnest3@example.com}')::text[], \
             ('{batch-test}')::text[]) returning \"customers\".\"id\"",
        )
        .await,
    );
    // SQLAlchemy's insertmanyvalues, with parameters and with literals.
    ids.extend(ids_of(
        &app.query(
            "INSERT INTO public.customers (full_name, email, segment) SELECT p0::TEXT, p1::TEXT, p2::TEXT \
             FROM (VALUES ($1, $2, $3, 0), ($4, $5, $6, 1)) AS imp_sen(p0, p1, p2, sen_counter) \
             ORDER BY sen_counter RETURNING public.customers.id, public.customers.id AS id__1",
            &[
                &"Values Vier", &"values4@example.com", &"batch-test",
                &"Values Fünf", &"values5@example.com", &"batch-test",
            ],
        )
        .await
        .unwrap(),
    ));
    ids.extend(
        simple_ids(
            &app,
            "INSERT INTO public.customers (full_name, email, segment) SELECT imp_sen.p0::TEXT, p1, p2 \
             FROM (VALUES ('Values Sechs', 'values6@example.com', 'batch-test', 0)) \
             AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING id",
        )
        .await,
    );
    assert_eq!(ids.len(), 6);
    for id in &ids {
        let raw = stored(*id);
        assert!(raw.starts_with("pgv1:"), "{raw}");
        for plain in ["nnest", "Values", "example.com"] {
            assert!(!raw.contains(plain), "{plain} stored in clear: {raw}");
        }
    }
    let found = app
        .query(
            "select id, full_name from customers where email = $1",
            &[&"values5@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(found[0].get::<_, i64>(0), ids[4]);
    assert_eq!(found[0].get::<_, &str>(1), "Values Fünf");
    assert_eq!(count_where("segment = 'batch-test'"), 6);
    // Other INSERT ... SELECT shapes stay refused and write nothing.
    for sql in [
        "insert into customers (email, segment) select lower(p0), p1 \
         from (values ('Alice@b.c', 'batch-refused')) as t(p0, p1)",
        "insert into customers (email, phone, segment) select p0, p0, p1 \
         from (values ('Alice@b.c', 'batch-refused')) as t(p0, p1)",
        "insert into customers (email, segment) select * \
         from unnest('{Alice@b.c}'::text[], '{batch-refused}'::text[]) with ordinality",
        "insert into customers (email, segment) select * \
         from unnest('{Alice@b.c}'::text[], '{batch-refused}'::text[]) limit 1",
        "insert into customers (email, segment) select * \
         from unnest(string_to_array('Alice@b.c', ','), '{batch-refused}'::text[])",
    ] {
        assert_refused(&app, sql, "public.customers.", &["Alice"]).await;
    }
    assert_eq!(count_where("segment = 'batch-refused'"), 0);
}

/// A new customer through pgveil, to hang notes on; its id.
async fn note_owner(app: &tokio_postgres::Client) -> i64 {
    app.query_one(
        "insert into customers (email, segment) values ('note.owner@example.org', 'notes') returning id",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The notes of customer `id` as PostgreSQL stores them, in order.
fn notes_of(id: i64) -> String {
    Cluster::shared().psql_direct(&format!(
        "select string_agg(note, '|' order by id) from customer_notes where customer_id = {id}"
    ))
}

/// Prepares `name` with SQL `PREPARE`: an insert of its argument as the
/// email of a customer of `segment`.
async fn prepare_insert(app: &tokio_postgres::Client, name: &str, segment: &str) {
    app.batch_execute(&format!(
        "prepare {name} (text) as insert into customers (email, segment) values ($1, '{segment}')"
    ))
    .await
    .unwrap();
}

/// Runs `EXECUTE name ('email')`, and checks that the one customer of
/// `segment` has its email stored as ciphertext only.
async fn assert_execute_encrypts(
    app: &tokio_postgres::Client,
    name: &str,
    segment: &str,
    email: &str,
) {
    app.batch_execute(&format!("execute {name} ('{email}')"))
        .await
        .unwrap();
    let raw = Cluster::shared().psql_direct(&format!(
        "select count(*) || ' ' || string_agg(email, ';') from customers where segment = '{segment}'"
    ));
    assert!(raw.starts_with("1 pgv1:") && !raw.contains(email), "{raw}");
}

#[tokio::test]
async fn a_prepared_statement_replaced_after_deallocate_loses_its_slots() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let id = note_owner(&app).await;
    let statements = |name: &str, note: &str| {
        [
            format!(
                "prepare {name} (text) as insert into customers (email, segment) values ($1, 'x')"
            ),
            format!("deallocate {name}"),
            format!(
                "prepare {name} (text) as insert into customer_notes (customer_id, note) \
                 values ({id}, $1)"
            ),
            format!("execute {name} ('{note}')"),
        ]
    };
    // One statement per Query, as psql sends them; in the extended
    // protocol; all in one text, then executed again on its own.
    for sql in statements("re_simple", "simple note") {
        app.batch_execute(&sql).await.unwrap();
    }
    for sql in statements("re_extended", "extended note") {
        app.execute(sql.as_str(), &[]).await.unwrap();
    }
    app.batch_execute(&statements("re_text", "one text note").join("; "))
        .await
        .unwrap();
    app.batch_execute("execute re_text ('later note')")
        .await
        .unwrap();
    assert_eq!(
        notes_of(id),
        "simple note|extended note|one text note|later note\n"
    );
    // And a protected statement replacing an unprotected one is encrypted.
    app.batch_execute("deallocate re_text").await.unwrap();
    prepare_insert(&app, "re_text", "re-seg").await;
    assert_execute_encrypts(&app, "re_text", "re-seg", "re.secret@example.org").await;
}

#[tokio::test]
async fn a_deallocate_the_server_refuses_keeps_the_statement_encrypted() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    prepare_insert(&app, "kept", "kept-seg").await;
    // In an aborted transaction DEALLOCATE fails (simple and extended
    // protocol, and in the text that aborts it); DISCARD ALL fails in any
    // transaction block. The statement stays prepared.
    app.batch_execute("begin").await.unwrap();
    let err = app.batch_execute("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("22012"));
    let err = app.batch_execute("deallocate kept").await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("25P02"), "{err}");
    let err = app.execute("deallocate all", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("25P02"), "{err}");
    app.batch_execute("rollback").await.unwrap();
    let err = app
        .batch_execute("begin; select 1/0; deallocate kept")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22012"));
    app.batch_execute("rollback").await.unwrap();
    let err = app.batch_execute("begin; discard all").await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("25001"), "{err}");
    app.batch_execute("rollback").await.unwrap();
    assert_execute_encrypts(&app, "kept", "kept-seg", "kept.secret@example.org").await;
}

#[tokio::test]
async fn a_prepare_the_server_refuses_keeps_the_old_slots() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let id = note_owner(&app).await;
    prepare_insert(&app, "dup", "dup-seg").await;
    let again = format!(
        "prepare dup (text) as insert into customer_notes (customer_id, note) values ({id}, $1)"
    );
    let err = app.batch_execute(&again).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("42P05"), "{err}");
    let err = app.execute(again.as_str(), &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("42P05"), "{err}");
    assert_execute_encrypts(&app, "dup", "dup-seg", "dup.secret@example.org").await;
    assert_eq!(notes_of(id), "\n", "no note written");
}

/// Sends `sql` as a simple Query and reads up to ReadyForQuery; panics on
/// an error.
async fn raw_ok(client: &mut RawClient, sql: &str) {
    client.send(&query(sql)).await;
    let (_, error) = client.rows_until_ready().await;
    assert_eq!(error, None, "{sql}");
}

#[tokio::test]
async fn discard_all_and_deallocate_all_forget_every_prepared_statement() {
    let crm = crm();
    let app = crm.connect("crm_user").await;
    let id = note_owner(&app).await;
    Cluster::shared().psql_direct("grant crm_app to trust_user");
    let (mut raw, _) = RawClient::login(crm.proxy.addr).await;
    // PostgreSQL's SQL EXECUTE also runs statements prepared by a named
    // Parse: after the forgetting statement, one named like the forgotten
    // one writes the note given to EXECUTE, as it is.
    for (forget, note) in [
        ("discard all", "after discard"),
        ("deallocate all", "after deallocate all"),
    ] {
        raw_ok(
            &mut raw,
            "prepare gone (text) as insert into customers (email) values ($1)",
        )
        .await;
        raw_ok(&mut raw, forget).await;
        let insert = format!("insert into customer_notes (customer_id, note) values ({id}, $1)");
        raw_parse(&mut raw, "gone", &insert).await;
        raw_ok(&mut raw, &format!("execute gone ('{note}')")).await;
        raw_ok(&mut raw, "deallocate gone").await;
    }
    assert_eq!(notes_of(id), "after discard|after deallocate all\n");
}

/// A connection through pgveil as `logged_user`, a member of crm_app
/// whose every statement the server logs (`log_statement = all`), so that
/// a test can look for plaintext in what reached the server.
async fn logged_connection() -> tokio_postgres::Client {
    static ROLE: std::sync::Once = std::sync::Once::new();
    ROLE.call_once(|| {
        crm();
        Cluster::shared().psql_direct(
            "create role logged_user login password 'pw' in role crm_app; \
             alter role logged_user set log_statement = 'all'",
        );
    });
    crm().connect("logged_user").await
}

/// The server's log.
fn server_log() -> String {
    std::fs::read_to_string(Cluster::shared().dir().join("server.log")).unwrap()
}

#[tokio::test]
async fn searches_through_subqueries_and_ctes_are_encrypted_or_refused() {
    let app = logged_connection().await;
    let found = "derived.search@example.org";
    let secret = "derived.secret@example.org";
    app.batch_execute(&format!(
        "insert into customers (email, full_name, segment) values ('{found}', 'Derived Search', 'derived')"
    ))
    .await
    .unwrap();
    // A protected column as it is: the literal is encrypted and finds it.
    for sql in [
        "select e from (select email as e from customers) s where s.e = 'V'",
        "with s as (select email as e from customers) select e from s where s.e = 'V'",
        "select email from (select * from (select c.email from customers c) a) b where b.email = 'V'",
        "select e from (select email from customers) as s(e) where e = 'V'",
        "with s(e) as (select email from customers) select e from s where e = 'V'",
        "select e from (select email as e from customers union select email from customers) s \
         where s.e = 'V'",
        "select email from customers where email in \
         (select s.e from (select email as e from customers) s where s.e = 'V')",
        "select email from customers where email = 'V' and 'V' in (select email from customers)",
        "select email from customers c where (select d.email from customers d where d.id = c.id) = 'V'",
    ] {
        let sql = sql.replace('V', found);
        let rows = simple_rows(&app.simple_query(&sql).await.unwrap());
        assert_eq!(rows, [vec![Some(found.to_owned())]], "{sql}");
    }
    // Computed from it, or mixed with other values: refused, never sent.
    for sql in [
        "select * from (select lower(email) as e from customers) s where s.e = 'V'",
        "with s as (select email as e from customers) select * from s where lower(s.e) = 'V'",
        "with s as (select email::varchar(60) as e from customers) select * from s where s.e = 'V'",
        "select * from (select max(email) from customers) s where s.max = 'V'",
        "select * from (select * from (select lower(email) as e from customers) a) b where b.e = 'V'",
        "select * from (select email as e from customers union all select segment from customers) s \
         where s.e = 'V'",
        "select * from (select email as e from customers) s where s.e like 'V%'",
        "select id from customers where 'V' in (select lower(email) from customers)",
        "select id from customers c where (select lower(d.email) from customers d where d.id = c.id) = 'V'",
    ] {
        let sql = sql.replace('V', secret);
        assert_refused(&app, &sql, "public.customers.email", &[secret]).await;
    }
    let rows = simple_rows(&app.simple_query("select 'still serving'").await.unwrap());
    assert_eq!(rows, [vec![Some("still serving".to_owned())]]);
    let log = server_log();
    assert!(
        log.contains("select 'still serving'"),
        "the server logs this session's statements"
    );
    for value in [found, secret] {
        assert!(
            !log.contains(value),
            "{value} reached the server in plaintext"
        );
    }
}

/// Parse of a named statement and Sync; panics on an error.
async fn raw_parse(client: &mut RawClient, name: &str, sql: &str) {
    let body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat();
    client
        .send(&[message(b'P', &body), message(b'S', &[])].concat())
        .await;
    assert_eq!(client.rows_until_ready().await.1, None, "{sql}");
}

#[tokio::test]
async fn sql_and_protocol_prepared_statements_share_one_namespace() {
    let crm = crm();
    Cluster::shared().psql_direct("grant crm_app to trust_user");
    let (mut raw, _) = RawClient::login(crm.proxy.addr).await;
    // SQL EXECUTE of a statement a named Parse prepared.
    raw_parse(
        &mut raw,
        "by_parse",
        "insert into customers (email, segment) values ($1, 'by-parse')",
    )
    .await;
    raw_ok(&mut raw, "execute by_parse ('by.parse@example.org')").await;
    // A Bind of a statement SQL PREPARE prepared.
    raw_ok(
        &mut raw,
        "prepare by_sql (text) as insert into customers (email, segment) values ($1, 'by-sql')",
    )
    .await;
    let mut bind = b"\0by_sql\0\0\0\0\x01".to_vec();
    let value = b"by.sql@example.org";
    bind.extend_from_slice(&(value.len() as i32).to_be_bytes());
    bind.extend_from_slice(value);
    bind.extend_from_slice(&[0, 0]);
    raw.send(
        &[
            message(b'B', &bind),
            message(b'E', &[0, 0, 0, 0, 0]),
            message(b'S', &[]),
        ]
        .concat(),
    )
    .await;
    assert_eq!(raw.rows_until_ready().await.1, None);
    for (segment, email) in [("by-parse", "by.parse@"), ("by-sql", "by.sql@")] {
        let stored = Cluster::shared().psql_direct(&format!(
            "select count(*) || ' ' || string_agg(email, ';') from customers where segment = '{segment}'"
        ));
        assert!(
            stored.starts_with("1 pgv1:") && !stored.contains(email),
            "{stored}"
        );
    }
}
