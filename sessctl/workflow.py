"""The conversation workflow's use cases (issue 12) besides sending: fork a session,
find the session to continue, list templates. `retry` is a send (conversation.py,
SendOptions(retry=True)); `chat` (chat.py) drives these and sends interactively.

Like service.py: plain functions over an App that return data; no parsing, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessctl.errors import NotFoundError, UsageError
from sessctl.models import Session, SessionFilter, check_session_id
from sessctl.service import App


@dataclass
class Forked:
    """What `fork` made: the new session, how many messages it copied, and whether
    the last of them is a question left unanswered (fork --at a user message)."""

    session: Session
    copied: int
    opened_question: bool


def fork(app: App, origin_id: str, new_id: str, *, at: int | None = None) -> Forked:
    """Copy session `origin_id` into a new session `new_id`: its header and its
    messages 1..at (default all), each re-sealed under the new session, with the
    origin recorded. NotFoundError (3) for a missing origin, AlreadyExistsError (4)
    when new_id exists, UsageError (2) for an `at` that splits the replies of a turn."""
    from sessctl.store import workflow

    check_session_id(origin_id)
    check_session_id(new_id)
    if at is not None and (isinstance(at, bool) or not isinstance(at, int)):
        raise UsageError(f"--at must be a message number, not {at!r}")
    if origin_id == new_id:
        raise UsageError("fork into a new id (the two ids are the same)")
    store = app.store(create=False)
    if store is None:
        raise NotFoundError(f"session {origin_id!r} not found (the database {app.config.database} does not exist yet)")
    r = workflow.fork_session(store, origin_id, new_id, at=at, now=app.now())
    return Forked(r.session, r.copied, r.opened_question)


def latest_session(app: App, user: str | None = None) -> Session:
    """The most recently active session (of `user`, when given): what `send -c` and
    `chat -c` continue. Archived sessions are not candidates (send refuses them).
    NotFoundError (3) when there is none."""
    store = app.store(create=False)
    found = None
    if store is not None:
        found = next(iter(store.list_sessions(SessionFilter(status="active", user=user), limit=1, decrypt=False)),
                     None)
    if found is None:
        whose = f" of user {user!r}" if user is not None else ""
        raise NotFoundError(f"no active session{whose} to continue; name one with -s")
    return found  # type: ignore[no-any-return]


def templates(app: App) -> list[dict[str, Any]]:
    """The configured `[templates.NAME]`, by name, as `templates list --json` prints them."""
    out = []
    for name in sorted(app.config.templates):
        t = app.config.templates[name]
        out.append({
            "name": name, "provider": t.provider, "model": t.model, "system": t.system,
            "options": dict(t.options), "metadata": dict(t.metadata), "ttl": t.ttl,
            "context": {"max_messages": t.max_context_messages, "max_tokens": t.max_context_tokens},
        })
    return out
