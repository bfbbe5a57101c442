"""Generated bad input through the real CLI: import documents, config files, arguments
and raw bytes. No input may end in exit 1 ("unexpected ...", a bug) or lose a message
that was accepted. (Provider replies are fuzzed in test_reply_fuzz.py.)

SESSCTL_FUZZ_EXAMPLES sets the cases per property (default 100; a deep run: 2000).
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessctl.cli import cli

EXAMPLES = int(os.environ.get("SESSCTL_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Every exit status the CLI documents; 1 means a bug.
DOCUMENTED = {0, 2, 3, 4, 5, 6, 7}


def _invoke(home: Path, args: list[str], stdin: bytes | str | None = None,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {"XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
            "HOME": str(home), "SESSCTL_DB": str(home / "data" / "s.db"), "NO_COLOR": "1"}
    home.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(home)  # relative paths in generated input (a config's `db = "30d"`) land here
    try:
        r = CliRunner().invoke(cli, args, input=stdin, env={**base, **(env or {})}, catch_exceptions=True)
    finally:
        os.chdir(cwd)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a crash past the CLI's own handling is a bug too
    return r.exit_code, r.stdout, r.stderr


def _assert_documented(code: int, stderr: str, what: object) -> None:
    assert code in DOCUMENTED, f"exit {code} for {what!r}: {stderr}"
    if code:
        assert stderr.startswith("sessctl: error: ") or stderr.startswith("Usage:"), (what, stderr)


# --- strategies -----------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
ID = st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,20}", fullmatch=True), TEXT)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                        st.floats(allow_nan=False), TEXT)
JSON_ANY = st.recursive(JSON_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
TIME = st.one_of(st.just("2026-01-01T00:00:00Z"), st.just("9999-12-31T23:59:59Z"), st.just("0001-01-01"),
                 TEXT, JSON_SCALAR)


@st.composite
def message(draw: Any) -> Any:
    m: dict[str, Any] = {"role": draw(st.sampled_from(["user", "assistant", "bot", None]))}
    for key, value in (("content", st.one_of(TEXT, JSON_SCALAR)), ("seq", JSON_SCALAR),
                       ("status", st.sampled_from(["ok", "unanswered", "incomplete", "bogus"])),
                       ("created_at", TIME), ("tokens_in", JSON_SCALAR), ("redactions", JSON_ANY),
                       ("model", JSON_SCALAR), ("latency_ms", JSON_SCALAR)):
        if draw(st.booleans()):
            m[key] = draw(value)
    return m if draw(st.integers(0, 9)) else draw(JSON_ANY)


@st.composite
def session_doc(draw: Any) -> Any:
    s: dict[str, Any] = {"id": draw(ID)}
    for key, value in (("user", JSON_SCALAR), ("title", JSON_SCALAR), ("system", JSON_SCALAR),
                       ("status", st.sampled_from(["active", "archived", "x"])), ("created_at", TIME),
                       ("updated_at", TIME), ("expires_at", TIME), ("metadata", JSON_ANY), ("options", JSON_ANY),
                       ("context", JSON_ANY), ("stats", JSON_ANY), ("provider", JSON_SCALAR)):
        if draw(st.integers(0, 3)) == 0:
            s[key] = draw(value)
    if draw(st.booleans()):
        s["messages"] = draw(st.lists(message(), max_size=5))
    return s if draw(st.integers(0, 9)) else draw(JSON_ANY)


# --- import ---------------------------------------------------------------------------------


@FUZZ
@given(docs=st.lists(session_doc(), min_size=1, max_size=3), as_array=st.booleans())
def test_generated_import_documents(docs: list[Any], as_array: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        data = json.dumps(docs) if as_array else "\n".join(json.dumps(d) for d in docs)
        code, out, err = _invoke(home, ["import", "-"], stdin=data)
        _assert_documented(code, err, docs)
        if code != 0:
            # All or nothing: a refused import leaves nothing behind.
            assert _invoke(home, ["list", "--status", "all", "-n", "0", "--format", "ids"])[1] == ""
            return
        # Accepted: what was imported exports, and imports back to the same export.
        code, first, err = _invoke(home, ["export", "--all", "--format", "jsonl"])
        assert code == 0, err
        again = home / "again"
        code, _, err = _invoke(again, ["import", "-"], stdin=first)
        assert code == 0, err
        assert _invoke(again, ["export", "--all", "--format", "jsonl"])[1] == first
        assert _invoke(home, ["doctor", "--json"])[0] == 0


# --- config files ---------------------------------------------------------------------------

KEYS = ["default_provider", "db", "key_file", "providers", "storage", "sanitize", "retention", "templates",
        "kind", "base_url", "api_key_env", "model", "connect_timeout", "read_timeout", "max_retries",
        "backoff_base", "backoff_max", "options", "headers", "headers_env", "busy_timeout", "url",
        "archive_after", "delete_after", "total_timeout", "max_reply_bytes", "max_context_messages"]
TOML_SCALAR = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.booleans(),
                        st.text(alphabet=string.printable, max_size=30), st.sampled_from(
                            ["openai", "anthropic", "echo", "http://127.0.0.1:1/v1", "postgresql://h:99999/x",
                             "30d", "off", "-1", "1e309"]))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else "0.5"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


@st.composite
def config_text(draw: Any) -> str:
    lines = [f"{k} = {_toml_value(draw(TOML_SCALAR))}" for k in draw(st.lists(st.sampled_from(KEYS[:3]), max_size=2,
                                                                              unique=True))]
    for table in draw(st.lists(st.sampled_from(["providers.p", "providers.openai", "storage", "sanitize",
                                                "retention", "templates.t", "providers"]), max_size=3, unique=True)):
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True)):
            value = draw(st.one_of(TOML_SCALAR, st.lists(TOML_SCALAR, max_size=2)))
            lines.append(f"{key} = {_toml_value(value)}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.text(max_size=20)))  # not TOML at all
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=config_text(), command=st.sampled_from([["list"], ["providers", "list"], ["cleanup", "--dry-run"],
                                                    ["send", "-s", "f", "hello"], ["create", "c"]]))
def test_generated_config_files(text: str, command: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cfg = home / "config" / "sessctl" / "config.toml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(text)
        code, _, err = _invoke(home, command, stdin="")
        _assert_documented(code, err, text)
        if command[0] == "send" and code in (0, 5):
            # Accepted means stored: the message is there, answered or kept unanswered.
            shown = _invoke(home, ["show", "f", "--json"], env={"SESSCTL_CONFIG": str(home / "none.toml")})
            if shown[0] == 0:
                assert json.loads(shown[1])["messages"][0]["content"] == "hello"


# --- arguments and bytes ----------------------------------------------------------------------

WORDS = ["create", "send", "list", "show", "archive", "unarchive", "delete", "export", "import", "stats", "meta",
         "update", "cleanup", "key", "doctor", "providers", "sanitize", "-s", "-n", "--last", "--older-than",
         "--since", "--before", "--ttl", "--meta", "--title", "--user", "--format", "--json", "-o", "--model",
         "--status", "--limit", "--yes", "--all", "--dry-run", "--no-ttl", "--by", "--sample", "-", "0", "1",
         "-1", "99999999999999999999", "30d", "1e9", "a", "a=b", "=", "json", "ids", "all", "x" * 200]
# What Python makes of arguments that are not UTF-8 (surrogateescape), and other odd text.
ODD = st.one_of(TEXT, st.binary(max_size=12).map(os.fsdecode))


@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(WORDS), ODD), min_size=1, max_size=7),
       stdin=st.one_of(st.none(), st.binary(max_size=64)))
def test_generated_arguments(argv: list[str], stdin: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        _invoke(home, ["send", "-s", "a", "seed"], stdin="")
        if argv[0] in ("delete",) and "--yes" not in argv:
            argv = [*argv, "--dry-run"]
        code, _, err = _invoke(home, argv, stdin=stdin if stdin is not None else "")
        _assert_documented(code, err, argv)
        # Nothing already stored was lost to bad input, unless the command meant to remove it.
        if argv[0] not in ("delete", "cleanup", "import"):
            shown = _invoke(home, ["show", "a", "--json"])
            assert shown[0] == 0, shown[2]
            assert [m["content"] for m in json.loads(shown[1])["messages"]][:2] == ["seed", "seed"]


@FUZZ
@given(data=st.binary(max_size=300), message=st.one_of(st.none(), ODD.filter(lambda s: s.strip() != "")))
def test_generated_bytes_on_stdin_are_stored_not_lost(data: bytes, message: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        args = ["send", "-s", "b"] + ([message] if message is not None and not message.startswith("-") else [])
        code, out, err = _invoke(home, args, stdin=data)
        _assert_documented(code, err, (args, data))
        if code == 0:
            stored = json.loads(_invoke(home, ["show", "b", "--json"])[1])["messages"]
            # Stored, and (the echo provider answers with what it was sent) sent as stored.
            assert [m["role"] for m in stored] == ["user", "assistant"]
            assert stored[0]["content"] == stored[1]["content"] and stored[0]["content"].strip()
        code, out, err = _invoke(home, ["sanitize"], stdin=data)
        _assert_documented(code, err, data)
        code, out, err = _invoke(home, ["import", "-"], stdin=data)
        _assert_documented(code, err, data)


@pytest.mark.parametrize("command", [["send", "-s", "x"], ["import", "-"], ["sanitize"]])
def test_the_fuzzers_can_fail(command: list[str], tmp_path: Path) -> None:
    """The harness itself: a bug (exit 1) would be caught, not absorbed."""
    with pytest.raises(AssertionError):
        _assert_documented(1, "sessctl: error: unexpected ValueError", command)
