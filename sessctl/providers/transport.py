"""HTTP for the providers: one small client interface, two engines behind it.

- `http://` to a host reached directly (no proxy applies): a minimal HTTP/1.1 client
  on asyncio streams, in this module. Plain http is what local endpoints speak
  (Ollama, vLLM, llama.cpp, LiteLLM on localhost or the LAN), and for them importing
  httpx (~45 ms: httpcore, anyio, h11, http.cookiejar, email...) and building its TLS
  context (~40 ms to load the CA bundle) cost several times the call itself.
- everything else (`https://`, a proxy from the environment, a URL the plain engine
  does not take): httpx, with full certificate verification and proxies as always.

Both engines raise the exceptions below, with the OS error (if any) as `__cause__`,
so retries, timeouts and error lines in providers/http.py do not depend on which one
carried a call. Neither follows redirects (a chat POST must not be replayed elsewhere).

The plain engine speaks what a chat call needs and no more: one request at a time per
connection, `Content-Length` request bodies, responses framed by Content-Length, chunked
encoding or the end of the connection, gzip/deflate bodies decoded (never asked for),
idle connections kept for the next call to the same host.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    import ssl
    import zlib

    import httpx

# Limits on what the plain engine accepts in a response head; a body is bounded by the
# provider (max_reply_bytes), which reads it piece by piece.
MAX_LINE = 64 * 1024
MAX_HEADERS = 200
READ_SIZE = 64 * 1024


# --------------------------------------------------------------------------- the interface


class TransportError(Exception):
    """A call failed below HTTP. The message says how; `__cause__` is the OS error."""


class ConnectFailed(TransportError):
    """Could not connect: refused, unreachable, unknown host. Worth retrying."""


class ConnectTimeout(TransportError):
    """No connection within the connect timeout. Worth retrying."""


class ReadTimeout(TransportError):
    """Nothing received (or nothing could be sent) within the read timeout."""


class ConnectionLost(TransportError):
    """The connection dropped, or the server broke HTTP, mid-message. Worth retrying."""


class RequestFailed(TransportError):
    """Not transient: a URL or proxy that cannot work, an unsupported encoding."""


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float  # each wait for bytes, and each write


class Response:
    """A response whose head has arrived; the body is read with aiter_bytes()."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]  # lower-case names

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def aiter_bytes(self) -> AsyncIterator[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])


class Client:
    """What a `send` (or `providers test`) shares across its calls: picks the engine per
    URL and keeps each engine's connections. `direct_http=False` sends plain http through
    httpx as well (the tests run every provider test over both engines that way)."""

    def __init__(self, max_connections: int = 8, *, direct_http: bool = True) -> None:
        self.max_connections = max(1, max_connections)
        self.direct_http = direct_http
        self._plain: _PlainHTTP | None = None
        self._httpx: _HttpxEngine | None = None

    def engine_for(self, url: str) -> str:
        """"plain" or "httpx": which engine carries a request to `url`."""
        if self.direct_http and _plain_target(url) is not None and not _proxied(url):
            return "plain"
        return "httpx"

    def stream(self, method: str, url: str, *, headers: Mapping[str, str], content: bytes = b"",
               timeouts: Timeouts) -> AbstractAsyncContextManager[Response]:
        if self.engine_for(url) == "plain":
            if self._plain is None:
                self._plain = _PlainHTTP(self.max_connections)
            return self._plain.stream(method, url, headers, content, timeouts)
        if self._httpx is None:
            self._httpx = _HttpxEngine(self.max_connections)
        return self._httpx.stream(method, url, headers, content, timeouts)

    async def aclose(self) -> None:
        try:
            if self._plain is not None:
                self._plain.close()
        finally:
            if self._httpx is not None:
                await self._httpx.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Target:
    host: str  # as connected to (no brackets)
    port: int
    host_header: str
    path: str  # request-target: path and query


_SAFE_URL = re.compile(r"[!-~]+")  # printable ASCII, no spaces: nothing to encode


def _plain_target(url: str) -> _Target | None:
    """The parts of a plain http URL the plain engine can send as they are, or None
    (https, user info, non-ASCII or characters needing encoding: httpx's job)."""
    if not url[:7].lower() == "http://" or not _SAFE_URL.fullmatch(url):
        return None
    try:
        parts = urlsplit(url)
        port = 80 if parts.port is None else parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or "@" in parts.netloc or parts.fragment:
        return None
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if parts.port in (None, 80) else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(host, port, host_header, path)


def _env_proxies() -> dict[str, str]:
    """Proxy settings as httpx reads them (urllib.request.getproxies): the environment,
    and on macOS and Windows the system settings too."""
    if sys.platform in ("darwin", "win32"):
        from urllib.request import getproxies

        return dict(getproxies())
    # urllib's getproxies_environment, without importing urllib.request (~12 ms): any
    # `<scheme>_proxy` variable in either case, the lower-case one winning.
    found: dict[str, str] = {}
    for lower_wins in (False, True):
        for name, value in os.environ.items():
            if len(name) > 6 and name[-6:].lower() == "_proxy" and value:
                if not lower_wins or name == name.lower():
                    found[name[:-6].lower()] = value
    if "REQUEST_METHOD" in os.environ:
        found.pop("http", None)  # CGI: HTTP_PROXY may come from a request header
    return found


