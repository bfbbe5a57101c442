"""OpenAI-compatible chat: `POST {base_url}/chat/completions`.

Spoken by OpenAI itself and by most self-hosted servers (Ollama, vLLM, llama.cpp
server, LiteLLM, ...), so parsing is lenient where those servers differ: usage may be
missing (then estimated), `content` may be null or a list of parts, `[DONE]` may be
followed by nothing at all.

The system prompt is the first message, role "system". Streaming asks for usage with
`stream_options: {"include_usage": true}` unless the provider config sets
`stream_usage = false` (for servers that reject the field).
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
from sessctl.providers.policy import TRANSIENT_ERROR_TYPES, error_message_from_json, merge_options, one_line
from sessctl.providers.sse import SSEEvent

RESERVED_OPTIONS = ("model", "messages", "stream")


def _text(content: Any) -> str:
    """`content` as text: a string, null, or a list of {"type": "text", "text": ...} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text") or "" for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "output_text")
        )
    raise TypeError(f"content is {type(content).__name__}")


class OpenAIProvider(HTTPProvider):
    chat_path = "/chat/completions"
    models_path = "/models"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def stream_terminator(self) -> str:
        return "[DONE]"

    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        body.update(merge_options(self.config.options, request.options, RESERVED_OPTIONS, self.name))
        if request.stream:
            body["stream"] = True
            if self.config.stream_usage and "stream_options" not in body:
                body["stream_options"] = {"include_usage": True}
        return body

    def parse_reply(self, data: Any, request: ChatRequest, started: float) -> ChatReply:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = _text(message.get("content")) or (message.get("refusal") or "")
        usage = data.get("usage") or {}
        tokens_in, tokens_out = usage_int(usage.get("prompt_tokens")), usage_int(usage.get("completion_tokens"))
        return make_reply(request, text, model=data.get("model"), tokens_in=tokens_in, tokens_out=tokens_out,
                          started=started, finish_reason=choice.get("finish_reason"))

    def handle_event(self, event: SSEEvent, state: StreamState, on_text: OnText | None) -> None:
        data = event.data.strip()
        if data == "[DONE]":
            state.done = True
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError("chunk is not an object")
        if chunk.get("error") or event.event == "error":
            err = chunk.get("error")
            kind = err.get("type") or err.get("code") if isinstance(err, dict) else None
            message = error_message_from_json(chunk) or one_line(data, 200)
            raise StreamFailure(f"error in the stream: {one_line(message)}",
                                retryable=kind in TRANSIENT_ERROR_TYPES)
        if chunk.get("model") and not state.model:
            state.model = chunk["model"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1: the first choice is the reply
            delta = choice.get("delta") or {}
            state.add_text(_text(delta.get("content")), on_text)
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            # The last usage seen wins: vLLM's continuous usage repeats it on every chunk.
            tokens_in, tokens_out = usage_int(usage.get("prompt_tokens")), usage_int(usage.get("completion_tokens"))
            if tokens_in is not None:
                state.tokens_in = tokens_in
            if tokens_out is not None:
                state.tokens_out = tokens_out
