"""sessctl update"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import get_client


@click.command("update")
@click.argument("session_id", metavar="ID", shell_complete=complete.any_session)
@click.option("--title", metavar="TEXT", help="New title ('' removes it).")
@click.option("--user", metavar="USER", shell_complete=complete.users, help="New owner ('' removes it).")
@click.option("--ttl", metavar="DURATION", help="Expire this long from now (e.g. 7d); `cleanup` deletes it then.")
@click.option("--no-ttl", is_flag=True, help="Remove the expiry.")
@click.pass_context
def cli(ctx: click.Context, session_id: str, title: str | None, user: str | None, ttl: str | None,
        no_ttl: bool) -> None:
    """Change a session's title, owner or expiry, in one transaction.

    Metadata has its own command, `sessctl meta`. Prints nothing on success. Like meta,
    this is not activity: it does not reset retention clocks.

    \b
    Examples:
      sessctl update user-123 --title "Refund, escalated"
      sessctl update user-123 --user bob
      sessctl update user-123 --ttl 30d
      sessctl update user-123 --no-ttl --title ''
    """
    from sessctl.errors import UsageError

    if ttl is not None and no_ttl:
        raise UsageError("give --ttl or --no-ttl, not both")
    changes: dict[str, Any] = {}
    if title is not None:
        changes["title"] = title
    if user is not None:
        changes["user"] = user
    if ttl is not None:
        changes["ttl"] = ttl
    if no_ttl:
        changes["ttl"] = None
    if not changes:
        raise UsageError("nothing to change: give --title, --user, --ttl or --no-ttl")
    get_client(ctx).update(session_id, **changes)
