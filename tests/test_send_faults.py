"""`send` against a misbehaving endpoint, through the real CLI, for both APIs.

Every failure must end with the documented exit code (5 after retries; 2 for a missing
API key), ONE line on stderr naming the provider, the HTTP status and the endpoint's
own message, a history that stays well-formed (the next turn's request holds only
complete turns), and the user's text recoverable (`show --json`, status `unanswered`).
Retries use the tiny backoffs of sendkit.FAST, so this file stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fakeserver import Disconnect, ErrorReply, FakeLLMServer, RawReply, TextReply, unused_port_url
from sendkit import APIS, KEY_ENV, chat_path, chats, configure, roles

from conftest import Paths, Run

QUESTION = "Will this survive?"


def _prepare(ok: Run, paths: Paths, server: FakeLLMServer, api: str, **config: Any) -> None:
    """A session with one good turn, so a failure has history to keep well-formed."""
    configure(paths, server, api, **config)
    ok("create", "f")
    ok("send", "-s", "f", "before")
    server.clear()


def _history_is_intact(ok: Run, paths: Paths, server: FakeLLMServer, api: str,
                       partial: str | None = None) -> None:
    s = ok("show", "f", "--json").json()
    got = [(m["role"], m["content"], m["status"]) for m in s["messages"]]
    expected = [("user", "before", "ok"), ("assistant", "echo: before", "ok"), ("user", QUESTION, "unanswered")]
    if partial is not None:
        expected.append(("assistant", partial, "incomplete"))
    assert got == expected
    # The next turn sends only complete turns: the failed one is kept but not sent.
    configure(paths, server, api)
    server.clear()
    ok("send", "-s", "f", "after")
    [sent] = chats(server)
    history = [("user", "before"), ("assistant", "echo: before"), ("user", "after")]
    assert [r for r in roles(sent.json) if r[0] != "system"] == history
    statuses = [m["status"] for m in ok("show", "f", "--json").json()["messages"]]
    assert statuses == ["ok", "ok", "unanswered"] + (["incomplete"] if partial is not None else []) + ["ok", "ok"]


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sessctl: error: ")
    assert "Traceback" not in stderr
    return lines[0]


@dataclass
class Fault:
    replies: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()  # fragments of the error line
    requests: int | None = None  # how many chat attempts reached the server
    partial: str | None = None  # reply text stored as incomplete


def _faults(api: str) -> dict[str, Fault]:
    openai = api == "openai"
    return {
        "500-until-retries-run-out": Fault(
            replies=[ErrorReply(500, "The server had an error processing your request")] * 3,
            expect=("HTTP 500: The server had an error processing your request", "(after 3 attempts)"),
            requests=3),
        "read-timeout": Fault(
            replies=[TextReply(delay=0.6)] * 2, config={"read_timeout": 0.15, "max_retries": 1},
            expect=("no response within the read timeout (0.15 s)", "(after 2 attempts)"), requests=2),
        "connection-refused": Fault(
            config={"base_url": unused_port_url() + ("/v1" if openai else "")},
            expect=("cannot connect", "Connection refused", "(after 3 attempts)"), requests=0),
        "malformed-json": Fault(
            replies=[RawReply(200, '{"id": "x", "choices": [')],
            expect=("malformed JSON in the response",), requests=1),
        "stream-cut": Fault(
            replies=[TextReply("alpha beta gamma delta", cut_after=2)], args=("--stream",),
            expect=("connection lost mid-stream", "the reply is incomplete (11 characters received)"),
            requests=1, partial="alpha beta "),
        "error-event-mid-stream": Fault(
            replies=[TextReply("alpha beta gamma", error_after=1, error_message="Overloaded",
                               error_type="invalid_request_error")],
            args=("--stream",), expect=("error", "Overloaded"), requests=1, partial="alpha "),
        "dropped-every-time": Fault(
            replies=[Disconnect()] * 3, expect=("connection failed", "(after 3 attempts)"), requests=3),
        "401": Fault(
            replies=[ErrorReply(401, "Incorrect API key provided: sk-e2e***Z9y8. You can find your key in "
                                     "the dashboard." if openai else "invalid x-api-key")],
            expect=("HTTP 401: " + ("Incorrect API key provided" if openai else "invalid x-api-key"),),
            requests=1),
        "400-not-retried": Fault(
            replies=[ErrorReply(400, "max_tokens: must be at most 8192")],
            expect=("HTTP 400: max_tokens: must be at most 8192",), requests=1),
    }


FAULT_NAMES = list(_faults("openai"))


@pytest.mark.parametrize("name", FAULT_NAMES)
@pytest.mark.parametrize("api", APIS)
def test_a_failed_call_exits_5_with_one_line_and_keeps_the_message(
        api: str, name: str, run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    fault = _faults(api)[name]
    _prepare(ok, paths, fake_llm, api)
    configure(paths, fake_llm, api, **fault.config)
    fake_llm.enqueue(*fault.replies)
    r = run("send", "-s", "f", QUESTION, *fault.args)
    assert r.exit_code == 5, r.stderr
    line = _one_error_line(r.stderr)
    url = fault.config.get("base_url") or fake_llm.url
    assert line.startswith(f"sessctl: error: provider 'fake' ({url}"), line
    assert chat_path(api) in line
    for fragment in fault.expect:
        assert fragment in line, line
    assert line.endswith("your message is saved in session 'f', marked unanswered" + (
        ", and the partial reply, marked incomplete" if fault.partial else ""))
    if fault.requests is not None:
        assert len(chats(fake_llm)) == fault.requests
    # What was printed of a streamed reply ends with a newline, so the shell prompt is clean.
    assert r.stdout == (fault.partial + "\n" if fault.partial else "")
    assert fake_llm.pending == 0
    _history_is_intact(ok, paths, fake_llm, api, fault.partial)


@pytest.mark.parametrize("api", APIS)
def test_429_with_retry_after_then_success(api: str, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _prepare(ok, paths, fake_llm, api)
    # A fractional Retry-After keeps the test short; jitter alone (backoff_base 0.01 s)
    # could never wait this long, so the gap proves the header was honoured.
    fake_llm.enqueue(ErrorReply(429, "Rate limit reached", headers={"Retry-After": "0.3"}))
    r = ok("send", "-s", "f", QUESTION)
    assert r.stdout == f"echo: {QUESTION}\n" and r.stderr == ""
    first, second = chats(fake_llm)
    assert second.received_at - first.received_at >= 0.3
    assert first.json == second.json
    s = ok("show", "f", "--json").json()
    assert [(m["content"], m["status"]) for m in s["messages"][-2:]] == [(QUESTION, "ok"), (f"echo: {QUESTION}", "ok")]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_status_then_success(status: int, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _prepare(ok, paths, fake_llm, "openai")
    fake_llm.enqueue(ErrorReply(status, "try again"))
    assert ok("send", "-s", "f", QUESTION).stdout == f"echo: {QUESTION}\n"
    assert len(chats(fake_llm)) == 2
    assert ok("show", "f", "--json").json()["stats"]["messages"] == 4


def test_retry_after_longer_than_backoff_max_fails_at_once(run: Run, ok: Run, paths: Paths,
                                                           fake_llm: FakeLLMServer) -> None:
    _prepare(ok, paths, fake_llm, "anthropic")
    fake_llm.enqueue(ErrorReply(429, "Number of requests has exceeded your rate limit",
                                headers={"Retry-After": "120"}))
    r = run("send", "-s", "f", QUESTION)
    assert r.exit_code == 5
    line = _one_error_line(r.stderr)
    assert "HTTP 429: Number of requests has exceeded your rate limit" in line
    assert "server asks to retry after 120 s" in line
    assert len(chats(fake_llm)) == 1


@pytest.mark.parametrize("api", APIS)
def test_missing_api_key_is_a_usage_error_and_nothing_is_sent_or_stored(
        api: str, run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare(ok, paths, fake_llm, api)
    monkeypatch.delenv(KEY_ENV)
    for args in (("-s", "f"), ("-s", "brand-new")):
        r = run("send", *args, QUESTION)
        assert r.exit_code == 2
        line = _one_error_line(r.stderr)
        assert f"provider 'fake' needs an API key in the environment variable {KEY_ENV}" in line
    assert chats(fake_llm) == []
    # Nothing was attempted, so nothing is kept: fixing the variable and sending again
    # gives a clean history, not a stray unanswered copy.
    assert ok("show", "f", "--json").json()["stats"]["messages"] == 2
    assert run("show", "brand-new").exit_code == 3
    # --dry-run needs no key.
    assert ok("send", "-s", "f", QUESTION, "--dry-run").json()["messages"][-1]["content"] == QUESTION


def test_stdin_message_is_kept_when_the_call_fails(run: Run, ok: Run, paths: Paths,
                                                   fake_llm: FakeLLMServer) -> None:
    _prepare(ok, paths, fake_llm, "openai")
    fake_llm.enqueue(*[ErrorReply(503, "Service Unavailable")] * 3)
    r = run("send", "-s", "f", input=f"{QUESTION}\n")
    assert r.exit_code == 5
    assert ok("show", "f", "--json").json()["messages"][-1]["content"] == f"{QUESTION}\n"


def test_json_output_of_a_failure(run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _prepare(ok, paths, fake_llm, "openai")
    fake_llm.enqueue(ErrorReply(401, "bad key"))
    r = run("send", "-s", "f", QUESTION, "--json")
    assert r.exit_code == 5
    out = r.json()
    assert out["session"] == "f" and out["reply"] is None and out["exit_code"] == 5
    assert "HTTP 401: bad key" in out["error"]
    _one_error_line(r.stderr)
