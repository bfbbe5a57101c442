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

# What a secret becomes in streamed text: the marker the stored copy gets as well
# (conversation.SECRET_RULE), so the screen and the history read the same.
SECRET_PLACEHOLDER = "[REDACTED:provider_secret]"

MIN_SECRET_LEN = 12
# A run of this many characters of a secret is scrubbed wherever it appears, not only a
# whole copy: an endpoint that quotes most of a key back ("Incorrect API key: sk-...")
# shows it as surely as a full copy, and even its last 12 characters are too much.
# Shorter secrets (12-23 characters) use half their length, at least 8.
PARTIAL_RUN = 12
MIN_PARTIAL_RUN = 8


def _run_length(secret: str) -> int:
    return min(len(secret), max(MIN_PARTIAL_RUN, min(PARTIAL_RUN, (len(secret) + 1) // 2)))


def secret_spans(text: str, secrets: Sequence[str]) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) spans of `text` that are runs of at least
    _run_length(secret) characters of some secret (a whole copy is one such run).

    Found without scanning every window: any run of k characters of a secret contains
    a whole block secret[j:j+b] for j a multiple of b = k // 2, so only those few blocks
    are searched for (str.find, in C), and each hit is extended both ways while text and
    secret agree."""
    spans: list[tuple[int, int]] = []
    for secret in set(secrets):
        if not secret:
            continue
        k = _run_length(secret)
        b = max(1, k // 2)
        for j in range(0, len(secret) - b + 1, b):
            block = secret[j:j + b]
            pos = text.find(block)
            while pos != -1:
                start, sj = pos, j
                while start > 0 and sj > 0 and text[start - 1] == secret[sj - 1]:
                    start, sj = start - 1, sj - 1
                end, se = pos + b, j + b
                while end < len(text) and se < len(secret) and text[end] == secret[se]:
                    end, se = end + 1, se + 1
                if end - start >= k:
                    spans.append((start, end))
                pos = text.find(block, pos + 1)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _replace(text: str, spans: Sequence[tuple[int, int]], placeholder: str) -> str:
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], placeholder]
        last = end
    out.append(text[last:])
    return "".join(out)


def scrub(text: str, secrets: Sequence[str], placeholder: str) -> tuple[str, int]:
    """`text` with every copy of each secret, and every long run of one (see
    PARTIAL_RUN), replaced by `placeholder`; and how many were replaced."""
    spans = secret_spans(text, secrets) if secrets and text else []
    return (_replace(text, spans, placeholder), len(spans)) if spans else (text, 0)


class StreamScrubber:
    """Passes streamed text on to `out` with secrets scrubbed as `scrub` would.

    A secret can arrive split over several pieces, so the tail of what has arrived that
    could still be (or grow into) a run of a secret is held back until the next piece
    settles it, or until `flush()` at the end of the stream. Ordinary text is held back
    by a few characters at most: only a tail that occurs inside some secret waits."""

    def __init__(self, secrets: Sequence[str], placeholder: str, out: OnText) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._placeholder = placeholder
        self._out = out
        self._pending = ""

    def feed(self, piece: str) -> None:
        if not self._secrets:
            if piece:
                self._out(piece)
            return
        buf = self._pending + piece
        spans = secret_spans(buf, self._secrets)
        cut = len(buf) - self._tail_inside_a_secret(buf)
        for start, end in spans:
            if end >= cut:  # could still grow, or merge with a run that follows: settle it later
                cut = min(cut, start)
        done = [span for span in spans if span[1] <= cut]
        self._pending = buf[cut:]
        if cut:
            self._out(_replace(buf[:cut], done, self._placeholder))

    def flush(self) -> None:
        if self._pending:
            text, _ = scrub(self._pending, self._secrets, self._placeholder)
            self._pending = ""
            self._out(text)

    def _tail_inside_a_secret(self, buf: str) -> int:
        """The length of the longest suffix of `buf` found inside some secret. (If a
        suffix is not inside a secret, no longer one is, so each search stops early.)"""
        best = 0
        for secret in self._secrets:
            m = best + 1
            while m <= min(len(buf), len(secret)) and buf[-m:] in secret:
                best, m = m, m + 1
        return best


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
        """Secret values to keep out of anything shown or stored: this provider's API key
        and secret headers, and those of every other configured provider whose variable
        is set (`secret_envs`): a reply may quote any key the user has, and a session may
        move between providers. Values shorter than MIN_SECRET_LEN are left out: those
        are placeholders such as "ollama" or "EMPTY" that local servers accept, and
        scrubbing them would mangle ordinary words."""
        names = (self.config.api_key_env, *self.config.headers_env.values(), *self.config.secret_envs)
        values = {(self.env.get(name) or "").strip() for name in names if name}
        return sorted(v for v in values if len(v) >= MIN_SECRET_LEN)

    def shown(self, on_text: OnText | None) -> tuple[OnText | None, Callable[[], None]]:
        """`on_text` wrapped so no secret is passed on (the terminal, the public API's
        stream), and the function that passes on what it holds back at the end."""
        if on_text is None:
            return None, lambda: None
        scrubber = StreamScrubber(self.secrets(), SECRET_PLACEHOLDER, on_text)
        return scrubber.feed, scrubber.flush

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
