"""The conversation workflow (issue 12) through the real CLI on both engines, against
the fake server speaking the real protocols: retry, fork, send -c, templates, and what
they leave in show, export, import, stats and doctor. `chat` has its own tests
(test_chat.py, on a real pseudo-terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from fakeserver import ErrorReply, FakeLLMServer, TextReply
from sendkit import APIS, chats, configure, roles

import sessctl
from conftest import Paths, Run

pytestmark = pytest.mark.engines


def _msgs(ok: Run, sid: str) -> list[tuple[str, str, str]]:
    return [(m["role"], m["content"], m["status"]) for m in ok("show", sid, "--json").json()["messages"]]


def _history(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [r for r in roles(body) if r[0] != "system"]


def _doctor_ok(run: Run) -> None:
    r = run("doctor", "--json")
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["turns"]["status"] == "ok", checks["turns"]
    assert checks["counters"]["status"] == "ok", checks["counters"]
    assert checks["decrypt"]["status"] == "ok", checks["decrypt"]


# --- retry ------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_retry_replaces_the_reply_and_never_sends_the_old_one_again(api: str, ok: Run, run: Run, paths: Paths,
                                                                    fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, api)
    fake_llm.enqueue(TextReply("Paris."), TextReply("Bad answer."), TextReply("Lyon."), TextReply("Marseille."),
                     TextReply("About 870,000."))
    ok("send", "-s", "t", "Capital of France?")
    ok("send", "-s", "t", "Second city?")
    r = ok("retry", "t")
    assert r.stdout == "Lyon.\n"
    assert r.stderr == "sessctl: message 4, the earlier reply, is kept marked superseded\n"
    retried = chats(fake_llm)[-1].json
    assert _history(retried) == [("user", "Capital of France?"), ("assistant", "Paris."), ("user", "Second city?")]
    # Twice: each retry supersedes the reply that answered until then.
    doc = ok("retry", "t", "--json").json()
    assert (doc["reply"], doc["seq"], doc["retried"], doc["superseded"], doc["status"]) == (
        "Marseille.", 6, 3, 5, "ok")
    assert _msgs(ok, "t") == [
        ("user", "Capital of France?", "ok"), ("assistant", "Paris.", "ok"),
        ("user", "Second city?", "ok"), ("assistant", "Bad answer.", "superseded"),
        ("assistant", "Lyon.", "superseded"), ("assistant", "Marseille.", "ok")]
    ok("send", "-s", "t", "Population?")
    assert _history(chats(fake_llm)[-1].json) == [
        ("user", "Capital of France?"), ("assistant", "Paris."), ("user", "Second city?"),
        ("assistant", "Marseille."), ("user", "Population?")]
    # Visible everywhere, and counted.
    assert "SUPERSEDED" in ok("show", "t").stdout
    assert "*superseded*" in ok("show", "t", "--format", "markdown").stdout
    stats = ok("stats", "--json").json()
    assert stats["messages"] == 8
    assert stats["messages_not_ok"] == {"unanswered": 0, "incomplete": 0, "superseded": 2}
    assert "superseded" in ok("stats").stdout
    _doctor_ok(run)


def test_retry_answers_an_unanswered_message(ok: Run, run: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", max_retries=0)
    ok("send", "-s", "u", "one")
    fake_llm.enqueue(TextReply(pieces=["half ", "a reply"], cut_after=1))
    assert run("send", "-s", "u", "two", "--stream").exit_code == 5
    assert _msgs(ok, "u")[2:] == [("user", "two", "unanswered"), ("assistant", "half ", "incomplete")]
    fake_llm.enqueue(TextReply("whole reply"))
    r = ok("retry", "u")
    assert (r.stdout, r.stderr) == ("whole reply\n", "")  # nothing was superseded
    assert _history(chats(fake_llm)[-1].json) == [("user", "one"), ("assistant", "echo: one"), ("user", "two")]
    assert _msgs(ok, "u") == [
        ("user", "one", "ok"), ("assistant", "echo: one", "ok"), ("user", "two", "ok"),
        ("assistant", "half ", "incomplete"), ("assistant", "whole reply", "ok")]
    _doctor_ok(run)


def test_a_failed_retry_changes_nothing_but_keeping_the_partial_reply(ok: Run, run: Run, paths: Paths,
                                                                       fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "anthropic", max_retries=0)
    ok("send", "-s", "f", "question")
    def kept() -> Any:
        # Everything but updated_at: a retry, like a send, is activity even when it fails.
        d = ok("export", "f", "--format", "jsonl").jsonl()[0]
        return {k: v for k, v in d.items() if k != "updated_at"}

    before = kept()
    fake_llm.enqueue(ErrorReply(500, "boom"))
    r = run("retry", "f")
    assert r.exit_code == 5
    assert r.stderr.endswith("HTTP 500: boom; message 1 stays as it was\n")
    assert kept() == before
    fake_llm.enqueue(TextReply(pieces=["par", "tial"], cut_after=1))
    r = run("retry", "f", "--stream")
    assert r.exit_code == 5 and r.stderr.endswith("stays as it was, and the partial reply is kept, marked incomplete\n")
    assert _msgs(ok, "f") == [("user", "question", "ok"), ("assistant", "echo: question", "ok"),
                              ("assistant", "par", "incomplete")]
    # The old reply still answers, and is what the next turn sends.
    ok("send", "-s", "f", "next")
    assert _history(chats(fake_llm)[-1].json) == [("user", "question"), ("assistant", "echo: question"),
                                                  ("user", "next")]
    _doctor_ok(run)


def test_retry_errors(ok: Run, run: Run) -> None:
    r = run("retry", "nope")
    assert (r.exit_code, r.stdout) == (3, "")
    assert r.stderr.startswith("sessctl: error: session 'nope' not found")
    ok("create", "empty")
    r = run("retry", "empty")
    assert (r.exit_code, r.stderr) == (
        2, "sessctl: error: session 'empty' has no message to retry; send one first\n")
    ok("send", "-s", "arch", "hi")
    ok("archive", "arch")
    assert run("retry", "arch").exit_code == 2
    assert ok("retry", "arch", "--unarchive").stdout == "hi\n"
    assert ok("show", "arch", "--json").json()["status"] == "active"


def test_retry_takes_model_provider_and_options(ok: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai")
    ok("send", "-s", "m", "hi")
    ok("retry", "m", "--model", "other-model", "-o", "temperature=1.5")
    sent = chats(fake_llm)[-1].json
    assert (sent["model"], sent["temperature"]) == ("other-model", 1.5)
    ok("retry", "m", "--provider", "echo")
    assert [m.get("model") for m in ok("show", "m", "--json").json()["messages"]] == [
        None, "fake-model", "other-model", "echo"]


def test_a_retry_whose_session_changed_meanwhile_stores_nothing(ok: Run, paths: Paths,
                                                               fake_llm: FakeLLMServer) -> None:
    """A send lands while the retry waits for its reply: the retry's reply would
    belong before that turn, so it is refused (exit 7), and nothing is lost."""
    configure(paths, fake_llm, "openai")
    ok("send", "-s", "c", "first")
    release = threading.Event()
    fake_llm.enqueue(TextReply(pieces=["late ", "reply"], hold=release))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-c", "from sessctl.cli import main; main()", "retry", "c", "--stream"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 20
    while len(chats(fake_llm)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    ok("send", "-s", "c", "meanwhile")
    release.set()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 7
    assert err.decode().splitlines()[-1] == (
        "sessctl: error: session 'c' changed while the retry ran (another send or retry wrote to it); "
        "the new reply was not stored: run `sessctl retry c` again")
    assert _msgs(ok, "c") == [("user", "first", "ok"), ("assistant", "echo: first", "ok"),
                              ("user", "meanwhile", "ok"), ("assistant", "echo: meanwhile", "ok")]


def test_superseded_replies_round_trip_through_export_and_import(ok: Run, run: Run, paths: Paths) -> None:
    ok("send", "-s", "r", "hi")
    ok("retry", "r")
    ok("fork", "r", "r2")
    dump = paths.root / "dump.jsonl"
    ok("export", "--all", "--format", "jsonl", "-o", str(dump))
    exported = dump.read_text()
    assert [m["status"] for m in json.loads(exported.splitlines()[0])["messages"]] == ["ok", "superseded", "ok"]
    assert json.loads(exported.splitlines()[1])["forked_from"] == {"id": "r", "seq": 3}
    ok("delete", "--all", "--yes")
    ok("import", str(dump))
    assert ok("export", "--all", "--format", "jsonl").stdout == exported
    bad = paths.root / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "forked_from": {"id": "bad id", "seq": 1}}) + "\n")
    r = run("import", str(bad))
    assert r.exit_code == 2 and "forked_from.id" in r.stderr


# --- fork -------------------------------------------------------------------------------


def _conversation(ok: Run, sid: str, turns: int) -> None:
    for i in range(1, turns + 1):
        ok("send", "-s", sid, f"q{i}")


def test_fork_copies_header_and_messages_resealed_with_the_origin_recorded(ok: Run, run: Run,
                                                                          db_conn: Any) -> None:
    ok("create", "orig", "--user", "alice", "--title", "Refunds", "--system", "Be terse.", "--meta", "plan=pro",
       "-o", "temperature=0.2", "--max-context-messages", "8", "--ttl", "30d")
    _conversation(ok, "orig", 3)
    r = ok("fork", "orig", "copy")
    assert (r.stdout, r.stderr) == ("copy\n", "sessctl: forked 'orig' into 'copy': 6 messages copied\n")
    o, c = ok("show", "orig", "--json").json(), ok("show", "copy", "--json").json()
    for key in ("user", "title", "system", "metadata", "options", "context", "provider", "model", "expires_at",
                "stats", "messages"):
        assert c[key] == o[key], key
    assert c["forked_from"] == {"id": "orig", "seq": 6} and "forked_from" not in o
    assert c["created_at"] >= o["created_at"]
    assert "Forked:   from orig at #6" in ok("show", "copy").stdout
    listed = {s["id"]: s for s in ok("list", "--json").json()}
    assert listed["copy"]["forked_from"] == {"id": "orig", "seq": 6}
    assert [s["id"] for s in ok("list", "--meta", "plan=pro", "--json").json()] == ["copy", "orig"]
    # Re-sealed: no ciphertext is shared, and a copied value moved back into the origin
    # does not open there (its associated data names the fork).
    conn = db_conn()
    body = ("SELECT b.id, b.content FROM message_bodies b JOIN messages m ON m.id = b.id "
            "JOIN sessions s ON s.pk = m.session_pk WHERE s.id = ? AND m.seq = 1")
    (oid, oblob), (_, cblob) = conn.execute(body, ("orig",)).fetchone(), conn.execute(body, ("copy",)).fetchone()
    assert bytes(oblob) != bytes(cblob)
    conn.execute("UPDATE message_bodies SET content = ? WHERE id = ?", (cblob, oid))
    conn.close()
    r = run("show", "orig")
    assert r.exit_code == 6 and "cannot decrypt messages.content of session 'orig' message 1" in r.stderr


def test_fork_at_a_turn_or_a_question(ok: Run, run: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai")
    _conversation(ok, "o", 3)
    ok("retry", "o")  # turn 3 is now messages 5-7, 6 superseded
    ok("fork", "o", "upto2", "--at", "4")
    assert _msgs(ok, "upto2") == _msgs(ok, "o")[:4]
    ok("fork", "o", "none", "--at", "0")
    assert _msgs(ok, "none") == []
    assert ok("show", "none", "--json").json()["forked_from"] == {"id": "o", "seq": 0}
    # At a question: copied unanswered, without its replies, and retry asks it there.
    r = ok("fork", "o", "ask", "--at", "5")
    assert "its last message is a question left unanswered" in r.stderr
    assert _msgs(ok, "ask")[-1] == ("user", "q3", "unanswered")
    fake_llm.enqueue(TextReply("another view"))
    ok("retry", "ask")
    assert _history(chats(fake_llm)[-1].json) == [("user", "q1"), ("assistant", "echo: q1"), ("user", "q2"),
                                                  ("assistant", "echo: q2"), ("user", "q3")]
    assert _msgs(ok, "ask")[-2:] == [("user", "q3", "ok"), ("assistant", "another view", "ok")]
    # Between the replies of one turn: refused, naming the cuts that work.
    r = run("fork", "o", "mid", "--at", "6")
    assert (r.exit_code, r.stderr) == (2, "sessctl: error: --at 6 falls inside the turn of messages 5-7; "
                                          "fork --at 7 (the whole turn) or --at 5 (its question, to ask again)\n")
    r = run("fork", "o", "far", "--at", "8")
    assert r.exit_code == 2 and "--at must be from 0 to 7" in r.stderr
    assert run("show", "mid").exit_code == 3 and run("show", "far").exit_code == 3
    _doctor_ok(run)


def test_fork_exit_codes(ok: Run, run: Run) -> None:
    ok("send", "-s", "a", "hi")
    ok("create", "taken")
    r = run("fork", "ghost", "new")
    assert (r.exit_code, r.stdout) == (3, "")
    assert run("show", "new").exit_code == 3
    r = run("fork", "a", "taken")
    assert (r.exit_code, r.stderr) == (4, "sessctl: error: session 'taken' already exists; fork into a new id\n")
    assert ok("show", "taken", "--json").json()["stats"]["messages"] == 0  # untouched
    assert run("fork", "a", "bad id").exit_code == 2
    assert run("fork", "a", "a").exit_code == 2


def test_fork_reads_only_what_it_copies_in_batches(ok: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork opens exactly the values it copies (3 header fields + SEQ messages), fetched
    a batch at a time."""
    from sessctl.store import Store, workflow

    ok("create", "long", "--title", "t", "--system", "s", "--meta", "k=v")
    with sessctl.open() as store:
        for i in range(12):
            store.send("long", f"m{i}")
    opened: list[tuple[str, int]] = []
    real = Store._open_text

    def counting(self: Store, blob: Any, table: str, field: str, sid: str, pk: int, row: int) -> Any:
        opened.append((field, row))
        return real(self, blob, table, field, sid, pk, row)

    monkeypatch.setattr(Store, "_open_text", counting)
    monkeypatch.setattr(workflow, "FORK_BATCH", 4)
    ok("fork", "long", "half", "--at", "10")
    monkeypatch.setattr(Store, "_open_text", real)
    # Messages 1..10 once each, in order; never 11 or 12. Header fields: the origin's
    # (to copy them) and the new session's (returned), three each.
    assert [f for f in opened if f[0] == "content"] == [("content", i) for i in range(1, 11)]
    assert sorted(f[0] for f in opened if f[0] != "content") == ["metadata"] * 2 + ["system"] * 2 + ["title"] * 2
    assert [m["content"] for m in ok("show", "half", "--json").json()["messages"]] == [
        f"m{i // 2}" for i in range(10)]


