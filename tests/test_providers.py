"""OpenAIProvider and AnthropicProvider against a real HTTP server on 127.0.0.1.

Nothing is mocked: each test drives a provider with a real transport.Client against
tests/fakeserver.py, then checks what went over the wire and what came back. Every test
runs twice, once over each HTTP engine (the asyncio one that plain http normally takes,
and httpx, which carries https and proxied calls), so both behave alike. Configs use
tiny backoffs so the retry tests stay fast; the one deliberate wait is the ~1 s
Retry-After that proves the header is honoured.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from typing import Any

import pytest
from fakeserver import Disconnect, ErrorReply, FakeLLMServer, RawReply, TextReply, unused_port_url

from sessctl.config import ProviderConfig
from sessctl.errors import ProviderError, UsageError
from sessctl.providers.base import (
    ChatMessage,
    ChatReply,
    ChatRequest,
    estimate_request_tokens,
    estimate_tokens,
    make_provider,
)
from sessctl.providers.http import HTTPProvider
from sessctl.providers.policy import backoff_delay, retry_after_seconds
from sessctl.providers.transport import Client

KEY = "sk-test-0123456789abcdef"
ENV = {"TEST_LLM_KEY": KEY}
APIS = ["openai", "anthropic"]
ENGINES = ["plain", "httpx"]
_engine = {"name": "plain"}
HISTORY = (
    ChatMessage("user", "first question"),
    ChatMessage("assistant", "first answer"),
    ChatMessage("user", "second question"),
)


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which engine the clients of this test use (see the module docstring)."""
    _engine["name"] = request.param
    yield request.param
    _engine["name"] = "plain"


def client() -> Client:
    made = Client(8, direct_http=_engine["name"] == "plain")
    assert made.engine_for("http://127.0.0.1:1/v1") == _engine["name"]
    return made


@contextmanager
def fake(**kwargs: Any) -> Iterator[FakeLLMServer]:
    with FakeLLMServer(**kwargs) as server:
        yield server
    assert server.errors == []


def make(api: str, base_url: str, *, env: dict[str, str] | None = None, **overrides: Any) -> HTTPProvider:
    settings: dict[str, Any] = {
        "name": f"my-{api}",
        "kind": api,
        "base_url": base_url,
        "api_key_env": "TEST_LLM_KEY",
        "model": "fake-model",
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 2.0,
    }
    settings.update(overrides)
    provider = make_provider(ProviderConfig(**settings), ENV if env is None else env)
    assert isinstance(provider, HTTPProvider)
    return provider


def provider_for(api: str, server: FakeLLMServer, **overrides: Any) -> HTTPProvider:
    base = server.openai_base_url if api == "openai" else server.anthropic_base_url
    return make(api, base, **overrides)


def request(stream: bool = False, **kwargs: Any) -> ChatRequest:
    kwargs.setdefault("system", "You are terse.")
    return ChatRequest(model="fake-model", messages=HISTORY, stream=stream, **kwargs)


def chat(provider: HTTPProvider, req: ChatRequest, pieces: list[str] | None = None) -> ChatReply:
    async def go() -> ChatReply:
        async with client() as http:
            return await provider.chat(req, http, pieces.append if pieces is not None else None)

    return asyncio.run(go())


