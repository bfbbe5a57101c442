"""The documentation cannot drift from the program."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from sessctl.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [blocks[0].strip(), blocks[1].strip()]


def test_readme_starts_with_the_two_commands() -> None:
    install, tests = _readme_commands()
    assert install.startswith("python3 -m venv") and 'sessctl send --session demo "hello"' in install
    assert "pip install '.[test]'" in tests and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith(("#", "set ", "cd "))]
    exports = [ln for ln in lines if ln.startswith("export ")]
    assert [ln for ln in lines if not ln.startswith("export ")] == [_readme_commands()[1]]
    assert lines[:len(exports)] == exports  # the environment is set before the command runs
    # CI names its PostgreSQL server, so a missing one fails the run (tests/pgtier.py).
    assert any(ln.startswith("export SESSCTL_TEST_POSTGRES=postgresql://") for ln in exports)


def _all_commands() -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    ctx = click.Context(cli)

    def walk(prefix: str, group: click.Group) -> None:
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None
            out.append((f"{prefix} {name}".strip(), cmd))
            if isinstance(cmd, click.Group):
                walk(f"{prefix} {name}", cmd)

    walk("", cli)
    return out


@pytest.mark.parametrize("path,cmd", _all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help_with_an_example(path: str, cmd: click.Command) -> None:
    assert cmd.help and len(cmd.help.strip()) > 20, path
    if not isinstance(cmd, click.Group):
        assert "sessctl " in cmd.help, f"{path}: its docstring needs an example"
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{path} {param.opts[0]} has no help"


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"sessctl {name}" in readme, name


def test_the_checkout_holds_only_what_belongs_to_it() -> None:
    """Nothing a run leaves behind (a database, a key, a file named by generated input)
    gets committed: every tracked file at the top is one the project means to have."""
    import subprocess

    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    top = {line.split("/", 1)[0] for line in r.stdout.splitlines()}
    assert top <= {".ci", ".gitignore", "README.md", "pyproject.toml", "sessctl", "tests", "bench", "man",
                   "completions", "examples"}, sorted(top)
