//! Micro-benchmarks of protection's hot paths, with the sample CRM policy
//! (`policies/crm.toml`) and a fresh keyring:
//!
//! - `field`: encrypting and decrypting one value in each mode, 16 B to
//!   1 KiB (and 20 B, a typical personal-data value), through the keyring
//!   as the data path calls it, in both suites (`aes`: AES-256-GCM and
//!   AES-256-SIV; `sm`: SM4-GCM and SM4-SIV);
//! - `reveal`: rewriting a page of 50 customer rows with five protected
//!   columns for a reader who sees plaintext, one who sees masks, and one
//!   who sees nothing (NULL), with keyrings of both suites, next to a page
//!   without ciphertext, which must cost next to nothing;
//! - `rewrite`: analysing an `INSERT` of a customer and encrypting its
//!   literals; analysing the same `INSERT` with `$n` parameters (once per
//!   Parse) and encrypting a Bind's values for it (every execution); next
//!   to an `INSERT` into an unprotected table, which the cheap first check
//!   lets through unparsed.
//!
//! Run with `cargo bench --bench veil`.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use pgveil::protect::crypto::{MasterKey, Mode, Suite};
use pgveil::protect::keyring::Keyring;
use pgveil::protect::policy::{ColumnPolicy, Policy};
use pgveil::protect::protection::Protection;
use pgveil::read::reveal::{Recipient, Revealer};
use pgveil::sql::{rewrite, Encryptor, Verdict};
use pgveil::text::encoding::ClientEncoding;
use pgveil::wire::reply;
use pgveil::write::bind::encrypt_bind;

const POLICY: &str = include_str!("../policies/crm.toml");
/// The protected columns of `customers`, in the order of the page.
const PROTECTED: [&str; 5] = ["full_name", "email", "phone", "national_id", "address"];
const PAGE: usize = 50;

const SUITES: [Suite; 2] = [Suite::Aes, Suite::Sm];

fn veil() -> Protection {
    veil_in(Suite::Aes)
}

/// The CRM's protection with a keyring of `suite`.
fn veil_in(suite: Suite) -> Protection {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.toml");
    let policy = Policy::from_str("crm.toml", POLICY).unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    Keyring::init_in(&path, &master, &policy.domains(), Some(suite)).unwrap();
    Protection::new(policy, Keyring::load(&path, &master).unwrap())
}

fn column<'a>(veil: &'a Protection, name: &str) -> &'a ColumnPolicy {
    veil.policy.column("public", "customers", name).unwrap()
}

fn field(c: &mut Criterion) {
    let mut group = c.benchmark_group("field");
    for suite in SUITES {
        let veil = veil_in(suite);
        field_of(&mut group, &veil, suite);
    }
    group.finish();
}

fn field_of(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    veil: &Protection,
    suite: Suite,
) {
    for (mode, name) in [
        (Mode::Randomized, "full_name"),
        (Mode::Deterministic, "email"),
    ] {
        let domain = &column(veil, name).domain;
        for size in [16, 20, 64, 256, 1024] {
            let plaintext = vec![b'x'; size];
            let ciphertext = veil.keyring.encrypt(domain, mode, &plaintext).unwrap();
            group.throughput(Throughput::Bytes(size as u64));
            let id = |op| BenchmarkId::new(format!("{op}/{mode:?}/{suite}"), size);
            group.bench_function(id("encrypt"), |b| {
                b.iter(|| {
                    veil.keyring
                        .encrypt_text(domain, mode, black_box(&plaintext))
                })
            });
            group.bench_function(id("decrypt"), |b| {
                b.iter_batched(
                    || ciphertext.clone(),
                    |envelope| veil.keyring.decrypt(domain, black_box(envelope)),
                    BatchSize::SmallInput,
                )
            });
        }
    }
}

/// A DataRow frame with these text fields.
fn row(fields: &[&[u8]]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(fields.len() as u16);
    for field in fields {
        body.put_i32(field.len() as i32);
        body.put_slice(field);
    }
    reply::frame_of(b'D', &body)
}

/// A Bind of the unnamed portal and statement with text parameters.
fn bind_of(values: &[&[u8]]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_slice(b"\0\0");
    body.put_i16(0);
    body.put_i16(values.len() as i16);
    for value in values {
        body.put_i32(value.len() as i32);
        body.put_slice(value);
    }
    body.put_i16(0);
    reply::frame_of(b'B', &body)
}

