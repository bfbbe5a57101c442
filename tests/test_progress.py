"""Progress bars go to stderr only when it is a terminal, and a bulk delete asks there.

The terminal is a real pseudo-terminal (stdin and stderr of a `python -m sessctl`
process); stdout stays a pipe, as in `sessctl export --all | jq`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Paths, Run

pytestmark = pytest.mark.engines

pty = pytest.importorskip("pty")

ROOT = Path(__file__).resolve().parent.parent
N = 60  # above ops.PROGRESS_MIN_ITEMS


def run_tty(args: list[str], answer: bytes | None = None) -> tuple[int, str, str]:
    """Run sessctl with stdin and stderr on a pty; returns (exit code, stdout, terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sessctl", *args], stdin=slave, stdout=subprocess.PIPE,
                            stderr=slave, cwd=ROOT, env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    seen, answered = b"", False
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, f"no output for 60 s: {seen!r}"
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
        if answer is not None and not answered and b"[y/N]" in seen:
            os.write(master, answer)
            answered = True
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return proc.wait(timeout=60), out, seen.decode(errors="replace")


@pytest.fixture
def many(ok: Run, paths: Paths) -> list[str]:
    ids = [f"s-{i:03d}" for i in range(N)]
    ok("-q", "import", "-", input="".join(
        json.dumps({"id": i, "created_at": "2026-01-01T00:00:00Z",
                    "messages": [{"seq": 1, "role": "user", "content": "x" * 20000}]}) + "\n" for i in ids))
    return ids


def test_bulk_delete_asks_on_a_terminal_and_shows_progress(many: list[str], ok: Run) -> None:
    code, out, tty = run_tty(["delete", "--all"], answer=b"y\n")
    assert code == 0, tty
    assert f"Permanently delete {N} sessions? [y/N]" in tty
    assert "deleting" in tty and "100%" in tty
    assert out.split() == many
    assert ok("list", "--status", "all", "--format", "ids").stdout == ""


def test_declining_deletes_nothing(many: list[str], ok: Run) -> None:
    code, out, tty = run_tty(["delete", "--all"], answer=b"n\n")
    assert code == 0 and out == "" and "nothing was deleted" in tty
    assert len(ok("list", "--status", "all", "-n", "0", "--format", "ids").stdout.split()) == N


def test_export_import_cleanup_bars(many: list[str], paths: Paths, ok: Run) -> None:
    dump = paths.root / "all.jsonl"
    code, out, tty = run_tty(["export", "--all", "--format", "jsonl", "-o", str(dump)])
    assert code == 0 and "exporting" in tty and "100%" in tty
    assert dump.stat().st_size > 1 << 20  # big enough for the import bar
    code, out, tty = run_tty(["--db", str(paths.root / "copy.db"), "import", str(dump)])
    assert code == 0 and "importing" in tty and "100%" in tty
    code, out, tty = run_tty(["cleanup", "--delete-after", "1d"])
    assert code == 0 and "cleaning up" in tty and "100%" in tty
    assert out.splitlines()[3].split()[:2] == ["deleted", str(N)]


def test_quiet_means_no_bar(many: list[str]) -> None:
    code, _, tty = run_tty(["-q", "delete", "--all", "--yes"])
    assert code == 0 and tty == ""


def test_no_bar_on_a_pipe(many: list[str], run: Run) -> None:
    r = run("delete", "--all", "--yes")
    assert r.exit_code == 0 and r.stderr == f"sessctl: deleted {N} sessions ({N} messages)\n"
