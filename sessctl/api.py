"""The public library: the sessions the CLI manages, from Python, sync and async.

    import sessctl

    with sessctl.open() as store:                     # same database, key and config as the CLI
        store.create("user-123", user="alice", system="You are terse.", metadata={"plan": "pro"})
        reply = store.send("user-123", "hi")          # history sent, both sides sanitized and stored
        print(reply.content, reply.tokens_out)

    async with sessctl.open_async(concurrency=16) as store:
        replies = await asyncio.gather(*(store.send(f"user-{i}", "hi") for i in range(100)))

Every CLI command that manages sessions is a call on a Client (the CLI is parsing and
printing around it), so a program and the CLI share data, encryption, redaction,
retention and errors. Errors are `sessctl.SessctlError` subclasses whose `exit_code`
is the CLI's (NotFoundError 3, AlreadyExistsError 4, ProviderError 5, ...).

Threads and tasks. A `Client` may be shared between threads: each thread gets its own
database connection, and sends run on one private event loop thread, so sends from
many threads share one HTTP connection pool and the `concurrency` bound. An
`AsyncClient` runs provider calls on the caller's event loop and database steps on a
small thread pool (one thread for SQLite, whose writers queue anyway), so the loop
never blocks on a transaction and a send holds no lock while waiting for a provider.
A cancelled send (task cancelled, Ctrl-C, a timeout) still stores the user's message,
marked unanswered, with any partial reply marked incomplete.
"""

from __future__ import annotations

import builtins
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

from sessctl.config import Config
from sessctl.errors import SessctlError, UsageError
from sessctl.models import Message, Reply, SearchHit, Session, SessionFilter
from sessctl.service import App

if TYPE_CHECKING:  # pragma: no cover
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime  # noqa: F401 - named in the When alias

# asyncio and concurrent.futures are imported where sends and async calls happen:
# every CLI command goes through a Client, and `sessctl list` must not pay for them.

T = TypeVar("T")
Duration = str | int  # "30d", "12h" ... or seconds
When = "str | int | datetime"  # ISO-8601, a duration ago ("7d"), Unix seconds, or a datetime

__all__ = ["AsyncClient", "AsyncReplyStream", "Client", "ReplyStream", "open", "open_async"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # an argument not given (None already means "remove")


def open(db: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None, *,
         env: Mapping[str, str] | None = None, concurrency: int = 8) -> Client:
    """Open the session store, resolved exactly as the CLI resolves it.

    `db`: a file path or a postgresql:// URL (default: $SESSCTL_DB, `[storage] url`,
    else ~/.local/share/sessctl/sessions.db); `config`: config.toml (default:
    $SESSCTL_CONFIG, else ~/.config/sessctl/config.toml); `env`: the environment to
    read (default os.environ: API keys, SESSCTL_KEY_FILE, SESSCTL_PASSPHRASE...);
    `concurrency`: provider calls in flight at once. Nothing is opened until needed.

    >>> import sessctl
    >>> with sessctl.open("/tmp/demo.db") as store:             # doctest: +SKIP
    ...     store.send("demo", "hello").content
    'hello'
    """
    return Client(_app(db, config, env), concurrency=concurrency)


def open_async(db: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None, *,
               env: Mapping[str, str] | None = None, concurrency: int = 8) -> AsyncClient:
    """`open` for asyncio programs: the same methods, awaitable.

    >>> async def main():                                        # doctest: +SKIP
    ...     async with sessctl.open_async(concurrency=25) as store:
    ...         return await asyncio.gather(*(store.send(f"u-{i}", "hi") for i in range(100)))
    """
    return AsyncClient(_app(db, config, env), concurrency=concurrency)


def _app(db: Any, config: Any, env: Mapping[str, str] | None) -> App:
    from sessctl import config as config_mod

    return App(config=config_mod.load(env=env, config_path=config, db_path=db))


# --- arguments ---------------------------------------------------------------------------


def _ids(ids: Sequence[str | Iterable[str]]) -> tuple[str, ...]:
    """archive("a", "b") and archive(["a", "b"]) alike."""
    out: list[str] = []
    for i in ids:
        if isinstance(i, str):
            out.append(i)
        else:
            out.extend(i)
    return tuple(out)


def _duration(value: Duration | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"a duration must be a string such as '30d' or whole seconds, not {value!r}")
    return f"{value}s"


def _when(value: When | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "timestamp"):  # a datetime (naive ones are local time, as datetime says)
        from sessctl.timeutil import iso

        return iso(int(value.timestamp()))
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"a time must be an ISO-8601 string, a duration ago, Unix seconds or a datetime, not {value!r}")
    from sessctl.timeutil import iso

    return iso(value)


