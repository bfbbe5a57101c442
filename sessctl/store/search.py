"""The blind search index: its SQL, and how a message's text becomes its row.

One row per message in `message_search` (schema step 5): (session_pk, seq, tags), where
`tags` is the SORTED set of the message's words' tags, two bytes each. A word's tag is
a keyed hash of the normalized word under a key derived from the data key, truncated
to 14 bits (crypto.Cipher.word_tag): 16,384 tags for a vocabulary of tens or hundreds
of thousands of words, so many words share every tag and a tag alone never says which
word it was. Sorting drops the order of the words; a word that occurs twice is stored once.

A search computes its words' tags, finds the messages whose row holds all of them (a
scan inside the database: `Engine.blob_contains`), then decrypts each candidate and
matches the real text (search_text.match): a candidate that only shares tags with the
query is dropped there. The index never decides a hit on its own, so a stale or
colliding tag can cost time, never a wrong result; a MISSING row would hide a message,
which is why every write path indexes in the transaction that writes the message
(`Store.index_message`) and doctor checks that every message has its row.

The two-byte encoding is self-aligning: a tag t is the bytes (0x80 | t >> 7, t & 0x7f),
so a first byte is always >= 0x80 and a second always < 0x80, and a needle can only
match at a tag boundary: `instr`/`position` over the raw blob is an exact membership test.

What it reveals to someone holding the database (no key): README, "What the search
index reveals".
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sessctl import crypto
from sessctl.search_text import index_words, tokens

Progress = Callable[[int, int], None]  # (messages done, messages in total)

_BATCH = 2000
_UPSERT = ("INSERT INTO message_search (session_pk, seq, tags) VALUES (?, ?, ?) "
           "ON CONFLICT (session_pk, seq) DO UPDATE SET tags = excluded.tags")


def _code(tag: int) -> int:
    """A tag's two bytes as one big-endian 16-bit number (increasing with the tag, so
    sorting codes sorts tags)."""
    return 0x8000 | (tag >> 7) << 8 | (tag & 0x7F)


# Per data key: word -> its tag's code. Indexing a message spends most of its time
# turning words into codes, so the lookups run in C (map over dict.get) and only
# words never seen before go through the keyed hash. Bounded; dropped with the key.
_CODES: weakref.WeakKeyDictionary[crypto.Cipher, dict[str, int]] = weakref.WeakKeyDictionary()


def _codes(cipher: crypto.Cipher, words: set[str]) -> set[int]:
    cache = _CODES.get(cipher)
    if cache is None or len(cache) > 500_000:
        cache = _CODES[cipher] = {}
    codes = set(map(cache.get, words))
    if None in codes:
        codes.discard(None)
        for w in words:
            if w not in cache:
                cache[w] = _code(cipher.word_tag(w))
                codes.add(cache[w])
    return codes  # type: ignore[return-value]


def encode_tags(cipher: crypto.Cipher, text: str) -> bytes:
    """A message's row value: the sorted distinct tags of its words (stopwords left
    out: search_text.STOPWORDS), two bytes each."""
    codes = sorted(_codes(cipher, index_words(set(tokens(text)))))
    return struct.pack(f">{len(codes)}H", *codes)


def needle(cipher: crypto.Cipher, word: str) -> bytes:
    """What a search looks for in the rows, for one normalized word."""
    return struct.pack(">H", _code(cipher.word_tag(word)))


def decode_tags(blob: bytes) -> list[int]:
    return [((blob[i] & 0x7F) << 7) | blob[i + 1] for i in range(0, len(blob) - 1, 2)]


# --- writing --------------------------------------------------------------------------------


def index_message(conn: Any, cipher: crypto.Cipher, session_pk: int, seq: int, text: str) -> None:
    """Index (or re-index) one message, inside the caller's write transaction."""
    conn.execute(_UPSERT, (session_pk, seq, encode_tags(cipher, text)))


def unindex_message(conn: Any, session_pk: int, seq: int) -> None:
    conn.execute("DELETE FROM message_search WHERE session_pk = ? AND seq = ?", (session_pk, seq))


def delete_session(conn: Any, session_pk: int) -> None:
    conn.execute("DELETE FROM message_search WHERE session_pk = ?", (session_pk,))


def backlog(conn: Any) -> int | None:
    """How many messages stored before the index existed wait to be indexed (None: none)."""
    row = conn.execute("SELECT messages FROM search_backlog WHERE id = 1").fetchone()
    return None if row is None else int(row[0])


