"""SIGKILL at random points of send, bulk archive, import, key rotate and key rotate --reencrypt.

After every kill the database must pass SQLite's `PRAGMA integrity_check` (on SQLite) and
a full `doctor`
(every value decrypts, the --meta index matches, sequences gap-free, no half-written
turn, counters right), and each operation must have happened entirely or not at all.

On PostgreSQL each round first waits for the killed client's server process to go
(stored.settle): it finishes the statement it was running, holding its locks, before
it notices the dead socket, and a round measured from the kill would otherwise start
by waiting on the last one's locks.

Kills are delivered by a fork server (tests/procs.py) so that the random point falls
inside the operation itself, not inside interpreter start-up; a few kills of freshly
started `sessctl` processes cover the real thing end to end. SESSCTL_KILL_ROUNDS sets
the rounds per scenario (bench/killtest.sh runs hundreds).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import Paths, Run
from dbkit import StoredDb

pytestmark = pytest.mark.engines

PROCS = Path(__file__).resolve().parent / "procs.py"
ROUNDS = int(os.environ.get("SESSCTL_KILL_ROUNDS", "25"))
SEED = int(os.environ.get("SESSCTL_KILL_SEED", str(random.randrange(1 << 30))))


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(PROCS), "zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, env: dict[str, str], *, argv: list[str] | None = None, loop: list[list[str]] | None = None,
            kill_after: float | None = None, timeout: float = 60) -> dict[str, Any]:
        req: dict[str, Any] = {"env": env, "kill_after": kill_after, "timeout": timeout}
        req["loop" if loop is not None else "argv"] = loop if loop is not None else argv
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


@pytest.fixture
def rng() -> random.Random:
    print(f"kill seed: SESSCTL_KILL_SEED={SEED}")  # shown when a test fails, to replay it
    return random.Random(SEED)


def _env(paths: Paths, **extra: str) -> dict[str, str]:
    env = {"HOME": str(paths.root / "home"), "XDG_DATA_HOME": str(paths.data),
           "XDG_CONFIG_HOME": str(paths.config_dir), "NO_COLOR": "1", "PATH": os.environ.get("PATH", "")}
    if "SESSCTL_DB" in os.environ:  # the engine fixture's PostgreSQL schema
        env["SESSCTL_DB"] = os.environ["SESSCTL_DB"]
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(__import__("sessctl.cli", fromlist=["cli"]).cli, list(args), env=env,
                           catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr




def _bulk(n_sessions: int, turns: int, *, ago_days: int = 10, body: int = 200) -> None:
    """Sessions written through the real store in one transaction (fast set-up)."""
    from sessctl import config
    from sessctl.models import NewSession
    from sessctl.service import App
    from sessctl.store import NewMessage

    app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    store = app.store(create=True)
    now = int(time.time()) - ago_days * 86400

    def tx(conn: Any) -> None:
        for i in range(n_sessions):
            spec = NewSession(id=f"bulk-{i}", user=f"u{i % 7}", provider="echo", model="echo",
                              title=f"Title {i}", metadata={"k": str(i % 3)})
            msgs = []
            for t in range(turns):
                msgs += [NewMessage("user", f"q{i}-{t} " + "x" * body, created_at=now),
                         NewMessage("assistant", f"a{i}-{t} " + "y" * body, provider="echo", model="echo",
                                    tokens_in=3, tokens_out=2, latency_ms=5, created_at=now)]
            store.append_messages(spec.id, msgs, now, create=spec)

    store.write(tx)
    app.close()


def _export(env: dict[str, str] | None = None) -> list[Any]:
    code, out, err = _cli("export", "--all", "--format", "jsonl", env=env)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def _content(sessions: list[Any]) -> list[Any]:
    return [(s["id"], s["title"], s["metadata"], [(m["seq"], m["content"]) for m in s["messages"]])
            for s in sessions]


def _duration(z: Zygote, env: dict[str, str], argv: list[str], n: int = 3) -> float:
    times = []
    for _ in range(n):
        r = z.run(env, argv=argv)
        assert r["exit"] == 0, r["stderr"]
        times.append(r["elapsed"])
    return sorted(times)[len(times) // 2]


class KillClock:
    """When to kill the next round: a time drawn from lo..hi times the command's run
    time, except every fifth round, which runs to the end and re-measures that time.
    A command's run time drifts over the rounds (on PostgreSQL each rewrite leaves dead
    row versions behind), and kill times drawn from the first run alone would drift
    out of the window they are meant to cover; the full rounds also make sure some
    runs finish, which a test's outcome counts rely on."""

    def __init__(self, rng: random.Random, d: float, lo: float, hi: float) -> None:
        self.rng, self.d, self.lo, self.hi = rng, d, lo, hi

    def next(self, i: int) -> float | None:
        return None if i % 5 == 4 else self.rng.uniform(self.lo, self.hi) * self.d

    def saw(self, r: dict[str, Any], kill_after: float | None) -> None:
        if kill_after is None and not r["killed"]:
            self.d = r["elapsed"]


# --- send ----------------------------------------------------------------------------