class Client:
    """The session store, synchronous. Make one with `sessctl.open()`; close it (or use
    `with`) to release the database and the HTTP connections.

    >>> with sessctl.open() as store:                              # doctest: +SKIP
    ...     store.send("user-123", "hi").content
    'Hello!'
    """

    def __init__(self, app: App, *, concurrency: int = 8, owns_app: bool = True) -> None:
        self._app = app
        self._owns_app = owns_app
        self.concurrency = concurrency
        self._loop: _LoopThread | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> Config:
        """The resolved configuration (database, key file, providers).

        >>> store.config.database.display                          # doctest: +SKIP
        '/home/alice/.local/share/sessctl/sessions.db'
        """
        return self._app.config

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish: stop the send loop (its HTTP connections) and close the database.

        >>> store = sessctl.open(); store.close()                  # doctest: +SKIP
        """
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()
        if self._owns_app:
            self._app.close()

    # --- sessions ---------------------------------------------------------------------------

    def create(self, session_id: str | None = None, *, user: str | None = None, provider: str | None = None,
               model: str | None = None, system: str | None = None, title: str | None = None,
               metadata: Mapping[str, str] | None = None, ttl: Duration | None = None,
               options: Mapping[str, Any] | None = None, max_context_messages: int | None = None,
               max_context_tokens: int | None = None, exist_ok: bool = False,
               template: str | None = None) -> Session:
        """Create a session (a random id when none is given); AlreadyExistsError (exit 4)
        when it exists, unless exist_ok. Provider and model are fixed now, from the
        arguments or the configuration's defaults. `template` names a `[templates.NAME]`
        of config.toml (system prompt, provider, model, options, metadata, ttl, context
        limits); the other arguments win over it; an unknown name is UsageError (exit 2).

        >>> store.create("ticket-4411", user="alice", title="Refund", ttl="30d").id   # doctest: +SKIP
        'ticket-4411'
        >>> store.create("t-9", template="support", metadata={"ticket": "9"}).system   # doctest: +SKIP
        'You are a support agent for ACME.'
        """
        return self.create_result(session_id, user=user, provider=provider, model=model, system=system,
                                   title=title, metadata=metadata, ttl=ttl, options=options,
                                   max_context_messages=max_context_messages,
                                   max_context_tokens=max_context_tokens, exist_ok=exist_ok, template=template)[0]

    def create_result(self, session_id: str | None = None, **kw: Any) -> tuple[Session, bool]:
        """`create`, also saying whether the session was created (False: it existed
        and exist_ok was given).

        >>> store.create_result("user-123", exist_ok=True)[1]     # doctest: +SKIP
        False
        """
        from sessctl import service, timeutil

        ttl = _duration(kw.pop("ttl", None))
        req = service.CreateRequest(
            id=session_id, metadata=dict(kw.pop("metadata", None) or {}), options=dict(kw.pop("options", None) or {}),
            ttl=timeutil.parse_duration(ttl, what="ttl") if ttl else None, **kw)
        return service.create(self._app, req)

    def get(self, session_id: str, *, last: int | None = None) -> Session:
        """The session with its messages (the last N with `last`); NotFoundError (exit 3)
        when there is none. `.to_dict()` is exactly the object `export` prints.

        >>> store.get("user-123").messages[-1].content             # doctest: +SKIP
        'Hello!'
        """
        from sessctl import service

        session, messages = service.show(self._app, session_id, last=last)
        session.messages = messages
        return session

    def messages(self, session_id: str, last: int | None = None) -> builtins.list[Message]:
        """A session's messages in order (the last N with `last`).

        >>> [m.role for m in store.messages("user-123")]           # doctest: +SKIP
        ['user', 'assistant']
        """
        return self.get(session_id, last=last).messages or []

    def list(self, *, user: str | None = None, status: str = "active", model: str | None = None,
             provider: str | None = None, older_than: Duration | None = None, since: When | None = None,
             before: When | None = None, meta: Mapping[str, str] | None = None, limit: int | None = 50,
             where: SessionFilter | None = None) -> builtins.list[Session]:
        """Sessions, most recently active first, without their messages (`limit` None
        or 0: all). Filters as `sessctl list`: every one given must match; `meta`
        matches metadata pairs through the blind index (no decryption).

        >>> [s.id for s in store.list(user="alice", meta={"plan": "pro"})]   # doctest: +SKIP
        ['user-123']
        """
        return builtins.list(self.iter_sessions(where or self.filter(
            user=user, status=status, model=model, provider=provider, older_than=older_than, since=since,
            before=before, meta=meta), limit=limit))

    def iter_sessions(self, where: SessionFilter, *, limit: int | None = None,
                      decrypt: bool = True) -> Iterator[Session]:
        """`list` as a stream (for very many sessions); decrypt=False leaves title,
        system prompt and metadata unread (None/empty), which skips the key entirely.

        >>> sum(s.message_count for s in store.iter_sessions(store.filter(), decrypt=False))   # doctest: +SKIP
        1204
        """
        from sessctl import service

        return service.list_sessions(self._app, where, limit=limit, decrypt=decrypt)

    def filter(self, *, user: str | None = None, status: str = "all", model: str | None = None,
               provider: str | None = None, older_than: Duration | None = None, since: When | None = None,
               before: When | None = None, meta: Mapping[str, str] | None = None,
               ids: Iterable[str] = ()) -> SessionFilter:
        """A SessionFilter from the same arguments `list` takes (for `where=`).

        >>> store.archive(where=store.filter(user="alice", older_than="30d"))   # doctest: +SKIP
        ['user-123']
        """
        from sessctl import service

        if status not in ("active", "archived", "all"):
            raise UsageError(f"status must be active, archived or all, not {status!r}")
        f = service.make_filter(self._app, status=status, user=user, model=model, provider=provider,
                                older_than=_duration(older_than), since=_when(since), before=_when(before))
        if meta:
            f.meta = tuple((str(k), str(v)) for k, v in meta.items())
        return service.select(f, builtins.list(ids))

    def search(self, query: str, *, session: str | None = None, limit: int | None = 20,
               where: SessionFilter | None = None, **filters: Any) -> builtins.list[SearchHit]:
        """Messages matching `query` across sessions, best first: every word must
        match, "quoted phrases" as written, case and accents ignored. `session`
        searches one session (NotFoundError when it does not exist); filters are
        `list`'s (user, status, model, provider, older_than, since, before, meta), of
        every status by default; `limit` None or 0: all hits. `.to_dict()` of each hit is
        an element of `search --format json`. Searching never stores or caches plaintext.

        >>> [(h.session, h.seq, h.snippet) for h in store.search('"refund policy" digital', user="alice")]   # doctest: +SKIP
        [('user-123', 1, 'What is our refund policy for digital goods?')]
        """
        from sessctl import search

        if not isinstance(query, str):
            raise UsageError(f"the query must be a string, not {type(query).__name__}")
        return search.search(self._app, query, where or self.filter(**filters), session_id=session, limit=limit)

    def archive(self, *ids: str | Iterable[str], where: SessionFilter | None = None, dry_run: bool = False,
                **filters: Any) -> builtins.list[str]:
        """Archive the sessions named or matched (kept, hidden from `list`, refused by
        `send` until unarchived); returns the ids that changed.

        >>> store.archive(older_than="30d")                       # doctest: +SKIP
        ['s-1a2b3c', 'ticket-9']
        """
        from sessctl import service

        return service.archive(self._app, _ids(ids), where or self.filter(**filters), dry_run=dry_run)

    def unarchive(self, *ids: str | Iterable[str], where: SessionFilter | None = None, dry_run: bool = False,
                  **filters: Any) -> builtins.list[str]:
        """Make archived sessions active again; returns the ids that changed.

        >>> store.unarchive("user-123")                           # doctest: +SKIP
        ['user-123']
        """
        from sessctl import service

        return service.archive(self._app, _ids(ids), where or self.filter(**filters), dry_run=dry_run,
                               unarchive=True)

    def delete(self, *ids: str | Iterable[str], all: bool = False, where: SessionFilter | None = None,
               dry_run: bool = False, confirmed: Sequence[str] | None = None, vacuum: bool = False,
               **filters: Any) -> builtins.list[str]:
        """Delete sessions permanently (named, matched by filters, or all=True);
        returns the ids deleted, oldest first. Naming an unknown id is NotFoundError and
        deletes nothing. `confirmed`: delete only these of the matches (what a person
        was shown). `vacuum`: also reclaim the space their ciphertext held.

        >>> store.delete("user-123")                               # doctest: +SKIP
        ['user-123']
        """
        from sessctl import ops

        f = where or self.filter(**filters)
        if dry_run:
            return ops.delete_candidates(self._app, _ids(ids), f, all_sessions=all)
        return self.delete_result(*ids, all=all, where=f, confirmed=confirmed, vacuum=vacuum).deleted

    def delete_result(self, *ids: str | Iterable[str], all: bool = False, where: SessionFilter | None = None,
                      confirmed: Sequence[str] | None = None, vacuum: bool = False, **filters: Any) -> Any:
        """`delete`, returning the ops.DeleteResult (.deleted, .messages, .vacuumed).

        >>> store.delete_result(older_than="365d").messages        # doctest: +SKIP
        5120
        """
        from sessctl import ops

        return ops.delete(self._app, _ids(ids), where or self.filter(**filters), all_sessions=all,
                          confirmed=confirmed, vacuum=vacuum)

    def update(self, session_id: str, *, title: str | None | _Unset = UNSET, user: str | None | _Unset = UNSET,
               ttl: Duration | None | _Unset = UNSET, metadata: Mapping[str, str] | None = None,
               unset: Iterable[str] = (), system: str | None | _Unset = UNSET) -> Session:
        """Change a session's labels in one transaction: title, user, TTL (None
        removes it), system prompt (sealed like any other; None removes it), metadata
        merged with `metadata` and without the `unset` keys. Labels are not activity:
        retention clocks keep running.

        >>> store.update("user-123", metadata={"tier": "gold"}, unset=["trial"]).metadata   # doctest: +SKIP
        {'plan': 'pro', 'tier': 'gold'}
        """
        from sessctl import ops

        kw: dict[str, Any] = {}
        if not isinstance(title, _Unset):
            kw["title"] = title or ""
        if not isinstance(user, _Unset):
            kw["user"] = user or ""
        if not isinstance(system, _Unset):
            kw["system"] = system or ""
        if not isinstance(ttl, _Unset):
            kw["ttl"] = None if ttl is None else ops.parse_ttl(_duration(ttl) or "")
        pairs = {str(k): str(v) for k, v in (metadata or {}).items()}
        unset = builtins.list(unset)
        if not (kw or pairs or unset):
            raise UsageError("nothing to change: give title, user, system, ttl, metadata or unset")
        both = sorted(set(pairs) & set(unset))
        if both:
            raise UsageError(f"metadata key {both[0]!r} is both set and unset")
        if any(not str(k).strip() for k in [*pairs, *unset]):
            raise UsageError("a metadata key cannot be empty")
        return ops.update(self._app, session_id, meta_set=pairs or None, meta_unset=unset, **kw)

    def stats(self, *, by: str | None = None, since: When | None = None, before: When | None = None,
              where: SessionFilter | None = None, **filters: Any) -> dict[str, Any]:
        """Totals as `stats --format json` prints them (with `by`: user, model,
        provider or day, `{"by", "groups"}`). `since`/`before` count only messages in
        that window; other filters select sessions, of every status by default.

        >>> store.stats()["messages"]                              # doctest: +SKIP
        42
        """
        from sessctl import render

        return render.stats_document(self.stats_groups(by=by, since=since, before=before, where=where, **filters), by)

    def stats_groups(self, *, by: str | None = None, since: When | None = None, before: When | None = None,
                     where: SessionFilter | None = None, **filters: Any) -> builtins.list[tuple[Any, Any]]:
        """`stats` as (group key, models.Stats) pairs, key-sorted (one, keyed None, without `by`).

        >>> [(day, st.messages) for day, st in store.stats_groups(by="day", since="2d")]   # doctest: +SKIP
        [('2026-12-03', 40), ('2026-12-04', 12)]
        """
        from sessctl import service

        if by not in (None, "user", "model", "provider", "day"):
            raise UsageError(f"by must be user, model, provider or day, not {by!r}")
        window = service.time_window(self._app, _when(since), _when(before))
        return service.stats(self._app, where or self.filter(**filters), since=window[0], before=window[1], by=by)

    def export(self, *ids: str | Iterable[str], all: bool = False, where: SessionFilter | None = None,
               **filters: Any) -> Iterator[Session]:
        """Whole sessions with their messages, oldest first, one at a time, read from
        one consistent snapshot (`.to_dict()` of each is an `export --format jsonl` line).

        >>> for s in store.export(all=True, user="alice"):        # doctest: +SKIP
        ...     print(s.id, len(s.messages))
        """
        from sessctl import service

        def gen() -> Iterator[Session]:
            for session, messages in service.export(self._app, _ids(ids), where or self.filter(**filters),
                                                    all_sessions=all):
                session.messages = messages
                yield session

        return gen()

    def export_json(self, *ids: str | Iterable[str], all: bool = False, where: SessionFilter | None = None,
                    **filters: Any) -> Iterator[tuple[str | bytes, int]]:
        """`export`, as the JSON text of session objects, rendered straight from the
        rows (what `export --format json|jsonl` writes; several times faster than
        `to_dict()` per session): blocks of (text, n sessions), sessions joined by
        newlines; bytes when forked workers rendered them (large SQLite databases).

        >>> with open("backup.jsonl", "wb") as out:                 # doctest: +SKIP
        ...     for text, n in store.export_json(all=True):
        ...         out.write((text if isinstance(text, bytes) else text.encode()) + b"\\n")
        """
        from sessctl import service

        return service.export_json(self._app, _ids(ids), where or self.filter(**filters), all_sessions=all)

    def import_sessions(self, source: str | os.PathLike[str] | IO[bytes] | Iterable[Mapping[str, Any]], *,
                        on_conflict: str = "fail", dry_run: bool = False, name: str = "input",
                        size: int | None = None) -> Any:
        """Import `export` output (a JSON array or JSONL: a path, a binary file, or an
        iterable of session dicts), all or nothing; `on_conflict`: fail, skip, replace.
        Returns the ImportResult (.imported, .replaced, .skipped, .messages).

        >>> store.import_sessions("backup.jsonl", on_conflict="skip").imported   # doctest: +SKIP
        ['user-123', 'ticket-9']
        """
        import io

        from sessctl import importer

        if isinstance(source, (str, os.PathLike)):
            with builtins.open(source, "rb") as fh:
                return importer.import_sessions(self._app, fh, str(source), on_conflict=on_conflict,
                                                dry_run=dry_run)
        if hasattr(source, "read"):
            return importer.import_sessions(self._app, source, name, on_conflict=on_conflict,  # type: ignore[arg-type]
                                            dry_run=dry_run, size=size)
        from sessctl.render import dumps

        data = "\n".join(dumps(dict(d)) for d in source).encode()  # type: ignore[union-attr]
        return importer.import_sessions(self._app, io.BytesIO(data), "input", on_conflict=on_conflict,
                                        dry_run=dry_run)

    def cleanup(self, *, archive_after: Duration | None = None, delete_after: Duration | None = None,
                dry_run: bool = False, vacuum: bool = False, where: SessionFilter | None = None,
                **filters: Any) -> dict[str, Any]:
        """Apply the retention policy (config `[retention]`, overridden by the
        arguments; "off" turns a rule off): expired TTLs deleted, then delete_after,
        then archive_after. Returns the report `cleanup --format json` prints.

        >>> store.cleanup(archive_after="30d", delete_after="365d")["archived"]["sessions"]   # doctest: +SKIP
        12
        """
        from sessctl import retention

        return retention.report_dict(self.cleanup_report(
            archive_after=archive_after, delete_after=delete_after, dry_run=dry_run, vacuum=vacuum,
            where=where or self.filter(**filters)))

    def cleanup_report(self, *, archive_after: Duration | None = None, delete_after: Duration | None = None,
                       dry_run: bool = False, vacuum: bool = False, where: SessionFilter | None = None) -> Any:
        """`cleanup`, returning the retention.Report itself.

        >>> store.cleanup_report(dry_run=True).changed            # doctest: +SKIP
        3
        """
        from sessctl import retention

        pol = retention.policy(self._app.config.retention, str(self._app.config.config_path),
                               archive_after=_duration(archive_after), delete_after=_duration(delete_after))
        return retention.cleanup(self._app, where or self.filter(), pol, dry_run=dry_run, vacuum=vacuum)

    # --- sending ----------------------------------------------------------------------------

    def send(self, session_id: str | None, text: str, *, model: str | None = None, provider: str | None = None,
             options: Mapping[str, Any] | None = None, create: bool = True, unarchive: bool = False,
             continue_: bool = False, user: str | None = None, template: str | None = None) -> Reply:
        """Send `text` to a session with its history; store both sides (sanitized) and
        return the reply (`.session` names the session). A missing session is created
        (create=False: NotFoundError), owned by `user` and set up from `template`
        (both ignored for a session that exists; an unknown template is UsageError).
        `continue_=True` with session_id None sends to the most recently active
        session (of `user`, when given), as `send -c`. On a provider failure
        (ProviderError, exit 5, after retries) the message is kept, marked
        unanswered; a partial reply is kept marked incomplete.

        >>> store.send("user-123", "What is our refund policy?", model="gpt-4o").content   # doctest: +SKIP
        'Refunds are possible within 30 days...'
        >>> store.send(None, "And for digital goods?", continue_=True, user="alice").session   # doctest: +SKIP
        'user-123'
        >>> store.send("t-10", "My order is late", template="support").model   # doctest: +SKIP
        'gpt-4o'
        """
        sid = self._target(session_id, continue_, user)
        return self._loop_thread().run(lambda ac: ac.send(sid, text, model=model, provider=provider,
                                                          options=options, create=create, unarchive=unarchive,
                                                          user=user, template=template))

    def _target(self, session_id: str | None, continue_: bool, user: str | None) -> str:
        if continue_:
            if session_id is not None:
                raise UsageError("give a session id or continue_=True, not both")
            return self.latest(user=user).id
        if session_id is None:
            raise UsageError("no session: give its id, or continue_=True for the most recently active one")
        return session_id

    def latest(self, *, user: str | None = None) -> Session:
        """The most recently active session (of `user`, when given), without its
        messages: what `send -c` continues. NotFoundError (exit 3) when there is none.

        >>> store.latest(user="alice").id                          # doctest: +SKIP
        'user-123'
        """
        from sessctl import workflow

        return workflow.latest_session(self._app, user)

    def retry(self, session_id: str, *, model: str | None = None, provider: str | None = None,
              options: Mapping[str, Any] | None = None, unarchive: bool = False) -> Reply:
        """Ask again for the session's last message: when it is unanswered (a failed or
        interrupted send), answer it; when its turn is whole, get a new reply and mark
        the old one `superseded` (kept, shown by get/export/stats, never sent as context
        again). The question goes as stored, i.e. sanitized. NotFoundError (3) for a
        missing session, UsageError (2) when it has no message; a provider failure is
        ProviderError (5) and changes nothing but keeping a partial reply, incomplete.

        >>> store.retry("user-123", model="gpt-4o").content         # doctest: +SKIP
        'Refunds are possible within 30 days of delivery...'
        >>> [m.status for m in store.messages("user-123")]         # doctest: +SKIP
        ['ok', 'superseded', 'ok']
        """
        return self._loop_thread().run(lambda ac: ac.retry(session_id, model=model, provider=provider,
                                                           options=options, unarchive=unarchive))

    def fork(self, session_id: str, new_id: str, *, at: int | None = None) -> Session:
        """A new session `new_id` with `session_id`'s header and its messages 1..at
        (default all), each re-sealed under the new session, the origin recorded in
        `.forked_from`/`.forked_at`. `at` must end a turn, or name a question (copied
        as unanswered, for `retry`). NotFoundError (3), AlreadyExistsError (4) when
        new_id exists, UsageError (2) for a bad `at`.

        >>> store.fork("user-123", "user-123-b", at=4).forked_from   # doctest: +SKIP
        'user-123'
        """
        return self.fork_result(session_id, new_id, at=at).session

    def fork_result(self, session_id: str, new_id: str, *, at: int | None = None) -> Any:
        """`fork`, returning the workflow.Forked (.session, .copied, .opened_question).

        >>> store.fork_result("user-123", "b", at=3).opened_question   # doctest: +SKIP
        True
        """
        from sessctl import workflow

        return workflow.fork(self._app, session_id, new_id, at=at)

    def templates(self) -> builtins.list[dict[str, Any]]:
        """The configured `[templates.NAME]` tables, by name (what `templates list --json` prints).

        >>> [t["name"] for t in store.templates()]                  # doctest: +SKIP
        ['support', 'translator']
        """
        from sessctl import workflow

        return workflow.templates(self._app)

    def stream(self, session_id: str | None, text: str, *, model: str | None = None, provider: str | None = None,
               options: Mapping[str, Any] | None = None, create: bool = True,
               unarchive: bool = False, continue_: bool = False, user: str | None = None,
               template: str | None = None) -> ReplyStream:
        """`send`, yielding the reply's text as it arrives; the whole reply is stored
        when it ends, and then is `.reply`. Leaving the loop early stops the call and
        keeps what arrived, marked incomplete. `continue_`, `user`, `template` as for send.

        >>> s = store.stream("user-123", "Tell me a story")        # doctest: +SKIP
        >>> for piece in s:
        ...     print(piece, end="", flush=True)
        >>> s.reply.tokens_out
        311
        """
        sid = self._target(session_id, continue_, user)
        return ReplyStream(self._loop_thread(), sid, text, dict(model=model, provider=provider,
                                                                options=options, create=create,
                                                                unarchive=unarchive, user=user, template=template))

    def send_many(self, session_ids: Iterable[str], text: str, *, model: str | None = None,
                  provider: str | None = None, options: Mapping[str, Any] | None = None, create: bool = True,
                  unarchive: bool = False) -> builtins.list[Reply | SessctlError]:
        """The same message to several sessions concurrently (at most `concurrency`
        calls at once); a Reply or the error for each, in the order given.

        >>> [getattr(r, "content", r) for r in store.send_many(["a", "b"], "Summarise")]   # doctest: +SKIP
        ['...', '...']
        """
        ids = builtins.list(session_ids)
        return self._loop_thread().run(lambda ac: ac.send_many(
            ids, text, model=model, provider=provider, options=options, create=create, unarchive=unarchive))

    def _loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = _LoopThread(self._app, self.concurrency)
            return self._loop


class ReplyStream:
    """Iterates over a reply's text pieces (`Client.stream`); `.reply` once it ended.

    >>> s = store.stream("user-123", "hi")                         # doctest: +SKIP
    >>> "".join(s) == s.reply.content
    True
    """

    def __init__(self, loop: _LoopThread, session_id: str, text: str, kw: dict[str, Any]) -> None:
        import queue

        self.reply: Reply | None = None
        self._queue: Any = queue.SimpleQueue()
        self._done = object()
        self._started = False
        self._loop, self._session_id, self._text, self._kw = loop, session_id, text, kw
        self._handle: _Running | None = None

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a ReplyStream can be iterated once")
        self._started = True
        q = self._queue

        async def go(ac: AsyncClient) -> Reply:
            try:
                return await ac._send_one(self._session_id, self._text, on_text=q.put, stream=True, **self._kw)
            finally:
                q.put(self._done)

        self._handle = self._loop.start(go)
        finished = False
        try:
            while True:
                piece = q.get()
                if piece is self._done:
                    break
                yield piece
            self.reply = self._handle.result()
            finished = True
        finally:
            if not finished:
                self._handle.cancel()  # the consumer left early: stop the call, keep what arrived


class _Running:
    """A coroutine running on the loop thread, that can be waited for or cancelled
    (waiting, then, until the cancelled turn has been stored)."""

    def __init__(self, future: Any, finished: threading.Event) -> None:
        self._future = future
        self._finished = finished

    def result(self) -> Any:
        try:
            return self._future.result()
        except BaseException:
            # KeyboardInterrupt in the waiting thread, or any failure: never leave the
            # call running unseen; wait until its turn is stored.
            self.cancel()
            raise

    def cancel(self) -> None:
        self._future.cancel()
        self._finished.wait(60)


class _LoopThread:
    """A private event loop on a daemon thread, running a Client's sends."""

    def __init__(self, app: App, concurrency: int) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sessctl-loop", daemon=True)
        self.thread.start()
        self.client = AsyncClient(app, concurrency=concurrency, owns_app=False)

    def start(self, fn: Callable[[AsyncClient], Any]) -> _Running:
        import asyncio

        finished = threading.Event()

        async def wrapped() -> Any:
            try:
                return await fn(self.client)
            finally:
                finished.set()

        return _Running(asyncio.run_coroutine_threadsafe(wrapped(), self.loop), finished)

    def run(self, fn: Callable[[AsyncClient], Any]) -> Any:
        return self.start(fn).result()

    def close(self) -> None:
        import asyncio

        try:
            asyncio.run_coroutine_threadsafe(self.client.aclose(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()


class AsyncClient:
    """The session store for asyncio programs: `sessctl.open_async()`. The same
    methods as Client, awaitable; use `async with` or `await aclose()`.

    >>> async with sessctl.open_async(concurrency=16) as store:   # doctest: +SKIP
    ...     replies = await asyncio.gather(*(store.send(f"u-{i}", "hi") for i in range(100)))
    """

    def __init__(self, app: App, *, concurrency: int = 8, owns_app: bool = True) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1024:
            raise UsageError(f"concurrency must be a whole number from 1 to 1024, not {concurrency!r}")
        self._app = app
        self._owns_app = owns_app
        self.concurrency = concurrency
        self._sync = Client(app, concurrency=concurrency, owns_app=False)
        self._pool: ThreadPoolExecutor | None = None
        self._group: _GroupCommit | None = None
        self._http: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def config(self) -> Config:
        """The resolved configuration.

        >>> store.config.database.kind                            # doctest: +SKIP
        'postgresql'
        """
        return self._app.config

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections, the database threads and (when this client
        opened it) the database.

        >>> await store.aclose()                                   # doctest: +SKIP
        """
        http, self._http = self._http, None
        try:
            if http is not None:
                await http.aclose()
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True)
            if self._owns_app:
                self._app.close()

    # --- the database thread(s) -------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            # SQLite: one thread, as writers queue on the file anyway (aiosqlite's shape);
            # PostgreSQL: a few, as writers to different sessions run side by side.
            workers = 4 if self._app.config.database.kind == "postgresql" else 1
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sessctl-db")
        return self._pool

    async def _db(self, fn: Callable[[], T]) -> T:
        """Run a storage step off the event loop. A step that started finishes even if
        the caller is cancelled meanwhile (its transaction is never abandoned half way);
        the cancellation is then raised."""
        import asyncio

        return await _finished(asyncio.get_running_loop().run_in_executor(self._executor(), fn))

    async def _db_grouped(self, fn: Callable[[], T]) -> T:
        """`_db` for storing a finished turn: turns that finish while the database
        thread is busy are committed together, in one transaction (group commit): one
        fsync for many replies arriving at once. Each runs in a savepoint of its own,
        so one turn's expected error (a session deleted meanwhile) fails that turn only."""
        import asyncio

        if self._group is None:
            self._group = _GroupCommit(self._app, self._executor())
        return await _finished(self._group.submit(fn, asyncio.get_running_loop()))  # type: ignore[no-any-return]

    def _get_http(self) -> Any:
        if self._http is None:
            from sessctl.providers.base import open_client

            self._http = open_client(self.concurrency)
        return self._http

    def _get_semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            import asyncio

            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore

    # --- sending ----------------------------------------------------------------------------

    async def send_turns(self, session_ids: Sequence[str], opts: Any, *,
                         on_text: Callable[[str], None] | None = None,
                         stopped_by: builtins.list[int] | None = None) -> builtins.list[Any]:
        """The CLI's `send`: TurnResults (reply or error, what was kept) per session.

        >>> from sessctl.conversation import SendOptions           # doctest: +SKIP
        >>> [r.error for r in await store.send_turns(["a"], SendOptions(text="hi"))]
        [None]
        """
        from sessctl import conversation

        return await conversation.send_turns(
            self._app, session_ids, opts, get_http=self._get_http, semaphore=self._get_semaphore(),
            run_db=self._db, save_db=self._db_grouped, on_text=on_text, stopped_by=stopped_by)

    async def _send_one(self, session_id: str, text: str, *, on_text: Callable[[str], None] | None = None,
                        stream: bool = False, **kw: Any) -> Reply:
        (result,) = await self.send_turns([session_id], _send_options(text, stream=stream, **kw), on_text=on_text)
        if result.error is not None:
            raise result.error
        return _reply(result)

    async def send(self, session_id: str | None, text: str, *, model: str | None = None,
                   provider: str | None = None, options: Mapping[str, Any] | None = None, create: bool = True,
                   unarchive: bool = False, continue_: bool = False, user: str | None = None,
                   template: str | None = None) -> Reply:
        """Client.send, awaitable; many may run at once (at most `concurrency` calls).

        >>> replies = await asyncio.gather(*(store.send(f"u-{i}", "hi") for i in range(100)))   # doctest: +SKIP
        >>> (await store.send(None, "more", continue_=True)).session   # doctest: +SKIP
        'u-99'
        """
        if continue_ or session_id is None:
            session_id = await self._db(lambda: self._sync._target(session_id, continue_, user))
        return await self._send_one(session_id, text, model=model, provider=provider, options=options,
                                    create=create, unarchive=unarchive, user=user, template=template)

    async def retry(self, session_id: str, *, model: str | None = None, provider: str | None = None,
                    options: Mapping[str, Any] | None = None, unarchive: bool = False) -> Reply:
        """Client.retry, awaitable.

        >>> (await store.retry("user-123")).status                 # doctest: +SKIP
        'ok'
        """
        return await self._send_one(session_id, "", model=model, provider=provider, options=options,
                                    create=False, unarchive=unarchive, retry=True)

    async def fork(self, session_id: str, new_id: str, *, at: int | None = None) -> Session:
        """Client.fork, awaitable.

        >>> (await store.fork("user-123", "user-123-b")).message_count   # doctest: +SKIP
        4
        """
        return await self._db(lambda: self._sync.fork(session_id, new_id, at=at))

    async def latest(self, *, user: str | None = None) -> Session:
        """Client.latest, awaitable.

        >>> (await store.latest()).id                              # doctest: +SKIP
        'user-123'
        """
        return await self._db(lambda: self._sync.latest(user=user))

    async def templates(self) -> builtins.list[dict[str, Any]]:
        """Client.templates, awaitable.

        >>> [t["name"] for t in await store.templates()]           # doctest: +SKIP
        ['support']
        """
        return self._sync.templates()

    def stream(self, session_id: str, text: str, *, model: str | None = None, provider: str | None = None,
               options: Mapping[str, Any] | None = None, create: bool = True,
               unarchive: bool = False, user: str | None = None, template: str | None = None) -> AsyncReplyStream:
        """Client.stream for asyncio; `.reply` once it ended.

        >>> async for piece in store.stream("user-123", "Tell me a story"):   # doctest: +SKIP
        ...     print(piece, end="")
        """
        return AsyncReplyStream(self, session_id, text, dict(model=model, provider=provider, options=options,
                                                             create=create, unarchive=unarchive, user=user,
                                                             template=template))

    async def send_many(self, session_ids: Iterable[str], text: str, **kw: Any) -> builtins.list[Reply | SessctlError]:
        """Client.send_many, awaitable.

        >>> await store.send_many(["a", "b"], "hi")                # doctest: +SKIP
        [Reply(session='a', ...), Reply(session='b', ...)]
        """
        results = await self.send_turns(builtins.list(session_ids), _send_options(text, **kw))
        return [r.error if r.error is not None else _reply(r) for r in results]

    # --- the rest: Client's methods, run on the database thread -------------------------------

    async def create(self, session_id: str | None = None, **kw: Any) -> Session:
        """Client.create, awaitable.

        >>> await store.create("user-123", user="alice")   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.create(session_id, **kw))

    async def get(self, session_id: str, *, last: int | None = None) -> Session:
        """Client.get, awaitable.

        >>> (await store.get("user-123")).to_dict()["stats"]   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.get(session_id, last=last))

    async def messages(self, session_id: str, last: int | None = None) -> builtins.list[Message]:
        """Client.messages, awaitable.

        >>> [m.content for m in await store.messages("user-123", last=2)]   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.messages(session_id, last=last))

    async def list(self, **kw: Any) -> builtins.list[Session]:
        """Client.list, awaitable.

        >>> [s.id for s in await store.list(user="alice")]   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.list(**kw))

    async def search(self, query: str, **kw: Any) -> builtins.list[SearchHit]:
        """Client.search, awaitable.

        >>> [h.to_dict() for h in await store.search("invoice", session="ticket-9")]   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.search(query, **kw))

    async def archive(self, *ids: str | Iterable[str], **kw: Any) -> builtins.list[str]:
        """Client.archive, awaitable.

        >>> await store.archive(older_than="30d")   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.archive(*ids, **kw))

    async def unarchive(self, *ids: str | Iterable[str], **kw: Any) -> builtins.list[str]:
        """Client.unarchive, awaitable.

        >>> await store.unarchive("user-123")   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.unarchive(*ids, **kw))

    async def delete(self, *ids: str | Iterable[str], **kw: Any) -> builtins.list[str]:
        """Client.delete, awaitable.

        >>> await store.delete("user-123")   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.delete(*ids, **kw))

    async def update(self, session_id: str, **kw: Any) -> Session:
        """Client.update, awaitable.

        >>> await store.update("user-123", metadata={"plan": "pro"})   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.update(session_id, **kw))

    async def stats(self, **kw: Any) -> dict[str, Any]:
        """Client.stats, awaitable.

        >>> (await store.stats(by="model"))["groups"]   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.stats(**kw))

    async def cleanup(self, **kw: Any) -> dict[str, Any]:
        """Client.cleanup, awaitable.

        >>> (await store.cleanup(dry_run=True))["archived"]   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.cleanup(**kw))

    async def import_sessions(self, source: Any, **kw: Any) -> Any:
        """Client.import_sessions, awaitable.

        >>> (await store.import_sessions("backup.jsonl")).imported   # doctest: +SKIP
        """
        return await self._db(lambda: self._sync.import_sessions(source, **kw))

    async def export(self, *ids: str | Iterable[str], batch: int = 64, **kw: Any) -> AsyncIterator[Session]:
        """Client.export as an async iterator (sessions fetched `batch` at a time on the
        database thread).

        >>> [s.id async for s in store.export(all=True)]           # doctest: +SKIP
        ['user-123', 'ticket-9']
        """
        it = self._sync.export(*ids, **kw)

        def take() -> builtins.list[Session]:
            out = []
            for s in it:
                out.append(s)
                if len(out) >= batch:
                    break
            return out

        try:
            while True:
                chunk = await self._db(take)
                if not chunk:
                    return
                for s in chunk:
                    yield s
        finally:
            await self._db(lambda: it.close())  # type: ignore[attr-defined]


async def _finished(fut: Any) -> Any:
    """fut's result, waiting for it to finish even if the caller is cancelled meanwhile
    (a storage step is never abandoned half way); the cancellation is raised after."""
    import asyncio

    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True
        except BaseException:  # noqa: BLE001 - fut holds it; raised below
            break
    if cancelled:
        raise asyncio.CancelledError
    return fut.result()


class _GroupCommit:
    """Storage steps queued while one batch runs are run as the next batch, in one
    write transaction, on the database thread pool. At most MAX steps per batch, so a
    batch holds the database's write lock only for a short transaction."""

    MAX = 32

    def __init__(self, app: App, pool: ThreadPoolExecutor) -> None:
        self._app = app
        self._pool = pool
        self._lock = threading.Lock()
        self._pending: builtins.list[tuple[Callable[[], Any], Any, Any]] = []
        self._draining = False

    def submit(self, fn: Callable[[], Any], loop: Any) -> Any:
        fut = loop.create_future()
        with self._lock:
            self._pending.append((fn, fut, loop))
            start = not self._draining
            self._draining = True
        if start:
            self._pool.submit(self._drain)
        return fut

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending[:self.MAX], self._pending[self.MAX:]
                if not batch:
                    self._draining = False
                    return
            try:
                outcomes = self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiter gets it
                outcomes = [(False, exc)] * len(batch)
            for (_, fut, loop), (ok, value) in zip(batch, outcomes):
                loop.call_soon_threadsafe(_settle, fut, ok, value)

    def _run(self, batch: builtins.list[tuple[Callable[[], Any], Any, Any]]) -> builtins.list[tuple[bool, Any]]:
        if len(batch) == 1:
            try:
                return [(True, batch[0][0]())]
            except Exception as exc:  # noqa: BLE001
                return [(False, exc)]
        store = self._app.store(create=True)

        def tx(conn: Any) -> builtins.list[tuple[bool, Any]]:
            out: builtins.list[tuple[bool, Any]] = []
            for fn, _, _ in batch:
                conn.execute("SAVEPOINT turn")
                try:
                    out.append((True, fn()))
                except SessctlError as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT turn")
                    out.append((False, exc))
                conn.execute("RELEASE SAVEPOINT turn")
            return out

        return store.write(tx)


