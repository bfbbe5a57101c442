"""Aggregates for `stats`. SQL does the counting; Python only the percentiles.

Two shapes of query:
- no message window and a session-level key (none, user, model, provider): totals come
  from the per-session counters in `sessions`, one pass over that table;
- a window (`--since`/`--before`) or `--by day`: a pass over the slim `messages` table
  (bodies live elsewhere), counting only messages inside the window; sessions and users
  are then those with messages in it.
Latency figures are over replies (messages with a latency), nearest-rank percentiles,
computed in SQL (see _latency) so that a million replies are never fetched into Python.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sessctl.models import Stats

# A literal, not a parameter: only then can the planner match the partial index.
_NOT_OK = "m.status <> 'ok'"
_KEYS = {None: "NULL", "user": 's."user"', "model": "s.model", "provider": "s.provider"}


def _and(where: str, extra: str) -> str:
    return f"{where} AND {extra}" if where else f" WHERE {extra}"


def _rank(p: int, n: int) -> int:
    """Nearest-rank percentile position (1-based): ceil(p/100 * n), in integers (no
    float rounding at exact ranks)."""
    return max(1, (p * n + 99) // 100)


def _latency(store: Any, key_sql: str, where: str, params: list[Any], window: str,
             wparams: list[Any]) -> dict[Any, tuple[float, int, int]]:
    """{group key: (average, p50, p95)} over replies, without fetching every latency.

    Whole database, no grouping: count and total from the partial index on latency_ms
    (migration 2), and each percentile by an index offset (milliseconds, not a sort).
    Otherwise every latency of the selection is fetched, unsorted, and each group
    sorted in Python."""
    conn = store.conn
    if not where and not window and key_sql == "NULL":
        hint = store.db.index_hint("messages_latency")
        n, tot = conn.execute(
            f"SELECT count(*), coalesce(sum(latency_ms), 0) FROM messages{hint} WHERE latency_ms IS NOT NULL"
        ).fetchone()
        if not n:
            return {}
        at = lambda rank: conn.execute(  # noqa: E731
            f"SELECT latency_ms FROM messages{hint} WHERE latency_ms IS NOT NULL "
            "ORDER BY latency_ms LIMIT 1 OFFSET ?", (rank - 1,)
        ).fetchone()[0]
        return {None: (round(float(tot) / n, 1), at(_rank(50, n)), at(_rank(95, n)))}
    # Grouped or filtered: unsorted pairs, sorted per group in Python (timsort on ints
    # beats both ORDER BY and window functions in SQLite here).
    values: dict[Any, list[int]] = defaultdict(list)
    for k, v in conn.execute(
        f"SELECT {key_sql}, m.latency_ms FROM messages m JOIN sessions s ON s.pk = m.session_pk"
        # "+": keep the planner off the partial latency index here, whose random row
        # lookups lose to a sequential scan of messages joined to sessions.
        f"{_and(where, '+m.latency_ms IS NOT NULL')}{window}",
        [*params, *wparams],
    ):
        values[k].append(v)
    out: dict[Any, tuple[float, int, int]] = {}
    for k, vs in values.items():
        vs.sort()
        n = len(vs)
        out[k] = (round(sum(vs) / n, 1), vs[_rank(50, n) - 1], vs[_rank(95, n) - 1])
    return out


def compute(
    store: Any,
    where_params: tuple[str, list[Any]],
    *,
    since: int | None,
    before: int | None,
    by: str | None,
) -> list[tuple[Any, Stats]]:
    conn = store.conn
    where, params = where_params
    windowed = since is not None or before is not None or by == "day"
    key_sql = store.db.day("m.created_at") if by == "day" else _KEYS[by]
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
            f"SELECT {key_sql}, count(*), count(*) FILTER (WHERE s.status = 'active'), "
            "count(*) FILTER (WHERE s.status = 'archived'), "
            'count(DISTINCT s."user"), coalesce(sum(s.message_count), 0), coalesce(sum(s.tokens_in), 0), '
            f"coalesce(sum(s.tokens_out), 0), coalesce(sum(s.redactions), 0) FROM sessions s{where} GROUP BY 1",
            params,
        )
        for key, total, active, archived, users, msgs, tin, tout, red in rows:
            g = groups[key]
            g.sessions_total, g.sessions_active, g.sessions_archived = int(total), int(active), int(archived)
            g.users, g.messages, g.tokens_in, g.tokens_out, g.redactions = (
                int(users), int(msgs), int(tin), int(tout), int(red))
        for key, rules in conn.execute(
            f"SELECT {key_sql}, s.redaction_rules FROM sessions s{_and(where, 's.redaction_rules IS NOT NULL')}",
            params,
        ):
            _add_rules(groups[key], rules)
    else:
        base = f"FROM messages m JOIN sessions s ON s.pk = m.session_pk{where}{window}"
        if not where:
            base = f"FROM messages m JOIN sessions s ON s.pk = m.session_pk WHERE TRUE{window}"
        rows = conn.execute(
            f"SELECT {key_sql}, count(DISTINCT s.pk), count(DISTINCT CASE WHEN s.status = 'active' THEN s.pk END), "
            "count(DISTINCT CASE WHEN s.status = 'archived' THEN s.pk END), count(DISTINCT s.\"user\"), count(*), "
            "coalesce(sum(m.tokens_in), 0), coalesce(sum(m.tokens_out), 0), "
            f"coalesce(sum(m.redaction_count), 0) {base} GROUP BY 1",
            [*params, *wparams],
        )
        for key, total, active, archived, users, msgs, tin, tout, red in rows:
            g = groups[key]
            g.sessions_total, g.sessions_active, g.sessions_archived = int(total), int(active), int(archived)
            g.users, g.messages, g.tokens_in, g.tokens_out, g.redactions = (
                int(users), int(msgs), int(tin), int(tout), int(red))
        for key, rules in conn.execute(
            f"SELECT {key_sql}, m.redactions {base} AND m.redactions IS NOT NULL", [*params, *wparams]
        ):
            _add_rules(groups[key], rules)

    # Messages that are not ok (unanswered, incomplete, superseded): few, and read from
    # the partial index messages_not_ok (migration 4), so no pass over every message.
    for key, status, n in conn.execute(
        f"SELECT {key_sql}, m.status, count(*) FROM messages m JOIN sessions s ON s.pk = m.session_pk"
        f"{_and(where, _NOT_OK)}{window} GROUP BY 1, 2",
        [*params, *wparams],
    ):
        groups[key].statuses[status] = int(n)

    # Latency: every reply of the selected sessions (inside the window when there is one).
    for key, (avg, p50, p95) in _latency(store, key_sql, where, params, window, wparams).items():
        g = groups[key]
        g.latency_avg, g.latency_p50, g.latency_p95 = avg, p50, p95

    if by is None:
        return [(None, groups.get(None, Stats()))]
    return sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))


def _add_rules(stats: Stats, rules_json: str) -> None:
    for rule, n in json.loads(rules_json).items():
        stats.redaction_rules[rule] = stats.redaction_rules.get(rule, 0) + n
