"""The use cases (create, list, show, archive, export, stats) as plain functions.

Each takes an App (configuration, streams, clock) and returns data; the CLI prints it.
`send` lives in conversation.py. Nothing here parses arguments or formats output.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from sessctl import timeutil
from sessctl.config import Config, pick_default_provider
from sessctl.errors import NotFoundError, UsageError
from sessctl.models import Message, NewSession, Session, SessionFilter, Stats, check_session_id


@dataclass
class App:
    """Everything a use case may touch besides its arguments: configuration, the
    clock, the lazily opened store and sanitizer, and where notices go. Injected, so
    tests (and embedding programs) never depend on the real terminal or environment.

    The CLI gives it the process's streams; the library (`sessctl.open`) gives it none:
    notices then go to the `sessctl` logger and nothing reads stdin. Safe to share
    between threads (the store keeps a connection per thread)."""

    config: Config
    stdin: TextIO | None = None
    stdout: TextIO | None = None
    stderr: TextIO | None = None
    quiet: bool = False
    debug: bool = False
    stdin_isatty: bool = False
    stdout_isatty: bool = False
    stderr_isatty: bool = False  # progress bars only when a person watches stderr
    _store: Any = field(default=None, repr=False)
    _sanitizer: Any = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.RLock, repr=False)

    @property
    def env(self) -> Mapping[str, str]:
        return self.config.env

    @property
    def color(self) -> bool:
        return self.stdout_isatty and "NO_COLOR" not in self.env

    def notice(self, message: str) -> None:
        if self.quiet:
            return
        if self.stderr is None:
            import logging

            logging.getLogger("sessctl").info(message)
            return
        self.stderr.write(f"sessctl: {message}\n")
        self.stderr.flush()

    def now(self) -> int:
        return timeutil.now(self.env)

    def sanitizer(self) -> Any:
        if self._sanitizer is None:
            with self._lock:
                if self._sanitizer is None:
                    from sessctl.sanitize import Sanitizer

                    self._sanitizer = Sanitizer.from_config(self.config.sanitize)
        return self._sanitizer

    def store(self, *, create: bool) -> Any:
        """The open Store; None for read-only use of a database that does not exist yet
        (reads of a missing database see an empty one and create no file)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from sessctl.store import Store

                    store = Store.open(self.config, _LazySanitizer(self), create=create)
                    if store is None:
                        return None
                    store.notice = self.notice
                    self._store = store
        return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class _LazySanitizer:
    """Builds the real sanitizer on first use: its rule set (many compiled regexes)
    is paid for only by commands that store text, never by `list`, `show` or `stats`."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def outbound(self) -> bool:
        return bool(self._app.sanitizer().outbound)

    def sanitize(self, text: str) -> tuple[str, dict[str, int]]:
        return self._app.sanitizer().sanitize(text)  # type: ignore[no-any-return]


# --- helpers --------------------------------------------------------------------


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """KEY=VALUE arguments → dict (the last of a repeated key wins)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid {what} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """Provider options `-o KEY=VALUE`: values are JSON when they parse (0.2, true,
    ["\\n"]), else plain strings."""
    import json

    out: dict[str, Any] = {}
    for key, raw in parse_pairs(pairs, "option").items():
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def new_session_id() -> str:
    import secrets

    return "s-" + secrets.token_hex(6)


# --- create ------------------------------------------------------------------------


@dataclass
class CreateRequest:
    id: str | None = None
    user: str | None = None
    provider: str | None = None
    model: str | None = None
    system: str | None = None
    title: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    ttl: int | None = None  # seconds
    options: dict[str, Any] = field(default_factory=dict)
    max_context_messages: int | None = None
    max_context_tokens: int | None = None
    exist_ok: bool = False
    template: str | None = None


def new_session_spec(app: App, session_id: str, *, user: str | None = None, provider: str | None = None,
                     model: str | None = None, template: str | None = None,
                     system: str | None = None) -> tuple[NewSession, str | None]:
    """The NewSession for an id, with the provider and model resolved now so a session
    keeps them even if the configuration's defaults change later; and the notice to
    show if the session is created with the fallback provider.

    `template` (a `[templates.NAME]` of the configuration) gives the system prompt,
    provider, model, options, metadata, TTL and context limits; the arguments given
    win over it. Its model goes only with its own provider: another --provider uses
    that provider's model unless --model names one."""
    tpl = app.config.template(template) if template is not None else None
    notice = None
    if provider is None and tpl is not None:
        provider = tpl.provider
    if provider is None:
        provider, notice = pick_default_provider(app.config)
    pcfg = app.config.provider(provider)
    if model is None and tpl is not None and tpl.model and tpl.provider in (None, provider):
        model = tpl.model
    spec = NewSession(id=session_id, user=user, provider=provider, model=model or pcfg.model)
    if tpl is not None:
        spec.system = tpl.system
        spec.metadata = dict(tpl.metadata)
        spec.options = dict(tpl.options)
        spec.max_context_messages, spec.max_context_tokens = tpl.max_context_messages, tpl.max_context_tokens
        if tpl.ttl:
            spec.expires_at = app.now() + timeutil.parse_duration(tpl.ttl, what=f"[templates.{tpl.name}] ttl")
    if system is not None:
        spec.system = system
    return spec, notice