/// A page of customers (id, five protected columns, segment), encrypted
/// as pgveil stores them, or in plaintext.
fn page(veil: &Protection, encrypted: bool) -> Vec<Bytes> {
    (0..PAGE)
        .map(|i| {
            let values = [
                format!("Customer Number {i}"),
                format!("customer{i}@example.com"),
                format!("+1-555-{:04}", i % 10_000),
                format!("{:09}", i * 7919),
                format!("{i} Main Street, Springfield"),
            ];
            let mut fields = vec![i.to_string().into_bytes()];
            for (name, value) in PROTECTED.iter().zip(values) {
                fields.push(match encrypted {
                    true => veil
                        .encrypt(column(veil, name), &value)
                        .unwrap()
                        .into_bytes(),
                    false => value.into_bytes(),
                });
            }
            fields.push(b"retail".to_vec());
            row(&fields.iter().map(Vec::as_slice).collect::<Vec<_>>())
        })
        .collect()
}

fn reveal(c: &mut Criterion) {
    let mut group = c.benchmark_group("reveal");
    group.throughput(Throughput::Elements(PAGE as u64));
    for suite in SUITES {
        reveal_of(&mut group, suite);
    }
    group.finish();
}

fn reveal_of(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    suite: Suite,
) {
    let veil = veil_in(suite);
    let mut pages = vec![("encrypted", page(&veil, true))];
    if suite == Suite::Aes {
        // A page without ciphertext costs the same in either suite.
        pages.push(("plain", page(&veil, false)));
    }
    let readers = [
        ("plaintext", "crm_app"),
        ("masked", "support"),
        ("null", "nobody"),
    ];
    for (what, rows) in &pages {
        for (action, role) in readers {
            let roles = vec![role.to_string()];
            let reader = Recipient {
                roles: &roles,
                purpose: Some("kyc"),
                ticket: None,
                encoding: ClientEncoding::default(),
                trail: None,
                result: Default::default(),
            };
            let mut revealer = Revealer::default();
            let id = match *what {
                "plain" => BenchmarkId::new(format!("page50/{what}"), action),
                _ => BenchmarkId::new(format!("page50/{what}/{suite}"), action),
            };
            group.bench_function(id, |b| {
                b.iter(|| {
                    for frame in rows {
                        black_box(revealer.rewrite_row(&veil, &reader, frame, None).unwrap());
                    }
                })
            });
        }
    }
}

fn rewriting(c: &mut Criterion) {
    let veil = veil();
    let insert = "INSERT INTO customers (full_name, email, phone, national_id, address, segment) \
                  VALUES ('Alice Smith', 'alice@example.com', '+1-555-0100', '123456789', \
                  '1 Main Street', 'retail')";
    let mut group = c.benchmark_group("rewrite");
    group.bench_function("insert/literals", |b| {
        b.iter(|| rewrite(black_box(insert), &veil.policy, &veil as &dyn Encryptor))
    });
    let prepared =
        "INSERT INTO customers (full_name, email, phone, national_id, address, segment) \
                    VALUES ($1, $2, $3, $4, $5, $6)";
    group.bench_function("insert/parameters/parse", |b| {
        b.iter(|| rewrite(black_box(prepared), &veil.policy, &veil as &dyn Encryptor))
    });
    let Verdict::Rewritten(analysed) = rewrite(prepared, &veil.policy, &veil) else {
        panic!("the INSERT with parameters is rewritten");
    };
    assert_eq!(analysed.params.len(), 5, "five protected parameters");
    let bind = bind_of(&[
        b"Alice Smith",
        b"alice@example.com",
        b"+1-555-0100",
        b"123456789",
        b"1 Main Street",
        b"retail",
    ]);
    group.bench_function("insert/parameters/bind", |b| {
        b.iter(|| {
            encrypt_bind(
                &veil,
                ClientEncoding::default(),
                black_box(&bind),
                &analysed.params,
            )
            .unwrap()
        })
    });
    let plain = "INSERT INTO orders (customer_id, total) VALUES (1, 9.99)";
    group.bench_function("insert/unprotected", |b| {
        b.iter(|| rewrite(black_box(plain), &veil.policy, &veil as &dyn Encryptor))
    });
    group.finish();
}

criterion_group!(benches, field, reveal, rewriting);
criterion_main!(benches);
