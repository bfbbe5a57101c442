"""sessctl create"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import count_type, get_app, get_client


@click.command("create")
@click.argument("session_id", metavar="[ID]", required=False)
@click.option("--user", metavar="USER", help="Owner of the session (plain text, for filtering).")
@click.option("--provider", metavar="NAME", shell_complete=complete.providers,
              help="Provider from config.toml (default: default_provider).")
@click.option("--model", metavar="MODEL", help="Model (default: the provider's).")
@click.option("--system", "system_text", metavar="TEXT", help="System prompt.")
@click.option("--system-file", type=click.File("r", encoding="utf-8"), metavar="FILE",
              help="Read the system prompt from FILE ('-' for stdin).")
@click.option("--title", metavar="TEXT", help="Title, shown by list and show.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata (repeatable).")
@click.option("--ttl", metavar="DURATION", help="Expire after this long (e.g. 7d); `cleanup` removes it then.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Provider option for every turn, e.g. -o temperature=0.2 (repeatable).")
@click.option("--max-context-messages", type=count_type(1), metavar="N", help="Send at most N messages of history.")
@click.option("--max-context-tokens", type=count_type(1), metavar="N", help="Send at most about N tokens of history.")
@click.option("--exist-ok", is_flag=True, help="Succeed (exit 0) when the session already exists.")
@click.option("--template", metavar="NAME", shell_complete=complete.templates,
              help="Start from [templates.NAME] of config.toml; the options given here win over it.")
@click.pass_context
def cli(ctx: click.Context, session_id: str | None, system_text: str | None, system_file: Any,
        meta: tuple[str, ...], ttl: str | None, options: tuple[str, ...], **kw: Any) -> None:
    """Create a session and print its id (a random one when ID is omitted).

    \b
    Examples:
      sessctl create user-123 --user alice --system "You are terse." --meta plan=pro
      sessctl create --title "Ticket 4411" --ttl 30d
      sessctl create user-123 --exist-ok   # idempotent, for scripts
      sessctl create t-9 --template support --meta ticket=9
    """
    from sessctl import service, timeutil
    from sessctl.errors import UsageError

    app = get_app(ctx)
    if system_text is not None and system_file is not None:
        raise UsageError("give --system or --system-file, not both")
    req = service.CreateRequest(
        id=session_id,
        system=system_file.read() if system_file is not None else system_text,
        metadata=service.parse_pairs(meta, "--meta"),
        ttl=timeutil.parse_duration(ttl, what="--ttl") if ttl else None,
        options=service.parse_options(options),
        **kw,
    )
    session, created = get_client(ctx).create_result(req.id, user=req.user, provider=req.provider,
                                                     model=req.model, system=req.system, title=req.title,
                                                     metadata=req.metadata, ttl=ttl, options=req.options,
                                                     max_context_messages=req.max_context_messages,
                                                     max_context_tokens=req.max_context_tokens,
                                                     exist_ok=req.exist_ok, template=req.template)
    if not created:
        app.notice(f"session {session.id!r} already exists; left unchanged")
    app.stdout.write(session.id + "\n")
