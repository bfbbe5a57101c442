"""`send` end to end: the real CLI, a real SQLite file, and a real HTTP server on
127.0.0.1 speaking the OpenAI and Anthropic protocols (tests/fakeserver.py).

Each test checks both sides: what went over the wire (auth, body, history order,
system prompt placement, options and their precedence, the stream flag) and what was
stored (`show --json`, `export`, `stats`).
"""

from __future__ import annotations

import pytest
from fakeserver import FakeLLMServer, TextReply
from sendkit import APIS, KEY, base_url, chats, configure, provider_table, roles

from conftest import Paths, Run


def _auth_ok(api: str, headers: dict[str, str]) -> None:
    if api == "openai":
        assert headers["authorization"] == f"Bearer {KEY}"
        assert "x-api-key" not in headers
    else:
        assert headers["x-api-key"] == KEY
        assert headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("sessctl/")


@pytest.mark.parametrize("api", APIS)
def test_turns_carry_history_system_and_options_in_order(api: str, ok: Run, paths: Paths,
                                                         fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api, options={"temperature": 0.9, "top_p": 0.5})
    ok("create", "conv", "--system", "You are terse.", "-o", "temperature=0.3", "-o", "max_tokens=77")
    fake_llm.enqueue(TextReply("Paris.", tokens_in=21, tokens_out=2),
                     TextReply("About 2.1 million.", tokens_in=40, tokens_out=6),
                     TextReply("Lyon.", tokens_in=55, tokens_out=2))
    assert ok("send", "-s", "conv", "Capital of France?").stdout == "Paris.\n"
    assert ok("send", "-s", "conv", "Population?").stdout == "About 2.1 million.\n"
    assert ok("send", "-s", "conv", "Second city?", "-o", "temperature=0.1").stdout == "Lyon.\n"

    first, second, third = chats(fake_llm)
    for sent in (first, second, third):
        _auth_ok(api, sent.headers)
        assert sent.path == ("/v1/chat/completions" if api == "openai" else "/v1/messages")
        assert "stream" not in sent.json  # stdout is not a terminal: no streaming by default
        assert sent.json["model"] == "fake-model"
        assert sent.json["max_tokens"] == 77  # the session's option
        assert sent.json["top_p"] == 0.5  # only the provider config sets it
    # Precedence: provider config < session (create -o) < this turn (send -o).
    assert [s.json["temperature"] for s in (first, second, third)] == [0.3, 0.3, 0.1]

    history = [
        ("user", "Capital of France?"), ("assistant", "Paris."),
        ("user", "Population?"), ("assistant", "About 2.1 million."),
        ("user", "Second city?"),
    ]
    system = [("system", "You are terse.")] if api == "openai" else []
    assert roles(first.json) == system + history[:1]
    assert roles(second.json) == system + history[:3]
    assert roles(third.json) == system + history
    if api == "anthropic":
        assert third.json["system"] == "You are terse."  # top level, never a message
    else:
        assert "system" not in third.json

    s = ok("show", "conv", "--json").json()
    assert [(m["role"], m["content"], m["status"]) for m in s["messages"]] == [
        (role, text, "ok") for role, text in history
    ] + [("assistant", "Lyon.", "ok")]
    replies = [m for m in s["messages"] if m["role"] == "assistant"]
    assert [(m["tokens_in"], m["tokens_out"], m["tokens_estimated"]) for m in replies] == [
        (21, 2, False), (40, 6, False), (55, 2, False)]
    for m in replies:
        assert m["model"] == "fake-model" and m["provider"] == "fake"
        assert isinstance(m["latency_ms"], int) and m["latency_ms"] >= 0
        assert m["first_token_ms"] is None  # not streamed
    assert s["stats"] == {"messages": 6, "tokens_in": 116, "tokens_out": 10, "redactions": 0}
    assert s["model"] == "fake-model" and s["options"] == {"temperature": 0.3, "max_tokens": 77}


