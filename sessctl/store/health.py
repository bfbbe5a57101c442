"""The SQL behind `sessctl doctor`: read-only structural checks and value iteration.

Everything here only reads. The connection is opened with `mode=rw` (never creating a
file) and `PRAGMA query_only`, without running migrations, so a damaged or older
database is diagnosed as it is, not changed first.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SQLITE_HEADER = b"SQLite format 3\x00"


def has_sqlite_header(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(16) == SQLITE_HEADER


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=busy_timeout_ms / 1000,
                           isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def integrity(conn: sqlite3.Connection, *, quick: bool, limit: int = 20) -> list[str]:
    """Problems reported by SQLite (empty when the file is sound)."""
    pragma = "quick_check" if quick else "integrity_check"
    rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
    if rows == ["ok"]:
        return []
    # One row may carry several lines ("*** in database main ***\nOn tree page ...").
    return [line for row in rows for line in str(row).splitlines() if line.strip()]


def foreign_key_problems(conn: sqlite3.Connection, limit: int = 20) -> list[str]:
    out = []
    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
        out.append(f"{table} row {rowid} points to a missing {parent} row")
        if len(out) >= limit:
            break
    return out


def schema(conn: sqlite3.Connection) -> tuple[int, list[int], str]:
    """(user_version, versions recorded in schema_migrations, journal mode)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    try:
        recorded = [int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    except sqlite3.OperationalError:
        recorded = []
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    return version, recorded, mode


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
    return {
        "sessions": one("SELECT count(*) FROM sessions"),
        "messages": one("SELECT count(*) FROM messages"),
        "unanswered": one("SELECT count(*) FROM messages WHERE status = 'unanswered'"),
        "values": one(
            "SELECT (SELECT total((title IS NOT NULL) + (system IS NOT NULL) + (metadata IS NOT NULL)) FROM sessions)"
            " + (SELECT count(*) FROM message_bodies)"
        ),
    }


@dataclass
class SessionTotals:
    session_id: str
    message_count: int
    tokens_in: int
    tokens_out: int
    redactions: int
    n: int
    min_seq: int | None
    max_seq: int | None
    sum_in: int
    sum_out: int
    sum_redactions: int


def _only(pks: list[int] | None, column: str) -> Iterator[tuple[str, list[int]]]:
    """(extra condition, params) per chunk of pks; one unconditional pass when pks is None."""
    if pks is None:
        yield "1", []
        return
    for i in range(0, len(pks), 500):
        chunk = pks[i:i + 500]
        yield f"{column} IN ({','.join('?' * len(chunk))})", chunk


def inconsistent_sessions(conn: sqlite3.Connection, pks: list[int] | None = None) -> Iterator[SessionTotals]:
    """Sessions (all, or those with these pks) whose messages are not exactly seq
    1..message_count, or whose token or redaction counters disagree with their
    messages (one pass, grouped by session)."""
    for cond, params in _only(pks, "s.pk"):
        sql = f"""
            SELECT s.id, s.message_count, s.tokens_in, s.tokens_out, s.redactions,
                   count(m.seq), min(m.seq), max(m.seq),
                   total(m.tokens_in), total(m.tokens_out), total(m.redaction_count)
            FROM sessions s LEFT JOIN messages m ON m.session_pk = s.pk
            WHERE {cond}
            GROUP BY s.pk
            HAVING count(m.seq) != s.message_count
                OR (count(m.seq) > 0 AND (min(m.seq) != 1 OR max(m.seq) != count(m.seq)))
                OR total(m.tokens_in) != s.tokens_in OR total(m.tokens_out) != s.tokens_out
                OR total(m.redaction_count) > s.redactions
        """
        for row in conn.execute(sql, params):
            sid, mc, tin, tout, red, n, lo, hi, sin, sout, sred = row
            yield SessionTotals(sid, mc, tin, tout, red, n, lo, hi, int(sin), int(sout), int(sred))


# A turn is a user message and the reply right after it. What a stored history may
# hold (conversation.py writes each turn in one transaction):
#   user ok          → followed by an assistant ok reply
#   user unanswered  → followed by nothing, the next user message, or an incomplete reply
#   assistant ok     → preceded by a user ok message
#   assistant incomplete → preceded by a user unanswered message
_HALF_TURNS = """
    SELECT s.id, m.seq, m.role, m.status
    FROM messages m
    JOIN sessions s ON s.pk = m.session_pk
    LEFT JOIN messages n ON n.session_pk = m.session_pk AND n.seq = m.seq + 1
    LEFT JOIN messages p ON p.session_pk = m.session_pk AND p.seq = m.seq - 1
    WHERE ({only}) AND ((m.role = 'user' AND m.status = 'ok' AND (n.role IS NOT 'assistant' OR n.status IS NOT 'ok'))
       OR (m.role = 'user' AND m.status = 'unanswered' AND n.role IS 'assistant' AND n.status IS 'ok')
       OR (m.role = 'user' AND m.status = 'incomplete')
       OR (m.role = 'assistant' AND m.status = 'ok' AND (p.role IS NOT 'user' OR p.status IS NOT 'ok'))
       OR (m.role = 'assistant' AND m.status = 'incomplete' AND (p.role IS NOT 'user' OR p.status IS NOT 'unanswered'))
       OR (m.role = 'assistant' AND m.status = 'unanswered'))
    ORDER BY m.session_pk, m.seq
"""


def half_turns(conn: sqlite3.Connection, pks: list[int] | None = None) -> Iterator[tuple[str, int, str, str]]:
    """Messages (of all sessions, or of those with these pks) that break the turn rules
    above: (session id, seq, role, status)."""
    for cond, params in _only(pks, "m.session_pk"):
        yield from conn.execute(_HALF_TURNS.format(only=cond), params)


def orphans(conn: sqlite3.Connection, *, quick: bool = False) -> dict[str, int]:
    """Rows without their counterpart. Quick: only compares the two tables' sizes
    (foreign keys make a body without a message impossible while they are on)."""
    one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
    if quick:
        diff = one("SELECT (SELECT count(*) FROM messages) - (SELECT count(*) FROM message_bodies)")
        return {"messages without a body": max(diff, 0), "bodies without a message": max(-diff, 0)}
    return {
        "bodies without a message": one(
            "SELECT count(*) FROM message_bodies b WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = b.id)"
        ),
        "messages without a body": one(
            "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM message_bodies b WHERE b.id = m.id)"
        ),
    }


# --- encrypted values -------------------------------------------------------------------

SessionRow = tuple[int, str, bytes | None, bytes | None, bytes | None]  # pk, id, title, system, metadata
BodyRow = tuple[int, bytes, int, str, int]  # body id, content, seq, session id, session pk


def session_batches(conn: sqlite3.Connection, size: int = 1000) -> Iterator[tuple[list[SessionRow], dict[int, set[bytes]]]]:
    """Every session's encrypted fields, in pk order, with the blind-index tags stored
    for those sessions."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT pk, id, title, system, metadata FROM sessions WHERE pk > ? ORDER BY pk LIMIT ?", (last, size)
        ).fetchall()
        if not rows:
            return
        tags: dict[int, set[bytes]] = {}
        for pk, tag in conn.execute(
            "SELECT session_pk, tag FROM session_meta_index WHERE session_pk BETWEEN ? AND ?", (rows[0][0], rows[-1][0])
        ):
            tags.setdefault(pk, set()).add(tag)
        yield rows, tags
        last = rows[-1][0]


def stray_index_tags(conn: sqlite3.Connection) -> int:
    """Index entries of sessions that no longer exist."""
    return int(conn.execute(
        "SELECT count(*) FROM session_meta_index i WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.pk = i.session_pk)"
    ).fetchone()[0])


_BODIES = ("SELECT b.id, b.content, m.seq, s.id, s.pk FROM message_bodies b "
           "JOIN messages m ON m.id = b.id JOIN sessions s ON s.pk = m.session_pk")


def body_batches(conn: sqlite3.Connection, size: int = 2000) -> Iterator[list[BodyRow]]:
    last = 0
    while True:
        rows = conn.execute(f"{_BODIES} WHERE b.id > ? ORDER BY b.id LIMIT ?", (last, size)).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def sample_ids(conn: sqlite3.Connection, table: str, key: str, n: int, rng: random.Random) -> list[int]:
    """Up to n distinct existing keys spread at random over the key range (no full scan)."""
    lo, hi = conn.execute(f"SELECT min({key}), max({key}) FROM {table}").fetchone()
    if lo is None:
        return []
    if hi - lo + 1 <= n:
        return [r[0] for r in conn.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
    picked: set[int] = set()
    for _ in range(n * 2):
        row = conn.execute(f"SELECT {key} FROM {table} WHERE {key} >= ? ORDER BY {key} LIMIT 1",
                           (rng.randint(lo, hi),)).fetchone()
        if row is not None:
            picked.add(row[0])
        if len(picked) >= n:
            break
    return sorted(picked)


def sessions_by_pk(conn: sqlite3.Connection, pks: list[int]) -> tuple[list[SessionRow], dict[int, set[bytes]]]:
    rows: list[SessionRow] = []
    tags: dict[int, set[bytes]] = {}
    for i in range(0, len(pks), 500):
        chunk = pks[i:i + 500]
        marks = ",".join("?" * len(chunk))
        rows += conn.execute(
            f"SELECT pk, id, title, system, metadata FROM sessions WHERE pk IN ({marks}) ORDER BY pk", chunk
        ).fetchall()
        for pk, tag in conn.execute(f"SELECT session_pk, tag FROM session_meta_index WHERE session_pk IN ({marks})",
                                    chunk):
            tags.setdefault(pk, set()).add(tag)
    return rows, tags


def bodies_by_id(conn: sqlite3.Connection, ids: list[int]) -> list[BodyRow]:
    rows: list[BodyRow] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows += conn.execute(f"{_BODIES} WHERE b.id IN ({','.join('?' * len(chunk))}) ORDER BY b.id", chunk).fetchall()
    return rows
