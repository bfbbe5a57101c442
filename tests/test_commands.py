"""The seven core commands through the real CLI on a real database file."""

from __future__ import annotations

import csv
import json
import io

import pytest

from conftest import Paths, Run, mode
from dbkit import StoredDb

pytestmark = pytest.mark.engines

T0 = "2026-11-01T10:00:00Z"
T1 = "2026-11-02T10:00:00Z"
T2 = "2026-11-20T10:00:00Z"

SESSION_KEYS = [
    "id", "user", "title", "provider", "model", "status", "created_at", "updated_at", "archived_at",
    "expires_at", "system", "metadata", "options", "context", "stats",
]
USER_MSG_KEYS = ["seq", "role", "content", "created_at", "redactions", "status"]
REPLY_MSG_KEYS = [
    "seq", "role", "content", "created_at", "model", "tokens_in", "tokens_out", "latency_ms", "redactions",
    "status", "provider", "tokens_estimated", "first_token_ms",
]


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch):
    """at(T) sets the clock for the commands that follow."""

    def set_time(when: str) -> None:
        monkeypatch.setenv("SESSCTL_NOW", when)

    return set_time


@pytest.fixture
def populated(ok: Run, at) -> None:
    """alice-1 (old, with a conversation), bob-1 (recent), alice-2 (archived)."""
    at(T0)
    ok("create", "alice-1", "--user", "alice", "--title", "Refund question", "--system", "You are terse.",
       "--meta", "plan=pro", "--meta", "device=laptop")
    ok("send", "-s", "alice-1", "hi")
    at(T1)
    ok("create", "alice-2", "--user", "alice", "--provider", "echo", "--model", "echo-large")
    ok("archive", "alice-2")
    at(T2)
    ok("create", "bob-1", "--user", "bob", "--meta", "plan=free")
    ok("send", "-s", "bob-1", "hello there")


# --- create ------------------------------------------------------------------------


def test_create_prints_id_and_stores_every_field(ok: Run, at) -> None:
    at(T0)
    r = ok("create", "user-123", "--user", "alice", "--title", "T", "--system", "Sys", "--meta", "k=v",
           "--ttl", "7d", "-o", "temperature=0.2", "--max-context-messages", "10")
    assert r.stdout == "user-123\n"
    s = ok("show", "user-123", "--json").json()
    assert s["user"] == "alice" and s["title"] == "T" and s["system"] == "Sys"
    assert s["metadata"] == {"k": "v"}
    assert s["expires_at"] == "2026-11-08T10:00:00Z"
    assert s["options"] == {"temperature": 0.2}
    assert s["context"] == {"max_messages": 10, "max_tokens": None}
    assert s["provider"] == "echo" and s["model"] == "echo"


def test_create_without_id_generates_one(ok: Run) -> None:
    first = ok("create").stdout.strip()
    second = ok("create").stdout.strip()
    assert first != second and first.startswith("s-")
    assert ok("list", "--format", "ids").stdout.split() == sorted([first, second], key=[second, first].index)


def test_create_duplicate_is_4_and_exist_ok_is_0(run: Run, ok: Run) -> None:
    ok("create", "dup", "--title", "original")
    r = run("create", "dup", "--title", "changed")
    assert r.exit_code == 4
    assert r.stderr.startswith("sessctl: error: session 'dup' already exists")
    assert len(r.stderr.strip().splitlines()) == 1
    r = ok("create", "dup", "--exist-ok", "--title", "changed")
    assert r.stdout == "dup\n"
    assert ok("show", "dup", "--json").json()["title"] == "original"


