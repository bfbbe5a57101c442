"""The Click tree's root: global options, lazy subcommands, and the one place where
exceptions become exit codes and one-line messages.

Subcommands live in sessctl/commands/, one module each, imported only when named
(every TAB of shell completion and every `--version` runs this module, so it imports
nothing but click).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from sessctl import __version__

# name → module in sessctl.commands (attribute `cli` is the command). Order is the
# order of `--help`.
COMMANDS: dict[str, str] = {
    "create": "create",
    "send": "send",
    "chat": "chat",
    "retry": "retry",
    "fork": "fork",
    "list": "list_",
    "show": "show",
    "meta": "meta",
    "update": "update",
    "archive": "archive",
    "unarchive": "unarchive",
    "delete": "delete",
    "cleanup": "cleanup",
    "search": "search",
    "export": "export",
    "import": "import_",
    "stats": "stats",
    "templates": "templates",
    "providers": "providers",
    "sanitize": "sanitize",
    "key": "key",
    "doctor": "doctor",
    "completion": "completion",
}


class AppFactory:
    """ctx.obj: the global options, turned into an App on first use so commands that
    need no configuration (completion, --help) never read it."""

    def __init__(self, db: str | None, config: str | None, quiet: bool, debug: bool) -> None:
        self.db, self.config, self.quiet, self.debug = db, config, quiet, debug
        self._app: Any = None
        self._client: Any = None

    def app(self) -> Any:
        if self._app is None:
            from sessctl import config as config_mod
            from sessctl.service import App

            cfg = config_mod.load(config_path=self.config, db_path=self.db)
            self._app = App(
                config=cfg,
                stdin=sys.stdin,
                stdout=sys.stdout,
                stderr=sys.stderr,
                quiet=self.quiet,
                debug=self.debug,
                stdin_isatty=_isatty(sys.stdin),
                stdout_isatty=_isatty(sys.stdout),
                stderr_isatty=_isatty(sys.stderr),
            )
        return self._app

    def client(self) -> Any:
        """The library Client the commands call (sessctl/api.py), over this App."""
        if self._client is None:
            from sessctl.api import Client

            self._client = Client(self.app(), owns_app=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._app is not None:
            self._app.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _PipeClosed(Exception):
    """stdout's reader went away."""


class _Interrupted(Exception):
    """Ctrl-C outside the places that handle it themselves."""


class SessctlGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(f"sessctl.commands.{module}").cli  # type: ignore[no-any-return]

    def invoke(self, ctx: click.Context) -> Any:
        # Click turns a closed pipe into exit 1 and Ctrl-C into Abort (after printing a
        # blank line) even outside standalone mode; carry both past it untouched so
        # `run` gives them their Unix statuses (141, 130) and one clean line.
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _PipeClosed() from exc
        except KeyboardInterrupt as exc:
            raise _Interrupted() from exc

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        """Run, then exit with the SPEC code; every error is one line on stderr."""
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
        sys.exit(run(self, argv, prog_name or "sessctl", debug, **extra))


def _error(message: str) -> None:
    click.echo(f"sessctl: error: {message}", err=True)


def run(group: click.Group, argv: list[str], prog_name: str, debug: bool, **extra: Any) -> int:
    from sessctl.errors import ExitStatus, SessctlError

    extra.pop("standalone_mode", None)
    try:
        rv = click.Group.main(group, args=argv, prog_name=prog_name, standalone_mode=False, **extra)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        # `sessctl` (or a group) with no command: the usage a person needs, on stderr
        # (stdout may be a pipe a script reads), and the usage error's status.
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        return exc.exit_code
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        _error(" ".join(exc.format_message().split()) + hint)
        return exc.exit_code
    except SessctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _error(exc.message)
        return int(exc.exit_code)
    except (KeyboardInterrupt, click.Abort, _Interrupted):
        _error("interrupted")
        return ExitStatus.INTERRUPTED
    except (BrokenPipeError, _PipeClosed):
        # The reader went away (`| head`): stop quietly with SIGPIPE's status, as Unix
        # tools do. Point stdout at /dev/null so the interpreter's final flush is silent.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are reported
        sqlite3 = sys.modules.get("sqlite3")
        psycopg = sys.modules.get("psycopg")
        if debug:
            import traceback

            traceback.print_exc()
        if (sqlite3 is not None and isinstance(exc, sqlite3.Error)) or (
                psycopg is not None and isinstance(exc, psycopg.Error)):
            # A database error the store did not expect: still the storage's, exit 7,
            # on one line (PostgreSQL's messages span several).
            from sessctl.config import mask_secrets

            _error("storage error: " + mask_secrets(" ".join(str(exc).split())))
            return ExitStatus.STORAGE
        _error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
        return ExitStatus.ERROR


@click.group(cls=SessctlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", metavar="PATH", envvar="SESSCTL_DB", show_envvar=True,
              help="Database file. Default: $XDG_DATA_HOME/sessctl/sessions.db.")
@click.option("--config", metavar="PATH", envvar="SESSCTL_CONFIG", show_envvar=True,
              help="Config file. Default: $XDG_CONFIG_HOME/sessctl/config.toml.")
@click.option("-q", "--quiet", is_flag=True, help="Silence notices on stderr (errors still show).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, "-V", "--version", prog_name="sessctl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config: str | None, quiet: bool, debug: bool) -> None:
    """Keep, resume, search and clean up LLM conversations from the shell.

    Each session is one conversation, stored encrypted in a local SQLite database.

    \b
    Examples:
      sessctl send --session user-123 "hi"
      sessctl list --user alice --format json
      sessctl archive --older-than 30d
      sessctl export --all --format jsonl | jq -r .id
    """
    factory = AppFactory(db, config, quiet, debug)
    ctx.obj = factory
    ctx.call_on_close(factory.close)


def main() -> None:
    cli.main(prog_name="sessctl")