def create(app: App, req: CreateRequest) -> tuple[Session, bool]:
    session_id = check_session_id(req.id) if req.id is not None else new_session_id()
    for name, value in (("--max-context-messages", req.max_context_messages),
                        ("--max-context-tokens", req.max_context_tokens)):
        check_count(value, name, 1)
    spec, notice = new_session_spec(app, session_id, user=req.user, provider=req.provider, model=req.model,
                                    template=req.template, system=req.system)
    spec.title = req.title
    spec.metadata = {**spec.metadata, **req.metadata}
    spec.options = {**spec.options, **req.options}
    if req.max_context_messages is not None:
        spec.max_context_messages = req.max_context_messages
    if req.max_context_tokens is not None:
        spec.max_context_tokens = req.max_context_tokens
    now = app.now()
    if req.ttl is not None:
        spec.expires_at = timeutil.in_range(now + req.ttl, what="the expiry (now + --ttl)")
    session, created = app.store(create=True).create_session(spec, now, exist_ok=req.exist_ok)
    if created and notice:
        app.notice(notice)
    return session, created


# --- read ---------------------------------------------------------------------------


MAX_COUNT = 2**31 - 1  # limits and counts: past this only a mistake, and past int64 a crash


def check_count(value: int | None, what: str, minimum: int = 0) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not minimum <= value <= MAX_COUNT):
        raise UsageError(f"{what} must be a whole number from {minimum} to {MAX_COUNT}, not {value!r}")
    return value


def list_sessions(app: App, f: SessionFilter, *, limit: int | None, decrypt: bool = True) -> Iterator[Session]:
    check_count(limit, "limit")
    store = app.store(create=False)
    if store is None:
        return iter(())
    return store.list_sessions(f, limit=limit or None, decrypt=decrypt)


def show(app: App, session_id: str, *, last: int | None = None) -> tuple[Session, list[Message]]:
    check_session_id(session_id)
    store = app.store(create=False)
    if store is None:
        raise NotFoundError(f"session {session_id!r} not found (the database {app.config.database} does not exist yet)")
    check_count(last, "--last")
    with store.reading():  # the header's counters and the transcript from one snapshot
        session = store.get_session(session_id)
        return session, store.messages(session, last=last)


def _require_ids(store: Any, ids: Sequence[str]) -> None:
    for i in ids:
        check_session_id(i)
    missing = store.missing_ids(ids) if store is not None else list(ids)
    if missing:
        raise NotFoundError(
            f"session{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} not found; nothing was changed"
        )


def select(f: SessionFilter, ids: Sequence[str]) -> SessionFilter:
    f.ids = tuple(dict.fromkeys(ids))
    return f


# --- archive -----------------------------------------------------------------------


def archive(app: App, ids: Sequence[str], f: SessionFilter, *, dry_run: bool = False,
            unarchive: bool = False) -> list[str]:
    """Archive (or unarchive) the sessions named or matched; returns the ids changed.
    Sessions already in the target state are left alone, so running twice is safe."""
    if not ids and f.is_empty():
        raise UsageError("name sessions to archive or give a filter such as --older-than 30d")
    store = app.store(create=False)
    if ids:
        _require_ids(store, ids)
    if store is None:
        return []
    target = "active" if unarchive else "archived"
    f = select(f, ids)
    if dry_run:
        return [s.id for s in store.list_sessions(f, decrypt=False, oldest_first=True) if s.status != target]
    return store.set_status(f, target, app.now())


# --- export ------------------------------------------------------------------------


def _export_selection(app: App, ids: Sequence[str], f: SessionFilter, all_sessions: bool) -> tuple[Any, SessionFilter]:
    """The store (None: no database yet) and the filter an export reads; unknown ids
    fail (exit 3) before anything is written."""
    if not ids and not all_sessions and f.is_empty():
        raise UsageError("name sessions to export, or give --all or a filter")
    store = app.store(create=False)
    if ids:
        _require_ids(store, ids)
    return store, select(f, ids)