@pytest.mark.parametrize("bad", ["has space", "-leading-dash", "x" * 129, "semi;colon", "", "ünïcode"])
def test_invalid_id_is_usage_error(run: Run, bad: str) -> None:
    for args in (["create", bad], ["send", "-s", bad, "hi"], ["show", bad]):
        r = run(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert "sessctl: error:" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_create_system_file_and_bad_flags(run: Run, ok: Run, paths: Paths) -> None:
    f = paths.root / "sys.txt"
    f.write_text("Line one\nLine two\n")
    ok("create", "a", "--system-file", str(f))
    assert ok("show", "a", "--json").json()["system"] == "Line one\nLine two\n"
    assert run("create", "b", "--system", "x", "--system-file", str(f)).exit_code == 2
    assert run("create", "c", "--ttl", "soon").exit_code == 2
    assert run("create", "d", "--meta", "novalue").exit_code == 2
    assert run("create", "e", "--provider", "nope").exit_code == 2


# --- send --------------------------------------------------------------------------


def test_send_creates_with_notice_and_echoes(run: Run) -> None:
    r = run("send", "--session", "demo", "hello")
    assert r.exit_code == 0
    assert r.stdout == "hello\n"
    assert "created session 'demo'" in r.stderr and "echo" in r.stderr
    r = run("-q", "send", "-s", "demo", "again")
    assert r.stdout == "again\n" and r.stderr == ""


def test_send_reads_stdin(ok: Run) -> None:
    assert ok("send", "-s", "x", input="from stdin\n").stdout == "from stdin\n"
    assert ok("send", "-s", "x", "-", input="dash\n").stdout == "dash\n"
    msgs = ok("show", "x", "--json").json()["messages"]
    assert [m["content"] for m in msgs] == ["from stdin\n", "from stdin\n", "dash\n", "dash\n"]


def test_send_no_create_and_empty_message(run: Run) -> None:
    r = run("send", "-s", "ghost", "--no-create", "hi")
    assert r.exit_code == 3 and "not found" in r.stderr
    assert run("show", "ghost").exit_code == 3
    assert run("send", "-s", "x", "   ").exit_code == 2


def test_send_to_archived_is_refused_unless_unarchive(run: Run, ok: Run) -> None:
    ok("send", "-s", "old", "one")
    ok("archive", "old")
    r = run("send", "-s", "old", "two")
    assert r.exit_code == 2
    assert "archived" in r.stderr and "--unarchive" in r.stderr
    assert ok("show", "old", "--json").json()["stats"]["messages"] == 2
    ok("send", "-s", "old", "--unarchive", "two")
    s = ok("show", "old", "--json").json()
    assert s["status"] == "active" and s["stats"]["messages"] == 4


def test_send_json_shape(ok: Run, at) -> None:
    at(T0)
    r = ok("send", "-s", "j", "hello", "--format", "json")
    d = r.json()
    assert list(d)[:7] == ["session", "reply", "model", "tokens_in", "tokens_out", "latency_ms", "redactions"]
    assert d["session"] == "j" and d["reply"] == "hello" and d["model"] == "echo"
    assert isinstance(d["tokens_in"], int) and isinstance(d["tokens_out"], int)
    assert isinstance(d["latency_ms"], int) and d["redactions"] == {}
    assert ok("send", "-s", "j", "x", "--json").json()["session"] == "j"


def test_send_several_sessions(ok: Run) -> None:
    r = ok("send", "-s", "a", "-s", "b", "-s", "c", "same")
    assert r.stdout == "==> a <==\nsame\n\n==> b <==\nsame\n\n==> c <==\nsame\n"
    rows = ok("send", "-s", "a", "-s", "b", "again", "--format", "json").jsonl()
    assert [row["session"] for row in rows] == ["a", "b"]
    assert ok("show", "b", "--json").json()["stats"]["messages"] == 4


def test_send_several_one_fails_others_stored(run: Run, ok: Run) -> None:
    ok("create", "arch")
    ok("archive", "arch")
    r = run("send", "-s", "fine", "-s", "arch", "-s", "fine2", "hi", "--format", "json")
    assert r.exit_code == 2
    rows = r.jsonl()
    assert [row["session"] for row in rows] == ["fine", "arch", "fine2"]
    assert rows[1]["reply"] is None and "archived" in rows[1]["error"]
    assert "session 'arch'" in r.stderr
    assert ok("show", "fine2", "--json").json()["stats"]["messages"] == 2


def test_send_dry_run_calls_and_stores_nothing(ok: Run, run: Run) -> None:
    ok("create", "d", "--system", "Be kind", "-o", "temperature=0.5")
    ok("send", "-s", "d", "first")
    body = ok("send", "-s", "d", "second", "--dry-run", "-o", "top_p=0.9").json()
    assert body["system"] == "Be kind"
    assert body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "second"},
    ]
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert ok("show", "d", "--json").json()["stats"]["messages"] == 2
    ok("send", "-s", "never", "x", "--dry-run")
    assert run("show", "never").exit_code == 3


def test_context_limits_drop_oldest_turns_keep_system(ok: Run) -> None:
    ok("create", "c", "--system", "SYS", "--max-context-messages", "3")
    for word in ("one", "two", "three"):
        ok("send", "-s", "c", word)
    body = ok("send", "-s", "c", "four", "--dry-run").json()
    assert body["system"] == "SYS"
    assert [m["content"] for m in body["messages"]] == ["three", "three", "four"]
    ok("create", "t", "--max-context-tokens", "12")
    ok("send", "-s", "t", "a" * 20)
    ok("send", "-s", "t", "b" * 8)
    body = ok("send", "-s", "t", "c" * 4, "--dry-run").json()
    assert [m["content"][0] for m in body["messages"]] == ["c"]


