"""A fake LLM endpoint for tests: a real threaded HTTP/1.1 server on 127.0.0.1.

It speaks both APIs sessctl talks to, on the wire, as the real services do:

- OpenAI-compatible  POST .../chat/completions   JSON, or SSE chunks ending in `data: [DONE]`
                                                  (usage chunk only when the request asks for
                                                  it with stream_options.include_usage)
- Anthropic          POST .../v1/messages         JSON, or the SSE event sequence message_start,
                                                  content_block_start, ping, content_block_delta...,
                                                  content_block_stop, message_delta, message_stop
- both               GET  .../models              the model list (Anthropic's shape when the
                                                  request carries an `anthropic-version` header)

Streams use chunked transfer encoding and, by default, real-world SSE noise: `: comment`
keep-alive lines between events. Options add multi-line `data:` fields, CRLF line
endings and writes split into tiny fragments (mid-line, mid-CRLF, mid-UTF-8).

Usage
-----
    from fakeserver import FakeLLMServer, TextReply, ErrorReply, RawReply, Disconnect

    with FakeLLMServer() as server:                 # port chosen by the OS
        server.enqueue(ErrorReply(429, "Rate limit reached", headers={"Retry-After": "1"}))
        server.enqueue(TextReply("Hello there", pieces=["Hel", "lo ", "there"]))
        base_url = server.openai_base_url            # http://127.0.0.1:PORT/v1
        ...                                          # call the code under test
        first = server.requests[0]
        first.method, first.path, first.headers["authorization"], first.json["messages"]

Scripting. Each request takes the first queued reply that matches it, in FIFO order;
with none queued it gets the default reply. Replies:

- TextReply(text=None, ...)  a successful chat reply, rendered for whichever API was
  called, streamed or not as the request asked. text=None echoes the last user message
  as "echo: <message>", so concurrent callers can tell their replies apart. Fields script
  the stream: pieces, piece_delay, hold (a threading.Event: after the first piece, wait
  until the test sets it; observe output mid-stream without timing), usage (False: omit usage like many local servers),
  tokens_in/out, model, finish_reason, cut_after (close the connection abruptly after N
  text pieces), error_after (an in-stream error event after N pieces), omit_terminator
  (end cleanly without [DONE] / message_stop), multiline, comments, crlf, fragment.
  A TextReply only ever answers chat requests.
- ErrorReply(status, message, ...)  an error body in the called API's own JSON shape,
  with optional headers (Retry-After, ...).
- RawReply(status, body | chunks, ...)  exact bytes: malformed JSON, an HTML error page,
  a hand-written SSE stream (chunks written one by one; cut=True drops the connection
  after them instead of ending the response).
- Disconnect()  read the request, then close the connection without answering.

Every reply takes `delay` (seconds before the status line; the way to provoke a read
timeout) and enqueue(..., path="/models") restricts replies to paths ending so.
`FakeLLMServer(delay=0.25)` (or `server.delay = 0.25`) adds a fixed delay to every
request: what a concurrency benchmark needs. `api_key="sk-..."` makes the server check
auth (Bearer / x-api-key) and answer 401 in the API's shape when it is wrong.

Recorded requests: `server.requests` (a snapshot list of RecordedRequest: method, path,
query, headers with lower-case names, raw body, parsed json, received_at from
time.monotonic(), api "openai" | "anthropic" | None, client_port, and target, the
request line's target as sent: absolute-form when it came through a proxy). `server.errors` lists unexpected
exceptions inside the server (clients hanging up are not errors); a test can assert it
is empty. `unused_port_url()` gives a URL nothing listens on (connection refused).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FakeLLMServer",
    "RecordedRequest",
    "TextReply",
    "ErrorReply",
    "RawReply",
    "Disconnect",
    "unused_port_url",
]


# --------------------------------------------------------------------------- scripts


@dataclass
class TextReply:
    """A successful chat reply; see the module docstring for what each field scripts."""

    text: str | None = None  # None: "echo: <last user message>" (or "".join(pieces))
    pieces: Sequence[str] | None = None  # how the text is streamed; default: word by word
    model: str | None = None  # None: the model the request named
    usage: bool = True  # False: no usage fields at all
    tokens_in: int | None = None  # None: a count derived from the request's words
    tokens_out: int | None = None  # None: the number of pieces
    finish_reason: str | None = None  # None: "stop" (OpenAI) / "end_turn" (Anthropic)
    delay: float = 0.0  # before the status line
    piece_delay: float = 0.0  # between streamed pieces
    hold: threading.Event | None = None  # stream only: after the first piece, wait for it
    cut_after: int | None = None  # stream only: drop the connection after N pieces
    error_after: int | None = None  # stream only: an error event after N pieces
    error_message: str = "Overloaded"
    error_type: str | None = None  # None: "overloaded_error" / "server_error"
    omit_terminator: bool = False  # stream only: end cleanly without [DONE] / message_stop
    multiline: bool = False  # stream only: pretty-printed JSON over several data: lines
    comments: bool = True  # stream only: ": keep-alive" comment lines between events
    crlf: bool = False  # stream only: CRLF line endings
    fragment: int | None = None  # stream only: write in fragments of this many bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ErrorReply:
    """An HTTP error with the API's own error body (`type` defaults from the status)."""

    status: int
    message: str = "error"
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RawReply:
    """Exact bytes. `body` (dict/list are JSON-encoded) with Content-Length, or `chunks`
    sent one by one with chunked encoding; `cut` drops the connection after the chunks.
    `chunks` may be a generator: an endless stream, a body trickling a byte at a time
    (with chunk_delay); the server stops writing when the client hangs up."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes | str] | None = None
    chunk_delay: float = 0.0
    cut: bool = False
    delay: float = 0.0


@dataclass
class Disconnect:
    """Close the connection after reading the request, without any response."""

    delay: float = 0.0


Reply = TextReply | ErrorReply | RawReply | Disconnect


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON
    received_at: float  # time.monotonic()
    api: str | None  # "openai" | "anthropic" | None (models list, unknown paths)
    client_port: int = 0  # the client's end of the connection: equal ports, one connection
    target: str = ""  # the request line's target as sent (absolute-form through a proxy)


# --------------------------------------------------------------------------- helpers


def unused_port_url() -> str:
    """http://127.0.0.1:PORT where nothing listens (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}


