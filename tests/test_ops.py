"""delete, unarchive, meta, update and cleanup through the real CLI on a real database.

Time is set with SESSCTL_NOW (the documented test-only clock), never by sleeping.
"""

from __future__ import annotations

import json

import pytest

from conftest import Paths, Run, only_sqlite
from dbkit import StoredDb

pytestmark = pytest.mark.engines

T0 = "2026-01-01T00:00:00Z"


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch):
    def set_time(when: str) -> None:
        monkeypatch.setenv("SESSCTL_NOW", when)

    return set_time


def ids(ok: Run, *args: str) -> list[str]:
    return ok("list", "--format", "ids", "--status", "all", "-n", "0", *args).stdout.split()


def rows_of(db_conn, pk: int) -> dict[str, int]:
    conn = db_conn()
    try:
        return {
            "messages": conn.execute("SELECT count(*) FROM messages WHERE session_pk = ?", (pk,)).fetchone()[0],
            "bodies": conn.execute(
                "SELECT count(*) FROM message_bodies WHERE id NOT IN (SELECT id FROM messages)").fetchone()[0],
            "meta_index": conn.execute(
                "SELECT count(*) FROM session_meta_index WHERE session_pk = ?", (pk,)).fetchone()[0],
        }
    finally:
        conn.close()


def pk_of(db_conn, sid: str) -> int:
    conn = db_conn()
    try:
        return conn.execute("SELECT pk FROM sessions WHERE id = ?", (sid,)).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def three(ok: Run, at) -> None:
    """old-a (alice, 2026-01-01, with messages and metadata), old-b (bob, archived), new-c (alice, 2026-03-01)."""
    at(T0)
    ok("create", "old-a", "--user", "alice", "--meta", "plan=pro", "--title", "A")
    ok("send", "-s", "old-a", "first words")
    ok("create", "old-b", "--user", "bob", "--meta", "plan=pro")
    ok("archive", "old-b")
    at("2026-03-01T00:00:00Z")
    ok("create", "new-c", "--user", "alice")
    ok("send", "-s", "new-c", "recent words")


# --- delete --------------------------------------------------------------------------------


def test_delete_by_id_removes_messages_bodies_and_meta_index(ok: Run, three, db_conn) -> None:
    pk = pk_of(db_conn, "old-a")
    assert rows_of(db_conn, pk)["messages"] == 2 and rows_of(db_conn, pk)["meta_index"] == 1
    r = ok("delete", "old-a")
    assert r.stdout == "old-a\n"
    assert "deleted 1 session (2 messages)" in r.stderr
    assert rows_of(db_conn, pk) == {"messages": 0, "bodies": 0, "meta_index": 0}
    assert ids(ok) == ["new-c", "old-b"]
    assert ok("list", "--meta", "plan=pro", "--status", "all", "--format", "ids").stdout == "old-b\n"


def test_delete_unknown_id_is_3_and_deletes_nothing(run: Run, ok: Run, three) -> None:
    r = run("delete", "old-a", "ghost", "new-c")
    assert r.exit_code == 3
    assert r.stderr == "sessctl: error: session 'ghost' not found; nothing was deleted\n"
    assert ids(ok) == ["new-c", "old-b", "old-a"]
    assert run("delete", "bad id").exit_code == 2


def test_bulk_delete_refused_without_yes_when_stdin_is_not_a_terminal(run: Run, ok: Run, three) -> None:
    r = run("delete", "--user", "alice")
    assert r.exit_code == 2
    assert r.stderr.startswith("sessctl: error: refusing a bulk delete without --yes (stdin is not a terminal)")
    assert len(r.stderr.splitlines()) == 1
    assert ids(ok) == ["new-c", "old-b", "old-a"]
    assert run("delete").exit_code == 2  # no ids and no filter: never "everything" by accident
    assert run("delete", "--yes").exit_code == 2


