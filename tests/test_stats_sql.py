"""`stats` latency percentiles computed in SQL agree with a plain nearest-rank
computation over the raw rows, in every query shape (whole database, grouped,
filtered, time window)."""

from __future__ import annotations

import io
import math
import random
import time
from collections import defaultdict
from typing import Any

import pytest

from conftest import Paths, Run
from dbkit import StoredDb

pytestmark = pytest.mark.engines


def _nearest_rank(values: list[int], p: int) -> int:
    values = sorted(values)
    return values[max(1, math.ceil(p * len(values) / 100)) - 1]


@pytest.fixture
def latencies(paths: Paths) -> None:
    from sessctl import config
    from sessctl.models import NewSession
    from sessctl.service import App
    from sessctl.store import NewMessage

    rng = random.Random(11)
    app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    store = app.store(create=True)

    def tx(conn: Any) -> None:
        for i in range(60):
            t = 1_790_000_000 + i * 3600
            msgs = []
            for j in range(rng.randrange(0, 12)):
                msgs.append(NewMessage("user", f"q{j}", created_at=t + j * 600))
                if rng.random() < 0.9:  # some turns unanswered: no latency
                    msgs.append(NewMessage("assistant", "a", model=f"m{i % 3}", tokens_in=1, tokens_out=1,
                                           latency_ms=rng.choice([rng.randrange(1, 5000), 100, 100]),
                                           created_at=t + j * 600 + 1))
            store.append_messages(f"s{i}", msgs, t + 7200,
                                  create=NewSession(id=f"s{i}", user=f"u{i % 4}", provider="echo", model=f"m{i % 3}"))

    store.write(tx)
    app.close()


def _raw(stored: StoredDb, where: str = "TRUE", params: tuple[Any, ...] = ()) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for user, model, lat in stored.query(
        'SELECT s."user", s.model, m.latency_ms FROM messages m JOIN sessions s ON s.pk = m.session_pk '
        f"WHERE m.latency_ms IS NOT NULL AND {where}", params
    ):
        groups["all"].append(lat)
        groups[f"user:{user}"].append(lat)
        groups[f"model:{model}"].append(lat)
    return groups


def _expect(values: list[int]) -> dict[str, Any]:
    return {"avg": round(sum(values) / len(values), 1), "p50": _nearest_rank(values, 50),
            "p95": _nearest_rank(values, 95)}


def test_whole_database(ok: Run, stored: StoredDb, latencies: None) -> None:
    assert ok("stats", "--json").json()["latency_ms"] == _expect(_raw(stored)["all"])


def test_grouped_and_filtered(ok: Run, stored: StoredDb, latencies: None) -> None:
    raw = _raw(stored)
    for by in ("user", "model"):
        groups = ok("stats", "--by", by, "--json").json()["groups"]
        assert {g["key"]: g["latency_ms"] for g in groups} == {
            k.split(":", 1)[1]: _expect(v) for k, v in raw.items() if k.startswith(f"{by}:")}
    assert ok("stats", "--user", "u1", "--json").json()["latency_ms"] == _expect(raw["user:u1"])


def test_time_window(ok: Run, stored: StoredDb, latencies: None) -> None:
    since, before = 1_790_000_000 + 20 * 3600, 1_790_000_000 + 40 * 3600
    raw = _raw(stored, "m.created_at >= ? AND m.created_at < ?", (since, before))
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    st = ok("stats", "--since", iso(since), "--before", iso(before), "--json").json()
    assert st["messages"] > 0
    assert st["latency_ms"] == _expect(raw["all"])


def test_no_replies(ok: Run) -> None:
    ok("create", "empty")
    assert ok("stats", "--json").json()["latency_ms"] == {"avg": None, "p50": None, "p95": None}
    assert ok("stats", "--by", "user", "--json").json()["groups"][0]["latency_ms"] == {
        "avg": None, "p50": None, "p95": None}
