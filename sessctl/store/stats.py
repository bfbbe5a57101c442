"""Aggregates for `stats`. SQL does the counting; Python only the percentiles.

Two shapes of query:
- no message window and a session-level key (none, user, model, provider): totals come
  from the per-session counters in `sessions`, one pass over that table;
- a window (`--since`/`--before`) or `--by day`: a pass over the slim `messages` table
  (bodies live elsewhere), counting only messages inside the window; sessions and users
  are then those with messages in it.
Latency figures are over replies (messages with a latency), nearest-rank percentiles.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from typing import Any

from sessctl.models import Stats

_KEYS = {None: "NULL", "user": "s.user", "model": "s.model", "provider": "s.provider"}
_DAY = "strftime('%Y-%m-%d', m.created_at, 'unixepoch')"


def _and(where: str, extra: str) -> str:
    return f"{where} AND {extra}" if where else f" WHERE {extra}"


def _percentile(sorted_values: list[int], p: float) -> int | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def compute(
    conn: sqlite3.Connection,
    where_params: tuple[str, list[Any]],
    *,
    since: int | None,
    before: int | None,
    by: str | None,
) -> list[tuple[Any, Stats]]:
    where, params = where_params
    windowed = since is not None or before is not None or by == "day"
    key_sql = _DAY if by == "day" else _KEYS[by]
    groups: dict[Any, Stats] = defaultdict(Stats)

    window, wparams = "", []
    if since is not None:
        window += " AND m.created_at >= ?"
        wparams.append(since)
    if before is not None:
        window += " AND m.created_at < ?"
        wparams.append(before)

    if not windowed:
        rows = conn.execute(
            f"SELECT {key_sql}, count(*), total(s.status = 'active'), total(s.status = 'archived'), "
            "count(DISTINCT s.user), total(s.message_count), total(s.tokens_in), total(s.tokens_out), "
            f"total(s.redactions) FROM sessions s{where} GROUP BY 1",
            params,
        )
        for key, total, active, archived, users, msgs, tin, tout, red in rows:
            g = groups[key]
            g.sessions_total, g.sessions_active, g.sessions_archived = total, int(active), int(archived)
            g.users, g.messages, g.tokens_in, g.tokens_out, g.redactions = (
                users, int(msgs), int(tin), int(tout), int(red))
        for key, rules in conn.execute(
            f"SELECT {key_sql}, s.redaction_rules FROM sessions s{_and(where, 's.redaction_rules IS NOT NULL')}",
            params,
        ):
            _add_rules(groups[key], rules)
    else:
        base = f"FROM messages m JOIN sessions s ON s.pk = m.session_pk{where}{window}"
        if not where:
            base = f"FROM messages m JOIN sessions s ON s.pk = m.session_pk WHERE 1{window}"
        rows = conn.execute(
            f"SELECT {key_sql}, count(DISTINCT s.pk), count(DISTINCT CASE WHEN s.status = 'active' THEN s.pk END), "
            "count(DISTINCT CASE WHEN s.status = 'archived' THEN s.pk END), count(DISTINCT s.user), count(*), "
            f"total(m.tokens_in), total(m.tokens_out), total(m.redaction_count) {base} GROUP BY 1",
            [*params, *wparams],
        )
        for key, total, active, archived, users, msgs, tin, tout, red in rows:
            g = groups[key]
            g.sessions_total, g.sessions_active, g.sessions_archived = total, active, archived
            g.users, g.messages, g.tokens_in, g.tokens_out, g.redactions = (
                users, msgs, int(tin), int(tout), int(red))
        for key, rules in conn.execute(
            f"SELECT {key_sql}, m.redactions {base} AND m.redactions IS NOT NULL", [*params, *wparams]
        ):
            _add_rules(groups[key], rules)

    # Latency: every reply of the selected sessions (inside the window when there is one).
    lat_where = _and(where, "m.latency_ms IS NOT NULL") + window
    latencies: dict[Any, list[int]] = defaultdict(list)
    for key, latency in conn.execute(
        f"SELECT {key_sql}, m.latency_ms FROM messages m JOIN sessions s ON s.pk = m.session_pk{lat_where} "
        "ORDER BY 1, 2",
        [*params, *wparams],
    ):
        latencies[key].append(latency)
    for key, values in latencies.items():
        g = groups[key]
        g.latency_avg = round(sum(values) / len(values), 1)
        g.latency_p50 = _percentile(values, 50)
        g.latency_p95 = _percentile(values, 95)

    if by is None:
        return [(None, groups.get(None, Stats()))]
    return sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))


def _add_rules(stats: Stats, rules_json: str) -> None:
    for rule, n in json.loads(rules_json).items():
        stats.redaction_rules[rule] = stats.redaction_rules.get(rule, 0) + n
