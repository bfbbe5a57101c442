"""sessctl doctor"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from sessctl.commands._common import count_type, format_option, get_app, resolve_format


@click.command("doctor")
@click.option("--quick", is_flag=True,
              help="Faster: SQLite quick_check and a random sample of values instead of every value.")
@click.option("--sample", type=count_type(1), default=1000, show_default=True, metavar="N",
              help="With --quick, how many sessions and how many messages to decrypt.")
@click.option("--rebuild-search-index", "rebuild", is_flag=True,
              help="First rebuild the search index from the decrypted messages (one transaction), then check.")
@format_option(("table", "json"))
@click.pass_context
def cli(ctx: click.Context, quick: bool, sample: int, rebuild: bool, fmt: str, json_flag: bool) -> None:
    """Check the database: SQLite integrity, schema version, file permissions, the key,
    that every value decrypts, that the metadata and search indexes match, and that
    sequences, turns and counters are consistent.

    Read-only, except with --rebuild-search-index. Prints a report; exits 0 when all is
    well, 7 when a storage check fails (integrity, schema, sequences, turns, counters,
    orphans, messages missing from the search index, database file permissions), else 6
    when a key check fails (key, decryption, metadata or search index entries, key file
    permissions).

    \b
    Examples:
      sessctl doctor
      sessctl doctor --quick
      sessctl doctor --rebuild-search-index
      sessctl doctor --json | jq '.checks[] | select(.status != "ok")'
    """
    from sessctl import doctor, ops, report

    app = get_app(ctx)
    if rebuild:
        from sessctl import search

        with contextlib.ExitStack() as stack:

            def rebuild_progress(total: int) -> Any:
                step = stack.enter_context(ops.progress(app, total, "indexing"))
                seen = [0]

                def update(done: int, _total: int) -> None:
                    step(done - seen[0])
                    seen[0] = done

                return update

            n = search.rebuild_index(app, rebuild_progress)
        if n is not None:
            app.notice(f"search index rebuilt: {n} messages indexed")
    with contextlib.ExitStack() as stack:

        def progress(total: int) -> Any:
            step = stack.enter_context(ops.progress(app, total, "decrypting"))
            seen = [0]

            def update(done: int, _total: int) -> None:
                step(done - seen[0])
                seen[0] = done

            return update

        result = doctor.run(app, quick=quick, sample=sample, progress=progress)
    report.write_doctor(app.stdout, result, resolve_format(fmt, json_flag))
    if result.exit_code:
        app.stdout.flush()
        names = ", ".join(dict.fromkeys(c.name for c in result.failed))
        app.stderr.write(f"sessctl: error: doctor found problems ({names}); see the report above\n")
        ctx.exit(result.exit_code)

