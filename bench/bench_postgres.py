#!/usr/bin/env python3
"""PostgreSQL against SQLite on the same data: reads, send, export, and a concurrent-send drill (issue 9).

    .venv/bin/python bench/bench_postgres.py --quick                    # a small smoke run, ~1 min
    .venv/bin/python bench/bench_postgres.py --label 200k \\
        --sqlite /tmp/pgbench/bench200k.db --pg postgresql://postgres@127.0.0.1:5432/bench200k \\
        --key-file /tmp/pgbench/bench.key --repeat 7 --export-repeat 3
    .venv/bin/python bench/bench_postgres.py --drill-only --pg postgresql://postgres@127.0.0.1:5432/postgres

The two stores hold the same sessions under the same key (gen.py with one --seed for the
SQLite file, then bench/pg_load.py copies its rows into PostgreSQL). Every command runs
as users run it, a `sessctl` process of this venv (bytecode kept: PYTHONDONTWRITEBYTECODE
is dropped, as in bench_send_network.py), one engine after the other in rounds whose
order alternates, so a busy minute on a shared machine hits both alike; the ratio is
PostgreSQL's median over SQLite's, from the same run.

- `list -n 50`, `show bench-long` (1,000 messages), `stats`, and `send` (the built-in
  echo provider, to a session `bench-send`, deleted at the end): wall time per process.
- `export --all --format jsonl` to /dev/null: messages/s, and peak memory, RSS and PSS
  summed over the process and any export workers it forks (/proc sampled every 20 ms;
  the PostgreSQL server's own backends are not counted: they are the server's).
- The drill (on PostgreSQL, and on SQLite beside it for scale): --procs processes each
  make --sends sends (echo) into --shared sessions, all starting at one instant, each
  process through the Python API (`sessctl.open`, one store per process), or with
  --drill-cli each send a `sessctl send` process. Then: every message stored exactly
  once (each user message is unique), each session's seq 1..N without gaps and every
  question answered, and `sessctl doctor` exit 0. It runs in a fresh schema (PostgreSQL)
  or file (SQLite), dropped after.

Prints Markdown tables for bench/README.md, and the load average before and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import _tree_memory_kb  # noqa: E402  (RSS and PSS over a process tree)

SESSCTL = str(Path(sys.executable).parent / "sessctl")
COMMANDS = {
    "list -n 50": ["list", "-n", "50"],
    "show bench-long": ["show", "bench-long"],
    "stats": ["stats"],
    "send (echo)": ["send", "-s", "bench-send", "How do I get a refund for a digital order?"],
}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def base_env(home: str, key_file: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SESSCTL_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                                                         "PYTHONDONTWRITEBYTECODE")}
    env.update(HOME=home, XDG_DATA_HOME=f"{home}/data", XDG_CONFIG_HOME=f"{home}/config",
               XDG_STATE_HOME=f"{home}/state", NO_COLOR="1", SESSCTL_KEY_FILE=key_file)
    return env


def run(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([SESSCTL, "-q", *args], env=env, text=True, capture_output=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"sessctl {' '.join(args)} ({env.get('SESSCTL_DB')}): exit {r.returncode}: {r.stderr}")
    return r


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    r = subprocess.run([SESSCTL, "-q", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"sessctl {' '.join(args)} ({env['SESSCTL_DB']}): exit {r.returncode}: {r.stderr}")
    return wall


def message_count(env: dict[str, str]) -> int:
    return int(json.loads(run(["stats", "--format", "json"], env).stdout)["messages"])


# --- commands and export ---------------------------------------------------------------


def commands(envs: dict[str, dict[str, str]], repeat: int) -> dict[str, dict[str, list[float]]]:
    """{command: {engine: [wall s]}}, engines alternating first from round to round."""
    for e in envs.values():  # the send session exists before timing (its creation is not a send)
        run(COMMANDS["send (echo)"], e)
        run(["list", "-n", "50"], e)  # warm the caches of both alike
    times: dict[str, dict[str, list[float]]] = {c: {e: [] for e in envs} for c in COMMANDS}
    order = list(envs)
    for r in range(repeat):
        for name, args in COMMANDS.items():
            for engine in (order if r % 2 == 0 else order[::-1]):
                times[name][engine].append(timed(args, envs[engine]))
    for e in envs.values():
        run(["delete", "bench-send", "--yes"], e)
    return times


def export_once(env: dict[str, str], base: str | None = None) -> tuple[float, int, int, int, float]:
    """(wall s, peak RSS KiB, peak PSS KiB, most processes seen at once, CPU s of the
    process and its workers). `base`: run the sessctl package in that directory instead."""
    cmd = [SESSCTL, "-q"] if base is None else [sys.executable, "-m", "sessctl", "-q"]
    if base is not None:
        env = {**env, "PYTHONPATH": base}
    started = time.perf_counter()
    # cwd: `python -m` puts the current directory first on sys.path (this checkout's sessctl).
    p = subprocess.Popen([*cmd, "export", "--all", "--format", "jsonl"], env=env, cwd=base,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rss = pss = procs = 0
    while True:
        # wait4, not poll: its rusage covers the workers too (their parent reaps them).
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        r, s = _tree_memory_kb(p.pid)
        rss, pss = max(rss, r), max(pss, s)
        try:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            procs = max(procs, 1 + len(kids))
        except OSError:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - started
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode != 0:
        raise SystemExit(f"export ({env['SESSCTL_DB']}): exit {p.returncode}: {err}")
    return wall, rss, pss, procs, usage.ru_utime + usage.ru_stime


def export(envs: dict[str, dict[str, str]], repeat: int, base: str | None = None) -> dict[str, dict[str, Any]]:
    """{engine: figures}; with `base`, also "before": that code on PostgreSQL."""
    runs = {e: (env, None) for e, env in envs.items()}
    if base:
        runs["before"] = (envs["postgresql"], base)
    out: dict[str, dict[str, Any]] = {e: {"runs": []} for e in runs}
    for e, (env, _) in runs.items():
        out[e]["messages"] = message_count(env)
    order = list(runs)
    for r in range(repeat):
        for engine in (order if r % 2 == 0 else order[::-1]):
            out[engine]["runs"].append(export_once(*runs[engine]))
    for e in out.values():
        walls = [w for w, *_ in e["runs"]]
        e["median_s"] = statistics.median(walls)
        e["per_s"] = e["messages"] / e["median_s"]
        e["rss_mb"] = max(r[1] for r in e["runs"]) / 1024
        e["pss_mb"] = max(r[2] for r in e["runs"]) / 1024
        e["procs"] = max(r[3] for r in e["runs"])
        e["cpu_us"] = statistics.median(r[4] for r in e["runs"]) / e["messages"] * 1e6
    return out


# --- the drill -------------------------------------------------------------------------

WORKER = r"""
import sys, time
import sessctl
w, sends, shared, start = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with sessctl.open() as store:
    store.list(limit=1)  # connected and migrated before the start
    while time.time() < start:
        time.sleep(0.001)
    t = time.perf_counter()
    for n in range(sends):
        store.send(f"shared-{(w + n) % shared}", f"drill w{w} n{n}")
    print(time.perf_counter() - t)
