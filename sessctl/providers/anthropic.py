"""Anthropic Messages API: `POST {base_url}/v1/messages`.

Differences from the OpenAI shape that matter here: the system prompt is a top-level
`system` field, not a message; `max_tokens` is required (DEFAULT_MAX_TOKENS unless the
options set it); auth is `x-api-key` plus an `anthropic-version` header; stop strings
are `stop_sequences` (an OpenAI-style `stop` option is translated, since the API
rejects unknown fields); a stream is a typed event sequence ending in `message_stop`,
and the API may report an `error` event in the middle of a 200 stream. Parsing is
total (shape.py): a reply of any other shape is a BadReply, never a crash.

A base_url that already ends in /v1 is accepted as well as the documented bare host.
"""

from __future__ import annotations

from typing import Any

from sessctl.providers.base import (
    ChatReply,
    ChatRequest,
    OnText,
)
from sessctl.providers.http import HTTPProvider, StreamFailure, StreamState, make_reply
from sessctl.providers.policy import TRANSIENT_ERROR_TYPES, merge_options, one_line
from sessctl.providers.shape import arr, count, label, load_json, meta, obj, opt_obj, text
from sessctl.providers.sse import SSEEvent

DEFAULT_MAX_TOKENS = 4096
RESERVED_OPTIONS = ("model", "messages", "stream", "system")


def _input_tokens(usage: dict[str, Any]) -> int | None:
    """Input tokens including cached ones: `input_tokens` excludes cache reads and writes."""
    base = count(usage.get("input_tokens"))
    if base is None:
        return None
    cached = (count(usage.get("cache_creation_input_tokens")) or 0) + (
        count(usage.get("cache_read_input_tokens")) or 0
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
        reply = obj(data, "the response")
        blocks = arr(reply.get("content"), "content")
        content = "".join(text(b.get("text"), f"content[{i}].text") for i, b in enumerate(blocks)
                          if isinstance(b, dict) and b.get("type") == "text")
        usage = meta(reply.get("usage"))
        tokens_in, tokens_out = _input_tokens(usage), count(usage.get("output_tokens"))
        return make_reply(request, content, model=label(reply.get("model")), tokens_in=tokens_in,
                          tokens_out=tokens_out, started=started, finish_reason=label(reply.get("stop_reason")))

    def handle_event(self, event: SSEEvent, state: StreamState, on_text: OnText | None) -> None:
        payload = obj(load_json(event.data, "the stream"), "a stream event")
        kind = payload.get("type")
        if not isinstance(kind, str) or not kind:
            kind = event.event
        if kind == "message_start":
            message = obj(payload.get("message"), "message_start's message")
            state.model = label(message.get("model")) or state.model
            tokens_in = _input_tokens(meta(message.get("usage")))
            if tokens_in is not None:
                state.tokens_in = tokens_in
        elif kind == "content_block_start":
            block = opt_obj(payload.get("content_block"), "content_block_start's content_block")
            if block.get("type") == "text":
                state.add_text(text(block.get("text"), "content_block_start's text"), on_text)
        elif kind == "content_block_delta":
            delta = obj(payload.get("delta"), "content_block_delta's delta")
            if delta.get("type") == "text_delta":
                state.add_text(text(delta.get("text"), "a text_delta's text"), on_text)
            # thinking, signature and tool-input deltas are not reply text
        elif kind == "message_delta":
            delta = meta(payload.get("delta"))
            stop = label(delta.get("stop_reason"))
            if stop:
                state.finish_reason = stop
            usage = meta(payload.get("usage"))
            # message_delta usage is cumulative; newer API versions repeat input there.
            tokens_in, tokens_out = _input_tokens(usage), count(usage.get("output_tokens"))
            if tokens_in is not None:
                state.tokens_in = tokens_in
            if tokens_out is not None:
                state.tokens_out = tokens_out
        elif kind == "message_stop":
            state.done = True
        elif kind == "error":
            err = meta(payload.get("error"))
            err_type = label(err.get("type"))
            message = err.get("message") or err_type or event.data
            detail = f"error event in the stream: {one_line(str(message))}"
            if err_type and err_type not in str(message):
                detail += f" ({err_type})"
            raise StreamFailure(detail, retryable=err_type in TRANSIENT_ERROR_TYPES)
        # ping, content_block_stop and event types added later are ignored, as the API asks.
