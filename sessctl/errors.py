"""Every expected failure is a SessctlError subclass carrying its SPEC.md exit code.

The CLI turns any of these into one line on stderr (`sessctl: error: ...`) and exits
with `exit_code`; anything else is a bug and exits 1 (traceback only with --debug).
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    EXISTS = 4
    PROVIDER = 5
    KEY = 6
    STORAGE = 7
    INTERRUPTED = 130
    TERMINATED = 143  # 128 + SIGTERM, as the shell reports a process it killed


class SessctlError(Exception):
    """An expected failure; the message says what failed and what to do."""

    exit_code: int = ExitStatus.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SessctlError):
    exit_code = ExitStatus.USAGE


class NotFoundError(SessctlError):
    exit_code = ExitStatus.NOT_FOUND


class AlreadyExistsError(SessctlError):
    exit_code = ExitStatus.EXISTS


class ProviderError(SessctlError):
    """A provider call failed after retries.

    `partial` holds any reply text received before the failure (a cut stream), so the
    caller can keep it marked incomplete rather than lose it or pass it off as whole.
    """

    exit_code = ExitStatus.PROVIDER

    def __init__(self, message: str, *, partial: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.status = status


class CryptoError(SessctlError):
    """Wrong or missing key, or data that fails authentication (tampered or moved)."""

    exit_code = ExitStatus.KEY


class StorageError(SessctlError):
    """Locked past the timeout, corrupt file, schema newer than this program."""

    exit_code = ExitStatus.STORAGE


class Interrupted(SessctlError):
    """Ctrl-C stopped the work; what could be kept was kept (see the message)."""

    exit_code = ExitStatus.INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM (`timeout`, a service manager) stopped the work, kept as for Ctrl-C."""

    exit_code = ExitStatus.TERMINATED