def export(app: App, ids: Sequence[str], f: SessionFilter, *, all_sessions: bool) -> Iterator[tuple[Session, list[Message]]]:
    """Full sessions with decrypted messages, oldest first, one at a time."""
    store, f = _export_selection(app, ids, f, all_sessions)
    if store is None:
        return iter(())

    def gen() -> Iterator[tuple[Session, list[Message]]]:
        # One snapshot for the whole export: sessions written, sent to or re-keyed by
        # other processes meanwhile never appear half-way through.
        with store.reading():
            for s in store.list_sessions(f, oldest_first=True):
                yield s, store.messages(s)

    return gen()


def export_json(app: App, ids: Sequence[str], f: SessionFilter, *,
                all_sessions: bool) -> Iterator[tuple[str | bytes, int]]:
    """What `export` gives, as blocks of session objects' JSON text (n sessions joined by
    newlines; str, or UTF-8 bytes from workers): the fast path for json/jsonl
    (store.export rows rendered directly; forked workers for a large database, see
    export_workers.py). render.ExportWriter.write_block writes them."""
    store, f = _export_selection(app, ids, f, all_sessions)
    if store is None:
        return iter(())
    from sessctl import export_workers, render

    workers = export_workers.worker_count(app)
    if workers > 1:
        return export_workers.json_blocks(app, f, workers)

    def gen() -> Iterator[tuple[str | bytes, int]]:
        from sessctl.store.export import export_rows

        fast = render._FastMessages()
        with store.reading():  # one snapshot for the whole export
            for s, rows in export_rows(store, f):
                yield render.export_session_json(s, rows, fast), 1

    return gen()


class AtomicOutput:
    """Where `export -o PATH` writes.

    A regular file (or a new one) is written beside its destination (0600) and renamed
    into place only when the whole export succeeded, so a failed export never leaves a
    truncated file that looks complete. A symlink is followed: the file it names is
    replaced and the link stays a link. A FIFO, a character device (/dev/stdout) or a
    socket cannot be replaced: it is written to directly, as a shell redirect would. A
    directory is a usage error (exit 2), with nothing created."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tmp: str | None = None
        self._target: Path | None = None
        self.fh: IO[str] | None = None

    def __enter__(self) -> TextIO:
        import stat
        import tempfile

        target = Path(os.path.realpath(self.path))  # through symlinks, to the file itself
        try:
            st: os.stat_result | None = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot write {self.path}: it is a directory; give a file name")
        if st is not None and not stat.S_ISREG(st.st_mode):
            try:
                self.fh = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in __exit__
            except OSError as exc:
                raise UsageError(f"cannot write {self.path}: {exc.strerror}") from None
            return self.fh  # type: ignore[return-value]
        directory = target.parent
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror}") from None
        self._target = target
        self.fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        return self.fh  # type: ignore[return-value]

    def __exit__(self, exc_type: object, *rest: object) -> None:
        assert self.fh is not None
        try:
            self.fh.close()
        finally:
            if self._tmp is not None and self._target is not None:
                if exc_type is None:
                    os.replace(self._tmp, self._target)
                else:
                    os.unlink(self._tmp)


# --- stats -------------------------------------------------------------------------


def stats(app: App, f: SessionFilter, *, since: int | None = None, before: int | None = None,
          by: str | None = None) -> list[tuple[Any, Stats]]:
    store = app.store(create=False)
    if store is None:
        return [] if by else [(None, Stats())]
    return store.stats(f, since=since, before=before, by=by)


# --- filters -----------------------------------------------------------------------


def make_filter(
    app: App,
    *,
    status: str = "all",
    user: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    older_than: str | None = None,
    since: str | None = None,
    before: str | None = None,
    meta: Sequence[str] = (),
) -> SessionFilter:
    """The shared filter options → a SessionFilter. Times compare with last activity:
    `--older-than 30d` and `--before DATE` keep sessions idle since then, `--since`
    those active since then (a date or a duration ago)."""
    now = app.now()
    bounds = []
    if older_than is not None:
        bounds.append(timeutil.ago(now, timeutil.parse_duration(older_than, what="--older-than")))
    if before is not None:
        bounds.append(timeutil.parse_point(before, now, what="--before"))
    return SessionFilter(
        status=status,
        user=user,
        model=model,
        provider=provider,
        updated_before=min(bounds) if bounds else None,
        updated_since=timeutil.parse_point(since, now, what="--since") if since is not None else None,
        meta=tuple(parse_pairs(meta, "--meta").items()),
    )


def time_window(app: App, since: str | None, before: str | None) -> tuple[int | None, int | None]:
    now = app.now()
    return (
        timeutil.parse_point(since, now, what="--since") if since is not None else None,
        timeutil.parse_point(before, now, what="--before") if before is not None else None,
    )
