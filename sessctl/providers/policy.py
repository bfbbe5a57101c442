"""Pure rules the HTTP providers share: what is retried and how long to wait, how an
endpoint's error body becomes one line, how options merge. No httpx, no I/O.

Retry policy (both APIs behave alike):
- retried: connection errors, timeouts, a connection dropped before any reply text,
  and HTTP 408, 429, 500, 502, 503, 504, 529 (Anthropic's "overloaded");
- never retried: any other 4xx, a malformed 2xx body, or a stream once any reply text
  has arrived (that text may already be on the user's screen, and a second answer
  would not match it);
- the wait is the server's `Retry-After` (seconds or HTTP-date; `retry-after-ms` too)
  when it sends one, else full-jitter exponential backoff:
  uniform(0, min(backoff_max, backoff_base * 2**retry));
- a server asking for a longer wait than `backoff_max` is not retried at all: failing
  now with its message beats sleeping the cap and failing anyway;
- `x-should-retry: true|false` (sent by OpenAI and Anthropic) overrides the status rule.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sessctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import random

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})

# Error types an endpoint may report inside a 200 stream that mean "try again later";
# a stream failing with one of these before any text is retried like a 5xx.
TRANSIENT_ERROR_TYPES = frozenset({
    "overloaded_error", "api_error", "rate_limit_error", "timeout_error",  # Anthropic
    "server_error", "rate_limit_exceeded",  # OpenAI
})

# --------------------------------------------------------------------------- retry timing


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform over [0, min(cap, base * 2**retry)]; `retry` counts from 0."""
    ceiling = min(cap, base * (2 ** min(retry, 32)))
    if rng is None:
        import random  # only once a call is retried: a send that succeeds never needs it

        return random.uniform(0.0, max(0.0, ceiling))
    return rng.uniform(0.0, max(0.0, ceiling))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a response asks for, in seconds, or None when it asks for none.

    `retry-after-ms` (OpenAI) wins over `Retry-After`, which may be delta-seconds or an
    HTTP-date (compared with `now`, a Unix time). Garbage is ignored; the past is 0.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
        if value is not None and value == value:  # not NaN
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    import email.utils  # ~4 ms of imports, for the rare HTTP-date form only

    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------- request bodies


def merge_options(config_options: Mapping[str, Any], request_options: Mapping[str, Any],
                  reserved: tuple[str, ...], provider: str) -> dict[str, Any]:
    """Provider-config options overlaid by per-call options; sessctl-owned keys refused.

    Refusing (rather than silently dropping) `-o messages=...` keeps `--dry-run` honest:
    what it prints is what is sent.
    """
    merged = {**config_options, **request_options}
    clash = sorted(k for k in merged if k in reserved)
    if clash:
        raise UsageError(
            f"provider {provider!r}: option(s) {', '.join(clash)} are set by sessctl itself "
            f"and cannot be given as options"
        )
    return merged


# --------------------------------------------------------------------------- error text


# Control characters (an endpoint's error text could move the cursor or recolour the
# terminal it is printed on) and lone surrogates (UTF-8 cannot encode them: printing
# the line would crash).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def one_line(text: str, limit: int = 300) -> str:
    text = _UNPRINTABLE.sub("\ufffd", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def body_excerpt(raw: bytes, limit: int = 200) -> str:
    """A short, single-line view of a non-JSON body (an HTML error page, say)."""
    text = raw.decode("utf-8", errors="replace")
    if "<" in text and ">" in text:
        text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
        text = re.sub(r"<[^>]+>", " ", text)
    return one_line(text, limit)


def error_message_from_json(data: Any) -> str | None:
    """The endpoint's own error text from either API's error shape, or None.

    OpenAI (and most compatible servers): {"error": {"message": ..., "type": ...}};
    some compatible servers: {"error": "text"} or {"detail": ...} or {"message": ...};
    Anthropic: {"type": "error", "error": {"type": ..., "message": ...}}.
    """
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):
        msg = err.get("message") or err.get("type") or err.get("code")
        return str(msg) if msg else None
    if isinstance(err, str) and err:
        return err
    for key in ("message", "detail"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if value:
            return json.dumps(value, ensure_ascii=False)
    return None
