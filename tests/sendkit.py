"""Helpers for the `send` tests that run the real CLI against tests/fakeserver.py.

`fake_llm` (a fixture) starts a FakeLLMServer on 127.0.0.1, puts the API key in the
environment, and asserts at the end that the server hit no internal error. `configure`
writes config.toml with providers pointing at it, using small timeouts and backoffs so
fault tests stay fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fakeserver import FakeLLMServer

from conftest import Paths

KEY = "sk-e2e-test-Z9y8X7w6V5u4T3s2R1q0"
KEY_ENV = "FAKE_LLM_KEY"
APIS = ["openai", "anthropic"]
FAST: dict[str, Any] = {
    "connect_timeout": 1.0,
    "read_timeout": 2.0,
    "max_retries": 2,
    "backoff_base": 0.01,
    "backoff_max": 1.0,
}


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeLLMServer() as server:
        yield server
    assert server.errors == []


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers, booleans and arrays read the same in TOML


def base_url(server: FakeLLMServer, kind: str, prefix: str = "") -> str:
    """The base_url for a provider of `kind`; `prefix` gives it its own path on the same
    server (so replies can be scripted per provider with enqueue(..., path=...))."""
    url = server.url + prefix
    return url + "/v1" if kind == "openai" else url


def chat_path(kind: str, prefix: str = "") -> str:
    return prefix + ("/v1/chat/completions" if kind == "openai" else "/v1/messages")


def provider_table(name: str, kind: str, url: str, **fields: Any) -> str:
    settings: dict[str, Any] = {"kind": kind, "base_url": url, "api_key_env": KEY_ENV, "model": "fake-model"}
    settings.update(FAST)
    settings.update(fields)
    lines = [f"[providers.{name}]"]
    lines += [f"{k} = {_toml(v)}" for k, v in settings.items() if v is not None]
    return "\n".join(lines) + "\n"


def configure(paths: Paths, server: FakeLLMServer, kind: str = "openai", *, name: str = "fake",
              extra: str = "", **fields: Any) -> None:
    """config.toml with one provider `name` of `kind` (the default) at the fake server."""
    paths.write_config(f'default_provider = "{name}"\n\n'
                       + provider_table(name, kind, base_url(server, kind), **fields) + extra)


def chats(server: FakeLLMServer) -> list[Any]:
    """The chat requests the server received (not model-list probes), in order."""
    return [r for r in server.requests if r.api is not None]


def roles(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]
