"""Per-session integrity: what binds a session's messages and header together.

Each value is sealed with associated data naming its place (crypto.aad), so a value
cannot be altered or moved. That alone leaves the *facts* open: a message deleted,
two turns swapped, a role flipped, a status, model or token count changed, a title or
metadata value replaced by an older sealed version of itself (valid ciphertext, same
place) or set to NULL, the owner changed. So:

- every message carries `chain` = MAC(previous message's chain, its facts, its body's
  GCM tag): a keyed hash chain over the session's messages in order;
- every session carries `digest` = MAC(its header facts, the tags of its sealed title,
  system prompt, metadata and settings, its counters, its message count, the last
  message's chain).

The MAC is keyed BLAKE2b under a key derived from the data key, so only a holder of
the key can make a digest that verifies. Every write keeps both in step (append,
import, updates of labels, TTL, key rotation with --reencrypt); `show`, `export` and
the library's get/messages/export verify them and fail with exit 6 on any mismatch;
`doctor` checks every session.

Not covered, on purpose: status, archived_at and updated_at (operational state that
bulk archive, cleanup and every send's "active now" mark change in SQL without the
key); whole sessions removed (nothing lists every session); and a rollback of the
whole store to an older copy of itself, which is consistent by construction. README's
storage section says so.

Encoding: each field is length-prefixed, so no choice of plaintext values (a provider
name containing a separator, say) can make two different fact lists hash alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b
from typing import Any

from sessctl.errors import CryptoError

TAG_BYTES = 16  # AES-GCM's tag: the last bytes of a sealed value
# A chain value is 128 bits, the strength of the GCM tag beside it: forging one without
# the key is a 2^-128 guess, and it is stored with every message (a longer MAC would
# add 16 bytes per message for nothing). A session digest, one per session, is 256.
LINK_BYTES = 16


def _enc(values: Iterable[Any]) -> bytes:
    parts = []
    for v in values:
        if v is None:
            parts.append("~")
        else:
            s = v.hex() if isinstance(v, (bytes, bytearray, memoryview)) else str(v)
            parts.append(f"{len(s)}:{s}")
    return "|".join(parts).encode("utf-8", "surrogatepass")


def tag(blob: Any) -> bytes | None:
    """A sealed value's GCM tag: unique to that encryption, so it binds the ciphertext."""
    if blob is None:
        return None
    b = bytes(blob)
    return b[-TAG_BYTES:]


def link(key: bytes, prev: bytes | None, facts: Sequence[Any], body: Any) -> bytes:
    """One message's chain value. `facts`: seq, role, status, created_at, provider,
    model, tokens_in, tokens_out, tokens_estimated, latency_ms, first_token_ms,
    redactions (the JSON text as stored)."""
    data = (prev or b"") + b"\x1e" + _enc(facts) + b"\x1e" + (tag(body) or b"")
    return blake2b(data, key=key, digest_size=LINK_BYTES).digest()


def header(key: bytes, facts: Sequence[Any], last_chain: bytes | None) -> bytes:
    """A session's digest. `facts`: id, pk, user, provider, model, created_at,
    expires_at, options (legacy plaintext), the tags of settings, title, system and
    metadata, message_count, tokens_in, tokens_out, redactions, redaction_rules,
    forked_from, forked_at (a fork's origin)."""
    data = b"sessctl session v1\x1e" + _enc(facts) + b"\x1e" + (last_chain or b"")
    return blake2b(data, key=key, digest_size=32).digest()


def tampered(session_id: str, what: str) -> CryptoError:
    return CryptoError(
        f"session {session_id!r} fails its integrity check ({what}): its messages or header were "
        "altered outside sessctl; run `sessctl doctor`"
    )


# --- SQL: recomputing chains and digests ---------------------------------------------------

# The columns a chain link covers, in `link`'s order, then the body.
LINK_COLS = ("m.seq, m.role, m.status, m.created_at, m.provider, m.model, m.tokens_in, m.tokens_out, "
             "m.tokens_estimated, m.latency_ms, m.first_token_ms, m.redactions, b.content")
# _MESSAGE_COLS' shape (store/__init__.py) with the body's tag in place of the body:
# what checking a whole chain needs, without reading or decrypting the values.
TAG_ROW_COLS = ("m.seq, m.role, substr(b.content, length(b.content) - 15), m.created_at, m.status, m.provider, "
                "m.model, m.tokens_in, m.tokens_out, m.tokens_estimated, m.latency_ms, m.first_token_ms, "
                "m.redactions, m.chain")

# The sessions columns a digest covers, in `header`'s order (tags taken in Python).
HEADER_COLS = ('id, pk, "user", provider, model, created_at, expires_at, options, settings, title, system, '
               "metadata, message_count, tokens_in, tokens_out, redactions, redaction_rules, forked_from, forked_at")


