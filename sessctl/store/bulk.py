"""SQL for the operations commands: delete, retention batches, import, and the
"this session is busy" mark that keeps retention away from a send in flight.

Kept apart from `store/__init__.py` so the core store stays small; every function takes
the open Store and uses its transaction (`Store.write`), filter (`Store._where`) and
single sanitize+encrypt path (`Store._put_text`, `Store._write_session_texts`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sessctl.errors import NotFoundError
from sessctl.models import Message, Session, SessionFilter
from sessctl.store import Store, _merge_counts, integrity
from sessctl.text import plain

Progress = Callable[[int], None]


def _no_progress(n: int) -> None:
    pass


@dataclass(frozen=True)
class Affected:
    """A session removed or changed by a bulk operation."""

    id: str
    messages: int


def _and(where: str, cond: str) -> str:
    return f"{where} AND {cond}" if where else f" WHERE {cond}"


def count(store: Store, f: SessionFilter, cond: str = "", cond_params: Sequence[Any] = ()) -> int:
    where, params = store._where(f)
    if cond:
        where = _and(where, cond)
    return int(store.conn.execute(f"SELECT count(*) FROM sessions{where}", [*params, *cond_params]).fetchone()[0])


def preview(store: Store, f: SessionFilter, cond: str = "", cond_params: Sequence[Any] = ()) -> list[Affected]:
    """What a bulk operation over f (and cond) would touch, oldest first. No decryption."""
    where, params = store._where(f)
    if cond:
        where = _and(where, cond)
    rows = store.conn.execute(
        f"SELECT id, message_count FROM sessions{where} ORDER BY created_at, pk", [*params, *cond_params]
    )
    return [Affected(sid, n) for sid, n in rows]


def _delete_pk(conn: Any, pk: int) -> None:
    # Explicit rather than relying on ON DELETE CASCADE alone, so the result does not
    # depend on the connection's foreign_keys pragma (doctor and other tools may open
    # the file with their own settings). secure_delete zeroes the freed cells.
    conn.execute("DELETE FROM message_search WHERE session_pk = ?", (pk,))
    conn.execute("DELETE FROM message_bodies WHERE id IN (SELECT id FROM messages WHERE session_pk = ?)", (pk,))
    conn.execute("DELETE FROM messages WHERE session_pk = ?", (pk,))
    conn.execute("DELETE FROM session_meta_index WHERE session_pk = ?", (pk,))
    conn.execute("DELETE FROM sessions WHERE pk = ?", (pk,))


def delete(
    store: Store,
    f: SessionFilter,
    *,
    only: Iterable[str] | None = None,
    on_progress: Progress = _no_progress,
) -> list[Affected]:
    """Delete every session matching f in ONE transaction; returns what went, oldest first.

    Named ids (f.ids) that do not exist raise NotFoundError and nothing is deleted.
    `only` limits the deletion to ids the caller already showed or confirmed: the
    filter is evaluated again under the write lock, so a session that stopped matching
    meanwhile (a send made it active) stays."""
    keep = set(only) if only is not None else None

    def tx(conn: Any) -> list[Affected]:
        if f.ids:
            missing = store.missing_ids(f.ids)
            if missing:
                raise NotFoundError(
                    f"session{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
                    "not found; nothing was deleted"
                )
        where, params = store._where(f)
        # FOR UPDATE (PostgreSQL): each row is re-checked against the filter once locked,
        # so a session a send made active meanwhile is not deleted as idle.
        rows = conn.execute(
            f"SELECT pk, id, message_count FROM sessions{where} ORDER BY created_at, pk{store.db.for_update}", params
        ).fetchall()
        out: list[Affected] = []
        for pk, sid, n in rows:
            if keep is not None and sid not in keep:
                continue
            _delete_pk(conn, pk)
            out.append(Affected(sid, n))
            on_progress(1)
        return out

    return store.write(tx)


def apply_batch(
    store: Store,
    f: SessionFilter,
    cond: str,
    cond_params: Sequence[Any],
    action: str,
    now: int,
    limit: int,
) -> list[Affected]:
    """One short retention transaction: select up to `limit` sessions matching f and
    cond UNDER THE WRITE LOCK, then delete or archive them. Selecting inside the
    transaction is what makes retention safe beside sends: a session that a send
    touched a moment ago no longer matches and is left alone."""
    where, params = store._where(f)
    where = _and(where, cond)

    def tx(conn: Any) -> list[Affected]:
        rows = conn.execute(
            f"SELECT pk, id, message_count FROM sessions{where} ORDER BY pk LIMIT ?{store.db.for_update}",
            [*params, *cond_params, limit],
        ).fetchall()
        for pk, _sid, _n in rows:
            if action == "delete":
                _delete_pk(conn, pk)
            else:
                conn.execute(
                    "UPDATE sessions SET status = 'archived', archived_at = ? WHERE pk = ? AND status = 'active'",
                    (now, pk),
                )
        return [Affected(sid, n) for _pk, sid, n in rows]

    return store.write(tx)


def vacuum(store: Store) -> bool:
    """Reclaim what deleted sessions left behind (see Engine.vacuum)."""
    return store.db.vacuum()


def touch(store: Store, ids: Sequence[str], now: int) -> list[str]:
    """Mark sessions active now (before a send calls its provider); returns the ids
    that no longer exist. Retention re-checks idleness inside its own transaction, so
    once this commits, cleanup cannot delete or archive the session under the send."""

    def tx(conn: Any) -> list[str]:
        missing = []
        for sid in ids:
            cur = conn.execute(
                "UPDATE sessions SET updated_at = CASE WHEN updated_at < ? THEN ? ELSE updated_at END WHERE id = ?",
                (now, now, sid))
            if cur.rowcount == 0:
                missing.append(sid)
        return missing

    # Not durable on its own: if a crash loses this mark, it loses the send with it.
    return store.write(tx, durable=False)


def set_expiry(store: Store, conn: Any, session_id: str, expires_at: int | None) -> None:
    row = conn.execute("UPDATE sessions SET expires_at = ? WHERE id = ? RETURNING pk",
                       (expires_at, session_id)).fetchone()
    if row is not None:
        store._reseal(conn, row[0])  # the expiry is part of the session's digest


# --- import ---------------------------------------------------------------------------


def find_pk(conn: Any, session_id: str) -> int | None:
    row = conn.execute("SELECT pk FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None else int(row[0])


def delete_pk(conn: Any, pk: int) -> None:
    _delete_pk(conn, pk)


def insert_full(store: Store, conn: Any, s: Session, messages: Sequence[Message]) -> int:
    """Insert a whole session as given (timestamps, status, counters, per-message facts),
    inside the caller's transaction. Texts still go through the store's one
    sanitize+encrypt path; sanitizing is idempotent, so already-clean text comes back
    unchanged, and anything a newer rule set catches is redacted and counted."""
    rules = _merge_counts(*(m.redactions for m in messages))
    cur = conn.execute(
        'INSERT INTO sessions (id, "user", provider, model, status, created_at, updated_at, archived_at, expires_at, '
        "message_count, tokens_in, tokens_out, redactions, redaction_rules, forked_from, forked_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk",
        (s.id, plain(s.user), plain(s.provider), plain(s.model), s.status, s.created_at, s.updated_at,
         s.archived_at, s.expires_at, len(messages), s.tokens_in, s.tokens_out, s.redactions,
         json.dumps(rules, sort_keys=True) if rules else None, s.forked_from, s.forked_at),
    )
    pk = int(cur.fetchone()[0])
    store._write_settings(conn, pk, s.id, s)
    fresh_total: dict[str, int] = {}
    key = store._integrity_key()
    chain = None
    rows, bodies, texts = [], [], []
    for m in messages:
        blob, fresh, clean = store._seal_text(m.content, "messages", "content", s.id, pk, m.seq)
        red = _merge_counts(m.redactions, fresh)
        fresh_total = _merge_counts(fresh_total, fresh)
        facts = (m.seq, m.role, m.status, m.created_at, plain(m.provider), plain(m.model), m.tokens_in,
                 m.tokens_out, int(m.tokens_estimated), m.latency_ms, m.first_token_ms,
                 json.dumps(red, sort_keys=True) if red else None)
        chain = integrity.link(key, chain, facts, blob) if key is not None else None
        rows.append((pk, *facts, sum(red.values()), chain))
        bodies.append((blob, pk, m.seq))
        texts.append((m.seq, clean or ""))
    if rows:
        # Two batched statements, not two round trips per message (PostgreSQL pipelines
        # executemany): each body finds its message by (session, seq), the unique key.
        conn.executemany(
            "INSERT INTO messages (session_pk, seq, role, status, created_at, provider, model, tokens_in, "
            "tokens_out, tokens_estimated, latency_ms, first_token_ms, redactions, redaction_count, chain) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany(
            "INSERT INTO message_bodies (id, content) SELECT id, ? FROM messages WHERE session_pk = ? AND seq = ?",
            bodies)
    for seq, text in texts:
        store.index_message(conn, pk, seq, text)
    store._add_redactions(conn, pk, fresh_total)
    # Texts last: their write reseals the session's digest over everything above.
    store._write_session_texts(conn, pk, s.id, s.title, s.system, s.metadata,
                               set_title=True, set_system=True, set_meta=True, new=True)
    return pk
