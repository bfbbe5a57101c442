"""Several `-s` on one send: concurrent calls, one failure does not stop the others,
output in the order given, and the exit code rule (the first failed session's code in
the order given; 0 only when every session got its reply)."""

from __future__ import annotations

import pytest
from fakeserver import ErrorReply, FakeLLMServer, TextReply
from sendkit import base_url, chat_path, chats, provider_table

from conftest import Paths, Run

pytestmark = pytest.mark.engines


def _two_providers(paths: Paths, server: FakeLLMServer) -> None:
    """`good` and `bad`: the same server under two paths, so failures can be scripted
    for one provider's sessions only."""
    paths.write_config('default_provider = "good"\n'
                       + provider_table("good", "openai", base_url(server, "openai"))
                       + provider_table("bad", "anthropic", base_url(server, "anthropic", "/bad")))


def test_one_failure_does_not_stop_the_others(run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _two_providers(paths, fake_llm)
    for sid, provider in (("c", "good"), ("a", "good"), ("b", "bad"), ("d", "good")):
        ok("create", sid, "--provider", provider)
    fake_llm.enqueue(*[ErrorReply(529, "Overloaded")] * 3, path=chat_path("anthropic", "/bad"))
    # The first good call is slow, so completion order differs from the order given.
    fake_llm.enqueue(TextReply(delay=0.2), path=chat_path("openai"))
    r = run("send", "-s", "c", "-s", "a", "-s", "b", "-s", "d", "hi", "--format", "json")
    assert r.exit_code == 5
    rows = r.jsonl()
    assert [row["session"] for row in rows] == ["c", "a", "b", "d"]  # the order given
    for row in (rows[0], rows[1], rows[3]):
        assert row["reply"] == "echo: hi" and "error" not in row and row["provider"] == "good"
    bad = rows[2]
    assert bad["reply"] is None and bad["exit_code"] == 5
    assert "provider 'bad'" in bad["error"] and "HTTP 529: Overloaded" in bad["error"]
    [line] = r.stderr.splitlines()
    assert line.startswith("sessctl: error: session 'b': provider 'bad' (")
    assert line.endswith("; your message is saved, marked unanswered")
    assert len([c for c in chats(fake_llm) if c.api == "anthropic"]) == 3  # retried, then given up
    for sid in "cad":
        assert [m["status"] for m in ok("show", sid, "--json").json()["messages"]] == ["ok", "ok"]
    b = ok("show", "b", "--json").json()["messages"]
    assert [(m["content"], m["status"]) for m in b] == [("hi", "unanswered")]


def test_text_output_names_each_session(run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _two_providers(paths, fake_llm)
    ok("create", "y", "--provider", "bad")
    fake_llm.enqueue(ErrorReply(401, "invalid x-api-key"), path=chat_path("anthropic", "/bad"))
    r = run("-q", "send", "-s", "x", "-s", "y", "-s", "z", "hello")
    assert r.exit_code == 5
    assert r.stdout == "==> x <==\necho: hello\n\n==> z <==\necho: hello\n"
    assert r.stderr.count("\n") == 1 and "session 'y': provider 'bad'" in r.stderr


def test_mixed_failures_exit_with_the_first_failed_sessions_code(run: Run, ok: Run, paths: Paths,
                                                                 fake_llm: FakeLLMServer) -> None:
    _two_providers(paths, fake_llm)
    ok("create", "ok1")
    ok("create", "fails", "--provider", "bad")
    fake_llm.default = ErrorReply(400, "bad request")  # every call to `fails` (and only those: see below)
    fake_llm.enqueue(TextReply(), TextReply(), path=chat_path("openai"))
    # `ghost` does not exist and --no-create: 3. `fails` is a provider error: 5.
    r = run("send", "--no-create", "-s", "ok1", "-s", "ghost", "-s", "fails", "hi", "--format", "json")
    assert r.exit_code == 3
    assert [row.get("exit_code") for row in r.jsonl()] == [None, 3, 5]
    r = run("send", "--no-create", "-s", "fails", "-s", "ok1", "-s", "ghost", "hi", "--format", "json")
    assert r.exit_code == 5
    assert [row.get("exit_code") for row in r.jsonl()] == [5, None, 3]
    assert len(r.stderr.splitlines()) == 2


def test_concurrency_limit_is_respected(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _two_providers(paths, fake_llm)
    fake_llm.delay = 0.15
    ok("-q", "send", "-s", "a", "-s", "b", "-s", "c", "-s", "d", "hi", "--concurrency", "2")
    starts = sorted(c.received_at for c in chats(fake_llm))
    assert len(starts) == 4
    # With two slots, the third call can only start once one of the first two answered.
    assert starts[2] - starts[0] >= 0.15