@pytest.mark.parametrize("api", APIS)
def test_stream_sends_the_flag_and_stores_the_whole_reply_with_first_token_time(
        api: str, ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    fake_llm.enqueue(TextReply("Hello there, streaming world", pieces=["Hel", "lo there,", " streaming", " world"],
                               tokens_in=9, tokens_out=4, model="fake-model-2025", multiline=True))
    r = ok("send", "-s", "st", "hi", "--stream")
    assert r.stdout == "Hello there, streaming world\n"
    [sent] = chats(fake_llm)
    assert sent.json["stream"] is True
    assert sent.headers["accept"] == "text/event-stream"
    if api == "openai":
        assert sent.json["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in sent.json
    [_, reply] = ok("show", "st", "--json").json()["messages"]
    assert reply["content"] == "Hello there, streaming world" and reply["status"] == "ok"
    assert reply["model"] == "fake-model-2025"  # what the endpoint says it used
    assert (reply["tokens_in"], reply["tokens_out"], reply["tokens_estimated"]) == (9, 4, False)
    assert isinstance(reply["first_token_ms"], int)
    assert 0 <= reply["first_token_ms"] <= reply["latency_ms"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", APIS)
def test_usage_missing_is_estimated_and_marked(api: str, stream: bool, ok: Run, paths: Paths,
                                               fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    fake_llm.enqueue(TextReply("twelve chars", usage=False))
    ok("send", "-s", "u", "count me", "--stream" if stream else "--no-stream")
    reply = ok("show", "u", "--json").json()["messages"][1]
    assert reply["tokens_estimated"] is True
    assert reply["tokens_out"] == 3 and reply["tokens_in"] > 0  # about four characters a token


def test_model_and_provider_override_one_turn(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    paths.write_config(
        'default_provider = "oa"\n'
        + provider_table("oa", "openai", base_url(fake_llm, "openai"), model="oa-model")
        + provider_table("an", "anthropic", base_url(fake_llm, "anthropic"), model="an-model")
    )
    ok("create", "mix", "--model", "session-model")
    ok("send", "-s", "mix", "one")
    ok("send", "-s", "mix", "two", "--model", "turn-model")
    ok("send", "-s", "mix", "three", "--provider", "an")
    ok("send", "-s", "mix", "four", "--provider", "an", "--model", "an-turn")
    ok("send", "-s", "mix", "five")
    sent = chats(fake_llm)
    assert [(s.api, s.json["model"]) for s in sent] == [
        ("openai", "session-model"),
        ("openai", "turn-model"),
        ("anthropic", "an-model"),  # another provider: its model, not the session's
        ("anthropic", "an-turn"),
        ("openai", "session-model"),  # overrides last one turn
    ]
    assert roles(sent[-1].json)[-3:] == [("user", "four"), ("assistant", "echo: four"), ("user", "five")]
    s = ok("show", "mix", "--json").json()
    assert (s["provider"], s["model"]) == ("oa", "session-model")
    replies = [(m["provider"], m["model"]) for m in s["messages"] if m["role"] == "assistant"]
    assert replies == [("oa", "session-model"), ("oa", "turn-model"), ("an", "an-model"),
                       ("an", "an-turn"), ("oa", "session-model")]


def test_a_session_created_by_send_keeps_the_provider_and_model_given(ok: Run, paths: Paths,
                                                                     fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", extra=provider_table("an", "anthropic", base_url(fake_llm, "anthropic")))
    ok("send", "-s", "new", "hi", "--provider", "an", "--model", "an-x")
    ok("send", "-s", "new", "again")
    assert [(s.api, s.json["model"]) for s in chats(fake_llm)] == [("anthropic", "an-x"), ("anthropic", "an-x")]
    s = ok("show", "new", "--json").json()
    assert (s["provider"], s["model"]) == ("an", "an-x")


def test_usage_and_latency_reach_export_and_stats(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "anthropic")
    fake_llm.enqueue(TextReply("a", tokens_in=10, tokens_out=1), TextReply("b", tokens_in=20, tokens_out=2),
                     TextReply("c", tokens_in=30, tokens_out=3))
    ok("send", "-s", "x", "one")
    ok("send", "-s", "x", "two", "--stream")
    ok("send", "-s", "y", "three")
    [x] = ok("export", "x").json()
    replies = [m for m in x["messages"] if m["role"] == "assistant"]
    assert [(m["tokens_in"], m["tokens_out"], m["tokens_estimated"], m["provider"]) for m in replies] == [
        (10, 1, False, "fake"), (20, 2, False, "fake")]
    assert replies[0]["first_token_ms"] is None and isinstance(replies[1]["first_token_ms"], int)
    assert all(isinstance(m["latency_ms"], int) for m in replies)
    st = ok("stats", "--json").json()
    assert st["tokens"] == {"in": 60, "out": 6}
    assert st["messages"] == 6
    assert st["latency_ms"]["avg"] is not None and st["latency_ms"]["p95"] >= st["latency_ms"]["p50"]
    by = ok("stats", "--by", "provider", "--json").json()
    assert [(g["key"], g["tokens"]) for g in by["groups"]] == [("fake", {"in": 60, "out": 6})]


def test_send_json_reports_usage(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai")
    fake_llm.enqueue(TextReply("fine", tokens_in=5, tokens_out=1))
    out = ok("send", "-s", "j", "hi", "--json").json()
    assert {k: out[k] for k in ("session", "reply", "model", "tokens_in", "tokens_out", "status",
                                "provider", "tokens_estimated")} == {
        "session": "j", "reply": "fine", "model": "fake-model", "tokens_in": 5, "tokens_out": 1,
        "status": "ok", "provider": "fake", "tokens_estimated": False}
    assert isinstance(out["latency_ms"], int) and "error" not in out


@pytest.mark.parametrize("api", APIS)
def test_session_context_limit_overrides_the_provider_config(api: str, ok: Run, paths: Paths,
                                                             fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api, max_context_messages=2)
    ok("create", "narrow", "--system", "Stay.")
    ok("create", "wide", "--system", "Stay.", "--max-context-messages", "4")
    for sid in ("narrow", "wide"):
        for word in ("one", "two", "three"):
            ok("send", "-s", sid, word)
    fake_llm.clear()
    ok("send", "-s", "narrow", "four")
    ok("send", "-s", "wide", "four")
    narrow, wide = chats(fake_llm)
    system = [("system", "Stay.")] if api == "openai" else []
    # The oldest whole turns go first; the system prompt always stays.
    assert roles(narrow.json) == system + [("user", "four")]
    assert roles(wide.json) == system + [("user", "three"), ("assistant", "echo: three"), ("user", "four")]
    # The dry run shows exactly what is sent.
    body = ok("send", "-s", "wide", "five", "--dry-run").json()
    assert roles(body)[-3:] == [("user", "four"), ("assistant", "echo: four"), ("user", "five")]
    assert len(chats(fake_llm)) == 2


def test_dry_run_prints_the_exact_body_sent(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", options={"temperature": 0.5})
    ok("create", "d", "--system", "Sys.", "-o", "top_p=0.9")
    ok("send", "-s", "d", "first")
    dry = ok("send", "-s", "d", "second", "--dry-run", "-o", "seed=7", "--stream").json()
    ok("send", "-s", "d", "second", "-o", "seed=7", "--stream")
    assert chats(fake_llm)[-1].json == dry
