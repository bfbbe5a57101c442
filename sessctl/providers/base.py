"""The provider protocol: what `send` needs from an LLM endpoint.

A provider turns a ChatRequest (system prompt, alternating user/assistant history
ending with the new user message, per-call options) into a ChatReply. It is async so
one `send` can call many sessions concurrently over a single transport.Client; the
echo provider ignores the client. Streaming providers call `on_text` with each piece
of text as it arrives; the ChatReply always carries the complete text.

On failure a provider raises sessctl.errors.ProviderError with a one-line message
naming the provider, the HTTP status and the endpoint's own error text, and with
`partial` set to whatever reply text arrived before the failure.

This module must stay cheap to import: no HTTP code at module level.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sessctl.config import ProviderConfig

if TYPE_CHECKING:  # pragma: no cover
    from sessctl.providers.transport import Client

OnText = Callable[[str], None]

MIN_SECRET_LEN = 12


def scrub(text: str, secrets: Sequence[str], placeholder: str) -> tuple[str, int]:
    """`text` with every occurrence of each secret replaced; and how many were replaced.
    Longest first, so a secret that contains another is replaced whole."""
    n = 0
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret and secret in text:
            n += text.count(secret)
            text = text.replace(secret, placeholder)
    return text, n


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: Sequence[ChatMessage]
    system: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True)
class ChatReply:
    text: str
    model: str
    tokens_in: int
    tokens_out: int
    tokens_estimated: bool
    latency_ms: int
    first_token_ms: int | None = None
    finish_reason: str | None = None


def estimate_tokens(text: str) -> int:
    """A rough count (about four characters a token) for endpoints that report none."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_request_tokens(request: ChatRequest) -> int:
    total = estimate_tokens(request.system or "")
    return total + sum(estimate_tokens(m.content) + 4 for m in request.messages)


class Provider(ABC):
    """One configured endpoint. Instances are cheap; make one per send."""

    needs_http: bool = True

    def __init__(self, config: ProviderConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = env

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def endpoint(self) -> str:
        """The URL a chat request is POSTed to (shown by --dry-run and in errors)."""

    @abstractmethod
    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        """The exact JSON body that `chat` would send; `send --dry-run` prints it."""

    @abstractmethod
    async def chat(
        self,
        request: ChatRequest,
        client: Client | None,
        on_text: OnText | None = None,
    ) -> ChatReply:
        """Call the endpoint; raise ProviderError on failure (after retries)."""

    def secrets(self) -> list[str]:
        """Secret values this provider sends (its API key, secret headers), so callers
        can keep them out of anything shown or stored. Values shorter than
        MIN_SECRET_LEN are left out: those are placeholders such as "ollama" or "EMPTY"
        that local servers accept, and scrubbing them would mangle ordinary words."""
        return []

    def preflight(self) -> None:
        """Raise UsageError when a call cannot even be tried (a missing API key, a bad
        base_url): the user's to fix, so `send` refuses before storing anything."""

    async def check(self, client: Client | None) -> str:
        """Reachability and auth in one short line (`providers test`); raises ProviderError."""
        return "ok"


def make_provider(config: ProviderConfig, env: Mapping[str, str]) -> Provider:
    """The Provider for a config; imports only the module of that kind."""
    if config.kind == "echo":
        from sessctl.providers.echo import EchoProvider

        return EchoProvider(config, env)
    if config.kind == "openai":
        from sessctl.providers.openai import OpenAIProvider

        return OpenAIProvider(config, env)
    if config.kind == "anthropic":
        from sessctl.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config, env)
    raise ValueError(f"unknown provider kind {config.kind!r}")  # config.py validates kinds


def open_client(max_connections: int) -> Client:
    """One shared client for a `send` (or `providers test`); per-call timeouts come from
    each provider. Plain http to a direct host goes over asyncio, anything else over
    httpx (providers/transport.py). Proxy variables (HTTP_PROXY, HTTPS_PROXY, NO_PROXY)
    are honoured, as users of HTTP tools expect."""
    from sessctl.providers.transport import Client

    return Client(max_connections)
