"""Helpers that run in separate OS processes, for the concurrency and durability tests.

    python tests/procs.py send-worker WORKER_ID N SHARED_ID GO_FILE
        Waits for GO_FILE to exist (so every worker starts at once), then runs the real
        CLI in-process N times: `send` alternately to SHARED_ID and to its own session.
        Each send is a full CLI invocation (own App, own database connection), exactly
        as a separate `sessctl send` would run, minus interpreter start-up. Prints one
        JSON line: {"codes": [exit code per send]}.

    python tests/procs.py zygote
        A fork server. It imports sessctl once, then for each JSON request on stdin
        ({"argv": [...] or "loop": [[...], ...], "env": {...}, "kill_after": seconds})
        forks a child that runs the CLI (once, or the loop of commands forever), SIGKILLs
        it after kill_after seconds if it is still running, and answers one JSON line:
        {"killed": bool, "exit": code or null, "elapsed": seconds, "stderr": ...}.
        Forking a warm process makes a kill cost milliseconds instead of an interpreter
        start, so a test can kill at hundreds of random points inside the operation
        itself rather than mostly inside Python's start-up.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SRC))


def _cli_run(argv: list[str]) -> int:
    from sessctl.cli import cli, run

    return run(cli, argv, "sessctl", False)


def send_worker(worker: int, n: int, shared: str, go_file: str) -> None:
    import sessctl.commands.send  # noqa: F401  (warm: the race is in the database, not in imports)
    import sessctl.conversation  # noqa: F401

    while not os.path.exists(go_file):
        time.sleep(0.002)
    codes = []
    for i in range(n):
        sid = shared if i % 2 == 0 else f"own-{worker}"
        codes.append(_cli_run(["-q", "send", "-s", sid, f"w{worker}-m{i}"]))
    sys.stdout.flush()
    print(json.dumps({"codes": codes}), flush=True)


def _preimport() -> None:
    # Everything a child may need, imported before forking (children must not pay for it).
    import sessctl.cli  # noqa: F401
    from sessctl.cli import COMMANDS

    for module in COMMANDS.values():
        __import__(f"sessctl.commands.{module}")
    import sessctl.conversation  # noqa: F401
    import sessctl.crypto as crypto

    crypto._aesgcm(b"\0" * 32)
    from cryptography.exceptions import InvalidTag  # noqa: F401
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id  # noqa: F401

    try:  # the PostgreSQL engine and its driver, when installed (no connection is opened)
        import sessctl.store.postgres  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError:
        pass


def _child(req: dict[str, Any], err_path: str) -> None:
    """In the forked child: run the CLI with stdout discarded, stderr to err_path."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err, 2)
    os.environ.clear()
    os.environ.update(req["env"])
    code = 0
    try:
        if "loop" in req:
            while True:  # until killed
                for argv in req["loop"]:
                    code = _cli_run(argv)
                    if code != 0:
                        os._exit(code)
        else:
            code = _cli_run(req["argv"])
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def zygote() -> None:
    _preimport()
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        fd, err_path = tempfile.mkstemp(prefix="sessctl-child-", suffix=".err")
        os.close(fd)
        pid = os.fork()
        if pid == 0:
            _child(req, err_path)
        start = time.monotonic()
        deadline = start + float(req.get("kill_after") or 0)
        timeout = start + float(req.get("timeout", 60))
        killed = False
        status = None
        while True:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            now = time.monotonic()
            if req.get("kill_after") is not None and now >= deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                break
            if now >= timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.0005)
        stderr = Path(err_path).read_text(errors="replace")
        os.unlink(err_path)
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        out.write(json.dumps({"killed": killed, "exit": code, "elapsed": time.monotonic() - start,
                              "stderr": stderr}) + "\n")
        out.flush()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "send-worker":
        send_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif cmd == "zygote":
        zygote()
    else:
        raise SystemExit(f"unknown helper {cmd!r}")
