"""sessctl archive"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import build_filter, filter_options, get_app, get_client


@click.command("archive")
@click.argument("session_ids", metavar="[ID]...", nargs=-1, shell_complete=complete.active_session)
@filter_options(status_default="all")
@click.option("--unarchive", is_flag=True, help="Make the sessions active again instead.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.pass_context
def cli(ctx: click.Context, session_ids: tuple[str, ...], unarchive: bool, dry_run: bool, **kw: Any) -> None:
    """Archive sessions: kept, hidden from `list`, refused by `send`.

    Names sessions by ID, or selects them with filters (both: only named sessions
    that match). Prints the ids that changed, one per line; sessions already archived
    are left alone, so it is safe to run from cron again and again.

    \b
    Examples:
      sessctl archive user-123
      sessctl archive --older-than 30d
      sessctl archive --older-than 30d --user alice --dry-run
      sessctl archive --unarchive user-123
    """

    app = get_app(ctx)
    f = build_filter(app, kw)
    client = get_client(ctx)
    changed = (client.unarchive if unarchive else client.archive)(session_ids, where=f, dry_run=dry_run)
    for sid in changed:
        app.stdout.write(sid + "\n")
    verb = "unarchived" if unarchive else "archived"
    app.notice(f"{'would have ' if dry_run else ''}{verb} {len(changed)} session{'s' if len(changed) != 1 else ''}")
