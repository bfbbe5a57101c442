"""sessctl stats"""

from __future__ import annotations

from typing import Any

import click

from sessctl.commands._common import build_filter, filter_options, format_option, get_app, get_client, resolve_format

FORMATS = ("table", "json")


@click.command("stats")
@filter_options(status_default="all", time_window=False)
@click.option("--by", type=click.Choice(["user", "model", "provider", "day"]), help="Break down by this key.")
@format_option(FORMATS)
@click.pass_context
def cli(ctx: click.Context, by: str | None, fmt: str, json_flag: bool, **kw: Any) -> None:
    """Totals: sessions, users, messages, tokens, latency, redactions.

    With --since/--before only messages in that window count, and sessions and users
    are those with messages in it.

    \b
    Examples:
      sessctl stats
      sessctl stats --by model --since 7d
      sessctl stats --user alice --json | jq .tokens
    """
    from sessctl import render

    app = get_app(ctx)
    since, before = kw["since"], kw["before"]
    f = build_filter(app, kw, time_window=False)
    groups = get_client(ctx).stats_groups(by=by, since=since, before=before, where=f)
    render.write_stats(app.stdout, groups, resolve_format(fmt, json_flag), by)
