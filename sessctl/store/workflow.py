"""SQL for the conversation workflow (issue 12): `fork` copies a session, `retry`
changes the status of messages already stored.

Besides Store.append_messages and bulk.insert_full, these are the only functions that
write message rows or change them:

- `fork_session` inserts copies of messages (through `_insert_copies`, the one
  place copied messages are written);
- `set_message_statuses` changes the status of stored messages (retry: a replaced
  reply becomes `superseded`, an answered message `ok`).

So whatever must follow every message write is done in those two places as well:
each copy is put in the search index and linked into the new session's integrity
chain, and a status change re-links the chain from the first message it touched;
both end by resealing the session's digest.

Like bulk.py, every function takes the open Store and uses its transaction
(`Store.write`), its row lock (`get_session(lock=True)`) and its one sanitize+encrypt
path (`Store._put_text`, `Store._write_session_texts`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sessctl.errors import AlreadyExistsError, StorageError, UsageError
from sessctl.models import Message, Session
from sessctl.store import _MESSAGE_COLS, Store, _merge_counts, integrity

# Messages decrypted, re-sealed and inserted per round trip while forking: memory
# stays flat however long the session is.
FORK_BATCH = 500


class Conflict(StorageError):
    """The session changed between planning a change and storing it."""


# --- retry ------------------------------------------------------------------------------


@dataclass
class LastTurn:
    """A session's last turn: its user message and the replies after it."""

    user: Message
    replies: list[Message]
    message_count: int  # the session's count when read, to detect appends meanwhile

    @property
    def answer(self) -> Message | None:
        """The reply that currently answers it (status ok), if any."""
        return next((m for m in self.replies if m.status == "ok"), None)


def last_turn(store: Store, session: Session) -> LastTurn | None:
    """The last user message of the session with the replies after it; None when the
    session has no user message."""
    row = store.conn.execute(
        "SELECT max(seq) FROM messages WHERE session_pk = ? AND role = 'user'", (session.pk,)).fetchone()
    if row is None or row[0] is None:
        return None
    rows = store.conn.execute(
        f"SELECT {_MESSAGE_COLS} FROM messages m JOIN message_bodies b ON b.id = m.id "
        "WHERE m.session_pk = ? AND m.seq >= ? ORDER BY m.seq", (session.pk, row[0])).fetchall()
    msgs = [store._message(session, r) for r in rows]
    return LastTurn(msgs[0], msgs[1:], session.message_count)


def set_message_statuses(store: Store, session_pk: int, changes: Sequence[tuple[int, str, str]]) -> None:
    """Inside the caller's write transaction: for each (seq, expected status, new
    status), change the message's status. A message not in the expected status means
    another writer changed the turn meanwhile: Conflict, and the transaction rolls back."""
    conn = store.conn
    for seq, old, new in changes:
        cur = conn.execute("UPDATE messages SET status = ? WHERE session_pk = ? AND seq = ? AND status = ?",
                           (new, session_pk, seq, old))
        if cur.rowcount != 1:
            raise Conflict(f"message {seq} is no longer {old}")
    key = store._integrity_key()
    if changes and key is not None:
        # A status is one of the facts each chain link covers.
        integrity.relink(conn, key, session_pk, min(seq for seq, _, _ in changes))
        store._reseal(conn, session_pk)


# --- fork -------------------------------------------------------------------------------


@dataclass
class ForkResult:
    session: Session
    copied: int  # messages copied
    opened_question: bool  # --at named a question: its copy is unanswered


def fork_session(store: Store, origin_id: str, new_id: str, *, at: int | None, now: int) -> ForkResult:
    """Copy session `origin_id` (its header and messages 1..at, default all) into a new
    session `new_id`, in one transaction: all of it or nothing.

    Every copied value is opened under the origin's associated data and sealed under
    the new session's (new id, new pk), so it opens only there. Messages are copied
    `FORK_BATCH` at a time, and only those up to `at` are read. The origin's row stays
    locked throughout, so no send or retry changes it half way through the copy.

    `at` must end a turn, or name a user message: the copy of that question is then
    `unanswered` (its replies are not copied), so `retry` asks it again in the fork."""
    store.cipher(create=True)

    def tx(conn: Any) -> ForkResult:
        origin = store.get_session(origin_id, lock=True)
        if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (new_id,)).fetchone():
            raise AlreadyExistsError(f"session {new_id!r} already exists; fork into a new id")
        upto = origin.message_count if at is None else at
        if not 0 <= upto <= origin.message_count:
            raise UsageError(f"--at must be from 0 to {origin.message_count} (the messages of {origin_id!r}), "
                             f"not {upto}")
        opened = _check_cut(conn, origin, upto)
        pk = _insert_header(store, conn, origin, new_id, upto, now)
        header_red, header_rules = _header_redactions(conn, origin)
        tin = tout = red_total = 0
        fresh = conn.execute("SELECT redaction_rules FROM sessions WHERE pk = ?", (pk,)).fetchone()[0]
        rules = _merge_counts(json.loads(fresh) if fresh else {}, header_rules)
        done = 0
        chain: bytes | None = None
        while done < upto:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLS} FROM messages m JOIN message_bodies b ON b.id = m.id "
                "WHERE m.session_pk = ? AND m.seq > ? AND m.seq <= ? ORDER BY m.seq LIMIT ?",
                (origin.pk, done, upto, FORK_BATCH)).fetchall()
            if not rows:
                raise StorageError(f"session {origin_id!r} has fewer messages than its count says; run `sessctl doctor`")
            batch = [store._message(origin, row) for row in rows]
            if opened and batch[-1].seq == upto:
                batch[-1].status = "unanswered"
            reds, chain = _insert_copies(store, conn, new_id, pk, batch, chain)
            for m, red in zip(batch, reds):
                tin += m.tokens_in or 0
                tout += m.tokens_out or 0
                red_total += sum(red.values())
                rules = _merge_counts(rules, red)
            done = rows[-1][0]
        conn.execute(
            "UPDATE sessions SET message_count = ?, tokens_in = ?, tokens_out = ?, redactions = redactions + ?, "
            "redaction_rules = ? WHERE pk = ?",
            (upto, tin, tout, header_red + red_total, json.dumps(rules, sort_keys=True) if rules else None, pk))
        store._reseal(conn, pk)  # the digest over the header, the counters and the chain's end
        return ForkResult(store.get_session(new_id), upto, opened)

    return store.write(tx)  # type: ignore[no-any-return]