def test_bulk_delete_dry_run_then_yes(ok: Run, three, at) -> None:
    at("2026-03-02T00:00:00Z")
    dry = ok("delete", "--older-than", "30d", "--dry-run")
    assert dry.stdout == "old-a\nold-b\n" and "would have deleted 2 sessions" in dry.stderr
    assert ids(ok) == ["new-c", "old-b", "old-a"]
    r = ok("delete", "--older-than", "30d", "--yes")
    assert r.stdout == "old-a\nold-b\n" and "deleted 2 sessions (2 messages)" in r.stderr
    assert ids(ok) == ["new-c"]
    again = ok("delete", "--older-than", "30d", "--yes")
    assert again.stdout == "" and "deleted 0 sessions" in again.stderr


@pytest.mark.parametrize("filters", [
    ["--user", "alice"], ["--status", "archived"], ["--status", "active"], ["--meta", "plan=pro"],
    ["--older-than", "30d"], ["--since", "2026-02-01"], ["--before", "2026-02-01"], ["--provider", "echo"],
    ["--model", "echo", "--user", "bob"], ["--all"],
])
def test_delete_selects_exactly_what_list_and_export_select(ok: Run, three, at, filters: list[str]) -> None:
    at("2026-03-02T00:00:00Z")
    # `list` alone defaults to active sessions; the bulk commands take every status.
    list_args = [a for a in filters if a != "--all"]
    if "--status" not in list_args:
        list_args += ["--status", "all"]
    listed = set(ok("list", "--format", "ids", "-n", "0", *list_args).stdout.split())
    exported = {s["id"] for s in ok("export", *(filters if "--all" in filters else ["--all", *filters])).json()}
    assert listed == exported
    assert set(ok("delete", "--dry-run", *filters).stdout.split()) == listed
    assert set(ok("delete", "--yes", *filters).stdout.split()) == listed
    assert not listed & set(ids(ok))


def test_delete_named_and_filter_keeps_only_matching(ok: Run, three) -> None:
    assert ok("delete", "old-a", "old-b", "--user", "bob").stdout == "old-b\n"
    assert ids(ok) == ["new-c", "old-a"]


