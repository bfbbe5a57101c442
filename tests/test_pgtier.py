"""The PostgreSQL tier finds its server, or says on one line why it cannot (pgtier.py).

Each case runs pytest on a two-test file in a subprocess, with the tier's variables set
as a machine or CI would have them: a server named in SESSCTL_TEST_POSTGRES must
answer or the run fails; without it, a machine with no server starts a throwaway one
from PostgreSQL's binaries, or, with none, skips the tier with one line and passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgtier import ENV, _free_port, _pg_ctl

TESTS = Path(__file__).resolve().parent

PROBE = """
import pytest

def test_on_postgresql(pg_schema):
    import psycopg
    with psycopg.connect(pg_schema) as conn:
        assert conn.execute("SELECT current_schema()").fetchone()[0].startswith("t_")

def test_without_a_server():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_on_postgresql_again(pg_server, n):
    pass
"""


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "pgtier",
                           "--rootdir", str(tmp_path), str(probe)],
                          env={**clean, "PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}", **env},
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _dead() -> str:
    return f"postgresql://postgres:hunter2@127.0.0.1:{_free_port()}/test"


def test_a_named_server_that_does_not_answer_fails_the_run(tmp_path: Path) -> None:
    dead = _dead()
    r = _pytest(tmp_path, **{ENV: dead})
    assert r.returncode != 0, r.stdout
    lines = [ln for ln in r.stdout.splitlines() if "does not answer" in ln]
    assert len(lines) == 1, r.stdout
    assert f"{ENV}={dead.replace('hunter2', '***')} does not answer" in lines[0]
    assert "hunter2" not in r.stdout + r.stderr


def test_no_server_and_no_binaries_skips_the_tier_on_one_line(tmp_path: Path) -> None:
    r = _pytest(tmp_path, **{f"{ENV}_DEFAULT": _dead(), f"{ENV}_BIN": "none"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 3 skipped" in r.stdout
    # One line for the whole tier, however many tests it holds.
    skips = [ln for ln in r.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(skips) == 1 and skips[0].startswith("SKIPPED [3] "), r.stdout
    assert "PostgreSQL tier skipped: no server at" in skips[0]
    assert f"set {ENV}=postgresql://" in skips[0] and "hunter2" not in r.stdout


@pytest.mark.skipif(_pg_ctl() is None, reason="no PostgreSQL binaries on this machine to start a throwaway server")
def test_no_server_but_binaries_starts_a_throwaway_one(tmp_path: Path) -> None:
    r = _pytest(tmp_path, **{f"{ENV}_DEFAULT": _dead()})
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout + r.stderr
