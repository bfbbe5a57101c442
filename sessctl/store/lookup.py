"""Cheap, read-only lookups for shell completion.

Every TAB press runs sessctl, so this opens the database without the store (no
migrations, no key, no decryption), never creates anything, and gives up quietly: a
completion that fails must print nothing rather than an error into the prompt. Ids
and users are plaintext columns, so nothing is decrypted.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

from sessctl.config import Database
from sessctl.models import SESSION_ID

_LIMIT = 500


@contextlib.contextmanager
def _connect(database: Database) -> Iterator[tuple[Any, str] | None]:
    """(connection, placeholder) or None; closed on exit."""
    conn: Any = None
    try:
        if database.kind == "postgresql":
            import psycopg

            # A short connect timeout: a TAB must not hang on an unreachable server.
            conn = psycopg.connect(database.url or "", autocommit=True, connect_timeout=2,
                                   application_name="sessctl-complete")
            conn.execute("SET default_transaction_read_only = on")
            yield conn, "%s"
            return
        path = database.path
        if path is None or not path.is_file():
            yield None
            return
        # mode=rw: never create the file; a short timeout: a TAB must not hang on a writer.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=0.2)
        conn.execute("PRAGMA query_only = ON")
        yield conn, "?"
    except Exception:  # noqa: BLE001 - no database, no driver, no server: no completions
        yield None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def session_ids(database: Database, prefix: str, status: str | None = None) -> list[str]:
    """Session ids starting with prefix (most recently active first), optionally
    only those in `status`."""
    # A prefix that is not the start of a valid id can match nothing; a valid one holds
    # no GLOB metacharacters, and LIKE's `_` is escaped below.
    if prefix and not SESSION_ID.fullmatch(prefix):
        return []
    with _connect(database) as opened:
        if opened is None:
            return []
        conn, ph = opened
        try:
            if ph == "?":
                sql, params = "SELECT id FROM sessions WHERE id GLOB ?", [prefix + "*"]
            else:
                sql, params = "SELECT id FROM sessions WHERE id LIKE %s ESCAPE '\\'", [
                    prefix.replace("_", "\\_") + "%"]
            if status is not None:
                sql += f" AND status = {ph}"
                params.append(status)
            sql += f" ORDER BY updated_at DESC LIMIT {ph}"
            return [r[0] for r in conn.execute(sql, (*params, _LIMIT))]
        except Exception:  # noqa: BLE001
            return []


def users(database: Database, prefix: str) -> list[str]:
    with _connect(database) as opened:
        if opened is None:
            return []
        conn, ph = opened
        try:
            rows = conn.execute(
                f'SELECT DISTINCT "user" FROM sessions WHERE "user" IS NOT NULL AND substr("user", 1, {ph}) = {ph} '
                f'ORDER BY "user" LIMIT {ph}',
                (len(prefix), prefix, _LIMIT),
            )
            return [r[0] for r in rows]
        except Exception:  # noqa: BLE001
            return []
