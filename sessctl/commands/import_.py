"""sessctl import"""

from __future__ import annotations

import os
from typing import Any

import click

from sessctl.commands._common import get_app, get_client

# Literal rather than imported from sessctl.importer: every TAB loads this module.
ON_CONFLICT = ("fail", "skip", "replace")


@click.command("import")
@click.argument("file", metavar="FILE|-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--on-conflict", type=click.Choice(ON_CONFLICT), default="fail", show_default=True,
              help="When a session id already exists: fail (exit 4, nothing imported), skip it, "
                   "or replace it.")
@click.option("--dry-run", is_flag=True, help="Check the input and the conflicts; import nothing.")
@click.pass_context
def cli(ctx: click.Context, file: str, on_conflict: str, dry_run: bool) -> None:
    """Import sessions from `sessctl export` output (a JSON array or JSONL).

    Reads FILE, or stdin when FILE is '-'. All or nothing: invalid input is rejected
    with the line (JSONL) or element (JSON) that is wrong and what is wrong with it
    (exit 2); a session that already exists fails the import (exit 4) unless
    --on-conflict says otherwise. Everything is kept as exported: timestamps, status,
    expiry, metadata, options, and every message with its status, tokens, latency and
    redaction counts, so export, import into an empty database, export gives the same
    bytes. Prints the ids imported, one per line.

    \b
    Examples:
      sessctl import backup.json
      sessctl export --all --format jsonl | sessctl --db new.db import -
      sessctl import --on-conflict skip nightly.jsonl
      sessctl import --dry-run suspicious.jsonl
    """
    from sessctl.errors import UsageError

    app = get_app(ctx)
    if file == "-":
        if app.stdin_isatty:
            raise UsageError("no input: pipe `sessctl export` output into `sessctl import -`, or name a FILE")
        stream: Any = app.stdin.buffer
        source, size = "stdin", None
    else:
        try:
            stream = open(file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        st = os.fstat(stream.fileno())
        source, size = file, st.st_size if st.st_size > 0 else None
    try:
        result = get_client(ctx).import_sessions(stream, on_conflict=on_conflict, dry_run=dry_run, name=source,
                                                 size=size)
    finally:
        if file != "-":
            stream.close()
    for sid in result.imported:
        app.stdout.write(sid + "\n")
    n = len(result.imported)
    summary = f"{'would have imported' if dry_run else 'imported'} {n} session{'s' if n != 1 else ''} " \
              f"({result.messages} message{'s' if result.messages != 1 else ''})"
    extra = [f"{len(result.replaced)} replaced"] if result.replaced else []
    extra += [f"{len(result.skipped)} skipped (already present)"] if result.skipped else []
    app.notice(summary + (": " + ", ".join(extra) if extra else ""))
