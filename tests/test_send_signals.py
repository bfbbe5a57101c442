"""`send --stream` and Ctrl-C in a real process: output that arrives as the reply
streams, and SIGINT mid-call (exit 130, the turn kept as unanswered + incomplete, the
database consistent, and no second Ctrl-C able to split a write).

These run `sessctl` as a subprocess (CliRunner cannot show incremental output or take
a signal) against the fake server in this process. Nothing depends on timing: a stream
is held after its first piece (TextReply.hold) until the test has seen it, and slow
replies wait far longer (seconds) than any step the test waits on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fakeserver import FakeLLMServer, TextReply
from sendkit import APIS, chats, configure, roles

from conftest import Paths, Run
from dbkit import StoredDb

CMD = [sys.executable, "-c", "from sessctl.cli import main; main()"]


def _start(*args: str) -> subprocess.Popen[bytes]:
    # The environment is the test's (conftest's isolated dirs, sendkit's key), with
    # stdout buffered as it is for users: a pipe is block-buffered unless sessctl flushes.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _read_until(proc: subprocess.Popen[bytes], wanted: bytes, timeout: float = 10.0) -> bytes:
    """Read stdout until `wanted` has arrived (the process keeps running)."""
    assert proc.stdout is not None
    got = b""
    deadline = time.monotonic() + timeout
    while wanted not in got:
        assert time.monotonic() < deadline, f"waited for {wanted!r}, got {got!r}"
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"stdout closed after {got!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        got += chunk
    return got


def _wait_for_request(server: FakeLLMServer, n: int = 1, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(chats(server)) < n:
        assert time.monotonic() < deadline, "sessctl never called the server"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("api", APIS)
def test_stream_output_arrives_before_the_reply_is_complete(api: str, ok: Run, paths: Paths,
                                                            fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    rest = threading.Event()
    fake_llm.enqueue(TextReply(pieces=["first ", "second ", "third"], hold=rest))
    proc = _start("-q", "send", "-s", "inc", "--stream", "go")
    early = _read_until(proc, b"first ")
    # The server holds the rest until now: the text was printed as it arrived.
    assert proc.poll() is None and early == b"first "
    rest.set()
    code, out, err = _finish(proc)
    assert (code, early.decode() + out, err) == (0, "first second third\n", "")
    [_, reply] = ok("show", "inc", "--json").json()["messages"]
    assert (reply["content"], reply["status"]) == ("first second third", "ok")
    assert reply["first_token_ms"] <= reply["latency_ms"]


# The interrupted turn is written after the signal, on either engine.
@pytest.mark.engines
@pytest.mark.parametrize("api", APIS)
def test_ctrl_c_mid_stream_exits_130_and_keeps_the_turn_marked(api: str, ok: Run, paths: Paths,
                                                               fake_llm: FakeLLMServer, stored: StoredDb) -> None:
    configure(paths, fake_llm, api)
    ok("send", "-s", "s", "before")
    fake_llm.enqueue(TextReply(pieces=["partial ", "never ", "sent"], hold=threading.Event()))
    proc = _start("send", "-s", "s", "--stream", "tell me")
    early = _read_until(proc, b"partial ")
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)
    assert code == 130
    assert early.decode() + out == "partial \n"  # the line is ended for the shell prompt
    assert err == ("sessctl: error: interrupted; your message is saved in session 's', marked unanswered, "
                   "and the partial reply, marked incomplete\n")
    stored.assert_sound()
    msgs = ok("show", "s", "--json").json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in msgs] == [
        ("user", "before", "ok"), ("assistant", "echo: before", "ok"),
        ("user", "tell me", "unanswered"), ("assistant", "partial ", "incomplete"),
    ]
    fake_llm.clear()
    ok("send", "-s", "s", "after")
    [sent] = chats(fake_llm)
    assert [r for r in roles(sent.json) if r[0] != "system"] == [
        ("user", "before"), ("assistant", "echo: before"), ("user", "after")]


@pytest.mark.engines
def test_ctrl_c_twice_while_calls_wait_stores_every_turn(ok: Run, paths: Paths, fake_llm: FakeLLMServer,
                                                        stored: StoredDb) -> None:
    """Three sessions, one call at a time, on a fresh machine (the first write also
    creates the key file). Two quick Ctrl-C must not split the writes that follow."""
    configure(paths, fake_llm, "openai")
    fake_llm.delay = 5
    proc = _start("send", "-s", "a", "-s", "b", "-s", "c", "--concurrency", "1", "hello", "--format", "json")
    _wait_for_request(fake_llm)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)
    assert code == 130
    assert "Traceback" not in err and "never retrieved" not in err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert errors == [f"sessctl: error: session '{s}': interrupted before any reply arrived; "
                      "your message is saved, marked unanswered" for s in "abc"]
    assert [(row["session"], row["exit_code"]) for row in map(json.loads, out.splitlines())] == [
        ("a", 130), ("b", 130), ("c", 130)]
    assert len(chats(fake_llm)) == 1  # b and c never started
    assert len(paths.key.read_bytes()) > 40  # the key file was written whole
    stored.assert_sound()
    for sid in "abc":
        msgs = ok("show", sid, "--json").json()["messages"]
        assert [(m["content"], m["status"]) for m in msgs] == [("hello", "unanswered")]


def test_ctrl_c_after_some_sessions_answered_prints_their_replies(ok: Run, paths: Paths,
                                                                  fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai")
    fake_llm.enqueue(TextReply("quick"), TextReply("slow", delay=5))
    proc = _start("-q", "send", "-s", "fast", "-s", "slow", "--concurrency", "1", "hi")
    _wait_for_request(fake_llm, 2)  # the first has been answered and stored
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc)
    assert code == 130
    assert out == "==> fast <==\nquick\n"
    assert err == "sessctl: error: session 'slow': interrupted before any reply arrived; " \
                  "your message is saved, marked unanswered\n"
    assert [m["status"] for m in ok("show", "fast", "--json").json()["messages"]] == ["ok", "ok"]
    assert [m["status"] for m in ok("show", "slow", "--json").json()["messages"]] == ["unanswered"]


@pytest.mark.engines
def test_sigterm_keeps_the_message_and_exits_143(ok: Run, paths: Paths, fake_llm: FakeLLMServer,
                                                 stored: StoredDb) -> None:
    """`timeout 60 sessctl send ...` sends SIGTERM: by default that would lose the
    message; it is kept as for Ctrl-C."""
    configure(paths, fake_llm, "anthropic")
    fake_llm.enqueue(TextReply(delay=5))
    proc = _start("send", "-s", "t", "slow question")
    _wait_for_request(fake_llm)
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert (code, out) == (143, "")
    assert err.splitlines()[-1] == ("sessctl: error: terminated (SIGTERM) before any reply arrived; "
                                    "your message is saved in session 't', marked unanswered")
    stored.assert_sound()
    msgs = ok("show", "t", "--json").json()["messages"]
    assert [(m["content"], m["status"]) for m in msgs] == [("slow question", "unanswered")]