def failure(provider: HTTPProvider, req: ChatRequest, pieces: list[str] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        chat(provider, req, pieces)
    assert "\n" not in str(info.value)
    assert KEY not in str(info.value)
    return info.value


def check(provider: HTTPProvider) -> str:
    async def go() -> str:
        async with client() as http:
            return await provider.check(http)

    return asyncio.run(go())


# --------------------------------------------------------------------------- what is sent


def test_openai_request_headers_body_history_system_and_options() -> None:
    with fake() as server:
        provider = provider_for(
            "openai", server,
            options={"temperature": 0.9, "top_p": 0.5},
            headers={"X-Team": "blue"},
        )
        chat(provider, request(options={"temperature": 0.2, "max_tokens": 50, "stop": ["END"]}))
        [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-team"] == "blue"
    assert "x-api-key" not in sent.headers
    assert sent.json == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
        "temperature": 0.2,  # the request's option beats the provider config's
        "top_p": 0.5,
        "max_tokens": 50,
        "stop": ["END"],
    }
    assert sent.json == provider.build_body(request(options={"temperature": 0.2, "max_tokens": 50,
                                                              "stop": ["END"]}))


def test_anthropic_request_headers_body_history_system_and_options() -> None:
    with fake() as server:
        provider = provider_for("anthropic", server, options={"temperature": 0.9},
                                anthropic_version="2023-06-01")
        chat(provider, request(options={"temperature": 0.2, "stop": "END", "top_k": 5}))
        chat(provider, request(system=None, options={"max_tokens": 100}))
        first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/messages")
    assert first.headers["x-api-key"] == KEY
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in first.headers
    assert first.json == {
        "model": "fake-model",
        "max_tokens": 4096,  # required by the API, so always present
        "system": "You are terse.",  # top level, never a message
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
        "temperature": 0.2,
        "top_k": 5,
        "stop_sequences": ["END"],  # the API has no `stop`; it would reject it
    }
    assert second.json["max_tokens"] == 100
    assert "system" not in second.json


def test_anthropic_base_url_may_end_in_v1() -> None:
    provider = make("anthropic", "https://api.example.test/v1/")
    assert provider.endpoint() == "https://api.example.test/v1/messages"
    assert make("anthropic", "https://api.example.test").endpoint() == "https://api.example.test/v1/messages"


@pytest.mark.parametrize("api", APIS)
def test_no_api_key_env_sends_no_auth_header(api: str) -> None:
    with fake() as server:
        chat(provider_for(api, server, api_key_env=None), request())
        [sent] = server.requests
    assert "authorization" not in sent.headers
    assert "x-api-key" not in sent.headers
    if api == "anthropic":
        assert sent.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("api", APIS)
def test_missing_key_variable_is_a_usage_error_before_any_request(api: str) -> None:
    with fake() as server:
        provider = provider_for(api, server, api_key_env="SESSCTL_TEST_NOT_SET", env={})
        with pytest.raises(UsageError, match="SESSCTL_TEST_NOT_SET"):
            chat(provider, request())
        with pytest.raises(UsageError, match="SESSCTL_TEST_NOT_SET"):
            check(provider)
        assert provider.build_body(request())["model"] == "fake-model"  # --dry-run needs no key
        assert server.requests == []


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("option", ["messages", "stream", "model"])
def test_options_cannot_override_what_sessctl_sets(api: str, option: str) -> None:
    provider = make(api, "http://127.0.0.1:9")
    with pytest.raises(UsageError, match=option):
        provider.build_body(request(options={option: "x"}))


def test_a_base_url_that_is_not_http_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="base_url"):
        make("openai", "localhost:11434/v1").endpoint()


@pytest.mark.parametrize("api", APIS)
def test_the_key_never_appears_in_repr_body_or_errors(api: str) -> None:
    with fake() as server:
        provider = provider_for(api, server)
        # An endpoint that echoes the whole key back must not get it into our message.
        server.enqueue(ErrorReply(401, f"Incorrect API key provided: {KEY}"))
        err = failure(provider, request())
        sent = server.requests[0].headers
        assert KEY in (sent.get("authorization", "") + sent.get("x-api-key", ""))  # it was sent
    assert "[REDACTED]" in str(err)
    assert KEY not in repr(provider)
    assert KEY not in json.dumps(provider.build_body(request(stream=True)))


# --------------------------------------------------------------------------- what comes back


@pytest.mark.parametrize("api", APIS)
def test_plain_reply_text_usage_model_and_latency(api: str) -> None:
    with fake() as server:
        server.enqueue(TextReply("Hi there!", tokens_in=11, tokens_out=3, model="fake-model-2025-01-01"))
        reply = chat(provider_for(api, server), request())
        assert "stream" not in server.requests[0].json
    assert reply.text == "Hi there!"
    assert reply.model == "fake-model-2025-01-01"  # what the API says it used
    assert (reply.tokens_in, reply.tokens_out, reply.tokens_estimated) == (11, 3, False)
    assert reply.first_token_ms is None
    assert 0 <= reply.latency_ms < 2000
    assert reply.finish_reason == ("stop" if api == "openai" else "end_turn")