def _settle(fut: Any, ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class AsyncReplyStream:
    """Async iterator over a reply's text pieces (`AsyncClient.stream`); `.reply` once it ended.

    >>> s = store.stream("user-123", "hi")                         # doctest: +SKIP
    >>> "".join([p async for p in s]) == s.reply.content
    True
    """

    def __init__(self, client: AsyncClient, session_id: str, text: str, kw: dict[str, Any]) -> None:
        self.reply: Reply | None = None
        self._client, self._session_id, self._text, self._kw = client, session_id, text, kw

    async def __aiter__(self) -> AsyncIterator[str]:
        import asyncio

        q: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def go() -> Reply:
            try:
                return await self._client._send_one(self._session_id, self._text, on_text=q.put_nowait, stream=True,
                                                    **self._kw)
            finally:
                q.put_nowait(done)

        task = asyncio.ensure_future(go())
        try:
            while True:
                piece = await q.get()
                if piece is done:
                    break
                yield piece
            self.reply = await task
        finally:
            if not task.done():
                task.cancel()  # left early: stop the call; the turn is stored as cut short
                await asyncio.gather(task, return_exceptions=True)


def _send_options(text: str, *, model: str | None = None, provider: str | None = None,
                  options: Mapping[str, Any] | None = None, create: bool = True, unarchive: bool = False,
                  stream: bool = False, user: str | None = None, template: str | None = None,
                  retry: bool = False) -> Any:
    from sessctl.conversation import SendOptions

    if not isinstance(text, str):
        raise UsageError(f"the message must be a string, not {type(text).__name__}")
    return SendOptions(text=text, model=model, provider=provider, options=dict(options or {}), stream=stream,
                       create=create, unarchive=unarchive, user=user, template=template, retry=retry)


def _reply(result: Any) -> Reply:
    m = result.reply
    return Reply(session=result.session_id, content=m.content, model=m.model, tokens_in=m.tokens_in,
                 tokens_out=m.tokens_out, latency_ms=m.latency_ms, status=m.status, seq=m.seq,
                 provider=m.provider, tokens_estimated=m.tokens_estimated, first_token_ms=m.first_token_ms,
                 redactions=dict(result.redactions))
