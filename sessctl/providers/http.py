"""What every HTTP provider shares: auth from the environment, timeouts, the retry loop,
streaming over SSE, and one-line errors. The rules themselves (which failures are
retried, how long to wait, how error bodies read) live in policy.py.

Latency is measured per attempt (request sent to reply complete), so a backoff sleep
is not counted as the endpoint's latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sessctl.errors import ProviderError, UsageError
from sessctl.providers.base import (
    MIN_SECRET_LEN,
    ChatReply,
    ChatRequest,
    OnText,
    Provider,
    estimate_request_tokens,
    estimate_tokens,
    scrub,
)
from sessctl.providers.policy import (
    RETRY_STATUSES,
    backoff_delay,
    body_excerpt,
    error_message_from_json,
    one_line,
    retry_after_seconds,
)
from sessctl.providers.shape import BadReply, load_json, meta
from sessctl.providers.sse import SSEDecoder, SSEEvent
from sessctl.providers.transport import (
    Client,
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    ReadTimeout,
    Response,
    Timeouts,
    TransportError,
)

T = TypeVar("T")

# An error response is read this far: only its first line is shown.
ERROR_BODY_LIMIT = 64 * 1024


# --------------------------------------------------------------------------- attempt plumbing


def make_reply(
    request: ChatRequest,
    text: str,
    *,
    model: str | None,
    tokens_in: int | None,
    tokens_out: int | None,
    started: float,
    first_token_ms: int | None = None,
    finish_reason: str | None = None,
) -> ChatReply:
    """The ChatReply for a finished call; counts the endpoint did not give are estimated
    and the reply is marked so."""
    return ChatReply(
        text=text,
        model=model or request.model,
        tokens_in=tokens_in if tokens_in is not None else estimate_request_tokens(request),
        tokens_out=tokens_out if tokens_out is not None else estimate_tokens(text),
        tokens_estimated=tokens_in is None or tokens_out is None,
        latency_ms=ms_since(started),
        first_token_ms=first_token_ms,
        finish_reason=finish_reason,
    )


class StreamFailure(Exception):
    """Raised by `handle_event` for an error the endpoint reported inside the stream.

    `retryable` says whether the same request may succeed later (overloaded, rate
    limited); it is only acted on while no reply text has arrived.
    """

    def __init__(self, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


class _Retryable(Exception):
    """One attempt failed in a way that may succeed if tried again."""

    def __init__(self, detail: str, *, status: int | None = None, wait: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.wait = wait  # what the server asked for, if anything


@dataclass
class StreamState:
    """Per-attempt progress of a streamed reply (what `partial` is made of)."""

    started: float
    parts: list[str] = field(default_factory=list)
    first_token_ms: int | None = None
    model: str | None = None
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add_text(self, piece: str, on_text: OnText | None) -> None:
        if not piece:
            return
        if self.first_token_ms is None:
            self.first_token_ms = ms_since(self.started)
        self.parts.append(piece)
        if on_text is not None:
            on_text(piece)


def ms_since(start: float) -> int:
    """Whole milliseconds since a time.perf_counter() reading."""
    return int((time.perf_counter() - start) * 1000)


def _transport_reason(exc: BaseException) -> str:
    """The transport's message, or the OS error underneath when that says little."""
    import ssl  # loaded already (asyncio imports it); here only for the isinstance

    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    seen = 0
    while cause is not None and seen < 5:
        if isinstance(cause, ssl.SSLError):
            # An OSError too, with errno 1, which strerror would word "Operation not
            # permitted"; its own text says what failed (CERTIFICATE_VERIFY_FAILED...).
            return one_line(str(cause))
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            # asyncio words a refusal "Connect call failed (addr)"; the errno says why.
            if isinstance(cause.errno, int) and cause.errno > 0:
                return os.strerror(cause.errno)
            return str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return one_line(text) if text else type(exc).__name__


# --------------------------------------------------------------------------- the base class


