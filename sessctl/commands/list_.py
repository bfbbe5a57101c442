"""sessctl list"""

from __future__ import annotations

from typing import Any

import click

from sessctl.commands._common import build_filter, count_type, filter_options, format_option, get_app, get_client, resolve_format

FORMATS = ("table", "json", "jsonl", "csv", "ids")


@click.command("list")
@filter_options(status_default="active")
@click.option("-n", "--limit", type=count_type(0), default=50, show_default=True,
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
    # Without -n the default cut-off is silent in the output: ask for one more, and say
    # on stderr that there is more (a person and a script both need to know).
    default_limit = ctx.get_parameter_source("limit") == click.core.ParameterSource.DEFAULT
    sessions = get_client(ctx).iter_sessions(f, limit=limit + 1 if default_limit and limit else limit,
                                             decrypt=fmt != "ids")
    more = [False]

    def capped() -> Any:
        for i, s in enumerate(sessions):
            if default_limit and limit and i == limit:
                more[0] = True
                return
            yield s

    render.write_sessions(app.stdout, capped(), fmt, show_status=f.status != "active")
    if more[0]:
        app.notice(f"showing the {limit} most recently active sessions; more match (use -n 0 for all, or -n N)")
