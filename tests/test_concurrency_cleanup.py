"""`cleanup` running in other processes while sends stream into the same database:
nothing sent is lost, nothing is reordered, nobody sees a lock error.

The senders talk to a real (fake) OpenAI-compatible HTTP server that takes 50 ms per
reply, so each send has a real window between reading its session and storing the
turn: the window in which a careless cleanup would delete a session under a send.
Each worker is a separate Python process driving the real CLI entry point
(`sessctl.cli.run`) in a loop, so the test costs seconds, not hundreds of process
starts. SESSCTL_STRESS_SCALE=10 makes it ten times bigger, for a longer soak:

    SESSCTL_STRESS_SCALE=10 .venv/bin/python -m pytest -q tests/test_concurrency_cleanup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Paths, Run
from dbkit import StoredDb
from fakeserver import FakeLLMServer

pytestmark = pytest.mark.engines

SCALE = int(os.environ.get("SESSCTL_STRESS_SCALE", "1"))
NOW = "2026-06-01T00:00:00Z"
STALE_AT = "2026-02-01T00:00:00Z"  # 120 days before NOW: past delete_after
IDLE_AT = "2026-04-22T00:00:00Z"  # 40 days before NOW: past archive_after only
RECENT_AT = "2026-05-31T00:00:00Z"

SENDER = """
import json, sys
from sessctl.cli import cli, run
rounds, sids = int(sys.argv[1]), sys.argv[2:]
codes = [run(cli, ["-q", "send", "--unarchive", "-s", sid, f"{sid} message {i}"], "sessctl", False)
         for i in range(rounds) for sid in sids]
print(json.dumps(codes))
"""

CLEANER = """
import contextlib, io, json, os, sys
from sessctl.cli import cli, run
stop, runs = sys.argv[1], []
while not os.path.exists(stop) or len(runs) < 3:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(cli, ["-q", "cleanup", "--json"], "sessctl", False)
    runs.append({"code": code, "report": json.loads(out.getvalue()) if code == 0 else None})
