//! Micro-benchmark of the relay's hot path: finding message boundaries.
//!
//! A query result is mostly `DataRow` messages that pgveil forwards without
//! looking inside. These benchmarks measure how fast
//! [`pgveil::wire::frame::Framer::next`] walks such a result, both when
//! the whole result sits in one buffer and when it arrives in 16 KiB reads
//! (the relay's read size), so messages straddle read boundaries.
//!
//! Run with `cargo bench --bench framing`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgveil::wire::frame::{Chunk, Framer, Side};

/// Rows in the simulated result set.
const ROWS: usize = 1_000;
/// Bytes the relay asks of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// Appends one backend message: type byte, length word, body.
fn push_msg(buf: &mut Vec<u8>, tag: u8, body: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    buf.extend_from_slice(body);
}

/// A `DataRow` body with the given text fields.
fn data_row(fields: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        body.extend_from_slice(&(f.len() as i32).to_be_bytes());
        body.extend_from_slice(f);
    }
    body
}

/// The server's answer to a query returning `ROWS` rows of five columns,
/// shaped like a CRM customer page (id, name, e-mail, phone, segment),
/// followed by CommandComplete and ReadyForQuery. Returns the bytes and
/// the number of messages.
fn result_set() -> (Vec<u8>, usize) {
    let mut buf = Vec::new();
    // A RowDescription; its content does not matter to the framer.
    push_msg(&mut buf, b'T', &[0u8; 5 * 24]);
    for i in 0..ROWS {
        let id = (100_000 + i).to_string();
        let name = format!("Customer Number {i}");
        let email = format!("customer{i}@example.com");
        let phone = format!("+1-555-{:04}", i % 10_000);
        let row = data_row(&[
            id.as_bytes(),
            name.as_bytes(),
            email.as_bytes(),
            phone.as_bytes(),
            b"retail",
        ]);
        push_msg(&mut buf, b'D', &row);
    }
    push_msg(&mut buf, b'C', b"SELECT 1000\0");
    push_msg(&mut buf, b'Z', b"I");
    (buf, ROWS + 3)
}

/// Walks `buf` as if it had been read in pieces of `read_size` bytes;
/// returns the bytes released (to keep the work observable).
fn walk(buf: &[u8], read_size: usize, inspect: impl Fn(u8) -> bool + Copy) -> usize {
    let mut framer = Framer::new(Side::Backend);
    let mut released = 0;
    // `available` is how much of the stream has "arrived" so far.
    let mut available = read_size.min(buf.len());
    let mut pos = 0;
    loop {
        match framer
            .next(&buf[pos..available], inspect)
            .expect("valid stream")
        {
            Chunk::Forward(n) | Chunk::Message { len: n, .. } => {
                pos += n;
                released += n;
            }
            Chunk::NeedMore => {
                if available == buf.len() {
                    break;
                }
                available = (available + read_size).min(buf.len());
            }
        }
    }
    released
}

fn framing(c: &mut Criterion) {
    let (buf, messages) = result_set();
    let mut group = c.benchmark_group("framer_1000_datarows");
    group.throughput(Throughput::Elements(messages as u64));

    // Everything already in the buffer; no message type is inspected.
    group.bench_function("forward_all_one_buffer", |b| {
        b.iter(|| walk(black_box(&buf), buf.len(), |_| false))
    });
    // Arriving in 16 KiB reads, as the relay reads the socket.
    group.bench_function("forward_all_16k_reads", |b| {
        b.iter(|| walk(black_box(&buf), READ_SIZE, |_| false))
    });
    // Holding back the small control messages (ErrorResponse,
    // ReadyForQuery) whole, as a session that tracks transaction state
    // would, while DataRows still pass through uninspected.
    group.bench_function("inspect_error_and_ready_16k_reads", |b| {
        b.iter(|| walk(black_box(&buf), READ_SIZE, |t| t == b'E' || t == b'Z'))
    });
    group.finish();

    let mut bytes = c.benchmark_group("framer_1000_datarows_bytes");
    bytes.throughput(Throughput::Bytes(buf.len() as u64));
    bytes.bench_function("forward_all_16k_reads", |b| {
        b.iter(|| walk(black_box(&buf), READ_SIZE, |_| false))
    });
    bytes.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
