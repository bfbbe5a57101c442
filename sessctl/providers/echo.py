"""The built-in offline provider: replies with the user's last message, verbatim.

Deterministic and network-free, so sessctl works on a fresh machine and in tests.
Token counts are estimated (and marked so); latency is the real time taken.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from sessctl.providers.base import (
    ChatReply,
    ChatRequest,
    OnText,
    Provider,
    estimate_request_tokens,
    estimate_tokens,
)

if TYPE_CHECKING:  # pragma: no cover
    from sessctl.providers.transport import Client


class EchoProvider(Provider):
    needs_http = False

    def endpoint(self) -> str:
        return "echo:"

    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model}
        if request.system is not None:
            body["system"] = request.system
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        body.update(request.options)
        if request.stream:
            body["stream"] = True
        return body

    async def chat(
        self,
        request: ChatRequest,
        client: Client | None,
        on_text: OnText | None = None,
    ) -> ChatReply:
        start = time.perf_counter()
        text = request.messages[-1].content if request.messages else ""
        first_ms = None
        if on_text is not None and request.stream:
            # Scrubbed like any provider's stream: a key the user pasted is not echoed
            # back to the screen (the stored copies are scrubbed as well).
            shown, flush = self.shown(on_text)
            assert shown is not None
            for piece in re.findall(r"\S+\s*|\s+", text):
                if first_ms is None:
                    first_ms = int((time.perf_counter() - start) * 1000)
                shown(piece)
            flush()
        return ChatReply(
            text=text,
            model=request.model,
            tokens_in=estimate_request_tokens(request),
            tokens_out=estimate_tokens(text),
            tokens_estimated=True,
            latency_ms=int((time.perf_counter() - start) * 1000),
            first_token_ms=first_ms,
            finish_reason="stop",
        )

    async def check(self, client: Client | None) -> str:
        return "ok (built in, no network)"