def test_kill_during_send(zygote: Zygote, paths: Paths, ok: Run, rng: random.Random, stored: StoredDb) -> None:
    env = _env(paths)
    ok("create", "s", "--system", "Be brief", "--meta", "plan=pro")
    _bulk(3, 40)  # some history, so a send has real reading and writing to do
    clock = KillClock(rng, _duration(zygote, env, ["send", "-s", "bulk-0", "calibrate"]), 0, 1.5)
    sent: dict[str, str] = {}  # text -> "done" | "killed"
    outcomes = {"done": 0, "killed": 0}
    for i in range(ROUNDS):
        text = f"round {i} " + "z" * rng.choice([10, 2000, 60000])
        sids = rng.choice([["s"], ["bulk-1"], [f"new-{i}"], ["s", "bulk-2", f"multi-{i}"]])
        argv = ["-q", "send", *[a for sid in sids for a in ("-s", sid)], text]
        kill_after = clock.next(i)
        r = zygote.run(env, argv=argv, kill_after=kill_after)
        clock.saw(r, kill_after)
        stored.settle()
        assert r["killed"] or r["exit"] == 0, r
        state = "killed" if r["killed"] else "done"
        outcomes[state] += 1
        for sid in sids:
            sent[f"{sid}\0{text}"] = state
        stored.assert_sound(context=f"round {i} ({state} after {r['elapsed']:.4f}s)")
    # Every completed turn is there exactly once; a killed one entirely or not at all.
    seen: dict[str, int] = {}
    for s in _export():
        msgs = s["messages"]
        for user, reply in zip(msgs[::2], msgs[1::2]):
            assert (user["role"], reply["role"], reply["seq"]) == ("user", "assistant", user["seq"] + 1)
            if user["content"].startswith("round "):
                assert reply["content"] == user["content"]  # the echo of this very message
                key = f"{s['id']}\0{user['content']}"
                seen[key] = seen.get(key, 0) + 1
    for key, state in sent.items():
        assert seen.get(key, 0) <= 1, key
        if state == "done":
            assert seen.get(key, 0) == 1, key
    assert outcomes["killed"] > 0 and outcomes["done"] > 0, outcomes


# --- bulk archive ----------------------------------------------------------------------


def test_kill_during_bulk_archive(zygote: Zygote, paths: Paths, rng: random.Random, stored: StoredDb) -> None:
    env = _env(paths)
    _bulk(1500, 1)
    archive = ["-q", "archive", "--older-than", "1d"]
    unarchive = ["-q", "archive", "--unarchive", "--status", "archived", "--older-than", "1d"]
    d = _duration(zygote, env, archive, 1) + _duration(zygote, env, unarchive, 1)
    states = set()
    for i in range(ROUNDS):
        r = zygote.run(env, loop=[archive, unarchive], kill_after=rng.uniform(0, 2 * d))
        stored.settle()
        assert r["killed"], r
        rows = stored.query("SELECT status, archived_at IS NOT NULL, count(*) FROM sessions GROUP BY 1, 2")
        # One UPDATE in one transaction: every session moved, or none did.
        assert len(rows) == 1 and rows[0][2] == 1500, f"round {i}: {rows}"
        status, has_archived_at, _ = rows[0]
        assert has_archived_at == (status == "archived")
        states.add(status)
        stored.assert_sound(context=f"round {i}")
    assert states == {"active", "archived"} or ROUNDS < 5


# --- import ----------------------------------------------------------------------------------


def test_kill_during_import(zygote: Zygote, paths: Paths, rng: random.Random, stored: StoredDb) -> None:
    _bulk(150, 5)
    source = paths.root / "export.jsonl"
    code, out, err = _cli("export", "--all", "--format", "jsonl")
    assert code == 0, err
    source.write_text(out)
    want = out
    into = stored.other("target")
    target = into.env()
    env = _env(paths, **target)
    argv = ["-q", "import", str(source), "--on-conflict", "replace"]
    clock = KillClock(rng, _duration(zygote, env, argv, 1), 0, 1.5)
    into.wipe()  # start empty: the first rounds show none-or-all
    outcomes = {"none": 0, "all": 0}
    for i in range(ROUNDS):
        kill_after = clock.next(i)
        r = zygote.run(env, argv=argv, kill_after=kill_after)
        clock.saw(r, kill_after)
        into.settle()
        assert r["killed"] or r["exit"] == 0, r
        if not into.exists():
            outcomes["none"] += 1
            continue
        into.assert_sound(context=f"round {i}")
        code, out, err = _cli("export", "--all", "--format", "jsonl", env=target)
        assert code == 0, err
        # One transaction: nothing, or every session exactly as exported.
        if out == "":
            outcomes["none"] += 1
        else:
            assert out == want, f"round {i}: a partial import is visible"
            outcomes["all"] += 1
    assert outcomes["all"] > 0, outcomes


# --- key rotation ------------------------------------------------------------------------


def _fingerprint(stored: StoredDb) -> str:
    return str(stored.query("SELECT kek_fingerprint FROM keyring")[0][0])


