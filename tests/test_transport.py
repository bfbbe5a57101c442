"""providers/transport.py: which engine carries a call, and the plain engine's HTTP/1.1.

The provider tests (test_providers.py) already run every call over both engines against
tests/fakeserver.py. Here: the routing rules (https, proxies, odd URLs go to httpx),
HTTPS certificate verification, connection reuse, and response framings the fake server
cannot produce (a body ended by closing the connection, 1xx, gzip, broken framing),
served byte for byte by a one-shot socket server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeLLMServer, RawReply, TextReply
from tlskit import make_tls

from sessctl.config import ProviderConfig
from sessctl.errors import ProviderError
from sessctl.providers import transport
from sessctl.providers.base import ChatMessage, ChatRequest, make_provider
from sessctl.providers.transport import Client, ConnectionLost, RequestFailed, Timeouts

T = Timeouts(connect=2.0, read=2.0)
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
              "no_proxy", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


def fetch(url: str, *, client: Client | None = None, method: str = "POST", body: bytes = b"{}",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        async with (client or Client()) as c:
            async with c.stream(method, url, headers=headers or {}, content=body, timeouts=T) as r:
                return r.status_code, dict(r.headers), await r.aread()

    return asyncio.run(go())


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize("env,url,engine", [
    ({}, "http://127.0.0.1:8080/v1/chat/completions", "plain"),
    ({}, "http://localhost:11434/v1/chat/completions", "plain"),
    ({}, "http://[::1]:8000/v1/chat/completions?x=1", "plain"),
    ({}, "https://api.openai.com/v1/chat/completions", "httpx"),
    ({}, "HTTPS://api.openai.com/v1", "httpx"),
    ({}, "http://user@127.0.0.1:8080/v1", "httpx"),
    ({}, "http://127.0.0.1:8080/v1/a path", "httpx"),  # needs encoding
    ({}, "http://bücher.example/v1", "httpx"),  # IDNA
    ({}, "http://127.0.0.1:99999/v1", "httpx"),  # httpx words the error
    ({"HTTP_PROXY": "http://proxy:3128"}, "http://127.0.0.1:8080/v1", "httpx"),
    ({"http_proxy": "http://proxy:3128"}, "http://127.0.0.1:8080/v1", "httpx"),
    ({"ALL_PROXY": "socks5://proxy:1080"}, "http://127.0.0.1:8080/v1", "httpx"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://127.0.0.1:8080/v1", "plain"),  # not for http
    ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "127.0.0.1,localhost"}, "http://127.0.0.1:8080/v1", "plain"),
    ({"HTTP_PROXY": "http://proxy:3128", "no_proxy": "*"}, "http://10.1.2.3/v1", "plain"),
    ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": ".lan"}, "http://gpu.lan/v1", "httpx"),  # httpx decides
    ({"HTTP_PROXY": "http://p:1", "http_proxy": ""}, "http://127.0.0.1:8080/v1", "httpx"),
    # CGI: HTTP_PROXY may be a request's Proxy: header, and urllib (so httpx) ignores it.
    ({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}, "http://127.0.0.1:8080/v1", "plain"),
])
def test_which_engine_carries_a_url(env: dict[str, str], url: str, engine: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Client().engine_for(url) == engine
    assert Client(direct_http=False).engine_for(url) == "httpx"


def test_a_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake server answers absolute-form requests as a forward proxy would pass them on.
    with FakeLLMServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        status, _, body = fetch("http://llm.invalid/v1/models", method="GET", body=b"")
        [seen] = proxy.requests
    assert status == 200 and b"fake-model" in body
    assert seen.target == "http://llm.invalid/v1/models" and seen.headers["host"] == "llm.invalid"


# --------------------------------------------------------------------------- https


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeLLMServer, Path]]:
    ca, ctx = make_tls(tmp_path)
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(var, raising=False)
    # The verifying context is built once per process; these tests need it rebuilt
    # under the environment they set, and the next test needs the ordinary one back.
    monkeypatch.setattr(transport, "_tls", None)
    with FakeLLMServer(tls=ctx) as server:
        yield server, ca


def _https_chat(server: FakeLLMServer) -> str:
    cfg = ProviderConfig(name="tls", kind="openai", base_url=server.url + "/v1", model="m",
                         max_retries=0, connect_timeout=2.0, read_timeout=2.0)
    provider = make_provider(cfg, {})
    request = ChatRequest("m", [ChatMessage("user", "over tls")])

    async def go() -> str:
        async with Client() as c:
            assert c.engine_for(provider.endpoint()) == "httpx"
            return (await provider.chat(request, c)).text

    return asyncio.run(go())


def test_https_verifies_the_certificate(tls_server: tuple[FakeLLMServer, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(ProviderError) as info:
        _https_chat(server)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert server.requests == []  # nothing was sent to an endpoint we could not verify


def test_https_trusts_what_ssl_cert_file_names(tls_server: tuple[FakeLLMServer, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    server, ca = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert _https_chat(server) == "echo: over tls"
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- connections


def test_a_connection_is_reused_after_a_complete_response() -> None:
    async def go(server: FakeLLMServer) -> None:
        async with Client() as c:
            for _ in range(3):
                async with c.stream("GET", server.url + "/v1/models", headers={}, timeouts=T) as r:
                    await r.aread()

    with FakeLLMServer() as server:
        asyncio.run(go(server))
        ports = [r.client_port for r in server.requests]
    assert len(ports) == 3 and len(set(ports)) == 1


def test_a_half_read_or_closing_connection_is_never_reused() -> None:
    async def go(server: FakeLLMServer) -> None:
        async with Client() as c:
            async with c.stream("POST", server.url + "/v1/chat/completions", headers={},
                                content=b'{"stream": true, "messages": []}', timeouts=T) as r:
                async for _ in r.aiter_bytes():
                    break  # leave the body unread: the connection now holds its rest
            for _ in range(2):
                async with c.stream("GET", server.url + "/v1/models", headers={}, timeouts=T) as r:
                    await r.aread()

    with FakeLLMServer() as server:
        server.enqueue(TextReply("a b c d e f"))
        server.enqueue(RawReply(body={"data": []}, headers={"Connection": "close"}), path="/models")
        asyncio.run(go(server))
        ports = [r.client_port for r in server.requests]
    assert len(set(ports)) == 3


# --------------------------------------------------------------------------- framing


class OneShot:
    """Accepts connections on 127.0.0.1 and answers each with the next canned bytes,
    then closes it; records what each request looked like."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.seen: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        for answer in self.answers:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(next((v for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
                                   if k.lower() == b"content-length"), b"0"))
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.seen.append(head + b"\r\n\r\n" + rest)
                conn.sendall(answer)

    def __enter__(self) -> OneShot:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("answer,body", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\": \"close\"}", b'{"until": "close"}'),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", b"ok"),  # no reason phrase
    (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", b"ok"),  # bare LF line ends
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3;ext=1\r\nabc\r\n0001\r\nd\r\n0\r\nX-Trailer: t\r\n\r\n", b"abcd"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
     % (len(gzip.compress(b"zipped")), gzip.compress(b"zipped")), b"zipped"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
     % (len(zlib.compress(b"deflated")), zlib.compress(b"deflated")), b"deflated"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
], ids=["until-close", "http10", "1xx-first", "no-reason", "bare-lf", "chunked", "gzip", "deflate", "204"])
def test_response_framings(answer: bytes, body: bytes) -> None:
    with OneShot(answer) as server:
        status, headers, got = fetch(server.url + "/v1/x?y=1", headers={"X-Test": "1"}, body=b'{"a":1}')
    assert (status, got) == (200 if b"204" not in answer else 204, body)
    [request] = server.seen
    assert request.startswith(b"POST /v1/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Test: 1\r\n" in request and request.endswith(b"\r\nContent-Length: 7\r\n\r\n{\"a\":1}")


@pytest.mark.parametrize("answer,error", [
    (b"", ConnectionLost),  # closed before any response
    (b"SSH-2.0-OpenSSH\r\n", ConnectionLost),  # not HTTP
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ConnectionLost),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", ConnectionLost),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ConnectionLost),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", ConnectionLost),
    (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", ConnectionLost),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx", RequestFailed),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", RequestFailed),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 201 + b"\r\n", ConnectionLost),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", ConnectionLost),
], ids=["empty", "not-http", "short-body", "two-lengths", "bad-chunk-size", "cut-chunk", "bad-header",
        "brotli", "bad-gzip", "too-many-headers", "huge-header"])
def test_broken_responses_raise_the_transport_errors(answer: bytes, error: type[Exception]) -> None:
    with OneShot(answer) as server, pytest.raises(error):
        fetch(server.url + "/v1/x")


def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    with OneShot(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
        with pytest.raises(RequestFailed):
            fetch(server.url + "/v1/x", headers={"X-Evil": "a\r\nInjected: 1"})
        fetch(server.url + "/v1/x")  # the server still gets its one (clean) request
    assert b"Injected" not in server.seen[0]