print(json.dumps(runs))
"""


def _session(sid: str, when: str, messages: int, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "provider": "slow", "model": "m", "created_at": when, "updated_at": when, **extra,
            "messages": [{"seq": i + 1, "role": "user" if i % 2 == 0 else "assistant",
                          "content": f"old {sid} {i}", "created_at": when} for i in range(messages)]}


@pytest.fixture
def server() -> Any:
    with FakeLLMServer(delay=0.05) as s:
        yield s


def test_cleanup_beside_a_stream_of_sends(ok: Run, paths: Paths, monkeypatch: pytest.MonkeyPatch,
                                          server: FakeLLMServer, stored: StoredDb) -> None:
    paths.write_config(
        'default_provider = "slow"\n[retention]\narchive_after = "30d"\ndelete_after = "90d"\n'
        f'[providers.slow]\nkind = "openai"\nbase_url = "{server.openai_base_url}"\nmodel = "m"\n'
    )
    monkeypatch.setenv("SESSCTL_NOW", NOW)
    senders, per_sender, rounds = 4, 6 * SCALE, 2
    # Busy sessions are stale (past delete_after) until their first send touches them,
    # and sit among the stale ones, so cleanup's first sweep meets them while sends to
    # them are in flight: every first send is a chance to lose a message.
    busy = [f"busy-{i}" for i in range(senders * per_sender)]
    stale = [f"stale-{i}" for i in range(10 * len(busy))]
    revived = [f"revived-{i}" for i in range(senders)]  # idle 40d: cleanup archives them; sends unarchive
    expired = [f"expired-{i}" for i in range(20 * SCALE)]
    fresh = [f"fresh-{i}" for i in range(10)]
    seed = [_session(s, STALE_AT, 6) for s in stale]
    for i, sid in enumerate(busy):
        seed.insert(i * 11 + 5, _session(sid, STALE_AT, 4))
    seed += ([_session(s, IDLE_AT, 2) for s in revived]
             + [_session(s, RECENT_AT, 2, expires_at="2026-05-31T12:00:00Z") for s in expired]
             + [_session(s, RECENT_AT, 2) for s in fresh])
    ok("-q", "import", "-", input="".join(json.dumps(s) + "\n" for s in seed))

    env = {**os.environ, "SESSCTL_NOW": NOW}
    stop = paths.root / "senders-done"
    cwd = Path(__file__).resolve().parent.parent

    def spawn(code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)

    groups = [busy[k::senders] + [revived[k]] for k in range(senders)]
    procs = [spawn(SENDER, str(rounds), *group) for group in groups]
    # Let cleanup's first sweep start while the senders are in their first round.
    deadline = time.monotonic() + 60
    while len(server.requests) < senders and time.monotonic() < deadline:
        time.sleep(0.01)
    cleaners = [spawn(CLEANER, str(stop)) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((out, err, proc.returncode))
    stop.touch()
    cleaner_runs = []
    for proc in cleaners:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and err == "", err
        cleaner_runs += json.loads(out)

    # No process saw an error of any kind, lock errors included.
    for out, err, code in results:
        assert code == 0 and err == "", err
        assert set(json.loads(out.splitlines()[-1])) == {0}
    assert all(r["code"] == 0 for r in cleaner_runs)

    # Every message sent is stored, once, in order, with its reply.
    for sid in busy + revived:
        session = ok("show", sid, "--json").json()
        mine = [m for m in session["messages"] if not m["content"].startswith("old ")]
        assert [m["content"] for m in mine] == [
            text for i in range(rounds) for text in (f"{sid} message {i}", f"echo: {sid} message {i}")], sid
        assert [m["seq"] for m in session["messages"]] == list(range(1, len(session["messages"]) + 1))
        assert session["status"] == "active"

    # Cleanup did its whole job, each session exactly once across all runs.
    deleted = [sid for r in cleaner_runs for sid in r["report"]["deleted"]["ids"]]
    expired_ids = [sid for r in cleaner_runs for sid in r["report"]["expired"]["ids"]]
    assert sorted(expired_ids) == sorted(expired)
    assert set(stale) <= set(deleted) and len(deleted) == len(set(deleted))
    assert set(deleted) - set(stale) <= set(busy)  # a busy one goes only if cleanup got there first
    remaining = set(ok("list", "--status", "all", "-n", "0", "--format", "ids").stdout.split())
    assert remaining == set(busy) | set(revived) | set(fresh)
    assert ok("list", "--status", "archived", "--format", "ids").stdout == ""

    assert server.errors == []
    assert stored.query("SELECT count(*) FROM messages WHERE session_pk NOT IN (SELECT pk FROM sessions)") == [(0,)]
    stored.assert_sound(context="after cleanup beside sends")


def test_a_session_deleted_between_planning_and_marking_is_planned_again(ok: Run) -> None:
    """The narrow window the stress test above only hits by chance: send has read the
    session, then cleanup deletes it before send marks it active. The turn then goes to
    a new session of that id (as for any missing session), or fails cleanly (exit 3)
    with --no-create; it is never aimed at a session that is gone."""
    import io

    from sessctl import config, conversation
    from sessctl.errors import NotFoundError
    from sessctl.service import App

    for create in (True, False):
        ok("create", "gone", "--title", "old history")
        app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
        opts = conversation.SendOptions(text="after", create=create)
        items = conversation.plan_all(app, ["gone"], opts)
        assert isinstance(items[0], conversation._Plan) and items[0].session is not None
        ok("delete", "gone")  # cleanup, in between
        if create:
            item = conversation._mark_active(app, items, opts)[0]
            assert isinstance(item, conversation._Plan)
            assert item.session is None and item.create is not None and item.create.id == "gone"
        else:
            with pytest.raises(NotFoundError, match="--no-create"):
                conversation._mark_active(app, items, opts)
        app.close()
