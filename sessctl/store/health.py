"""The SQL behind `sessctl doctor` that both engines share: read-only consistency
checks and value iteration. What only one engine has (SQLite's integrity_check,
foreign-key check, file modes; the schema record) lives in its engine module.

Everything here only reads; doctor runs it on a connection that cannot write, without
running migrations, so a damaged or older database is diagnosed as it is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


def counts(conn: Any) -> dict[str, int]:
    one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
    return {
        "sessions": one("SELECT count(*) FROM sessions"),
        "messages": one("SELECT count(*) FROM messages"),
        "unanswered": one("SELECT count(*) FROM messages WHERE status = 'unanswered'"),
        "values": one(
            "SELECT (SELECT count(title) + count(system) + count(metadata) FROM sessions)"
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
        yield "TRUE", []
        return
    for i in range(0, len(pks), 500):
        chunk = pks[i:i + 500]
        yield f"{column} IN ({','.join('?' * len(chunk))})", chunk


def inconsistent_sessions(conn: Any, pks: list[int] | None = None) -> Iterator[SessionTotals]:
    """Sessions (all, or those with these pks) whose messages are not exactly seq
    1..message_count, or whose token or redaction counters disagree with their
    messages (one pass, grouped by session)."""
    for cond, params in _only(pks, "s.pk"):
        sql = f"""
            SELECT s.id, s.message_count, s.tokens_in, s.tokens_out, s.redactions,
                   count(m.seq), min(m.seq), max(m.seq),
                   coalesce(sum(m.tokens_in), 0), coalesce(sum(m.tokens_out), 0),
                   coalesce(sum(m.redaction_count), 0)
            FROM sessions s LEFT JOIN messages m ON m.session_pk = s.pk
            WHERE {cond}
            GROUP BY s.pk
            HAVING count(m.seq) != s.message_count
                OR (count(m.seq) > 0 AND (min(m.seq) != 1 OR max(m.seq) != count(m.seq)))
                OR coalesce(sum(m.tokens_in), 0) != s.tokens_in OR coalesce(sum(m.tokens_out), 0) != s.tokens_out
                OR coalesce(sum(m.redaction_count), 0) > s.redactions
        """
        for row in conn.execute(sql, params):
            sid, mc, tin, tout, red, n, lo, hi, sin, sout, sred = row
            yield SessionTotals(sid, mc, tin, tout, red, int(n), lo, hi, int(sin), int(sout), int(sred))


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
    WHERE ({only}) AND (
          (m.role = 'user' AND m.status = 'ok'
           AND (coalesce(n.role, '') != 'assistant' OR coalesce(n.status, '') != 'ok'))
       OR (m.role = 'user' AND m.status = 'unanswered' AND n.role = 'assistant' AND n.status = 'ok')
       OR (m.role = 'user' AND m.status = 'incomplete')
       OR (m.role = 'assistant' AND m.status = 'ok'
           AND (coalesce(p.role, '') != 'user' OR coalesce(p.status, '') != 'ok'))
       OR (m.role = 'assistant' AND m.status = 'incomplete'
           AND (coalesce(p.role, '') != 'user' OR coalesce(p.status, '') != 'unanswered'))
       OR (m.role = 'assistant' AND m.status = 'unanswered'))
    ORDER BY m.session_pk, m.seq
"""


def half_turns(conn: Any, pks: list[int] | None = None) -> Iterator[tuple[str, int, str, str]]:
    """Messages (of all sessions, or of those with these pks) that break the turn rules
    above: (session id, seq, role, status)."""
    for cond, params in _only(pks, "m.session_pk"):
        yield from conn.execute(_HALF_TURNS.format(only=cond), params).fetchall()


def orphans(conn: Any, *, quick: bool = False) -> dict[str, int]:
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


def session_batches(conn: Any, size: int = 1000) -> Iterator[tuple[list[SessionRow], dict[int, set[bytes]]]]:
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


def stray_index_tags(conn: Any) -> int:
    """Index entries of sessions that no longer exist."""
    return int(conn.execute(
        "SELECT count(*) FROM session_meta_index i WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.pk = i.session_pk)"
    ).fetchone()[0])


_BODIES = ("SELECT b.id, b.content, m.seq, s.id, s.pk FROM message_bodies b "
           "JOIN messages m ON m.id = b.id JOIN sessions s ON s.pk = m.session_pk")


def body_batches(conn: Any, size: int = 2000) -> Iterator[list[BodyRow]]:
    last = 0
    while True:
        rows = conn.execute(f"{_BODIES} WHERE b.id > ? ORDER BY b.id LIMIT ?", (last, size)).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def sample_ids(conn: Any, table: str, key: str, n: int, rng: random.Random) -> list[int]:
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


def sessions_by_pk(conn: Any, pks: list[int]) -> tuple[list[SessionRow], dict[int, set[bytes]]]:
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


def bodies_by_id(conn: Any, ids: list[int]) -> list[BodyRow]:
    rows: list[BodyRow] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows += conn.execute(f"{_BODIES} WHERE b.id IN ({','.join('?' * len(chunk))}) ORDER BY b.id", chunk).fetchall()
    return rows
