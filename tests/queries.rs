//! The query protocols relayed faithfully: simple and extended queries,
//! text and binary formats, pipelining, transactions, COPY, LISTEN/NOTIFY,
//! cancel, and FunctionCall, driven by tokio-postgres and psql.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    copy_out, psql, simple_rows, sqlstate, Cluster, Proxy, SUPERUSER, SUPERUSER_PASSWORD,
};
use futures_util::SinkExt;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

#[tokio::test]
async fn simple_query_with_several_statements() {
    let proxy = Proxy::start(Cluster::shared());
    let client = proxy.connect().await;
    let messages = client
        .simple_query("select 1 as a; select 'x' as b, null as c; select generate_series(1,3)")
        .await
        .unwrap();
    let rows = simple_rows(&messages);
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into())],
            vec![Some("x".into()), None],
            vec![Some("1".into())],
            vec![Some("2".into())],
            vec![Some("3".into())],
        ]
    );
    let completions = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completions, 3);
}

#[tokio::test]
async fn extended_query_binary_results_and_parameters() {
    let proxy = Proxy::start(Cluster::shared());
    let client = proxy.connect().await;
    // tokio-postgres uses the extended protocol with binary formats.
    let row = client
        .query_one(
            "select $1::int8 * 2, $2::text || '!', $3::bytea, $4::float8",
            &[&21i64, &"héllo 你好", &vec![0u8, 255, 10], &1.5f64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "héllo 你好!");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 255, 10]);
    assert_eq!(row.get::<_, f64>(3), 1.5);
}

#[tokio::test]
async fn named_statements_are_reused() {
    let proxy = Proxy::start(Cluster::shared());
    let client = proxy.connect().await;
    let statement = client.prepare("select $1::int4 + 1").await.unwrap();
    for i in 0..50 {
        let row = client.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
}

#[tokio::test]
async fn pipelined_queries_arrive_in_order() {
    let proxy = Proxy::start(Cluster::shared());
    let client = proxy.connect().await;
    let statement = client
        .prepare("select $1::int4, pg_sleep(0.001)")
        .await
        .unwrap();
    // tokio-postgres pipelines concurrent queries on one connection.
    let queries = (0..200).map(|i| {
        let client = &client;
        let statement = &statement;
        async move {
            client
                .query_one(statement, &[&i])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    });
    let results = futures_util::future::join_all(queries).await;
    assert_eq!(results, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn transactions_and_errors_inside_them() {
    let proxy = Proxy::start(Cluster::shared());
    let mut client = proxy.connect().await;
    client
        .batch_execute("drop table if exists tx_test; create table tx_test(v int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("insert into tx_test values (1)", &[])
        .await
        .unwrap();
    let err = tx.execute("select 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("22012"));
    // The transaction is aborted: the server says so, through the proxy.
    let err = tx.execute("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("25P02"));
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("insert into tx_test values (2)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows = client.query("select v from tx_test", &[]).await.unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, vec![2]);
}

#[tokio::test]
async fn copy_in_and_out_in_text_csv_and_binary() {
    let proxy = Proxy::start(Cluster::shared());
    let client = proxy.connect().await;
    client
        .batch_execute("drop table if exists copy_test; create table copy_test(id int, name text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("copy copy_test from stdin (format csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut csv = String::new();
    for i in 0..10_000 {
        csv.push_str(&format!("{i},\"name, {i}\"\n"));
    }
    sink.send(Bytes::from(csv)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 10_000);

    for (format, expected_first) in [("text", "0\tname, 0\n"), ("csv", "0,\"name, 0\"\n")] {
        let out = copy_out(
            &client,
            &format!("copy (select * from copy_test order by id) to stdout (format {format})"),
        )
        .await;
        assert!(out.starts_with(expected_first.as_bytes()), "{format}");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 10_000);
    }
    let binary = copy_out(&client, "copy copy_test to stdout (format binary)").await;
    assert!(binary.starts_with(b"PGCOPY\n\xff\r\n\0"));

    // Binary COPY back in through the proxy round-trips.
    client
        .batch_execute("create temp table copy_back(id int, name text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("copy copy_back from stdin (format binary)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(binary)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 10_000);
}

#[tokio::test]
async fn failed_copy_leaves_the_session_usable() {
    let proxy = Proxy::start(Cluster::shared());
    let client = proxy.connect().await;
    client
        .batch_execute("create temp table bad_copy(id int)")
        .await
        .unwrap();
    let sink = client.copy_in("copy bad_copy from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\nnot a number\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("22P02"));
    let n: i64 = client
        .query_one("select count(*) from bad_copy", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn listen_notify_crosses_the_proxy() {
    let proxy = Proxy::start(Cluster::shared());
    let (listener, mut rx) = common::connect_with_messages(&proxy).await;
    listener
        .batch_execute("listen pgveil_channel")
        .await
        .unwrap();
    let notifier = proxy.connect().await;
    notifier
        .batch_execute("notify pgveil_channel, 'hello 世界'")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification within 10 s")
        .unwrap();
    let AsyncMessage::Notification(n) = message else {
        panic!("expected a notification, got {message:?}");
    };
    assert_eq!((n.channel(), n.payload()), ("pgveil_channel", "hello 世界"));
}

#[tokio::test]
async fn notices_reach_the_client() {
    let proxy = Proxy::start(Cluster::shared());
    let (client, mut rx) = common::connect_with_messages(&proxy).await;
    client
        .batch_execute("do $$ begin raise notice 'careful: %', 7; end $$")
        .await
        .unwrap();
    let Some(AsyncMessage::Notice(notice)) = rx.recv().await else {
        panic!("expected a notice");
    };
    assert_eq!(notice.message(), "careful: 7");
}

#[tokio::test]
async fn cancel_stops_the_right_query() {
    let proxy = Proxy::start(Cluster::shared());
    let victim = proxy.connect().await;
    let bystander = proxy.connect().await;
    let token = victim.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { victim.simple_query("select pg_sleep(30)").await });
    let bystanding = tokio::spawn(async move {
        bystander
            .query_one("select pg_sleep(1.5), 'still here'", &[])
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeping.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let row = bystanding.await.unwrap().unwrap();
    assert_eq!(row.get::<_, &str>(1), "still here");
}

/// psql drives large objects through libpq's fast-path FunctionCall.
#[test]
fn psql_large_object_uses_function_call() {
    let proxy = Proxy::start(Cluster::shared());
    let dir = std::env::temp_dir().join(format!("pgveil-lo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.bin");
    let output = dir.join("out.bin");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&input, &payload).unwrap();
    let script = format!(
        "begin;\n\\lo_import '{}'\n\\set oid :LASTOID\n\\lo_export :oid '{}'\n\\lo_unlink :oid\ncommit;\n",
        input.display(),
        output.display()
    );
    // The script needs psql's backslash commands, so it goes on stdin.
    let mut child = psql(&proxy.addr(), SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    common::assert_success("psql lo", &out);
    assert_eq!(std::fs::read(&output).unwrap(), payload);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn psql_multi_statement_script_and_errors() {
    let proxy = Proxy::start(Cluster::shared());
    let out = psql(&proxy.addr(), SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .args(["-c", "select 1; select 2"])
        .output()
        .unwrap();
    common::assert_success("psql", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1\n2");
    let out = psql(&proxy.addr(), SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .args(["-c", "select * from no_such_table"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("relation \"no_such_table\" does not exist")
    );
}