@pytest.mark.parametrize("api", APIS)
def test_streamed_reply_pieces_usage_and_first_token_time(api: str) -> None:
    pieces: list[str] = []
    with fake() as server:
        server.enqueue(TextReply(pieces=["Hel", "lo, ", "wör", "ld ✓"], piece_delay=0.05,
                                 tokens_in=21, tokens_out=4))
        reply = chat(provider_for(api, server), request(stream=True), pieces)
        body = server.requests[0].json
    assert body["stream"] is True
    if api == "openai":
        assert body["stream_options"] == {"include_usage": True}
    assert pieces == ["Hel", "lo, ", "wör", "ld ✓"]
    assert reply.text == "Hello, wörld ✓"
    assert (reply.tokens_in, reply.tokens_out, reply.tokens_estimated) == (21, 4, False)
    assert reply.first_token_ms is not None
    # three 50 ms gaps between pieces separate the first token from the full reply
    assert reply.latency_ms - reply.first_token_ms >= 120


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    "wire",
    [
        {"multiline": True, "crlf": True},
        {"fragment": 5},
        {"comments": False},
    ],
    ids=["multiline-crlf", "fragmented", "no-comments"],
)
def test_stream_framing_variants_give_the_same_reply(api: str, wire: dict[str, Any]) -> None:
    pieces: list[str] = []
    with fake() as server:
        server.enqueue(TextReply("naïve café ✓ done", **wire))
        reply = chat(provider_for(api, server), request(stream=True), pieces)
    assert reply.text == "naïve café ✓ done"
    assert "".join(pieces) == reply.text
    assert reply.tokens_estimated is False


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [False, True])
def test_usage_absent_is_estimated_and_marked(api: str, stream: bool) -> None:
    with fake() as server:
        server.enqueue(TextReply("An answer without usage.", usage=False))
        req = request(stream=stream)
        reply = chat(provider_for(api, server), req)
    assert reply.tokens_estimated is True
    assert reply.tokens_in == estimate_request_tokens(req)
    assert reply.tokens_out == estimate_tokens("An answer without usage.")


def test_openai_stream_usage_can_be_turned_off() -> None:
    with fake() as server:
        reply = chat(provider_for("openai", server, stream_usage=False), request(stream=True))
        body = server.requests[0].json
    assert body["stream"] is True and "stream_options" not in body
    assert reply.tokens_estimated is True  # the server sends usage only when asked


@pytest.mark.parametrize("api", APIS)
def test_reply_model_falls_back_to_the_requested_one(api: str) -> None:
    if api == "openai":
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "stop"}]}
    else:
        body = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 1}}
    with fake() as server:
        server.enqueue(RawReply(body=body))
        reply = chat(provider_for(api, server), request())
    assert (reply.text, reply.model) == ("ok", "fake-model")


