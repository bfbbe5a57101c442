"""sessctl sanitize"""

from __future__ import annotations

import click

from sessctl.commands._common import format_option, get_app, resolve_format


@click.command("sanitize")
@click.option("--report", is_flag=True, help="Print the redactions per rule as JSON on stderr.")
@click.option("--list-rules", is_flag=True, help="List the rules (name, state, description, fake example); read nothing.")
@format_option(("table", "json"))
@click.pass_context
def cli(ctx: click.Context, report: bool, list_rules: bool, fmt: str, json_flag: bool) -> None:
    """Redact secrets and personal data from stdin to stdout.

    The same rules, and the same [sanitize] configuration, that sessctl applies before
    anything is stored. Matches become [REDACTED:<rule>]. --format applies to
    --list-rules.

    \b
    Examples:
      kubectl logs deploy/api | sessctl sanitize > shareable.log
      sessctl sanitize --report < notes.txt > clean.txt
      sessctl sanitize --list-rules
    """
    from sessctl import render

    app = get_app(ctx)
    sanitizer = app.sanitizer()
    if list_rules:
        rules = sanitizer.rules()
        if resolve_format(fmt, json_flag) == "json":
            render.write_json(app.stdout, [r._asdict() for r in rules])
        else:
            # One line per rule: a multi-line example (a PEM block) shows its newlines as \n.
            rows = [[r.name, "on" if r.enabled else "off", r.description,
                     (r.example or "-").replace("\n", "\\n")] for r in rules]
            render.write_table(app.stdout, rows, ["RULE", "STATE", "DESCRIPTION", "EXAMPLE (fake)"])
        return
    # Bytes in, bytes out: input that is not valid UTF-8 passes through unchanged
    # around the redactions instead of failing the pipeline.
    raw = app.stdin.buffer.read() if hasattr(app.stdin, "buffer") else app.stdin.read().encode()
    clean, counts = sanitizer.sanitize(raw.decode("utf-8", "surrogateescape"))
    out = clean.encode("utf-8", "surrogateescape")
    if hasattr(app.stdout, "buffer"):
        app.stdout.flush()
        app.stdout.buffer.write(out)
    else:
        app.stdout.write(out.decode("utf-8", "replace"))
    if report:
        app.stderr.write(render.dumps(dict(sorted(counts.items()))) + "\n")