"""

WORKER_CLI = r"""
import subprocess, sys, time
w, sends, shared, start, sessctl = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
while time.time() < start:
    time.sleep(0.001)
t = time.perf_counter()
for n in range(sends):
    subprocess.run([sessctl, "-q", "send", "-s", f"shared-{(w + n) % shared}", f"drill w{w} n{n}"],
                   check=True, stdout=subprocess.DEVNULL)
print(time.perf_counter() - t)
"""


def drill(env: dict[str, str], procs: int, sends: int, shared: int, cli: bool) -> dict[str, Any]:
    start = time.time() + 3.0 + procs * 0.15  # every worker is up and connected by then
    code = WORKER_CLI if cli else WORKER
    workers = [subprocess.Popen([sys.executable, "-c", code, str(w), str(sends), str(shared), repr(start), SESSCTL],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for w in range(procs)]
    results = [(p.wait(), *p.communicate()) for p in workers]
    wall = time.time() - start
    failed = [(rc, err.strip().splitlines()[-1:] if err else "") for rc, _, err in results if rc != 0]
    per_proc = [float(out.split()[-1]) for rc, out, _ in results if rc == 0 and out.split()]
    # Verification: read everything back through sessctl itself.
    exported = [json.loads(line) for line in run(
        ["export", *[f"shared-{i}" for i in range(shared)], "--format", "jsonl"], env).stdout.splitlines()]
    seen: dict[str, int] = {}
    gapless = answered = True
    for s in exported:
        seqs = [m["seq"] for m in s["messages"]]
        gapless &= seqs == list(range(1, len(seqs) + 1)) and s["stats"]["messages"] == len(seqs)
        roles = [m["role"] for m in s["messages"]]
        answered &= roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) % 2 == 0
        for m in s["messages"]:
            if m["role"] == "user":
                seen[m["content"]] = seen.get(m["content"], 0) + 1
    expected = {f"drill w{w} n{n}" for w in range(procs) for n in range(sends)}
    lost = len(expected - set(seen))
    doubled = sum(1 for v in seen.values() if v > 1)
    extra = len(set(seen) - expected)
    doctor = subprocess.run([SESSCTL, "-q", "doctor"], env=env, capture_output=True, text=True)
    return {"wall_s": wall, "sends": procs * sends, "per_s": procs * sends / wall, "failed": failed,
            "proc_median_s": statistics.median(per_proc) if per_proc else None, "lost": lost,
            "doubled": doubled, "extra": extra, "gapless": gapless, "answered": answered,
            "messages": sum(len(s["messages"]) for s in exported), "doctor_rc": doctor.returncode,
            "doctor_tail": doctor.stdout.strip().splitlines()[-3:] if doctor.returncode else []}


def drill_stores(pg_server: str, tmp: str, key_file: str, engines: list[str]) -> dict[str, tuple[dict[str, str], Any]]:
    """A fresh store per engine for the drill: {engine: (env, cleanup)}."""
    import psycopg

    out: dict[str, tuple[dict[str, str], Any]] = {}
    if "sqlite" in engines:
        db = f"{tmp}/drill-{uuid.uuid4().hex[:6]}.db"
        out["sqlite"] = ({**base_env(tmp, key_file), "SESSCTL_DB": db}, lambda: None)
    if "postgresql" in engines:
        schema = "drill_" + uuid.uuid4().hex[:8]
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")

        def drop() -> None:
            with psycopg.connect(pg_server, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")

        out["postgresql"] = ({**base_env(tmp, key_file), "SESSCTL_DB": with_schema(pg_server, schema)}, drop)
    return out


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


# --- a small dataset for --quick ---------------------------------------------------------


def quick_data(tmp: str, pg_server: str) -> tuple[str, str, str, Any]:
    """(sqlite path, pg URL, key file, cleanup): 2,000 messages made by gen.py, copied
    into a fresh schema by pg_load.py."""
    import psycopg

    key, db = f"{tmp}/quick.key", f"{tmp}/quick.db"
    py = sys.executable
    subprocess.run([py, str(HERE / "gen.py"), "--db", db, "--key-file", key, "--sessions", "100",
                    "--messages", "2000", "--long-session", "1000"], check=True, stdout=subprocess.DEVNULL)
    schema = "quick_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    url = with_schema(pg_server, schema)
    subprocess.run([py, str(HERE / "pg_load.py"), db, url], check=True, stderr=subprocess.DEVNULL)

    def drop() -> None:
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")

    return db, url, key, drop


# --- output ------------------------------------------------------------------------------


def print_commands(label: str, times: dict[str, dict[str, list[float]]], repeat: int) -> None:
    print(f"\n| {label}, median of {repeat} | SQLite s (range) | PostgreSQL s (range) | PG / SQLite |")
    print("|---|---:|---:|---:|")
    for name, by in times.items():
        s, p = statistics.median(by["sqlite"]), statistics.median(by["postgresql"])
        print(f"| `{name}` | {s:.3f} ({min(by['sqlite']):.3f}-{max(by['sqlite']):.3f}) | "
              f"{p:.3f} ({min(by['postgresql']):.3f}-{max(by['postgresql']):.3f}) | **{p / s:.2f}×** |")


def print_export(label: str, ex: dict[str, dict[str, Any]], repeat: int) -> None:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "before": "PostgreSQL, code before (--base)"}
    cols = list(ex.values())
    print(f"\n| `export --all --format jsonl`, {label}, median of {repeat} | "
          + " | ".join(names[e] for e in ex) + " |")
    print("|---|" + "---:|" * len(cols))

    def row(name: str, fmt: Any) -> None:
        print(f"| {name} | " + " | ".join(fmt(c) for c in cols) + " |")

    row("messages", lambda c: f"{c['messages']:,}")
    row("wall s (runs)", lambda c: f"{c['median_s']:.2f} ({', '.join(f'{r[0]:.2f}' for r in c['runs'])})")
    row("messages/s", lambda c: f"**{c['per_s']:,.0f}**")
    row("peak RSS, summed over processes (PSS)", lambda c: f"**{c['rss_mb']:.0f} MB** ({c['pss_mb']:.0f})")
    row("processes", lambda c: str(c["procs"]))
    row("client CPU per message (process and workers; the server's not counted)", lambda c: f"{c['cpu_us']:.1f} µs")


def print_drill(results: dict[str, dict[str, Any]], procs: int, sends: int, shared: int, cli: bool) -> None:
    how = "a `sessctl send` process per send" if cli else "one `sessctl.open()` store per process"
    print(f"\n| {procs} processes × {sends} sends into {shared} sessions ({how}) | "
          + " | ".join("SQLite" if e == "sqlite" else "PostgreSQL" for e in results) + " |")
    print("|---|" + "---:|" * len(results))
    rows = [
        ("wall s (from the common start to the last finish)", lambda r: f"{r['wall_s']:.2f}"),
        ("sends/s", lambda r: f"**{r['per_s']:.1f}**"),
        ("median process s", lambda r: f"{r['proc_median_s']:.2f}" if r["proc_median_s"] else "-"),
        ("failed processes", lambda r: str(len(r["failed"]))),
        ("messages stored (2 per send)", lambda r: f"{r['messages']}"),
        ("user messages lost / stored twice / unexpected", lambda r: f"**{r['lost']}** / {r['doubled']} / {r['extra']}"),
        ("seq 1..N without gaps, every question answered", lambda r: "yes" if r["gapless"] and r["answered"] else "**NO**"),
        ("`doctor` exit", lambda r: str(r["doctor_rc"])),
    ]
    for name, fmt in rows:
        print(f"| {name} | " + " | ".join(fmt(r) for r in results.values()) + " |")
    for e, r in results.items():
        if r["failed"] or r["doctor_tail"]:
            print(f"{e}: failed {r['failed']} doctor {r['doctor_tail']}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--sqlite", help="the SQLite store (gen.py)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="the PostgreSQL store (pg_load.py of the same data); for --quick and the drill, "
                         "a database where a fresh schema may be made (default: %(default)s)")
    ap.add_argument("--key-file", help="the key file both stores were made with")
    ap.add_argument("--label", default="", help="the dataset's name in the tables (200k, 1M)")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each command per engine (median)")
    ap.add_argument("--export-repeat", type=int, default=3, help="runs of export per engine")
    ap.add_argument("--procs", type=int, default=16, help="drill: processes")
    ap.add_argument("--sends", type=int, default=50, help="drill: sends per process")
    ap.add_argument("--shared", type=int, default=4, help="drill: sessions they share")
    ap.add_argument("--drill-cli", action="store_true", help="drill: each send a `sessctl send` process")
    ap.add_argument("--drill-engines", default="postgresql,sqlite", help="drill: which engines (default: both)")
    ap.add_argument("--no-drill", action="store_true", help="skip the drill")
    ap.add_argument("--drill-only", action="store_true", help="only the drill (no dataset needed)")
    ap.add_argument("--base", metavar="DIR", help="export: also time the sessctl package in DIR (e.g. "
                    "`git archive COMMIT sessctl | tar -x -C DIR`) on PostgreSQL, interleaved")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: commands,export")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a 2,000-message dataset made here, 2 runs each, a 4 × 5 drill")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.export_repeat = 2, 1
        args.procs, args.sends = 4, 5
        args.label = args.label or "quick (2,000 messages)"
    skip = set(filter(None, args.skip.split(",")))
    print(f"load average at start: {load()}  ({os.cpu_count()} CPUs)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        cleanups = []
        try:
            if not args.drill_only:
                if args.quick and not args.sqlite:
                    sqlite_db, pg_url, key_file, drop = quick_data(tmp, args.pg)
                    cleanups.append(drop)
                else:
                    if not (args.sqlite and args.key_file):
                        ap.error("--sqlite, --pg and --key-file name the two stores (or use --quick)")
                    sqlite_db, pg_url, key_file = args.sqlite, args.pg, args.key_file
                envs = {"sqlite": {**base_env(tmp, key_file), "SESSCTL_DB": sqlite_db},
                        "postgresql": {**base_env(tmp, key_file), "SESSCTL_DB": pg_url}}
                if "commands" not in skip:
                    times = commands(envs, args.repeat)
                    print_commands(args.label, times, args.repeat)
                    print(f"\nload average after the commands: {load()}", flush=True)
                if "export" not in skip:
                    ex = export(envs, args.export_repeat, args.base)
                    print_export(args.label, ex, args.export_repeat)
                    print(f"\nload average after export: {load()}", flush=True)
            if not args.no_drill:
                key = f"{tmp}/drill.key"
                stores = drill_stores(args.pg, tmp, key, args.drill_engines.split(","))
                cleanups += [drop for _, drop in stores.values()]
                results = {}
                for engine, (env, _) in stores.items():
                    results[engine] = drill(env, args.procs, args.sends, args.shared, args.drill_cli)
                    print(f"drill on {engine} done; load average {load()}", file=sys.stderr, flush=True)
                print_drill(results, args.procs, args.sends, args.shared, args.drill_cli)
                print(f"\nload average after the drill: {load()}", flush=True)
                bad = [e for e, r in results.items()
                       if r["lost"] or r["doubled"] or r["extra"] or not r["gapless"] or not r["answered"]
                       or r["doctor_rc"] or r["failed"]]
                if bad:
                    raise SystemExit(f"the drill found a problem on {', '.join(bad)}")
        finally:
            for drop in cleanups:
                drop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
