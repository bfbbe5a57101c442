"""sessctl: a session manager for LLM conversations, from the shell and from Python.

    import sessctl
    with sessctl.open() as store:
        reply = store.send("user-123", "hi")

The library's names are loaded on first use, so `import sessctl` (and every CLI
start, which imports this package) stays cheap: see sessctl/api.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Kept as a literal (not importlib.metadata) because `sessctl --version` must not pay
# for importing the packaging machinery.
__version__ = "0.1.0"

_LAZY = {
    "open": "sessctl.api",
    "open_async": "sessctl.api",
    "Client": "sessctl.api",
    "AsyncClient": "sessctl.api",
    "ReplyStream": "sessctl.api",
    "AsyncReplyStream": "sessctl.api",
    "Session": "sessctl.models",
    "Message": "sessctl.models",
    "Reply": "sessctl.models",
    "SessionFilter": "sessctl.models",
    "SearchHit": "sessctl.models",
    "SessctlError": "sessctl.errors",
    "UsageError": "sessctl.errors",
    "NotFoundError": "sessctl.errors",
    "AlreadyExistsError": "sessctl.errors",
    "ProviderError": "sessctl.errors",
    "CryptoError": "sessctl.errors",
    "StorageError": "sessctl.errors",
    "Interrupted": "sessctl.errors",
    "ExitStatus": "sessctl.errors",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    # ruff: noqa: F401
    from sessctl.api import AsyncClient, AsyncReplyStream, Client, ReplyStream, open, open_async
    from sessctl.errors import (
        AlreadyExistsError,
        CryptoError,
        ExitStatus,
        Interrupted,
        NotFoundError,
        ProviderError,
        SessctlError,
        StorageError,
        UsageError,
    )
    from sessctl.models import Message, Reply, SearchHit, Session, SessionFilter


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sessctl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
