"""Streaming export of whole sessions: millions of messages at a flat memory cost.

The straightforward path (a query per session, a Message object, a dict and a
json.dumps per message) manages about 16,000 messages a second. Here messages come as
plain tuples from one query per batch of sessions, are decrypted with a lean opener,
and render.export_session_json writes their JSON directly (byte for byte what
render.message_dict + render.dumps give; tests/test_export_stream.py checks that).

Order and memory: session pks are read in export order from the index on
(created_at, pk) (migration 2), then sessions and their messages are fetched a batch
of sessions at a time (messages through the (session_pk, seq) index, already in order).
Nothing is sorted in memory and at most one batch is held. The caller runs this inside
Store.reading() so the whole export is one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sessctl import crypto
from sessctl.errors import CryptoError
from sessctl.store import integrity
from sessctl.models import Session, SessionFilter

_MESSAGE_COLS = (
    "m.session_pk, m.seq, m.role, b.content, m.created_at, m.status, m.provider, m.model, m.tokens_in, "
    "m.tokens_out, m.tokens_estimated, m.latency_ms, m.first_token_ms, m.redactions, m.chain"
)

# (seq, role, content, created_at, status, provider, model, tokens_in, tokens_out,
#  tokens_estimated, latency_ms, first_token_ms, redactions JSON text or None):
# the fields of models.Message, as a tuple (no object per message).
MessageRow = tuple[Any, ...]


def export_pk_batches(store: Any, f: SessionFilter, batch: int = 256) -> Iterator[list[int]]:
    """The pks of the sessions matching f, in export order (oldest first), `batch` at a
    time, from a cursor on the engine's side (PostgreSQL: a server-side cursor), so a
    store of any size is never held in memory."""
    where, params = store._where(f, "s")
    rows = store.db.stream(store.conn, f"SELECT s.pk FROM sessions s{where} ORDER BY s.created_at, s.pk", params)
    chunk: list[int] = []
    for (pk,) in rows:
        chunk.append(pk)
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export_rows(store: Any, f: SessionFilter, *, batch: int = 256) -> Iterator[tuple[Session, list[MessageRow]]]:
    """Sessions matching f, oldest first, each with its messages as MessageRows."""
    for chunk in export_pk_batches(store, f, batch):
        yield from rows_for(store, chunk)


def rows_for(store: Any, chunk: list[int]) -> Iterator[tuple[Session, list[MessageRow]]]:
    """The sessions with these pks (in this order; missing ones skipped) and their messages."""
    from sessctl.store import _SESSION_COLS

    conn = store.conn
    cipher = store.cipher()
    open_ = cipher.opener() if cipher is not None else None
    key = store._integrity_key()
    marks = ",".join("?" * len(chunk))
    bulk = store.db.bulk
    rows = {r[0]: r for r in bulk(conn, f"SELECT {_SESSION_COLS} FROM sessions WHERE pk IN ({marks})", chunk)}
    messages: dict[int, list[Any]] = {}
    for row in bulk(
        conn,
        f"SELECT {_MESSAGE_COLS} FROM messages m JOIN message_bodies b ON b.id = m.id "
        f"WHERE m.session_pk IN ({marks}) ORDER BY m.session_pk, m.seq",
        chunk,
    ):
        messages.setdefault(row[0], []).append(row)
    for pk in chunk:
        srow = rows.get(pk)
        if srow is None:  # deleted since the pks were read (a parallel export's worker snapshot)
            continue
        session = store._session(srow)
        msgs = messages.get(pk, [])
        if msgs and open_ is None:
            raise CryptoError(f"{store.location} holds encrypted data but has no key table; run `sessctl doctor`")
        prefix = crypto.aad_prefix("messages", "content", session.id, pk)
        out: list[MessageRow] = []
        for _, seq, role, blob, *rest in msgs:
            try:
                text = open_(blob, prefix + str(seq).encode())  # type: ignore[misc]
            except crypto.Tampered:
                raise CryptoError(
                    f"cannot decrypt messages.content of session {session.id!r} message {seq}: "
                    "the value was altered or moved; run `sessctl doctor`"
                ) from None
            out.append((seq, role, text, *rest[:-1]))
        if key is not None:
            _verify(key, session, msgs)
        yield session, out


def _verify(key: bytes, session: Session, msgs: list[Any]) -> None:
    """The session's integrity chain and digest over its exported messages (rows in
    _MESSAGE_COLS order: the chain's facts picked out of it)."""
    if [m[1] for m in msgs] != list(range(1, len(msgs) + 1)) or len(msgs) != session.message_count:
        raise integrity.tampered(session.id, "messages missing or out of order")
    prev = None
    for (_, seq, role, blob, created, status, provider, model, tin, tout, est, lat, first, red, chain) in msgs:
        prev = integrity.link(key, prev, (seq, role, status, created, provider, model, tin, tout, est, lat,
                                          first, red), blob)
        if chain is None or bytes(chain) != prev:
            raise integrity.tampered(session.id, f"message {seq} does not match its chain")
    facts, digest = session._seal
    if digest is None or bytes(digest) != integrity.header(key, facts, prev):
        raise integrity.tampered(session.id, "its header does not match its digest")
