"""sessctl send"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands import _turns
from sessctl.commands._common import count_type, format_option, get_app, message_text, resolve_format

FORMATS = ("text", "json")


@click.command("send")
@click.argument("message", required=False)
@click.option("-s", "--session", "sessions", multiple=True, metavar="ID",
              shell_complete=complete.active_session,
              help="Session to send to (repeatable: several are called concurrently).")
@click.option("-c", "--continue", "continue_", is_flag=True,
              help="Send to the most recently active session (of --user, when given) instead of -s.")
@click.option("--user", metavar="USER", shell_complete=complete.users,
              help="Owner of a session this send creates; with -c, continue this user's latest session.")
@click.option("--template", metavar="NAME", shell_complete=complete.templates,
              help="Set up a session this send creates from [templates.NAME] of config.toml.")
@click.option("--model", metavar="MODEL", help="Model for this turn only.")
@click.option("--provider", metavar="NAME", shell_complete=complete.providers, help="Provider for this turn only.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Provider option for this turn, e.g. -o temperature=0 (repeatable).")
@click.option("--stream/--no-stream", default=None,
              help="Print the reply as it arrives. Default: on when stdout is a terminal.")
@click.option("--no-create", is_flag=True, help="Exit 3 instead of creating a missing session.")
@click.option("--unarchive", is_flag=True, help="Send to an archived session, making it active again.")
@click.option("--concurrency", type=count_type(1, 1024), default=8, show_default=True,
              help="With several sessions, how many calls run at once.")
@click.option("--dry-run", is_flag=True, help="Print the request body that would be sent, as JSON; call nothing.")
@format_option(FORMATS)
@click.pass_context
def cli(ctx: click.Context, message: str | None, sessions: tuple[str, ...], continue_: bool,
        options: tuple[str, ...], stream: bool | None, no_create: bool, dry_run: bool, fmt: str, json_flag: bool,
        **kw: Any) -> None:
    """Send MESSAGE to a session and print the reply.

    The session's history goes with it; both sides are sanitized and stored. MESSAGE
    '-' or omitted reads the message from stdin. MESSAGE and piped stdin together send
    both: MESSAGE, a blank line, then the piped text; a terminal or empty stdin adds
    nothing. Bytes that are not UTF-8 are stored as U+FFFD and counted as redactions
    (invalid_unicode). A missing session is created (with a notice) unless --no-create,
    owned by --user and set up from --template (both only apply to a session being
    created). -c/--continue sends to the most recently active session (of --user) and
    names it on stderr. With --format json it prints one JSON object per session, one
    per line.

    If the call fails (exit 5, after retries) or is interrupted (Ctrl-C, exit 130), the
    message is kept, marked unanswered, with any partial reply marked incomplete; they
    are never sent as context again. With several sessions, the exit code is that of
    the first one that failed, in the order given.

    \b
    Examples:
      sessctl send --session user-123 "hi"
      git diff | sessctl send -s review "Review this diff"
      sessctl send -s a -s b -s c "Summarise our conversation" --format json
      sessctl send -c "And what about refunds?"
      sessctl send -s t-9 --template support --user alice "My order is late"
    """
    from sessctl import conversation, render, service
    from sessctl.errors import UsageError

    app = get_app(ctx)
    fmt = resolve_format(fmt, json_flag)
    if continue_ and sessions:
        raise UsageError("give -s/--session or -c/--continue, not both")
    if not continue_ and not sessions:
        raise UsageError("no session: give -s ID, or -c to continue the most recently active one")
    if continue_:
        from sessctl import workflow

        chosen = workflow.latest_session(app, kw["user"])
        app.notice(f"continuing session {chosen.id!r} (last active {render.iso(chosen.updated_at)})")
        sessions = (chosen.id,)
    message = message_text(app, message)
    if stream is None:
        stream = app.stdout_isatty and fmt == "text" and len(sessions) == 1
    opts = conversation.SendOptions(text=message, options=service.parse_options(options), stream=stream,
                                    create=not no_create, **kw)
    if dry_run:
        bodies = conversation.dry_run(app, sessions, opts)
        if len(bodies) == 1:
            render.write_json(app.stdout, bodies[0]["body"])
        else:
            for b in bodies:
                app.stdout.write(render.dumps(b) + "\n")
        return

    _turns.run(ctx, app, sessions, opts, fmt)
