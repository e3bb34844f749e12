//! Large results stream through with bounded memory. This binary runs
//! alone so that its resident-memory readings are pgveil's and the test's.

mod common;

use std::time::Duration;

use common::{psql, query, Cluster, Proxy, RawClient, SUPERUSER, SUPERUSER_PASSWORD};

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// A million 100-byte rows (about 120 MB on the wire) to a client that
/// stops reading for a while: pgveil must hold the server back rather than
/// buffer, and every row must arrive.
#[tokio::test]
async fn million_rows_to_a_slow_reader_in_bounded_memory() {
    let proxy = Proxy::start(Cluster::shared());
    let (mut client, _) = RawClient::login(proxy.addr).await;
    let before = resident_kib();
    client
        .send(&query(
            "select repeat('x', 100) from generate_series(1, 1000000)",
        ))
        .await;
    let mut rows = 0u64;
    let mut peak = before;
    loop {
        let (tag, _) = client.expect_message().await;
        match tag {
            b'D' => rows += 1,
            b'Z' => break,
            _ => {}
        }
        if rows.is_multiple_of(100_000) && tag == b'D' {
            // Pause: the server keeps producing, pgveil must not absorb it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(resident_kib());
        }
    }
    assert_eq!(rows, 1_000_000);
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    assert!(growth_mib < 32, "resident memory grew by {growth_mib} MiB");
}

#[test]
fn copy_out_of_500k_rows_arrives_whole() {
    let proxy = Proxy::start(Cluster::shared());
    let out = psql(&proxy.addr(), SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .args([
            "-c",
            "copy (select i, md5(i::text) from generate_series(1, 500000) i) to stdout",
        ])
        .output()
        .unwrap();
    common::assert_success("psql copy", &out);
    let lines: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 500_000);
    assert!(lines[0].starts_with(b"1\tc4ca4238a0b923820dcc509a6f75849b"));
    assert!(lines[499_999].starts_with(b"500000\t"));
}
