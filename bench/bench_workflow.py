#!/usr/bin/env python3
"""retry and fork on a long session, timed against show of the same session (issue 12).

    .venv/bin/python bench/bench_workflow.py                       # SQLite, 10,000 messages
    .venv/bin/python bench/bench_workflow.py --db postgresql://postgres@127.0.0.1:5432/test

One session of --messages messages (turns of ~270-byte questions and ~950-byte replies,
written through the real Store: sanitized, encrypted, counted) is made in a fresh
database, then each command runs as users run it, a `sessctl` process (the built-in
echo provider answers retry, so only sessctl's own work is timed):

  show ID > /dev/null           decrypts and prints every message: the reference
  retry ID                      reads the history to send, calls, stores one reply
                                and re-marks one (grows the session by one per run)
  fork ID NEW --at N/2          copies half: opens and re-seals N/2 messages
  fork ID NEW                   copies all of it

Medians of --repeat runs, interleaved so a busy moment on a shared machine hits every
command alike. Prints a Markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sessctl import config  # noqa: E402
from sessctl.service import App  # noqa: E402
from sessctl.store import NewMessage  # noqa: E402

WORDS = ("the order refund account please thanks delivery invoice policy customer support ticket item "
         "shipping return warranty price discount store manager request update status").split()


def text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def populate(env: dict[str, str], sid: str, messages: int) -> None:
    rng = random.Random(1)
    app = App(config=config.load(env=env))
    store = app.store(create=True)
    now = int(time.time()) - messages * 60

    def tx(conn: object) -> None:
        for turn in range(messages // 2):
            t = now + turn * 120
            store.append_messages(sid, [
                NewMessage("user", text(rng, int(rng.lognormvariate(5.4, 0.6))), created_at=t),
                NewMessage("assistant", text(rng, int(rng.lognormvariate(6.7, 0.5))), provider="echo",
                           model="echo", tokens_in=300, tokens_out=240, latency_ms=900, created_at=t + 30),
            ], t + 30, create=_spec(sid) if turn == 0 else None)

    store.write(tx)
    app.close()


def _spec(sid: str) -> object:
    from sessctl.models import NewSession

    return NewSession(id=sid, provider="echo", model="echo", system="You are a support agent.")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", help="a postgresql:// URL (a fresh schema is made in it); default: an SQLite file")
    args = parser.parse_args()
    sessctl = [str(Path(sys.executable).parent / "sessctl"), "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSCTL_")}
        env.update(HOME=tmp, XDG_DATA_HOME=f"{tmp}/data", XDG_CONFIG_HOME=f"{tmp}/config",
                   XDG_STATE_HOME=f"{tmp}/state")
        engine = "sqlite"
        if args.db:
            import psycopg

            schema = "bench_" + uuid.uuid4().hex[:8]
            with psycopg.connect(args.db, autocommit=True) as c:
                c.execute(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in args.db else "?"
            env["SESSCTL_DB"] = f"{args.db}{sep}options=-csearch_path%3D{schema}"
            engine = "postgresql"
        started = time.perf_counter()
        populate(env, "long", args.messages)
        print(f"made a session of {args.messages} messages in {time.perf_counter() - started:.1f} s ({engine})\n")
        half = args.messages // 2
        runs: dict[str, list[float]] = {"show": [], "retry": [], "fork --at half": [], "fork (all)": []}
        for r in range(args.repeat):
            runs["show"].append(timed([*sessctl, "show", "long"], env))
            runs["retry"].append(timed([*sessctl, "retry", "long"], env))
            runs["fork --at half"].append(timed([*sessctl, "fork", "long", f"half-{r}", "--at", str(half)], env))
            runs["fork (all)"].append(timed([*sessctl, "fork", "long", f"all-{r}"], env))
        if args.db:
            with psycopg.connect(args.db, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
    base = statistics.median(runs["show"])
    print(f"| command ({engine}, {args.messages} messages) | median s | range s | vs show |")
    print("|---|---:|---:|---:|")
    for name, walls in runs.items():
        med = statistics.median(walls)
        print(f"| `{name}` | {med:.3f} | {min(walls):.3f}-{max(walls):.3f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
