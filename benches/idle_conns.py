#!/usr/bin/env python3
"""Open many authenticated, idle PostgreSQL connections and measure a
process's resident memory while they are held.

Used by benches/e2e.sh to find how much memory pgveil (or PgBouncer) spends
per idle client connection. Each connection sends a startup packet,
completes SCRAM-SHA-256 (or MD5 / cleartext) authentication, waits for
ReadyForQuery, and then sits idle. Once all are open, VmRSS of --pid is
read from /proc and compared with the value before the first connection.

With --query-at-end every held connection then runs `SELECT 1` and the
answers are counted. With --half-open N, N more TCP connections are opened
that never send a startup packet (as a slow or hostile client would), and
while they are held a new client logs in and runs a query, several times:
the times it took show whether the proxy still serves new clients promptly.

Standard library only. Prints one JSON object on stdout.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import struct
import sys
import time

PROTOCOL_3_0 = 196608


def vm_rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def message(tag: bytes, body: bytes) -> bytes:
    """A typed frontend message: tag, length word (counting itself), body."""
    return tag + struct.pack("!I", len(body) + 4) + body


class Scram:
    """Client side of SCRAM-SHA-256 without channel binding (RFC 5802/7677).

    The salted password depends only on the salt and the iteration count,
    which are the same for every connection of one user, so it is cached:
    1,000 connections then cost one PBKDF2 run, not 1,000.
    """

    _salted_cache: dict = {}

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        # The user name is taken from the startup packet, so n= stays empty.
        self.client_first_bare = f"n=,r={self.nonce}"

    def first(self) -> bytes:
        return ("n,," + self.client_first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise RuntimeError("server nonce does not extend ours")
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        key = (self.password, salt, iterations)
        salted = self._salted_cache.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
            self._salted_cache[key] = salted
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = ",".join(
            [self.client_first_bare, server_first.decode(), without_proof]
        ).encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


async def read_message(reader: asyncio.StreamReader):
    header = await reader.readexactly(5)
    tag = header[:1]
    (length,) = struct.unpack("!I", header[1:])
    return tag, await reader.readexactly(length - 4)


async def connect(host, port, user, database, password):
    """Opens one connection and authenticates; returns (reader, writer)."""
    reader, writer = await asyncio.open_connection(host, port)
    params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0"
    params += b"application_name\0idle_conns\0\0"
    writer.write(struct.pack("!II", len(params) + 8, PROTOCOL_3_0) + params)
    await writer.drain()
    scram = None
    while True:
        tag, body = await read_message(reader)
        if tag == b"E":
            raise RuntimeError(f"server error: {body!r}")
        if tag == b"Z":  # ReadyForQuery: authenticated and idle
            return reader, writer
        if tag != b"R":
            continue  # ParameterStatus, BackendKeyData, ...
        (code,) = struct.unpack("!I", body[:4])
        if code == 0:  # AuthenticationOk
            continue
        if code == 3:  # cleartext password
            writer.write(message(b"p", password.encode() + b"\0"))
        elif code == 5:  # MD5 with a 4-byte salt
            inner = hashlib.md5((password + user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
            writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
        elif code == 10:  # SASL: list of mechanisms
            mechanisms = body[4:].split(b"\0")
            if b"SCRAM-SHA-256" not in mechanisms:
                raise RuntimeError(f"no usable SASL mechanism in {mechanisms!r}")
            scram = Scram(password)
            first = scram.first()
            writer.write(
                message(
                    b"p",
                    b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first,
                )
            )
        elif code == 11:  # SASLContinue: server-first-message
            writer.write(message(b"p", scram.final(body[4:])))
        elif code == 12:  # SASLFinal: server signature (not verified here)
            continue
        else:
            raise RuntimeError(f"unsupported authentication request {code}")
        await writer.drain()


async def query(reader, writer, sql: str = "SELECT 1") -> bool:
    """Runs one simple query; true when it completed without an error."""
    writer.write(message(b"Q", sql.encode() + b"\0"))
    await writer.drain()
    ok = True
    while True:
        tag, _ = await read_message(reader)
        if tag == b"E":
            ok = False
        if tag == b"Z":
            return ok


async def probe(args) -> float:
    """Milliseconds for a new client to log in and run a query."""
    start = time.monotonic()
    reader, writer = await asyncio.wait_for(
        connect(args.host, args.port, args.user, args.database, args.password), 30)
    ok = await asyncio.wait_for(query(reader, writer), 30)
    elapsed = (time.monotonic() - start) * 1000
    writer.write(message(b"X", b""))
    writer.close()
    if not ok:
        raise RuntimeError("the probe's query failed")
    return elapsed


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--database", required=True)
    ap.add_argument("--password", default=os.environ.get("PGPASSWORD", ""))
    ap.add_argument("--pid", type=int, required=True, help="process to measure")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=32,
                    help="connections being opened at the same time")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait with all connections open")
    ap.add_argument("--query-at-end", action="store_true",
                    help="every held connection runs SELECT 1 before closing")
    ap.add_argument("--half-open", type=int, default=0,
                    help="TCP connections opened besides, that never start up")
    ap.add_argument("--probes", type=int, default=5,
                    help="new logins timed while the half-open ones are held")
    args = ap.parse_args()
    raise_file_limit(args.count + args.half_open + 256)

    before = vm_rss_kib(args.pid)
    gate = asyncio.Semaphore(args.parallel)
    opened = []
    errors = []

    async def one():
        async with gate:
            try:
                opened.append(
                    await connect(args.host, args.port, args.user,
                                  args.database, args.password))
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(str(e))

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.count)))
    open_secs = time.monotonic() - start
    # Let the proxy finish any work triggered by the logins, then measure.
    await asyncio.sleep(args.settle)
    during = vm_rss_kib(args.pid)

    half_open, probe_ms, probe_errors = [], [], []
    if args.half_open:
        for _ in range(args.half_open):
            try:
                half_open.append((await asyncio.open_connection(args.host, args.port))[1])
            except OSError as e:
                probe_errors.append(f"half-open connection: {e}")
                break
        await asyncio.sleep(args.settle)
        for _ in range(args.probes):
            try:
                probe_ms.append(round(await probe(args), 1))
            except Exception as e:  # noqa: BLE001 - reported
                probe_errors.append(f"probe: {e}")

    answered = 0
    if args.query_at_end:
        async def ask(rw):
            try:
                return await asyncio.wait_for(query(*rw), 60)
            except Exception:  # noqa: BLE001 - counted
                return False
        answered = sum(await asyncio.gather(*(ask(rw) for rw in opened)))

    for writer in half_open:
        writer.close()
    # Close politely (Terminate), then measure again.
    for _, writer in opened:
        writer.write(message(b"X", b""))
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in opened),
                         return_exceptions=True)
    await asyncio.sleep(args.settle)
    after_close = vm_rss_kib(args.pid)

    n = len(opened)
    result = {
        "connections": n,
        "failed": len(errors),
        "first_errors": errors[:3],
        "rss_before_kib": before,
        "rss_with_connections_kib": during,
        "rss_after_close_kib": after_close,
        "kib_per_connection": round((during - before) / n, 2) if n else None,
        "open_seconds": round(open_secs, 2),
    }
    if args.query_at_end:
        result["answered_at_end"] = answered
    if args.half_open:
        result["half_open"] = len(half_open)
        result["probe_ms"] = probe_ms
        result["probe_errors"] = probe_errors[:3]
    print(json.dumps(result))
    ok = n == args.count
    ok = ok and (not args.query_at_end or answered == n)
    ok = ok and (not args.half_open or (len(half_open) == args.half_open
                                         and len(probe_ms) == args.probes))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
