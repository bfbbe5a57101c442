"""What only the PostgreSQL engine has: a server to reach and log in to, a URL that
may carry a password, an optional driver, a schema that other programs may share,
migrations raced by processes on many hosts, and row locks that let writers to
different sessions pass each other. Plus the one test that is about both engines at
once: an export moves between them byte for byte.

Everything the engines share is tested once, over both, in the modules marked
`engines`; nothing here repeats those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import Paths, Result, Run
from pgtier import RawPg, _free_port, backends, with_schema
from test_import import jsonl, tricky_sessions

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-Sekr3t"
CMD = [sys.executable, "-c", "from sessctl.cli import main; main()"]


def _url(url: str, *, user: str | None = None, password: str | None = None, port: int | None = None,
         dbname: str | None = None, query: str | None = None) -> str:
    """url with parts replaced."""
    parts = urlsplit(url)
    user = user or parts.username or ""
    auth = user + (f":{password}" if password else "")
    netloc = f"{auth}@{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, f"/{dbname}" if dbname else parts.path,
                       parts.query if query is None else query, ""))


@pytest.fixture
def new_schema(pg_server: str) -> Iterator[Callable[[], str]]:
    """Makes fresh schemas (URLs), all dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with RawPg(pg_server) as c:
            c.execute(f"CREATE SCHEMA {name}")
        made.append(name)
        return with_schema(pg_server, name)

    yield make
    with RawPg(pg_server) as c:
        for name in made:
            c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _one_line_error(r: Result, code: int) -> None:
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert r.stderr.startswith("sessctl: error:") and r.stderr.endswith("\n"), r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr


def _sessctl(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=timeout)


# --- reaching the server ------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["unreachable", "no such role", "no such database"])
@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_connection_failures_are_7_on_one_line_with_the_password_masked(run: Run, pg_server: str, problem: str,
                                                                        where: str) -> None:
    kw = {"unreachable": {"port": _free_port()}, "no such role": {"user": "sessctl_no_such_role"},
          "no such database": {"dbname": "sessctl_no_such_database"}}[problem]
    if where == "userinfo":
        url = _url(pg_server, password=PASSWORD, **kw)  # type: ignore[arg-type]
    else:
        url = _url(pg_server, query=f"sslmode=disable&password={PASSWORD}", **kw)  # type: ignore[arg-type]
    said = {"unreachable": "Connection refused", "no such role": 'role "sessctl_no_such_role" does not exist',
            "no such database": 'database "sessctl_no_such_database" does not exist'}[problem]
    for args in (["list"], ["send", "-s", "a", "hi"], ["create", "a"], ["show", "a"], ["stats"], ["key", "status"],
                 ["export", "--all"], ["cleanup"]):
        r = run("--db", url, *args)
        _one_line_error(r, 7)
        assert r.stderr.startswith("sessctl: error: cannot connect to postgresql://") and said in r.stderr, r.stderr
        assert "***" in r.stderr and PASSWORD not in r.stdout + r.stderr
        debug = run("--debug", "--db", url, *args)
        assert debug.exit_code == 7 and "Traceback" in debug.stderr  # --debug shows it, still masked
        assert "***" in debug.stderr and PASSWORD not in debug.stdout + debug.stderr
    r = run("--db", url, "doctor", "--json")
    assert r.exit_code == 7 and PASSWORD not in r.stdout + r.stderr
    report = r.json()
    assert "***" in report["database"] and report["checks"][0]["status"] == "fail"
    assert said in report["checks"][0]["detail"] and "***" in report["checks"][0]["detail"]


@pytest.mark.parametrize("url", [
    f"postgresql://u:{PASSWORD}@localhost:notaport/db",
    f"postgresql://u:{PASSWORD}@localhost:70000/db",
    f"postgresql://u:{PASSWORD}@localhost/db#fragment",
    f"postgresql://u:{PASSWORD}@local host/db",
    f"postgresql://u:{PASSWORD}@localhost/a/b",
    f"postgresql://u:{PASSWORD}@localhost/db?no_such_parameter=1",
    f"postgresql://u@localhost/db?password={PASSWORD}&no_such_parameter=1",
    f"postgresql://u@localhost/db?password={PASSWORD}&prepare_threshold=often",
    "postgresql://",
    "mysql://u@localhost/db",
])
def test_a_malformed_url_is_2_and_never_echoes_the_password(run: Run, url: str) -> None:
    for args in (["--db", url, "list"], ["--db", url, "send", "-s", "a", "hi"]):
        r = run(*args)
        _one_line_error(r, 2)
        assert PASSWORD not in r.stdout + r.stderr
    r = run("list", env={"SESSCTL_DB": url})
    _one_line_error(r, 2)
    assert PASSWORD not in r.stderr


