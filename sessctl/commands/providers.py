"""sessctl providers list | test"""

from __future__ import annotations

import click

from sessctl import complete
from sessctl.commands._common import format_option, get_app, resolve_format


@click.group("providers")
def cli() -> None:
    """Show the configured LLM providers and check that they answer.

    API keys are never shown: only the name of the environment variable that holds
    each, and whether it is set.

    \b
    Examples:
      sessctl providers list
      sessctl providers test claude
    """


@cli.command("list")
@format_option(("table", "json"))
@click.pass_context
def list_(ctx: click.Context, fmt: str, json_flag: bool) -> None:
    """List providers: name, kind, model, base URL, and whether the key's variable is set.

    DEFAULT marks the provider new sessions get. JSON adds timeouts,
    retries, context limits, options and header names (never a header's value).

    \b
    Examples:
      sessctl providers list
      sessctl providers list --json | jq -r '.[] | select(.api_key_set == false) | .name'
    """
    from sessctl import provider_admin, render

    app = get_app(ctx)
    infos = provider_admin.describe(app)
    if resolve_format(fmt, json_flag) == "json":
        render.write_json(app.stdout, [i.as_dict() for i in infos])
        return
    rows = []
    for i in infos:
        if i.api_key_env is None:
            key = "-" if i.kind == "echo" else "(none)"
        else:
            key = f"{i.api_key_env} ({'set' if i.api_key_set else 'NOT SET'})"
        rows.append([i.name, i.kind, i.model, i.base_url, key, "yes" if i.default else ""])
    render.write_table(app.stdout, rows, ["NAME", "KIND", "MODEL", "BASE_URL", "API KEY", "DEFAULT"])


@cli.command("test")
@click.argument("names", nargs=-1, metavar="[NAME]...", shell_complete=complete.providers)
@format_option(("text", "json"))
@click.pass_context
def test(ctx: click.Context, names: tuple[str, ...], fmt: str, json_flag: bool) -> None:
    """Check that providers answer: reachability, auth and latency, one line each.

    Each is asked for its model list once (no retries). With no NAME, every provider
    is tried, and one whose key variable is not set is skipped. Exit 5 if any fails.

    \b
    Examples:
      sessctl providers test
      sessctl providers test openai claude --json
    """
    from sessctl import provider_admin, render
    from sessctl.errors import ProviderError

    app = get_app(ctx)
    results = provider_admin.probe(app, list(names))
    if resolve_format(fmt, json_flag) == "json":
        render.write_json(app.stdout, [r.as_dict() for r in results])
    else:
        width = max((len(r.name) for r in results), default=0)
        for r in results:
            label = {"ok": "", "failed": "FAILED: ", "skipped": "skipped: "}[r.status]
            app.stdout.write(f"{r.name:<{width}}  {label}{r.detail}\n")
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        raise ProviderError(f"{len(failed)} of {len(results)} provider{'s' if len(results) != 1 else ''} "
                            f"failed the test: {', '.join(failed)}")
