"""sessctl meta"""

from __future__ import annotations

import click

from sessctl import complete
from sessctl.commands._common import format_option, get_app, get_client, resolve_format


@click.command("meta")
@click.argument("session_id", metavar="ID", shell_complete=complete.any_session)
@click.argument("pairs", metavar="[KEY=VALUE]...", nargs=-1)
@click.option("--unset", multiple=True, metavar="KEY", help="Remove KEY (repeatable; a missing key is fine).")
@format_option(("text", "json"))
@click.pass_context
def cli(ctx: click.Context, session_id: str, pairs: tuple[str, ...], unset: tuple[str, ...], fmt: str,
        json_flag: bool) -> None:
    """Show or change a session's metadata.

    With no KEY=VALUE and no --unset, prints the metadata (KEY=VALUE lines, or one JSON
    object). Otherwise merges: the keys given are set, --unset keys removed, the rest
    kept; nothing is printed. Values are encrypted; `list --meta KEY=VALUE` still finds
    them. Editing metadata does not count as activity (retention clocks keep running).

    \b
    Examples:
      sessctl meta user-123
      sessctl meta user-123 plan=pro region=eu
      sessctl meta user-123 --unset region
      sessctl meta user-123 --json | jq -r .plan
    """
    from sessctl import render, service

    app = get_app(ctx)
    if pairs or unset:
        get_client(ctx).update(session_id, metadata=service.parse_pairs(pairs, "KEY=VALUE"), unset=unset)
        return
    metadata = get_client(ctx).get(session_id, last=0).metadata
    if resolve_format(fmt, json_flag) == "json":
        render.write_json(app.stdout, dict(sorted(metadata.items())))
    else:
        for key, value in sorted(metadata.items()):
            app.stdout.write(f"{key}={value}\n")
