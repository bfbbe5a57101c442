"""`sessctl search` and Client.search: what matches, in which order, what is printed, and
that the blind index keeps up with every write path, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

import sessctl
from conftest import Paths, Run, only_sqlite

pytestmark = pytest.mark.engines

NOW = "2026-12-01T12:00:00Z"


def _import(ok: Run, sessions: list[dict[str, Any]], *extra: str) -> None:
    ok("import", "-", *extra, input="\n".join(json.dumps(s) for s in sessions))


def _session(sid: str, *texts: str, user: str = "alice", day: int = 1, status: str = "active",
             meta: dict[str, str] | None = None) -> dict[str, Any]:
    """A session whose messages alternate user/assistant, one minute apart on Nov `day`."""
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t,
             "created_at": f"2026-11-{day:02d}T10:{i:02d}:00Z"} for i, t in enumerate(texts)]
    return {"id": sid, "user": user, "status": status, "metadata": meta or {},
            "created_at": f"2026-11-{day:02d}T10:00:00Z", "updated_at": f"2026-11-{day:02d}T10:59:00Z",
            "messages": msgs}


def _hits(ok: Run, *args: str) -> list[tuple[str, int]]:
    return [(h["session"], h["seq"]) for h in ok("search", *args, "--format", "jsonl").jsonl()]


def _count(db_conn: Any, sql: str, params: tuple[Any, ...] = ()) -> int:
    c = db_conn()
    try:
        return int(c.execute(sql, params).fetchone()[0])
    finally:
        c.close()


# --- what matches ------------------------------------------------------------------------


def test_words_phrases_case_accents_and_punctuation(ok: Run) -> None:
    _import(ok, [
        _session("a", "Our refund POLICY covers digital goods.", "Refunds take 5 days"),
        _session("b", "The policy on refund requests is strict", "Café crème, s'il vous plaît"),
        _session("c", "e-mail me at the office: naïve approach", "東京タワーの高さ"),
    ])
    assert _hits(ok, "refund", "policy") == [("a", 1), ("b", 1)]  # equal scores and times: by session
    # Every word must match: "refunds" is another word than "refund".
    assert set(_hits(ok, "refunds")) == {("a", 2)}
    assert _hits(ok, "refund", "days") == []
    # A phrase is consecutive words in that order.
    assert _hits(ok, '"refund policy"') == [("a", 1)]
    assert _hits(ok, '"policy refund"') == []
    # Case and accents fold both ways.
    assert _hits(ok, "CAFE", "creme") == [("b", 2)]
    assert _hits(ok, "naive") == [("c", 1)]
    assert _hits(ok, "PLAÎT") == [("b", 2)]
    # Punctuation separates words; a hyphenated query word is a phrase.
    assert _hits(ok, "e-mail") == [("c", 1)]
    assert _hits(ok, "mail") == [("c", 1)]
    assert _hits(ok, "email") == []
    assert _hits(ok, "office:") == [("c", 1)]
    # Scripts without spaces: characters are matched as a phrase.
    assert _hits(ok, "東京") == [("c", 2)]
    assert _hits(ok, "京東") == []


def test_stopwords_are_found_but_not_indexed(ok: Run, db_conn: Any) -> None:
    from sessctl.search_text import STOPWORDS

    _import(ok, [
        _session("a", "The refund is on its way", "What about the order?"),
        _session("b", "refund pending", "is it?"),
        _session("c", "Nothing to see", "x y z"),
    ])
    # A stopword narrows nothing in the index but is matched in the text like any word.
    assert _hits(ok, "the", "refund") == [("a", 1)]
    assert sorted(_hits(ok, "is")) == [("a", 1), ("b", 2)]
    assert _hits(ok, '"is on its way"') == [("a", 1)]
    assert _hits(ok, "THE") and _hits(ok, "x") == [("c", 2)]
    assert _hits(ok, "the", "pending") == []
    # The index holds no tag for them: a message of stopwords only has an empty row, and
    # a row has one tag (two bytes) per distinct indexed word.
    assert {"the", "is", "it", "x", "y", "z"} <= STOPWORDS and not {"refund", "nothing"} & STOPWORDS
    assert _count(db_conn, "SELECT length(tags) FROM message_search t JOIN sessions s ON s.pk = t.session_pk "
                           "WHERE s.id = 'b' AND t.seq = 2") == 0
    assert _count(db_conn, "SELECT length(tags) FROM message_search t JOIN sessions s ON s.pk = t.session_pk "
                           "WHERE s.id = 'a' AND t.seq = 1") == 2 * 2  # refund, way


def test_ranking_relevance_then_recency(ok: Run) -> None:
    _import(ok, [
        _session("old", "alpha once", "alpha alpha alpha", day=1),
        _session("new", "alpha once", day=5),
    ])
    # More occurrences score higher; equal scores go newest first.
    assert _hits(ok, "alpha") == [("old", 2), ("new", 1), ("old", 1)]
    hits = ok("search", "alpha", "--json").json()
    assert hits[0]["score"] > hits[1]["score"] == hits[2]["score"]
    assert _hits(ok, "alpha", "-n", "1") == [("old", 2)]


def test_formats_and_nothing_found(run: Run, ok: Run) -> None:
    _import(ok, [_session("s1", "the quick brown fox", "jumps over the lazy dog")])
    table = ok("search", "fox").stdout
    assert table.splitlines() == [
        "SESSION    SEQ    ROLE    TIME                  SNIPPET",
        "---------  -----  ------  --------------------  -------------------",
        "s1         1      user    2026-11-01T10:00:00Z  the quick brown fox",
    ]
    [hit] = ok("search", "fox", "--json").json()
    assert hit == {"session": "s1", "seq": 1, "role": "user", "created_at": "2026-11-01T10:00:00Z", "status": "ok",
                   "score": hit["score"], "snippet": "the quick brown fox"}
    assert isinstance(hit["score"], float) and hit["score"] > 0
    assert ok("search", "the", "--format", "ids").stdout == "s1\n"
    assert len(ok("search", "the", "--format", "jsonl").jsonl()) == 2
    for fmt in ("table", "json", "jsonl", "ids"):
        r = run("search", "zebra", "--format", fmt)
        assert (r.exit_code, r.stdout) == (0, ""), fmt
    r = run("search", "--", "-- !!")
    assert r.exit_code == 2 and "nothing to search for" in r.stderr


def test_snippet_is_around_the_match(ok: Run) -> None:
    long = " ".join(f"word{i}" for i in range(200)) + " needle in the haystack " + " ".join(
        f"tail{i}" for i in range(200))
    _import(ok, [_session("s", long)])
    [hit] = ok("search", "needle", "--json").json()
    snip = hit["snippet"]
    assert "needle in the haystack" in snip
    assert snip.startswith("…") and snip.endswith("…") and len(snip) < 200
    assert "word199" in snip and "word0 " not in snip


def test_filters_and_one_session(run: Run, ok: Run) -> None:
    _import(ok, [
        _session("a1", "shared topic", user="alice", day=1, meta={"plan": "pro"}),
        _session("b1", "shared topic", user="bob", day=22, status="archived"),
        _session("a2", "shared topic", user="alice", day=25),
    ])
    env = {"SESSCTL_NOW": NOW}
    assert {s for s, _ in _hits(ok, "shared")} == {"a1", "b1", "a2"}  # every status by default
    assert {s for s, _ in _hits(ok, "shared", "--user", "alice")} == {"a1", "a2"}
    assert {s for s, _ in _hits(ok, "shared", "--status", "archived")} == {"b1"}
    assert {s for s, _ in _hits(ok, "shared", "--meta", "plan=pro")} == {"a1"}
    since = [h["session"] for h in ok("search", "shared", "--since", "10d", "--format", "jsonl", env=env).jsonl()]
    assert sorted(since) == ["a2", "b1"]
    assert _hits(ok, "shared", "-s", "b1") == [("b1", 1)]
    r = run("search", "shared", "-s", "nope")
    assert r.exit_code == 3 and "not found" in r.stderr


def test_redacted_values_are_never_found(ok: Run) -> None:
    ok("send", "-s", "r", "mail jane.doe@example.org the key sk-proj-" + "A1b2C3d4" * 6)
    assert ok("search", "mail").stdout  # the message is indexed...
    for secret in ("jane", "doe", "example", "A1b2C3d4"):
        assert ok("search", secret).stdout == "", secret  # ...its redacted values are not


# --- every write path ----------------------------------------------------------------------


def test_send_import_delete_and_cleanup_keep_the_index(ok: Run, db_conn: Any) -> None:
    ok("send", "-s", "sent", "kumquat harvest")
    _import(ok, [_session("imported", "kumquat jam")])
    assert {s for s, _ in _hits(ok, "kumquat")} == {"sent", "imported"}
    assert _count(db_conn, "SELECT count(*) FROM message_search") == 3  # 2 sent (+ echo reply), 1 imported
    # import --on-conflict replace: the old messages' rows go, the new ones come.
    _import(ok, [_session("imported", "persimmon jam", "and more")], "--on-conflict", "replace")
    assert _hits(ok, "kumquat", "jam") == []
    assert _hits(ok, "persimmon") == [("imported", 1)]
    ok("delete", "sent", "--yes")
    assert _hits(ok, "kumquat") == []
    assert _count(db_conn, "SELECT count(*) FROM message_search") == 2
    ok("cleanup", "--delete-after", "1d", env={"SESSCTL_NOW": "2027-06-01T00:00:00Z"})
    assert _count(db_conn, "SELECT count(*) FROM message_search") == 0
    assert _hits(ok, "persimmon") == []


def test_unindex_and_cascade_for_one_message(ok: Run, db_conn: Any) -> None:
    """What fork and retry rely on: index_message/unindex_message, and the cascade when
    a message row is deleted."""
    ok("send", "-s", "x", "first quince")
    with sessctl.open() as client:
        store = client._app.store(create=False)
        pk = store.get_session("x").pk
        store.write(lambda conn: store.unindex_message(conn, pk, 1))
        assert [h.seq for h in client.search("quince")] == [2]  # the echo reply
        store.write(lambda conn: store.index_message(conn, pk, 1, "first quince"))
        assert sorted(h.seq for h in client.search("quince")) == [1, 2]
        store.write(lambda conn: conn.execute("DELETE FROM message_bodies WHERE id IN "
                                              "(SELECT id FROM messages WHERE session_pk = ? AND seq = 2)", (pk,)))
        store.write(lambda conn: conn.execute("DELETE FROM messages WHERE session_pk = ? AND seq = 2", (pk,)))
    assert _count(db_conn, "SELECT count(*) FROM message_search") == 1


def test_reencrypt_rekeys_the_index(ok: Run, db_conn: Any) -> None:
    ok("send", "-s", "k", "tamarind chutney recipe")
    before = _rows(db_conn)
    ok("key", "rotate", "--reencrypt")
    after = _rows(db_conn)
    assert set(before) == set(after) and before != after  # same messages, tags under the new key
    assert sorted(_hits(ok, "tamarind", "chutney")) == [("k", 1), ("k", 2)]
    assert {c["name"]: c["status"] for c in ok("doctor", "--json").json()["checks"]}["search index"] == "ok"


def _rows(db_conn: Any) -> dict[tuple[int, int], bytes]:
    c = db_conn()
    try:
        return {(r[0], r[1]): bytes(r[2]) for r in c.execute("SELECT session_pk, seq, tags FROM message_search")}
    finally:
        c.close()


# --- doctor ----------------------------------------------------------------------------------


def _check(run: Run, *args: str) -> tuple[int, dict[str, Any]]:
    r = run("doctor", "--json", *args)
    return r.exit_code, {c["name"]: c for c in json.loads(r.stdout)["checks"]}


def test_doctor_checks_and_rebuilds_the_index(run: Run, ok: Run, db_conn: Any) -> None:
    _import(ok, [_session("d", "one two", "three four", "five six", "seven eight")])
    code, checks = _check(run)
    assert code == 0 and checks["search index"]["status"] == "ok"
    c = db_conn()
    c.execute("DELETE FROM message_search WHERE seq = 2")
    c.close()
    code, checks = _check(run)
    assert code == 7 and checks["search index"]["status"] == "fail"
    assert checks["search index"]["problems"] == ["session 'd' message 2 is not in the search index"]
    assert _hits(ok, "three") == []  # a missing row hides the message: why doctor looks
    c = db_conn()
    c.execute("UPDATE message_search SET tags = ? WHERE seq = 3", (bytes((0x80, 0x01)),))
    c.close()
    code, checks = _check(run, "--quick", "--sample", "10")
    assert code == 7 and "1 messages are missing" in checks["search index"]["detail"]
    assert any("does not match" in p for p in checks["search index"]["problems"])
    code, checks = _check(run, "--rebuild-search-index")
    assert code == 0 and checks["search index"]["status"] == "ok"
    assert _hits(ok, "three") == [("d", 2)] and _hits(ok, "five") == [("d", 3)]
    c = db_conn()
    c.execute("UPDATE message_search SET tags = ? WHERE seq = 1", (bytes((0x80, 0x01)),))
    c.close()
    code, checks = _check(run)
    assert code == 6 and checks["search index"]["status"] == "fail"  # wrong entries: a key fault


def test_upgrade_indexes_older_messages_on_first_search(run: Run, ok: Run, db_conn: Any, engine: str) -> None:
    _import(ok, [_session("old", "ancient scroll", "a reply"), _session("older", "dusty scroll", "another")])
    # Back to schema version 4, as a database written before search existed.
    c = db_conn()
    c.execute("DROP TABLE message_search")
    c.execute("DROP TABLE search_backlog")
    c.execute("DELETE FROM schema_migrations WHERE version = 5")
    if engine == "sqlite":
        c.execute("PRAGMA user_version = 4")
    c.close()
    code, checks = _check(run)
    assert checks["search index"]["status"] == "skip" and checks["schema"]["status"] == "warn"
    ok("list")  # a read migrates nothing it cannot: the backlog is recorded...
    r = ok("search", "scroll", "--format", "jsonl")
    assert {h["session"] for h in r.jsonl()} == {"old", "older"}
    assert "indexing 4 messages stored before search existed" in r.stderr
    r = ok("search", "scroll", "--format", "jsonl")
    assert r.stderr == "" and len(r.jsonl()) == 2
    code, checks = _check(run)
    assert code == 0 and checks["search index"]["status"] == "ok"


# --- nothing in plaintext ----------------------------------------------------------------------

WORDS = ["xylophonist", "quetzalcoatl", "ombudsperson", "zygomorphic", "vexillology"]


def test_no_indexed_word_or_snippet_in_the_files(ok: Run, paths: Paths, db_conn: Any, engine: str,
                                                   tmp_path: Any, stored: Any) -> None:
    ok("create", "warmup")
    holder = db_conn()  # keeps the SQLite WAL from being checkpointed away
    holder.execute("SELECT count(*) FROM sessions").fetchone()
    ok("send", "-s", "p", " ".join(WORDS) + " and more")
    _import(ok, [_session("q", "the " + WORDS[0] + " met the " + WORDS[1])])
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir(), cache.mkdir()
    env = {"TMPDIR": str(tmp), "XDG_CACHE_HOME": str(cache)}
    for word in WORDS:
        assert ok("search", word, "--json", env=env).json()
    assert list(tmp.iterdir()) == [] and list(cache.iterdir()) == []  # no temp files, no cache
    if engine == "sqlite":
        blobs = {p.name: p.read_bytes() for p in paths.db.parent.iterdir() if p.name.startswith("sessions.db")}
        assert "sessions.db-wal" in blobs and blobs["sessions.db-wal"]
    else:
        blobs = stored.bytes()  # a pg_dump of the test's schema, bytea decoded too
        assert b"message_search" in blobs["pg_dump"]
    holder.close()
    for name, data in blobs.items():
        for word in WORDS:
            for form in (word, word.upper(), word[:6]):
                assert form.encode() not in data, f"{form} in {name}"
                assert form.encode("utf-16-le") not in data, f"{form} in {name}"


# --- the library -------------------------------------------------------------------------------


def test_client_search_matches_the_cli(ok: Run) -> None:
    import asyncio

    _import(ok, [_session("api", "library search works", "the library is open")])
    cli = ok("search", "library", "--json").json()
    with sessctl.open() as store:
        hits = store.search("library")
        assert [h.to_dict() for h in hits] == cli
        assert isinstance(hits[0], sessctl.SearchHit)
        assert store.search("library", session="api", limit=1)[0].to_dict() == cli[0]
        assert store.search("missing") == []
        with pytest.raises(sessctl.NotFoundError):
            store.search("library", session="nope")
        with pytest.raises(sessctl.UsageError):
            store.search("?!")

    async def go() -> list[dict[str, Any]]:
        async with sessctl.open_async() as store:
            return [h.to_dict() for h in await store.search("library", user="alice")]

    assert asyncio.run(go()) == cli


@pytest.mark.sqlite_only("a missing file")
def test_search_on_a_missing_database_finds_nothing(run: Run, paths: Paths, engine: str) -> None:
    r = run("search", "anything")
    assert (r.exit_code, r.stdout) == (0, "") and not paths.db.exists()


@pytest.mark.sqlite_only("SQLite's schema text")
def test_sqlite_file_layout(ok: Run, paths: Paths, engine: str) -> None:
    """The index rows are clustered by message (one row per message, no rowid): the
    shape the write and delete costs in bench/README.md rely on."""
    ok("send", "-s", "a", "hi")
    with sqlite3.connect(paths.db) as c:
        sql = c.execute("SELECT sql FROM sqlite_master WHERE name = 'message_search'").fetchone()[0]
    assert "WITHOUT ROWID" in sql and "PRIMARY KEY (session_pk, seq)" in sql and "ON DELETE CASCADE" in sql


def test_sqlite_page_size(ok: Run, paths: Paths, engine: str) -> None:
    """New files get 16 KiB pages (bench/README.md, "Store size"); a file made with
    another page size keeps it and works as before."""
    if not only_sqlite(engine, "page size is an SQLite file's layout"):
        return
    ok("send", "-s", "a", "hi")
    with sqlite3.connect(paths.db) as c:
        assert c.execute("PRAGMA page_size").fetchone()[0] == 16384
        c.execute("PRAGMA journal_mode = DELETE")
        c.execute("PRAGMA page_size = 4096")
        c.execute("VACUUM")
        c.execute("PRAGMA journal_mode = WAL")
    ok("send", "-s", "a", "again")
    assert sorted(_hits(ok, "again")) == [("a", 3), ("a", 4)]
    with sqlite3.connect(paths.db) as c:
        assert c.execute("PRAGMA page_size").fetchone()[0] == 4096
