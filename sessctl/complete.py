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


def _bash_class() -> Any:
    from click.shell_completion import BashComplete

    class SessctlBash(BashComplete):
        """Click's bash script, with one change: words are split on whitespace only.

        Bash splits the word under the cursor at COMP_WORDBREAKS (by default : @ = and
        more), so an id like `ticket:4411` or `alice@example.com` reached sessctl in
        pieces, and the completion replaced only the last piece with the whole id
        (`ticket:ticket:4411`). Here the words sent to sessctl come from COMP_LINE
        split on blanks, and each completion is trimmed of the part of the word that
        readline will not replace (up to its last word-break character), the same fix
        as bash-completion's __ltrim_colon_completions, for every break character."""

        source_template = _BASH_SOURCE

    return SessctlBash


_BASH_SOURCE = r"""%(complete_func)s() {
    local IFS=$'\n'
    local response line="${COMP_LINE:0:COMP_POINT}" i c
    local -a words
    IFS=$' \t' read -r -a words <<< "$line"
    [[ -z "$line" || "$line" == *[[:blank:]] ]] && words+=("")
    local cword=$(( ${#words[@]} - 1 ))
    local cur="${words[cword]}" tail
    tail="$cur"
    for (( i = ${#cur} - 1; i >= 0; i-- )); do
        c="${cur:i:1}"
        if [[ "$COMP_WORDBREAKS" == *"$c"* ]]; then
            tail="${cur:i+1}"
            break
        fi
    done
    local prefix="${cur:0:${#cur}-${#tail}}"

    response=$(env COMP_WORDS="${words[*]}" COMP_CWORD=$cword %(complete_var)s=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("${value#"$prefix"}")
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class _LazyBash:
    """The bash class, built on first use (click.shell_completion is loaded only then)."""

    def __call__(self, *args: Any) -> Any:
        return _bash_class()(*args)


_BashComplete = _LazyBash()


def script(shell: str) -> str:
    """The completion script for shell, exactly as `sessctl completion SHELL` prints it."""
    from click.shell_completion import get_completion_class

    from sessctl.cli import cli

    cls = _BashComplete if shell == "bash" else get_completion_class(shell)
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
active_session = session_ids("active")  # where only an active session is accepted (send, archive)
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