def test_the_password_is_masked_in_doctor_and_key_status(run: Run, ok: Run, pg_schema: str) -> None:
    # The test server trusts local connections, so a URL with a password still works.
    url = _url(pg_schema, password=PASSWORD)
    ok("--db", url, "send", "-s", "a", "hello")
    shown = []
    report = ok("--db", url, "doctor", "--json")
    assert report.json()["database"].startswith("postgresql://postgres:***@")
    assert {c["status"] for c in report.json()["checks"]} == {"ok"}
    status = ok("--db", url, "key", "status", "--json")
    assert status.json()["database"] == report.json()["database"]
    for r in (report, status, ok("--db", url, "doctor"), ok("--db", url, "key", "status"),
              ok("--db", url, "--debug", "list", "--json")):
        shown.append(r.stdout + r.stderr)
    assert all(PASSWORD not in text for text in shown)
    assert sum("***" in text for text in shown) >= 4


# --- selecting PostgreSQL, and the driver ----------------------------------------------------


def test_storage_url_in_config_selects_postgresql(ok: Run, paths: Paths, pg_schema: str) -> None:
    paths.write_config(f'[storage]\nurl = "{pg_schema}"\n')
    ok("send", "-s", "cfg", "stored on the server")
    assert not paths.db.exists()
    with RawPg(pg_schema) as c:
        assert c.execute("SELECT id, message_count FROM sessions").fetchall() == [("cfg", 2)]
    assert ok("list", "--format", "ids").stdout == "cfg\n"
    # --db (and SESSCTL_DB) still win over the config file.
    assert ok("--db", str(paths.root / "local.db"), "list", "--format", "ids").stdout == ""


