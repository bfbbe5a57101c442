"""import: exact round trips, conflicts, all-or-nothing validation, streaming."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Paths, Run, mode, only_sqlite
from dbkit import StoredDb
from sessctl.errors import UsageError
from sessctl.import_reader import CHUNK, Reader

pytestmark = pytest.mark.engines

LONG = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 6000  # ~340 kB, one message
UNICODE = ("Grüße 👋🏽 — 你好，世界 · مرحبا بالعالم · e\u0301 · \t tab · \"quotes\" \\ backslash"
           "\nsecond line\r\nthird")


def _msg(seq: int, role: str, content: str, when: str, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"seq": seq, "role": role, "content": content, "created_at": when}
    if role == "assistant":
        m.update(model=extra.pop("model", "gpt-4o-mini"), tokens_in=extra.pop("tokens_in", 10),
                 tokens_out=extra.pop("tokens_out", 20), latency_ms=extra.pop("latency_ms", 300))
    m["redactions"] = extra.pop("redactions", {})
    m["status"] = extra.pop("status", "ok")
    if role == "assistant":
        m.update(provider=extra.pop("provider", "openai"), tokens_estimated=extra.pop("tokens_estimated", False),
                 first_token_ms=extra.pop("first_token_ms", None))
    assert not extra
    return m


def _session(sid: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "id": sid, "user": "alice", "title": None, "provider": "openai", "model": "gpt-4o-mini",
        "status": "active", "created_at": "2026-01-01T10:00:00Z", "updated_at": "2026-01-01T10:05:00Z",
        "archived_at": None, "expires_at": None, "system": None, "metadata": {}, "options": {},
        "context": {"max_messages": None, "max_tokens": None},
    }
    s.update(fields)
    s["stats"] = {
        "messages": len(messages),
        "tokens_in": sum(m.get("tokens_in") or 0 for m in messages),
        "tokens_out": sum(m.get("tokens_out") or 0 for m in messages),
        "redactions": fields.pop("extra_redactions", 0) + sum(sum(m["redactions"].values()) for m in messages),
    }
    s.pop("extra_redactions", None)
    s["messages"] = messages
    return s


def tricky_sessions() -> list[dict[str, Any]]:
    """Sessions in export's exact shape: unicode, empty and very long messages, metadata,
    archived and expiring state, options and context, every message status."""
    t = "2026-01-01T10:00:0{}Z".format
    return [
        _session("unicode-1", [
            _msg(1, "user", UNICODE, t(1)),
            _msg(2, "assistant", UNICODE[::-1], t(2), tokens_estimated=True, first_token_ms=42),
        ], title="Ünïcödé 标题 🎉", system="Réponds en français.\nSois bref.",
            metadata={"clé": "välue ✓", "empty": "", "plan": "pro"}, options={"stop": ["\n"], "temperature": 0.2},
            context={"max_messages": 20, "max_tokens": 4000}),
        _session("empty-and-long", [
            _msg(1, "user", "", t(1)),
            _msg(2, "assistant", "", t(2), tokens_in=0, tokens_out=0, latency_ms=0),
            _msg(3, "user", LONG, t(3)),
            _msg(4, "assistant", LONG + "!", t(4), tokens_in=90000, tokens_out=90001, latency_ms=12345),
        ], user=None, model=None),
        _session("archived-1", [
            _msg(1, "user", "my key is [REDACTED:openai_key]", t(1), redactions={"openai_key": 1},
                 status="unanswered"),
            _msg(2, "assistant", "partial", t(2), status="incomplete", tokens_in=None, tokens_out=None,
                 latency_ms=None),
            _msg(3, "user", "are you there?", t(3), status="unanswered"),
        ], status="archived", archived_at="2026-02-01T00:00:00Z", expires_at="2027-01-01T00:00:00Z",
            provider="claude", model="claude-sonnet-4-5", title="[REDACTED:email] ticket", extra_redactions=1),
        _session("no-messages", [], created_at="2025-12-31T23:59:59Z", updated_at="2025-12-31T23:59:59Z",
                 user="bob", provider="echo", model="echo"),
    ]


def jsonl(sessions: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(s, ensure_ascii=False, separators=(",", ":")) + "\n" for s in sessions)


def test_round_trip_is_byte_identical(ok: Run, paths: Paths, stored: StoredDb) -> None:
    source = jsonl(tricky_sessions())
    src = paths.root / "in.jsonl"
    src.write_text(source, encoding="utf-8")
    r = ok("import", str(src))
    assert r.stdout == "unicode-1\nempty-and-long\narchived-1\nno-messages\n"
    assert "imported 4 sessions (9 messages)" in r.stderr
    # export sorts by creation time; the hand-written input is already in export's exact format
    first = ok("export", "--all", "--format", "jsonl").stdout
    expected = [tricky_sessions()[i] for i in (3, 0, 1, 2)]
    assert first == jsonl(expected)
    for fmt in ("jsonl", "json"):
        dump = ok("export", "--all", "--format", fmt).stdout
        other = stored.other(f"other-{fmt}").location
        ok("--db", other, "import", "-", input=dump)
        assert ok("--db", other, "export", "--all", "--format", fmt).stdout == dump, fmt
        assert ok("--db", other, "stats", "--json").json() == ok("stats", "--json").json()


def test_round_trip_of_sessions_made_by_the_cli(ok: Run, stored: StoredDb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSCTL_NOW", "2026-05-01T08:00:00Z")
    ok("create", "c-1", "--user", "alice", "--title", "T", "--system", "S", "--meta", "a=1", "--ttl", "30d",
       "-o", "temperature=0.5", "--max-context-tokens", "900")
    ok("send", "-s", "c-1", "hello 👋")
    ok("send", "-s", "c-2", "second session")
    ok("archive", "c-2")
    fresh = {}
    for fmt in ("json", "jsonl"):
        dump = ok("export", "--all", "--format", fmt).stdout
        fresh[fmt] = stored.other(f"fresh-{fmt}").location
        ok("--db", fresh[fmt], "import", "-", input=dump)
        assert ok("--db", fresh[fmt], "export", "--all", "--format", fmt).stdout == dump
    assert ok("--db", fresh["json"], "list", "--meta", "a=1", "--format", "ids").stdout == "c-1\n"


def test_imported_text_is_encrypted_and_the_new_database_private(ok: Run, paths: Paths, stored: StoredDb,
                                                                 engine: str) -> None:
    secret = "the walrus signs at midnight"
    data = jsonl([_session("enc", [_msg(1, "user", secret, "2026-01-01T00:00:00Z", status="unanswered")],
                           title="codename walrus", system="speak like a walrus",
                           metadata={"k": "tangerine-hyperdrive"})])
    ok("import", "-", input=data)
    raw = stored.all_bytes()
    assert b"gpt-4o-mini" in raw  # a plaintext column: the search sees the data
    for word in (b"walrus", b"tangerine"):
        assert word not in raw
    if only_sqlite(engine, "a local file and its mode"):
        assert mode(paths.db) == 0o600
    assert ok("show", "enc", "--json").json()["messages"][0]["content"] == secret


def test_minimal_hand_written_input_gets_create_defaults(ok: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSCTL_NOW", "2026-06-01T00:00:00Z")
    ok("import", "-", input='{"id": "bare"}\n{"id": "talk", "messages": [{"seq": 1, "role": "user", '
                            '"content": "hi", "created_at": "2026-05-01T00:00:00Z"}]}\n')
    bare = ok("show", "bare", "--json").json()
    assert (bare["provider"], bare["model"], bare["status"]) == ("echo", "echo", "active")
    assert bare["created_at"] == bare["updated_at"] == "2026-06-01T00:00:00Z"
    talk = ok("show", "talk", "--json").json()
    assert talk["created_at"] == talk["updated_at"] == "2026-05-01T00:00:00Z"
    assert talk["stats"] == {"messages": 1, "tokens_in": 0, "tokens_out": 0, "redactions": 0}


# --- conflicts -----------------------------------------------------------------------------


@pytest.fixture
def existing(ok: Run) -> str:
    ok("create", "dup", "--title", "original")
    ok("send", "-s", "dup", "kept")
    return jsonl([_session("new-1", []), _session("dup", [_msg(1, "user", "imported", "2026-01-01T00:00:00Z",
                                                                 status="unanswered")],
                                                  title="imported"), _session("new-2", [])])


def test_conflict_fail_is_4_naming_the_id_and_imports_nothing(run: Run, ok: Run, existing: str) -> None:
    r = run("import", "-", input=existing)
    assert r.exit_code == 4
    assert r.stderr == ("sessctl: error: stdin line 2: session 'dup' already exists; nothing was imported "
                        "(use --on-conflict skip or --on-conflict replace)\n")
    assert ok("list", "--format", "ids").stdout == "dup\n"


def test_conflict_skip_and_replace(ok: Run, existing: str) -> None:
    r = ok("import", "--on-conflict", "skip", "-", input=existing)
    assert r.stdout == "new-1\nnew-2\n" and "1 skipped" in r.stderr
    assert ok("show", "dup", "--json").json()["title"] == "original"
    r = ok("import", "--on-conflict", "replace", "-", input=existing.splitlines()[1] + "\n")
    assert r.stdout == "dup\n" and "1 replaced" in r.stderr
    s = ok("show", "dup", "--json").json()
    assert s["title"] == "imported" and [m["content"] for m in s["messages"]] == ["imported"]


def test_dry_run_checks_everything_and_writes_nothing(run: Run, ok: Run, existing: str, stored: StoredDb) -> None:
    assert run("import", "--dry-run", "-", input=existing).exit_code == 4
    r = ok("import", "--dry-run", "--on-conflict", "replace", "-", input=existing)
    assert r.stdout == "new-1\ndup\nnew-2\n" and "would have imported 3 sessions" in r.stderr
    assert ok("list", "--format", "ids").stdout == "dup\n"
    assert ok("show", "dup", "--json").json()["title"] == "original"
    fresh = stored.other("never")
    ok("--db", fresh.location, "import", "--dry-run", "-", input=existing)
    assert not fresh.exists()


# --- invalid input ---------------------------------------------------------------------------

GOOD = json.dumps(_session("good", [_msg(1, "user", "hi", "2026-01-01T00:00:00Z"),
                                    _msg(2, "assistant", "hello", "2026-01-01T00:00:01Z")]))


def _with(change: dict[str, Any], drop: tuple[str, ...] = (), message: dict[str, Any] | None = None) -> str:
    s = json.loads(GOOD)
    s.update(change)
    for key in drop:
        s.pop(key)
    if message is not None:
        s["messages"][0].update(message)
    return json.dumps(s)


@pytest.mark.parametrize("bad,expected", [
    ('{"id": "x", ', "stdin line 2: invalid JSON: Expecting property name enclosed in double quotes"),
    ('[1, 2]', "stdin line 2: element: expected a session object, got an array"),  # JSONL: the first line says
    ('"just a string"', "stdin line 2: element: expected a session object, got 'just a string'"),
    (_with({"id": "has space"}), "stdin line 2: id: 'has space' is not a valid session id"),
    (_with({"status": "deleted"}), "status: expected one of active, archived, got 'deleted'"),
    (_with({"created_at": "yesterday"}), "created_at: expected an ISO-8601 time"),
    (_with({"metadata": {"k": 1}}), "metadata.k: expected a string value, got the number 1"),
    (_with({"surprise": True}), "surprise: unknown field"),
    (_with({}, message={"role": "bot"}), "messages[0].role: expected one of user, assistant, got 'bot'"),
    (_with({}, message={"seq": 0}), "messages[0].seq: expected a whole number from 1"),
    (_with({}, message={"content": None}), "messages[0].content: expected a string, got null"),
    (_with({}, message={"tokens_in": 5}), "messages[0].tokens_in: unknown field"),
    (_with({"stats": {"messages": -1, "tokens_in": 0, "tokens_out": 0, "redactions": 0}}),
     "stats.messages: expected a whole number from 0"),
    (_with({}, message={"role": "assistant"}), "messages[0]: the history starts with an assistant message"),
    (_with({}, message={"status": "incomplete"}), "messages[0].status: 'incomplete': a user message is ok or unanswered"),
    (_with({"messages": [{"role": "user", "content": "a", "status": "ok"}]}),
     "messages[0].status: 'ok': a user message marked ok needs exactly one ok reply in its turn (it has 0"),
    (_with({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "assistant", "content": "c"}]}), "exactly one ok reply in its turn (it has 2"),
    (_with({"messages": [{"role": "user", "content": "a", "status": "unanswered"},
                         {"role": "assistant", "content": "b", "status": "ok"}]}),
     "messages[0].status: 'unanswered': an unanswered user message cannot have an ok or superseded reply"),
    (_with({"stats": {"messages": 1, "tokens_in": 0, "tokens_out": 0, "redactions": 0}}, drop=("messages",)),
     "not `list`"),
    (GOOD.replace('"good"', '"good"', 1), "session 'good' appears twice in the input (first at stdin line 1)"),
])
def test_invalid_jsonl_names_the_line_and_imports_nothing(run: Run, ok: Run, bad: str, expected: str) -> None:
    r = run("import", "-", input=GOOD + "\n" + bad + "\n" + _with({"id": "third"}) + "\n")
    assert r.exit_code == 2, r.stderr
    assert expected in r.stderr, r.stderr
    assert r.stderr.startswith("sessctl: error: ") and "nothing was imported" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert ok("list", "--format", "ids", "--status", "all").stdout == ""


def test_invalid_json_array_names_the_element(run: Run, ok: Run) -> None:
    elements = [json.loads(GOOD), json.loads(_with({"id": "second"})), json.loads(_with({"id": "bad"}, message={"role": "bot"}))]
    text = json.dumps(elements, indent=2)
    r = run("import", "-", input=text)
    assert r.exit_code == 2
    starts = [n for n, line in enumerate(text.splitlines(), 1) if line == "  {"]
    bad_line = starts[2]
    assert f"stdin element [2] (line {bad_line}) (session 'bad'): messages[0].role" in r.stderr
    assert ok("list", "--format", "ids").stdout == ""
    for broken, expected in (
        ("[" + GOOD + ",", "the JSON array is not closed"),
        ("[" + GOOD + "] []", "unexpected data after the JSON array"),
        ("[" + GOOD + " " + GOOD + "]", "element [1] (line 1): expected ',' or ']'"),
        ("[" + GOOD + ', {"id": tru}]', "element [1] (line 1): invalid JSON at line 1"),
        ("[3]", "element [0] (line 1): element: expected a session object, got the number 3"),
    ):
        r = run("import", "-", input=broken)
        assert r.exit_code == 2 and expected in r.stderr, (broken[:40], r.stderr)


def test_invalid_utf8_and_missing_file(run: Run, paths: Paths) -> None:
    f = paths.root / "latin1.jsonl"
    f.write_bytes(GOOD.encode() + b"\n" + '{"id": "caf\xe9"}'.encode("latin-1") + b"\n")
    r = run("import", str(f))
    assert r.exit_code == 2 and f"{f} line 2: not valid UTF-8" in r.stderr
    r = run("import", str(paths.root / "nope.json"))
    assert r.exit_code == 2 and "cannot read" in r.stderr


def test_empty_inputs_import_nothing(ok: Run) -> None:
    for text in ("", "\n\n", "[]\n", "[\n]\n"):
        r = ok("import", "-", input=text)
        assert r.stdout == "" and "imported 0 sessions" in r.stderr


# --- streaming -------------------------------------------------------------------------------


class Tracking(io.BytesIO):
    """A byte stream that remembers how far it has been read."""

    high = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.high = self.tell()
        return data

    def readline(self, n: int | None = -1) -> bytes:
        data = super().readline(n)
        self.high = self.tell()
        return data


@pytest.mark.parametrize("fmt", ["jsonl", "json", "json-pretty"])
def test_reader_streams_one_element_at_a_time(fmt: str) -> None:
    big = [{"id": f"s{i}", "pad": "x" * (3 * CHUNK if i == 1 else 100), "n": i} for i in range(200)]
    if fmt == "jsonl":
        data = jsonl(big)
    else:
        data = json.dumps(big, indent=2 if fmt == "json-pretty" else None)
    stream = Tracking(data.encode())
    reader = Reader(stream, "mem")
    seen = []
    for i, (where, obj) in enumerate(reader):
        if i == 0:
            assert stream.high < len(data) / 2, "the first element came only after reading most of the input"
        seen.append(obj)
        if fmt == "jsonl":
            assert where == f"mem line {i + 1}"
        else:
            assert where.startswith(f"mem element [{i}] (line ")
    assert seen == big


def test_reader_reports_lines_of_pretty_arrays() -> None:
    text = json.dumps([{"id": "a"}, {"id": "b"}, {"id": "c"}], indent=2)
    got = [where for where, _ in Reader(io.BytesIO(text.encode()), "f")]
    assert got == ["f element [0] (line 2)", "f element [1] (line 5)", "f element [2] (line 8)"]


def test_reader_rejects_garbage() -> None:
    with pytest.raises(UsageError, match="line 1: invalid JSON"):
        list(Reader(io.BytesIO(b"not json\n"), "f"))


def test_import_from_file_path_and_bom(ok: Run, paths: Paths) -> None:
    f: Path = paths.root / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps([json.loads(GOOD)]).encode())
    assert ok("import", str(f)).stdout == "good\n"


def test_hand_written_documents_import_with_statuses_and_numbers_inferred(ok: Run) -> None:
    doc = {"id": "hand", "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "never answered"}, {"role": "user", "content": "again"},
        {"role": "assistant", "content": "finally"}, {"role": "user", "content": "last"}]}
    ok("import", "-", input=json.dumps(doc))
    s = ok("show", "hand", "--json").json()
    assert [(m["seq"], m["role"], m["status"]) for m in s["messages"]] == [
        (1, "user", "ok"), (2, "assistant", "ok"), (3, "user", "unanswered"), (4, "user", "ok"),
        (5, "assistant", "ok"), (6, "user", "unanswered")]
    assert s["stats"]["messages"] == 6
    assert ok("doctor", "--json").json()["ok"] is True


def test_export_edited_with_jq_imports_as_a_fork(ok: Run) -> None:
    for text in ("one", "two", "three"):
        ok("send", "-s", "orig", text)
    s = ok("export", "orig", "--format", "jsonl").jsonl()[0]
    s["id"], s["messages"] = "copy", s["messages"][2:4]  # what `jq '.id="copy" | .messages |= .[2:4]'` does
    ok("import", "-", input=json.dumps(s))
    copy = ok("show", "copy", "--json").json()
    assert [(m["seq"], m["content"]) for m in copy["messages"]] == [(1, "two"), (2, "two")]
    assert copy["stats"]["messages"] == 2 and copy["stats"]["tokens_in"] == s["messages"][1]["tokens_in"]
    assert ok("show", "orig", "--json").json()["stats"]["messages"] == 6