_MESSAGES = ("SELECT m.id, s.id, s.pk, m.seq, b.content FROM messages m "
             "JOIN sessions s ON s.pk = m.session_pk JOIN message_bodies b ON b.id = m.id")


def _index_batches(store: Any, conn: Any, cipher: crypto.Cipher, where: str, total: int,
                   progress: Progress | None) -> int:
    """Index every message matching `where` (pass over messages in id order, in batches)."""
    done, last = 0, 0
    if progress:
        progress(0, total)
    while True:
        rows = conn.execute(f"{_MESSAGES} WHERE m.id > ? AND {where} ORDER BY m.id LIMIT ?",
                            (last, _BATCH)).fetchall()
        if not rows:
            return done
        conn.executemany(_UPSERT, [
            (spk, seq, encode_tags(cipher, store._open_text(blob, "messages", "content", sid, spk, seq) or ""))
            for _mid, sid, spk, seq, blob in rows])
        last = rows[-1][0]
        done += len(rows)
        if progress:
            progress(done, total)


def fill_backlog(store: Any, progress: Progress | None = None) -> int:
    """Index the messages that have no row yet (those stored before schema step 5), in
    one transaction; returns how many. The texts were sanitized when stored."""
    cipher = store.cipher()
    if cipher is None:
        return 0

    def tx(conn: Any) -> int:
        pending = backlog(conn)
        if pending is None:
            return 0  # another process did it meanwhile
        missing = "NOT EXISTS (SELECT 1 FROM message_search t WHERE t.session_pk = m.session_pk AND t.seq = m.seq)"
        n = _index_batches(store, conn, store.cipher(), missing, pending, progress)
        conn.execute("DELETE FROM search_backlog")
        return n

    return int(store.write(tx))


def rebuild(store: Any, progress: Progress | None = None) -> int:
    """Drop the whole index and index every message again, in one transaction (doctor
    --rebuild-search-index); returns how many messages were indexed."""

    def tx(conn: Any) -> int:
        cipher = store.cipher()
        conn.execute("DELETE FROM message_search")
        conn.execute("DELETE FROM search_backlog")
        if cipher is None:
            return 0
        total = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        return _index_batches(store, conn, cipher, "TRUE", total, progress)

    return int(store.write(tx))


# --- reading --------------------------------------------------------------------------------

Candidate = tuple[str, int, int, str, int, str, bytes]  # session id, pk, seq, role, created_at, status, content


def candidates(store: Any, needles: Sequence[bytes], where: tuple[str, list[Any]]) -> Iterator[Candidate]:
    """Messages whose index row holds every needle, in sessions matching `where` (the
    store's `_where(f, "s")`), with their ciphertext; inside the caller's read snapshot.
    No needles (a query of stopwords): every message in those sessions."""
    clauses = [store.db.blob_contains("t.tags") for _ in needles]
    params: list[Any] = list(needles)
    cond, cond_params = where
    if cond:
        clauses.append(cond.removeprefix(" WHERE "))
        params += cond_params
    sql = ("SELECT s.id, s.pk, m.seq, m.role, m.created_at, m.status, b.content FROM message_search t "
           "JOIN sessions s ON s.pk = t.session_pk "
           "JOIN messages m ON m.session_pk = t.session_pk AND m.seq = t.seq "
           "JOIN message_bodies b ON b.id = m.id "
           f"WHERE {' AND '.join(clauses) or 'TRUE'}")
    yield from store.db.stream(store.conn, sql, params)


def body(store: Any, session_pk: int, seq: int) -> bytes | None:
    """One message's ciphertext (for the snippets of the hits shown)."""
    row = store.conn.execute(
        "SELECT b.content FROM messages m JOIN message_bodies b ON b.id = m.id WHERE m.session_pk = ? AND m.seq = ?",
        (session_pk, seq)).fetchone()
    return None if row is None else row[0]


# --- doctor ---------------------------------------------------------------------------------


def stray_rows(conn: Any) -> int:
    """Index rows whose message no longer exists (the foreign key prevents them while
    it is enforced)."""
    return int(conn.execute(
        "SELECT count(*) FROM message_search t WHERE NOT EXISTS "
        "(SELECT 1 FROM messages m WHERE m.session_pk = t.session_pk AND m.seq = t.seq)").fetchone()[0])