def test_a_server_that_ignores_stream_true_still_reaches_on_text() -> None:
    pieces: list[str] = []
    with fake() as server:
        server.enqueue(RawReply(body={"model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}))
        reply = chat(provider_for("openai", server), request(stream=True), pieces)
    # Delivered at once, though maybe in two pieces: the key-scrubber holds back a tail
    # that could begin a key ("e" is in this one) until the end.
    assert "".join(pieces) == "whole" and reply.text == "whole" and len(pieces) <= 2


def test_concurrent_chats_share_one_client() -> None:
    """Not a benchmark (bench/ has that): only that calls overlap and replies don't mix."""
    delay, n = 0.3, 8
    with fake(delay=delay) as server:
        provider = provider_for("openai", server)

        async def go() -> list[ChatReply]:
            async with client() as http:
                return await asyncio.gather(*(
                    provider.chat(ChatRequest("fake-model", [ChatMessage("user", f"q{i}")]), http)
                    for i in range(n)
                ))

        started = time.monotonic()
        replies = asyncio.run(go())
        elapsed = time.monotonic() - started
    assert [r.text for r in replies] == [f"echo: q{i}" for i in range(n)]
    assert elapsed < n * delay / 2  # serial would take n × delay


# --------------------------------------------------------------------------- retries


def test_429_waits_for_retry_after_then_succeeds() -> None:
    with fake() as server:
        server.enqueue(ErrorReply(429, "Rate limit reached", headers={"Retry-After": "1"}))
        reply = chat(provider_for("openai", server), request())
        first, second = server.requests
    assert reply.text == "echo: second question"
    gap = second.received_at - first.received_at
    assert 0.95 <= gap < 1.6  # the server's 1 s, not our 10 ms backoff


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 529])
def test_transient_status_is_retried(api: str, status: int) -> None:
    with fake() as server:
        server.enqueue(ErrorReply(status, "try later"))
        reply = chat(provider_for(api, server), request())
        assert len(server.requests) == 2
    assert reply.text == "echo: second question"


def test_503_until_retries_run_out() -> None:
    with fake() as server:
        provider = provider_for("openai", server, max_retries=2)
        server.enqueue(*[ErrorReply(503, "Service temporarily unavailable")] * 3)
        err = failure(provider, request())
        assert len(server.requests) == 3
    assert err.status == 503
    assert str(err) == (
        f"provider 'my-openai' ({server.openai_base_url}/chat/completions): "
        "HTTP 503: Service temporarily unavailable (after 3 attempts)"
    )


@pytest.mark.parametrize("api", APIS)
def test_401_is_not_retried_and_quotes_the_endpoint(api: str) -> None:
    with fake(api_key="sk-the-right-one") as server:
        provider = provider_for(api, server)
        err = failure(provider, request())
        assert len(server.requests) == 1
    assert err.status == 401
    expected = "invalid x-api-key" if api == "anthropic" else "Incorrect API key provided."
    assert str(err).startswith(f"provider 'my-{api}' ({provider.endpoint()}): HTTP 401: {expected}")


@pytest.mark.parametrize("status", [400, 403, 404, 413, 422])
def test_other_4xx_are_not_retried(status: int) -> None:
    with fake() as server:
        server.enqueue(ErrorReply(status, f"nope {status}"))
        err = failure(provider_for("anthropic", server), request())
        assert len(server.requests) == 1
    assert err.status == status
    assert str(err).endswith(f"HTTP {status}: nope {status}")


def test_retry_after_beyond_backoff_max_fails_at_once() -> None:
    with fake() as server:
        server.enqueue(ErrorReply(429, "Rate limit reached", headers={"Retry-After": "3600"}))
        err = failure(provider_for("openai", server), request())
        assert len(server.requests) == 1
    assert err.status == 429
    assert "HTTP 429: Rate limit reached" in str(err) and "3600 s" in str(err)


def test_x_should_retry_false_is_obeyed() -> None:
    with fake() as server:
        server.enqueue(ErrorReply(503, "down for maintenance", headers={"x-should-retry": "false"}))
        failure(provider_for("openai", server), request())
        assert len(server.requests) == 1


def test_html_error_page_is_excerpted_on_one_line() -> None:
    page = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    with fake() as server:
        server.enqueue(*[RawReply(502, page, content_type="text/html")] * 2)
        err = failure(provider_for("openai", server, max_retries=1), request())
    assert err.status == 502
    assert str(err).endswith("HTTP 502: 502 Bad Gateway 502 Bad Gateway nginx (after 2 attempts)")


def test_read_timeout_fails_with_a_clear_message() -> None:
    with fake() as server:
        server.enqueue(TextReply("late", delay=3))
        started = time.monotonic()
        err = failure(provider_for("openai", server, read_timeout=0.3, max_retries=0), request())
        elapsed = time.monotonic() - started
    assert "no response within the read timeout (0.3 s)" in str(err)
    assert err.status is None and err.partial == ""
    assert elapsed < 2


def test_read_timeout_is_retried() -> None:
    with fake() as server:
        server.enqueue(TextReply("late", delay=3))
        reply = chat(provider_for("anthropic", server, read_timeout=0.3, max_retries=1), request())
        assert len(server.requests) == 2
    assert reply.text == "echo: second question"


@pytest.mark.parametrize("api", APIS)
def test_connection_refused(api: str) -> None:
    base = unused_port_url() + ("/v1" if api == "openai" else "")
    started = time.monotonic()
    err = failure(make(api, base, max_retries=1), request())
    assert time.monotonic() - started < 2
    assert "cannot connect: Connection refused (after 2 attempts)" in str(err)
    assert err.status is None


def test_dropped_connection_is_retried() -> None:
    with fake() as server:
        server.enqueue(Disconnect())
        reply = chat(provider_for("openai", server), request())
        assert len(server.requests) == 2
    assert reply.text == "echo: second question"


# --------------------------------------------------------------------------- broken replies


@pytest.mark.parametrize("api", APIS)
def test_malformed_json_body(api: str) -> None:
    with fake() as server:
        server.enqueue(RawReply(body='{"choices": [{"message": '))
        err = failure(provider_for(api, server), request())
        assert len(server.requests) == 1  # a garbled 200 is not transient
    assert "malformed JSON" in str(err)


def test_malformed_json_in_a_stream_keeps_the_partial_text() -> None:
    good = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    with fake() as server:
        server.enqueue(RawReply(content_type="text/event-stream",
                                chunks=[f"data: {json.dumps(good)}\n\n", "data: {not json\n\n", "data: [DONE]\n\n"]))
        err = failure(provider_for("openai", server), request(stream=True))
    assert "malformed JSON in the stream" in str(err)
    assert err.partial == "Hi"


@pytest.mark.parametrize("api", APIS)
def test_stream_cut_midway_keeps_partial_and_is_not_retried(api: str) -> None:
    pieces: list[str] = []
    with fake() as server:
        server.enqueue(TextReply(pieces=["one ", "two ", "three ", "four"], cut_after=2))
        err = failure(provider_for(api, server), request(stream=True), pieces)
        assert len(server.requests) == 1  # the user has seen "one two "
    assert err.partial == "one two "
    assert pieces == ["one ", "two "]
    assert "the reply is incomplete (8 characters received)" in str(err)


@pytest.mark.parametrize("api", APIS)
def test_stream_cut_before_any_text_is_retried(api: str) -> None:
    pieces: list[str] = []
    with fake() as server:
        server.enqueue(TextReply("never seen", cut_after=0))
        reply = chat(provider_for(api, server), request(stream=True), pieces)
        assert len(server.requests) == 2
    assert reply.text == "".join(pieces) == "echo: second question"


@pytest.mark.parametrize("api", APIS)
def test_stream_without_terminator_is_incomplete(api: str) -> None:
    with fake() as server:
        server.enqueue(TextReply("all of it", omit_terminator=True))
        err = failure(provider_for(api, server), request(stream=True))
        assert len(server.requests) == 1
    terminator = "[DONE]" if api == "openai" else "message_stop"
    assert f"the stream ended before {terminator}" in str(err)
    assert err.partial == "all of it"


@pytest.mark.parametrize("api", APIS)
def test_error_event_mid_stream(api: str) -> None:
    pieces: list[str] = []
    with fake() as server:
        server.enqueue(TextReply(pieces=["Par", "tial ", "answer"], error_after=2, error_message="Overloaded"))
        err = failure(provider_for(api, server), request(stream=True), pieces)
        assert len(server.requests) == 1
    assert "Overloaded" in str(err)
    assert err.partial == "Partial " and pieces == ["Par", "tial "]


@pytest.mark.parametrize("api", APIS)
def test_transient_error_event_before_any_text_is_retried(api: str) -> None:
    with fake() as server:
        server.enqueue(TextReply("x", error_after=0))  # overloaded / server_error
        reply = chat(provider_for(api, server), request(stream=True))
        assert len(server.requests) == 2
    assert reply.text == "echo: second question"


def test_anthropic_error_event_that_is_not_transient_is_not_retried() -> None:
    with fake() as server:
        server.enqueue(TextReply("x", error_after=0, error_type="invalid_request_error",
                                 error_message="prompt is too long"))
        err = failure(provider_for("anthropic", server), request(stream=True))
        assert len(server.requests) == 1
    assert str(err).endswith("error event in the stream: prompt is too long (invalid_request_error)")


# --------------------------------------------------------------------------- providers test


@pytest.mark.parametrize("api", APIS)
def test_check_lists_models_with_auth(api: str) -> None:
    with fake() as server:
        line = check(provider_for(api, server))
        [sent] = server.requests
    assert (sent.method, sent.path) == ("GET", "/v1/models")
    if api == "openai":
        assert sent.headers["authorization"] == f"Bearer {KEY}"
    else:
        assert sent.headers["x-api-key"] == KEY and "anthropic-version" in sent.headers
    assert line.startswith("ok in ") and line.endswith("3 models, 'fake-model' listed")


@pytest.mark.parametrize("api", APIS)
def test_check_reports_bad_auth_without_retrying(api: str) -> None:
    with fake(api_key="sk-other") as server:
        provider = provider_for(api, server)
        with pytest.raises(ProviderError, match="HTTP 401") as info:
            check(provider)
        assert len(server.requests) == 1
    assert info.value.status == 401


def test_check_unreachable() -> None:
    with pytest.raises(ProviderError, match="cannot connect"):
        check(make("openai", unused_port_url() + "/v1"))


# --------------------------------------------------------------------------- retry timing


def test_retry_after_header_forms() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": formatdate(now + 5, usegmt=True)}, now=now) == 5.0
    assert retry_after_seconds({"retry-after": formatdate(now - 50, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_backoff_is_full_jitter_under_the_cap() -> None:
    rng = random.Random(7)
    for retry in range(12):
        ceiling = min(4.0, 0.5 * 2**retry)
        samples = [backoff_delay(retry, 0.5, 4.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8 and min(samples) < ceiling * 0.2  # spread, not fixed
