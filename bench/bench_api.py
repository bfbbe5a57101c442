#!/usr/bin/env python3
"""The Python API: concurrent async sends against a slow endpoint, and the library's
own cost per send.

1. Async fan-out. n sessions × 1 send through `sessctl.open_async(concurrency=c)`
   against tests/fakeserver.py (in a process of its own) answering every request after
   `delay` seconds. The calls alone take ideal = ceil(n / c) × delay; the target is
   wall ≤ 1.5 × ideal. Beside it, the floor: the same requests through a bare
   httpx.AsyncClient with c connections, storing nothing. Sessions are created
   beforehand, so the figure is the sends themselves.

2. Own cost per send. `Client.send` to the built-in echo provider (no network) on
   SQLite, in µs, against a bare sqlite3 transaction writing the same rows the way the
   store does (WAL, synchronous=FULL, one transaction: two messages, two bodies, the
   session's counters) with the same ciphertext sizes, all in one process and one run
   (interleaved rounds, medians), since the machine is shared and noisy.

Run from the repository root:
  .venv/bin/python bench/bench_api.py
  .venv/bin/python bench/bench_api.py --pairs 100:25,100:100 --delay 0.2 --sends 2000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import sessctl  # noqa: E402


def _env(home: Path, base_url: str | None = None) -> dict[str, str]:
    cfg = home / "config" / "sessctl"
    cfg.mkdir(parents=True, exist_ok=True)
    if base_url:
        (cfg / "config.toml").write_text(
            'default_provider = "bench"\n[providers.bench]\nkind = "openai"\n'
            f'base_url = "{base_url}"\napi_key_env = "BENCH_KEY"\nmodel = "bench-model"\n'
            "read_timeout = 60\nmax_retries = 0\n")
    else:
        (cfg / "config.toml").write_text('default_provider = "echo"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSCTL_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               BENCH_KEY="sk-bench-0123456789abcdef", NO_COLOR="1")
    return env


async def _fanout(env: dict[str, str], n: int, c: int, tag: str) -> float:
    async with sessctl.open_async(env=env, concurrency=c) as store:
        for i in range(n):
            await store.create(f"{tag}-{i}", exist_ok=True)
        started = time.perf_counter()
        replies = await asyncio.gather(*(store.send(f"{tag}-{i}", "ping") for i in range(n)))
        wall = time.perf_counter() - started
        assert len(replies) == n and all(r.status == "ok" for r in replies)
        return wall


_SERVER = """
import sys, threading
sys.path.insert(0, {tests!r})
from fakeserver import FakeLLMServer
server = FakeLLMServer(delay={delay!r}).start()
print(server.url, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
"""


def bench_fanout(pairs: list[tuple[int, int]], delay: float, repeat: int) -> None:
    """The endpoint runs in a process of its own: its hundred threads must not compete
    with the client under test for this process's GIL."""
    import subprocess

    print(f"## async fan-out (delay {delay:g} s, endpoint in its own process, median of {repeat})\n")
    print("| n | c | ideal s | sessctl wall s | wall/ideal | bare httpx s | sessctl/bare |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    code = _SERVER.format(tests=str(ROOT / "tests"), delay=delay)
    server = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            env = _env(Path(tmp), url + "/v1")
            for n, c in pairs:
                walls, bares = [], []
                for r in range(repeat):  # interleaved, so a busy moment hits both alike
                    walls.append(asyncio.run(_fanout(env, n, c, f"f{n}x{c}r{r}")))
                    bares.append(asyncio.run(_bare_fanout(url + "/v1/chat/completions", n, c)))
                ideal = math.ceil(n / c) * delay
                wall, bare = statistics.median(walls), statistics.median(bares)
                print(f"| {n} | {c} | {ideal:.2f} | {wall:.2f} | {wall / ideal:.2f} | {bare:.2f} | {wall / bare:.2f} |")
    finally:
        server.communicate("", timeout=30)
    print()


async def _bare_fanout(url: str, n: int, c: int) -> float:
    """The floor: the same n chat requests through one httpx.AsyncClient limited to c
    connections, nothing stored."""
    import json

    import httpx

    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "ping"}]}).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench-0123456789abcdef"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=c, max_keepalive_connections=c)) as client:
        started = time.perf_counter()
        replies = await asyncio.gather(*(client.post(url, content=body, headers=headers) for _ in range(n)))
        wall = time.perf_counter() - started
    assert all(r.status_code == 200 for r in replies)
    return wall


