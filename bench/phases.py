#!/usr/bin/env python3
"""Run one sessctl command in-process and print how long its phases of `send` took.

    python bench/phases.py -q send -s ID MESSAGE     (the CLI's own arguments)

Prints `phase<TAB>label<TAB>ms` lines on stderr at exit. Phases are measured by
wrapping the functions that do them (nothing in sessctl is changed): process start-up
up to this script (from BENCH_SPAWNED, a time.time() the parent may set), importing the
CLI and the send code, planning (opening the store and unwrapping the key, compiling the
sanitizer, loading the provider), the HTTP client, the provider call, storing the turn.
Used by bench_send_network.py --breakdown; a wrapper that finds nothing to wrap is
skipped, so it runs against older and newer code alike.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import time
from typing import Any

START = time.perf_counter()
_rows: list[tuple[str, float]] = []


def _add(label: str, seconds: float) -> None:
    _rows.append((label, seconds * 1000))


def _timed(label: str, fn: Any) -> Any:
    if getattr(fn, "_bench_timed", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _add(label, time.perf_counter() - t)

    wrapper._bench_timed = True  # type: ignore[attr-defined]
    return wrapper


def _atimed(label: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            _add(label, time.perf_counter() - t)

    return wrapper


def _wrap(obj: Any, name: str, label: str) -> None:
    if hasattr(obj, name):
        setattr(obj, name, _timed(label, getattr(obj, name)))


def _dump() -> None:
    total: dict[str, float] = {}
    for label, ms in _rows:
        total[label] = total.get(label, 0.0) + ms
    total["in-process total (to atexit)"] = (time.perf_counter() - START) * 1000
    for label, ms in total.items():
        print(f"phase\t{label}\t{ms:.2f}", file=sys.stderr)


def main() -> None:
    spawned = os.environ.get("BENCH_SPAWNED")
    if spawned:
        _add("interpreter start-up", time.time() - float(spawned))
    atexit.register(_dump)
    t = time.perf_counter()
    import sessctl.cli as cli

    _add("import sessctl.cli", time.perf_counter() - t)
    t = time.perf_counter()
    import sessctl.conversation as conv
    from sessctl import service

    _add("import the send code", time.perf_counter() - t)

    _wrap(conv, "plan_all", "plan (store, key, sanitizer, provider)")
    _wrap(service.App, "sanitizer", "  of which: sanitizer compile")
    _wrap(conv, "_mark_active", "mark sessions active")
    _wrap(conv, "_store_turn", "store the turn (sanitize, seal, commit)")
    make_provider = conv.make_provider

    def timed_make_provider(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        provider = make_provider(*args, **kwargs)
        _add("  of which: load the provider", time.perf_counter() - t)
        provider.chat = _atimed("provider call (request, reply)", provider.chat)
        return provider

    conv.make_provider = timed_make_provider
    import sessctl.providers.base as base

    _wrap(base, "open_client", "HTTP client")
    sys.argv = ["sessctl", *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
