"""Plain data passed between the store, the use cases, the renderers and programs
using the library (`Session`, `Message` and `Reply` are public: `sessctl.Session`...).

`to_dict()` gives exactly the JSON objects the CLI prints (`export`, `list`, `send`
--format json); `from_dict()` reads them back, validated as `import` validates."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sessctl.errors import UsageError

# Letters, digits and . _ : @ + - ; starts with a letter or digit; at most 128 chars.
# Wide enough for "user-123", "ticket:4411", "alice@example.com"; narrow enough to be
# safe in shells, file names, URLs and the 0x1f-separated associated data.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
STATUSES = ("active", "archived")
MESSAGE_STATUSES = ("ok", "incomplete", "unanswered", "superseded")


def check_session_id(value: str) -> str:
    if not SESSION_ID.fullmatch(value):
        raise UsageError(
            f"invalid session id {value!r}: use 1-128 letters, digits or . _ : @ + - "
            "starting with a letter or digit"
        )
    return value


@dataclass
class Message:
    """One stored message. `status`: "ok"; "unanswered" (a user message whose call
    failed); "incomplete" (a reply cut off); "superseded" (a reply that `retry`
    replaced with a new one). Only "ok" messages are sent as context.

    >>> [(m.role, m.status) for m in store.messages("user-123")]   # doctest: +SKIP
    [('user', 'ok'), ('assistant', 'ok')]
    """

    seq: int
    role: str  # "user" | "assistant"
    content: str
    created_at: int
    status: str = "ok"  # "ok" | "incomplete" (reply cut off) | "unanswered" (call failed) | "superseded"
    provider: str | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_estimated: bool = False
    latency_ms: int | None = None
    first_token_ms: int | None = None
    redactions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The message object of `export` (and `show --format json`).

        >>> Message(seq=1, role="user", content="hi", created_at=0).to_dict()["created_at"]
        '1970-01-01T00:00:00Z'
        """
        from sessctl.render import message_dict

        return message_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, seq: int | None = None) -> Message:
        """A message object as `export` writes it (UsageError, exit 2, when invalid).

        >>> Message.from_dict({"seq": 1, "role": "user", "content": "hi"}).content
        'hi'
        """
        from sessctl.importer import parse_message

        return parse_message(d, seq=seq)


@dataclass
class Session:
    """One conversation: its header, and its messages when they were asked for
    (`Client.get`, `export`); sessions from `list` carry `messages=None`.

    >>> s = store.get("user-123")                                  # doctest: +SKIP
    >>> (s.user, s.model, s.message_count, len(s.messages))
    ('alice', 'gpt-4o-mini', 2, 2)
    """

    pk: int = field(repr=False)
    id: str
    user: str | None
    provider: str | None
    model: str | None
    status: str
    created_at: int
    updated_at: int
    archived_at: int | None = None
    expires_at: int | None = None
    title: str | None = None
    system: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    max_context_messages: int | None = None
    max_context_tokens: int | None = None
    message_count: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    redactions: int = 0
    redaction_rules: dict[str, int] = field(default_factory=dict, repr=False)
    messages: list[Message] | None = field(default=None, repr=False)
    # A fork's origin (`fork`): the session it was copied from and the last seq copied.
    forked_from: str | None = None
    forked_at: int | None = None
    # The store's integrity record (header facts, digest), checked when messages are read.
    _seal: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The session object the CLI prints: with `messages`, exactly an element of
        `export --format json`; without, an element of `list --format json`.

        >>> import sessctl
        >>> with sessctl.open() as store:                      # doctest: +SKIP
        ...     store.get("user-123").to_dict()["stats"]["messages"]
        2
        """
        from sessctl.render import session_dict

        return session_dict(self, self.messages)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Session:
        """A session object as `export` writes it, validated as `import` does
        (UsageError, exit 2, naming the field, when it is not one). Absent optional
        fields get what `create` would give; `messages` are kept in order.

        >>> Session.from_dict({"id": "t-1", "messages": [{"role": "user", "content": "hi"}]}).message_count
        1
        """
        from sessctl.importer import parse_session

        session, messages = parse_session(None, d, "session")
        session.messages = messages
        return session


@dataclass
class Reply:
    """What `send` got back, as stored (sanitized): the assistant message of the turn.

    >>> import sessctl
    >>> with sessctl.open() as store:                          # doctest: +SKIP
    ...     r = store.send("user-123", "hi")
    ...     (r.content, r.status, r.seq)
    ('hi', 'ok', 2)
    """

    session: str
    content: str
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: int | None
    status: str = "ok"
    seq: int | None = None
    provider: str | None = None
    tokens_estimated: bool = False
    first_token_ms: int | None = None
    redactions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The object `send --format json` prints for this session.

        >>> store.send("user-123", "hi").to_dict()["reply"]          # doctest: +SKIP
        'Hello!'
        """
        d: dict[str, Any] = {
            "session": self.session, "reply": self.content, "model": self.model, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "latency_ms": self.latency_ms,
            "redactions": dict(sorted(self.redactions.items())),
        }
        d.update(seq=self.seq, status=self.status, provider=self.provider,
                 tokens_estimated=self.tokens_estimated, first_token_ms=self.first_token_ms)
        return d


@dataclass
class SearchHit:
    """One message that matches a search (`Client.search`, `sessctl search`): where it
    is, its relevance score, and a one-line snippet around the match (from the stored,
    sanitized text).

    >>> [(h.session, h.seq, h.role) for h in store.search("refund policy")]   # doctest: +SKIP
    [('user-123', 1, 'user'), ('ticket-9', 4, 'assistant')]
    """

    session: str
    seq: int
    role: str
    created_at: int
    status: str
    score: float
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        """The object `search --format json` prints for this hit.

        >>> SearchHit("a", 1, "user", 0, "ok", 1.5, "hi").to_dict()["created_at"]
        '1970-01-01T00:00:00Z'
        """
        from sessctl.timeutil import iso

        return {"session": self.session, "seq": self.seq, "role": self.role, "created_at": iso(self.created_at),
                "status": self.status, "score": round(self.score, 4), "snippet": self.snippet}


@dataclass
class NewSession:
    """What `create` (or `send` creating on the fly) asks the store to write."""

    id: str
    user: str | None = None
    provider: str | None = None
    model: str | None = None
    title: str | None = None
    system: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    max_context_messages: int | None = None
    max_context_tokens: int | None = None
    expires_at: int | None = None


@dataclass
class SessionFilter:
    """Selects sessions; every field narrows. Times compare with last activity.
    Build one with `Client.filter(...)` and pass it as `where=`.

    >>> store.list(where=store.filter(user="alice", status="all"), limit=None)   # doctest: +SKIP
    [Session(id='user-123', ...)]
    """

    ids: tuple[str, ...] = ()
    user: str | None = None
    status: str = "all"  # "active" | "archived" | "all"
    model: str | None = None
    provider: str | None = None
    updated_before: int | None = None
    updated_since: int | None = None
    meta: tuple[tuple[str, str], ...] = ()

    def is_empty(self) -> bool:
        return self == SessionFilter(status=self.status) and self.status == "all"


@dataclass
class Stats:
    sessions_total: int = 0
    sessions_active: int = 0
    sessions_archived: int = 0
    users: int = 0
    messages: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_avg: float | None = None
    latency_p50: int | None = None
    latency_p95: int | None = None
    redactions: int = 0
    redaction_rules: dict[str, int] = field(default_factory=dict)
    # Messages that are not `ok`, by status (unanswered, incomplete, superseded).
    statuses: dict[str, int] = field(default_factory=dict)