def test_library_retry_fork_latest_templates(paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai", extra='[templates.terse]\nsystem = "Be terse."\n')
    fake_llm.enqueue(TextReply("first"), TextReply("second"))
    with sessctl.open() as store:
        store.send("lib", "q", user="zoe", template="terse")
        r = store.retry("lib")
        assert (r.content, r.seq, r.status) == ("second", 3, "ok")
        assert [m.status for m in store.messages("lib")] == ["ok", "superseded", "ok"]
        f = store.fork("lib", "lib-2", at=1)
        assert (f.forked_from, f.forked_at, f.user, f.system) == ("lib", 1, "zoe", "Be terse.")
        assert store.latest().id == "lib-2"
        with pytest.raises(sessctl.NotFoundError):
            store.latest(user="nobody")
        assert store.send(None, "more", continue_=True).session == "lib-2"
        with pytest.raises(sessctl.UsageError):
            store.send("lib", "x", continue_=True)
        assert [t["name"] for t in store.templates()] == ["terse"]

    async def main() -> tuple[str, str]:
        async with sessctl.open_async() as a:
            r = await a.retry("lib-2")
            f = await a.fork("lib-2", "lib-3")
            return r.status, f.forked_from or ""

    import asyncio

    assert asyncio.run(main()) == ("ok", "lib-2")


# --- send -c ----------------------------------------------------------------------------


def test_send_continue_picks_the_most_recently_active_session(ok: Run, run: Run) -> None:
    def at(minute: int) -> dict[str, str]:
        return {"SESSCTL_NOW": f"2026-12-01T10:{minute:02d}:00Z"}

    ok("send", "-s", "old", "hi", "--user", "alice", env=at(1))
    ok("send", "-s", "bob-1", "hi", "--user", "bob", env=at(2))
    ok("send", "-s", "new", "hi", "--user", "alice", env=at(3))
    assert ok("show", "old", "--json").json()["user"] == "alice"
    ok("send", "-s", "old", "again", env=at(4))  # old is now the most recently active
    r = ok("send", "-c", "continued", env=at(5))
    assert r.stdout == "continued\n"
    assert r.stderr == "sessctl: continuing session 'old' (last active 2026-12-01T10:04:00Z)\n"
    assert ok("-q", "send", "-c", "--user", "bob", "quiet").stderr == ""
    assert _msgs(ok, "bob-1")[-1][1] == "quiet"
    ok("archive", "bob-1")
    r = run("send", "-c", "--user", "bob", "x")
    assert (r.exit_code, r.stderr) == (3, "sessctl: error: no active session of user 'bob' to continue; "
                                          "name one with -s\n")
    assert run("send", "-c", "-s", "old", "x").exit_code == 2
    assert run("send", "x").exit_code == 2


# --- templates --------------------------------------------------------------------------

TEMPLATES = '''
[templates.support]
system = "You are ACME support. Never promise refunds."
model = "echo"
options = { temperature = 0.1 }
metadata = { team = "support" }
ttl = "30d"
max_context_messages = 20

[templates.bare]
'''


def test_templates_set_up_new_sessions(ok: Run, run: Run, paths: Paths, db_conn: Any, engine: str) -> None:
    paths.write_config(TEMPLATES)
    ok("create", "t1", "--template", "support", "--meta", "ticket=9", "-o", "max_tokens=5")
    s = ok("show", "t1", "--json").json()
    assert (s["system"], s["model"], s["metadata"], s["options"], s["context"]["max_messages"]) == (
        "You are ACME support. Never promise refunds.", "echo", {"team": "support", "ticket": "9"},
        {"temperature": 0.1, "max_tokens": 5}, 20)
    assert s["expires_at"] is not None
    # Arguments win over the template.
    s = ok("create", "t2", "--template", "support", "--system", "Other.", "--max-context-messages", "3").stdout
    s = ok("show", "t2", "--json").json()
    assert (s["system"], s["context"]["max_messages"]) == ("Other.", 3)
    # send --template: for the session it creates; an existing session is left as it is.
    ok("send", "-s", "t3", "--template", "support", "--user", "carol", "hello")
    s = ok("show", "t3", "--json").json()
    assert (s["system"], s["user"], s["metadata"]) == (
        "You are ACME support. Never promise refunds.", "carol", {"team": "support"})
    ok("send", "-s", "t3", "--template", "bare", "again")
    assert ok("show", "t3", "--json").json()["system"] == "You are ACME support. Never promise refunds."
    # The template's system prompt is sealed like any other.
    if engine == "sqlite":
        raw = b"".join(p.read_bytes() for p in paths.db.parent.iterdir() if p.name.startswith("sessions.db"))
        assert b"Never promise refunds" not in raw
    else:
        conn = db_conn()
        assert all(b"Never promise" not in bytes(r[0]) for r in conn.execute("SELECT system FROM sessions"))
        conn.close()


def test_unknown_and_invalid_templates_are_usage_errors(ok: Run, run: Run, paths: Paths) -> None:
    paths.write_config(TEMPLATES)
    for args in (["create", "x", "--template", "nope"], ["send", "-s", "x", "--template", "nope", "hi"]):
        r = run(*args)
        assert (r.exit_code, r.stderr) == (
            2, f"sessctl: error: unknown template 'nope'; templates in {paths.config}: bare, support\n")
    assert run("show", "x").exit_code == 3  # nothing was created
    ok("send", "-s", "exists", "hi")
    assert run("send", "-s", "exists", "--template", "nope", "hi").exit_code == 2
    for bad, says in ((('ttl = "soon"'), "[templates.b] ttl"),
                      ('colour = "red"', "unknown key 'colour'"),
                      ('provider = "ghost"', "provider 'ghost' is not a configured provider"),
                      ("max_context_tokens = 0", "max_context_tokens must be a whole number >= 1"),
                      ("metadata = { k = 1 }", "metadata.k must be a string")):
        paths.write_config(f"[templates.b]\n{bad}\n")
        r = run("templates", "list")
        assert r.exit_code == 2 and says in r.stderr, (bad, r.stderr)
        assert r.stderr.count("\n") == 1


def test_templates_list(ok: Run, paths: Paths) -> None:
    assert ok("templates", "list").stderr.startswith("sessctl: no templates in ")
    assert ok("templates", "list", "--json").json() == []
    paths.write_config(TEMPLATES)
    out = ok("templates", "list").stdout.splitlines()
    assert out[0].split() == ["NAME", "PROVIDER", "MODEL", "TTL", "SYSTEM"]
    assert out[2].split()[0] == "bare" and out[3].split()[:4] == ["support", "-", "echo", "30d"]
    doc = ok("templates", "list", "--json").json()
    assert doc[1] == {"name": "support", "provider": None, "model": "echo",
                      "system": "You are ACME support. Never promise refunds.", "options": {"temperature": 0.1},
                      "metadata": {"team": "support"}, "ttl": "30d",
                      "context": {"max_messages": 20, "max_tokens": None}}


# --- migration --------------------------------------------------------------------------


@pytest.mark.sqlite_only("the table rebuild is SQLite's")
def test_step_5_rebuilds_messages_keeping_rows_and_what_other_steps_add(ok: Run, run: Run, paths: Paths,
                                                                        engine: str) -> None:
    """A populated version-2 file (as sessctl wrote before integrity digests, search and
    the workflow), with extra objects on `messages` such as another step might add (an
    index, a trigger, a table whose rows cascade from messages), is migrated to the
    latest: every row and ciphertext kept, those objects kept and working, `superseded`
    allowed, anything else still refused."""
    import sqlite3

    from sessctl.store import sqlite_schema

    ok("create", "a", "--title", "T", "--meta", "k=v")
    ok("send", "-s", "a", "hi")
    ok("send", "-s", "a", "again")
    old = paths.root / "v2.db"
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    for _, step in sqlite_schema.MIGRATIONS[:2]:
        step(conn)
    conn.execute(sqlite_schema._RECORD_TABLE)
    conn.executemany("INSERT INTO schema_migrations VALUES (?, ?, 0)", [(1, "initial"), (2, "scale indexes")])
    conn.execute("PRAGMA user_version = 2")
    conn.execute("ATTACH ? AS cur", (str(paths.db),))
    cols = ('pk, id, "user", provider, model, status, created_at, updated_at, archived_at, expires_at, title, '
            "system, metadata, options, message_count, tokens_in, tokens_out, redactions, redaction_rules")
    message_cols = ("id, session_pk, seq, role, status, created_at, provider, model, tokens_in, tokens_out, "
                    "tokens_estimated, latency_ms, first_token_ms, redactions, redaction_count")
    for table, what in (("keyring", "*"), ("sessions", cols), ("messages", message_cols), ("message_bodies", "*"),
                        ("session_meta_index", "*")):
        conn.execute(f"INSERT INTO main.{table} SELECT {what} FROM cur.{table}")
    conn.execute("DETACH cur")
    # A version-2 file's key check is v1: its sessions carry no integrity digests yet.
    from sessctl import config, crypto
    from sessctl.service import App

    app = App(config=config.load())
    store = app.store(create=False)
    v1 = crypto.key_check(store.cipher(), store.keyring()["db_id"], version=1)
    settings = {r[0]: r[1] for r in store.conn.execute("SELECT pk, settings FROM sessions")}
    legacy = {pk: json.dumps(store._settings(store.get_session(sid)), sort_keys=True) or None
              for pk, sid in store.conn.execute("SELECT pk, id FROM sessions").fetchall() if settings.get(pk)}
    app.close()
    conn.execute("UPDATE keyring SET dek_check = ?", (v1,))
    for pk, options in legacy.items():
        conn.execute("UPDATE sessions SET options = ? WHERE pk = ?", (options, pk))
    conn.execute("CREATE TABLE terms (tag BLOB, message_id INTEGER REFERENCES messages (id) ON DELETE CASCADE)")
    conn.execute("INSERT INTO terms SELECT x'00', id FROM messages")
    conn.execute("CREATE INDEX messages_by_role ON messages (role)")
    conn.execute("CREATE TABLE deleted_log (n INTEGER)")
    conn.execute("CREATE TRIGGER messages_gone AFTER DELETE ON messages BEGIN INSERT INTO deleted_log VALUES (1); END")
    conn.execute("CREATE VIEW replies AS SELECT id FROM messages WHERE role = 'assistant'")
    conn.close()

    before = ok("show", "a", "--json").json()
    assert ok("--db", str(old), "show", "a", "--json").json() == before  # migrated, then read
    conn = sqlite3.connect(old, isolation_level=None)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.LATEST
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT count(*) FROM terms").fetchone()[0] == 4  # nothing cascaded
    assert conn.execute("SELECT count(*) FROM replies").fetchone()[0] == 2  # the view still reads it
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'messages'")}
    assert {"messages_by_role", "messages_gone", "messages_latency", "messages_created", "messages_not_ok"} <= names
    conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE messages SET status = 'bogus' WHERE seq = 2")
    conn.close()
    ok("--db", str(old), "retry", "a")
    assert [m["status"] for m in ok("--db", str(old), "show", "a", "--json").json()["messages"]] == [
        "ok", "ok", "ok", "superseded", "ok"]
    ok("--db", str(old), "delete", "a")
    conn = sqlite3.connect(old, isolation_level=None)
    assert conn.execute("SELECT count(*) FROM terms").fetchone()[0] == 0  # its foreign key still cascades
    assert conn.execute("SELECT count(*) FROM deleted_log").fetchone()[0] == 5  # the trigger still fires
    conn.close()


def test_doctor_checks_retried_turns_turn_by_turn(ok: Run, run: Run, db_conn: Any) -> None:
    """What a retry leaves is whole; two answers to one question, a superseded reply to
    an unanswered one, or a superseded question are not."""
    for sid in ("a", "b", "c", "d"):
        ok("send", "-s", sid, "q")
        ok("retry", sid)  # q ok, 2 superseded, 3 ok
    _doctor_ok(run)
    conn = db_conn()
    for sid, seq, status in (("a", 2, "ok"), ("b", 1, "unanswered"), ("c", 1, "superseded"), ("d", 3, "unanswered")):
        conn.execute("UPDATE messages SET status = ? WHERE seq = ? AND session_pk = "
                     "(SELECT pk FROM sessions WHERE id = ?)", (status, seq, sid))
    conn.close()
    r = run("doctor", "--json")
    assert r.exit_code == 7
    turns = {c["name"]: c for c in r.json()["checks"]}["turns"]
    assert turns["status"] == "fail"
    assert turns["problems"] == [
        # All ok again, so checked as plain alternation: the reply after a reply.
        "session 'a' message 3: assistant (ok) is not part of a whole turn",
        "session 'b' message 1: user (unanswered) is not part of a whole turn",
        "session 'b' message 2: assistant (superseded) is not part of a whole turn",
        "session 'b' message 3: assistant (ok) is not part of a whole turn",
        "session 'c' message 1: user (superseded) is not part of a whole turn",
        "session 'c' message 2: assistant (superseded) is not part of a whole turn",
        "session 'c' message 3: assistant (ok) is not part of a whole turn",
        "session 'd' message 1: user (ok) is not part of a whole turn",
        "session 'd' message 2: assistant (superseded) is not part of a whole turn",
        "session 'd' message 3: assistant (unanswered) is not part of a whole turn"]
