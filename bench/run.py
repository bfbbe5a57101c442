#!/usr/bin/env python3
"""Run the scale benchmarks of bench/README.md and print their figures as a markdown table.

    python3 bench/run.py                 # everything (needs bench/out/bench.db: see gen.py)
    python3 bench/run.py startup export  # some of: startup read archive export send size

Uses a NON-editable install in bench/out/venv (rebuilt from this tree on every run):
an editable install adds an import hook that distorts start-up times. Timings are
hyperfine medians (`hyperfine -N`, no shell); ratios are taken within one hyperfine
run so that machine noise hits both sides alike. Results also go to bench/out/results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
VENV = OUT / "venv"
BIN = VENV / "bin"
DB = OUT / "bench.db"
KEY = OUT / "bench.key"
RESULTS: dict[str, dict[str, object]] = {}


def sh(*cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload]


def install() -> None:
    if not (BIN / "python").exists():
        sh(sys.executable, "-m", "venv", str(VENV))
    sh(str(BIN / "pip"), "install", "-q", "--force-reinstall", "--no-deps", str(ROOT), stdout=subprocess.DEVNULL)
    sh(str(BIN / "pip"), "install", "-q", str(ROOT), stdout=subprocess.DEVNULL)


def env(db: Path, **extra: str) -> dict[str, str]:
    scratch = OUT / "home"
    return {**os.environ, "SESSCTL_DB": str(db), "SESSCTL_KEY_FILE": str(KEY), "XDG_CONFIG_HOME": str(scratch / "config"),
            "XDG_DATA_HOME": str(scratch / "data"), "HOME": str(scratch), "NO_COLOR": "1", **extra}


def hyperfine(cmds: list[str], e: dict[str, str], runs: int = 30, warmup: int = 3, prepare: str | None = None
              ) -> list[float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        args = ["hyperfine", "-N", "--warmup", str(warmup), "--runs", str(runs), "--export-json", tmp.name]
        if prepare:
            args += ["--prepare", prepare]
        sh(*args, *cmds, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return [r["median"] for r in json.load(open(tmp.name))["results"]]


def record(name: str, **fields: object) -> None:
    RESULTS[name] = fields
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def sessctl(*args: str) -> str:
    return " ".join([str(BIN / "sessctl"), *args])


def startup() -> None:
    empty = OUT / "empty.db"
    for p in OUT.glob("empty.db*"):
        p.unlink()
    e = env(empty)
    sh(str(BIN / "sessctl"), "-q", "create", "tmp", env=e, stdout=subprocess.DEVNULL)
    with sqlite3.connect(empty) as c:
        c.execute("DELETE FROM sessions")
    click, version, lst = hyperfine([f"{BIN / 'python'} -c 'import click'", sessctl("--version"), sessctl("list")], e,
                                    runs=40, warmup=5)
    record("startup", import_click_ms=round(click * 1000, 1), version_ms=round(version * 1000, 1),
           version_ratio=round(version / click, 2), list_empty_ms=round(lst * 1000, 1),
           list_empty_ratio=round(lst / click, 2))


def read() -> None:
    e = env(DB)
    lst, stats, show = hyperfine([sessctl("list", "-n", "50"), sessctl("stats"), sessctl("show", "bench-long")], e,
                                 runs=20)
    record("read", list_n50_ms=round(lst * 1000, 1), stats_ms=round(stats * 1000, 1),
           show_1000_ms=round(show * 1000, 1))


def _copy() -> Path:
    work = OUT / "work.db"
    for p in OUT.glob("work.db*"):
        p.unlink()
    shutil.copyfile(DB, work)
    return work


def archive() -> None:
    work = _copy()
    e = env(work)
    n = len(subprocess.run([str(BIN / "sessctl"), "archive", "--older-than", "90d", "--dry-run"], env=e, text=True,
                           capture_output=True, check=True).stdout.split())
    # Each run starts from a fresh copy: the copy is the --prepare step, not timed.
    (t,) = hyperfine([sessctl("archive", "--older-than", "90d")], e, runs=5, warmup=0,
                     prepare=f"cp {DB} {work}")
    record("archive", sessions=n, median_s=round(t, 2))


def _tree_memory_kb(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over a process and its descendants (export workers)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            todo += [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def export() -> None:
    """Wall time of `export --all --format jsonl` to /dev/null (median of 3) and its peak
    memory: RSS and PSS summed over the process and its workers, sampled every 20 ms."""
    e = env(DB)
    with sqlite3.connect(DB) as c:
        messages = c.execute("SELECT count(*) FROM messages").fetchone()[0]
    times, rss_peaks, pss_peaks = [], [], []
    for _ in range(3):
        start = time.perf_counter()
        p = subprocess.Popen([str(BIN / "sessctl"), "export", "--all", "--format", "jsonl"], env=e,
                             stdout=subprocess.DEVNULL)
        rss = pss = 0
        while p.poll() is None:
            r, s = _tree_memory_kb(p.pid)
            rss, pss = max(rss, r), max(pss, s)
            time.sleep(0.02)
        times.append(time.perf_counter() - start)
        assert p.returncode == 0
        rss_peaks.append(rss)
        pss_peaks.append(pss)
    t = sorted(times)[1]
    record("export", messages=messages, median_s=round(t, 2), messages_per_s=int(messages / t),
           runs_s=[round(x, 2) for x in times], peak_rss_sum_mb=round(max(rss_peaks) / 1024, 1),
           peak_pss_sum_mb=round(max(pss_peaks) / 1024, 1))


def send() -> None:
    work = _copy()
    e = env(work)
    sh(str(BIN / "sessctl"), "-q", "send", "-s", "bench-send", "warm up", env=e, stdout=subprocess.DEVNULL)
    lst, snd = hyperfine([sessctl("list"), sessctl("-q", "send", "-s", "bench-send",
                                                   "'How do I get a refund for a digital order?'")], e, runs=30)
    record("send", list_ms=round(lst * 1000, 1), send_ms=round(snd * 1000, 1), ratio=round(snd / lst, 2))


def size() -> None:
    with sqlite3.connect(DB) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    meta = json.loads(Path(f"{DB}.json").read_text())
    plain = meta["plaintext_bytes"]["total"]
    db = DB.stat().st_size
    record("size", db_bytes=db, plaintext_bytes=plain, ratio=round(db / plain, 3))


STEPS = {"startup": startup, "read": read, "archive": archive, "export": export, "send": send, "size": size}


def main() -> None:
    wanted = sys.argv[1:] or list(STEPS)
    unknown = set(wanted) - set(STEPS)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(STEPS)}")
    if not shutil.which("hyperfine"):
        sys.exit("hyperfine is needed (apt-get install hyperfine)")
    if any(w != "startup" for w in wanted) and not DB.exists():
        sys.exit(f"{DB} is missing: python3 bench/gen.py --db {DB} --key-file {KEY}")
    install()
    print(f"load average before: {os.getloadavg()}", flush=True)
    for w in wanted:
        STEPS[w]()
    print(f"load average after: {os.getloadavg()}", flush=True)
    results = OUT / "results.json"
    old = json.loads(results.read_text()) if results.exists() else {}
    results.write_text(json.dumps({**old, **RESULTS}, indent=2) + "\n")
    for p in OUT.glob("work.db*"):
        p.unlink()


if __name__ == "__main__":
    main()
