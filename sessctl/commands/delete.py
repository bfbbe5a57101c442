"""sessctl delete"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import build_filter, filter_options, get_app, get_client


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.command("delete")
@click.argument("session_ids", metavar="[ID]...", nargs=-1, shell_complete=complete.any_session)
@click.option("--all", "all_sessions", is_flag=True, help="Every session (narrowed by any filter).")
@filter_options(status_default="all")
@click.option("-y", "--yes", is_flag=True,
              help="Do not ask. A bulk delete (by filters) needs it when stdin is not a terminal.")
@click.option("--dry-run", is_flag=True, help="Print the ids that would be deleted; delete nothing.")
@click.option("--vacuum", is_flag=True,
              help="Then rebuild the database file and truncate its WAL, so no freed page keeps old ciphertext.")
@click.pass_context
def cli(ctx: click.Context, session_ids: tuple[str, ...], all_sessions: bool, yes: bool, dry_run: bool,
        vacuum: bool, **kw: Any) -> None:
    """Delete sessions permanently: messages, metadata and all.

    Names sessions by ID, or selects them with filters (both: only named sessions that
    match). Prints the ids deleted, one per line. Everything goes in one transaction:
    an unknown ID (exit 3) deletes nothing. A bulk delete (filters, no ID) asks for
    confirmation on a terminal and is refused without --yes when stdin is not one
    (exit 2), so a script cannot wipe sessions by accident. Deleted data is zeroed in
    place (secure_delete); --vacuum also rebuilds the file so it shrinks and no old
    page survives in it or in the WAL.

    \b
    Examples:
      sessctl delete user-123
      sessctl delete --older-than 180d --dry-run
      sessctl delete --older-than 180d --status archived --yes --vacuum
      sessctl delete --user mallory --all --yes
    """
    from sessctl.errors import UsageError

    app = get_app(ctx)
    f = build_filter(app, kw)
    if dry_run:
        ids = get_client(ctx).delete(session_ids, all=all_sessions, where=f, dry_run=True)
        for sid in ids:
            app.stdout.write(sid + "\n")
        app.notice(f"would have deleted {_plural(len(ids), 'session')}")
        return
    confirmed = None
    if not session_ids and not yes:
        if not app.stdin_isatty:
            raise UsageError("refusing a bulk delete without --yes (stdin is not a terminal); "
                             "preview it with --dry-run, then add --yes")
        confirmed = get_client(ctx).delete(session_ids, all=all_sessions, where=f, dry_run=True)
        if not confirmed:
            app.notice("no session matches; nothing was deleted")
            return
        if not click.confirm(f"Permanently delete {_plural(len(confirmed), 'session')}?", err=True):
            app.notice("nothing was deleted")
            return
    result = get_client(ctx).delete_result(session_ids, all=all_sessions, where=f, confirmed=confirmed,
                                           vacuum=vacuum)
    for sid in result.deleted:
        app.stdout.write(sid + "\n")
    app.notice(f"deleted {_plural(len(result.deleted), 'session')} ({_plural(result.messages, 'message')})")
    if result.vacuumed and not result.checkpointed:
        app.notice("another process has the database open: old pages leave the WAL at its next checkpoint")
