"""sessctl cleanup"""

from __future__ import annotations

from typing import Any

import click

from sessctl.commands._common import build_filter, filter_options, format_option, get_app, get_client, resolve_format

FORMATS = ("table", "json")


@click.command("cleanup")
@filter_options(status_default="all")
@click.option("--archive-after", metavar="DURATION", help="Archive active sessions idle this long "
              "(overrides [retention] archive_after; 'off' disables).")
@click.option("--delete-after", metavar="DURATION", help="Delete sessions idle this long "
              "(overrides [retention] delete_after; 'off' disables).")
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
@click.option("--vacuum", is_flag=True, help="After deleting, rebuild the file so no freed page keeps old ciphertext.")
@format_option(FORMATS)
@click.pass_context
def cli(ctx: click.Context, archive_after: str | None, delete_after: str | None, dry_run: bool, vacuum: bool,
        fmt: str, json_flag: bool, **kw: Any) -> None:
    """Apply the retention policy; the entry point for cron.

    In order: deletes sessions whose TTL (create --ttl) has passed; deletes sessions
    idle (no message) for [retention] delete_after; archives active sessions idle for
    [retention] archive_after. Filters narrow which sessions the policy applies to.
    Prints a summary (--format json: one line, for logs). Idempotent, exit 0 when
    there is nothing to do, and safe beside running sends: it works in short
    transactions and never touches a session that became active meanwhile.

    \b
    Examples:
      sessctl cleanup
      sessctl cleanup --dry-run --archive-after 30d --delete-after 365d
      sessctl cleanup --delete-after 180d --archive-after off --vacuum
      sessctl -q cleanup --format json >> ~/.local/state/sessctl-cleanup.log
    """
    from sessctl import retention

    app = get_app(ctx)
    f = build_filter(app, kw)
    report = get_client(ctx).cleanup_report(archive_after=archive_after, delete_after=delete_after,
                                            dry_run=dry_run, vacuum=vacuum, where=f)
    if resolve_format(fmt, json_flag) == "json":
        from sessctl.render import dumps

        app.stdout.write(dumps(retention.report_dict(report)) + "\n")
    else:
        from tabulate import tabulate

        rows = [[p.name, str(len(p.ids)) if p.enabled else "-", str(p.messages) if p.enabled else "-", p.rule]
                for p in report.phases]
        app.stdout.write(tabulate(rows, headers=["ACTION", "SESSIONS", "MESSAGES", "RULE"], tablefmt="simple",
                                  disable_numparse=True) + "\n")
    if dry_run:
        app.notice("dry run: nothing was changed")
    if report.vacuumed and not report.checkpointed:
        app.notice("another process has the database open: old pages leave the WAL at its next checkpoint")
