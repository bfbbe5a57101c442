"""Plain data passed between the store, the service and the renderers."""

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


def check_session_id(value: str) -> str:
    if not SESSION_ID.fullmatch(value):
        raise UsageError(
            f"invalid session id {value!r}: use 1-128 letters, digits or . _ : @ + - "
            "starting with a letter or digit"
        )
    return value


@dataclass
class Message:
    seq: int
    role: str  # "user" | "assistant"
    content: str
    created_at: int
    status: str = "ok"  # "ok" | "incomplete" (reply cut off) | "unanswered" (call failed)
    provider: str | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_estimated: bool = False
    latency_ms: int | None = None
    first_token_ms: int | None = None
    redactions: dict[str, int] = field(default_factory=dict)


@dataclass
class Session:
    pk: int
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
    redaction_rules: dict[str, int] = field(default_factory=dict)


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
    """Selects sessions; every field narrows. Times compare with last activity."""

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
