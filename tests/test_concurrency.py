"""Many sessctl processes against one database: nothing lost, duplicated, reordered or
failed, and per-session sequence numbers stay gap-free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Paths, Run
from dbkit import StoredDb

pytestmark = pytest.mark.engines

PROCS = Path(__file__).resolve().parent / "procs.py"
WORKERS = 8
SENDS = 25
SHARED = 2  # worker w shares session shared-{w % SHARED} with the workers of its parity


def test_many_processes_send_concurrently(paths: Paths, ok: Run, stored: StoredDb) -> None:
    # No database and no key yet: the workers also race to create the database, run the
    # migrations, write the key file and create the shared sessions.
    go = paths.root / "go"
    env = {**os.environ, "PYTHONPATH": str(PROCS.parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, str(PROCS), "send-worker", str(w), str(SENDS), f"shared-{w % SHARED}",
                          str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for w in range(WORKERS)
    ]
    time.sleep(0.3)  # let them all import and wait at the line
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]

    for w, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"worker {w}: {err}"
        assert err == "", f"worker {w} wrote to stderr: {err}"
        lines = out.splitlines()
        # Every send printed its own reply (the echo), in order, then the summary.
        assert lines[:-1] == [f"w{w}-m{i}" for i in range(SENDS)]
        assert json.loads(lines[-1]) == {"codes": [0] * SENDS}

    sessions = {s["id"]: s for s in ok("export", "--all", "--format", "jsonl").jsonl()}
    assert set(sessions) == {f"shared-{k}" for k in range(SHARED)} | {f"own-{w}" for w in range(WORKERS)}

    per_worker_shared = (SENDS + 1) // 2
    for k in range(SHARED):
        workers = [w for w in range(WORKERS) if w % SHARED == k]
        shared = sessions[f"shared-{k}"]["messages"]
        n = len(workers) * per_worker_shared * 2
        assert [m["seq"] for m in shared] == list(range(1, n + 1))
        assert sessions[f"shared-{k}"]["stats"]["messages"] == n
        # Turns never interleave: each user message is followed by its own reply.
        for user, reply in zip(shared[::2], shared[1::2]):
            assert (user["role"], reply["role"]) == ("user", "assistant")
            assert user["status"] == reply["status"] == "ok"
            assert reply["content"] == user["content"]
        # Every message exactly once, and each process's messages in the order it sent them.
        texts = [m["content"] for m in shared[::2]]
        assert sorted(texts) == sorted(f"w{w}-m{i}" for w in workers for i in range(0, SENDS, 2))
        for w in workers:
            mine = [t for t in texts if t.startswith(f"w{w}-")]
            assert mine == [f"w{w}-m{i}" for i in range(0, SENDS, 2)]

    for w in range(WORKERS):
        own = sessions[f"own-{w}"]["messages"]
        assert [m["seq"] for m in own] == list(range(1, SENDS // 2 * 2 + 1))
        assert [m["content"] for m in own[::2]] == [f"w{w}-m{i}" for i in range(1, SENDS, 2)]
    stored.assert_sound(context="after the concurrent sends")
    # The race to create the database ran each migration once.
    assert stored.query("SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in range(1, stored.migrations.LATEST + 1)]


@pytest.mark.sqlite_only("a race on opening the file")
def test_a_process_opening_while_another_creates_the_schema_sees_one_state(
        paths: Paths, ok: Run, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race behind an 8-process run that failed with "... is an SQLite database but
    not a sessctl one": a process read the schema version (0), another committed step 1,
    and the first then saw that step's tables. Made deterministic: the other writer
    commits exactly between the two reads."""
    import sqlite3

    from sessctl.store import sqlite_schema

    paths.db.parent.mkdir(parents=True)
    other = sqlite3.connect(paths.db, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA journal_mode = WAL")  # a reader does not hold the writer off
    real, fired = sqlite_schema.current_version, []

    def version_then_the_other_process_migrates(conn: sqlite3.Connection) -> int:
        version = real(conn)
        if version == 0 and not fired:
            fired.append(True)
            other.execute("BEGIN IMMEDIATE")
            other.execute(sqlite_schema._RECORD_TABLE)
            sqlite_schema._m001_initial(other)
            other.execute("INSERT INTO schema_migrations VALUES (1, 'initial', 0)")
            other.execute("PRAGMA user_version = 1")
            other.execute("COMMIT")
        return version

    monkeypatch.setattr(sqlite_schema, "current_version", version_then_the_other_process_migrates)
    ok("send", "-s", "a", "hi")  # migrates the rest of the way and works
    assert fired
    other.close()
    assert ok("show", "a", "--json").json()["stats"]["messages"] == 2
