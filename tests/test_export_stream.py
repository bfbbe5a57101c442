"""The streaming JSON export is byte for byte what the plain renderer produces."""

from __future__ import annotations

import io
import json
import random
import sqlite3

import pytest

from conftest import Paths, Run

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
def awkward_db(ok: Run, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
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
    with sqlite3.connect(paths.db) as c:  # the states send writes on failures, and redaction counts
        c.execute("UPDATE messages SET status = 'unanswered' WHERE seq = 1 AND session_pk = "
                  "(SELECT pk FROM sessions WHERE id = 's-2')")
        c.execute("UPDATE messages SET status = 'incomplete', latency_ms = NULL, tokens_in = NULL, "
                  "tokens_estimated = NULL, first_token_ms = 5 WHERE seq = 2 AND session_pk = "
                  "(SELECT pk FROM sessions WHERE id = 's-2')")
        c.execute("UPDATE messages SET redactions = '{\"email\": 2, \"jwt\": 1}', redaction_count = 3 WHERE seq = 1")
        c.execute("UPDATE messages SET model = 'mödel \"x\"', provider = NULL WHERE seq = 4")
        c.execute("UPDATE messages SET tokens_estimated = 0, tokens_out = 0 WHERE seq = 6")


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
