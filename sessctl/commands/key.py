"""sessctl key status|rotate"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from sessctl.commands._common import format_option, get_app, resolve_format


@click.group("key")
def cli() -> None:
    """Show or rotate the encryption key.

    \b
    Examples:
      sessctl key status
      sessctl key rotate --new-key-file ~/.config/sessctl/key.2026
      sessctl key rotate --reencrypt
    """


@cli.command("status")
@format_option(("table", "json"))
@click.pass_context
def status_cmd(ctx: click.Context, fmt: str, json_flag: bool) -> None:
    """Show how the database is keyed: kind (file or passphrase), the key's
    fingerprint, when the data key was made and last wrapped, and whether the
    configured key opens it (exit 6 when it does not). Never shows a secret.

    \b
    Examples:
      sessctl key status
      sessctl key status --json | jq -r .fingerprint
    """
    from sessctl import keys, report

    app = get_app(ctx)
    st = keys.status(app)
    report.write_key_status(app.stdout, st, resolve_format(fmt, json_flag))
    if st.error is not None:
        app.stdout.flush()
        app.stderr.write(f"sessctl: error: {st.error}\n")
        ctx.exit(int(st.error.exit_code))


@cli.command("rotate")
@click.option("--new-key-file", metavar="PATH",
              help="Wrap the data key under the key in PATH, created (0600) if absent. Never the current key file.")
@click.option("--new-passphrase-env", metavar="VAR",
              help="Wrap the data key under a passphrase read from the environment variable VAR.")
@click.option("--reencrypt", is_flag=True,
              help="Also make a new data key and re-encrypt every value (one transaction; all or nothing).")
@format_option(("table", "json"))
@click.pass_context
def rotate_cmd(ctx: click.Context, new_key_file: str | None, new_passphrase_env: str | None, reencrypt: bool,
               fmt: str, json_flag: bool) -> None:
    """Rotate the key. Needs the current key (SESSCTL_KEY_FILE or SESSCTL_PASSPHRASE as usual).

    Without --reencrypt the data key is re-wrapped under the new key: instant, and the
    old key stops opening the database (but anyone who kept a copy of the database
    AND the old key can still read that copy). With --reencrypt a new data key replaces
    the old one and every value is re-encrypted; other writers wait meanwhile.

    The new key file or passphrase is in force as soon as this succeeds: point sessctl
    at it (SESSCTL_KEY_FILE / key_file in config.toml, or SESSCTL_PASSPHRASE). No key
    file is ever overwritten or deleted; remove the old one yourself when done.

    \b
    Examples:
      sessctl key rotate --new-key-file ~/.config/sessctl/key.2026
      NEW_PASS=... sessctl key rotate --new-passphrase-env NEW_PASS
      sessctl key rotate --reencrypt
      sessctl key rotate --reencrypt --new-key-file /secure/key.new
    """
    from sessctl import keys, ops, report

    app = get_app(ctx)
    with contextlib.ExitStack() as stack:

        def progress(total: int) -> Any:
            # The total is known only once the key has been checked, inside rotate().
            step = stack.enter_context(ops.progress(app, total, "re-encrypting"))
            seen = [0]

            def update(done: int, _total: int) -> None:
                step(done - seen[0])
                seen[0] = done

            return update

        result = keys.rotate(app, new_key_file=new_key_file, new_passphrase_env=new_passphrase_env,
                             reencrypt=reencrypt, progress=progress)
    report.write_rotate(app.stdout, result, resolve_format(fmt, json_flag))
    if result.key_file is not None:
        if result.key_file.resolve() != app.config.key_file.resolve():
            app.notice(f"the database now opens only with {result.key_file}: set SESSCTL_KEY_FILE={result.key_file} "
                       "(or key_file in config.toml)")
    elif result.passphrase_env is not None:
        app.notice(f"the database now opens only with the new passphrase: set SESSCTL_PASSPHRASE to the value of "
                   f"{result.passphrase_env}")

