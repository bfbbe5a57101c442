"""sessctl search"""

from __future__ import annotations

from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import build_filter, filter_options, format_option, get_app, get_client, resolve_format

FORMATS = ("table", "json", "jsonl", "ids")


@click.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("-s", "--session", "session_id", metavar="ID", shell_complete=complete.any_session,
              help="Search this session only.")
@filter_options(status_default="all")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most this many hits; 0 for all.")
@format_option(FORMATS)
@click.pass_context
def cli(ctx: click.Context, query: tuple[str, ...], session_id: str | None, limit: int, fmt: str,
        json_flag: bool, **kw: Any) -> None:
    """Search messages across sessions: best matches first (relevance, then recency),
    each with its session, seq, role, time and a snippet.

    Every word must match; "double quotes" match an exact phrase; case and accents
    are ignored ("cafe" finds "CAFE"). Redacted values are never found. Prints
    nothing and exits 0 when nothing matches. The encrypted store is searched
    through a blind index (see README, "What the search index reveals").

    \b
    Examples:
      sessctl search refund digital
      sessctl search '"refund policy"' --user alice --since 30d
      sessctl search -s ticket-9 invoice --format json | jq -r '.[].snippet'
      sessctl search password reset --format ids | xargs -n1 sessctl show
    """
    from sessctl import render

    app = get_app(ctx)
    fmt = resolve_format(fmt, json_flag)
    f = build_filter(app, kw)
    hits = get_client(ctx).search(" ".join(query), session=session_id, limit=limit, where=f)
    if hits:
        render.write_search_hits(app.stdout, hits, fmt)