# --- list --------------------------------------------------------------------------


def test_list_table_exact(ok: Run, populated) -> None:
    assert ok("list").stdout == (
        "ID       USER    PROVIDER    MODEL    MSGS    LAST ACTIVITY         TITLE\n"
        "-------  ------  ----------  -------  ------  --------------------  ---------------\n"
        "bob-1    bob     echo        echo     2       2026-11-20T10:00:00Z  -\n"
        "alice-1  alice   echo        echo     2       2026-11-01T10:00:00Z  Refund question\n"
    )


def test_list_formats(ok: Run, populated) -> None:
    assert ok("list", "--format", "ids", "--status", "all").stdout == "bob-1\nalice-2\nalice-1\n"
    rows = ok("list", "--format", "json").json()
    assert [r["id"] for r in rows] == ["bob-1", "alice-1"]
    for r in rows:
        assert list(r) == SESSION_KEYS and "messages" not in r
    assert ok("list", "--format", "jsonl").jsonl() == rows
    assert ok("list", "--json").json() == rows
    table = list(csv.DictReader(io.StringIO(ok("list", "--format", "csv").stdout)))
    assert [r["id"] for r in table] == ["bob-1", "alice-1"]
    assert table[1]["title"] == "Refund question" and table[1]["messages"] == "2"
    assert table[0]["archived_at"] == ""


def test_list_json_object_field_by_field(ok: Run, populated) -> None:
    row = ok("list", "--json", "--user", "alice").json()[0]
    assert row == {
        "id": "alice-1", "user": "alice", "title": "Refund question", "provider": "echo", "model": "echo",
        "status": "active", "created_at": T0, "updated_at": T0, "archived_at": None, "expires_at": None,
        "system": "You are terse.", "metadata": {"device": "laptop", "plan": "pro"}, "options": {},
        "context": {"max_messages": None, "max_tokens": None},
        "stats": {"messages": 2, "tokens_in": row["stats"]["tokens_in"], "tokens_out": 1, "redactions": 0},
    }
    assert row["stats"]["tokens_in"] > 0


def test_list_filters(ok: Run, populated, at) -> None:
    def ids(*args: str) -> list[str]:
        return ok("list", "--format", "ids", *args).stdout.split()

    assert ids("--user", "alice") == ["alice-1"]
    assert ids("--user", "alice", "--status", "all") == ["alice-2", "alice-1"]
    assert ids("--status", "archived") == ["alice-2"]
    assert ids("--model", "echo-large", "--status", "all") == ["alice-2"]
    assert ids("--provider", "echo") == ["bob-1", "alice-1"]
    assert ids("--meta", "plan=pro") == ["alice-1"]
    assert ids("--meta", "plan=pro", "--meta", "device=laptop") == ["alice-1"]
    assert ids("--meta", "plan=pro", "--meta", "device=desk") == []
    assert ids("--meta", "plan=free") == ["bob-1"]
    at("2026-11-21T10:00:00Z")
    assert ids("--older-than", "10d", "--status", "all") == ["alice-2", "alice-1"]
    assert ids("--older-than", "2w") == ["alice-1"]
    assert ids("--since", "2d") == ["bob-1"]
    assert ids("--before", "2026-11-02") == ["alice-1"]
    assert ids("-n", "1") == ["bob-1"]
    assert ids("-n", "0", "--status", "all") == ["bob-1", "alice-2", "alice-1"]


def test_list_bad_filters_are_usage_errors(run: Run) -> None:
    for args in (["--older-than", "yesterday"], ["--since", "not-a-date"], ["--status", "gone"],
                 ["--meta", "x"], ["-n", "-1"], ["--format", "xml"]):
        r = run("list", *args)
        assert r.exit_code == 2, args
        assert r.stderr.startswith("sessctl: error:") and len(r.stderr.strip().splitlines()) == 1


def test_read_commands_on_missing_database_create_nothing(run: Run, paths: Paths, stored: StoredDb) -> None:
    assert run("list").stdout == ""
    assert run("list", "--json").json() == []
    assert run("export", "--all").json() == []
    assert run("stats", "--json").json()["sessions"]["total"] == 0
    assert run("show", "nope").exit_code == 3
    assert not stored.exists() and not paths.key.exists()


