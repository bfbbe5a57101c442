"""sessctl fork"""

from __future__ import annotations

import click

from sessctl import complete
from sessctl.commands._common import format_option, get_app, get_client, resolve_format


@click.command("fork")
@click.argument("session_id", metavar="ID", shell_complete=complete.any_session)
@click.argument("new_id", metavar="NEW")
@click.option("--at", type=click.IntRange(min=0), metavar="SEQ",
              help="Copy messages 1..SEQ only (default: all). SEQ ends a turn, or names a question to ask again.")
@format_option(("text", "json"))
@click.pass_context
def cli(ctx: click.Context, session_id: str, new_id: str, at: int | None, fmt: str, json_flag: bool) -> None:
    """Copy session ID into a new session NEW, to take the conversation elsewhere.

    NEW gets ID's owner, provider, model, system prompt, title, metadata, options and
    expiry, and its messages up to --at SEQ (default all), each encrypted anew for
    NEW. NEW records where it came from (forked_from in show, list --json and
    export). ID is not changed. Prints NEW (with --json, its session object).

    SEQ must end a turn, or be a question: its copy is then unanswered, so `sessctl
    retry NEW` asks it again there. Exit 3 when ID does not exist, 4 when NEW does.

    \b
    Examples:
      sessctl fork user-123 user-123-alt
      sessctl fork user-123 try-again --at 3 && sessctl retry try-again
      sessctl fork user-123 branch --json | jq .forked_from
    """
    from sessctl import render

    app = get_app(ctx)
    result = get_client(ctx).fork_result(session_id, new_id, at=at)
    note = "; its last message is a question left unanswered (sessctl retry asks it)" if result.opened_question else ""
    app.notice(f"forked {session_id!r} into {new_id!r}: {result.copied} messages copied{note}")
    if resolve_format(fmt, json_flag) == "json":
        render.write_json(app.stdout, render.session_dict(result.session))
    else:
        app.stdout.write(result.session.id + "\n")