def _proxied(url: str) -> bool:
    """Whether httpx would send `url` (plain http) through a proxy. When unsure, yes:
    the only cost of a wrong yes is speed, of a wrong no a bypassed proxy. So NO_PROXY
    counts only as `*` or the exact host name; httpx's other forms (suffixes) go to
    httpx, which applies them itself."""
    proxies = _env_proxies()
    if not (proxies.get("http") or proxies.get("all")):
        return False
    host = (urlsplit(url).hostname or "").lower()
    exempt = {h.strip().lower().strip("[]") for h in proxies.get("no", "").split(",")}
    return not ("*" in exempt or host in exempt)


# --------------------------------------------------------------------------- the plain engine


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):  # already closed, or its loop is gone
            pass


def _lost(detail: str, cause: BaseException | None = None) -> ConnectionLost:
    exc = ConnectionLost(detail)
    exc.__cause__ = cause
    return exc


class _PlainResponse(Response):
    def __init__(self, conn: _Conn, status: int, reason: str, headers: dict[str, str],
                 framing: str, length: int | None, keep_alive: bool, timeouts: Timeouts) -> None:
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers
        self._conn = conn
        self._framing = framing  # "none" | "length" | "chunked" | "close"
        self._length = length
        self._keep_alive = keep_alive
        self._timeouts = timeouts
        self._done = framing == "none"
        self._decoder = _decoder(headers.get("content-encoding", ""))

    @property
    def reusable(self) -> bool:
        return self._done and self._keep_alive and self._framing != "close"

    async def _read(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeouts.read):
                return await self._conn.reader.read(n)
        except TimeoutError:
            raise ReadTimeout("timed out reading the response") from None
        except OSError as exc:
            raise _lost(f"connection lost: {exc}", exc) from None

    async def _line(self) -> bytes:
        return await _read_line(self._conn.reader, self._timeouts.read)

    async def _exactly(self, left: int) -> AsyncIterator[bytes]:
        """The next `left` bytes of the body, as they arrive."""
        while left:
            data = await self._read(min(left, READ_SIZE))
            if not data:
                raise _lost("peer closed connection without sending complete message body")
            left -= len(data)
            yield data

    async def _raw(self) -> AsyncIterator[bytes]:
        if self._framing == "length":
            async for data in self._exactly(self._length or 0):
                yield data
        elif self._framing == "chunked":
            while True:
                size_line = (await self._line()).split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_line):
                    raise _lost(f"malformed chunk size {size_line[:20]!r}")
                left = int(size_line, 16)
                if left == 0:
                    while (await self._line()).strip():  # trailer fields, ignored
                        pass
                    break
                async for data in self._exactly(left):
                    yield data
                if (await self._line()).strip():
                    raise _lost("malformed chunked encoding (no CRLF after a chunk)")
        elif self._framing == "close":
            while data := await self._read(READ_SIZE):
                yield data
        self._done = True

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        decoder = self._decoder
        async for data in self._raw():
            if decoder is None:
                yield data
                continue
            # max_length bounds each piece: a small compressed body can inflate to
            # gigabytes, and the provider's size limit must see it grow.
            out = self._inflate(decoder, data)
            while out:
                yield out
                out = self._inflate(decoder, decoder.unconsumed_tail)
        if decoder is not None and (rest := self._inflate(decoder, None)):
            yield rest

    def _inflate(self, decoder: zlib._Decompress, data: bytes | None) -> bytes:
        """The next piece of decoded body (`data` None: what is left at the end)."""
        try:
            return decoder.flush() if data is None else decoder.decompress(data, READ_SIZE)
        except Exception as exc:  # zlib.error; zlib itself is imported only when needed
            encoding = self.headers.get("content-encoding")
            raise RequestFailed(f"cannot decode the {encoding} body: {exc}") from None


def _decoder(encoding: str) -> zlib._Decompress | None:
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"], ["deflate"]):
        import zlib

        # 32 + MAX_WBITS: a zlib or a gzip header, detected (servers label deflate loosely).
        return zlib.decompressobj(32 + zlib.MAX_WBITS)
    raise RequestFailed(f"unsupported content-encoding {encoding!r}")


async def _read_line(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await reader.readuntil(b"\n")
    except TimeoutError:
        raise ReadTimeout("timed out reading the response") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _lost("server disconnected without sending a complete response") from None
        raise _lost("peer closed connection in the middle of a line") from None
    except asyncio.LimitOverrunError:
        raise _lost(f"a line of the response is longer than {MAX_LINE} bytes") from None
    except OSError as exc:
        raise _lost(f"connection lost: {exc}", exc) from None


_STATUS = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: ([^\r\n]*))?\r?\n")