def test_delete_vacuum_leaves_no_old_ciphertext_stored(ok: Run, stored: StoredDb, engine: str) -> None:
    ok("create", "keep")
    holder = stored.conn()  # SQLite: keeps the WAL from being folded away when each CLI process exits
    holder.execute("SELECT count(*) FROM sessions").fetchone()
    ok("create", "gone-1", "--title", "doomed title", "--meta", "k=v")
    ok("send", "-s", "gone-1", "x" * 5000)
    ok("create", "gone-2")
    ok("send", "-s", "gone-2", "y" * 5000)
    blobs = {sid: [r[0] for r in holder.execute(
        "SELECT b.content FROM message_bodies b JOIN messages m ON m.id = b.id JOIN sessions s ON s.pk = m.session_pk "
        "WHERE s.id = ? UNION ALL SELECT title FROM sessions WHERE id = ? AND title IS NOT NULL", (sid, sid))]
        for sid in ("gone-1", "gone-2")}
    assert len(blobs["gone-1"]) == 3
    # Middle slices: the ciphertext proper, not a header that might recur by chance.
    needles = {sid: [b[len(b) // 2: len(b) // 2 + 24] for b in bs] for sid, bs in blobs.items()}
    raw = stored.all_bytes()
    assert all(n in raw for ns in needles.values() for n in ns)

    ok("delete", "gone-2")
    if only_sqlite(engine, "a WAL keeps the pages written before a delete until the next checkpoint"):
        # Without --vacuum the WAL still holds pages written before the delete...
        assert any(n in stored.all_bytes() for n in needles["gone-2"])
    # ...with it, nothing stored holds any deleted ciphertext.
    r = ok("delete", "gone-1", "--vacuum")
    assert "old pages leave the WAL" not in r.stderr
    raw = stored.all_bytes()
    for sid in ("gone-1", "gone-2"):
        for n in needles[sid]:
            assert n not in raw, sid
    holder.close()
    assert ids(ok) == ["keep"]


def test_delete_on_missing_database(run: Run, stored: StoredDb) -> None:
    assert run("delete", "x").exit_code == 3
    r = run("delete", "--all", "--yes")
    assert r.exit_code == 0 and r.stdout == ""
    assert not stored.exists()


# --- unarchive -----------------------------------------------------------------------------


def test_unarchive_by_id_and_filter_matches_archive_unarchive(ok: Run, run: Run, three) -> None:
    ok("archive", "old-a", "new-c")
    dry = ok("unarchive", "--user", "alice", "--dry-run")
    assert dry.stdout == "old-a\nnew-c\n" and "would have unarchived 2 sessions" in dry.stderr
    assert ok("unarchive", "old-a").stdout == "old-a\n"
    assert ok("unarchive", "old-a").stdout == ""  # already active: left alone
    assert ok("archive", "--unarchive", "--user", "alice").stdout == "new-c\n"
    assert ok("unarchive", "--status", "archived").stdout == "old-b\n"
    s = ok("show", "old-b", "--json").json()
    assert s["status"] == "active" and s["archived_at"] is None
    assert run("unarchive").exit_code == 2
    assert run("unarchive", "ghost").exit_code == 3


# --- meta ----------------------------------------------------------------------------------


def test_meta_merge_unset_and_the_blind_index(ok: Run, run: Run, three) -> None:
    before = ok("show", "old-a", "--json").json()["updated_at"]
    assert ok("meta", "old-a", "region=eu", "plan=team").stdout == ""
    assert ok("meta", "old-a").stdout == "plan=team\nregion=eu\n"
    assert ok("meta", "old-a", "--json").json() == {"plan": "team", "region": "eu"}
    assert ok("list", "--meta", "plan=team", "--format", "ids").stdout == "old-a\n"
    assert "old-a" not in ok("list", "--meta", "plan=pro", "--status", "all", "--format", "ids").stdout
    ok("meta", "old-a", "--unset", "region", "--unset", "never-there")
    assert ok("meta", "old-a", "--json").json() == {"plan": "team"}
    assert ok("list", "--meta", "region=eu", "--format", "ids").stdout == ""
    ok("meta", "old-a", "note=a=b=c", "--unset", "plan")
    assert ok("meta", "old-a").stdout == "note=a=b=c\n"
    # Labels are not activity: retention clocks keep running.
    assert ok("show", "old-a", "--json").json()["updated_at"] == before
    assert run("meta", "ghost", "a=b").exit_code == 3
    assert run("meta", "old-a", "novalue").exit_code == 2
    assert run("meta", "old-a", "k=v", "--unset", "k").exit_code == 2


# --- update --------------------------------------------------------------------------------


def test_update_title_user_ttl(ok: Run, run: Run, three, at) -> None:
    at("2026-03-10T00:00:00Z")
    before = ok("show", "new-c", "--json").json()
    ok("update", "new-c", "--title", "Escalated: ünïcode", "--user", "bob", "--ttl", "7d")
    s = ok("show", "new-c", "--json").json()
    assert (s["title"], s["user"], s["expires_at"]) == ("Escalated: ünïcode", "bob", "2026-03-17T00:00:00Z")
    assert s["updated_at"] == before["updated_at"] and s["messages"] == before["messages"]
    ok("update", "new-c", "--title", "", "--user", "", "--no-ttl")
    s = ok("show", "new-c", "--json").json()
    assert (s["title"], s["user"], s["expires_at"]) == (None, None, None)
    assert ok("list", "--user", "bob", "--status", "all", "--format", "ids").stdout == "old-b\n"
    for args, code in ((["new-c"], 2), (["new-c", "--ttl", "1d", "--no-ttl"], 2), (["new-c", "--ttl", "0d"], 2),
                       (["new-c", "--ttl", "soon"], 2), (["ghost", "--title", "x"], 3), (["bad id", "--title", "x"], 2)):
        r = run("update", *args)
        assert r.exit_code == code, args
        assert r.stderr.startswith("sessctl: error: ") and len(r.stderr.splitlines()) == 1


# --- cleanup -------------------------------------------------------------------------------

RETENTION = '[retention]\narchive_after = "30d"\ndelete_after = "90d"\n'


@pytest.fixture
def aging(ok: Run, at, paths: Paths) -> None:
    """Sessions of various ages, and a policy: archive after 30d idle, delete after 90d."""
    paths.write_config(RETENTION)
    at(T0)
    ok("create", "ttl-short", "--ttl", "1d", "--user", "alice")
    ok("send", "-s", "ttl-short", "ephemeral")
    ok("create", "ttl-long", "--ttl", "365d")
    ok("create", "talky", "--user", "alice")
    ok("send", "-s", "talky", "one")
    ok("create", "shelved", "--user", "bob")
    ok("archive", "shelved")
    at("2026-02-05T00:00:00Z")  # T0 + 35d
    ok("create", "fresh", "--user", "bob")


def test_cleanup_applies_ttl_archive_after_delete_after_in_order(ok: Run, aging, at) -> None:
    at("2026-02-10T00:00:00Z")  # T0 + 40d: ttl-short expired; talky, ttl-long idle > 30d
    r = ok("cleanup", "--format", "json")
    report = r.json()
    assert report == {
        "now": "2026-02-10T00:00:00Z", "dry_run": False,
        "policy": {"ttl": "delete", "delete_after": "90d", "archive_after": "30d"},
        "expired": {"sessions": 1, "messages": 2, "ids": ["ttl-short"]},
        "deleted": {"sessions": 0, "messages": 0, "ids": []},
        "archived": {"sessions": 2, "messages": 2, "ids": ["ttl-long", "talky"]},
        "vacuumed": False,
    }
    assert len(r.stdout.splitlines()) == 1  # one line per run in a log
    assert ids(ok, "--status", "archived") == ["shelved", "talky", "ttl-long"]
    assert ok("show", "talky", "--json").json()["archived_at"] == "2026-02-10T00:00:00Z"

    # Idempotent: the second run finds nothing and still exits 0.
    again = ok("cleanup", "--json").json()
    assert [again[k]["sessions"] for k in ("expired", "deleted", "archived")] == [0, 0, 0]

    at("2026-04-15T00:00:00Z")  # T0 + 104d: everything from T0 is past delete_after
    report = ok("cleanup", "--json").json()
    assert report["deleted"]["ids"] == ["ttl-long", "talky", "shelved"] and report["deleted"]["messages"] == 2
    assert report["archived"]["ids"] == ["fresh"] and report["expired"]["ids"] == []
    assert ids(ok) == ["fresh"]


def test_cleanup_table_and_dry_run(ok: Run, aging, at) -> None:
    at("2026-02-10T00:00:00Z")
    dry = ok("cleanup", "--dry-run")
    assert dry.stdout == (
        "ACTION    SESSIONS    MESSAGES    RULE\n"
        "--------  ----------  ----------  ------------------------\n"
        "expired   1           2           TTL passed (expires_at)\n"
        "deleted   0           0           idle 90d (delete_after)\n"
        "archived  2           2           idle 30d (archive_after)\n"
    )
    assert "dry run: nothing was changed" in dry.stderr
    assert ids(ok, "--status", "archived") == ["shelved"]
    assert len(ids(ok)) == 5
    real = ok("cleanup")
    assert real.stdout == dry.stdout and real.stderr == ""


def test_cleanup_dry_run_does_not_count_a_session_twice(ok: Run, aging, at) -> None:
    at("2026-04-15T00:00:00Z")
    dry = ok("cleanup", "--dry-run", "--json").json()
    real = ok("cleanup", "--json").json()
    for key in ("expired", "deleted", "archived"):
        assert dry[key] == real[key], key
    assert "talky" in real["deleted"]["ids"] and "talky" not in real["archived"]["ids"]


def test_cleanup_flags_override_config(ok: Run, aging, at) -> None:
    at("2026-02-10T00:00:00Z")
    r = ok("cleanup", "--archive-after", "off", "--delete-after", "36d", "--json").json()
    assert r["policy"] == {"ttl": "delete", "delete_after": "36d", "archive_after": None}
    assert r["deleted"]["ids"] == ["ttl-long", "talky", "shelved"] and r["archived"]["ids"] == []
    table = ok("cleanup", "--archive-after", "off", "--delete-after", "off").stdout
    assert "archived  -           -           off (no archive_after)" in table


def test_cleanup_filters_narrow_the_policy(ok: Run, aging, at) -> None:
    at("2026-04-15T00:00:00Z")
    r = ok("cleanup", "--user", "bob", "--json").json()
    assert r["deleted"]["ids"] == ["shelved"] and r["archived"]["ids"] == ["fresh"]
    assert set(ids(ok)) == {"ttl-short", "ttl-long", "talky", "fresh"}  # alice's are untouched


def test_cleanup_nothing_to_do_and_no_database(ok: Run, stored: StoredDb) -> None:
    r = ok("cleanup", "--json").json()
    assert r["policy"] == {"ttl": "delete", "delete_after": None, "archive_after": None}
    assert not stored.exists()
    ok("create", "x")
    assert ok("cleanup", "--json").json()["expired"]["sessions"] == 0


@pytest.mark.parametrize("config,flag,message", [
    ('[retention]\nkeep_for = "3d"\n', [], "unknown key(s) keep_for in [retention]"),
    ('[retention]\narchive_after = "soon"\n', [], "[retention] archive_after"),
    ('[retention]\ndelete_after = 30\n', [], "must be a duration"),
    ("", ["--archive-after", "0d"], "--archive-after must be longer than 0"),
    ("", ["--delete-after", "tomorrow"], "invalid --delete-after"),
])
def test_cleanup_bad_policy_is_a_usage_error(run: Run, paths: Paths, config: str, flag: list[str],
                                             message: str) -> None:
    paths.write_config(config)
    r = run("cleanup", *flag)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and r.stderr.startswith("sessctl: error:") and len(r.stderr.splitlines()) == 1


def test_cleanup_spares_a_session_a_send_touched(ok: Run, aging, at) -> None:
    at("2026-04-15T00:00:00Z")
    assert "talky" in ok("cleanup", "--dry-run", "--json").json()["deleted"]["ids"]
    ok("send", "-s", "talky", "I am back")
    r = ok("cleanup", "--json").json()
    assert "talky" not in r["deleted"]["ids"] + r["archived"]["ids"]
    assert ok("show", "talky", "--json").json()["stats"]["messages"] == 4


def test_cleanup_vacuum(ok: Run, aging, at) -> None:
    at("2026-02-10T00:00:00Z")
    assert ok("cleanup", "--vacuum", "--json").json()["vacuumed"] is True
    assert ok("cleanup", "--vacuum", "--json").json()["vacuumed"] is False  # nothing deleted: nothing to do


def test_delete_and_ttl_rows_gone_from_every_table(ok: Run, aging, at, db_conn) -> None:
    pk = pk_of(db_conn, "ttl-short")
    at("2026-02-10T00:00:00Z")
    ok("cleanup")
    assert rows_of(db_conn, pk) == {"messages": 0, "bodies": 0, "meta_index": 0}
    conn = db_conn()
    assert conn.execute("SELECT count(*) FROM sessions WHERE id = 'ttl-short'").fetchone()[0] == 0
    conn.close()


def test_cleanup_json_is_valid_for_log_lines(ok: Run, aging, at) -> None:
    at("2026-02-10T00:00:00Z")
    line = ok("-q", "cleanup", "--format", "json").stdout
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line)["now"] == "2026-02-10T00:00:00Z"


def test_integrity_after_operations(ok: Run, aging, at, stored: StoredDb) -> None:
    at("2026-04-15T00:00:00Z")
    ok("cleanup", "--vacuum")
    stored.assert_sound(context="after cleanup --vacuum")
    ok("delete", "--all", "--yes")
    stored.assert_sound(context="after delete --all")
    assert stored.query("SELECT count(*) FROM sessions") == [(0,)]
    assert stored.query("SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM message_bodies) + "
                        "(SELECT count(*) FROM session_meta_index)") == [(0,)]
