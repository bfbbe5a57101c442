"""Time: the clock, durations (`90s`, `15m`, `12h`, `30d`, `2w`) and UTC ISO-8601.

Timestamps are stored as integer Unix seconds and shown as `2026-11-21T10:00:00Z`
(second precision, which jq's `fromdateiso8601` accepts).

`SESSCTL_NOW` (an ISO-8601 time or Unix seconds) replaces the clock. It exists so tests
and drills can run retention against sessions "in the past" without sleeping; it is
documented as test-only and never needed in production.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from sessctl.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Every stored time lies in years 1..9999, so it can be shown (ISO-8601) and imported back.
MIN_TIME = -62135596800  # 0001-01-01T00:00:00Z
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z
MAX_DURATION = MAX_TIME - MIN_TIME
_DURATION = re.compile(r"(\d+)\s*([smhdw])")


def now(env: Mapping[str, str] | None = None) -> int:
    """Current Unix time in seconds, or SESSCTL_NOW when set."""
    fake = (env or {}).get("SESSCTL_NOW")
    if fake:
        try:
            return in_range(int(fake), what="SESSCTL_NOW")
        except ValueError:
            return parse_iso(fake, what="SESSCTL_NOW")
    return int(time.time())


def parse_duration(text: str, *, what: str = "duration") -> int:
    """`90s`, `15m`, `12h`, `30d`, `2w` or a sum such as `1d12h` → seconds."""
    s = text.strip().lower()
    pos, total = 0, 0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(
            f"invalid {what} {text!r}: use a number and a unit s, m, h, d or w (e.g. 90s, 12h, 30d, 2w)"
        )
    if total > MAX_DURATION:
        raise UsageError(f"invalid {what} {text!r}: longer than any time sessctl can store (10,000 years)")
    return total


def in_range(ts: int, *, what: str) -> int:
    """ts, or UsageError when it falls outside years 1..9999."""
    if not MIN_TIME <= ts <= MAX_TIME:
        raise UsageError(f"{what} falls outside the years 1 to 9999")
    return ts


def ago(current: int, seconds: int) -> int:
    """current − seconds, held to year 1 (a filter reaching further back means "none")."""
    return max(MIN_TIME, current - seconds)


def parse_iso(text: str, *, what: str = "time") -> int:
    """An ISO-8601 date or date-time → Unix seconds. Naive times are taken as UTC."""
    from datetime import datetime, timezone  # only commands given a date pay for it

    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(
            f"invalid {what} {text!r}: use an ISO-8601 date or time such as 2026-11-01 or 2026-11-01T08:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return in_range(int(dt.timestamp()), what=f"{what} {text!r}")
    except (OverflowError, OSError, ValueError):  # an offset pushing year 1 or 9999 over the edge
        raise UsageError(f"{what} {text!r} falls outside the years 1 to 9999") from None


def parse_point(text: str, current: int, *, what: str) -> int:
    """A point in time given either as an ISO date/time or as a duration ago (`7d`)."""
    s = text.strip()
    if s and s[0].isdigit() and s[-1:].lower() in _UNITS and "-" not in s and ":" not in s:
        return ago(current, parse_duration(s, what=what))
    return parse_iso(s, what=what)


def iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    # Not strftime: its %Y does not pad years below 1000 ("1-01-01"), which no ISO-8601
    # reader (our import included) accepts back.
    t = time.gmtime(ts)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"


def day(ts: int) -> str:
    t = time.gmtime(ts)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
