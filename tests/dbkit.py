"""The test's database as seen from outside sessctl, on either engine: the `stored`
fixture.

Storage tests run once per engine (conftest's `engine` fixture); what they inspect
behind sessctl's back has one meaning and two mechanisms:

  what                      SQLite                              PostgreSQL
  a raw connection          sqlite3 on the file                 psycopg on the test's schema
  the stored bytes          the files (db, -wal, -shm, -journal) a pg_dump of the schema (COPY
                                                                ... TO STDOUT without pg_dump)
  sessctl made a database   the file exists                     the schema has tables
  the schema version        PRAGMA user_version                 max(version) in schema_migrations
  sound after operations    integrity_check, foreign_key_check  (the server keeps pages sound)
                            and a clean full `doctor`           a clean full `doctor`
  another database          another file                        another schema, dropped after

In the PostgreSQL dump, bytea values are hex (`\\x...`); `stored.bytes()` gives both
the dump as written and the dump with every bytea decoded to its bytes, so a search
for a plaintext word or a ciphertext slice means the same on both engines.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pgtier import RawPg, backends, schema_of, server_of, with_schema

_BYTEA = re.compile(rb"\\\\x((?:[0-9a-f]{2})*)")
_RESTRICT = re.compile(rb"^\\(?:un)?restrict [A-Za-z0-9]+\n", re.M)


class StoredDb:
    def __init__(self, engine: str, db_path: Path, url: str | None) -> None:
        self.engine = engine
        self.db_path = db_path
        self.url = url  # postgresql: the test's schema
        self._others: list[str] = []

    @property
    def sqlite(self) -> bool:
        return self.engine == "sqlite"

    @property
    def location(self) -> str:
        """What `--db` / SESSCTL_DB would say for this database."""
        return str(self.db_path) if self.url is None else self.url

    def env(self) -> dict[str, str]:
        """Environment that points sessctl here (a subprocess with a hand-built environment)."""
        return {"SESSCTL_DB": self.location}

    # --- access -------------------------------------------------------------------------

    def conn(self) -> Any:
        """A raw connection in autocommit; SQL in the store's dialect (`?`) runs on both."""
        if self.url is None:
            return sqlite3.connect(self.db_path, isolation_level=None)
        return RawPg(self.url)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        c = self.conn()
        try:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in c.execute(sql, params).fetchall()]
        finally:
            c.close()

    def row(self, sql: str, params: Any = ()) -> dict[str, Any]:
        """The first row of a query as {column: value}."""
        c = self.conn()
        try:
            cur = c.execute(sql, params)
            values = cur.fetchone()
            assert values is not None, sql
            return {d[0]: bytes(v) if isinstance(v, memoryview) else v for d, v in zip(cur.description, values)}
        finally:
            c.close()

    def execute(self, *statements: str) -> None:
        c = self.conn()
        try:
            for s in statements:
                c.execute(s)
        finally:
            c.close()

    def wipe(self) -> None:
        """Back to nothing: no file, or an empty schema."""
        if self.url is None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                self.db_path.with_name(self.db_path.name + suffix).unlink(missing_ok=True)
        else:
            schema = schema_of(self.url)
            with RawPg(server_of(self.url)) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
                c.execute(f"CREATE SCHEMA {schema}")

    def settle(self, timeout: float = 60) -> None:
        """Wait until no connection of a killed client is left on the server. A client
        killed mid-statement leaves its server process running that statement (and holding
        its locks) until it next reads from the dead socket; SQLite's locks go with the
        process."""
        if self.url is None:
            return
        import time

        deadline = time.monotonic() + timeout
        while left := backends(self.url):
            assert time.monotonic() < deadline, f"killed clients' server processes linger: {left}"
            time.sleep(0.01)

    # --- what is stored ------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether sessctl has created anything here (a read must not)."""
        if self.url is None:
            return self.db_path.exists()
        return bool(self.query("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = current_schema()")[0][0])

    def bytes(self) -> dict[str, bytes]:
        """Everything the database holds, as raw bytes, by where it was found."""
        if self.url is None:
            out = {}
            for suffix in ("", "-wal", "-shm", "-journal"):
                p = self.db_path.with_name(self.db_path.name + suffix)
                if p.exists():
                    out[p.name] = p.read_bytes()
            return out
        dump = pg_dump(self.url)
        return {"pg_dump": dump, "pg_dump, bytea decoded": _BYTEA.sub(lambda m: bytes.fromhex(m[1].decode()), dump)}

    def all_bytes(self) -> bytes:
        return b"".join(self.bytes().values())

    def snapshot(self) -> bytes:
        """The stored content in a stable form, to show that something changed nothing:
        the main file after a checkpoint, or the dump."""
        if self.url is None:
            self.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return self.db_path.read_bytes()
        return pg_dump(self.url)

    # --- schema --------------------------------------------------------------------------

    @property
    def migrations(self) -> Any:
        """The engine's schema module (MIGRATIONS, LATEST)."""
        if self.url is None:
            from sessctl.store import sqlite_schema

            return sqlite_schema
        from sessctl.store import postgres_schema

        return postgres_schema

    def version(self) -> int:
        if self.url is None:
            return int(self.query("PRAGMA user_version")[0][0])
        return int(self.query("SELECT coalesce(max(version), 0) FROM schema_migrations")[0][0])

    def set_newer_version(self, version: int = 99) -> None:
        """Make the schema look as a newer sessctl left it."""
        if self.url is None:
            self.execute(f"PRAGMA user_version = {int(version)}")
        else:
            self.execute(f"INSERT INTO schema_migrations (version, name, applied_at) "
                         f"VALUES ({int(version)}, 'from a newer sessctl', 0)")

    # --- soundness -----------------------------------------------------------------------

    def assert_sound(self, env: dict[str, str] | None = None, context: str = "") -> None:
        """The engine's own consistency check (SQLite), then a full doctor: every value
        decrypts, the --meta index matches, sequences gap-free, no half turn, counters right."""
        if self.url is None:
            c = sqlite3.connect(self.db_path)
            try:
                assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
                assert c.execute("PRAGMA foreign_key_check").fetchall() == [], context
            finally:
                c.close()
        from sessctl.cli import cli

        r = CliRunner().invoke(cli, ["doctor", "--json"], env={**(env or {}), **self.env()}, catch_exceptions=False)
        bad = [ch for ch in json.loads(r.stdout)["checks"] if ch["status"] != "ok"]
        assert r.exit_code == 0 and not bad, f"{context}: doctor exit {r.exit_code}: {bad} {r.stderr}"

    # --- more databases ------------------------------------------------------------------

    def other(self, name: str) -> StoredDb:
        """A new, empty database on the same engine; `.location` for `--db` or SESSCTL_DB."""
        if self.url is None:
            return StoredDb(self.engine, self.db_path.parent.parent / "other" / f"{name}.db", None)
        schema = f"t_{uuid.uuid4().hex[:12]}"
        server = server_of(self.url)
        with RawPg(server) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        self._others.append(schema)
        return StoredDb(self.engine, self.db_path, with_schema(server, schema))

    def drop_others(self) -> None:
        if self._others:
            with RawPg(server_of(self.url or "")) as c:
                for schema in self._others:
                    c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _pg_dump_exe(server_major: int) -> str | None:
    # The server's own major version first: pg_dump refuses a server newer than itself.
    for exe in (f"/usr/lib/postgresql/{server_major}/bin/pg_dump", *sorted(
            glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True), shutil.which("pg_dump")):
        if exe and os.access(exe, os.X_OK):
            return exe
    return None


