"""sessctl send"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import count_type, format_option, get_app, message_text, resolve_format

FORMATS = ("text", "json")


@click.command("send")
@click.argument("message", required=False)
@click.option("-s", "--session", "sessions", multiple=True, required=True, metavar="ID",
              shell_complete=complete.active_session,
              help="Session to send to (repeatable: several are called concurrently).")
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
def cli(ctx: click.Context, message: str | None, sessions: tuple[str, ...], options: tuple[str, ...],
        stream: bool | None, no_create: bool, dry_run: bool, fmt: str, json_flag: bool, **kw: Any) -> None:
    """Send MESSAGE to a session and print the reply.

    The session's history goes with it; both sides are sanitized and stored. MESSAGE
    '-' or omitted reads the message from stdin. MESSAGE and piped stdin together send
    both: MESSAGE, a blank line, then the piped text; a terminal or empty stdin adds
    nothing. Bytes that are not UTF-8 are stored as U+FFFD and counted as redactions
    (invalid_unicode). A missing session is created
    (with a notice) unless --no-create. With --format json it prints one JSON object
    per session, one per line.

    If the call fails (exit 5, after retries) or is interrupted (Ctrl-C, exit 130), the
    message is kept, marked unanswered, with any partial reply marked incomplete; they
    are never sent as context again. With several sessions, the exit code is that of
    the first one that failed, in the order given.

    \b
    Examples:
      sessctl send --session user-123 "hi"
      git diff | sessctl send -s review "Review this diff"
      sessctl send -s a -s b -s c "Summarise our conversation" --format json
    """
    from sessctl import conversation, render, service

    app = get_app(ctx)
    fmt = resolve_format(fmt, json_flag)
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

    streamed: list[str] = []

    def on_text(piece: str) -> None:
        if fmt == "text" and piece:
            streamed.append(piece[-1])
            app.stdout.write(piece)
            app.stdout.flush()

    def end_stream() -> None:
        if streamed and streamed[-1] != "\n":
            app.stdout.write("\n")

    results = conversation.send(app, sessions, opts, on_text=on_text)
    multi = len(results) > 1
    for i, r in enumerate(results):
        if r.created:
            app.notice(f"created session {r.session_id!r}" + (f" ({r.notice})" if r.notice else ""))
        if fmt == "json":
            app.stdout.write(render.dumps(render.send_dict(
                r.session_id, r.reply, r.redactions, str(r.error) if r.error else None,
                exit_code=int(r.error.exit_code) if r.error else None)) + "\n")
        elif r.reply is not None:
            if multi:
                app.stdout.write(("\n" if i else "") + f"==> {r.session_id} <==\n")
            if streamed and not multi:
                end_stream()
            else:
                app.stdout.write(r.reply.content + ("" if r.reply.content.endswith("\n") else "\n"))
        if r.error is not None:
            if not multi:
                end_stream()
            prefix = f"session {r.session_id!r}: " if multi else ""
            app.stderr.write(f"sessctl: error: {prefix}{r.error}{_kept(r, multi)}\n")
    exit_code = conversation.exit_code(results)
    app.stdout.flush()
    ctx.exit(exit_code)


def _kept(r: Any, multi: bool) -> str:
    """Where the user's text went when the call failed: saved, never lost."""
    if not r.kept:
        return ""
    where = "" if multi else f" in session {r.session_id!r}"
    note = f"; your message is saved{where}, marked unanswered"
    if r.partial_chars:
        note += ", and the partial reply, marked incomplete"
    return note
