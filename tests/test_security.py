"""Encryption at rest, keys, tampering, storage errors and file modes."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from conftest import Paths, Run, mode, only_sqlite
from dbkit import StoredDb

pytestmark = pytest.mark.engines

SECRET_WORDS = {
    "message": "the quick zebrafish negotiates quarterly",
    "reply_and_followup": "purple elephants audit the ledger",
    "system": "You are the walrus of compliance",
    "title": "Confidential merger codename Bluebird",
    "meta_value": "tangerine-hyperdrive-77",
}


def _conversation(ok: Run) -> None:
    ok("create", "sec", "--user", "alice", "--system", SECRET_WORDS["system"], "--title", SECRET_WORDS["title"],
       "--meta", f"project={SECRET_WORDS['meta_value']}")
    ok("send", "-s", "sec", SECRET_WORDS["message"])
    ok("send", "-s", "sec", SECRET_WORDS["reply_and_followup"])


def test_no_plaintext_in_the_stored_bytes(ok: Run, stored: StoredDb, engine: str) -> None:
    ok("create", "warmup")
    # Hold a connection open so the WAL is not checkpointed away when the CLI exits:
    # the conversation's pages must be inspected in the WAL as well as the main file.
    holder = stored.conn()
    holder.execute("SELECT count(*) FROM sessions").fetchone()
    _conversation(ok)
    files = stored.bytes()  # SQLite: the files; PostgreSQL: a pg_dump
    if only_sqlite(engine, "a WAL file"):
        assert "sessions.db-wal" in files and len(files["sessions.db-wal"]) > 0
    # The plaintext columns are there, so the search below does look at the data.
    assert b"alice" in b"".join(files.values())
    for name, data in files.items():
        for label, word in SECRET_WORDS.items():
            for needle in (word, word.split()[-1]):
                assert needle.encode() not in data, f"{label} in plaintext in {name}"
                assert needle.encode("utf-16-le") not in data
    holder.close()
    # ...and it is all still there through the front door.
    s = ok("show", "sec", "--json").json()
    assert s["system"] == SECRET_WORDS["system"] and s["title"] == SECRET_WORDS["title"]
    assert s["metadata"] == {"project": SECRET_WORDS["meta_value"]}
    assert [m["content"] for m in s["messages"]][0] == SECRET_WORDS["message"]


def test_files_are_0600(ok: Run, paths: Paths, stored: StoredDb, engine: str) -> None:
    ok("create", "warmup")
    holder = stored.conn()  # keeps -wal and -shm alive after the CLI exits
    holder.execute("SELECT count(*) FROM sessions").fetchone()
    _conversation(ok)
    assert mode(paths.key) == 0o600 and mode(paths.key.parent) == 0o700
    if only_sqlite(engine, "the database is local files"):
        assert mode(paths.db) == 0o600
        for suffix in ("-wal", "-shm"):
            p = paths.db.with_name(paths.db.name + suffix)
            assert p.exists() and mode(p) == 0o600, suffix
        assert mode(paths.db.parent) == 0o700
    holder.close()


def test_wrong_key_is_6_and_data_survives(run: Run, ok: Run, paths: Paths) -> None:
    _conversation(ok)
    good = paths.key.read_bytes()
    paths.key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    for args in (["show", "sec"], ["list"], ["send", "-s", "sec", "more"], ["export", "--all"], ["create", "new"]):
        r = run(*args)
        assert r.exit_code == 6, (args, r.stderr)
        assert r.stderr.startswith("sessctl: error: wrong key") and len(r.stderr.splitlines()) == 1
    paths.key.write_bytes(good)
    s = ok("show", "sec", "--json").json()
    assert s["stats"]["messages"] == 4 and s["messages"][0]["content"] == SECRET_WORDS["message"]
    assert ok("list", "--format", "ids").stdout == "sec\n"


def test_missing_key_is_6_and_never_replaced(run: Run, ok: Run, paths: Paths) -> None:
    _conversation(ok)
    good = paths.key.read_bytes()
    paths.key.unlink()
    for args in (["show", "sec"], ["send", "-s", "sec", "x"], ["create", "other"]):
        r = run(*args)
        assert r.exit_code == 6, (args, r.stderr)
        assert "key file" in r.stderr and "missing" in r.stderr
        assert not paths.key.exists()
    paths.key.write_bytes(good)
    assert ok("show", "sec", "--json").json()["stats"]["messages"] == 4


def test_key_file_env_override(run: Run, ok: Run, paths: Paths) -> None:
    custom = paths.root / "elsewhere" / "my.key"
    env = {"SESSCTL_KEY_FILE": str(custom)}
    ok("send", "-s", "k", "hi", env=env)
    assert custom.exists() and mode(custom) == 0o600 and not paths.key.exists()
    assert run("show", "k").exit_code == 6
    assert ok("show", "k", env=env).stdout.count("hi") == 2


def test_passphrase_mode(run: Run, ok: Run, paths: Paths, stored: StoredDb) -> None:
    env = {"SESSCTL_PASSPHRASE": "correct horse battery staple"}
    ok("send", "-s", "p", "secret words", env=env)
    assert not paths.key.exists()
    assert ok("show", "p", "--json", env=env).json()["messages"][0]["content"] == "secret words"
    r = run("show", "p", env={"SESSCTL_PASSPHRASE": "wrong"})
    assert r.exit_code == 6 and "passphrase" in r.stderr
    r = run("show", "p")
    assert r.exit_code == 6 and "SESSCTL_PASSPHRASE" in r.stderr
    kdf = stored.query("SELECT kek_kind, kdf FROM keyring")[0]
    assert kdf[0] == "passphrase"
    assert '"memory_cost": 65536' in kdf[1] and '"iterations": 3' in kdf[1] and '"lanes": 4' in kdf[1]


def test_flipped_byte_in_ciphertext_is_6(run: Run, ok: Run, db_conn) -> None:
    _conversation(ok)
    c = db_conn()
    blob = bytearray(c.execute("SELECT content FROM message_bodies ORDER BY id LIMIT 1").fetchone()[0])
    blob[len(blob) // 2] ^= 0x01
    c.execute("UPDATE message_bodies SET content = ? WHERE id = (SELECT min(id) FROM message_bodies)", (bytes(blob),))
    c.close()
    r = run("show", "sec")
    assert r.exit_code == 6
    assert "cannot decrypt messages.content of session 'sec' message 1" in r.stderr
    assert run("export", "--all").exit_code == 6
    assert run("send", "-s", "sec", "more").exit_code == 6


@pytest.mark.parametrize("what", ["message_to_message", "title_to_system", "session_to_session"])
def test_value_moved_between_rows_is_6(run: Run, ok: Run, db_conn, what: str) -> None:
    _conversation(ok)
    ok("create", "other", "--title", "Other title", "--system", "Other system")
    c = db_conn()
    if what == "message_to_message":
        first, second = [r[0] for r in c.execute("SELECT content FROM message_bodies ORDER BY id LIMIT 2")]
        c.execute("UPDATE message_bodies SET content = ? WHERE id = (SELECT min(id) + 1 FROM message_bodies)",
                  (first,))
    elif what == "title_to_system":
        c.execute("UPDATE sessions SET system = title WHERE id = 'sec'")
    else:
        c.execute("UPDATE sessions SET title = (SELECT title FROM sessions WHERE id = 'sec') WHERE id = 'other'")
    c.close()
    target = "other" if what == "session_to_session" else "sec"
    r = run("show", target)
    assert r.exit_code == 6, r.stderr
    assert "altered or moved" in r.stderr


@pytest.mark.sqlite_only("a file that is not an SQLite database")
def test_not_a_database_is_7(run: Run, paths: Paths) -> None:
    paths.db.parent.mkdir(parents=True)
    paths.db.write_bytes(b"this is not sqlite, just some text\n" * 200)
    for args in (["list"], ["send", "-s", "a", "hi"], ["show", "a"], ["stats"]):
        r = run(*args)
        assert r.exit_code == 7, (args, r.stderr)
        assert r.stderr.startswith("sessctl: error:") and len(r.stderr.splitlines()) == 1
    assert paths.db.read_bytes().startswith(b"this is not sqlite")


def test_someone_elses_sessions_table_is_7_and_left_alone(run: Run, paths: Paths, stored: StoredDb,
                                                          engine: str) -> None:
    paths.db.parent.mkdir(parents=True, exist_ok=True)
    stored.execute("CREATE TABLE sessions (id INTEGER, note TEXT)",
                   "INSERT INTO sessions (id, note) VALUES (1, 'theirs')")
    for args in (["send", "-s", "a", "hi"], ["create", "a"], ["list"], ["show", "a"]):
        r = run(*args)
        assert r.exit_code == 7, (args, r.stderr)
        assert r.stderr.startswith("sessctl: error:") and len(r.stderr.splitlines()) == 1
        assert "sessions" in r.stderr and "sessctl" in r.stderr, r.stderr
    assert stored.query("SELECT id, note FROM sessions") == [(1, "theirs")]
    assert stored.query("SELECT count(*) FROM sessions") == [(1,)]
    if only_sqlite(engine, "one file is one database: any other table makes it someone else's"):
        photos = stored.other("photos")
        photos.db_path.parent.mkdir(parents=True, exist_ok=True)
        photos.execute("CREATE TABLE photos (id INTEGER)")
        r = run("--db", photos.location, "send", "-s", "a", "hi")
        assert r.exit_code == 7 and "not a sessctl" in r.stderr


def test_newer_schema_is_7(run: Run, ok: Run, stored: StoredDb) -> None:
    ok("send", "-s", "a", "hi")
    stored.set_newer_version(99)
    r = run("list")
    assert r.exit_code == 7
    assert "schema version 99" in r.stderr and "upgrade sessctl" in r.stderr


def test_schema_is_recorded(ok: Run, stored: StoredDb, engine: str) -> None:
    migrations = stored.migrations
    ok("create", "a")
    assert stored.version() == migrations.LATEST == len(migrations.MIGRATIONS)
    assert stored.query("SELECT version, name FROM schema_migrations ORDER BY version") == [
        (i + 1, name) for i, (name, _) in enumerate(migrations.MIGRATIONS)
    ]
    if only_sqlite(engine, "journal mode"):
        assert stored.query("PRAGMA journal_mode") == [("wal",)]


def test_db_flag_and_env(ok: Run, run: Run, paths: Paths, stored: StoredDb, engine: str) -> None:
    custom = stored.other("custom")
    ok("--db", custom.location, "send", "-s", "a", "hi")  # --db wins over SESSCTL_DB
    assert custom.exists() and not stored.exists()
    if only_sqlite(engine, "a file and its mode"):
        assert mode(Path(custom.location)) == 0o600
    assert ok("list", "--format", "ids", env={"SESSCTL_DB": custom.location}).stdout == "a\n"
    assert ok("list", "--format", "ids").stdout == ""


def test_api_key_never_stored(ok: Run, paths: Paths, stored: StoredDb) -> None:
    key = "sk-test-" + "Z" * 40
    ok("send", "-s", "a", "hi", env={"OPENAI_API_KEY": key, "SESSCTL_CONFIG": str(paths.write_config(
        'default_provider = "offline"\n[providers.offline]\nkind = "echo"\n'))})
    data = stored.all_bytes()
    assert b"offline" in data  # the provider's name is stored in plaintext: the search sees the data
    assert key.encode() not in data and key[8:].encode() not in data
    assert key.encode() not in paths.config.read_bytes()
