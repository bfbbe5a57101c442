#!/usr/bin/env python3
"""Concurrent multi-session `send`: wall time against the ideal ceil(n / c) × delay.

For each (n, c) pair, the real CLI (a subprocess, as a user or script runs it) sends
one message to n sessions with --concurrency c, against a FakeLLMServer on 127.0.0.1
that answers every request after a fixed delay. Each pair runs in a fresh data
directory (the database and key created beforehand, so first-use costs stay out).

Columns:
  ideal     ceil(n / c) × delay: what the calls alone must take
  wall      the whole command, process start to exit
  over      wall − ideal: start-up, planning, n stored turns, printing
  base      the same command against a server with no delay: sessctl's own cost
  peak      the most requests the server had in flight at once (should equal min(n, c))

Run from the repository root:
  .venv/bin/python bench/bench_send_concurrency.py
  .venv/bin/python bench/bench_send_concurrency.py --delay 0.25 --pairs 8:8,64:16 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeserver import FakeLLMServer  # noqa: E402

CMD = [sys.executable, "-c", "from sessctl.cli import main; main()"]
DEFAULT_PAIRS = "1:8,8:8,16:8,32:8,64:8,64:16,64:64,100:25,10:1"


def _env(home: Path, base_url: str) -> dict[str, str]:
    (home / "config" / "sessctl").mkdir(parents=True)
    (home / "config" / "sessctl" / "config.toml").write_text(
        'default_provider = "bench"\n[providers.bench]\nkind = "openai"\n'
        f'base_url = "{base_url}"\napi_key_env = "BENCH_KEY"\nmodel = "bench-model"\n'
        "read_timeout = 60\nmax_retries = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSCTL_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               BENCH_KEY="sk-bench-0123456789abcdef", NO_COLOR="1")
    return env


def _send(env: dict[str, str], n: int, c: int, tag: str) -> float:
    args = [*CMD, "-q", "send", "--concurrency", str(c), "--format", "json", "ping"]
    for i in range(n):
        args += ["-s", f"{tag}-{i}"]
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"send failed ({done.returncode}): {done.stderr.strip()}")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["session"] for r in rows] == [f"{tag}-{i}" for i in range(n)], "order or count is wrong"
    assert all(r["reply"] == "echo: ping" for r in rows), "a reply is wrong"
    return wall


def _peak(starts: list[float], delay: float) -> int:
    events = sorted([(t, 1) for t in starts] + [(t + delay, -1) for t in starts])
    peak = cur = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=float, default=0.5, help="server delay per request, seconds (0.5)")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help=f"n:c pairs ({DEFAULT_PAIRS})")
    ap.add_argument("--repeat", type=int, default=1, help="runs per pair; the median is shown (1)")
    opts = ap.parse_args()
    pairs = [tuple(int(x) for x in p.split(":")) for p in opts.pairs.split(",")]

    print(f"# sessctl send concurrency — delay {opts.delay} s, {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.system()}")
    print("| n | c | ideal s | wall s | over s | base s | peak |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with FakeLLMServer() as server, tempfile.TemporaryDirectory(prefix="sessctl-bench-") as tmp:
        for n, c in pairs:
            walls, bases, peaks = [], [], []
            for r in range(opts.repeat):
                env = _env(Path(tmp) / f"n{n}c{c}r{r}", server.openai_base_url)
                subprocess.run([*CMD, "-q", "create", "warmup"], env=env, check=True, capture_output=True)
                server.delay = 0.0
                bases.append(_send(env, n, c, "base"))
                server.clear()
                server.delay = opts.delay
                walls.append(_send(env, n, c, "s"))
                peaks.append(_peak([q.received_at for q in server.requests], opts.delay))
                server.clear()
            ideal = math.ceil(n / c) * opts.delay
            wall, base = statistics.median(walls), statistics.median(bases)
            print(f"| {n} | {c} | {ideal:.2f} | {wall:.2f} | {wall - ideal:+.2f} | {base:.2f} | {max(peaks)} |",
                  flush=True)


if __name__ == "__main__":
    main()
