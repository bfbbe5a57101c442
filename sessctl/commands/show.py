"""sessctl show"""

from __future__ import annotations

import click

from sessctl import complete
from sessctl.commands._common import count_type, format_option, get_app, get_client, resolve_format

FORMATS = ("text", "markdown", "json")


@click.command("show")
@click.argument("session_id", metavar="ID", shell_complete=complete.any_session)
@click.option("--last", type=count_type(0), metavar="N", help="Only the last N messages.")
@format_option(FORMATS)
@click.pass_context
def cli(ctx: click.Context, session_id: str, last: int | None, fmt: str, json_flag: bool) -> None:
    """Show a session's header and transcript.

    \b
    Examples:
      sessctl show user-123
      sessctl show user-123 --last 4 --format markdown
      sessctl show user-123 --json | jq '.messages[-1].content'
    """
    from sessctl import render

    app = get_app(ctx)
    session = get_client(ctx).get(session_id, last=last)
    render.write_show(app.stdout, session, session.messages, resolve_format(fmt, json_flag), color=app.color)
