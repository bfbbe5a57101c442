"""Anthropic Messages API: `POST {base_url}/v1/messages`.

Differences from the OpenAI shape that matter here: the system prompt is a top-level
`system` field, not a message; `max_tokens` is required (DEFAULT_MAX_TOKENS unless the
options set it); auth is `x-api-key` plus an `anthropic-version` header; stop strings
are `stop_sequences` (an OpenAI-style `stop` option is translated, since the API
rejects unknown fields); a stream is a typed event sequence ending in `message_stop`,
and the API may report an `error` event in the middle of a 200 stream.

A base_url that already ends in /v1 is accepted as well as the documented bare host.
"""

from __future__ import annotations

import json
from typing import Any

from sessctl.providers.base import (
    ChatReply,
    ChatRequest,
    OnText,
)
from sessctl.providers.http import HTTPProvider, StreamFailure, StreamState, make_reply, usage_int
from sessctl.providers.policy import TRANSIENT_ERROR_TYPES, merge_options, one_line
from sessctl.providers.sse import SSEEvent

DEFAULT_MAX_TOKENS = 4096
RESERVED_OPTIONS = ("model", "messages", "stream", "system")


def _input_tokens(usage: dict[str, Any]) -> int | None:
    """Input tokens including cached ones: `input_tokens` excludes cache reads and writes."""
    base = usage_int(usage.get("input_tokens"))
    if base is None:
        return None
    cached = (usage_int(usage.get("cache_creation_input_tokens")) or 0) + (
        usage_int(usage.get("cache_read_input_tokens")) or 0
    )
    return base + cached


class AnthropicProvider(HTTPProvider):
    def _v1(self) -> str:
        base = self.base_url()
        return base if base.endswith("/v1") else base + "/v1"

    def endpoint(self) -> str:
        return self._v1() + "/messages"

    def models_url(self) -> str:
        return self._v1() + "/models"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def extra_headers(self) -> dict[str, str]:
        return {"anthropic-version": self.config.anthropic_version}

    def stream_terminator(self) -> str:
        return "message_stop"

    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "max_tokens": DEFAULT_MAX_TOKENS}
        if request.system:
            body["system"] = request.system
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        options = merge_options(self.config.options, request.options, RESERVED_OPTIONS, self.name)
        if "stop" in options and "stop_sequences" not in options:
            stop = options.pop("stop")
            options["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        body.update(options)
        if request.stream:
            body["stream"] = True
        return body

    def parse_reply(self, data: Any, request: ChatRequest, started: float) -> ChatReply:
        blocks = data["content"]
        text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
        usage = data.get("usage") or {}
        tokens_in, tokens_out = _input_tokens(usage), usage_int(usage.get("output_tokens"))
        return make_reply(request, text, model=data.get("model"), tokens_in=tokens_in, tokens_out=tokens_out,
                          started=started, finish_reason=data.get("stop_reason"))

    def handle_event(self, event: SSEEvent, state: StreamState, on_text: OnText | None) -> None:
        payload = json.loads(event.data)
        if not isinstance(payload, dict):
            raise TypeError("event data is not an object")
        kind = payload.get("type") or event.event
        if kind == "message_start":
            message = payload["message"]
            state.model = message.get("model") or state.model
            tokens_in = _input_tokens(message.get("usage") or {})
            if tokens_in is not None:
                state.tokens_in = tokens_in
        elif kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "text":
                state.add_text(block.get("text") or "", on_text)
        elif kind == "content_block_delta":
            delta = payload["delta"]
            if delta.get("type") == "text_delta":
                state.add_text(delta["text"], on_text)
            # thinking, signature and tool-input deltas are not reply text
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                state.finish_reason = delta["stop_reason"]
            usage = payload.get("usage") or {}
            # message_delta usage is cumulative; newer API versions repeat input there.
            tokens_in, tokens_out = _input_tokens(usage), usage_int(usage.get("output_tokens"))
            if tokens_in is not None:
                state.tokens_in = tokens_in
            if tokens_out is not None:
                state.tokens_out = tokens_out
        elif kind == "message_stop":
            state.done = True
        elif kind == "error":
            err = payload.get("error") or {}
            err_type = err.get("type") if isinstance(err, dict) else None
            message = (err.get("message") if isinstance(err, dict) else None) or err_type or event.data
            detail = f"error event in the stream: {one_line(str(message))}"
            if err_type and err_type not in str(message):
                detail += f" ({err_type})"
            raise StreamFailure(detail, retryable=err_type in TRANSIENT_ERROR_TYPES)
        # ping, content_block_stop and event types added later are ignored, as the API asks.
