#!/usr/bin/env python3
"""Write the conversations of a sessctl export into a logs.db of simonw/llm, so that
`llm logs -q WORD` can be timed on the same data as `sessctl search WORD`.

    sessctl export --all --format jsonl | LLM_VENV/bin/python bench/to_llm.py bench/out/llm200k/logs.db

Run it with the Python of a venv where llm is installed (never this project's): the
schema comes from llm's own migrations (`llm.migrations.migrate`), and rows go into
the tables its `llm logs -q` searches through SQLite FTS5, kept current by the
triggers those migrations create. Each turn (a user message and the reply after it)
is one row of `responses` (prompt, response, model, tokens, duration, time) in a
`conversations` row per session; a user message without a reply is a row with an
empty response. That is the layout llm wrote up to its message-store migration, which
llm 0.36 still reads and searches beside the new one (logs.legacy_log_rows); filling
the new content-addressed tables by hand would mean re-implementing llm's hashing.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path


def main() -> None:
    import sqlite_utils
    from llm.migrations import migrate

    path = Path(sys.argv[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        sys.exit(f"{path} exists; write into a new file")
    db = sqlite_utils.Database(path)
    migrate(db)
    n_turns = 0
    conversations: list[dict[str, object]] = []
    responses: list[dict[str, object]] = []

    def flush() -> None:
        db["conversations"].insert_all(conversations)
        db["responses"].insert_all(responses)
        conversations.clear()
        responses.clear()

    with db.conn:
        for line in sys.stdin:
            s = json.loads(line)
            conversations.append({"id": s["id"], "name": (s.get("title") or "")[:40], "model": s["model"]})
            msgs = s["messages"]
            for i, m in enumerate(msgs):
                if m["role"] != "user":
                    continue
                reply = msgs[i + 1] if i + 1 < len(msgs) and msgs[i + 1]["role"] == "assistant" else None
                when = datetime.fromisoformat(m["created_at"].replace("Z", "+00:00")).astimezone(timezone.utc)
                n_turns += 1
                responses.append({
                    # llm's ids are ULIDs, ordered by time; this keeps that order.
                    "id": f"{int(when.timestamp()):011d}{n_turns:09d}",
                    "model": s["model"], "prompt": m["content"], "system": s.get("system"),
                    "prompt_json": None, "options_json": "{}",
                    "response": reply["content"] if reply else "", "response_json": None,
                    "conversation_id": s["id"], "duration_ms": (reply or {}).get("latency_ms"),
                    "datetime_utc": when.isoformat(), "input_tokens": (reply or {}).get("tokens_in"),
                    "output_tokens": (reply or {}).get("tokens_out"),
                })
            if len(responses) >= 5000:
                flush()
        flush()
    print(json.dumps({"logs_db": str(path), "responses": n_turns, "bytes": path.stat().st_size}))


if __name__ == "__main__":
    main()
