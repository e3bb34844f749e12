//! pgbench through pgveil in each query mode, with zero failed transactions.

mod common;

use std::process::Command;

use common::{Cluster, Proxy, SUPERUSER, SUPERUSER_PASSWORD};

fn pgbench(proxy: &Proxy, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args([
            "-h",
            &proxy.addr.ip().to_string(),
            "-p",
            &proxy.addr.port().to_string(),
        ])
        .args(["-U", SUPERUSER])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .output()
        .expect("run pgbench");
    common::assert_success("pgbench", &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn processed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{report}"))
}

#[test]
fn pgbench_init_and_every_query_mode() {
    let proxy = Proxy::start(Cluster::shared());
    pgbench(&proxy, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let report = pgbench(&proxy, &["-c", "8", "-j", "2", "-T", "3", "-M", mode]);
        assert!(
            report.contains("number of failed transactions: 0 (0.000%)"),
            "{mode}:\n{report}"
        );
        assert!(processed(&report) > 0, "{mode}:\n{report}");
    }
}