def _bare_setup(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "secure_delete = ON"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE sessions (pk INTEGER PRIMARY KEY, id TEXT UNIQUE, message_count INTEGER, "
                 "tokens_in INTEGER, tokens_out INTEGER, updated_at INTEGER)")
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, session_pk INTEGER REFERENCES sessions(pk), "
                 "seq INTEGER, role TEXT, status TEXT, created_at INTEGER, model TEXT, tokens_in INTEGER, "
                 "tokens_out INTEGER, latency_ms INTEGER, UNIQUE (session_pk, seq))")
    conn.execute("CREATE TABLE bodies (id INTEGER PRIMARY KEY REFERENCES messages(id), content BLOB)")
    conn.execute("INSERT INTO sessions VALUES (1, 'bare', 0, 0, 0, 0)")
    return conn


def _bare_turn(conn: sqlite3.Connection, seq: int, blob: bytes) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for i, role in enumerate(("user", "assistant")):
        cur = conn.execute("INSERT INTO messages (session_pk, seq, role, status, created_at, model, tokens_in, "
                           "tokens_out, latency_ms) VALUES (1, ?, ?, 'ok', 0, 'echo', 5, 1, 0) RETURNING id",
                           (seq + i, role))
        conn.execute("INSERT INTO bodies VALUES (?, ?)", (cur.fetchone()[0], blob))
    conn.execute("UPDATE sessions SET message_count = message_count + 2, tokens_in = tokens_in + 5, "
                 "tokens_out = tokens_out + 1, updated_at = ? WHERE pk = 1", (seq,))
    conn.execute("COMMIT")


def bench_own_cost(sends: int, rounds: int) -> None:
    print(f"## own cost per send (echo provider, SQLite; {rounds} interleaved rounds of {sends // rounds})\n")
    text = "What is our refund policy for digital goods?"
    blob = os.urandom(1 + 12 + len(text) + 16)  # a sealed value of the same size
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(Path(tmp))
        per_round = max(1, sends // rounds)
        api_us, bare_us = [], []
        with sessctl.open(env=env) as store:
            store.send("warm", "warm up")  # the key, the sanitizer and the send loop exist now
            conn = _bare_setup(Path(tmp) / "bare.db")
            seq = 1
            for r in range(rounds):
                t = time.perf_counter()
                for i in range(per_round):
                    store.send(f"s-{i % 10}", text)
                api_us.append((time.perf_counter() - t) / per_round * 1e6)
                t = time.perf_counter()
                for _ in range(per_round):
                    _bare_turn(conn, seq, blob)
                    seq += 2
                bare_us.append((time.perf_counter() - t) / per_round * 1e6)
            conn.close()
    api, bare = statistics.median(api_us), statistics.median(bare_us)
    print("| what | µs per send (median of rounds) | range |")
    print("|---|---:|---:|")
    print(f"| `Client.send` (echo, SQLite) | {api:.0f} | {min(api_us):.0f}–{max(api_us):.0f} |")
    print(f"| bare sqlite3: the same rows in one transaction | {bare:.0f} | {min(bare_us):.0f}–{max(bare_us):.0f} |")
    print(f"\nratio: {api / bare:.2f}× a bare insert of the same turn\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="100:100,100:50,100:25,100:10",
                        help="n:c pairs for the fan-out (comma-separated)")
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sends", type=int, default=1000, help="sends for the own-cost figure")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')}, CPython {platform.python_version()}, {platform.system()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    pairs = [(int(a), int(b)) for a, b in (p.split(":") for p in args.pairs.split(","))]
    bench_fanout(pairs, args.delay, args.repeat)
    bench_own_cost(args.sends, args.rounds)


if __name__ == "__main__":
    main()
