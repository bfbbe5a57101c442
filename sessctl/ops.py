"""Operations use cases: delete, unarchive, meta, update, and the progress bars of
bulk work. Retention (`cleanup`) lives in retention.py, `import` in importer.py.

Like service.py: plain functions over an App that return data; no argument parsing,
no printing (except progress bars, which go to stderr only when it is a terminal).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sessctl import service, timeutil
from sessctl.errors import NotFoundError, UsageError
from sessctl.models import Session, SessionFilter, check_session_id
from sessctl.service import App

# Below these sizes a bar would only flash; above them the work takes long enough
# for someone at a terminal to wonder whether anything is happening.
PROGRESS_MIN_ITEMS = 50
PROGRESS_MIN_BYTES = 1 << 20


def wants_progress(app: App, length: int, minimum: int = PROGRESS_MIN_ITEMS) -> bool:
    return app.stderr_isatty and not app.quiet and length >= minimum


@contextlib.contextmanager
def progress(app: App, length: int, label: str, *,
             minimum: int = PROGRESS_MIN_ITEMS) -> Iterator[Callable[[int], None]]:
    """Yields `step(n)`. A click progress bar on stderr when it is a terminal (and not
    -q) and the work is big enough; otherwise step does nothing, so pipes and logs
    never see carriage-return noise."""
    if not wants_progress(app, length, minimum):
        yield lambda n: None
        return
    import click

    with click.progressbar(length=length, label=label, file=app.stderr) as bar:
        yield bar.update


def count(app: App, f: SessionFilter) -> int:
    """How many sessions f selects (sizes progress bars; no decryption)."""
    from sessctl.store import bulk

    store = app.store(create=False)
    return 0 if store is None else bulk.count(store, f)


# --- delete ------------------------------------------------------------------------------


@dataclass
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    messages: int = 0
    vacuumed: bool = False
    checkpointed: bool = True  # False: another reader kept old pages in the WAL for now


def delete_candidates(app: App, ids: Sequence[str], f: SessionFilter, *, all_sessions: bool) -> list[str]:
    """The ids a delete would remove right now (for --dry-run and the confirmation)."""
    from sessctl.store import bulk

    _check_selection(ids, f, all_sessions)
    store = app.store(create=False)
    if ids:
        service._require_ids(store, ids)
    if store is None:
        return []
    return [a.id for a in bulk.preview(store, service.select(f, ids))]


def _check_selection(ids: Sequence[str], f: SessionFilter, all_sessions: bool) -> None:
    if not ids and not all_sessions and f.is_empty():
        raise UsageError("name sessions to delete, or give a filter such as --older-than 90d (or --all)")
    for i in ids:
        check_session_id(i)


def delete(app: App, ids: Sequence[str], f: SessionFilter, *, all_sessions: bool = False,
           confirmed: Sequence[str] | None = None, vacuum: bool = False) -> DeleteResult:
    """Permanently delete the sessions named or matched, in one transaction.

    `confirmed`: the ids the user saw (dry run or prompt); only those may go, and only
    if they still match. Unknown named ids: exit 3, nothing deleted."""
    from sessctl.store import bulk

    _check_selection(ids, f, all_sessions)
    store = app.store(create=False)
    if store is None:
        if ids:
            service._require_ids(None, ids)
        return DeleteResult()
    f = service.select(f, ids)
    total = len(confirmed) if confirmed is not None else (
        bulk.count(store, f) if wants_progress(app, PROGRESS_MIN_ITEMS) else 0)
    with progress(app, total, "deleting") as step:
        gone = bulk.delete(store, f, only=confirmed, on_progress=step)
    result = DeleteResult([a.id for a in gone], sum(a.messages for a in gone))
    if vacuum:
        result.vacuumed = True
        result.checkpointed = bulk.vacuum(store)
    return result


# --- meta and update -----------------------------------------------------------------------


def get_metadata(app: App, session_id: str) -> dict[str, str]:
    session, _ = service.show(app, session_id, last=0)
    return session.metadata


def set_metadata(app: App, session_id: str, pairs: dict[str, str], unset: Sequence[str]) -> Session:
    """Merge `pairs` into the session's metadata and drop the `unset` keys (missing
    keys are fine, so the command is safe to repeat)."""
    both = sorted(set(pairs) & set(unset))
    if both:
        raise UsageError(f"metadata key {both[0]!r} is both set and unset")
    for key in unset:
        if not key.strip():
            raise UsageError("--unset needs a key")
    return update(app, session_id, meta_set=pairs, meta_unset=unset)


class _Unset:
    """Marks an argument not given (None already means "remove")."""


_UNSET = _Unset()


def update(
    app: App,
    session_id: str,
    *,
    title: str | _Unset = _UNSET,
    user: str | _Unset = _UNSET,
    ttl: int | None | _Unset = _UNSET,
    meta_set: dict[str, str] | None = None,
    meta_unset: Sequence[str] = (),
    system: str | _Unset = _UNSET,
) -> Session:
    """Change title, user, system prompt, TTL and metadata of one session in one
    transaction. An empty title, user or system prompt clears it; ttl=None removes the expiry."""
    from sessctl.store import bulk

    check_session_id(session_id)
    store = app.store(create=False)
    if store is None:
        raise NotFoundError(f"session {session_id!r} not found (the database {app.config.database} does not exist yet)")
    now = app.now()

    def tx(conn: object) -> Session:
        session: Session = store.update_session(
            session_id, now,
            title=title or None if isinstance(title, str) else None, set_title=isinstance(title, str),
            user=user or None if isinstance(user, str) else None, set_user=isinstance(user, str),
            meta_set=meta_set or None, meta_unset=meta_unset,
            system=system or None if isinstance(system, str) else None, set_system=isinstance(system, str),
        )
        if not isinstance(ttl, _Unset):
            bulk.set_expiry(store, store.conn, session_id,
                            None if ttl is None else timeutil.in_range(now + ttl, what="the expiry (now + --ttl)"))
        return session

    store.write(tx)
    return store.get_session(session_id)


def parse_ttl(text: str) -> int:
    seconds = timeutil.parse_duration(text, what="--ttl")
    if seconds <= 0:
        raise UsageError("--ttl must be longer than 0 (use --no-ttl to remove the expiry)")
    return seconds
