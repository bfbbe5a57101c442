"""sessctl retry"""

from __future__ import annotations

import click

from sessctl import complete
from sessctl.commands import _turns
from sessctl.commands._common import format_option, get_app, resolve_format


@click.command("retry")
@click.argument("session_id", metavar="ID", shell_complete=complete.any_session)
@click.option("--model", metavar="MODEL", help="Model for this reply only.")
@click.option("--provider", metavar="NAME", shell_complete=complete.providers, help="Provider for this reply only.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Provider option for this reply, e.g. -o temperature=1 (repeatable).")
@click.option("--stream/--no-stream", default=None,
              help="Print the reply as it arrives. Default: on when stdout is a terminal.")
@click.option("--unarchive", is_flag=True, help="Retry in an archived session, making it active again.")
@format_option(("text", "json"))
@click.pass_context
def cli(ctx: click.Context, session_id: str, model: str | None, provider: str | None, options: tuple[str, ...],
        stream: bool | None, unarchive: bool, fmt: str, json_flag: bool) -> None:
    """Ask again for the last message of session ID and print the new reply.

    When the last message is unanswered (its send failed or was interrupted), it is
    answered now. When its turn is whole, a new reply is asked for, and the earlier
    one is kept marked superseded: shown by show, export and stats, never sent as
    context again. The question goes with the history before it, as stored (after
    redaction). If the call fails (exit 5) or is interrupted (exit 130), no message
    changes, but a partial reply is kept marked incomplete (and, as with send, the
    attempt counts as activity).

    With --format json it prints what send prints, plus "retried" (the seq of the
    question) and "superseded" (the seq of the reply it replaced, or null).

    \b
    Examples:
      sessctl retry user-123
      sessctl retry user-123 --model gpt-4o -o temperature=1
      sessctl retry user-123 --json | jq -r .reply
    """
    from sessctl import conversation, service

    app = get_app(ctx)
    fmt = resolve_format(fmt, json_flag)
    if stream is None:
        stream = app.stdout_isatty and fmt == "text"
    opts = conversation.SendOptions(text="", model=model, provider=provider, options=service.parse_options(options),
                                    stream=stream, create=False, unarchive=unarchive, retry=True)
    _turns.run(ctx, app, [session_id], opts, fmt)
