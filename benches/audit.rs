//! Micro-benchmark of the audit log's cost per statement, for the
//! select-only statement pgbench sends (`SELECT abalance FROM
//! pgbench_accounts WHERE aid = N`), recorded with scope "all":
//!
//! - `audit/statement/data_path`: what a session does for it: note the
//!   statement, its CommandComplete and ReadyForQuery, and write its
//!   record into the queue;
//! - `audit/statement/logged`: the same and the writer's share: the JSON
//!   line, its chained MAC, the file's running hash, the write, and the
//!   seal and fsync once per batch of statements.
//!
//! Both count the process's CPU time, on every thread (the writer appends
//! on a thread of its own), not the time the writer lingers for a batch to
//! gather.
//!
//! Run with `cargo bench --bench audit`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pgveil::audit::trail::{AuditSetup, StatementText, Trail};
use pgveil::audit::{AuditConfig, AuditKeys, AuditSink, Login, Peer};
use pgveil::session::ledger::Values;
use ring::signature::Ed25519KeyPair;
use tokio::runtime::Runtime;

/// Statements per measured batch: one log, sealed at its end.
const BATCH: u64 = 20_000;

fn keys() -> Arc<AuditKeys> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let signing = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    Arc::new(AuditKeys::new(&[7; 32], signing))
}

/// One session's trail on a fresh log in `dir`.
fn trail(dir: &std::path::Path, keys: &Arc<AuditKeys>) -> (Trail, AuditSetup) {
    let config = AuditConfig {
        dir: dir.into(),
        queue_capacity: BATCH as usize * 2,
        compress: false,
        ..AuditConfig::default()
    };
    let (handle, _task) = AuditSink::start(&config, keys.clone()).unwrap();
    let setup = AuditSetup {
        handle,
        scope: config.scope,
        bulk: None,
        approvals: None,
    };
    let peer = Peer {
        connection: 1,
        client: "127.0.0.1:50000".into(),
    };
    let login = Login {
        database: "bench".into(),
        role: "bench".into(),
    };
    (Trail::new(&setup, peer, login), setup)
}

/// What a session does for `n` select-only statements.
fn statements(trail: &Trail, n: u64) {
    let declared = Values::default();
    for aid in 0..n {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        trail.sent(StatementText::new(sql, Vec::new(), false));
        trail.completed(1, &declared);
        trail.ready(b'I', &declared);
    }
}

/// The CPU time the process has used, on all its threads.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times `iters` statements in batches of [`BATCH`]; with `logged`, each
/// batch also waits for the writer to write and seal it.
fn measure(rt: &Runtime, keys: &Arc<AuditKeys>, iters: u64, logged: bool) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        left -= n;
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let (trail, setup) = trail(dir.path(), keys);
            let start = cpu_time();
            statements(&trail, n);
            if logged {
                setup.handle.shutdown().await.unwrap();
            }
            total += cpu_time() - start;
            setup.handle.shutdown().await.ok();
        });
    }
    total
}

fn statement(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = keys();
    let mut group = c.benchmark_group("audit/statement");
    group.sample_size(20);
    group.bench_function("data_path", |b| {
        b.iter_custom(|iters| measure(&rt, &keys, iters, false))
    });
    group.bench_function("logged", |b| {
        b.iter_custom(|iters| measure(&rt, &keys, iters, true))
    });
    group.finish();
}

criterion_group!(benches, statement);
criterion_main!(benches);
