"""Reading an endpoint's JSON without trusting its shape.

A 200 reply can hold anything: a top-level array or null, `choices` that is a string,
a choice that is a number, usage counts of 10**30, text with lone surrogates (legal in
JSON, unencodable in UTF-8, so they would crash storing or printing). The parsers in
openai.py and anthropic.py read every value through these helpers, so that parsing is
total: it returns a well-typed reply or raises BadReply, never anything else.

Two kinds of field, two rules:
- what carries the reply text (choices, a choice, message, delta, content blocks, the
  text itself) must have the documented shape, else the reply is unusable: BadReply;
- metadata (model, finish reason, token counts) of the wrong type or out of range is
  ignored, as if absent: the reply is still usable (counts are then estimated).
"""

from __future__ import annotations

import json
import re
from typing import Any

from sessctl.providers.policy import body_excerpt, one_line

# Token counts beyond this are not counts (a real reply is below 10**7); SQLite's
# 64-bit integers and the stats sums over them stay far from overflow.
MAX_COUNT = 10**9
# A model name longer than this, or with control characters, is not one; it would reach
# tables and terminals (`list`, `stats`), so it is ignored (the requested model stands).
MAX_LABEL = 200

_SURROGATE = re.compile("[\ud800-\udfff]")


class BadReply(Exception):
    """The endpoint answered, but nothing usable can be read from it (not retried)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def kind(value: Any) -> str:
    """A JSON value's type, in words, for error lines."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover - json.loads makes nothing else


def load_json(raw: bytes | str, what: str) -> Any:
    """Parsed JSON, or BadReply. Deep nesting (RecursionError) and invalid UTF-8 are
    malformed JSON like any other."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        excerpt = body_excerpt(raw, 120) if isinstance(raw, bytes) else one_line(raw, 120)
        raise BadReply(f"malformed JSON in {what}: {excerpt!r}") from None


def clean(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD. json.loads pairs the valid ones,
    so any surrogate left is lone; it cannot be encoded to UTF-8 for storing or printing."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadReply(f"unexpected response shape: {what} is {kind(value)}, not an object")
    return value


def opt_obj(value: Any, what: str) -> dict[str, Any]:
    """An object that may be absent (null or missing: empty)."""
    return {} if value is None else obj(value, what)


def arr(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadReply(f"unexpected response shape: {what} is {kind(value)}, not an array")
    return value


def text(value: Any, what: str) -> str:
    """Reply text: a string (cleaned); null is empty; anything else is BadReply."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadReply(f"unexpected response shape: {what} is {kind(value)}, not a string")
    return clean(value)


def meta(value: Any) -> dict[str, Any]:
    """A metadata object (usage): anything but an object counts as absent."""
    return value if isinstance(value, dict) else {}


def label(value: Any) -> str | None:
    """A metadata string (model, finish reason), or None when it is not a usable one."""
    if not isinstance(value, str) or not value or len(value) > MAX_LABEL or not value.isprintable():
        return None
    return clean(value)


def count(value: Any) -> int | None:
    """A token count; anything else (null, negative, a bool, a float, absurdly large) is absent."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None
