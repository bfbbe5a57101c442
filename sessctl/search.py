"""`search`: messages matching a query across sessions, ranked, from the encrypted store.

How a search runs (the index is in store/search.py, the text rules in search_text.py):
1. the query is parsed into words and phrases, and each word's tag is computed with
   the index key (derived from the data key);
2. one scan of the index, inside the database, keeps the messages whose row holds
   every tag, in the sessions the filters select;
3. each candidate is decrypted and matched against the real words and phrases; the
   truncated tags are shared by many words, so this drops candidates that only share
   tags with the query;
4. hits are ranked by relevance (BM25's term part over the decrypted text), then by
   recency, and the first `limit` get a snippet.
All of it reads one snapshot, and writes nothing: except once after an upgrade, when
messages stored before the index existed are indexed first (with a notice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessctl import search_text
from sessctl.errors import NotFoundError
from sessctl.models import SearchHit, SessionFilter, check_session_id


@dataclass
class _Found:
    session: str
    session_pk: int
    seq: int
    role: str
    created_at: int
    status: str
    length: int
    counts: tuple[int, ...]
    score: float = 0.0


def search(app: Any, query: str, f: SessionFilter, *, session_id: str | None = None,
           limit: int | None = 20) -> list[SearchHit]:
    """Hits for `query` in the sessions matching f (or in session `session_id` alone),
    best first; `limit` None or 0: all of them."""
    from sessctl.store import search as index

    q = search_text.parse_query(query)
    if session_id is not None:
        check_session_id(session_id)
        f.ids = (session_id,)
    store = app.store(create=False)
    if store is None:
        if session_id is not None:
            raise NotFoundError(f"session {session_id!r} not found (the database {app.config.database} "
                                "does not exist yet)")
        return []
    if session_id is not None and store.missing_ids([session_id]):
        raise NotFoundError(f"session {session_id!r} not found (see `sessctl list --status all`)")
    pending = index.backlog(store.conn)
    if pending:
        app.notice(f"indexing {pending} messages stored before search existed (once)")
        index.fill_backlog(store)
    with store.reading():
        cipher = store.cipher()
        if cipher is None:
            return []  # no key yet: nothing was ever stored
        needles = sorted({index.needle(cipher, w) for w in search_text.index_words(q.words)})
        found: list[_Found] = []
        for sid, spk, seq, role, created, status, blob in index.candidates(store, needles, store._where(f, "s")):
            text = store._open_text(blob, "messages", "content", sid, spk, seq) or ""
            m = search_text.match(q, text)
            if m is not None:
                found.append(_Found(sid, spk, seq, role, created, status, m[0], m[1]))
        if not found:
            return []
        average = sum(h.length for h in found) / len(found)
        for h in found:
            h.score = search_text.score(h.length, h.counts, average)
        # Relevance, then recency; session and seq make the order total (stable output).
        found.sort(key=lambda h: (-round(h.score, 9), -h.created_at, h.session, -h.seq))
        shown = found[:limit] if limit else found
        hits = []
        for h in shown:
            blob = index.body(store, h.session_pk, h.seq)
            text = store._open_text(blob, "messages", "content", h.session, h.session_pk, h.seq) or ""
            hits.append(SearchHit(session=h.session, seq=h.seq, role=h.role, created_at=h.created_at,
                                  status=h.status, score=h.score, snippet=search_text.snippet(q, text)))
        return hits


def rebuild_index(app: Any, progress: Any = None) -> int | None:
    """`doctor --rebuild-search-index`: the whole index made again from the decrypted
    messages, in one transaction. None when there is no database yet."""
    from sessctl.store import search as index

    store = app.store(create=False)
    if store is None:
        return None
    cb = progress(int(store.conn.execute("SELECT count(*) FROM messages").fetchone()[0])) if progress else None
    return index.rebuild(store, cb)
