"""`sessctl doctor` on healthy and deliberately damaged databases."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from conftest import Paths, Run, only_sqlite, reseal
from dbkit import StoredDb

pytestmark = pytest.mark.engines

CHECKS = ["database", "permissions", "integrity", "schema", "key", "decrypt", "metadata index", "search index",
          "digests", "sequences", "counters", "turns", "orphans"]


def _populate(ok: Run) -> None:
    ok("create", "a", "--user", "alice", "--title", "Title A", "--system", "Sys", "--meta", "plan=pro")
    for i in range(3):
        ok("send", "-s", "a", f"message {i}")
    ok("send", "-s", "b", "hello")
    ok("create", "empty")


def _doctor(run: Run, *args: str) -> tuple[int, dict[str, dict[str, object]], str]:
    r = run("doctor", "--json", *args)
    report = r.json()
    assert report["exit_code"] == r.exit_code and report["ok"] == (r.exit_code == 0)
    return r.exit_code, {c["name"]: c for c in report["checks"]}, r.stderr


def _status(checks: dict[str, dict[str, object]]) -> dict[str, object]:
    return {name: c["status"] for name, c in checks.items()}


# Raw deletes run with foreign keys off, so a deleted message's search index row (which
# the foreign key would cascade) is removed by hand where a test wants only one fault.
_DROP_STRAY_SEARCH_ROWS = ("DELETE FROM message_search WHERE NOT EXISTS (SELECT 1 FROM messages m "
                           "WHERE m.session_pk = message_search.session_pk AND m.seq = message_search.seq)")


def test_healthy_database(run: Run, ok: Run, engine: str) -> None:
    _populate(ok)
    code, checks, err = _doctor(run)
    assert code == 0 and err == ""
    assert list(checks) == CHECKS
    assert set(_status(checks).values()) == {"ok"}
    assert checks["decrypt"]["detail"] == "all 11 values decrypt"  # 8 bodies + title, system, metadata
    assert "3 sessions, 8 messages" in checks["database"]["detail"]
    # The engine's own check: SQLite's page-level one, PostgreSQL's indexes and constraints.
    assert checks["integrity"]["detail"] == {"sqlite": "integrity_check ok, foreign keys ok",
                                             "postgresql": "indexes valid, keys and constraints in place"}[engine]
    code, checks, _ = _doctor(run, "--quick")
    assert code == 0 and checks["integrity"]["detail"] == {
        "sqlite": "quick_check ok", "postgresql": "indexes valid, keys and constraints in place"}[engine]
    table = ok("doctor").stdout.splitlines()
    assert table[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert [line.split()[0] for line in table[2:]] == [c.split()[0] for c in CHECKS]


def test_missing_and_empty_database_are_not_errors(run: Run, paths: Paths, stored: StoredDb, engine: str) -> None:
    code, checks, _ = _doctor(run)
    assert code == 0 and list(checks) == ["database"] and checks["database"]["status"] == "warn"
    assert "nothing to check" in checks["database"]["detail"] and not stored.exists()
    if not only_sqlite(engine, "an empty file: what a process killed before its first migration leaves"):
        return
    paths.db.parent.mkdir(parents=True)
    paths.db.touch(mode=0o600)
    code, checks, _ = _doctor(run)
    assert code == 0 and "not initialised" in checks["database"]["detail"]


def test_doctor_changes_nothing(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    before = hashlib.sha256(stored.snapshot()).hexdigest()
    run("doctor")
    run("doctor", "--quick")
    assert hashlib.sha256(stored.snapshot()).hexdigest() == before


def test_tampered_value_is_6(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    c = stored.conn()
    blob = bytearray(c.execute("SELECT content FROM message_bodies WHERE id = 3").fetchone()[0])
    blob[20] ^= 0xFF
    c.execute("UPDATE message_bodies SET content = ? WHERE id = 3", (bytes(blob),))
    c.close()
    code, checks, err = _doctor(run)
    assert code == 6
    assert checks["decrypt"]["status"] == "fail" and checks["decrypt"]["detail"].startswith("1 of all 11 values")
    assert checks["decrypt"]["problems"] == ["messages.content of session 'a' message 3 does not decrypt (altered or moved)"]
    assert err == "sessctl: error: doctor found problems (decrypt); see the report above\n"
    assert [n for n, s in _status(checks).items() if s != "ok"] == ["decrypt"]
    # A sample that covers every value finds it too.
    code, checks, _ = _doctor(run, "--quick", "--sample", "100")
    assert code == 6 and checks["decrypt"]["status"] == "fail"


def test_wrong_or_missing_key_is_6(run: Run, ok: Run, paths: Paths) -> None:
    _populate(ok)
    good = paths.key.read_bytes()
    paths.key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    code, checks, _ = _doctor(run)
    assert code == 6 and checks["key"]["status"] == "fail" and "wrong key" in checks["key"]["detail"]
    assert checks["decrypt"]["status"] == "skip"
    assert checks["sequences"]["status"] == "ok"  # what can be checked without the key still is
    paths.key.unlink()
    code, checks, _ = _doctor(run)
    assert code == 6 and "missing" in checks["key"]["detail"]
    paths.key.write_bytes(good)
    paths.key.chmod(0o600)
    assert _doctor(run)[0] == 0


def test_permissions(run: Run, ok: Run, paths: Paths, engine: str) -> None:
    _populate(ok)
    paths.key.chmod(0o644)
    code, checks, _ = _doctor(run)
    assert code == 6 and checks["permissions"]["status"] == "fail"
    assert checks["permissions"]["problems"] == [
        f"{paths.key} is mode 0644: others can read it; run `chmod 600 {paths.key}`"]
    paths.key.chmod(0o600)
    code, checks, _ = _doctor(run)
    assert code == 0 and checks["permissions"]["status"] == "ok"
    assert checks["permissions"]["detail"] == {"sqlite": "sessions.db 0600, sessions.db-wal 0600, sessions.db-shm 0600, "
                                                         "key 0600", "postgresql": "key 0600"}[engine]
    if not only_sqlite(engine, "database files and their directory"):
        return
    paths.key.chmod(0o644)
    paths.db.chmod(0o640)
    code, checks, _ = _doctor(run)
    assert code == 7  # a storage failure outranks a key failure
    paths.db.chmod(0o600)
    paths.key.chmod(0o600)
    paths.db.parent.chmod(0o777)
    code, checks, _ = _doctor(run)
    assert code == 0 and checks["permissions"]["status"] == "warn"
    assert "chmod 700" in checks["permissions"]["detail"]
    paths.db.parent.chmod(0o700)


def test_sequence_gap_is_7(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    # Remove a whole turn (3, 4) from the middle and fix the counters, so only the gap is wrong.
    stored.execute(
        "DELETE FROM messages WHERE session_pk = (SELECT pk FROM sessions WHERE id = 'a') AND seq IN (3, 4)",
        "DELETE FROM message_bodies WHERE id NOT IN (SELECT id FROM messages)",
        _DROP_STRAY_SEARCH_ROWS,
        "UPDATE sessions SET message_count = 4, tokens_in = (SELECT coalesce(sum(tokens_in), 0) FROM messages m "
        "WHERE m.session_pk = sessions.pk), tokens_out = (SELECT coalesce(sum(tokens_out), 0) FROM messages m "
        "WHERE m.session_pk = sessions.pk) WHERE id = 'a'")
    code, checks, _ = _doctor(run)
    assert code == 7
    # The digest binds the messages: removing two is tampering, whatever the counters say.
    assert [n for n, s in _status(checks).items() if s != "ok"] == ["digests", "sequences"]
    assert checks["digests"]["problems"] == ["session 'a': messages missing or out of order"]
    assert checks["sequences"]["problems"] == ["session 'a': 4 messages (seq 1..6), counter says 4"]
    # --quick samples sessions; a sample as large as the database finds it too.
    code, checks, _ = _doctor(run, "--quick", "--sample", "10")
    assert code == 7 and checks["sequences"]["status"] == "fail"
    assert checks["sequences"]["detail"].startswith("1 sessions")


def test_half_written_turn_is_7(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    # Drop the last reply of 'b' and make the counters agree: a user message without its reply.
    stored.execute(
        "DELETE FROM messages WHERE session_pk = (SELECT pk FROM sessions WHERE id = 'b') AND seq = 2",
        "DELETE FROM message_bodies WHERE id NOT IN (SELECT id FROM messages)",
        _DROP_STRAY_SEARCH_ROWS,
        "UPDATE sessions SET message_count = 1, tokens_in = 0, tokens_out = 0 WHERE id = 'b'")
    code, checks, _ = _doctor(run)
    assert code == 7
    assert [n for n, s in _status(checks).items() if s != "ok"] == ["digests", "turns"]
    assert checks["turns"]["problems"] == ["session 'b' message 1: user (ok) is not part of a whole turn"]
    reseal()  # as if a writer with the key had left it so: the structural check alone must see it
    code, checks, _ = _doctor(run)
    assert code == 7 and [n for n, s in _status(checks).items() if s != "ok"] == ["turns"]
    code, checks, _ = _doctor(run, "--quick", "--sample", "10")
    assert code == 7 and checks["turns"]["status"] == "fail"
    # Marked unanswered (what send writes when the call fails), it is a whole turn again.
    stored.execute("UPDATE messages SET status = 'unanswered' WHERE session_pk = (SELECT pk FROM sessions WHERE id = 'b')")
    reseal()
    code, checks, _ = _doctor(run)
    assert code == 0 and checks["turns"]["detail"] == "no half-written turns; 1 unanswered messages kept as such"


def test_counters_and_orphans_are_7(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    stored.execute("UPDATE sessions SET tokens_out = tokens_out + 5 WHERE id = 'a'")
    code, checks, _ = _doctor(run)
    assert code == 7 and [n for n, s in _status(checks).items() if s != "ok"] == ["digests", "counters"]
    stored.execute("UPDATE sessions SET tokens_out = tokens_out - 5 WHERE id = 'a'",
                   "DELETE FROM message_bodies WHERE id = 1")
    code, checks, _ = _doctor(run)
    assert code == 7 and checks["orphans"]["detail"] == "1 messages without a body"
    code, checks, _ = _doctor(run, "--quick")
    assert code == 7 and checks["orphans"]["detail"] == "1 messages without a body"


def test_metadata_index_mismatch_is_6(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    stored.execute("DELETE FROM session_meta_index")
    code, checks, _ = _doctor(run)
    assert code == 6 and [n for n, s in _status(checks).items() if s != "ok"] == ["metadata index"]
    assert checks["metadata index"]["problems"] == ["session 'a': the --meta index does not match its metadata"]


def _damage_report(run: Run) -> str:
    code, checks, err = _doctor(run)
    assert code == 7, checks
    assert err.startswith("sessctl: error: doctor found problems (") and len(err.splitlines()) == 1
    return [n for n, s in _status(checks).items() if s == "fail"][0]


@pytest.mark.parametrize("damage", ["foreign", "newer"])
def test_schema_damage_is_7(run: Run, ok: Run, paths: Paths, stored: StoredDb, damage: str) -> None:
    if damage == "foreign":
        paths.db.parent.mkdir(parents=True)
        stored.execute("CREATE TABLE sessions (id INTEGER)")
        if stored.sqlite:
            paths.db.chmod(0o600)
    else:
        _populate(ok)
        stored.set_newer_version(99)
    assert _damage_report(run) == "schema"


@pytest.mark.sqlite_only("damage to the bytes of an SQLite file")
@pytest.mark.parametrize("damage", ["not_sqlite", "corrupt_page"])
def test_file_damage_is_7(run: Run, ok: Run, paths: Paths, stored: StoredDb, damage: str) -> None:
    if damage == "not_sqlite":
        paths.db.parent.mkdir(parents=True)
        paths.db.write_bytes(b"just text\n" * 500)
    else:
        for i in range(40):
            ok("send", "-s", f"s{i % 4}", f"message {i} " + "x" * 300)
        stored.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = stored.query("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_messages_1'")[0][0]
        page = stored.query("PRAGMA page_size")[0][0]
        data = bytearray(paths.db.read_bytes())
        off = (root - 1) * page
        data[off + 100:off + page - 96] = b"\x55" * (page - 196)
        paths.db.write_bytes(bytes(data))
    assert _damage_report(run) == {"not_sqlite": "database", "corrupt_page": "integrity"}[damage]