def _check_cut(conn: Any, origin: Session, upto: int) -> bool:
    """Whether cutting after message `upto` leaves whole turns (False), or leaves a
    question without its replies (True, it becomes unanswered); UsageError when the
    cut falls between the replies of one turn."""
    following = conn.execute("SELECT role FROM messages WHERE session_pk = ? AND seq = ?",
                             (origin.pk, upto + 1)).fetchone()
    if upto == 0 or following is None or following[0] == "user":
        return False
    last_role = conn.execute("SELECT role FROM messages WHERE session_pk = ? AND seq = ?",
                             (origin.pk, upto)).fetchone()[0]
    if last_role == "user":
        return True
    start, end = conn.execute(
        "SELECT (SELECT max(seq) FROM messages WHERE session_pk = ? AND seq <= ? AND role = 'user'), "
        "coalesce((SELECT min(seq) FROM messages WHERE session_pk = ? AND seq > ? AND role = 'user') - 1, ?)",
        (origin.pk, upto, origin.pk, upto, origin.message_count)).fetchone()
    raise UsageError(f"--at {upto} falls inside the turn of messages {start}-{end}; "
                     f"fork --at {end} (the whole turn) or --at {start} (its question, to ask again)")


def _insert_header(store: Store, conn: Any, origin: Session, new_id: str, upto: int, now: int) -> int:
    # The copy is a new conversation (active, created now); it keeps the origin's
    # owner, provider, model, options and context limits, and its expiry: copied
    # messages are not kept longer than the originals would have been.
    pk = int(conn.execute(
        'INSERT INTO sessions (id, "user", provider, model, status, created_at, updated_at, expires_at, '
        "forked_from, forked_at) VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?) RETURNING pk",
        (new_id, origin.user, origin.provider, origin.model, now, now, origin.expires_at,
         origin.id, upto)).fetchone()[0])
    store._write_settings(conn, pk, new_id, origin)
    store._write_session_texts(conn, pk, new_id, origin.title, origin.system, origin.metadata,
                               set_title=True, set_system=True, set_meta=True)
    return pk


def _header_redactions(conn: Any, origin: Session) -> tuple[int, dict[str, int]]:
    """The redactions the origin counted in its title, system prompt and metadata (its
    totals less its messages'): the copy of the header carries them over."""
    msg_total = 0
    msg_rules: dict[str, int] = {}
    for count, text in conn.execute(
            "SELECT redaction_count, redactions FROM messages WHERE session_pk = ? AND redaction_count > 0",
            (origin.pk,)):
        msg_total += count
        msg_rules = _merge_counts(msg_rules, json.loads(text) if text else {})
    rules = {k: v - msg_rules.get(k, 0) for k, v in origin.redaction_rules.items() if v - msg_rules.get(k, 0) > 0}
    return max(origin.redactions - msg_total, 0), rules


def _insert_copies(store: Store, conn: Any, session_id: str, pk: int, batch: Sequence[Message],
                   chain: bytes | None) -> tuple[list[dict[str, int]], bytes | None]:
    """Write copied messages under the new session: the one place fork writes messages.
    Each text goes through the store's sanitize+seal path under the new session's
    associated data; the rows go in two multi-row statements per batch (one round
    trip each, which is what a PostgreSQL server far away makes count). Returns each
    message's redaction counts (its own, plus any a newer rule set finds), and the
    integrity chain's value after the last of them (`chain`: its value before)."""
    key = store._integrity_key()
    reds: list[dict[str, int]] = []
    values: list[Any] = []
    blobs: dict[int, bytes | None] = {}
    texts: dict[int, str] = {}
    for m in batch:
        blob, fresh, clean = store._seal_text(m.content, "messages", "content", session_id, pk, m.seq)
        red = _merge_counts(m.redactions, fresh)
        reds.append(red)
        blobs[m.seq] = blob
        texts[m.seq] = clean or ""
        facts = (m.seq, m.role, m.status, m.created_at, m.provider, m.model, m.tokens_in, m.tokens_out,
                 int(m.tokens_estimated) if m.tokens_in is not None else None, m.latency_ms, m.first_token_ms,
                 json.dumps(red, sort_keys=True) if red else None)
        chain = integrity.link(key, chain, facts, blob) if key is not None else None
        values += [pk, *facts, sum(red.values()), chain]
    marks = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(batch))
    ids = conn.execute(
        "INSERT INTO messages (session_pk, seq, role, status, created_at, provider, model, tokens_in, "
        "tokens_out, tokens_estimated, latency_ms, first_token_ms, redactions, redaction_count, chain) "
        f"VALUES {marks} RETURNING id, seq", values).fetchall()
    bodies: list[Any] = []
    for mid, seq in ids:
        bodies += [mid, blobs[seq]]
    conn.execute(f"INSERT INTO message_bodies (id, content) VALUES {','.join(['(?, ?)'] * len(ids))}", bodies)
    for seq, text in texts.items():
        store.index_message(conn, pk, seq, text)
    return reds, chain
