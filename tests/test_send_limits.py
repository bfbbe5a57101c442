"""Issue 11: a reply's size and a call's duration are bounded, per provider
(`max_reply_bytes`, `total_timeout` in config.toml), through the real CLI and server.

An endpoint that never stops (an endless stream, keep-alive comments forever, a body
trickling in) would never trip the read timeout, since bytes keep coming. Each such
test's server gives up by itself after a while, ending the reply in some other way, so
a broken limit fails the test (with a different error line) instead of hanging it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fakeserver import ErrorReply, FakeLLMServer, RawReply, TextReply
from sendkit import APIS, chats, configure

from conftest import Paths, Run

QUESTION = "Is there a limit?"
GIVE_UP = 20.0  # seconds: how long the "endless" replies below last at most


def _error_line(r: Any) -> str:
    assert r.exit_code == 5, (r.exit_code, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sessctl: error: provider 'fake' ("), r.stderr
    return lines[0]


def _last_turn(ok: Run) -> list[tuple[str, str, str]]:
    messages = ok("show", "s", "--json").json()["messages"]
    return [(m["role"], m["content"], m["status"]) for m in messages]


def _sse(api: str, pieces: Iterator[str]) -> Iterator[str]:
    """A stream that starts properly, then sends text deltas and never finishes."""
    if api == "anthropic":
        yield 'event: message_start\ndata: {"type": "message_start", "message": {"model": "m", "usage": {}}}\n\n'
        for piece in pieces:
            yield ("event: content_block_delta\ndata: " + json.dumps(
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": piece}}) + "\n\n")
    else:
        for piece in pieces:
            yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}) + "\n\n"


def _for_a_while(item: str, delay: float) -> Iterator[str]:
    return itertools.islice(itertools.repeat(item), int(GIVE_UP / delay))


# --------------------------------------------------------------------------- size


@pytest.mark.parametrize("api", APIS)
def test_a_reply_larger_than_max_reply_bytes_is_refused_and_the_message_kept(
        api: str, run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api, max_reply_bytes=4096)
    fake_llm.enqueue(TextReply("x" * 10_000))
    line = _error_line(run("-q", "send", "-s", "s", QUESTION, "--no-stream"))
    assert "the reply is larger than max_reply_bytes (4096 bytes) (it announces" in line
    assert line.endswith("your message is saved in session 's', marked unanswered")
    assert _last_turn(ok) == [("user", QUESTION, "unanswered")]
    assert len(chats(fake_llm)) == 1  # not retried: it would be as large again


def test_a_body_without_a_length_is_cut_at_the_limit(run: Run, ok: Run, paths: Paths,
                                                     fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", max_reply_bytes=4096)
    body = json.dumps({"choices": [{"message": {"content": "y" * 50_000}}]})
    fake_llm.enqueue(RawReply(chunks=[body[i:i + 1000] for i in range(0, len(body), 1000)]))
    line = _error_line(run("-q", "send", "-s", "s", QUESTION, "--no-stream"))
    assert "the reply is larger than max_reply_bytes (4096 bytes);" in line
    assert _last_turn(ok) == [("user", QUESTION, "unanswered")]


@pytest.mark.parametrize("api", APIS)
def test_a_stream_past_the_limit_keeps_its_text_as_incomplete(api: str, run: Run, ok: Run, paths: Paths,
                                                              fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api, max_reply_bytes=4096)
    fake_llm.enqueue(RawReply(chunks=_sse(api, iter(["word "] * 2000)), content_type="text/event-stream"))
    r = run("-q", "send", "-s", "s", QUESTION, "--stream")
    line = _error_line(r)
    assert "the reply is larger than max_reply_bytes (4096 bytes)" in line
    assert "the reply is incomplete" in line
    turn = _last_turn(ok)
    assert turn[0] == ("user", QUESTION, "unanswered")
    assert turn[1][0] == "assistant" and turn[1][2] == "incomplete"
    assert turn[1][1].startswith("word word ") and r.stdout.startswith(turn[1][1])


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize("api", APIS)
def test_an_endless_stream_ends_at_total_timeout_keeping_what_arrived(
        api: str, run: Run, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api, total_timeout=0.6)
    fake_llm.enqueue(RawReply(chunks=_sse(api, _for_a_while("more ", 0.02)), chunk_delay=0.02,
                              content_type="text/event-stream"))
    r = run("-q", "send", "-s", "s", QUESTION, "--stream")
    line = _error_line(r)
    assert "no complete reply within total_timeout (0.6 s); the reply is incomplete" in line
    turn = _last_turn(ok)
    assert turn[0] == ("user", QUESTION, "unanswered") and turn[1][2] == "incomplete"
    assert turn[1][1].startswith("more more") and r.stdout == turn[1][1] + "\n"


@pytest.mark.parametrize("api", APIS)
def test_keep_alive_comments_forever_end_at_total_timeout(api: str, run: Run, ok: Run, paths: Paths,
                                                          fake_llm: FakeLLMServer) -> None:
    # Each comment resets the read timeout (0.3 s here), which alone would wait forever.
    configure(paths, fake_llm, api, total_timeout=0.8, read_timeout=0.3)
    fake_llm.enqueue(RawReply(chunks=_for_a_while(": keep-alive\n\n", 0.05), chunk_delay=0.05,
                              content_type="text/event-stream"))
    line = _error_line(run("-q", "send", "-s", "s", QUESTION, "--stream"))
    assert "no complete reply within total_timeout (0.8 s)" in line and "incomplete" not in line
    assert _last_turn(ok) == [("user", QUESTION, "unanswered")]


@pytest.mark.parametrize("api", APIS)
def test_a_body_trickling_in_ends_at_total_timeout(api: str, run: Run, ok: Run, paths: Paths,
                                                   fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api, total_timeout=0.6, read_timeout=0.3)
    fake_llm.enqueue(RawReply(chunks=_for_a_while(" ", 0.05), chunk_delay=0.05))
    line = _error_line(run("-q", "send", "-s", "s", QUESTION, "--no-stream"))
    assert "no complete reply within total_timeout (0.6 s)" in line
    assert _last_turn(ok) == [("user", QUESTION, "unanswered")]


def test_no_retry_is_started_that_total_timeout_would_cut_short(run: Run, ok: Run, paths: Paths,
                                                                fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", total_timeout=1.0, backoff_max=30)
    fake_llm.enqueue(ErrorReply(503, "busy", headers={"Retry-After": "5"}))
    line = _error_line(run("-q", "send", "-s", "s", QUESTION))
    assert "HTTP 503: busy; no time left to retry within total_timeout (1 s)" in line
    assert len(chats(fake_llm)) == 1


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("setting,value,says", [
    ("total_timeout", 0, "total_timeout must be a number of seconds > 0"),
    ("total_timeout", -5, "total_timeout must be a number of seconds > 0"),
    ("total_timeout", "10m", "total_timeout must be a number of seconds > 0"),
    ("total_timeout", True, "total_timeout must be a number of seconds > 0"),
    ("read_timeout", "abc", "read_timeout must be a number of seconds > 0"),
    ("connect_timeout", 0, "connect_timeout must be a number of seconds > 0"),
    ("backoff_base", -1, "backoff_base must be a number of seconds >= 0"),
    ("max_reply_bytes", 100, "max_reply_bytes must be a whole number of bytes >= 1024"),
    ("max_reply_bytes", "32MiB", "max_reply_bytes must be a whole number of bytes >= 1024"),
    ("max_reply_bytes", 1.5e6, "max_reply_bytes must be a whole number of bytes >= 1024"),
])
def test_bad_limits_in_the_config_are_usage_errors(setting: str, value: Any, says: str, run: Run,
                                                   paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", **{setting: value})
    r = run("-q", "send", "-s", "s", QUESTION)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"[providers.fake] {says}" in r.stderr
    assert chats(fake_llm) == []


def test_the_limits_show_in_providers_list(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", total_timeout=90, max_reply_bytes=1 << 20)
    data = {p["name"]: p for p in ok("providers", "list", "--json").json()}
    assert (data["fake"]["total_timeout"], data["fake"]["max_reply_bytes"]) == (90.0, 1 << 20)
    assert (data["openai"]["total_timeout"], data["openai"]["max_reply_bytes"]) == (600.0, 32 << 20)
