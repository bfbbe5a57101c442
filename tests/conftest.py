"""Shared fixtures: every test gets its own data and config dirs, a clean environment,
and a CliRunner wrapper that keeps stdout and stderr apart."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sessctl.cli import cli

# The fake-LLM fixtures (fake_llm) for any test that needs a provider on 127.0.0.1, the
# PostgreSQL tier (pg_server, pg_schema), and the raw view of the test's database on
# either engine (stored).
pytest_plugins = ("sendkit", "pgtier", "dbkit")

ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines: run this module's tests once per storage engine (SQLite and PostgreSQL)")
    config.addinivalue_line(
        "markers", "sqlite_only(why): in an engines module, a test of something only an SQLite file has")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Storage behaviour is tested once, over both engines: a module (or test) marked
    # `engines` gets the autouse `engine` fixture parametrized; everything else runs on
    # SQLite only. A test of what exists only in an SQLite file (its bytes on disk, its
    # modes, its WAL) says so with `sqlite_only("why")` and gets no PostgreSQL run at
    # all, rather than a skipped one; a test with an SQLite-only part keeps the rest
    # on both engines (`if only_sqlite(engine, "why"): ...`).
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("engines"):
        only = metafunc.definition.get_closest_marker("sqlite_only")
        if only is not None:
            assert only.args and only.args[0], f"{metafunc.definition.nodeid}: sqlite_only needs a reason"
        metafunc.parametrize("engine", ENGINES[:1] if only else ENGINES, indirect=True)

_SCRUB = (
    "SESSCTL_DB", "SESSCTL_CONFIG", "SESSCTL_KEY_FILE", "SESSCTL_PASSPHRASE", "SESSCTL_NOW",
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "all_proxy",
)


@dataclass
class Paths:
    root: Path
    data: Path
    config_dir: Path

    @property
    def db(self) -> Path:
        return self.data / "sessctl" / "sessions.db"

    @property
    def config(self) -> Path:
        return self.config_dir / "sessctl" / "config.toml"

    @property
    def key(self) -> Path:
        return self.config_dir / "sessctl" / "key"

    def write_config(self, text: str) -> Path:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        return self.config


@pytest.fixture(autouse=True)
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    for var in _SCRUB:
        monkeypatch.delenv(var, raising=False)
    p = Paths(tmp_path, tmp_path / "data", tmp_path / "config")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(p.data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(p.config_dir))
    monkeypatch.setenv("NO_COLOR", "1")
    # A test that writes a relative path (a config's `db = "x"`, `export -o out`) writes
    # it here, never into the checkout.
    monkeypatch.chdir(tmp_path)
    return p


@pytest.fixture(autouse=True)
def engine(request: pytest.FixtureRequest, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> str:
    """The storage engine this test runs on. On "postgresql", SESSCTL_DB points every
    sessctl call (CLI, subprocesses, library) at a schema of the test's own."""
    name: str = getattr(request, "param", "sqlite")
    if name == "postgresql":
        monkeypatch.setenv("SESSCTL_DB", request.getfixturevalue("pg_schema"))
    return name


def only_sqlite(engine: str, why: str) -> bool:
    """Inside an engines test, the guard of a part that only an SQLite file has (file
    modes, WAL contents, bytes on disk): `if only_sqlite(engine, "why"): ...`. The rest
    of the test runs on both engines; `why` says, where the test reads, why this part
    does not."""
    assert why
    return engine == "sqlite"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def jsonl(self) -> list[Any]:
        # split("\n"), not splitlines(): U+2028 and friends may sit inside JSON strings.
        return [json.loads(line) for line in self.stdout.split("\n") if line]


Run = Callable[..., Result]


@pytest.fixture
def run() -> Run:
    """run("list", "--json", input=..., env={...}) → Result(exit_code, stdout, stderr)."""

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        r = runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
        return Result(r.exit_code, r.stdout, r.stderr)

    return invoke


@pytest.fixture
def ok(run: Run) -> Run:
    """Like run, but asserts exit 0 (showing stderr when not)."""

    def invoke(*args: str, **kw: Any) -> Result:
        r = run(*args, **kw)
        assert r.exit_code == 0, f"exit {r.exit_code}: {r.stderr}"
        return r

    return invoke


@pytest.fixture
def db_conn(stored: Any) -> Callable[[], Any]:
    """Open the test database directly (for tampering and raw inspection), on either
    engine: SQL in the store's dialect (`?` placeholders) works on both."""
    return stored.conn  # type: ignore[no-any-return]


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def reseal() -> None:
    """After a test has staged a state by editing stored facts in SQL (what sessctl would
    write on a failure, say), recompute every session's integrity chain and digest as
    sessctl itself would have written them, so only what the test means to break is broken."""
    from sessctl import config
    from sessctl.service import App
    from sessctl.store import integrity

    app = App(config=config.load())
    try:
        store = app.store(create=False)
        cipher = store.cipher()
        store.write(lambda conn: integrity.rebuild_all(conn, cipher.integrity_key), keyring_change=True)
    finally:
        app.close()
