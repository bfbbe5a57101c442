"""Options shared by several commands, and the helpers every command uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sessctl import complete

F = Callable[..., Any]

# Every whole-number option is bounded: past these a value can only be a mistake, and
# an unbounded one reaches SQLite or PostgreSQL as an integer they cannot hold.
MAX_COUNT = 2**31 - 1


def count_type(minimum: int = 0, maximum: int = MAX_COUNT) -> click.IntRange:
    return click.IntRange(min=minimum, max=maximum)


def get_app(ctx: click.Context) -> Any:
    """The App: configuration, streams, notices."""
    return ctx.find_root().obj.app()


def get_client(ctx: click.Context) -> Any:
    """The library Client every session command calls (sessctl/api.py)."""
    return ctx.find_root().obj.client()


def format_option(choices: tuple[str, ...]) -> Callable[[F], F]:
    """`--format` (default: the first choice) plus `--json`, short for `--format json`."""

    def decorate(f: F) -> F:
        f = click.option(
            "--json", "json_flag", is_flag=True, help="Short for --format json."
        )(f) if "json" in choices else f
        return click.option(
            "--format", "fmt", type=click.Choice(choices), default=choices[0], show_default=True,
            help="Output format.",
        )(f)

    return decorate


def resolve_format(fmt: str, json_flag: bool = False) -> str:
    return "json" if json_flag else fmt


def filter_options(*, status_default: str, time_window: bool = True) -> Callable[[F], F]:
    """The shared session filters. `--since`/`--before` select by last activity,
    except in `stats`, which uses them as a message time window (time_window=False)."""

    def decorate(f: F) -> F:
        opts = [
            click.option("--user", metavar="USER", shell_complete=complete.users,
                         help="Only sessions of this user."),
            click.option("--status", type=click.Choice(["active", "archived", "all"]), default=status_default,
                         show_default=True, help="Only sessions in this state."),
            click.option("--model", metavar="MODEL", help="Only sessions using this model."),
            click.option("--provider", "provider_filter", metavar="NAME", shell_complete=complete.providers,
                         help="Only sessions using this provider."),
            click.option("--older-than", metavar="DURATION",
                         help="Only sessions idle for at least this long (90s, 15m, 12h, 30d, 2w)."),
            click.option("--since", metavar="WHEN",
                         help="Only sessions active since WHEN (ISO date/time, or a duration ago such as 7d)."
                         if time_window else "Count only messages since WHEN (ISO date/time or a duration ago)."),
            click.option("--before", metavar="WHEN",
                         help="Only sessions last active before WHEN (ISO date/time or a duration ago)."
                         if time_window else "Count only messages before WHEN (ISO date/time or a duration ago)."),
            click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
                         help="Only sessions whose metadata has KEY=VALUE (repeatable; all must match)."),
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def build_filter(app: Any, kw: dict[str, Any], *, time_window: bool = True) -> Any:
    """Pop the filter options out of a command's keyword arguments → SessionFilter."""
    from sessctl.service import make_filter

    return make_filter(
        app,
        status=kw.pop("status"),
        user=kw.pop("user"),
        model=kw.pop("model"),
        provider=kw.pop("provider_filter"),
        older_than=kw.pop("older_than"),
        since=kw.pop("since") if time_window else None,
        before=kw.pop("before") if time_window else None,
        meta=kw.pop("meta"),
    )


def read_stdin(app: Any) -> str:
    """All of stdin as text; bytes that are not UTF-8 are kept (as lone surrogates) for
    the store to replace with U+FFFD and count (sessctl/text.py)."""
    from sessctl.text import decode

    stream = app.stdin
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    return decode(raw) if isinstance(raw, bytes) else raw


def message_text(app: Any, message: str | None) -> str:
    """The message `send` (and friends) sends: MESSAGE, or stdin for '-' or none, or
    both when MESSAGE is given and stdin is piped (MESSAGE, a blank line, the piped
    text), so `git diff | sessctl send -s review "Review this diff"` sends the diff."""
    from sessctl.errors import UsageError

    if message is None or message == "-":
        if app.stdin_isatty:
            raise UsageError("no message: give MESSAGE or pipe it on stdin")
        return read_stdin(app)
    if app.stdin_isatty or app.stdin is None:
        return message
    piped = read_stdin(app)
    return f"{message}\n\n{piped}" if piped.strip() else message
