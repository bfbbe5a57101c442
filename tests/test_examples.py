"""The programs in examples/ run as users would run them (a subprocess each), on both
engines, against the offline echo provider or the fake LLM server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakeserver import FakeLLMServer
from sendkit import configure

from conftest import Paths, Run

pytestmark = pytest.mark.engines

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return r


def test_multi_user_chatbot(ok: Run) -> None:
    out = _run("multi_user_chatbot.py").stdout
    assert "[bob] < Hello, this is Bob. How do I reset my password?" in out
    assert "user-alice: 4 messages, owner alice" in out
    assert "web sessions: ['user-carol', 'user-bob', 'user-alice']" in out
    # The CLI sees what the program stored, per user.
    assert ok("list", "--user", "carol", "--format", "ids").stdout == "user-carol\n"
    _run("multi_user_chatbot.py")  # a restart resumes the same sessions
    assert ok("show", "user-bob", "--json").json()["stats"]["messages"] == 4


def test_async_many_sessions_against_an_endpoint(paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm)
    fake_llm.delay = 0.05
    out = _run("async_many_sessions.py", "--sessions", "40", "--concurrency", "10").stdout
    assert out.startswith("40 replies, 0 failures in ")
    assert "stored: 80 messages in 40 sessions" in out
    assert len([r for r in fake_llm.requests if r.api]) == 40


def test_session_pool(ok: Run) -> None:
    out = _run("session_pool.py", "--models", "m-small,m-large").stdout
    assert "pool-m-small [m-small]: Is 17 prime? Answer yes or no." in out
    assert "model m-large: 8 messages" in out and "model m-small: 8 messages" in out
    assert ok("list", "--meta", "pool=eval", "--format", "ids").stdout.split() != []


def test_retention_job(ok: Run) -> None:
    ok("send", "-s", "old", "hello", env={"SESSCTL_NOW": "2025-01-01T00:00:00Z"})
    ok("send", "-s", "idle", "hello", env={"SESSCTL_NOW": "2026-10-01T00:00:00Z"})
    ok("send", "-s", "fresh", "hello", env={"SESSCTL_NOW": "2026-12-01T00:00:00Z"})
    env = {"SESSCTL_NOW": "2026-12-02T00:00:00Z"}
    dry = json.loads(_run("retention_job.py", "--dry-run", env=env).stdout)
    assert (dry["deleted"]["ids"], dry["archived"]["ids"]) == (["old"], ["idle"])
    assert ok("list", "--status", "all", "--format", "ids").stdout.split() == ["fresh", "idle", "old"]
    report = json.loads(_run("retention_job.py", env=env).stdout)
    assert report["remaining"] == {"total": 2, "active": 1, "archived": 1}
    r = subprocess.run([sys.executable, str(EXAMPLES / "retention_job.py"), "--archive-after", "soon"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("retention job failed: ")
