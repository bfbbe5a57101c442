"""sessctl export"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from sessctl import complete
from sessctl.commands._common import build_filter, filter_options, format_option, get_app, get_client, resolve_format

FORMATS = ("json", "jsonl", "markdown")


@click.command("export")
@click.argument("session_ids", metavar="[ID]...", nargs=-1, shell_complete=complete.any_session)
@click.option("--all", "all_sessions", is_flag=True, help="Every session (narrowed by any filter).")
@filter_options(status_default="all")
@format_option(FORMATS)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (mode 0600, replaced only on success).")
@click.pass_context
def cli(ctx: click.Context, session_ids: tuple[str, ...], all_sessions: bool, fmt: str, json_flag: bool,
        output: str | None, **kw: Any) -> None:
    """Export full sessions with their decrypted messages, oldest first.

    json is one array; jsonl one session per line (streams, for jq); markdown for people.

    \b
    Examples:
      sessctl export user-123
      sessctl export --all --format jsonl | jq -r 'select(.user == "alice") | .id'
      sessctl export --all --status archived -o archive.json
    """
    from sessctl import ops, render, service

    app = get_app(ctx)
    fmt = resolve_format(fmt, json_flag)
    f = build_filter(app, kw)
    client = get_client(ctx)
    if fmt == "markdown":
        sessions = client.export(session_ids, all=all_sessions, where=f)
    else:
        blocks = client.export_json(session_ids, all=all_sessions, where=f)
    # A bar only when the export does not go to the same terminal it would draw on.
    bar = (output is not None or not app.stdout_isatty) and ops.wants_progress(app, ops.PROGRESS_MIN_ITEMS)
    with contextlib.ExitStack() as stack:
        # Close the stream before the database when the reader goes away (`| head`):
        # it ends its read transaction and stops any export workers.
        stack.enter_context(contextlib.closing(sessions if fmt == "markdown" else blocks))  # type: ignore[arg-type]
        out = stack.enter_context(service.AtomicOutput(output)) if output else app.stdout
        step = stack.enter_context(ops.progress(app, ops.count(app, f) if bar else 0, "exporting"))
        with render.ExportWriter(out, fmt) as writer:
            if fmt == "markdown":
                for session in sessions:
                    writer.write(session, session.messages)
                    step(1)
            else:
                for block, n in blocks:
                    writer.write_block(block, n)
                    step(n)
