#!/usr/bin/env python3
"""The `search` benchmark of bench/README.md: search time against `export --all` and
`llm logs -q` on the same data, the index's bytes per message, and what it costs
`send` and `import` against the code before it (an index-off baseline).

    python3 bench/bench_search.py --base /tmp/sessctl-base data     # generate (minutes)
    python3 bench/bench_search.py --base /tmp/sessctl-base search size send import

`--base DIR` is a checkout of the commit before search (`git archive <commit> | tar -x
-C DIR`); its bench/gen.py is replaced by this tree's, so both sides get the same data
from the same seed. `--llm-venv DIR` is a venv with `pip install llm` (outside this
project); without it, or when it is missing, the llm column is left out.

Data (bench/out/): bench.db (1M messages, run.py's) and bench200k.db written by this
tree's code, base200k.db by the base's, each with the rare word `zanzibar` in about one
message in a thousand (gen.py --rare); llm1m/logs.db and llm200k/logs.db the same
conversations in llm's database (bench/to_llm.py). Timings are hyperfine medians, the
compared commands in ONE hyperfine run so that machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
RARE = "zanzibar"
SIZES = {"200k": (20_000, 200_000, OUT / "bench200k.db"), "1m": (100_000, 1_000_000, OUT / "bench.db")}
BASE_DB = OUT / "base200k.db"
NEW_BIN = OUT / "venv" / "bin"
BASE_BIN = OUT / "base-venv" / "bin"
RESULTS: dict[str, object] = {}


def sh(*cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload]


def key_for(db: Path) -> Path:
    return db.with_suffix(".key") if db.name != "bench.db" else OUT / "bench.key"


def env(db: Path, **extra: str) -> dict[str, str]:
    scratch = OUT / "home"
    return {**os.environ, "SESSCTL_DB": str(db), "SESSCTL_KEY_FILE": str(key_for(db)),
            "XDG_CONFIG_HOME": str(scratch / "config"), "XDG_DATA_HOME": str(scratch / "data"),
            "HOME": str(scratch), "NO_COLOR": "1", **extra}


def install(base: Path) -> None:
    for bin_, src in ((NEW_BIN, ROOT), (BASE_BIN, base)):
        if not (bin_ / "python").exists():
            sh(sys.executable, "-m", "venv", str(bin_.parent))
        # Non-editable: an editable install's import hook distorts start-up times.
        sh(str(bin_ / "pip"), "install", "-q", "--force-reinstall", "--no-deps", str(src), stdout=subprocess.DEVNULL)
        sh(str(bin_ / "pip"), "install", "-q", str(src), stdout=subprocess.DEVNULL)


def hyperfine(cmds: list[str], runs: int, warmup: int = 1, prepare: str | None = None,
              e: dict[str, str] | None = None) -> list[float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        args = ["hyperfine", "-N", "--warmup", str(warmup), "--runs", str(runs), "--export-json", tmp.name]
        if prepare:
            args += ["--prepare", prepare]
        sh(*args, *cmds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e or os.environ)
        return [r["median"] for r in json.load(open(tmp.name))["results"]]


def record(name: str, **fields: object) -> None:
    RESULTS[name] = fields
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def cmd(bin_: Path, db: Path, *args: str) -> str:
    """A command line for hyperfine -N (no shell): the environment goes through `env`."""
    pairs = [f"{k}={v}" for k, v in env(db).items() if k.startswith(("SESSCTL_", "XDG_", "HOME", "NO_COLOR"))]
    return " ".join(["env", *pairs, str(bin_ / "sessctl"), *args])


# --- data -----------------------------------------------------------------------------------


def data(base: Path, llm_venv: Path | None) -> None:
    for name, (sessions, messages, db) in SIZES.items():
        if not db.exists():
            sh(str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "bench" / "gen.py"), "--db", str(db), "--key-file",
               str(key_for(db)), "--sessions", str(sessions), "--messages", str(messages), "--rare", RARE)
        logs = OUT / f"llm{name}" / "logs.db"
        if llm_venv is not None and not logs.exists():
            export = subprocess.Popen([str(NEW_BIN / "sessctl"), "export", "--all", "--format", "jsonl"], env=env(db),
                                      stdout=subprocess.PIPE)
            sh(str(llm_venv / "bin" / "python"), str(ROOT / "bench" / "to_llm.py"), str(logs), stdin=export.stdout)
            assert export.wait() == 0
    if not BASE_DB.exists():
        shutil.copyfile(ROOT / "bench" / "gen.py", base / "bench" / "gen.py")
        sessions, messages, _ = SIZES["200k"]
        sh(str(ROOT / ".venv" / "bin" / "python"), str(base / "bench" / "gen.py"), "--db", str(BASE_DB), "--key-file",
           str(key_for(BASE_DB)), "--sessions", str(sessions), "--messages", str(messages), "--rare", RARE)


# --- measurements -------------------------------------------------------------------------


def search(llm_venv: Path | None) -> None:
    for name, (_s, _m, db) in SIZES.items():
        meta = json.loads(Path(f"{db}.json").read_text())
        hits = len(subprocess.run([str(NEW_BIN / "sessctl"), "search", RARE, "-n", "0", "--format", "ids"], env=env(db),
                                  capture_output=True, text=True, check=True).stdout.split())
        cmds = [cmd(NEW_BIN, db, "search", RARE, "-n", "20"), cmd(NEW_BIN, db, "export", "--all", "--format", "jsonl")]
        logs = OUT / f"llm{name}" / "logs.db"
        with_llm = llm_venv is not None and logs.exists()
        if with_llm:
            cmds.append(f"env LLM_USER_PATH={logs.parent} {llm_venv}/bin/llm logs -q {RARE} -n 20")
        times = hyperfine(cmds, runs=5 if name == "200k" else 3)
        fields: dict[str, object] = {
            "messages": meta["messages"], "rare_messages": meta["rare_messages"], "sessions_hit": hits,
            "search_s": round(times[0], 3), "export_s": round(times[1], 2), "search_over_export": round(times[0] / times[1], 3)}
        if with_llm:
            fields.update(llm_logs_q_s=round(times[2], 3), search_over_llm=round(times[0] / times[2], 3))
        record(f"search_{name}", **fields)


def size() -> None:
    for name, (_s, _m, db) in SIZES.items():
        with sqlite3.connect(db) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            messages = c.execute("SELECT count(*) FROM messages").fetchone()[0]
            index = c.execute("SELECT sum(pgsize) FROM dbstat WHERE name IN ('message_search', 'search_backlog')"
                              ).fetchone()[0]
            tags = c.execute("SELECT sum(length(tags)) / 2.0 / count(*) FROM message_search").fetchone()[0]
        meta = json.loads(Path(f"{db}.json").read_text())
        total = db.stat().st_size
        record(f"size_{name}", messages=messages, index_bytes=index, index_bytes_per_message=round(index / messages, 1),
               tags_per_message=round(tags, 1), db_bytes=total, index_share=round(index / total, 3),
               db_over_plaintext=round(total / meta["plaintext_bytes"]["total"], 3),
               without_index_over_plaintext=round((total - index) / meta["plaintext_bytes"]["total"], 3))


def send() -> None:
    new, old = OUT / "work-new.db", OUT / "work-base.db"
    for src, dst in ((SIZES["200k"][2], new), (BASE_DB, old)):
        for p in OUT.glob(dst.name + "*"):
            p.unlink()
        shutil.copyfile(src, dst)
        shutil.copyfile(key_for(src), key_for(dst))
    text = "'How do I get a refund for a digital order?'"
    t_old, t_new = hyperfine([cmd(BASE_BIN, old, "-q", "send", "-s", "bench-send", text),
                              cmd(NEW_BIN, new, "-q", "send", "-s", "bench-send", text)], runs=30, warmup=3)
    record("send", base_ms=round(t_old * 1000, 1), search_ms=round(t_new * 1000, 1), ratio=round(t_new / t_old, 3))


def import_() -> None:
    source = OUT / "import200k.jsonl"
    if not source.exists():
        with open(source, "w") as fh:
            sh(str(NEW_BIN / "sessctl"), "export", "--all", "--format", "jsonl", env=env(SIZES["200k"][2]), stdout=fh)
    new, old = OUT / "imp-new.db", OUT / "imp-base.db"
    clean = f"rm -f {new} {new}-wal {new}-shm {old} {old}-wal {old}-shm"
    t_old, t_new = hyperfine([cmd(BASE_BIN, old, "-q", "import", str(source)),
                              cmd(NEW_BIN, new, "-q", "import", str(source))], runs=2, warmup=0, prepare=clean)
    with open(source) as fh:
        messages = sum(len(json.loads(line)["messages"]) for line in fh)
    record("import", messages=messages, base_s=round(t_old, 2), search_s=round(t_new, 2), ratio=round(t_new / t_old, 3),
           base_per_s=int(messages / t_old), search_per_s=int(messages / t_new))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout of the commit before search")
    ap.add_argument("--llm-venv", type=Path, default=Path("/tmp/llmvenv"))
    ap.add_argument("steps", nargs="+", choices=["data", "search", "size", "send", "import"])
    args = ap.parse_args()
    llm_venv = args.llm_venv if (args.llm_venv / "bin" / "llm").exists() else None
    if not shutil.which("hyperfine"):
        sys.exit("hyperfine is needed (apt-get install hyperfine)")
    install(args.base)
    print(f"load average before: {os.getloadavg()}", flush=True)
    for step in args.steps:
        {"data": lambda: data(args.base, llm_venv), "search": lambda: search(llm_venv), "size": size, "send": send,
         "import": import_}[step]()
    print(f"load average after: {os.getloadavg()}", flush=True)
    results = OUT / "search-results.json"
    old = json.loads(results.read_text()) if results.exists() else {}
    results.write_text(json.dumps({**old, **RESULTS}, indent=2) + "\n")


if __name__ == "__main__":
    main()