# --- show --------------------------------------------------------------------------


def test_show_text_exact(ok: Run, populated) -> None:
    out = ok("show", "alice-1").stdout
    lines = out.splitlines()
    assert lines[:10] == [
        "Session:  alice-1",
        "Title:    Refund question",
        "User:     alice",
        "Provider: echo (echo)",
        "Status:   active",
        f"Created:  {T0}",
        f"Updated:  {T0}",
        "Metadata: device=laptop, plan=pro",
        lines[8],
        "System:",
    ]
    assert lines[8].startswith("Messages: 2 · tokens ")
    assert lines[10:] == [
        "  You are terse.",
        "",
        f"--- #1 user · {T0}",
        "hi",
        "",
        lines[15],
        "hi",
    ]
    assert lines[15].startswith("--- #2 assistant · echo · ~") and lines[15].endswith(T0)


def test_show_json_messages_field_by_field(ok: Run, populated) -> None:
    s = ok("show", "alice-1", "--format", "json").json()
    assert list(s) == SESSION_KEYS + ["messages"]
    user, reply = s["messages"]
    assert list(user) == USER_MSG_KEYS
    assert user == {"seq": 1, "role": "user", "content": "hi", "created_at": T0, "redactions": {}, "status": "ok"}
    assert list(reply) == REPLY_MSG_KEYS
    assert reply["seq"] == 2 and reply["role"] == "assistant" and reply["content"] == "hi"
    assert reply["model"] == "echo" and reply["provider"] == "echo" and reply["tokens_estimated"] is True
    assert reply["tokens_out"] == 1 and reply["tokens_in"] == s["stats"]["tokens_in"]
    assert isinstance(reply["latency_ms"], int) and reply["status"] == "ok"


def test_show_markdown_and_last(ok: Run, populated) -> None:
    md = ok("show", "alice-1", "--format", "markdown").stdout
    assert md.startswith("# Refund question\n\n- **id:** alice-1\n")
    assert "> You are terse.\n" in md and "## 1. user — " in md and "## 2. assistant — " in md
    last = ok("show", "alice-1", "--last", "1", "--json").json()["messages"]
    assert [m["seq"] for m in last] == [2]
    assert ok("show", "alice-1", "--last", "0", "--json").json()["messages"] == []


def test_show_unknown_is_3(run: Run, ok: Run) -> None:
    ok("create", "exists")
    r = run("show", "missing")
    assert r.exit_code == 3 and r.stderr == "sessctl: error: session 'missing' not found (see `sessctl list --status all`)\n"


# --- archive -----------------------------------------------------------------------


def test_archive_by_filter_dry_run_then_real_then_again(ok: Run, populated, at) -> None:
    at("2026-11-21T10:00:00Z")
    dry = ok("archive", "--older-than", "10d", "--dry-run")
    assert dry.stdout == "alice-1\n" and "would have archived 1 session" in dry.stderr
    assert ok("list", "--format", "ids").stdout.split() == ["bob-1", "alice-1"]
    assert ok("archive", "--older-than", "10d").stdout == "alice-1\n"
    assert ok("list", "--format", "ids").stdout.split() == ["bob-1"]
    again = ok("archive", "--older-than", "10d")
    assert again.stdout == "" and "archived 0 sessions" in again.stderr
    s = ok("show", "alice-1", "--json").json()
    assert s["status"] == "archived" and s["archived_at"] == "2026-11-21T10:00:00Z"
    assert ok("archive", "--unarchive", "alice-1").stdout == "alice-1\n"
    assert ok("show", "alice-1", "--json").json()["archived_at"] is None


def test_archive_errors(run: Run, ok: Run) -> None:
    ok("create", "a")
    r = run("archive", "a", "missing")
    assert r.exit_code == 3 and "'missing'" in r.stderr
    assert ok("show", "a", "--json").json()["status"] == "active"
    assert run("archive").exit_code == 2


def test_archive_user_filter(ok: Run, populated, at) -> None:
    assert ok("archive", "--user", "bob").stdout == "bob-1\n"
    assert ok("list", "--format", "ids").stdout.split() == ["alice-1"]


# --- export ------------------------------------------------------------------------


