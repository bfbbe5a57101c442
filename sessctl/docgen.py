"""Writes `man/` and `completions/` from the Click tree: the one generator.

    python -m sessctl.docgen            # regenerate man/ and completions/ in the checkout
    python -m sessctl.docgen --check    # exit 1 and name the files that are out of date
    python -m sessctl.docgen --man-dir ~/.local/share/man/man1   # only install the man pages

Man pages are plain roff (the `man` macros), one for `sessctl` and one per subcommand
(`sessctl-send.1`, and `sessctl-key-rotate.1` for a nested group), built from each
command's docstring and options, so `--help` and `man` say the same thing. They carry
no date, so regenerating an unchanged tree changes no byte; tests/test_generated.py
regenerates everything in memory and fails on any difference.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

import click

from sessctl import __version__

ROOT = Path(__file__).resolve().parent.parent
MANUAL = "sessctl manual"

# Non-ASCII characters that may appear in help texts, as portable roff escapes. Any
# other one stops the generator: groff's ASCII output would warn about it.
_SPECIAL = {
    "\u2014": r"\(em", "\u2013": r"\(en", "\u2192": r"\(->", "\u2190": r"\(<-", "\u00b7": r"\(pc",
    "\u00d7": r"\(mu", "\u2026": "...", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2264": r"\(<=", "\u2265": r"\(>=",
}

ENVIRONMENT = [
    ("SESSCTL_DB", "Database file, as --db."),
    ("SESSCTL_CONFIG", "Configuration file, as --config."),
    ("SESSCTL_KEY_FILE", "Key file holding the key-encryption key (default: key beside the configuration file)."),
    ("SESSCTL_PASSPHRASE", "Derive the key-encryption key from this passphrase (Argon2id) instead of a key file."),
    ("OPENAI_API_KEY, ANTHROPIC_API_KEY", "Provider API keys, named by api_key_env in the configuration."),
    ("NO_COLOR", "Never color the output."),
    ("XDG_DATA_HOME, XDG_CONFIG_HOME", "Base directories of the default database and configuration paths."),
    ("SESSCTL_NOW", "Test-only: an ISO-8601 time or Unix seconds used as the current time."),
]
FILES = [
    ("$XDG_CONFIG_HOME/sessctl/config.toml", "Configuration: providers, [retention], [sanitize], [storage]."),
    ("$XDG_CONFIG_HOME/sessctl/key", "The key file (created 0600 on first use). Back it up."),
    ("$XDG_DATA_HOME/sessctl/sessions.db", "The database (SQLite, WAL mode, sensitive fields encrypted)."),
]
EXIT_STATUS = [
    ("0", "Success (including cleanup with nothing to do)."),
    ("1", "Unexpected error (a bug: rerun with --debug)."),
    ("2", "Usage error: bad option or input, invalid id, archived session, refused bulk delete."),
    ("3", "Session not found."),
    ("4", "Session already exists."),
    ("5", "Provider error, after retries."),
    ("6", "Key or decryption error: wrong or missing key, tampered data."),
    ("7", "Storage error: locked past the timeout, corrupt file, schema newer than this program."),
]


def escape(text: str) -> str:
    """Text → roff text: backslashes and minus signs escaped, known non-ASCII mapped."""
    out = []
    for ch in text.replace("\\", r"\e").replace("-", r"\-"):
        if ord(ch) < 128:
            out.append(ch)
        elif ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        else:
            raise ValueError(f"help text has {ch!r} (U+{ord(ch):04X}); add it to docgen._SPECIAL or use ASCII")
    return "".join(out)


def _line(text: str) -> str:
    # A text line starting with . or ' would be read as a request.
    return r"\&" + text if text.startswith((".", "'")) else text


def _bold(text: str) -> str:
    return rf"\fB{escape(text)}\fR"


def _option_label(label: str) -> str:
    """`-s, --session ID` → option names bold, metavars plain."""
    parts = []
    for token in label.split(" "):
        comma = token.endswith(",")
        word = token[:-1] if comma else token
        parts.append((_bold(word) if word.startswith("-") else escape(word)) + ("," if comma else ""))
    return " ".join(parts)


def _description(help_text: str) -> list[str]:
    """A Click docstring → roff paragraphs; `\\b` paragraphs (examples) stay verbatim."""
    lines: list[str] = []
    text = inspect.cleandoc(help_text).split("\f", 1)[0]
    for para in re.split(r"\n\s*\n", text):
        rows = para.splitlines()
        if not rows:
            continue
        lines.append(".PP")
        if rows[0].strip() == "\b":
            lines.append(".nf")
            lines += [_line(escape(r)) for r in rows[1:]]
            lines.append(".fi")
        else:
            lines.append(_line(escape(" ".join(r.strip() for r in rows))))
    return lines


def _summary(cmd: click.Command) -> str:
    first = inspect.cleandoc(cmd.help or "").split("\n\n", 1)[0].replace("\n", " ")
    sentence = first.split(". ", 1)[0]
    return sentence.rstrip(".")


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    lines: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        label, help_text = record
        lines += [".TP", _option_label(label), _line(escape(" ".join(help_text.split())))]
    return lines


def _header(title: str) -> list[str]:
    return [
        r'.\" Generated by `python -m sessctl.docgen` from the Click tree; do not edit.',
        f'.TH {escape(title.upper())} 1 "" "sessctl {__version__}" "{MANUAL}"',
        # Ragged right, no hyphenation: option names and ids must survive copy-paste.
        ".nh",
        ".ad l",
    ]


def _definitions(rows: list[tuple[str, str]], bold: bool = True) -> list[str]:
    out: list[str] = []
    for term, text in rows:
        out += [".TP", _bold(term) if bold else escape(term), _line(escape(text))]
    return out


def _walk(group: click.Group, ctx: click.Context) -> list[tuple[list[str], click.Command, click.Context]]:
    """Every subcommand below group, depth first, with its path and context."""
    found = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx, **cmd.context_settings)
        path = ctx.command_path.split()[1:] + [name]
        found.append((path, cmd, sub))
        if isinstance(cmd, click.Group):
            found += _walk(cmd, sub)
    return found


def _page_name(path: list[str]) -> str:
    return "-".join(["sessctl", *path])


def _subcommand_list(group: click.Group, ctx: click.Context, path: list[str]) -> list[str]:
    lines = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        lines += [".TP", _bold(name), _line(escape(_summary(cmd) + ".")),
                  rf"See \fB{escape(_page_name(path + [name]))}\fR(1)."]
    return lines


def man_pages() -> dict[str, str]:
    """File name → roff text for every page."""
    from sessctl.cli import cli

    # With the commands' context_settings, as Click builds them (`-h` as well as `--help`).
    root_ctx = click.Context(cli, info_name="sessctl", **cli.context_settings)
    commands = _walk(cli, root_ctx)
    pages: dict[str, str] = {}

    see_also = [rf"\fB{escape(_page_name(p))}\fR(1)" for p, _, _ in commands]
    lines = _header("sessctl")
    lines += [".SH NAME", rf"sessctl \- {escape(_summary(cli))}"]
    lines += [".SH SYNOPSIS", ".B sessctl", r"[\fIGLOBAL OPTIONS\fR] \fICOMMAND\fR [\fIARGS\fR]..."]
    lines += [".SH DESCRIPTION", *_description(cli.help or "")]
    lines += [".SH GLOBAL OPTIONS", ".PP", "These come before the command.", *_options(cli, root_ctx)]
    lines += [".SH COMMANDS", *_subcommand_list(cli, root_ctx, [])]
    lines += [".SH ENVIRONMENT", *_definitions(ENVIRONMENT)]
    lines += [".SH FILES", *_definitions(FILES, bold=False)]
    lines += [".SH EXIT STATUS", *_definitions(EXIT_STATUS)]
    lines += [".SH SEE ALSO", ",\n".join(see_also)]
    pages["sessctl.1"] = "\n".join(lines) + "\n"

    for path, cmd, ctx in commands:
        name = _page_name(path)
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        lines = _header(name)
        lines += [".SH NAME", rf"{escape(name)} \- {escape(_summary(cmd))}"]
        lines += [".SH SYNOPSIS", r".B sessctl", r"[\fIGLOBAL OPTIONS\fR]",
                  f".B {escape(' '.join(path))}", _line(escape(usage))]
        lines += [".SH DESCRIPTION", *_description(cmd.help or "")]
        options = _options(cmd, ctx)
        if options:
            lines += [".SH OPTIONS", *options]
        if isinstance(cmd, click.Group):
            lines += [".SH COMMANDS", *_subcommand_list(cmd, ctx, path)]
        lines += [".SH EXIT STATUS", ".PP",
                  r"0 on success; otherwise the codes listed in \fBsessctl\fR(1): 2 usage, 3 not found, "
                  r"4 already exists, 5 provider, 6 key, 7 storage, 1 unexpected."]
        lines += [".SH SEE ALSO", r"\fBsessctl\fR(1)"]
        pages[f"{name}.1"] = "\n".join(lines) + "\n"
    return pages


def completion_scripts() -> dict[str, str]:
    from sessctl.complete import SCRIPT_FILES, script

    return {SCRIPT_FILES[shell]: script(shell) for shell in SCRIPT_FILES}


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file, by path under root."""
    out = {root / "man" / name: text for name, text in man_pages().items()}
    out.update({root / "completions" / name: text for name, text in completion_scripts().items()})
    return out