def pg_dump(url: str) -> bytes:
    """A plain-format dump of the schema `url` points at: with pg_dump when there is
    one that can read this server, else each table's `COPY ... TO STDOUT`."""
    schema, server = schema_of(url), server_of(url)
    with RawPg(server) as c:
        major = int(c.execute("SHOW server_version_num").fetchone()[0]) // 10000
    exe = _pg_dump_exe(major)
    if exe is not None:
        r = subprocess.run([exe, "--no-owner", "--no-privileges", "--schema", schema, "--dbname", server],
                           capture_output=True, timeout=60)
        if r.returncode == 0:
            # Recent pg_dump brackets its output with a random \restrict key each run.
            return _RESTRICT.sub(b"", r.stdout)
        assert b"version mismatch" in r.stderr, r.stderr.decode(errors="replace")
    return copy_out(url)


def copy_out(url: str) -> bytes:
    """Every table of the schema as `COPY ... TO STDOUT` text: what pg_dump would write."""
    schema, server = schema_of(url), server_of(url)
    out = bytearray()
    with RawPg(server) as c:
        tables = [r[0] for r in c.execute("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema = ? ORDER BY table_name", (schema,))]
        for table in tables:
            out += f"COPY {schema}.{table} FROM stdin;\n".encode()
            with c.raw.cursor().copy(f'COPY "{schema}"."{table}" TO STDOUT') as copy:
                for data in copy:
                    out += bytes(data)
            out += b"\\.\n"
    return bytes(out)


@pytest.fixture
def stored(engine: str, paths: Any) -> Iterator[StoredDb]:
    """The test's database on its engine (see the module docstring)."""
    db = StoredDb(engine, paths.db, os.environ.get("SESSCTL_DB") if engine == "postgresql" else None)
    try:
        yield db
    finally:
        db.drop_others()
