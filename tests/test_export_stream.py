"""The streaming JSON export is byte for byte what the plain renderer produces."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Paths, Run, reseal
from dbkit import StoredDb

pytestmark = pytest.mark.engines

ROOT = Path(__file__).resolve().parent.parent

AWKWARD = [
    "plain ascii", "", " ", "quote \" backslash \\ slash /", "tab\tnewline\ncr\rformfeed\fbackspace\b",
    "nul \x00 bell \x07 esc \x1b unit-sep \x1f del \x7f", "déjà vu — “quotes” ünïcode", "emoji 🦊🔑 and 中文",
    "line sep \u2028 para sep \u2029", "</script><!-- -->", "x" * 5000, "\n" * 50,
]


def _messages_rows_reference(paths: Paths) -> tuple[str, str]:
    """(jsonl, json) as the plain renderer writes them, from the same database."""
    from sessctl import config, render
    from sessctl.models import SessionFilter
    from sessctl.service import App

    app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    store = app.store(create=False)
    outs = []
    for fmt in ("jsonl", "json"):
        buf = io.StringIO()
        with render.ExportWriter(buf, fmt) as w:
            for s in store.list_sessions(SessionFilter(), oldest_first=True):
                w.write(s, store.messages(s))
        outs.append(buf.getvalue())
    app.close()
    return outs[0], outs[1]


@pytest.fixture
def awkward_db(ok: Run, stored: StoredDb, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    monkeypatch.setenv("SESSCTL_NOW", "1990-01-01T00:00:00Z")
    ok("create", "empty")
    monkeypatch.setenv("SESSCTL_NOW", "2026-11-21T23:59:59Z")
    ok("create", "full", "--user", "ünï \"user\"", "--title", AWKWARD[6], "--system", AWKWARD[4],
       "--meta", "k=v", "--meta", "ü=🦊\x7f", "--ttl", "3d", "-o", "temperature=0.25", "-o", "stop=[\"\\n\"]",
       "--max-context-messages", "12")
    for i, text in enumerate(AWKWARD):
        monkeypatch.setenv("SESSCTL_NOW", str(1795300000 + i * 3607 + rng.randrange(86400 * 400)))
        ok("send", "-s", "full" if i % 2 else f"s-{i}", text if text.strip() else f"{text}.")
    ok("archive", "s-0")
    with stored.conn() as c:  # the states send writes on failures, and redaction counts
        c.execute("UPDATE messages SET status = 'unanswered' WHERE seq = 1 AND session_pk = "
                  "(SELECT pk FROM sessions WHERE id = 's-2')")
        c.execute("UPDATE messages SET status = 'incomplete', latency_ms = NULL, tokens_in = NULL, "
                  "tokens_estimated = NULL, first_token_ms = 5 WHERE seq = 2 AND session_pk = "
                  "(SELECT pk FROM sessions WHERE id = 's-2')")
        c.execute("UPDATE messages SET redactions = '{\"email\": 2, \"jwt\": 1}', redaction_count = 3 WHERE seq = 1")
        c.execute("UPDATE messages SET model = 'mödel \"x\"', provider = NULL WHERE seq = 4")
        c.execute("UPDATE messages SET tokens_estimated = 0, tokens_out = 0 WHERE seq = 6")
    reseal()


def test_streaming_export_matches_the_plain_renderer(ok: Run, paths: Paths, awkward_db: None) -> None:
    jsonl, as_json = _messages_rows_reference(paths)
    assert ok("export", "--all", "--format", "jsonl").stdout == jsonl
    assert ok("export", "--all", "--format", "json").stdout == as_json
    # split("\n"), not splitlines(): U+2028 inside a JSON string is not a line break.
    lines = jsonl.rstrip("\n").split("\n")
    sessions = [json.loads(line) for line in lines]
    contents = [m["content"] for s in sessions for m in s["messages"]]
    for text in AWKWARD:
        assert (text if text.strip() else f"{text}.") in contents
    assert {m["status"] for s in sessions for m in s["messages"]} == {"ok", "unanswered", "incomplete"}
    assert any(m["redactions"] == {"email": 2, "jwt": 1} for s in sessions for m in s["messages"])
    # Filters and explicit ids go through the same path.
    assert ok("export", "full", "--format", "jsonl").stdout == next(
        line + "\n" for line in lines if json.loads(line)["id"] == "full")


def test_random_strings_quote_like_json_dumps() -> None:
    from sessctl.render import _quote

    rng = random.Random(3)
    alphabet = [chr(i) for i in range(0x80)] + ["é", "🦊", "\u2028", "中"]
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert _quote(s) == json.dumps(s, ensure_ascii=False)


# --- forked workers (export_workers.py) -------------------------------------------------


def _sessctl(args: list[str], env_extra: dict[str, str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.run([sys.executable, "-c", "from sessctl.cli import main; main()", *args], env=env,
                          capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize("workers", ["2", "3"])
def test_workers_write_exactly_what_one_process_writes(paths: Paths, awkward_db: None, workers: str) -> None:
    # More sessions than one batch, so several batches go round the workers.
    _bulk_sessions(600)
    jsonl, as_json = _messages_rows_reference(paths)
    for fmt, want in (("jsonl", jsonl), ("json", as_json)):
        r = _sessctl(["export", "--all", "--format", fmt], {"SESSCTL_EXPORT_WORKERS": workers})
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode() == want
    out = paths.root / "out.jsonl"
    r = _sessctl(["export", "--all", "--format", "jsonl", "-o", str(out)], {"SESSCTL_EXPORT_WORKERS": workers})
    assert r.returncode == 0 and out.read_text() == jsonl


def test_workers_report_tampering_as_6(stored: StoredDb, awkward_db: None) -> None:
    _bulk_sessions(600)
    with stored.conn() as c:
        blob = bytearray(c.execute("SELECT content FROM message_bodies ORDER BY id DESC LIMIT 1").fetchone()[0])
        blob[-3] ^= 1
        c.execute("UPDATE message_bodies SET content = ? WHERE id = (SELECT max(id) FROM message_bodies)",
                  (bytes(blob),))
    r = _sessctl(["export", "--all", "--format", "jsonl"], {"SESSCTL_EXPORT_WORKERS": "2"})
    assert r.returncode == 6
    assert r.stderr.decode().startswith("sessctl: error: cannot decrypt messages.content of session 'bulk-599'")


def test_workers_stop_quietly_when_the_reader_goes_away(paths: Paths, awkward_db: None) -> None:
    _bulk_sessions(3000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SESSCTL_EXPORT_WORKERS": "2"}
    p = subprocess.Popen([sys.executable, "-c", "from sessctl.cli import main; main()", "export", "--all",
                          "--format", "jsonl"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(1000)
    p.stdout.close()
    # (click turns EPIPE into exit 1 before sessctl sees it; either way: no noise, no hang)
    assert p.wait(timeout=30) in (0, 1, 141)
    err = p.stderr.read()
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_a_large_store_gets_workers_on_either_engine(paths: Paths, awkward_db: None) -> None:
    # The choice scales with what the store occupies: the file, or on PostgreSQL the
    # schema's tables and indexes (before issue 9, PostgreSQL never got workers).
    from sessctl import config, export_workers
    from sessctl.service import App

    app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    try:
        size = app.store(create=False).db.data_bytes()
        assert size is not None and 0 < size < export_workers.MIN_DB_BYTES
        assert export_workers.worker_count(app) == 1
    finally:
        app.close()


def test_bad_worker_setting_is_a_usage_error(paths: Paths, awkward_db: None) -> None:
    r = _sessctl(["export", "--all"], {"SESSCTL_EXPORT_WORKERS": "many"})
    assert r.returncode == 2 and b"SESSCTL_EXPORT_WORKERS" in r.stderr


def _bulk_sessions(n: int) -> None:
    from sessctl import config
    from sessctl.models import NewSession
    from sessctl.service import App
    from sessctl.store import NewMessage

    app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    store = app.store(create=True)

    def tx(conn: object) -> None:
        for i in range(n):
            store.append_messages(f"bulk-{i}", [NewMessage("user", f"q {i} é"), NewMessage(
                "assistant", f"a {i}\n", model="m", provider="p", tokens_in=1, tokens_out=2, latency_ms=3)],
                1_790_000_000 + i, create=NewSession(id=f"bulk-{i}", user="u", title=f"T{i}", metadata={"i": str(i)}))

    store.write(tx)
    app.close()
