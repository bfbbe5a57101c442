"""Every expected failure is a SessctlError subclass carrying its SPEC.md exit code.

The CLI turns any of these into one line on stderr (`sessctl: error: ...`) and exits
with `exit_code`; anything else is a bug and exits 1 (traceback only with --debug).
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """The CLI's exit statuses (SPEC.md), which every SessctlError carries.

    >>> sessctl.ExitStatus(sessctl.NotFoundError.exit_code).name
    'NOT_FOUND'
    """

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
    """An expected failure; the message says what failed and what to do, and
    `exit_code` is the CLI's exit status for it (SPEC.md).

    >>> try:                                                   # doctest: +SKIP
    ...     store.send("user-123", "hi", create=False)
    ... except sessctl.SessctlError as e:
    ...     print(e.exit_code, e)
    3 session 'user-123' not found (--no-create was given)
    """

    exit_code: int = ExitStatus.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SessctlError):
    """A bad argument, id, option or configuration (exit 2).

    >>> sessctl.open().create("not a valid id")               # doctest: +SKIP
    Traceback (most recent call last):
    sessctl.errors.UsageError: invalid session id 'not a valid id': ...
    """

    exit_code = ExitStatus.USAGE


class NotFoundError(SessctlError):
    """No such session (exit 3).

    >>> try:                                                   # doctest: +SKIP
    ...     store.get("nope")
    ... except sessctl.NotFoundError as e:
    ...     e.exit_code
    3
    """

    exit_code = ExitStatus.NOT_FOUND


class AlreadyExistsError(SessctlError):
    """The session already exists (exit 4); `create(..., exist_ok=True)` accepts that.

    >>> store.create("user-123", exist_ok=True).id             # doctest: +SKIP
    'user-123'
    """

    exit_code = ExitStatus.EXISTS


class ProviderError(SessctlError):
    """A provider call failed after retries.

    `partial` holds any reply text received before the failure (a cut stream), so the
    caller can keep it marked incomplete rather than lose it or pass it off as whole.
    Exit 5.

    >>> try:                                                   # doctest: +SKIP
    ...     store.send("user-123", "hi")
    ... except sessctl.ProviderError as e:
    ...     print(e.status, len(e.partial))                    # the message was kept, unanswered
    529 0
    """

    exit_code = ExitStatus.PROVIDER

    def __init__(self, message: str, *, partial: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.status = status


class CryptoError(SessctlError):
    """Wrong or missing key, or data that fails authentication (tampered or moved): exit 6.

    >>> sessctl.open(env={"SESSCTL_KEY_FILE": "/wrong/key"}).get("user-123")   # doctest: +SKIP
    Traceback (most recent call last):
    sessctl.errors.CryptoError: key file /wrong/key is missing; ...
    """

    exit_code = ExitStatus.KEY


class StorageError(SessctlError):
    """Locked past the timeout, corrupt file, unreachable server, schema newer than
    this program: exit 7.

    >>> sessctl.open("postgresql://app@db.invalid/sessions").list()   # doctest: +SKIP
    Traceback (most recent call last):
    sessctl.errors.StorageError: cannot connect to postgresql://app@db.invalid/sessions: ...
    """

    exit_code = ExitStatus.STORAGE


class Interrupted(SessctlError):
    """Ctrl-C stopped the work; what could be kept was kept (see the message): exit 130.

    >>> [r for r in store.send_many(["a", "b"], "hi") if isinstance(r, sessctl.Interrupted)]   # doctest: +SKIP
    []
    """

    exit_code = ExitStatus.INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM (`timeout`, a service manager) stopped the work, kept as for Ctrl-C."""

    exit_code = ExitStatus.TERMINATED
