"""sessctl templates list"""

from __future__ import annotations

import click

from sessctl.commands._common import format_option, get_app, get_client, resolve_format


@click.group("templates")
def cli() -> None:
    """Show the session templates of config.toml ([templates.NAME] tables).

    A template sets up a new session: system prompt, provider, model, options,
    metadata, ttl, max_context_messages and max_context_tokens. Use it with
    `create --template`, `send --template` or `chat --template`.

    \b
    Examples:
      sessctl templates list
      sessctl create t-9 --template support
    """


@cli.command("list")
@format_option(("table", "json"))
@click.pass_context
def list_(ctx: click.Context, fmt: str, json_flag: bool) -> None:
    """List templates: name, provider, model, ttl and the start of the system prompt.

    JSON gives every field of each template.

    \b
    Examples:
      sessctl templates list
      sessctl templates list --json | jq -r '.[].name'
    """
    from sessctl import render

    app = get_app(ctx)
    items = get_client(ctx).templates()
    if resolve_format(fmt, json_flag) == "json":
        render.write_json(app.stdout, items)
        return
    if not items:
        app.notice(f"no templates in {app.config.config_path} (add a [templates.NAME] table)")
        return
    rows = [[t["name"], t["provider"], t["model"], t["ttl"], render._short(t["system"], 50)] for t in items]
    render.write_table(app.stdout, rows, ["NAME", "PROVIDER", "MODEL", "TTL", "SYSTEM"])
