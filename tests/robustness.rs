//! Bad input and hard endings: malformed messages get a protocol-violation
//! error and only that connection closes; pgveil keeps serving everyone.

mod common;

use std::time::Duration;

use common::{message, query, startup_packet, test_config, Cluster, Proxy, RawClient};
use pgveil::proxy::config::Config;

/// A normal client still gets answers.
async fn still_serving(proxy: &Proxy) {
    let client = proxy.connect().await;
    let row = client.query_one("select 'alive'::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "alive");
}

/// Sends `bytes` after logging in and expects a FATAL 08P01, then close.
async fn after_login_violation(proxy: &Proxy, bytes: &[u8]) -> String {
    let (mut client, _) = RawClient::login(proxy.addr).await;
    client.send(bytes).await;
    let (code, message) = client.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "08P01", "{message}");
    message
}

#[tokio::test]
async fn message_length_below_four() {
    let proxy = Proxy::start(Cluster::shared());
    let message = after_login_violation(&proxy, b"Q\0\0\0\x02").await;
    assert!(message.contains("invalid message length"), "{message}");
    still_serving(&proxy).await;
}

#[tokio::test]
async fn message_length_beyond_postgres_limits() {
    let proxy = Proxy::start(Cluster::shared());
    // A 2 GiB query and a 1 MB Sync: both beyond PostgreSQL's own limits.
    after_login_violation(&proxy, b"Q\x7f\xff\xff\xff").await;
    after_login_violation(&proxy, b"S\0\x10\0\0").await;
    still_serving(&proxy).await;
}

#[tokio::test]
async fn unknown_message_type() {
    let proxy = Proxy::start(Cluster::shared());
    let message = after_login_violation(&proxy, &message(b'!', b"")).await;
    assert!(message.contains("invalid message type"), "{message}");
    still_serving(&proxy).await;
}

#[tokio::test]
async fn truncated_stream_closes_the_server_connection_too() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster);
    let (mut client, pid) = RawClient::login(proxy.addr).await;
    // A query that announces 1000 bytes and delivers 10, then the end.
    client.send(b"Q\0\0\x03\xe8select 1; ").await;
    drop(client);
    wait_for_backend_exit(&proxy, pid).await;
    still_serving(&proxy).await;
}

#[tokio::test]
async fn client_disconnect_ends_its_server_session() {
    let proxy = Proxy::start(Cluster::shared());
    let (client, pid) = RawClient::login(proxy.addr).await;
    drop(client);
    wait_for_backend_exit(&proxy, pid).await;
}

async fn wait_for_backend_exit(proxy: &Proxy, pid: i32) {
    let admin = proxy.connect().await;
    for _ in 0..100 {
        let n: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity where pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server backend {pid} still alive after its client left");
}

#[tokio::test]
async fn garbage_instead_of_a_startup_packet() {
    let proxy = Proxy::start(Cluster::shared());
    let mut client = RawClient::connect(proxy.addr).await;
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (code, _) = client.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "08P01");
    still_serving(&proxy).await;
}

#[tokio::test]
async fn startup_without_user_is_refused() {
    let proxy = Proxy::start(Cluster::shared());
    let mut client = RawClient::connect(proxy.addr).await;
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"database\0postgres\0\0");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(body);
    client.send(&packet).await;
    let (code, message) = client.error_then_close().await.expect("an ErrorResponse");
    assert_eq!(code, "28000", "{message}");
}

#[tokio::test]
async fn random_bytes_leave_the_proxy_serving() {
    let proxy = Proxy::start(Cluster::shared());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..60 {
        let len = (next() % 4096) as usize + 1;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut client = if round % 2 == 0 {
            RawClient::connect(proxy.addr).await
        } else {
            // Junk after a good login hits the message framing instead.
            RawClient::login(proxy.addr).await.0
        };
        client.send(&junk).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), client.error_then_close()).await;
    }
    still_serving(&proxy).await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_startup_timeout() {
    let cluster = Cluster::shared();
    let proxy = Proxy::with_config(Config {
        upstream: cluster.addr(),
        startup_timeout_secs: 1,
        ..test_config()
    });
    let mut client = RawClient::connect(proxy.addr).await;
    let started = std::time::Instant::now();
    let error = client.error_then_close().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(error.map(|e| e.0).as_deref(), Some("08P01"));
    // A half-sent startup packet is dropped the same way.
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(&startup_packet("trust_user", "postgres")[..6])
        .await;
    assert!(client.error_then_close().await.is_some());
    still_serving(&proxy).await;
}

#[tokio::test]
async fn parameter_status_and_backend_key_data_pass_through() {
    let proxy = Proxy::start(Cluster::shared());
    let (mut client, pid) = RawClient::login(proxy.addr).await;
    assert!(pid > 0, "BackendKeyData carries the server's process id");
    client.send(&query("set application_name = 'crm-ui'")).await;
    let mut seen = None;
    loop {
        let (tag, body) = client.expect_message().await;
        if tag == b'S' {
            seen = Some(body);
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(seen.as_deref(), Some(&b"application_name\0crm-ui\0"[..]));
}

#[tokio::test]
async fn hundred_concurrent_clients() {
    let proxy = Proxy::start(Cluster::shared());
    let clients = (0..100).map(|i| {
        let proxy = &proxy;
        async move {
            let client = proxy.connect().await;
            let statement = client.prepare("select $1::int4 * 2").await.unwrap();
            for j in 0..20 {
                let v: i32 = client
                    .query_one(&statement, &[&(i * 100 + j)])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(v, (i * 100 + j) * 2);
            }
        }
    });
    futures_util::future::join_all(clients).await;
}

#[tokio::test]
async fn unreachable_upstream_gets_a_clear_error() {
    let proxy = Proxy::with_config(Config {
        upstream: format!("127.0.0.1:{}", common::free_port()),
        ..test_config()
    });
    let err = common::try_connect(&proxy.url("scram_user", "scram-pw", "postgres"))
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse from pgveil");
    assert_eq!(db.code().code(), "08001");
    assert!(db
        .message()
        .contains("could not connect to upstream server"));
}
