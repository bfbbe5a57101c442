"""Property-based: no reply an endpoint can send crashes `send` or loses the message.

Issue 11 found 200 replies of the wrong shape ending in exit 1 with the message lost.
Rather than list the shapes, these tests generate them (hypothesis): valid replies and
stream events with one part replaced by any JSON value (or removed), arbitrary JSON,
arbitrary bytes, text with lone surrogates and control characters, huge numbers.

- the parsers (the real OpenAI and Anthropic code, JSON bodies and SSE events) either
  return a well-formed reply (text that UTF-8 can encode, a printable model name,
  counts a database can hold) or raise BadReply / StreamFailure: nothing else;
- a real `send` (CLI, fake server on 127.0.0.1) given such a reply exits 0 with the
  reply stored, or 5 with one error line and the message stored `unanswered`: never 1,
  never a lost message;
- the streaming key scrubber prints what scrubbing the whole text would, however the
  text is split.

Examples per test: SESSCTL_FUZZ_EXAMPLES (default 150; the e2e test runs a third of
that, each example being a whole `send`). `pytest --hypothesis-show-statistics` shows
what ran.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time
from typing import Any

import pytest
from fakeserver import FakeLLMServer, RawReply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sendkit import APIS, configure

from conftest import Paths, Run
from sessctl.config import ProviderConfig
from sessctl.providers.base import ChatMessage, ChatReply, ChatRequest, StreamScrubber, make_provider, scrub
from sessctl.providers.http import HTTPProvider, StreamFailure, StreamState
from sessctl.providers.shape import BadReply
from sessctl.providers.sse import SSEDecoder

EXAMPLES = int(os.environ.get("SESSCTL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None)
# The e2e test shares one fake server and data dir across its examples (each uses a new
# session), so function-scoped fixtures are what it wants.
E2E = settings(max_examples=max(10, EXAMPLES // 3), deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

REQUEST = ChatRequest("fake-model", [ChatMessage("user", "question")])
NAMES = ["choices", "message", "content", "delta", "text", "type", "usage", "model", "index", "finish_reason",
         "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "error", "stop_reason",
         "content_block", "refusal", "role", "text_delta", "message_start", "data", "id"]

# Strings that have broken parsers or what comes after them.
NASTY = st.sampled_from(["\ud800", "a\udfffb", "\x00", "\x1b[31mred", "\u202eevil", "", " ", "[DONE]",
                         "text", "text_delta", "message_stop", "error", "\ufeff", "é" * 3, "x" * 300])
STRINGS = st.one_of(st.text(max_size=20), NASTY,
                    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3))
SCALARS = st.one_of(st.none(), st.booleans(), STRINGS, st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-(2**64), max_value=2**64), st.sampled_from([10**30, -1, 2**63, 0]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=4)), inner, max_size=5)),
    max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (the value itself included)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """`template` with one part replaced by any JSON value, or removed."""
    value = copy.deepcopy(template)
    path = draw(st.sampled_from(_paths(value)))
    if not path:
        return draw(JSON)
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return value


OPENAI_BODY = {"id": "c1", "object": "chat.completion", "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
ANTHROPIC_BODY = {"id": "m1", "type": "message", "role": "assistant", "model": "m",
                  "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 3, "output_tokens": 1}}
OPENAI_EVENTS = [
    ("", {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
    ("", {"model": "m", "choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}]}),
    ("", {"model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
    ("", {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    ("", "[DONE]"),
]
ANTHROPIC_EVENTS = [
    ("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "hel"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "lo"}}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 2}}),
    ("message_stop", {"type": "message_stop"}),
]
BODIES = {"openai": OPENAI_BODY, "anthropic": ANTHROPIC_BODY}
EVENTS = {"openai": OPENAI_EVENTS, "anthropic": ANTHROPIC_EVENTS}


def _dumps(value: Any) -> str:
    return value if isinstance(value, str) and value == "[DONE]" else json.dumps(value)


@st.composite
def bodies(draw: st.DrawFn, api: str) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=100_000))
        return b"[" * depth + b"]" * depth  # RecursionError in json.loads
    value = draw(mutated(BODIES[api])) if kind == "mutated" else draw(JSON)
    return json.dumps(value).encode()


@st.composite
def event_streams(draw: st.DrawFn, api: str) -> list[tuple[str, str]]:
    """A stream's events: the valid sequence with some events mutated, dropped or added."""
    events: list[tuple[str, str]] = []
    for name, payload in EVENTS[api]:
        action = draw(st.sampled_from(["keep", "keep", "mutate", "drop", "junk"]))
        if action == "drop":
            continue
        if action == "mutate":
            payload = draw(mutated(payload))
        elif action == "junk":
            events.append((draw(st.sampled_from([name, "error", "", "ping"])), draw(STRINGS)))
        events.append((name, _dumps(payload)))
    return events


def _sse(events: list[tuple[str, str]]) -> bytes:
    frames = []
    for name, data in events:
        lines = ([f"event: {name}"] if name else []) + [f"data: {line}" for line in data.split("\n")]
        frames.append("\n".join(lines) + "\n\n")
    return "".join(frames).encode("utf-8", "surrogatepass")


