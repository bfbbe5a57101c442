"""sessctl chat"""

from __future__ import annotations

import click

from sessctl import complete
from sessctl.commands._common import get_app, get_client


@click.command("chat")
@click.option("-s", "--session", "session_id", metavar="ID", shell_complete=complete.any_session,
              help="Session to chat in (created by the first message if missing). Default: a new one.")
@click.option("-c", "--continue", "continue_", is_flag=True,
              help="Chat in the most recently active session (of --user, when given).")
@click.option("--user", metavar="USER", shell_complete=complete.users,
              help="Owner of a session the chat creates; with -c, continue this user's latest session.")
@click.option("--template", metavar="NAME", shell_complete=complete.templates,
              help="Set up a session the chat creates from [templates.NAME] of config.toml.")
@click.option("--model", metavar="MODEL", help="Model for this chat's turns (/model changes it).")
@click.option("--provider", metavar="NAME", shell_complete=complete.providers, help="Provider for this chat's turns.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Provider option for this chat's turns, e.g. -o temperature=0.7 (repeatable).")
@click.option("--no-history", is_flag=True, help="Do not read or write the input history file.")
@click.pass_context
def cli(ctx: click.Context, session_id: str | None, continue_: bool, user: str | None, template: str | None,
        model: str | None, provider: str | None, options: tuple[str, ...], no_history: bool) -> None:
    """Talk to a session interactively: each line is a message, the reply streams back.

    Every message is a `send` turn (sanitized, stored, marked the same way). Ctrl-C
    stops a reply as it streams, keeps the message (unanswered) and what arrived
    (incomplete), and the chat goes on; Ctrl-D or /exit leaves with exit 0. Without
    -s or -c, a new session is made (its id is shown). /help lists the commands:
    /retry, /fork NEW [SEQ], /show [N], /system [TEXT], /model [NAME], /exit.

    For a message of several lines, type a line with just \"\"\" before and after it.
    A line starting with // sends the rest, starting with /.

    On a terminal, lines are edited with readline and kept in a history file,
    $XDG_STATE_HOME/sessctl/chat_history (0600; entries sanitized, multi-line
    messages left out; --no-history to skip it). When stdin is not a terminal, each
    line is a message or a command, nothing is prompted, and the first failed turn
    ends the chat with its exit code.

    \b
    Examples:
      sessctl chat
      sessctl chat -s user-123 --model gpt-4o
      sessctl chat -c --user alice
      printf 'Hi\\n/retry\\n' | sessctl chat -s scripted
    """
    from sessctl import chat, service

    app = get_app(ctx)
    opts = chat.ChatOptions(model=model, provider=provider, options=service.parse_options(options), user=user,
                            template=template, history=not no_history)
    ctx.exit(chat.start(app, get_client(ctx), session_id, opts, continue_=continue_))
