"""Per-session integrity: tampering that only doctor used to see is seen by every read
that shows a session (show, export, the library, send's history): exit 6. On both
engines, by editing the stored rows directly as someone holding the file (or the
database) but not the key could."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from conftest import Paths, Run

pytestmark = pytest.mark.engines

TAMPERING: dict[str, list[str]] = {
    "message deleted from the middle": [
        # (the search index's rows first: its foreign key would refuse renumbering)
        "DELETE FROM message_search WHERE session_pk = (SELECT pk FROM sessions WHERE id = 't')",
        "DELETE FROM message_bodies WHERE id = (SELECT id FROM messages WHERE seq = 2 AND session_pk = "
        "(SELECT pk FROM sessions WHERE id = 't'))",
        "DELETE FROM messages WHERE seq = 2 AND session_pk = (SELECT pk FROM sessions WHERE id = 't')",
        "UPDATE messages SET seq = seq - 1 WHERE seq > 2 AND session_pk = (SELECT pk FROM sessions WHERE id = 't')",
        "UPDATE sessions SET message_count = message_count - 1 WHERE id = 't'",
    ],
    "last turn deleted": [
        "DELETE FROM message_bodies WHERE id IN (SELECT id FROM messages WHERE seq > 4 AND session_pk = "
        "(SELECT pk FROM sessions WHERE id = 't'))",
        "DELETE FROM messages WHERE seq > 4 AND session_pk = (SELECT pk FROM sessions WHERE id = 't')",
        "UPDATE sessions SET message_count = 4 WHERE id = 't'",
    ],
    "roles flipped": [
        "UPDATE messages SET role = CASE role WHEN 'user' THEN 'assistant' ELSE 'user' END "
        "WHERE session_pk = (SELECT pk FROM sessions WHERE id = 't')",
    ],
    "status changed": ["UPDATE messages SET status = 'unanswered' WHERE seq = 5"
                 " AND session_pk = (SELECT pk FROM sessions WHERE id = 't')"],
    "model changed": ["UPDATE messages SET model = 'gpt-5-ultra' WHERE seq = 2"
                 " AND session_pk = (SELECT pk FROM sessions WHERE id = 't')"],
    "tokens changed": ["UPDATE messages SET tokens_out = 9999 WHERE seq = 4"
                 " AND session_pk = (SELECT pk FROM sessions WHERE id = 't')"],
    "created_at changed": ["UPDATE messages SET created_at = created_at - 86400 WHERE seq = 1"
                 " AND session_pk = (SELECT pk FROM sessions WHERE id = 't')"],
    "redaction counts changed": ["UPDATE messages SET redactions = NULL, redaction_count = 0 WHERE seq = 1"
                 " AND session_pk = (SELECT pk FROM sessions WHERE id = 't')"],
    "title set to NULL": ["UPDATE sessions SET title = NULL WHERE id = 't'"],
    "metadata set to NULL": ["UPDATE sessions SET metadata = NULL WHERE id = 't'"],
    "settings set to NULL": ["UPDATE sessions SET settings = NULL WHERE id = 't'"],
    "owner changed": ["UPDATE sessions SET \"user\" = 'mallory' WHERE id = 't'"],
    "expiry pushed back": ["UPDATE sessions SET expires_at = expires_at + 86400 * 3650 WHERE id = 't'"],
    "counters changed": ["UPDATE sessions SET tokens_in = 0 WHERE id = 't'"],
    "digest removed": ["UPDATE sessions SET digest = NULL WHERE id = 't'"],
    "chain removed": ["UPDATE messages SET chain = NULL WHERE seq = 3"
                 " AND session_pk = (SELECT pk FROM sessions WHERE id = 't')"],
}


def _conversation(ok: Run) -> None:
    ok("create", "t", "--user", "alice", "--title", "Title v1", "--system", "Be terse.", "--meta", "plan=free",
       "--ttl", "30d", "-o", "temperature=0.2")
    for text in ("first contact: bob@example.com", "second", "third"):
        ok("send", "-s", "t", text)
    ok("create", "bystander", "--title", "untouched")
    ok("send", "-s", "bystander", "hello")


def _tamper(db_conn: Callable[[], Any], statements: list[str]) -> None:
    c = db_conn()
    for sql in statements:
        c.execute(sql)
    c.close()


@pytest.mark.parametrize("what", list(TAMPERING))
def test_tampering_is_seen_by_every_read_that_shows_the_session(run: Run, ok: Run, db_conn, what: str) -> None:
    _conversation(ok)
    _tamper(db_conn, TAMPERING[what])
    for args in (["show", "t"], ["show", "t", "--last", "2"], ["export", "t"], ["export", "--all"],
                 ["send", "-s", "t", "more"]):
        r = run(*args)
        assert r.exit_code == 6, (what, args, r.exit_code, r.stderr)
        assert r.stderr.startswith("sessctl: error: ") and len(r.stderr.splitlines()) == 1
        assert "'t'" in r.stderr
    doctor = run("doctor", "--json")
    assert doctor.exit_code in (6, 7)
    failed = {c["name"] for c in doctor.json()["checks"] if c["status"] == "fail"}
    assert "digests" in failed
    # The session nobody touched still reads.
    assert ok("show", "bystander", "--json").json()["stats"]["messages"] == 2


def test_a_title_replayed_from_an_older_version_is_seen(run: Run, ok: Run, db_conn) -> None:
    """A sealed value copied back from a backup opens fine (same place, same key): only
    the digest tells it is not the current one."""
    _conversation(ok)
    c = db_conn()
    old_title, old_meta = c.execute("SELECT title, metadata FROM sessions WHERE id = 't'").fetchone()
    c.close()
    ok("update", "t", "--title", "Title v2")
    ok("meta", "t", "plan=pro")
    assert ok("show", "t", "--json").json()["title"] == "Title v2"
    for column, value in (("title", old_title), ("metadata", old_meta)):
        c = db_conn()
        current = c.execute(f"SELECT {column} FROM sessions WHERE id = 't'").fetchone()[0]
        c.execute(f"UPDATE sessions SET {column} = ? WHERE id = 't'", (value,))
        c.close()
        r = run("show", "t")
        assert r.exit_code == 6 and "its header does not match its digest" in r.stderr, r.stderr
        c = db_conn()
        c.execute(f"UPDATE sessions SET {column} = ? WHERE id = 't'", (current,))
        c.close()
        assert run("show", "t").exit_code == 0


def test_every_write_keeps_the_digest_in_step(ok: Run, tmp_path: Any, db_conn) -> None:
    _conversation(ok)
    ok("update", "t", "--title", "new", "--user", "carol", "--ttl", "7d")
    ok("meta", "t", "x=y", "--unset", "plan")
    ok("archive", "t")
    ok("send", "-s", "t", "after archive", "--unarchive")
    ok("update", "t", "--no-ttl")
    dump = ok("export", "--all", "--format", "jsonl").stdout
    (tmp_path / "dump.jsonl").write_text(dump)
    ok("delete", "t")
    ok("import", str(tmp_path / "dump.jsonl"), "--on-conflict", "replace")
    ok("key", "rotate", "--reencrypt")
    ok("send", "-s", "t", "after rotation")
    assert ok("doctor", "--json").json()["ok"] is True
    assert len(ok("show", "t", "--json").json()["messages"]) == 10
    # Every message carries a 128-bit link; every session a 256-bit digest.
    c = db_conn()
    assert c.execute("SELECT DISTINCT length(chain) FROM messages").fetchall() == [(16,)]
    assert c.execute("SELECT DISTINCT length(digest) FROM sessions").fetchall() == [(32,)]
    c.close()


def test_options_are_sealed_and_sanitized_like_metadata(ok: Run, paths: Paths, engine: str, db_conn) -> None:
    secret = "sk-proj-Xk3Fq9Lm2Rt7Vw1Yz5Bn8Cd4Eg6Hj0Pq2Sa9Ub3Wc7Zd1Tf4Ke8Mg5Nh2"
    ok("create", "o", "-o", "temperature=0.25", "-o", f"user_note=codename tangerine {secret}",
       "--max-context-messages", "8")
    s = ok("show", "o", "--json").json()
    assert s["options"] == {"temperature": 0.25, "user_note": "codename tangerine [REDACTED:openai_key]"}
    assert s["context"]["max_messages"] == 8 and s["stats"]["redactions"] == 1
    c = db_conn()
    options, settings = c.execute("SELECT options, settings FROM sessions WHERE id = 'o'").fetchone()
    c.close()
    assert options is None and settings is not None and b"tangerine" not in bytes(settings)
    if engine == "sqlite":
        raw = b"".join(p.read_bytes() for p in paths.db.parent.iterdir() if p.name.startswith("sessions.db"))
        assert b"tangerine" not in raw and b"temperature" not in raw


def _downgrade(engine: str, db_conn: Callable[[], Any]) -> None:
    """Make the store what a sessctl from before integrity digests left: schema version
    2 (no digests, chains, sealed settings, search index or workflow columns), settings
    back in plaintext `options`, the v1 key check."""
    from sessctl import config, crypto
    from sessctl.service import App
    from sessctl.store import _SESSION_COLS

    app = App(config=config.load())
    store = app.store(create=False)
    cipher = store.cipher()
    sessions = [store._session(r) for r in store.conn.execute(f"SELECT {_SESSION_COLS} FROM sessions").fetchall()]
    ring = store.keyring()
    app.close()
    c = db_conn()
    for s in sessions:
        legacy = json.dumps(store._settings(s), sort_keys=True) if store._settings(s) else None
        c.execute("UPDATE sessions SET options = ? WHERE pk = ?", (legacy, s.pk))
    c.execute("UPDATE keyring SET dek_check = ?", (crypto.key_check(cipher, ring["db_id"], version=1),))
    for statement in ("DROP TABLE IF EXISTS message_search", "DROP TABLE IF EXISTS search_backlog",
                      "DROP INDEX IF EXISTS messages_not_ok",
                      "ALTER TABLE sessions DROP COLUMN settings", "ALTER TABLE sessions DROP COLUMN digest",
                      "ALTER TABLE sessions DROP COLUMN forked_from", "ALTER TABLE sessions DROP COLUMN forked_at",
                      "ALTER TABLE messages DROP COLUMN chain", "DELETE FROM schema_migrations WHERE version >= 3"):
        c.execute(statement)
    if engine == "sqlite":
        # The status CHECK as version 2 wrote it (the workflow step rebuilds the table to widen it).
        c.execute("PRAGMA writable_schema = ON")
        c.execute("UPDATE sqlite_master SET sql = replace(sql, ?, '') WHERE name = 'messages'", (", 'superseded'",))
        c.execute("PRAGMA writable_schema = OFF")
        c.execute("PRAGMA user_version = 2")
    else:
        c.execute("ALTER TABLE messages DROP CONSTRAINT messages_status_check")
        c.execute("ALTER TABLE messages ADD CHECK (status IN ('ok', 'incomplete', 'unanswered'))")
    c.close()


def test_a_store_from_before_digests_is_sealed_by_its_first_write(run: Run, ok: Run, engine: str, db_conn) -> None:
    _conversation(ok)
    before = ok("export", "--all", "--format", "jsonl").stdout
    _downgrade(engine, db_conn)
    # Reads migrate the schema but cannot seal (that needs the key and a write): they read.
    assert ok("export", "--all", "--format", "jsonl").stdout == before
    checks = {c["name"]: c for c in ok("doctor", "--json").json()["checks"]}
    assert checks["digests"]["status"] == "warn" and "not sealed yet" in checks["digests"]["detail"]
    # The first write seals everything, settings included.
    ok("send", "-s", "bystander", "sealing now")
    checks = {c["name"]: c for c in ok("doctor", "--json").json()["checks"]}
    assert checks["digests"]["status"] == "ok"
    c = db_conn()
    assert c.execute("SELECT count(*) FROM sessions WHERE options IS NOT NULL OR digest IS NULL").fetchone()[0] == 0
    c.close()
    assert ok("show", "t", "--json").json()["options"] == {"temperature": 0.2}
    # From now on, tampering is seen.
    _tamper(db_conn, TAMPERING["roles flipped"])
    assert run("show", "t").exit_code == 6


def test_concurrent_appends_never_look_tampered(ok: Run, engine: str) -> None:
    """Readers and writers side by side (threads of one client): a read sees the header
    and the messages of one snapshot, so a check never fails on someone else's append."""
    import threading

    import sessctl

    ok("send", "-s", "busy", "start")
    errors: list[BaseException] = []
    stop = threading.Event()
    with sessctl.open() as store:
        def reader() -> None:
            try:
                while not stop.is_set():
                    store.get("busy")
                    list(store.export("busy"))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(30):
            store.send("busy", f"message {i}")
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert ok("doctor", "--json").json()["ok"] is True


@pytest.mark.sqlite_only("the database files")
def test_sqlite_files_hold_no_option_value(ok: Run, paths: Paths, engine: str) -> None:
    ok("create", "p", "-o", "stop=[\"zebrafish-quarterly\"]")
    raw = b"".join(p.read_bytes() for p in paths.db.parent.iterdir() if p.name.startswith("sessions.db"))
    assert b"zebrafish" not in raw