def _provider(api: str) -> HTTPProvider:
    provider = make_provider(ProviderConfig(name="fuzz", kind=api, base_url="http://127.0.0.1:9/v1", model="m"), {})
    assert isinstance(provider, HTTPProvider)
    return provider


def _well_formed(text: str, model: str | None, tokens: list[int | None]) -> None:
    text.encode("utf-8")  # no lone surrogates: storable and printable
    if model is not None:
        assert isinstance(model, str) and model.isprintable() and 0 < len(model) <= 200
        model.encode("utf-8")
    for n in tokens:
        assert n is None or (isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**9)


def _check_reply(reply: ChatReply) -> None:
    assert isinstance(reply.text, str)
    _well_formed(reply.text, reply.model, [reply.tokens_in, reply.tokens_out])
    assert reply.finish_reason is None or reply.finish_reason.isprintable()


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize("api", APIS)
@FUZZ
@given(data=st.data())
def test_json_reply_parsing_is_total(api: str, data: st.DataObject) -> None:
    raw = data.draw(bodies(api))
    try:
        reply = _provider(api).reply_from_body(raw, REQUEST, time.perf_counter())
    except BadReply as bad:
        assert bad.detail and "\n" not in bad.detail
        return
    _check_reply(reply)


@pytest.mark.parametrize("api", APIS)
@FUZZ
@given(data=st.data())
def test_stream_event_parsing_is_total(api: str, data: st.DataObject) -> None:
    provider = _provider(api)
    events = data.draw(event_streams(api))
    raw = _sse(events)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=4)))
    decoder = SSEDecoder()
    state = StreamState(started=time.perf_counter())
    shown: list[str] = []
    try:
        for a, b in itertools.pairwise([0, *cuts, len(raw)]):
            for event in decoder.feed(raw[a:b]):
                provider.handle_event(event, state, shown.append)
                if state.done:
                    break
            if state.done:
                break
    except (BadReply, StreamFailure):
        pass
    _well_formed(state.text, state.model, [state.tokens_in, state.tokens_out])
    assert "".join(shown) == state.text
    if state.done:
        _check_reply(provider.finish_stream(REQUEST, state))


# --------------------------------------------------------------------------- the streaming scrubber


SECRET_PARTS = st.sampled_from(["sk-e2e-test-Z9y8X7w6V5u4T3s2R1q0", "az-0123456789abcdef0123456789abcdef",
                                "short-secret"])


@FUZZ
@given(secrets=st.lists(SECRET_PARTS, min_size=1, max_size=3), data=st.data())
def test_the_stream_scrubber_prints_what_scrubbing_the_whole_would(secrets: list[str], data: st.DataObject) -> None:
    fragments = st.one_of(st.text(max_size=6), SECRET_PARTS.flatmap(
        lambda s: st.tuples(st.integers(0, len(s)), st.integers(0, len(s))).map(lambda ab: s[min(ab):max(ab)])))
    text = "".join(data.draw(st.lists(fragments, max_size=12)))
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=8)))
    out: list[str] = []
    scrubber = StreamScrubber(secrets, "[R]", out.append)
    for a, b in itertools.pairwise([0, *cuts, len(text)]):
        scrubber.feed(text[a:b])
    scrubber.flush()
    assert "".join(out) == scrub(text, secrets, "[R]")[0]


# --------------------------------------------------------------------------- a real send


_session_ids = itertools.count()


@pytest.fixture
def fuzz_llm(fake_llm: FakeLLMServer) -> FakeLLMServer:
    return fake_llm


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, bool, RawReply]:
    api = draw(st.sampled_from(APIS))
    if draw(st.booleans()):
        # Mostly 200s; error statuses too, whose bodies are read for their message.
        status = draw(st.sampled_from([200, 200, 200, 400, 401, 429, 500, 529]))
        return api, False, RawReply(status, draw(bodies(api)))
    raw = _sse(draw(event_streams(api)))
    pieces = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=3)))
    chunks = [raw[a:b] for a, b in itertools.pairwise([0, *pieces, len(raw)]) if b > a]
    return api, True, RawReply(200, chunks=chunks, content_type="text/event-stream")


@E2E
@given(case=replies())
def test_send_never_exits_1_nor_loses_the_message(case: tuple[str, bool, RawReply], run: Run, ok: Run,
                                                 paths: Paths, fuzz_llm: FakeLLMServer) -> None:
    api, stream, reply = case
    configure(paths, fuzz_llm, api, max_retries=0)
    sid = f"fuzz-{next(_session_ids)}"
    fuzz_llm.enqueue(reply)
    r = run("-q", "send", "-s", sid, "question", "--stream" if stream else "--no-stream")
    assert r.exit_code in (0, 5), (r.exit_code, r.stderr)
    if r.exit_code == 5:
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("sessctl: error: "), r.stderr
    messages = ok("show", sid, "--json").json()["messages"]
    assert messages[0]["content"] == "question"
    assert messages[0]["status"] == ("ok" if r.exit_code == 0 else "unanswered")
    if r.exit_code == 0:
        assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["status"] == "ok"
    else:
        assert [m["status"] for m in messages[1:]] in ([], ["incomplete"])
    assert fuzz_llm.pending == 0