def _openai_error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    return "server_error" if status >= 500 else "invalid_request_error"


def _error_body(api: str | None, status: int, message: str, type_: str | None) -> dict[str, Any]:
    if api == "anthropic":
        return {"type": "error",
                "error": {"type": type_ or _ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
                          "message": message}}
    return {"error": {"message": message, "type": type_ or _openai_error_type(status),
                      "param": None, "code": None}}


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class _Abort(Exception):
    """Drop the connection now (a cut stream, or the server is shutting down)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, a response written in two parts stalls ~40 ms on the client's
    # delayed ACK, which would swamp the latencies and delays tests measure.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    # ---- plumbing

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        url = urlsplit(self.path)
        path = url.path
        if self.command == "POST" and path.endswith("/chat/completions"):
            api: str | None = "openai"
        elif self.command == "POST" and path.endswith("/messages"):
            api = "anthropic"
        else:
            api = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.command, path, url.query, headers, body, parsed,
                                  time.monotonic(), api, self.client_address[1], self.path)
        reply = fake._record_and_pick(request)
        try:
            fake._sleep(fake.delay + reply.delay)
            if isinstance(reply, Disconnect):
                raise _Abort
            if isinstance(reply, ErrorReply):
                shape = api or ("anthropic" if "anthropic-version" in headers else "openai")
                self._send_json(reply.status, _error_body(shape, reply.status, reply.message,
                                                          reply.type), reply.headers)
            elif isinstance(reply, RawReply):
                self._send_raw(reply)
            elif api is None and path.endswith("/models") and self.command == "GET":
                self._send_models("anthropic-version" in headers)
            elif api is None:
                self._send_json(404, _error_body("openai", 404, f"no route for {self.command} {path}", None))
            elif isinstance(reply, TextReply):
                self._send_chat(api, request, reply)
        except _Abort:
            self._drop()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client hung up (a timeout, say): not our fault

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _start_chunked(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_raw(self, reply: RawReply) -> None:
        if reply.chunks is None:
            body = reply.body
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            payload = body.encode() if isinstance(body, str) else body
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
            return
        self._start_chunked(reply.status, reply.content_type, reply.headers)
        for i, chunk in enumerate(reply.chunks):
            if i and reply.chunk_delay:
                self.server.fake._sleep(reply.chunk_delay)
            self._chunk(chunk.encode() if isinstance(chunk, str) else chunk)
        if reply.cut:
            raise _Abort
        self._end_chunked()

    def _send_models(self, anthropic: bool) -> None:
        ids = list(self.server.fake.models)
        if anthropic:
            data = {"data": [{"type": "model", "id": m, "display_name": m,
                              "created_at": "2025-01-01T00:00:00Z"} for m in ids],
                    "has_more": False, "first_id": ids[0] if ids else None,
                    "last_id": ids[-1] if ids else None}
        else:
            data = {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                "owned_by": "fake"} for m in ids]}
        self._send_json(200, data)

    # ---- chat replies

    def _send_chat(self, api: str, request: RecordedRequest, reply: TextReply) -> None:
        body = request.json if isinstance(request.json, dict) else {}
        messages = body.get("messages") or []
        if reply.text is not None:
            text = reply.text
        elif reply.pieces is not None:
            text = "".join(reply.pieces)
        else:
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            text = "echo: " + (_content_text(users[-1].get("content")) if users else "")
        pieces = list(reply.pieces) if reply.pieces is not None else _words(text)
        model = reply.model or body.get("model") or "fake-model"
        words = sum(len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict))
        words += len(str(body.get("system") or "").split())
        tokens_in = reply.tokens_in if reply.tokens_in is not None else words + 3
        tokens_out = reply.tokens_out if reply.tokens_out is not None else len(pieces)
        n = self.server.fake._next_id()
        if not body.get("stream"):
            if api == "openai":
                data: dict[str, Any] = {
                    "id": f"chatcmpl-fake{n}", "object": "chat.completion",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": reply.finish_reason or "stop"}],
                }
                if reply.usage:
                    data["usage"] = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                                     "total_tokens": tokens_in + tokens_out}
            else:
                data = {
                    "id": f"msg_fake{n}", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": reply.finish_reason or "end_turn", "stop_sequence": None,
                }
                if reply.usage:
                    data["usage"] = {"input_tokens": tokens_in, "output_tokens": tokens_out}
            self._send_json(200, data, reply.headers)
            return
        if api == "openai":
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = self._openai_events(n, model, pieces, reply, tokens_in, tokens_out, include_usage)
        else:
            events = self._anthropic_events(n, model, pieces, reply, tokens_in, tokens_out)
        self._stream(events, reply)

    def _openai_events(self, n: int, model: str, pieces: list[str], reply: TextReply,
                       tokens_in: int, tokens_out: int, include_usage: bool) -> Iterator[tuple[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": f"chatcmpl-fake{n}", "object": "chat.completion.chunk", "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage and reply.usage:
                data["usage"] = None  # OpenAI sends null here when usage comes at the end
            return data

        yield "event", (None, chunk({"role": "assistant", "content": ""}))
        for i, piece in enumerate(pieces):
            yield from self._faults(i, reply, openai=True)
            yield "piece", (None, chunk({"content": piece}))
        yield from self._faults(len(pieces), reply, openai=True)
        yield "event", (None, chunk({}, reply.finish_reason or "stop"))
        if include_usage and reply.usage:
            yield "event", (None, {"id": f"chatcmpl-fake{n}", "object": "chat.completion.chunk",
                                   "created": 0, "model": model, "choices": [],
                                   "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                                             "total_tokens": tokens_in + tokens_out}})
        if not reply.omit_terminator:
            yield "event", (None, "[DONE]")

    def _anthropic_events(self, n: int, model: str, pieces: list[str], reply: TextReply,
                          tokens_in: int, tokens_out: int) -> Iterator[tuple[str, Any]]:
        message: dict[str, Any] = {
            "id": f"msg_fake{n}", "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": None, "stop_sequence": None,
        }
        if reply.usage:
            message["usage"] = {"input_tokens": tokens_in, "output_tokens": 1}
        yield "event", ("message_start", {"type": "message_start", "message": message})
        yield "event", ("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
        yield "event", ("ping", {"type": "ping"})
        for i, piece in enumerate(pieces):
            yield from self._faults(i, reply, openai=False)
            yield "piece", ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": piece}})
        yield from self._faults(len(pieces), reply, openai=False)
        yield "event", ("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta: dict[str, Any] = {"type": "message_delta",
                                 "delta": {"stop_reason": reply.finish_reason or "end_turn",
                                           "stop_sequence": None}}
        if reply.usage:
            delta["usage"] = {"output_tokens": tokens_out}
        yield "event", ("message_delta", delta)
        if not reply.omit_terminator:
            yield "event", ("message_stop", {"type": "message_stop"})

    @staticmethod
    def _faults(sent: int, reply: TextReply, *, openai: bool) -> Iterator[tuple[str, Any]]:
        if reply.cut_after is not None and sent == reply.cut_after:
            yield "cut", None
        if reply.error_after is not None and sent == reply.error_after:
            if openai:
                yield "error", (None, {"error": {"message": reply.error_message,
                                                 "type": reply.error_type or "server_error",
                                                 "param": None, "code": None}})
            else:
                yield "error", ("error", {"type": "error",
                                          "error": {"type": reply.error_type or "overloaded_error",
                                                    "message": reply.error_message}})

    def _stream(self, events: Iterable[tuple[str, Any]], reply: TextReply) -> None:
        eol = "\r\n" if reply.crlf else "\n"
        self._start_chunked(200, "text/event-stream; charset=utf-8", reply.headers)
        if reply.comments:
            self._write_fragmented(f": connected{eol}{eol}".encode(), reply)
        first_piece = True
        for kind, item in events:
            if kind == "cut":
                raise _Abort
            name, data = item
            if kind == "piece":
                if not first_piece and reply.hold is not None:
                    self.server.fake._hold(reply.hold)
                if not first_piece and reply.piece_delay:
                    self.server.fake._sleep(reply.piece_delay)
                first_piece = False
            if isinstance(data, str):
                text = data
            else:
                text = json.dumps(data, indent=1 if reply.multiline else None)
            lines = []
            if name:
                lines.append(f"event: {name}")
            if reply.comments and kind == "piece":
                lines.append(": a comment inside an event")
            lines.extend(f"data: {line}" for line in text.split("\n"))
            frame = eol.join(lines) + eol + eol
            if reply.comments and kind == "piece":
                frame += f":{eol}{eol}"  # an empty keep-alive comment between events
            self._write_fragmented(frame.encode(), reply)
            if kind == "error":
                break  # the API ends the stream after an error event
        self._end_chunked()

    def _write_fragmented(self, data: bytes, reply: TextReply) -> None:
        if not reply.fragment:
            self._chunk(data)
            return
        for i in range(0, len(data), reply.fragment):
            self._chunk(data[i : i + reply.fragment])
            time.sleep(0.0005)  # so the fragments reach the client as separate reads


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a benchmark opens many connections at once
    fake: FakeLLMServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.fake._track(request, True)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.fake.tls is not None:
            # The TLS handshake runs here, in the connection's own thread, so a client
            # that refuses the certificate does not hold up the accept loop.
            try:
                request = self.fake.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # what a certificate check in the client looks like from here
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.fake._track(request, False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            return
        self.fake.errors.append(repr(exc))


# --------------------------------------------------------------------------- the server


class FakeLLMServer:
    """A scriptable OpenAI + Anthropic endpoint on 127.0.0.1:<ephemeral>; see the module doc.

    FakeLLMServer(*, delay=0.0, api_key=None, default=None, models=(...), tls=None)
      delay     seconds added before every response (settable later as `server.delay`)
      api_key   when set, requests without this key get a 401 in the API's shape
      default   the reply when nothing queued matches (default: TextReply(), an echo)
      models    ids the models list returns
      tls       a server-side ssl.SSLContext: speak HTTPS (tests/tlskit.py makes one)
    """

    def __init__(self, *, delay: float = 0.0, api_key: str | None = None,
                 default: Reply | None = None,
                 models: Sequence[str] = ("fake-model", "gpt-4o-mini", "claude-sonnet-4-5"),
                 tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.delay = delay
        self.api_key = api_key
        self.default: Reply = default if default is not None else TextReply()
        self.models = tuple(models)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._queue: list[tuple[str | None, Reply]] = []
        self._requests: list[RecordedRequest] = []
        self._connections: set[Any] = set()
        self._counter = 0
        self._stop = threading.Event()
        self._httpd: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> FakeLLMServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="FakeLLMServer", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is None:
            return
        self._stop.set()  # wakes handlers sleeping in a delay
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # unblock handlers waiting on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- addresses

    @property
    def port(self) -> int:
        """The listening port (still readable after close, for asserting on messages)."""
        assert self._port is not None, "the server was never started"
        return self._port

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT, or https:// with tls (no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The base_url an OpenAI-kind provider should use: URL + /v1."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base_url an Anthropic-kind provider should use: the bare URL."""
        return self.url

    # ---- scripting and inspection

    def enqueue(self, *replies: Reply, path: str | None = None) -> None:
        """Queue replies, served FIFO; `path` limits them to request paths ending so."""
        with self._lock:
            self._queue.extend((path, r) for r in replies)

    @property
    def pending(self) -> int:
        """Queued replies not yet served."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests and queued replies."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()

    # ---- used by the handler

    def _record_and_pick(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            if self.api_key is not None and not self._authorized(request):
                return ErrorReply(401, "invalid x-api-key" if request.api == "anthropic" or
                                  "anthropic-version" in request.headers else
                                  "Incorrect API key provided. You can find your API key at "
                                  "https://platform.openai.com/account/api-keys.")
            for i, (path, reply) in enumerate(self._queue):
                if path is not None and not request.path.endswith(path):
                    continue
                if isinstance(reply, TextReply) and request.api is None:
                    continue  # a chat reply never answers a models list or a stray path
                del self._queue[i]
                return reply
        return self.default  # a TextReply default still yields the models list on GET /models

    def _authorized(self, request: RecordedRequest) -> bool:
        if request.api == "anthropic" or "anthropic-version" in request.headers:
            return request.headers.get("x-api-key") == self.api_key
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stop.wait(seconds):
            raise _Abort

    def _hold(self, event: threading.Event) -> None:
        while not event.wait(0.01):
            if self._stop.is_set():
                raise _Abort

    def _track(self, conn: Any, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