async def _read_head(conn: _Conn, method: str, timeouts: Timeouts) -> _PlainResponse:
    while True:
        line = await _read_line(conn.reader, timeouts.read)
        m = _STATUS.fullmatch(line)
        if m is None:
            raise _lost(f"not an HTTP/1.x response: {line[:40]!r}")
        minor, status, reason = int(m[1]), int(m[2]), (m[3] or b"").decode("latin-1").strip()
        headers: dict[str, str] = {}
        last = ""
        for _ in range(MAX_HEADERS + 1):
            raw = await _read_line(conn.reader, timeouts.read)
            if raw in (b"\r\n", b"\n"):
                break
            text = raw.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # obsolete line folding
                headers[last] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise _lost(f"malformed header line {text[:40]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
            last = name
        else:
            raise _lost(f"more than {MAX_HEADERS} header lines")
        if 100 <= status < 200:
            continue  # 100 Continue and friends: the real response follows
        break
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in connection and (minor == 1 or "keep-alive" in connection)
    length: int | None = None
    if method == "HEAD" or status in (204, 304):
        framing = "none"
    elif "transfer-encoding" in headers:
        codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
        framing = "chunked" if codings[-1] == "chunked" else "close"
    elif "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not re.fullmatch(r"\d{1,18}", next(iter(values))):
            raise _lost(f"malformed Content-Length {headers['content-length'][:40]!r}")
        length = int(values.pop())
        framing = "length" if length else "none"
    else:
        framing = "close"
    return _PlainResponse(conn, status, reason, headers, framing, length, keep_alive, timeouts)


class _PlainHTTP:
    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def _connect(self, target: _Target, timeouts: Timeouts) -> _Conn:
        for conn in self._idle.get((target.host, target.port), [])[::-1]:
            self._idle[(target.host, target.port)].remove(conn)
            if conn.usable():
                return conn
            conn.close()
        try:
            async with asyncio.timeout(timeouts.connect):
                reader, writer = await asyncio.open_connection(target.host, target.port, limit=MAX_LINE)
        except TimeoutError:
            raise ConnectTimeout("timed out connecting") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        return _Conn(reader, writer)

    def _release(self, target: _Target, conn: _Conn) -> None:
        idle = self._idle.setdefault((target.host, target.port), [])
        if len(idle) < self._max_idle and conn.usable():
            idle.append(conn)
        else:
            conn.close()

    @asynccontextmanager
    async def stream(self, method: str, url: str, headers: Mapping[str, str], content: bytes,
                     timeouts: Timeouts) -> AsyncIterator[Response]:
        target = _plain_target(url)
        assert target is not None  # Client routed it here
        head = _request_head(method, target, headers, len(content))
        conn = await self._connect(target, timeouts)
        response: _PlainResponse | None = None
        try:
            try:
                conn.writer.write(head + content)
                async with asyncio.timeout(timeouts.read):
                    await conn.writer.drain()
            except TimeoutError:
                raise ReadTimeout("timed out sending the request") from None
            except OSError as exc:
                raise _lost(f"connection lost while sending: {exc}", exc) from None
            response = await _read_head(conn, method, timeouts)
            yield response
        finally:
            # Anything unfinished (an error, a cancelled call, a body left unread) closes
            # the connection: its next bytes would belong to this response.
            if response is not None and response.reusable:
                self._release(target, conn)
            else:
                conn.close()

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _request_head(method: str, target: _Target, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        if any(c in name or c in value for c in "\r\n\0") or not name:
            raise RequestFailed(f"header {name!r} holds a line break or NUL; check the config")
        lines.append(f"{name}: {value}")
    if length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {length}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError:
        return head.encode("utf-8")


# --------------------------------------------------------------------------- the httpx engine


_tls: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi, or SSL_CERT_FILE/SSL_CERT_DIR), built
    once per process: loading the CA bundle costs ~40 ms, which an embedding program or
    the test suite would otherwise pay on every send."""
    global _tls
    if _tls is None:
        import httpx

        _tls = httpx.create_ssl_context()
    return _tls


class _HttpxResponse(Response):
    def __init__(self, response: httpx.Response) -> None:
        self._r = response
        self.status_code = response.status_code
        self.reason_phrase = response.reason_phrase
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._r.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise _from_httpx(exc) from exc


def _from_httpx(exc: Exception) -> TransportError:
    import httpx

    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectTimeout(text)
    if isinstance(exc, httpx.TimeoutException):
        return ReadTimeout(text)
    if isinstance(exc, httpx.ConnectError):
        return ConnectFailed(text)
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        return ConnectionLost(text)
    return RequestFailed(text)  # bad URL, proxy trouble, decoding, protocol misuse


class _HttpxEngine:
    def __init__(self, max_connections: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits, follow_redirects=False, verify=tls_context())

    @asynccontextmanager
    async def stream(self, method: str, url: str, headers: Mapping[str, str], content: bytes,
                     timeouts: Timeouts) -> AsyncIterator[Response]:
        import httpx

        timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect)
        try:
            async with self._client.stream(method, url, content=content, headers=dict(headers),
                                           timeout=timeout) as response:
                yield _HttpxResponse(response)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _from_httpx(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()