def header_facts(row: Sequence[Any]) -> list[Any]:
    """HEADER_COLS row → the facts `header` takes (sealed columns as their tags)."""
    (sid, pk, user, provider, model, created, expires, options, settings, title, system, metadata,
     count, tin, tout, red, red_rules, forked_from, forked_at) = row
    return [sid, pk, user, provider, model, created, expires, options, tag(settings), tag(title), tag(system),
            tag(metadata), count, tin, tout, red, red_rules, forked_from, forked_at]


def relink(conn: Any, key: bytes, pk: int, from_seq: int = 1) -> bytes | None:
    """Recompute the chain of session pk from message from_seq on (after a status
    change, or for all: from_seq=1); returns the last chain value."""
    prev = None
    if from_seq > 1:
        row = conn.execute("SELECT chain FROM messages WHERE session_pk = ? AND seq = ?",
                           (pk, from_seq - 1)).fetchone()
        prev = bytes(row[0]) if row and row[0] is not None else None
    updates = []
    for r in conn.execute(f"SELECT m.id, {LINK_COLS} FROM messages m JOIN message_bodies b ON b.id = m.id "
                          "WHERE m.session_pk = ? AND m.seq >= ? ORDER BY m.seq", (pk, from_seq)).fetchall():
        prev = link(key, prev, r[1:13], r[13])
        updates.append((prev, r[0]))
    if updates:
        conn.executemany("UPDATE messages SET chain = ? WHERE id = ?", updates)
    return prev


def reseal(conn: Any, key: bytes, pk: int) -> None:
    """Recompute session pk's digest from its row and its last message's chain."""
    row = conn.execute(f"SELECT {HEADER_COLS} FROM sessions WHERE pk = ?", (pk,)).fetchone()
    if row is None:
        return
    last = conn.execute("SELECT chain FROM messages WHERE session_pk = ? AND seq = ?", (pk, row[12])).fetchone()
    last_chain = bytes(last[0]) if last and last[0] is not None else None
    conn.execute("UPDATE sessions SET digest = ? WHERE pk = ?", (header(key, header_facts(row), last_chain), pk))


def rebuild_all(conn: Any, key: bytes, progress: Any = None) -> int:
    """Every session's chain and digest, recomputed (key rotation, first sealing).
    Inside the caller's write transaction; returns how many sessions."""
    last_pk, n = 0, 0
    while True:
        pks = [r[0] for r in conn.execute("SELECT pk FROM sessions WHERE pk > ? ORDER BY pk LIMIT 500",
                                          (last_pk,)).fetchall()]
        if not pks:
            return n
        for pk in pks:
            relink(conn, key, pk)
            reseal(conn, key, pk)
        n += len(pks)
        last_pk = pks[-1]
        if progress:
            progress(n)


def verify_messages(key: bytes, session_id: str, rows: Sequence[Sequence[Any]], prev: bytes | None) -> bytes | None:
    """Walk the chain over rows (LINK facts at [0:12], body at [12], stored chain at
    [13]) from prev; every stored link must match. Returns the last chain value."""
    for r in rows:
        prev = link(key, prev, r[0:12], r[12])
        stored = r[13]
        if stored is None or bytes(stored) != prev:
            raise tampered(session_id, f"message {r[0]} does not match its chain")
    return prev


def check_all(conn: Any, key: bytes, pks: list[int] | None = None) -> Iterable[tuple[str, str]]:
    """(session id, what is wrong) for every session (or those pks) whose chain or
    digest does not verify. Reads every message's facts and body tag; no decryption."""
    def sessions() -> Iterable[list[Any]]:
        if pks is not None:
            for i in range(0, len(pks), 500):
                chunk = pks[i:i + 500]
                yield conn.execute(f"SELECT {HEADER_COLS}, digest FROM sessions WHERE pk IN "
                                   f"({','.join('?' * len(chunk))}) ORDER BY pk", chunk).fetchall()
            return
        last = 0
        while True:
            rows = conn.execute(f"SELECT {HEADER_COLS}, digest FROM sessions WHERE pk > ? ORDER BY pk LIMIT 500",
                                (last,)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][1]

    for rows in sessions():
        for row in rows:
            sid, pk, count = row[0], row[1], row[12]
            msgs = conn.execute(f"SELECT {LINK_COLS}, m.chain FROM messages m JOIN message_bodies b ON b.id = m.id "
                                "WHERE m.session_pk = ? ORDER BY m.seq", (pk,)).fetchall()
            if [m[0] for m in msgs] != list(range(1, len(msgs) + 1)) or len(msgs) != count:
                yield sid, "messages missing or out of order"
                continue
            try:
                last_chain = verify_messages(key, sid, msgs, None)
            except CryptoError as exc:
                yield sid, exc.message.split("(", 1)[1].split(")", 1)[0]
                continue
            digest = row[19]
            if digest is None or bytes(digest) != header(key, header_facts(row[:19]), last_chain):
                yield sid, "its header does not match its digest"
