"""sessctl list"""

from __future__ import annotations

from typing import Any

import click

from sessctl.commands._common import build_filter, filter_options, format_option, get_app, get_client, resolve_format

FORMATS = ("table", "json", "jsonl", "csv", "ids")


@click.command("list")
@filter_options(status_default="active")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="At most this many sessions; 0 for all.")
@format_option(FORMATS)
@click.pass_context
def cli(ctx: click.Context, limit: int, fmt: str, json_flag: bool, **kw: Any) -> None:
    """List sessions, most recently active first.

    \b
    Examples:
      sessctl list
      sessctl list --user alice --status all -n 0 --format csv
      sessctl list --meta plan=pro --format ids | xargs -n1 sessctl show
    """
    from sessctl import render

    app = get_app(ctx)
    fmt = resolve_format(fmt, json_flag)
    f = build_filter(app, kw)
    sessions = get_client(ctx).iter_sessions(f, limit=limit, decrypt=fmt != "ids")
    render.write_sessions(app.stdout, sessions, fmt, show_status=f.status != "active")