def stale(root: Path = ROOT) -> list[Path]:
    """Generated files that differ or are missing, and leftover pages of commands
    that no longer exist."""
    files = generated(root)
    bad = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    for directory in (root / "man", root / "completions"):
        if directory.is_dir():
            bad += [p for p in sorted(directory.iterdir()) if p not in files]
    return bad


def write(root: Path = ROOT) -> list[Path]:
    files = generated(root)
    changed = stale(root)
    for path in changed:
        if path not in files:
            path.unlink()
    for path, text in files.items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sessctl.docgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date files; write nothing")
    parser.add_argument("--root", type=Path, help="checkout holding man/ and completions/ (default: this one)")
    parser.add_argument("--man-dir", type=Path, help="only install the man pages into this directory")
    args = parser.parse_args(argv)
    if args.man_dir:
        args.man_dir.mkdir(parents=True, exist_ok=True)
        pages = man_pages()
        for name, text in pages.items():
            (args.man_dir / name).write_text(text, encoding="utf-8")
        print(f"installed {len(pages)} man pages in {args.man_dir}")
        return 0
    root = args.root or ROOT
    if args.root is None and not (ROOT / "pyproject.toml").is_file():
        # An installed copy: there is no checkout to regenerate beside it.
        parser.error("not run from a source checkout; give --root DIR or --man-dir DIR")
    if args.check:
        bad = stale(root)
        for path in bad:
            print(f"out of date: {path}", file=sys.stderr)
        if bad:
            print("run: python -m sessctl.docgen", file=sys.stderr)
        return 1 if bad else 0
    for path in write(root):
        print(f"wrote {path}" if path.exists() else f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