def _key_fingerprint(path: Path) -> str:
    from sessctl import crypto

    return crypto.kek_from_file(path, create=False).fingerprint


def test_kill_during_key_rotate(zygote: Zygote, paths: Paths, ok: Run, rng: random.Random, stored: StoredDb) -> None:
    ok("create", "m", "--meta", "plan=pro", "--title", "kept")
    _bulk(20, 5)
    want = _content(_export())
    current = paths.key
    clock = KillClock(rng, _duration(zygote, _env(paths), ["key", "status"], 1) * 2, 0, 1.5)
    outcomes = {"old": 0, "new": 0}
    for i in range(ROUNDS):
        new = paths.root / "keys" / f"k{i}"
        kill_after = clock.next(i)
        r = zygote.run(_env(paths, SESSCTL_KEY_FILE=str(current)),
                       argv=["-q", "key", "rotate", "--new-key-file", str(new)], kill_after=kill_after)
        clock.saw(r, kill_after)
        stored.settle()
        assert r["killed"] or r["exit"] == 0, r
        # A key file is whole or absent, never half-written, and always private.
        if new.exists():
            assert (new.stat().st_mode & 0o777) == 0o600
            _key_fingerprint(new)
        fp = _fingerprint(stored)
        if new.exists() and fp == _key_fingerprint(new):
            current, outcome = new, "new"
        else:
            assert fp == _key_fingerprint(current), f"round {i}: wrapped under a key that is not on disk"
            outcome = "old"
        assert not r["exit"] == 0 or outcome == "new"
        outcomes[outcome] += 1
        stored.assert_sound({"SESSCTL_KEY_FILE": str(current)}, f"round {i} ({outcome})")
    assert _content(_export({"SESSCTL_KEY_FILE": str(current)})) == want
    assert outcomes["new"] > 0


def test_kill_during_reencrypt(zygote: Zygote, paths: Paths, ok: Run, rng: random.Random, stored: StoredDb) -> None:
    ok("create", "m", "--meta", "plan=pro", "--title", "kept")
    _bulk(150, 10, body=400)  # ~3,000 values: a re-encryption long enough to land inside
    want = _content(_export())
    clock = KillClock(rng, _duration(zygote, _env(paths), ["-q", "key", "rotate", "--reencrypt"], 1), 0.05, 1.2)
    checks = {stored.query("SELECT dek_check FROM keyring")[0][0]}
    outcomes = {"rolled back": 0, "committed": 0}
    current = paths.key
    for i in range(ROUNDS):
        # Half the rounds also move to a new key file: the crash ordering of both at once.
        new = paths.root / "keys" / f"r{i}" if i % 2 else None
        argv = ["-q", "key", "rotate", "--reencrypt"] + (["--new-key-file", str(new)] if new else [])
        kill_after = clock.next(i)
        r = zygote.run(_env(paths, SESSCTL_KEY_FILE=str(current)), argv=argv, kill_after=kill_after)
        clock.saw(r, kill_after)
        stored.settle()
        assert r["killed"] or r["exit"] == 0, r
        check, fp = stored.query("SELECT dek_check, kek_fingerprint FROM keyring")[0]
        committed = check not in checks
        checks.add(check)
        outcomes["committed" if committed else "rolled back"] += 1
        if new is not None and new.exists() and fp == _key_fingerprint(new):
            assert committed
            current = new
        assert fp == _key_fingerprint(current), f"round {i}: wrapped under a key that is not on disk"
        stored.assert_sound({"SESSCTL_KEY_FILE": str(current)}, f"round {i}")
        code, out, _ = _cli("list", "--meta", "plan=pro", "--format", "ids", env={"SESSCTL_KEY_FILE": str(current)})
        assert (code, out) == (0, "m\n")
    assert _content(_export({"SESSCTL_KEY_FILE": str(current)})) == want
    # Kills landed inside the transaction (rolled back), and runs after them finished.
    assert outcomes["rolled back"] > 0 and outcomes["committed"] > 0, outcomes


# --- fresh processes, end to end -----------------------------------------------------------


def test_kill_fresh_sessctl_processes(paths: Paths, ok: Run, rng: random.Random, stored: StoredDb) -> None:
    """Real `sessctl` processes, killed at random while they start, send or re-encrypt."""
    _bulk(100, 10)
    env = {**_env(paths), "PYTHONPATH": str(PROCS.parent.parent)}
    cmd = [sys.executable, "-c", "from sessctl.cli import main; main()"]
    for i in range(max(4, ROUNDS // 4)):
        argv = rng.choice([["send", "--unarchive", "-s", f"bulk-{i}", f"fresh {i}"], ["key", "rotate", "--reencrypt"],
                           ["archive", "--older-than", "1d"]])
        p = subprocess.Popen(cmd + ["-q", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        stored.settle()
        assert p.returncode in (0, -signal.SIGKILL), p.stderr.read() if p.stderr else ""
        if p.stderr:
            p.stderr.close()
        stored.assert_sound(context=f"fresh round {i}: {argv}")