def test_export_formats(ok: Run, populated) -> None:
    everything = ok("export", "--all").json()
    assert [s["id"] for s in everything] == ["alice-1", "alice-2", "bob-1"]
    assert everything[0]["messages"][0]["content"] == "hi"
    assert all(list(s) == SESSION_KEYS + ["messages"] for s in everything)
    assert ok("export", "--all", "--format", "jsonl").jsonl() == everything
    assert ok("export", "--all", "--json").json() == everything
    assert [s["id"] for s in ok("export", "bob-1", "alice-1").json()] == ["alice-1", "bob-1"]
    assert [s["id"] for s in ok("export", "--user", "alice").json()] == ["alice-1", "alice-2"]
    assert [s["id"] for s in ok("export", "--all", "--status", "archived").json()] == ["alice-2"]
    md = ok("export", "alice-1", "bob-1", "--format", "markdown").stdout
    assert md.count("\n---\n") == 1 and "# Refund question" in md and "# bob-1" in md


def test_export_to_file_is_private(ok: Run, populated, paths: Paths) -> None:
    out = paths.root / "out.jsonl"
    r = ok("export", "--all", "--format", "jsonl", "-o", str(out))
    assert r.stdout == ""
    assert len(out.read_text().splitlines()) == 3
    assert mode(out) == 0o600


def test_export_errors(run: Run, ok: Run, populated, paths: Paths) -> None:
    assert run("export").exit_code == 2
    out = paths.root / "never.json"
    r = run("export", "alice-1", "nope", "-o", str(out))
    assert r.exit_code == 3 and not out.exists()


def test_export_empty_json_is_array(ok: Run) -> None:
    ok("create", "x")
    ok("archive", "x")
    assert ok("export", "--all", "--status", "active").stdout == "[]\n"


# --- stats -------------------------------------------------------------------------


STATS_KEYS = ["sessions", "users", "messages", "tokens", "latency_ms", "redactions", "redactions_by_rule",
              "messages_not_ok"]


def test_stats_json(ok: Run, populated) -> None:
    st = ok("stats", "--format", "json").json()
    assert list(st) == STATS_KEYS
    assert st["sessions"] == {"total": 3, "active": 2, "archived": 1}
    assert st["users"] == 2 and st["messages"] == 4
    assert set(st["tokens"]) == {"in", "out"} and st["tokens"]["out"] == 1 + 3
    assert set(st["latency_ms"]) == {"avg", "p50", "p95"}
    assert st["redactions"] == 0
    alice = ok("stats", "--user", "alice", "--json").json()
    assert alice["sessions"] == {"total": 2, "active": 1, "archived": 1} and alice["messages"] == 2


def test_stats_by_and_window(ok: Run, populated) -> None:
    by_user = ok("stats", "--by", "user", "--json").json()
    assert by_user["by"] == "user"
    assert [g["key"] for g in by_user["groups"]] == ["alice", "bob"]
    assert by_user["groups"][0]["sessions"]["total"] == 2 and by_user["groups"][0]["messages"] == 2
    assert all(list(g) == ["key"] + STATS_KEYS for g in by_user["groups"])
    by_day = ok("stats", "--by", "day", "--json").json()["groups"]
    assert [(g["key"], g["messages"]) for g in by_day] == [("2026-11-01", 2), ("2026-11-20", 2)]
    recent = ok("stats", "--since", "2026-11-10", "--json").json()
    assert recent["messages"] == 2 and recent["sessions"]["total"] == 1
    by_model = ok("stats", "--by", "model", "--json").json()["groups"]
    assert [g["key"] for g in by_model] == ["echo", "echo-large"]


def test_stats_table(ok: Run, populated) -> None:
    out = ok("stats").stdout.splitlines()
    assert out[0].split() == ["METRIC", "VALUE"]
    assert out[2].split(maxsplit=1) == ["sessions", "3 (2 active, 1 archived)"]
    assert ok("stats", "--by", "provider").stdout.splitlines()[2].split()[:3] == ["echo", "3", "2"]


# --- pipes and signals -----------------------------------------------------------------


def test_closed_pipe_exits_141_quietly(ok: Run, paths: Paths, tmp_path) -> None:
    import os
    import subprocess
    import sys

    lines = [json.dumps({"id": f"p{i}", "messages": [
        {"seq": 1, "role": "user", "content": "x" * 4000, "created_at": T0, "redactions": {}}]})
        for i in range(400)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    ok("import", str(src))
    for args in (["export", "--all", "--format", "jsonl"], ["export", "--all", "--format", "json"]):
        proc = subprocess.Popen([sys.executable, "-m", "sessctl", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=os.environ.copy())
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(10)
        proc.stdout.close()  # the reader goes away, as `| head -c 10` would
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 141, err
        assert err == b""
