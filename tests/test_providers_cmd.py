"""`sessctl providers list` and `sessctl providers test` through the real CLI."""

from __future__ import annotations

import re

from fakeserver import FakeLLMServer, unused_port_url
from sendkit import KEY, KEY_ENV, base_url, provider_table

from conftest import Paths, Run


def _config(paths: Paths, server: FakeLLMServer, *extra: str) -> None:
    paths.write_config('default_provider = "claude"\n'
                       + provider_table("claude", "anthropic", base_url(server, "anthropic"),
                                        model="claude-sonnet-4-5", max_context_messages=20)
                       + provider_table("local", "openai", base_url(server, "openai"), api_key_env=None,
                                        model="llama3.1", options={"temperature": 0.2})
                       + "".join(extra))


def test_list_table(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _config(paths, fake_llm)
    url = fake_llm.url
    w = len(url) + 3  # the widest base_url: ".../v1"
    rows = [
        ("anthropic", "anthropic", "claude-sonnet-4-5", "https://api.anthropic.com", "ANTHROPIC_API_KEY (NOT SET)", ""),
        ("claude", "anthropic", "claude-sonnet-4-5", url, f"{KEY_ENV} (set)", "yes"),
        ("echo", "echo", "echo", "-", "-", ""),
        ("local", "openai", "llama3.1", url + "/v1", "(none)", ""),
        ("openai", "openai", "gpt-4o-mini", "https://api.openai.com/v1", "OPENAI_API_KEY (NOT SET)", ""),
    ]
    widths = [9, 9, 17, max(w, 25), 27, 9]  # tabulate pads a header by 2 at least
    head = ["NAME", "KIND", "MODEL", "BASE_URL", "API KEY", "DEFAULT"]

    def line(cells: tuple[str, ...] | list[str]) -> str:
        return "  ".join(c.ljust(n) for c, n in zip(cells, widths)).rstrip()

    expected = [line(head), "  ".join("-" * n for n in widths)] + [line(r) for r in rows]
    got = [ln.rstrip() for ln in ok("providers", "list").stdout.splitlines()]
    assert got == expected


def test_list_json(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _config(paths, fake_llm)
    data = {p["name"]: p for p in ok("providers", "list", "--json").json()}
    assert list(data) == ["anthropic", "claude", "echo", "local", "openai"]
    assert data["claude"] == {
        "name": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": fake_llm.url,
        "api_key_env": KEY_ENV, "api_key_set": True, "default": True, "connect_timeout": 1.0,
        "read_timeout": 2.0, "total_timeout": 600.0, "max_reply_bytes": 32 * 1024 * 1024,
        "max_retries": 2, "max_context_messages": 20, "max_context_tokens": None,
        "options": {}, "header_names": [], "headers_env": {},
    }
    assert data["local"]["api_key_env"] is None and data["local"]["api_key_set"] is None
    assert data["local"]["options"] == {"temperature": 0.2}
    assert data["openai"]["api_key_set"] is False and data["echo"]["base_url"] is None


def test_test_all_skips_providers_without_a_key(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _config(paths, fake_llm)
    r = ok("providers", "test")
    lines = r.stdout.splitlines()
    assert lines[0] == "anthropic  skipped: ANTHROPIC_API_KEY not set"
    assert re.fullmatch(r"claude     ok in \d+ ms, 3 models, 'claude-sonnet-4-5' listed", lines[1])
    assert lines[2] == "echo       ok (built in, no network)"
    assert re.fullmatch(r"local      ok in \d+ ms, 3 models, 'llama3.1' not listed", lines[3])
    assert lines[4] == "openai     skipped: OPENAI_API_KEY not set"
    assert r.stderr == ""
    probes = [(q.method, q.path) for q in fake_llm.requests]
    assert sorted(probes) == [("GET", "/v1/models"), ("GET", "/v1/models")]
    claude = next(q for q in fake_llm.requests if "anthropic-version" in q.headers)
    assert claude.headers["x-api-key"] == KEY


def test_test_failures_exit_5_one_line_each(run: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    dead = unused_port_url()
    _config(paths, fake_llm, provider_table("gone", "openai", dead + "/v1"))
    fake_llm.api_key = "sk-the-right-one"  # so our key is refused
    r = run("providers", "test", "claude", "gone", "local", "openai")
    assert r.exit_code == 5
    lines = r.stdout.splitlines()
    assert lines[0] == (f"claude  FAILED: provider 'claude' ({fake_llm.url}/v1/models): HTTP 401: invalid x-api-key")
    assert lines[1] == f"gone    FAILED: provider 'gone' ({dead}/v1/models): cannot connect: Connection refused"
    assert lines[2].startswith(f"local   FAILED: provider 'local' ({fake_llm.url}/v1/models): HTTP 401: "
                               "Incorrect API key provided")
    assert lines[3] == ("openai  FAILED: provider 'openai' needs an API key in the environment variable "
                        "OPENAI_API_KEY, which is not set; export it, or change api_key_env in the config")
    assert r.stderr == "sessctl: error: 4 of 4 providers failed the test: claude, gone, local, openai\n"
    assert len(fake_llm.requests) == 2  # one probe each, no retries


def test_test_json(run: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _config(paths, fake_llm)
    fake_llm.api_key = KEY  # `local` sends no key: 401
    r = run("providers", "test", "claude", "local", "echo", "--json")
    assert r.exit_code == 5
    claude, local, echo = r.json()
    assert claude["status"] == "ok" and claude["kind"] == "anthropic" and isinstance(claude["latency_ms"], int)
    assert local["status"] == "failed" and local["http_status"] == 401 and "HTTP 401" in local["detail"]
    assert echo == {"name": "echo", "kind": "echo", "status": "ok", "detail": "ok (built in, no network)",
                    "latency_ms": echo["latency_ms"], "http_status": None}


def test_unknown_name_is_a_usage_error(run: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    _config(paths, fake_llm)
    r = run("providers", "test", "claude", "nope")
    assert r.exit_code == 2 and "unknown provider 'nope'" in r.stderr
    assert fake_llm.requests == []


def test_the_readme_config_example_is_valid(ok: Run, paths: Paths) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "headers_env" in b]
    paths.write_config(example)
    data = {p["name"]: p for p in ok("providers", "list", "--json").json()}
    assert data["openai"]["default"] is True
    assert (data["claude"]["read_timeout"], data["claude"]["max_retries"]) == (120.0, 3)
    assert (data["claude"]["total_timeout"], data["claude"]["max_reply_bytes"]) == (600.0, 32 * 1024 * 1024)
    assert data["claude"]["options"] == {"temperature": 0.3, "max_tokens": 2048}
    assert data["azure"]["headers_env"] == {"api-key": "AZURE_OPENAI_KEY"}
    assert data["azure"]["header_names"] == ["x-team"]
    assert data["local"]["api_key_env"] is None
