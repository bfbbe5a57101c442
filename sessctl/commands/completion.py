"""sessctl completion"""

from __future__ import annotations

import click

from sessctl.complete import SHELLS


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def cli(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    The script calls back into sessctl on each TAB, so it always matches this version:
    commands, options, and session ids, users and provider names from your database
    and configuration.

    \b
    Examples:
      sessctl completion bash > ~/.local/share/bash-completion/completions/sessctl
      sessctl completion zsh > ~/.zfunc/_sessctl     # with fpath+=(~/.zfunc) in .zshrc
      sessctl completion fish > ~/.config/fish/completions/sessctl.fish
      eval "$(sessctl completion bash)"              # this shell only
    """
    from sessctl.complete import script

    click.echo(script(shell), nl=False)
