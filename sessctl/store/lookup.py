"""Cheap, read-only lookups for shell completion.

Every TAB press runs sessctl, so this opens the file with the standard library only
(no migrations, no key, no decryption), never creates it, and gives up quietly: a
completion that fails must print nothing rather than an error into the prompt.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sessctl.models import SESSION_ID

_LIMIT = 500


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.is_file():
        return None
    try:
        # mode=rw: never create the file; a short timeout: a TAB must not hang on a writer.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=0.2)
        conn.execute("PRAGMA query_only = ON")
        return conn
    except sqlite3.Error:
        return None


def session_ids(path: Path, prefix: str, status: str | None = None) -> list[str]:
    """Session ids starting with prefix (most recently active first), optionally
    only those in `status`. Ids are plaintext, so nothing is decrypted."""
    # Ids contain no GLOB metacharacters, so a prefix that is not the start of a valid
    # id can match nothing, and a valid one is safe to use in a GLOB pattern.
    if prefix and not SESSION_ID.fullmatch(prefix):
        return []
    conn = _connect(path)
    if conn is None:
        return []
    try:
        sql, params = "SELECT id FROM sessions WHERE id GLOB ?", [prefix + "*"]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY updated_at DESC LIMIT ?"
        return [r[0] for r in conn.execute(sql, (*params, _LIMIT))]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def users(path: Path, prefix: str) -> list[str]:
    conn = _connect(path)
    if conn is None:
        return []
    try:
        rows = conn.execute(
            "SELECT DISTINCT user FROM sessions WHERE user IS NOT NULL AND substr(user, 1, ?) = ? ORDER BY user LIMIT ?",
            (len(prefix), prefix, _LIMIT),
        )
        return [r[0] for r in rows]
    except sqlite3.Error:
        return []
    finally:
        conn.close()
