"""Each command imports only what it needs (every TAB of completion and every script
call pays for the rest): httpx and provider code only to call a provider, tabulate only
to print a table, cryptography only to seal or open a value, sqlite-utils never, the
sanitizer only to store text, the PostgreSQL driver only for a postgresql:// database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Paths, Run

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("httpx", "tabulate", "cryptography", "sqlite_utils", "asyncio", "sqlite3", "sessctl.sanitize",
         "sessctl.providers.openai", "sessctl.providers.anthropic", "tempfile", "secrets", "psycopg",
         "sessctl.store.postgres")

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
    (True, ["doctor", "--json"], {"sqlite3", "cryptography"}),
    (True, ["key", "status", "--json"], {"sqlite3", "cryptography"}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_commands_import_only_what_they_need(paths: Paths, ok: Run, request: pytest.FixtureRequest, data: bool,
                                             args: list[str], allowed: set[str]) -> None:
    if data:
        request.getfixturevalue("populated")
    assert _loaded(paths, *args) <= allowed


@pytest.mark.parametrize("args", [["list", "--format", "ids"], ["--version"], ["list", "--help"]])
def test_the_postgresql_driver_loads_only_for_a_postgresql_database(paths: Paths, pg_schema: str,
                                                                     args: list[str]) -> None:
    # (Every SQLite command above runs without it: "psycopg" is in HEAVY.)
    loaded = _loaded(paths, *args, env={"SESSCTL_DB": pg_schema})
    if args[0] == "list" and "--help" not in args:
        assert {"psycopg", "sessctl.store.postgres"} <= loaded and "sqlite3" not in loaded
    else:
        assert not loaded & {"psycopg", "sessctl.store.postgres"}  # nothing opened the database