class HTTPProvider(Provider):
    """A Provider over HTTP/JSON. Subclasses supply the API's URL, headers, body and parsing.

    The API key is read from the environment at call time and kept nowhere on the
    instance, so no repr, log line or error can carry it; error text is scrubbed of it
    as well, in case an endpoint echoes it back.
    """

    #: Path appended to base_url for a chat, and for the `check` probe.
    chat_path: str = ""
    models_path: str = ""

    # ---- what subclasses provide

    def auth_headers(self, key: str) -> dict[str, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_headers(self) -> dict[str, str]:
        return {}

    def parse_reply(self, data: Any, request: ChatRequest, started: float) -> ChatReply:  # pragma: no cover
        raise NotImplementedError

    def handle_event(self, event: SSEEvent, state: StreamState, on_text: OnText | None) -> None:  # pragma: no cover
        """Apply one SSE event to `state`; set `state.done` at the terminator."""
        raise NotImplementedError

    def stream_terminator(self) -> str:  # pragma: no cover
        raise NotImplementedError

    # ---- shared behaviour

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, endpoint={self.endpoint()!r})"

    def base_url(self) -> str:
        url = (self.config.base_url or "").strip()
        if not re.match(r"(?i)https?://[^/]", url):
            raise UsageError(
                f"provider {self.name!r}: base_url {url!r} is not an http:// or https:// URL; "
                "fix it in the config file"
            )
        return url.rstrip("/")

    def endpoint(self) -> str:
        return self.base_url() + self.chat_path

    def models_url(self) -> str:
        return self.base_url() + self.models_path

    def _secret_from_env(self, var: str, what: str, fix: str) -> str:
        value = (self.env.get(var) or "").strip()
        if not value:
            raise UsageError(
                f"provider {self.name!r} needs {what} in the environment variable {var}, "
                f"which is not set; export it, or change {fix} in the config"
            )
        # Refuse what is not a legal header value rather than let httpx quote it back
        # (with the secret) in an error message.
        if not all(" " < ch < "\x7f" for ch in value):
            raise UsageError(
                f"provider {self.name!r}: the environment variable {var} holds spaces, control or "
                "non-ASCII characters, which an HTTP header cannot carry; check how it was set"
            )
        return value

    def api_key(self) -> str | None:
        """The key from the variable `api_key_env` names; None when no variable is named."""
        var = self.config.api_key_env
        if not var:
            return None
        return self._secret_from_env(var, "an API key", "api_key_env")

    def secret_headers(self) -> dict[str, str]:
        """Headers whose values come from the environment (`headers_env`), e.g. Azure's
        `api-key`: read at call time like the API key, and scrubbed from errors alike."""
        return {
            name.lower(): self._secret_from_env(var, f"the {name} header", "headers_env")
            for name, var in self.config.headers_env.items()
        }

    def preflight(self) -> None:
        self.base_url()
        self.api_key()
        self.secret_headers()

    def headers(self, key: str | None, *, stream: bool = False) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "user-agent": _user_agent(),
        }
        headers.update(self.extra_headers())
        headers.update({k.lower(): v for k, v in self.config.headers.items()})
        headers.update(self.secret_headers())
        if key is not None:
            headers.update(self.auth_headers(key))
        return headers

    def timeout(self) -> Timeouts:
        # read also bounds the gap between two chunks of a stream, which keep-alive
        # comments reset; writes get the read budget, connect its own.
        return Timeouts(connect=self.config.connect_timeout, read=self.config.read_timeout)

    def error(self, url: str, detail: str, *, key: str | None, status: int | None = None,
              partial: str = "") -> ProviderError:
        # Scrub before shortening, so no prefix of a secret survives the cut.
        secrets = self.secrets() + ([key] if key and len(key) >= MIN_SECRET_LEN else [])
        message, _ = scrub(f"provider {self.name!r} ({url}): {detail}", secrets, "[REDACTED]")
        return ProviderError(one_line(message, limit=500), partial=partial, status=status)

    def http_failure(self, response: Response, raw: bytes) -> tuple[str, bool, float | None]:
        """(detail, retryable, wait) for a non-2xx response."""
        status = response.status_code
        try:
            message = error_message_from_json(load_json(raw, "the error")) if raw else None
        except BadReply:  # not JSON, or nested too deep to parse: shown as text below
            message = None
        if message is None and raw:
            message = body_excerpt(raw) or None  # an HTML page, or JSON of an unknown shape
        message = one_line(message or response.reason_phrase or "no error message")
        detail = f"HTTP {status}: {message}"
        should = response.headers.get("x-should-retry", "").strip().lower()
        retryable = status in RETRY_STATUSES
        if should in ("true", "false"):
            retryable = should == "true"
        return detail, retryable, retry_after_seconds(response.headers)

    @asynccontextmanager
    async def _client(self, client: Client | None) -> AsyncIterator[Client]:
        if client is not None:
            yield client
            return
        async with Client(1) as own:
            yield own

    async def with_retries(self, url: str, key: str | None, attempt: Callable[[], Awaitable[T]],
                           max_retries: int | None = None, deadline: float | None = None) -> T:
        """Run `attempt` until it succeeds, retrying _Retryable failures. `deadline` (a
        time.monotonic() reading) is when total_timeout runs out: a wait that would pass
        it fails now, with the real reason, rather than sleep into the timeout."""
        retries = self.config.max_retries if max_retries is None else max_retries
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except _Retryable as failed:
                wait = failed.wait
                if wait is not None and wait > self.config.backoff_max:
                    raise self.error(
                        url, f"{failed.detail} (server asks to retry after {wait:.0f} s, "
                        f"more than backoff_max {self.config.backoff_max:g} s)",
                        key=key, status=failed.status,
                    ) from None
                suffix = f" (after {tries} attempts)" if tries > 1 else ""
                if tries > retries:
                    raise self.error(url, failed.detail + suffix, key=key,
                                     status=failed.status) from None
                if wait is None:
                    wait = backoff_delay(tries - 1, self.config.backoff_base, self.config.backoff_max)
                if deadline is not None and time.monotonic() + wait >= deadline:
                    raise self.error(url, f"{failed.detail}{suffix}; no time left to retry within "
                                     f"total_timeout ({self.config.total_timeout:g} s)",
                                     key=key, status=failed.status) from None
                await asyncio.sleep(wait)

    async def _within_total_timeout(self, url: str, key: str | None, work: Awaitable[T],
                                    attempts: list[StreamState]) -> T:
        """`work`, cut off when total_timeout runs out (an endpoint sending a byte every
        few seconds, or keep-alive comments forever, never trips the read timeout)."""
        budget = asyncio.timeout(self.config.total_timeout)
        try:
            async with budget:
                return await work
        except TimeoutError:
            if not budget.expired():
                raise
            state = attempts[-1] if attempts else None
            raise self.error(
                url, f"no complete reply within total_timeout ({self.config.total_timeout:g} s)"
                + (self._incomplete(state) if state else ""),
                key=key, partial=state.text if state else "") from None

    async def _read_body(self, response: Response, url: str, key: str | None) -> bytes:
        """The whole body, refused past max_reply_bytes (before reading, when the
        response announces its length)."""
        limit = self.config.max_reply_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise self.error(url, self._too_large(f" (it announces {int(declared)} bytes)"), key=key)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise self.error(url, self._too_large(), key=key)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, more: str = "") -> str:
        return (f"the reply is larger than max_reply_bytes ({self.config.max_reply_bytes} bytes){more}; "
                "raise max_reply_bytes in the provider's config if this endpoint's replies really are")

    # ---- chat

    async def chat(self, request: ChatRequest, client: Client | None,
                   on_text: OnText | None = None) -> ChatReply:
        url = self.endpoint()
        key = self.api_key()  # before any I/O: a missing key is a usage error
        body = self.build_body(request)
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = self.headers(key, stream=request.stream)
        shown, flush = self.shown(on_text)
        attempts: list[StreamState] = []

        async def call() -> ChatReply:
            async with self._client(client) as http:
                return await self.with_retries(
                    url, key, lambda: self._chat_once(http, url, key, headers, payload, request, shown, attempts),
                    deadline=time.monotonic() + self.config.total_timeout,
                )

        try:
            return await self._within_total_timeout(url, key, call(), attempts)
        finally:
            flush()  # whatever the scrubber held back, now that nothing more can follow

    def reply_from_body(self, raw: bytes, request: ChatRequest, started: float) -> ChatReply:
        """A complete JSON body (also what a server that ignores stream=true sends) as a
        reply; BadReply when it holds none."""
        data = load_json(raw, "the response")
        message = error_message_from_json(data) if isinstance(data, dict) and "error" in data else None
        if message:
            raise BadReply(f"error in the response: {one_line(message)}")
        return self.parse_reply(data, request, started)

    async def _chat_once(self, http: Client, url: str, key: str | None,
                         headers: dict[str, str], payload: bytes, request: ChatRequest,
                         on_text: OnText | None, attempts: list[StreamState]) -> ChatReply:
        state = StreamState(started=time.perf_counter())
        attempts.append(state)
        try:
            async with http.stream("POST", url, content=payload, headers=headers,
                                   timeouts=self.timeout()) as response:
                if not response.is_success:
                    raw = await _read_some(response, ERROR_BODY_LIMIT)
                    detail, retryable, wait = self.http_failure(response, raw)
                    if retryable:
                        raise _Retryable(detail, status=response.status_code, wait=wait)
                    raise self.error(url, detail, key=key, status=response.status_code)
                ctype = response.headers.get("content-type", "")
                if request.stream and "text/event-stream" in ctype:
                    return await self._read_stream(response, url, key, request, state, on_text)
                raw = await self._read_body(response, url, key)
        except (ConnectTimeout, ReadTimeout) as exc:
            what = "connect" if isinstance(exc, ConnectTimeout) else "read"
            limit = self.config.connect_timeout if what == "connect" else self.config.read_timeout
            self._give_up_if_text(url, key, state, f"{what} timeout ({limit:g} s) mid-stream")
            raise _Retryable(f"no response within the {what} timeout ({limit:g} s)") from None
        except (ConnectFailed, ConnectionLost) as exc:
            reason = _transport_reason(exc)
            self._give_up_if_text(url, key, state, f"connection lost mid-stream: {reason}")
            verb = "cannot connect" if isinstance(exc, ConnectFailed) else "connection failed"
            raise _Retryable(f"{verb}: {reason}") from None
        except TransportError as exc:  # bad URL, proxy trouble, protocol misuse: not transient
            self._give_up_if_text(url, key, state, f"request failed mid-stream: {_transport_reason(exc)}")
            raise self.error(url, f"request failed: {_transport_reason(exc)}", key=key) from None

        try:
            reply = self.reply_from_body(raw, request, state.started)
        except BadReply as bad:
            raise self.error(url, bad.detail, key=key) from None
        if request.stream and on_text is not None and reply.text:
            on_text(reply.text)  # a server that ignored stream=true: deliver it in one piece
            reply = replace(reply, first_token_ms=reply.latency_ms)
        return reply

    def _give_up_if_text(self, url: str, key: str | None, state: StreamState, detail: str) -> None:
        if state.parts:
            raise self.error(url, detail + self._incomplete(state), key=key, partial=state.text) from None

    async def _read_stream(self, response: Response, url: str, key: str | None,
                           request: ChatRequest, state: StreamState,
                           on_text: OnText | None) -> ChatReply:
        decoder = SSEDecoder()

        def apply(events: list[SSEEvent]) -> None:
            for event in events:
                try:
                    self.handle_event(event, state, on_text)
                except StreamFailure as failure:
                    if failure.retryable and not state.parts:
                        raise _Retryable(failure.detail) from None
                    raise self.error(url, failure.detail + self._incomplete(state), key=key,
                                     partial=state.text) from None
                except BadReply as bad:
                    raise self.error(url, bad.detail + self._incomplete(state), key=key,
                                     partial=state.text) from None
                if state.done:
                    return

        limit, size = self.config.max_reply_bytes, 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise self.error(url, self._too_large() + self._incomplete(state), key=key, partial=state.text)
            apply(decoder.feed(chunk))
            if state.done:
                break
        if not state.done:
            apply(decoder.close())
        if not state.done:
            if not state.parts:
                raise _Retryable(f"the stream ended before {self.stream_terminator()} and before any reply text")
            raise self.error(
                url, f"the stream ended before {self.stream_terminator()}" + self._incomplete(state),
                key=key, partial=state.text,
            )
        return self.finish_stream(request, state)

    @staticmethod
    def _incomplete(state: StreamState) -> str:
        if not state.parts:
            return ""
        return f"; the reply is incomplete ({len(state.text)} characters received)"

    def finish_stream(self, request: ChatRequest, state: StreamState) -> ChatReply:
        return make_reply(
            request, state.text, model=state.model, tokens_in=state.tokens_in, tokens_out=state.tokens_out,
            started=state.started, first_token_ms=state.first_token_ms, finish_reason=state.finish_reason,
        )

    # ---- providers test

    async def check(self, client: Client | None) -> str:
        """GET the models list once (no retries: a probe should answer fast)."""
        url = self.models_url()
        key = self.api_key()
        headers = self.headers(key)
        headers.pop("content-type", None)

        async def once(http: Client) -> str:
            started = time.perf_counter()
            try:
                async with http.stream("GET", url, headers=headers, timeouts=self.timeout()) as response:
                    if response.is_success:
                        raw = await self._read_body(response, url, key)
                    else:
                        raw = await _read_some(response, ERROR_BODY_LIMIT)
            except (ConnectTimeout, ReadTimeout):
                raise _Retryable("no response within the timeout") from None
            except TransportError as exc:
                raise _Retryable(f"cannot connect: {_transport_reason(exc)}") from None
            ms = ms_since(started)
            if not response.is_success:
                detail, _, _ = self.http_failure(response, raw)
                raise self.error(url, detail, key=key, status=response.status_code)
            try:
                listed = meta(load_json(raw, "the models list")).get("data")
            except BadReply as bad:
                raise self.error(url, bad.detail, key=key) from None
            models = [m.get("id") for m in (listed if isinstance(listed, list) else []) if isinstance(m, dict)]
            line = f"ok in {ms} ms, {len(models)} model{'s' if len(models) != 1 else ''}"
            if self.config.model:
                state = "listed" if self.config.model in models else "not listed"
                line += f", {self.config.model!r} {state}"
            return line

        async def probe() -> str:
            async with self._client(client) as http:
                return await self.with_retries(url, key, lambda: once(http), max_retries=0)

        return await self._within_total_timeout(url, key, probe(), [])


async def _read_some(response: Response, limit: int) -> bytes:
    """At most about `limit` bytes of a body: an error page is read only as far as the
    one line shown of it (a 200 MB error page must not be loaded)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _user_agent() -> str:
    from sessctl import __version__

    return f"sessctl/{__version__}"
