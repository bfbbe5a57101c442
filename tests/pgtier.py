"""The PostgreSQL tier of the suite: where the server is, and a schema per test.

Storage contract tests run over both engines through one parametrized fixture
(`engine`, in conftest.py); a module opts in with `pytestmark = pytest.mark.engines`.
For the PostgreSQL run, each test gets a schema of its own in the server's `test`
database and points sessctl at it with `SESSCTL_DB=postgresql://...?options=-csearch_path%3D<schema>`.

Finding the server:
- `SESSCTL_TEST_POSTGRES` set (.ci/run sets it): that server must answer, or the run
  stops with one line saying so and fails: a missing server must never turn into
  silently skipped tests.
- unset: the local server at postgresql://postgres@127.0.0.1:5432/test; if it does not
  answer, a throwaway server is started from the system's PostgreSQL binaries
  (initdb/pg_ctl on PATH or Debian's /usr/lib/postgresql/*/bin) in a temporary
  directory; if there are none, the PostgreSQL tier is skipped with one line saying
  so, so the README's test command still passes on a machine with only Python.

Two more variables exist to test this file itself (tests/test_pgtier.py):
`SESSCTL_TEST_POSTGRES_DEFAULT` replaces the local server's URL, and
`SESSCTL_TEST_POSTGRES_BIN` names the directory of the binaries ("none": do not
start a throwaway server).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

ENV = "SESSCTL_TEST_POSTGRES"
DEFAULT = os.environ.get(f"{ENV}_DEFAULT") or "postgresql://postgres@127.0.0.1:5432/test"


def _reachable(url: str) -> str | None:
    """None when a connection works, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install '.[test]')"
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return " ".join(str(exc).split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Throwaway:
    """A private PostgreSQL server for this test run (trust auth, loopback only)."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.bin: Path | None = None

    def start(self) -> str | None:
        pg_ctl = _pg_ctl()
        if pg_ctl is None or os.geteuid() == 0 and not shutil.which("runuser"):
            return None
        self.bin = pg_ctl.parent
        self.dir = Path(tempfile.mkdtemp(prefix="sessctl-pg-"))
        port = _free_port()
        data = self.dir / "data"
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.dir, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
        try:
            run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
            run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-o",
                f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
            run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test")
        except (subprocess.SubprocessError, OSError):
            self.stop()
            return None
        self._as_user = as_user
        return f"postgresql://postgres@127.0.0.1:{port}/test"

    def stop(self) -> None:
        if self.dir is not None and self.bin is not None and (self.dir / "data").exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run([*getattr(self, "_as_user", []), str(self.bin / "pg_ctl"), "-D",
                                str(self.dir / "data"), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _pg_ctl() -> Path | None:
    """The pg_ctl to start a throwaway server with (its directory has initdb too)."""
    chosen = os.environ.get(f"{ENV}_BIN")
    if chosen is not None:
        path = Path(chosen) / "pg_ctl"
        return path if chosen.lower() != "none" and path.exists() else None
    found = shutil.which("pg_ctl")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    # Resolved: a pg_ctl on PATH may be a lone symlink (/usr/local/bin) into the
    # directory that holds initdb and createdb too.
    return Path(found).resolve() if found else Path(candidates[0]) if candidates else None


def _shown(url: str) -> str:
    """The URL as it may be printed: its password masked."""
    from sessctl.config import parse_database

    try:
        return parse_database(url, ENV).display
    except Exception:  # noqa: BLE001 - a malformed URL is reported by the connection attempt
        return "(the URL in it)"


_SKIP = "PostgreSQL tier skipped"
_SKIP_LINE = sys._getframe().f_lineno  # the line the folded skips point to: this one


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Each PostgreSQL test skipped for want of a server would be its own line in the
    # summary (pytest reports a fixture's skip at the test); give them all this file's
    # location, so `-rs` folds them into one line with their count.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and isinstance(report.longrepr, tuple) and _SKIP in str(report.longrepr[2]):
        report.longrepr = (__file__, _SKIP_LINE, report.longrepr[2])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the test server (see the module docstring for how it is found)."""
    explicit = os.environ.get(ENV)
    url = explicit or DEFAULT
    why = _reachable(url)
    if why is None:
        yield url
        return
    if explicit:
        # Stop the whole run at once, on one line, rather than fail hundreds of tests.
        pytest.exit(f"{ENV}={_shown(explicit)} does not answer ({why}): start that server, or unset "
                    f"{ENV} to use {_shown(DEFAULT)} or a throwaway server", returncode=1)
    throwaway = _Throwaway()
    started = throwaway.start()
    if started is None or _reachable(started) is not None:
        throwaway.stop()
        pytest.skip(f"{_SKIP}: no server at {_shown(DEFAULT)} ({why}) and no PostgreSQL "
                    f"binaries to start one; set {ENV}=postgresql://USER@HOST:PORT/DB to run it")
    try:
        yield started
    finally:
        throwaway.stop()


# Commits in the test tier do not wait for the server's WAL flush: visibility,
# locking and atomicity are unchanged (the tests kill clients, never the server), and
# each test's many small transactions stop paying a disk flush apiece.
_TEST_SETTINGS = "-csynchronous_commit=off"


def with_schema(url: str, schema: str) -> str:
    """The URL with the schema first in search_path (libpq's `options`), and the schema
    as application_name, so a test can tell its own connections in pg_stat_activity
    from those of other test runs sharing the server."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}application_name={schema}&options={quote(f'-csearch_path={schema} {_TEST_SETTINGS}', safe='')}"


def _split(url: str) -> tuple[str, str]:
    base, _, tail = url.rpartition("options=")
    settings = unquote(tail).split()
    assert base and settings and settings[0].startswith("-csearch_path="), url
    schema = settings[0][len("-csearch_path="):]
    base = base[:-1]
    suffix = f"application_name={schema}"
    assert base.endswith(suffix), url
    return base[:-len(suffix) - 1], schema


def backends(url: str) -> list[tuple[int, str, str | None]]:
    """Other connections to a with_schema() URL's schema: (pid, state, wait event type)."""
    with RawPg(server_of(url)) as c:
        return [tuple(r) for r in c.execute(  # type: ignore[misc]
            "SELECT pid, state, wait_event_type FROM pg_stat_activity WHERE application_name = ? "
            "AND pid <> pg_backend_pid()", (schema_of(url),))]


def schema_of(url: str) -> str:
    """The schema a with_schema() URL points at."""
    return _split(url)[1]


def server_of(url: str) -> str:
    """A with_schema() URL without its schema: the server's test database."""
    return _split(url)[0]


@pytest.fixture(scope="session")
def pg_admin(pg_server: str) -> Iterator[Any]:
    """One connection for the run that makes and drops the tests' schemas."""
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        # A test that leaks a transaction holding locks in its schema fails its
        # teardown instead of hanging the run.
        conn.execute("SET lock_timeout = '30s'")
        conn.execute("SET synchronous_commit = off")
        yield conn


@pytest.fixture
def pg_schema(pg_server: str, pg_admin: Any) -> Iterator[str]:
    """A fresh schema for one test; its URL. Dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield with_schema(pg_server, name)
    finally:
        pg_admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


class RawPg:
    """Direct access to a test's PostgreSQL schema, speaking the store's dialect (`?`
    placeholders), for tampering and inspection as tests do with sqlite3 on SQLite."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Any = ()) -> Any:
        from sessctl.store.postgres import _pg_sql

        return self._conn.execute(_pg_sql(sql), params or None)

    def executemany(self, sql: str, rows: Any) -> None:
        from sessctl.store.postgres import _pg_sql

        self._conn.cursor().executemany(_pg_sql(sql), list(rows))

    @property
    def raw(self) -> Any:
        """The psycopg connection itself (COPY, transactions)."""
        return self._conn

    def commit(self) -> None:
        pass

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RawPg:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
