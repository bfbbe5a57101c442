"""`providers list` and `providers test`: what is configured, and whether it answers.

Neither ever shows a secret: `list` says whether the key's environment variable is set,
never its value; `test` reports the providers' one-line errors, which are scrubbed of
every secret the provider sends (providers/http.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sessctl.config import pick_default_provider
from sessctl.errors import ProviderError, SessctlError
from sessctl.service import App


@dataclass
class ProviderInfo:
    name: str
    kind: str
    model: str | None
    base_url: str | None
    api_key_env: str | None
    api_key_set: bool | None  # None: the provider needs no key
    default: bool
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_reply_bytes: int
    max_retries: int
    max_context_messages: int | None
    max_context_tokens: int | None
    options: dict[str, Any]
    header_names: list[str]  # literal headers: names only
    headers_env: dict[str, str]  # header → variable name (never its value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ProbeResult:
    name: str
    kind: str
    status: str  # "ok" | "failed" | "skipped"
    detail: str
    latency_ms: int | None = None
    http_status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def describe(app: App) -> list[ProviderInfo]:
    """Every provider (built in or configured), by name."""
    cfg = app.config
    default, _ = pick_default_provider(cfg)
    out = []
    for name in sorted(cfg.providers):
        p = cfg.providers[name]
        out.append(ProviderInfo(
            name=name, kind=p.kind, model=p.model, base_url=p.base_url if p.kind != "echo" else None,
            api_key_env=p.api_key_env if p.kind != "echo" else None,
            api_key_set=bool((app.env.get(p.api_key_env) or "").strip()) if p.api_key_env and p.kind != "echo"
            else None,
            default=name == default,
            connect_timeout=p.connect_timeout, read_timeout=p.read_timeout, total_timeout=p.total_timeout,
            max_reply_bytes=p.max_reply_bytes, max_retries=p.max_retries,
            max_context_messages=p.max_context_messages, max_context_tokens=p.max_context_tokens,
            options=dict(p.options), header_names=sorted(h.lower() for h in p.headers),
            headers_env={k.lower(): v for k, v in sorted(p.headers_env.items())},
        ))
    return out


def _missing_env(app: App, name: str) -> list[str]:
    p = app.config.providers[name]
    if p.kind == "echo":
        return []
    wanted = [v for v in (p.api_key_env, *p.headers_env.values()) if v]
    return [v for v in wanted if not (app.env.get(v) or "").strip()]


def probe(app: App, names: list[str]) -> list[ProbeResult]:
    """Probe the named providers (all of them when none is named) concurrently.

    Without names, a provider whose key variable is unset is `skipped` rather than
    failed: a fresh machine has built-in providers it never meant to use. Named
    explicitly, a missing key is a failure like any other."""
    from sessctl.providers.base import make_provider

    explicit = bool(names)
    chosen = list(dict.fromkeys(names)) if explicit else sorted(app.config.providers)
    for n in chosen:
        app.config.provider(n)  # an unknown name is a usage error before any probe
    results: dict[str, ProbeResult] = {}
    to_probe = []
    for n in chosen:
        p = app.config.providers[n]
        missing = _missing_env(app, n)
        if missing and not explicit:
            results[n] = ProbeResult(n, p.kind, "skipped", f"{', '.join(missing)} not set")
        else:
            to_probe.append(n)

    async def run_all() -> None:
        client = None
        providers = {n: make_provider(app.config.providers[n], app.env) for n in to_probe}
        if any(pr.needs_http for pr in providers.values()):
            from sessctl.providers.base import open_client

            client = open_client(max(1, len(providers)))

        async def one(n: str) -> None:
            provider = providers[n]
            started = time.perf_counter()
            try:
                provider.preflight()
                line = await provider.check(client)
            except ProviderError as exc:
                results[n] = ProbeResult(n, provider.config.kind, "failed", exc.message,
                                         int((time.perf_counter() - started) * 1000), exc.status)
                return
            except SessctlError as exc:  # a missing key, a bad base_url
                results[n] = ProbeResult(n, provider.config.kind, "failed", exc.message)
                return
            ms = int((time.perf_counter() - started) * 1000)
            results[n] = ProbeResult(n, provider.config.kind, "ok", line, ms)

        try:
            await asyncio.gather(*(one(n) for n in to_probe))
        finally:
            if client is not None:
                await client.aclose()

    if to_probe:
        asyncio.run(run_all())
    return [results[n] for n in chosen]
