"""Each command imports only what it needs (every TAB of completion and every script
call pays for the rest): provider code only to call a provider, and httpx (with
httpcore, anyio, h11, certifi, and the stdlib's HTTP and email modules it drags in)
only for https or a proxy, never for a local http endpoint; tabulate only to print a
table, cryptography only to seal or open a value, sqlite-utils never, the sanitizer
only to store text, the PostgreSQL driver only for a postgresql:// database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakeserver import FakeLLMServer
from sendkit import APIS, configure

from conftest import Paths, Run

ROOT = Path(__file__).resolve().parent.parent
HTTPX = ("httpx", "httpcore", "anyio", "h11", "certifi", "idna", "http.client", "http.cookiejar",
         "urllib.request", "email.utils")
HEAVY = ("tabulate", "cryptography", "sqlite_utils", "asyncio", "sqlite3", "sessctl.sanitize",
         "sessctl.providers.openai", "sessctl.providers.anthropic", "sessctl.providers.transport",
         "tempfile", "secrets", "psycopg", "sessctl.store.postgres", *HTTPX)

_PROBE = """
import atexit, json, sys
heavy = {heavy!r}
def dump():
    loaded = sorted(h for h in heavy if h in sys.modules)
    with open({out!r}, "w") as fh:
        json.dump(loaded, fh)
atexit.register(dump)
sys.argv = ["sessctl"] + {args!r}
from sessctl.cli import main
main()
"""


def _loaded(paths: Paths, *args: str, env: dict[str, str] | None = None) -> set[str]:
    out = paths.root / "modules.json"
    code = _PROBE.format(heavy=HEAVY, out=str(out), args=list(args))
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(out.read_text()))


@pytest.fixture
def populated(ok: Run) -> None:
    ok("create", "a", "--title", "A title", "--meta", "k=v")
    ok("send", "-s", "a", "hello")


@pytest.mark.parametrize("data,args,allowed", [
    (False, ["--version"], set()),
    (False, ["list"], {"sqlite3"}),  # no database yet: nothing to open
    (True, ["list", "--format", "ids"], {"sqlite3"}),
    (True, ["list", "--json"], {"sqlite3", "cryptography"}),
    (True, ["list"], {"sqlite3", "cryptography", "tabulate"}),
    (True, ["show", "a"], {"sqlite3", "cryptography"}),
    (True, ["stats", "--json"], {"sqlite3"}),
    (True, ["stats"], {"sqlite3", "tabulate"}),
    (True, ["export", "--all", "--format", "jsonl"], {"sqlite3", "cryptography"}),
    (True, ["send", "-s", "a", "again"], {"sqlite3", "cryptography", "asyncio", "sessctl.sanitize"}),
    (True, ["retry", "a"], {"sqlite3", "cryptography", "asyncio", "sessctl.sanitize"}),
    (True, ["fork", "a", "b"], {"sqlite3", "cryptography", "sessctl.sanitize"}),
    (False, ["templates", "list", "--json"], set()),
    (True, ["doctor", "--json"], {"sqlite3", "cryptography"}),
    (True, ["search", "hello", "--json"], {"sqlite3", "cryptography"}),  # no sanitizer: it only reads
    (True, ["search", "hello"], {"sqlite3", "cryptography", "tabulate"}),
    (True, ["key", "status", "--json"], {"sqlite3", "cryptography"}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_commands_import_only_what_they_need(paths: Paths, ok: Run, request: pytest.FixtureRequest, data: bool,
                                             args: list[str], allowed: set[str]) -> None:
    if data:
        request.getfixturevalue("populated")
    assert _loaded(paths, *args) <= allowed


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
@pytest.mark.parametrize("api", APIS)
def test_a_send_to_a_local_http_endpoint_imports_no_httpx(api: str, stream: str, paths: Paths, ok: Run,
                                                          fake_llm: FakeLLMServer) -> None:
    # Issue 15: httpx and its TLS context cost more than the call itself; plain http
    # to a local server goes over asyncio (providers/transport.py).
    configure(paths, fake_llm, api)
    ok("send", "-s", "a", "first")
    loaded = _loaded(paths, "send", "-s", "a", stream, "again")
    assert f"sessctl.providers.{api}" in loaded and "sessctl.providers.transport" in loaded
    assert loaded <= {"sqlite3", "cryptography", "asyncio", "sessctl.sanitize", f"sessctl.providers.{api}",
                      "sessctl.providers.transport"}
    assert [r.json["messages"][-1]["content"] for r in fake_llm.requests[-1:]] == ["again"]


@pytest.mark.parametrize("args", [["list", "--format", "ids"], ["--version"], ["list", "--help"]])
def test_the_postgresql_driver_loads_only_for_a_postgresql_database(paths: Paths, pg_schema: str,
                                                                     args: list[str]) -> None:
    # (Every SQLite command above runs without it: "psycopg" is in HEAVY.)
    loaded = _loaded(paths, *args, env={"SESSCTL_DB": pg_schema})
    if args[0] == "list" and "--help" not in args:
        assert {"psycopg", "sessctl.store.postgres"} <= loaded and "sqlite3" not in loaded
    else:
        assert not loaded & {"psycopg", "sessctl.store.postgres"}  # nothing opened the database
