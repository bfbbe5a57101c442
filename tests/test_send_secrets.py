"""The API key (and any header secret) never leaves the environment except in the
request that needs it: not into the database, error messages, --debug output,
`providers list/test` output or `--dry-run` output. Real CLI, real server, real files.
"""

from __future__ import annotations

import pytest
from fakeserver import ErrorReply, FakeLLMServer, TextReply
from sendkit import APIS, KEY, KEY_ENV, base_url, chats, configure, provider_table

from conftest import Paths, Run
from sessctl import config as config_mod

AZURE_KEY = "az-0123456789abcdef0123456789abcdef"


def _db_bytes(paths: Paths) -> bytes:
    return b"".join(p.read_bytes() for p in paths.db.parent.iterdir() if p.name.startswith(paths.db.name))


def _clean(*texts: str) -> None:
    for text in texts:
        assert KEY not in text and AZURE_KEY not in text
        assert KEY[-12:] not in text  # not even a tail of it


@pytest.mark.parametrize("api", APIS)
def test_a_key_in_a_message_or_an_echoed_reply_is_not_stored(api: str, ok: Run, paths: Paths,
                                                             fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    fake_llm.enqueue(TextReply(f"You sent me {KEY}, keep it safe"))
    ok("send", "-s", "k", f"is {KEY} my key?", "--stream")
    sent = chats(fake_llm)[0]
    assert KEY in (sent.headers.get("authorization", "") + sent.headers.get("x-api-key", ""))
    exported = ok("export", "k").stdout
    _clean(exported, ok("show", "k").stdout, _db_bytes(paths).decode("latin-1"))
    [s] = ok("export", "k").json()
    assert [m["content"] for m in s["messages"]] == [
        "is [REDACTED:provider_secret] my key?", "You sent me [REDACTED:provider_secret], keep it safe"]
    assert [m["redactions"] for m in s["messages"]] == [{"provider_secret": 1}, {"provider_secret": 1}]
    assert s["stats"]["redactions"] == 2
    assert ok("stats", "--json").json()["redactions"] == 2
    # The history sent on the next turn is what was stored: scrubbed.
    ok("send", "-s", "k", "next")
    _clean(chats(fake_llm)[1].body.decode())


def test_short_placeholder_keys_are_not_scrubbed(ok: Run, paths: Paths, fake_llm: FakeLLMServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Local servers take any key; "ollama" is the usual one. It is no secret, and
    # scrubbing it would mangle every reply that names the program.
    monkeypatch.setenv(KEY_ENV, "ollama")
    configure(paths, fake_llm, "openai")
    ok("send", "-s", "o", "run ollama serve")
    assert ok("show", "o", "--json").json()["messages"][1]["content"] == "echo: run ollama serve"


@pytest.mark.parametrize("api", APIS)
def test_errors_and_debug_output_never_show_the_key(api: str, run: Run, paths: Paths,
                                                    fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    # An endpoint that quotes the whole key back, in a 401 and in a stream error.
    fake_llm.enqueue(ErrorReply(401, f"Incorrect API key provided: {KEY}."))
    r = run("--debug", "send", "-s", "e", "hi")
    assert r.exit_code == 5 and "Incorrect API key provided: [REDACTED]." in r.stderr
    _clean(r.stdout, r.stderr)
    fake_llm.enqueue(TextReply("partial text", error_after=1, error_message=f"bad key {KEY}",
                               error_type="authentication_error"))
    r = run("--debug", "send", "-s", "e", "hi", "--stream", "--json")
    assert r.exit_code == 5 and "[REDACTED]" in r.json()["error"]
    _clean(r.stdout, r.stderr)
    fake_llm.enqueue(ErrorReply(401, f"no: {KEY}"), path="/models")
    r = run("--debug", "providers", "test", "fake")
    assert r.exit_code == 5 and "Traceback" in r.stderr  # --debug does show a traceback...
    _clean(r.stdout, r.stderr)  # ...without the key
    _clean(_db_bytes(paths).decode("latin-1"))


def test_providers_list_and_test_show_only_the_variable_name(ok: Run, paths: Paths,
                                                             fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai")
    for args in (("providers", "list"), ("providers", "list", "--json"), ("providers", "test"),
                 ("providers", "test", "fake", "--json")):
        r = ok(*args)
        _clean(r.stdout, r.stderr)
        assert KEY_ENV in r.stdout or "fake" in r.stdout


def test_dry_run_shows_no_key_and_needs_none(ok: Run, paths: Paths, fake_llm: FakeLLMServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    configure(paths, fake_llm, "anthropic")
    r = ok("send", "-s", "d", "hi", "--dry-run")
    _clean(r.stdout, r.stderr)
    monkeypatch.delenv(KEY_ENV)
    assert ok("send", "-s", "d", "hi", "--dry-run").stdout == r.stdout
    assert chats(fake_llm) == []


def test_a_key_with_a_trailing_newline_is_trimmed(ok: Run, paths: Paths, fake_llm: FakeLLMServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY + "\n")  # KEY="$(cat key.txt)" keeps no newline, but files do
    configure(paths, fake_llm, "openai")
    ok("send", "-s", "n", "hi")
    assert chats(fake_llm)[0].headers["authorization"] == f"Bearer {KEY}"


def test_a_key_that_cannot_be_a_header_is_refused_without_quoting_it(run: Run, paths: Paths,
                                                                     fake_llm: FakeLLMServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY[:10] + " " + KEY[10:])
    configure(paths, fake_llm, "openai")
    r = run("send", "-s", "n", "hi")
    assert r.exit_code == 2 and f"the environment variable {KEY_ENV} holds spaces" in r.stderr
    assert KEY[10:] not in r.stderr and KEY[:10] not in r.stderr
    assert chats(fake_llm) == []


# --------------------------------------------------------------------------- header secrets


def _azure(paths: Paths, server: FakeLLMServer, **fields: object) -> None:
    paths.write_config('default_provider = "azure"\n' + provider_table(
        "azure", "openai", base_url(server, "openai"), api_key_env=None, **fields))


def test_headers_env_sends_a_header_secret_from_the_environment(ok: Run, run: Run, paths: Paths,
                                                                fake_llm: FakeLLMServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_KEY", AZURE_KEY)
    _azure(paths, fake_llm, headers_env={"api-key": "AZ_KEY"}, headers={"X-Team": "blue"})
    ok("send", "-s", "az", "hi")
    sent = chats(fake_llm)[0]
    assert sent.headers["api-key"] == AZURE_KEY and sent.headers["x-team"] == "blue"
    assert "authorization" not in sent.headers
    info = ok("providers", "list", "--json").json()
    [azure] = [p for p in info if p["name"] == "azure"]
    assert azure["headers_env"] == {"api-key": "AZ_KEY"} and azure["header_names"] == ["x-team"]
    # Scrubbed from errors and stored text like the API key.
    fake_llm.enqueue(ErrorReply(401, f"Access denied due to invalid subscription key {AZURE_KEY}"))
    r = run("send", "-s", "az", f"my key is {AZURE_KEY}")
    assert r.exit_code == 5 and "invalid subscription key [REDACTED]" in r.stderr
    _clean(r.stderr, ok("export", "az").stdout, _db_bytes(paths).decode("latin-1"))
    monkeypatch.delenv("AZ_KEY")
    r = run("send", "-s", "az", "hi")
    assert r.exit_code == 2 and "needs the api-key header in the environment variable AZ_KEY" in r.stderr


@pytest.mark.parametrize("header", ["api-key", "Authorization", "X-Api-Key", "cf-aig-authorization", "X-Auth-Token"])
def test_a_credential_in_literal_headers_is_refused(header: str, run: Run, paths: Paths,
                                                    fake_llm: FakeLLMServer) -> None:
    _azure(paths, fake_llm, headers={header: AZURE_KEY})
    r = run("send", "-s", "az", "hi")
    assert r.exit_code == 2
    assert f"must not hold credentials ({header!r})" in r.stderr and "headers_env" in r.stderr
    _clean(r.stderr)
    assert chats(fake_llm) == []


def test_header_values_stay_out_of_reprs(paths: Paths, fake_llm: FakeLLMServer) -> None:
    _azure(paths, fake_llm, headers={"X-Tenant": "tenant-hush-4412"}, headers_env={"api-key": "AZ_KEY"})
    cfg = config_mod.load(env={"AZ_KEY": AZURE_KEY, "XDG_CONFIG_HOME": str(paths.config_dir)})
    assert "tenant-hush-4412" not in repr(cfg) and AZURE_KEY not in repr(cfg)
    assert cfg.providers["azure"].headers == {"X-Tenant": "tenant-hush-4412"}


# --------------------------------------------------------------------------- partial and other keys (issue 11)


def _no_run_of(text: str, secret: str, run: int = 12) -> None:
    """Not even `run` characters of `secret` in a row (the scrubbing threshold)."""
    for i in range(len(secret) - run + 1):
        assert secret[i:i + run] not in text, secret[i:i + run]


@pytest.mark.parametrize("api", APIS)
def test_a_partial_echo_of_the_key_is_scrubbed_from_errors(api: str, run: Run, paths: Paths,
                                                           fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    # Most of the key, with its middle masked: each visible run is 12+ characters.
    echoed = f"{KEY[:15]}****{KEY[19:]}"
    fake_llm.enqueue(ErrorReply(401, f"Incorrect API key provided: {echoed}. Check it."))
    r = run("send", "-s", "p", "hi")
    assert r.exit_code == 5
    assert "Incorrect API key provided: [REDACTED]****[REDACTED]. Check it." in r.stderr
    _no_run_of(r.stderr, KEY)


@pytest.mark.parametrize("api", APIS)
def test_stream_output_never_shows_an_echoed_key(api: str, ok: Run, paths: Paths,
                                                 fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    # Split inside the key, and a partial copy at the very end of the stream.
    pieces = ["Your key ", KEY[:9], KEY[9:20], KEY[20:], " and again ", KEY[:14]]
    fake_llm.enqueue(TextReply(pieces=pieces))
    r = ok("send", "-s", "st", "show my key", "--stream")
    marker = "[REDACTED:provider_secret]"
    assert r.stdout == f"Your key {marker} and again {marker}\n"
    _no_run_of(r.stdout, KEY)
    [_, reply] = ok("show", "st", "--json").json()["messages"]
    assert reply["content"] == f"Your key {marker} and again {marker}"
    assert reply["redactions"] == {"provider_secret": 2}


def test_a_key_of_another_configured_provider_is_scrubbed_too(ok: Run, paths: Paths, fake_llm: FakeLLMServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    other = "sk-other-provider-AbCdEf0123456789XyZ"
    monkeypatch.setenv("OTHER_LLM_KEY", other)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-builtin-provider-key-0123456789")
    configure(paths, fake_llm, "openai", extra=provider_table("other", "anthropic", base_url(fake_llm, "anthropic"),
                                                              api_key_env="OTHER_LLM_KEY"))
    fake_llm.enqueue(TextReply(pieces=["The other key is ", other[:10], other[10:], ", right?"]))
    r = ok("send", "-s", "o", "and the built-in one: sk-ant-api03-builtin-provider-key-0123456789", "--stream")
    assert other not in r.stdout and "[REDACTED:provider_secret]" in r.stdout
    exported = ok("export", "o").stdout
    db = _db_bytes(paths).decode("latin-1")
    for text in (r.stdout, exported, db):
        _no_run_of(text, other)
        _no_run_of(text, "sk-ant-api03-builtin-provider-key-0123456789")
    [s] = ok("export", "o").json()
    assert [m["redactions"].get("provider_secret") for m in s["messages"]] == [1, 1]


@pytest.mark.parametrize("url", ["http://bob:hunter2-secret@127.0.0.1:9/v1", "https://:hunter2-secret@llm.example/v1",
                                 "http://hunter2-secret@127.0.0.1:9/v1"])
def test_a_base_url_with_credentials_is_refused_without_echoing_them(url: str, run: Run, paths: Paths,
                                                                     fake_llm: FakeLLMServer) -> None:
    paths.write_config(provider_table("creds", "openai", url))
    for args in (("providers", "list"), ("send", "-s", "c", "hi", "--provider", "creds"), ("list",)):
        r = run(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "hunter2" not in r.stderr + r.stdout
        assert "[providers.creds] base_url must not hold a user name or password" in r.stderr
    assert chats(fake_llm) == []


@pytest.mark.parametrize("url,says", [
    ("ftp://127.0.0.1/v1", "must be an http:// or https:// URL with a host"),
    ("http:///v1", "must be an http:// or https:// URL with a host"),
    ("http://127.0.0.1:70000/v1", "is not a valid URL"),
    ("http://[::1/v1", "is not a valid URL"),
])
def test_a_base_url_that_cannot_work_is_a_usage_error(url: str, says: str, run: Run, paths: Paths) -> None:
    paths.write_config(provider_table("bad", "openai", url))
    r = run("providers", "list")
    assert r.exit_code == 2 and f"[providers.bad] base_url {says}" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("api", APIS)
def test_a_key_in_a_cut_stream_is_counted_as_a_redaction(api: str, run: Run, ok: Run, paths: Paths,
                                                         fake_llm: FakeLLMServer) -> None:
    """The partial reply of a cut stream was scrubbed on its way to the screen; the key
    it held is still counted, as it would have been in a whole reply."""
    configure(paths, fake_llm, api, max_retries=0)
    fake_llm.enqueue(TextReply(pieces=["the key is ", KEY, " and more", " never sent"], cut_after=3))
    r = run("send", "-s", "cut", "echo my key", "--stream")
    assert r.exit_code == 5 and KEY not in r.stdout + r.stderr
    reply = ok("show", "cut", "--json").json()["messages"][1]
    assert reply["status"] == "incomplete" and KEY not in reply["content"]
    assert reply["content"].startswith("the key is [REDACTED:provider_secret]")
    assert reply["redactions"] == {"provider_secret": 1}
