"""Shell completion: the scripts (Click's own, so they call back into sessctl and
cannot drift from the command tree) and the dynamic values they ask for.

Every TAB press runs sessctl, so this module imports only click at the top, and the
value callbacks read the database with the standard library's sqlite3 (no migration,
no key, no decryption): httpx, tabulate, cryptography and sqlite_utils stay unloaded.
A callback that fails completes nothing rather than printing an error into the prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
PROG = "sessctl"
COMPLETE_VAR = "_SESSCTL_COMPLETE"
# Where `sessctl completion SHELL` output belongs (README and docgen name these files).
SCRIPT_FILES = {"bash": "sessctl.bash", "zsh": "_sessctl", "fish": "sessctl.fish"}

Callback = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def script(shell: str) -> str:
    """The completion script for shell, exactly as `sessctl completion SHELL` prints it."""
    from click.shell_completion import get_completion_class

    from sessctl.cli import cli

    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"unsupported shell {shell!r}")
    text = cls(cli, {}, PROG, COMPLETE_VAR).source()
    return text if text.endswith("\n") else text + "\n"


def _config(ctx: click.Context) -> Any:
    from sessctl import config

    root = ctx.find_root().params
    return config.load(config_path=root.get("config"), db_path=root.get("db"))


def _already(ctx: click.Context, param: click.Parameter) -> set[str]:
    value = ctx.params.get(param.name or "")
    return set(value) if isinstance(value, (tuple, list)) else set()


def session_ids(status: str | None = None) -> Callback:
    """Completes session ids from the database (only those in `status` when given),
    leaving out ids already on the command line."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            from sessctl.store import lookup

            database = _config(ctx).database
            skip = _already(ctx, param)
            return [CompletionItem(i) for i in lookup.session_ids(database, incomplete, status) if i not in skip]
        except Exception:  # noqa: BLE001 - a TAB must never print a traceback
            return []

    return complete


any_session = session_ids()
archived_session = session_ids("archived")


def providers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Provider names from the configuration (built-ins included)."""
    try:
        cfg = _config(ctx)
        return [CompletionItem(name, help=p.kind) for name, p in sorted(cfg.providers.items())
                if name.startswith(incomplete)]
    except Exception:  # noqa: BLE001
        return []


def users(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Users that own sessions (a plaintext column)."""
    try:
        from sessctl.store import lookup

        return [CompletionItem(u) for u in lookup.users(_config(ctx).database, incomplete)]
    except Exception:  # noqa: BLE001
        return []


def templates(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Template names from the configuration's [templates.NAME] tables."""
    try:
        cfg = _config(ctx)
        return [CompletionItem(name) for name in sorted(cfg.templates) if name.startswith(incomplete)]
    except Exception:  # noqa: BLE001
        return []
