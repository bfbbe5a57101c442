"""sessctl unarchive"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import build_filter, filter_options, get_app, get_client


@click.command("unarchive")
@click.argument("session_ids", metavar="[ID]...", nargs=-1, shell_complete=complete.archived_session)
@filter_options(status_default="all")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.pass_context
def cli(ctx: click.Context, session_ids: tuple[str, ...], dry_run: bool, **kw: Any) -> None:
    """Make archived sessions active again (the same as `archive --unarchive`).

    Names sessions by ID, or selects them with filters. Prints the ids that changed;
    active sessions are left alone, so it is safe to repeat.

    \b
    Examples:
      sessctl unarchive user-123
      sessctl unarchive --user alice --since 2026-11-01 --dry-run
    """

    app = get_app(ctx)
    f = build_filter(app, kw)
    changed = get_client(ctx).unarchive(session_ids, where=f, dry_run=dry_run)
    for sid in changed:
        app.stdout.write(sid + "\n")
    app.notice(f"{'would have ' if dry_run else ''}unarchived {len(changed)} session{'s' if len(changed) != 1 else ''}")