def test_a_missing_driver_names_the_extra(paths: Paths, pg_schema: str, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text('raise ImportError("No module named \'psycopg\' (blocked by the test)")\n')
    env = {"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    r = subprocess.run([*CMD, "--db", pg_schema, "list"], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 7, r.stderr
    assert r.stderr == ("sessctl: error: a postgresql:// database needs the PostgreSQL driver: "
                        "pip install 'sessctl[postgres]' (psycopg 3)\n")
    # SQLite never needs it.
    r = subprocess.run([*CMD, "send", "-s", "a", "hi"], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr


# --- a schema of its own, or shared --------------------------------------------------------


def test_other_programs_tables_beside_ours_are_left_alone(ok: Run, pg_schema: str) -> None:
    with RawPg(pg_schema) as c:
        c.execute("CREATE TABLE photos (id integer PRIMARY KEY, caption text)")
        c.execute("INSERT INTO photos VALUES (1, 'a cat')")
    ok("--db", pg_schema, "send", "-s", "a", "hi")
    ok("--db", pg_schema, "delete", "--all", "--yes", "--vacuum")
    assert ok("--db", pg_schema, "doctor").exit_code == 0
    with RawPg(pg_schema) as c:
        assert c.execute("SELECT * FROM photos").fetchall() == [(1, "a cat")]


def test_stores_in_two_schemas_of_one_database_are_independent(ok: Run, new_schema: Callable[[], str]) -> None:
    one, two = new_schema(), new_schema()
    ok("--db", one, "send", "-s", "a", "in one")
    ok("--db", two, "send", "-s", "b", "in two")
    assert ok("--db", one, "list", "--format", "ids").stdout == "a\n"
    assert ok("--db", two, "list", "--format", "ids").stdout == "b\n"


def test_processes_migrating_a_fresh_schema_at_once(paths: Paths, new_schema: Callable[[], str]) -> None:
    """Real processes, released together, each the first to open a fresh schema: one
    migrates under the advisory lock, the others wait and find it done. Every process
    succeeds and every step is recorded once."""
    from sessctl.store import postgres_schema

    workers = 4
    code = ("import os, sys, time\n"
            "from sessctl.cli import cli, run\n"
            "import sessctl.store.postgres, psycopg\n"  # warm: the race is in the server
            "while not os.path.exists(sys.argv[1]):\n    time.sleep(0.002)\n"
            "sys.exit(run(cli, ['-q', 'create', sys.argv[2]], 'sessctl', False))\n")
    for round_ in range(3):
        url = new_schema()
        go = paths.root / f"go-{round_}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SESSCTL_DB": url}
        procs = [subprocess.Popen([sys.executable, "-c", code, str(go), f"s{w}"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for w in range(workers)]
        time.sleep(0.3)  # (not a timing assumption: later starters just find the work done)
        go.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        assert [(rc, err) for rc, _, err in results] == [(0, "")] * workers, results
        with RawPg(url) as c:
            assert c.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall() == [
                (i + 1, name) for i, (name, _) in enumerate(postgres_schema.MIGRATIONS)]
            assert c.execute("SELECT count(*) FROM keyring").fetchone()[0] == 1
            assert sorted(r[0] for r in c.execute("SELECT id FROM sessions")) == [f"s{w}" for w in range(workers)]


# --- row locks: writers to different sessions never wait on each other ------------------------


def _waiting_on_a_lock(url: str) -> int:
    """How many of this test's connections wait for a lock (not another run's)."""
    return sum(wait == "Lock" for _, _, wait in backends(url))


def test_a_locked_session_holds_up_only_its_own_writers(ok: Run, run: Run, paths: Paths, pg_schema: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSCTL_DB", pg_schema)
    monkeypatch.setenv("SESSCTL_KEY_FILE", str(paths.key))  # the same key, whichever config
    patient = paths.root / "patient.toml"
    patient.write_text("[storage]\nbusy_timeout = 120\n")
    hasty = paths.root / "hasty.toml"
    hasty.write_text("[storage]\nbusy_timeout = 0.3\n")
    ok("send", "-s", "a", "first")
    ok("create", "b")
    holder = RawPg(pg_schema)
    waiter: subprocess.Popen[str] | None = None
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT pk FROM sessions WHERE id = 'a' FOR UPDATE")
        # A writer to 'a' waits for the lock...
        waiter = subprocess.Popen([*CMD, "-q", "send", "-s", "a", "second"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), "SESSCTL_CONFIG": str(patient)})
        deadline = time.monotonic() + 60
        while not _waiting_on_a_lock(pg_schema):
            assert waiter.poll() is None, waiter.communicate()
            assert time.monotonic() < deadline, "the send to 'a' never waited for its lock"
            time.sleep(0.02)
        # ...while writers to other sessions, with a timeout far too short to wait, go on,
        # and readers, of 'a' too, are not held up at all.
        hasty_env = {"SESSCTL_CONFIG": str(hasty)}
        assert ok("send", "-s", "b", "not held up", env=hasty_env).stdout == "not held up\n"
        ok("send", "-s", "c", "a new session", env=hasty_env)
        ok("meta", "b", "k=v", env=hasty_env)
        ok("archive", "c", env=hasty_env)
        assert [m["content"] for m in ok("show", "a", "--json", env=hasty_env).json()["messages"]] == [
            "first", "first"]
        assert ok("list", "--format", "ids", env=hasty_env).stdout.split() == ["b", "a"]
        # A second writer to 'a' with the short timeout gives up: exit 7, one line.
        r = run("send", "-s", "a", "too hasty", env=hasty_env)
        _one_line_error(r, 7)
        assert "locked past the busy timeout (300 ms)" in r.stderr
        assert waiter.poll() is None  # still waiting
        holder.execute("COMMIT")
        out, err = waiter.communicate(timeout=60)
        assert (waiter.returncode, out, err) == (0, "second\n", "")
    finally:
        holder.close()
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    msgs = ok("show", "a", "--json").json()["messages"]
    assert [(m["seq"], m["content"]) for m in msgs] == [
        (1, "first"), (2, "first"), (3, "second"), (4, "second")]
    assert ok("doctor").exit_code == 0


def test_a_deadlock_retries_the_whole_transaction(ok: Run, paths: Paths, pg_schema: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A send to a and b locks a, then waits for b, which a raw connection holds; the raw
    connection then asks for a: a deadlock. The server aborts the transaction that waited
    first (the send's), which lets the raw connection have a, and the send starts its
    transaction again and finishes once b is free: every turn stored once."""
    monkeypatch.setenv("SESSCTL_DB", pg_schema)
    ok("create", "a")
    ok("create", "b")
    holder = RawPg(pg_schema)
    sender: subprocess.Popen[str] | None = None
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT pk FROM sessions WHERE id = 'b' FOR UPDATE")
        sender = subprocess.Popen([*CMD, "-q", "send", "-s", "a", "-s", "b", "both"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while not _waiting_on_a_lock(pg_schema):
            assert sender.poll() is None, sender.communicate()
            assert time.monotonic() < deadline, "the send never waited for b"
            time.sleep(0.02)
        # Granted only once the send's transaction, which holds a, has been rolled back.
        holder.execute("SELECT pk FROM sessions WHERE id = 'a' FOR UPDATE")
        assert sender.poll() is None  # ...and the send is still going: it will try again
        holder.execute("COMMIT")
        out, err = sender.communicate(timeout=60)
        assert (sender.returncode, err) == (0, ""), err
        assert out == "==> a <==\nboth\n\n==> b <==\nboth\n"
    finally:
        holder.close()
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait()
    for sid in "ab":
        assert [m["content"] for m in ok("show", sid, "--json").json()["messages"]] == ["both", "both"]


# --- between engines ----------------------------------------------------------------------------


def _cli_sessions(ok: Run, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions as the CLI makes them: options, context limits, TTL, metadata, archive."""
    monkeypatch.setenv("SESSCTL_NOW", "2026-05-01T08:00:00Z")
    ok("--db", db, "create", "c-1", "--user", "alice", "--title", "T ü", "--system", "S", "--meta", "plan=pro",
       "--meta", "team=ünï", "--ttl", "30d", "-o", "temperature=0.5", "--max-context-tokens", "900")
    ok("--db", db, "send", "-s", "c-1", "hello 👋")
    monkeypatch.setenv("SESSCTL_NOW", "2026-05-02T09:30:00Z")
    ok("--db", db, "send", "-s", "c-2", "second session\nwith two lines")
    ok("--db", db, "archive", "c-2")
    monkeypatch.delenv("SESSCTL_NOW")


@pytest.mark.parametrize("direction", ["sqlite to postgresql", "postgresql to sqlite"])
def test_an_export_moves_between_engines_byte_for_byte(ok: Run, run: Run, paths: Paths, new_schema: Callable[[], str],
                                                       monkeypatch: pytest.MonkeyPatch, direction: str) -> None:
    made = {"sqlite": lambda name: str(paths.root / f"{name}.db"), "postgresql": lambda name: new_schema()}
    source_engine, target_engine = direction.split(" to ")
    source = made[source_engine]("source")
    ok("--db", source, "import", "-", input=jsonl(tricky_sessions()))
    _cli_sessions(ok, source, monkeypatch)
    for fmt in ("jsonl", "json"):
        dump = ok("--db", source, "export", "--all", "--format", fmt).stdout
        assert len(dump.splitlines() if fmt == "jsonl" else json.loads(dump)) == 6
        target = made[target_engine](f"target-{fmt}")
        ok("--db", target, "import", "-", input=dump)
        assert ok("--db", target, "export", "--all", "--format", fmt).stdout == dump, fmt
        assert ok("--db", target, "stats", "--json").stdout == ok("--db", source, "stats", "--json").stdout
        # The --meta index is rebuilt under the target's own data key.
        assert ok("--db", target, "list", "--meta", "plan=pro", "--format", "ids").stdout == "c-1\nunicode-1\n"
        # (The hand-written sessions hold a turn doctor flags: the same on both sides.)
        verdicts = [[(c["name"], c["status"]) for c in run("--db", db, "doctor", "--json").json()["checks"]]
                    for db in (source, target)]
        assert verdicts[0] == verdicts[1]


def test_a_shared_snapshot_shows_a_joining_connection_exactly_what_it_shows(ok: Run, pg_schema: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Export workers on PostgreSQL join the parent's snapshot, so a parallel export is
    # one snapshot: a commit after it was shared stays invisible to every worker.
    from sessctl import config
    from sessctl.store import Store

    monkeypatch.setenv("SESSCTL_DB", pg_schema)
    ok("create", "before")
    parent, worker = (Store.open(config.load(), None, create=False) for _ in range(2))
    assert parent is not None and worker is not None
    ids = "SELECT id FROM sessions ORDER BY id"
    try:
        with parent.reading():
            snapshot = parent.db.share_snapshot(parent.conn)
            assert snapshot is not None
            ok("create", "after")  # committed by another connection after the share
            with worker.reading(snapshot):
                assert [r[0] for r in worker.conn.execute(ids)] == ["before"]
            assert [r[0] for r in parent.conn.execute(ids)] == ["before"]
        with worker.reading():  # a read of its own sees the commit
            assert [r[0] for r in worker.conn.execute(ids)] == ["after", "before"]
        with pytest.raises(ValueError):
            with worker.reading("x'; DROP TABLE sessions; --"):
                pass
    finally:
        parent.close()
        worker.close()
