"""OpenAI-compatible chat: `POST {base_url}/chat/completions`.

Spoken by OpenAI itself and by most self-hosted servers (Ollama, vLLM, llama.cpp
server, LiteLLM, ...), so parsing is lenient where those servers differ: usage may be
missing (then estimated), `content` may be null or a list of parts, `[DONE]` may be
followed by nothing at all. It is also total (shape.py): a reply of any other shape is
a BadReply, never a crash.

The system prompt is the first message, role "system". Streaming asks for usage with
`stream_options: {"include_usage": true}` unless the provider config sets
`stream_usage = false` (for servers that reject the field).
"""

from __future__ import annotations

from typing import Any

from sessctl.providers.base import (
    ChatReply,
    ChatRequest,
    OnText,
)
from sessctl.providers.http import HTTPProvider, StreamFailure, StreamState, make_reply
from sessctl.providers.policy import TRANSIENT_ERROR_TYPES, error_message_from_json, merge_options, one_line
from sessctl.providers.shape import BadReply, arr, count, label, load_json, meta, obj, opt_obj, text
from sessctl.providers.sse import SSEEvent

RESERVED_OPTIONS = ("model", "messages", "stream")


def _text(content: Any, what: str) -> str:
    """`content` as text: a string, null, or a list of {"type": "text", "text": ...} parts
    (parts of other types, images say, are not reply text)."""
    if isinstance(content, list):
        return "".join(
            text(part.get("text"), f"{what} part") for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "output_text")
        )
    return text(content, what)


def _usage(tokens: dict[str, Any]) -> tuple[int | None, int | None]:
    return count(tokens.get("prompt_tokens")), count(tokens.get("completion_tokens"))


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
        reply = obj(data, "the response")
        choices = arr(reply.get("choices"), "choices")
        if not choices:
            raise BadReply("the response has no choices (no reply text)")
        choice = obj(choices[0], "choices[0]")
        message = opt_obj(choice.get("message"), "choices[0].message")
        content = _text(message.get("content"), "choices[0].message.content")
        refusal = message.get("refusal")
        if not content and isinstance(refusal, str):
            content = text(refusal, "refusal")
        tokens_in, tokens_out = _usage(meta(reply.get("usage")))
        return make_reply(request, content, model=label(reply.get("model")), tokens_in=tokens_in,
                          tokens_out=tokens_out, started=started, finish_reason=label(choice.get("finish_reason")))

    def handle_event(self, event: SSEEvent, state: StreamState, on_text: OnText | None) -> None:
        data = event.data.strip()
        if data == "[DONE]":
            state.done = True
            return
        chunk = load_json(data, "the stream")
        if isinstance(chunk, dict) and (chunk.get("error") or event.event == "error"):
            err = chunk.get("error")
            error_kind = (err.get("type") or err.get("code")) if isinstance(err, dict) else None
            message = error_message_from_json(chunk) or one_line(data, 200)
            raise StreamFailure(f"error in the stream: {one_line(message)}",
                                retryable=isinstance(error_kind, str) and error_kind in TRANSIENT_ERROR_TYPES)
        chunk = obj(chunk, "a stream chunk")
        if not state.model:
            state.model = label(chunk.get("model"))
        choices = chunk.get("choices")
        for i, choice in enumerate(arr(choices, "a chunk's choices") if choices is not None else []):
            choice = obj(choice, f"a chunk's choices[{i}]")
            index = choice.get("index", 0)
            if isinstance(index, int) and not isinstance(index, bool) and index != 0:
                continue  # n > 1: the first choice is the reply
            delta = opt_obj(choice.get("delta"), "a chunk's delta")
            state.add_text(_text(delta.get("content"), "a chunk's delta.content"), on_text)
            finish = label(choice.get("finish_reason"))
            if finish:
                state.finish_reason = finish
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            # The last usage seen wins: vLLM's continuous usage repeats it on every chunk.
            tokens_in, tokens_out = _usage(usage)
            if tokens_in is not None:
                state.tokens_in = tokens_in
            if tokens_out is not None:
                state.tokens_out = tokens_out
