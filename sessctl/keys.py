"""`sessctl key`: status and rotation, as use cases over the store.

How a new key is given is explicit, never implied:
  --new-key-file PATH        a key file; created (0600, fsynced) if absent, used as is if
                             it already holds a sessctl key. Never the current key file,
                             and no key file is ever overwritten or deleted.
  --new-passphrase-env VAR   a passphrase read from the environment variable VAR (not
                             from the command line, where `ps` and shell history see it).
  (neither, with --reencrypt) keep the current key-encryption key, new data key.

Order of effects, so that no crash leaves the database wrapped under a key that is not
on disk: unlock with the current key → create and fsync the new key file → one
transaction that re-wraps (or re-encrypts) and commits. A crash before the commit leaves
the old key in force and, at worst, an unused new key file that a rerun will reuse.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessctl import crypto
from sessctl.errors import CryptoError, SessctlError, UsageError
from sessctl.store.keys import KeyInfo, Progress


@dataclass
class KeyStatus:
    info: KeyInfo | None
    database: str
    key_file: Path | None  # for a file key: where this configuration looks for it
    unlocks: bool | None  # None: no key yet
    error: SessctlError | None = None


@dataclass
class RotateResult:
    info: KeyInfo
    reencrypted: int | None  # values re-encrypted, None for a re-wrap
    key_file: Path | None
    passphrase_env: str | None


def status(app: Any) -> KeyStatus:
    from sessctl.store import keys as store_keys

    store = app.store(create=False)
    if store is None:
        return KeyStatus(None, app.config.database.display, None, None)
    info = store_keys.info(store)
    if info is None:
        return KeyStatus(None, app.config.database.display, None, None)
    key_file = app.config.key_file if info.kind == "file" else None
    try:
        store_keys.unlock(store)
    except CryptoError as exc:
        return KeyStatus(info, app.config.database.display, key_file, False, exc)
    return KeyStatus(info, app.config.database.display, key_file, True)


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def _new_kek(app: Any, current: crypto.Kek, current_kind: str, *, new_key_file: str | None,
             new_passphrase_env: str | None, reencrypt: bool) -> tuple[crypto.Kek, Path | None]:
    if new_key_file and new_passphrase_env:
        raise UsageError("give --new-key-file or --new-passphrase-env, not both")
    if new_passphrase_env:
        value = app.env.get(new_passphrase_env)
        if not value:
            raise UsageError(f"--new-passphrase-env: the environment variable {new_passphrase_env} is not set or empty")
        return crypto.kek_from_passphrase(value), None  # fresh salt
    if new_key_file:
        path = Path(new_key_file).expanduser().absolute()
        if current_kind == "file" and path.exists() and path.resolve() == Path(current.source).resolve():
            raise UsageError(
                f"{path} is the current key file; give a new path (sessctl never overwrites a key file)"
            )
        if path.exists():
            if path.is_dir():
                raise UsageError(f"--new-key-file {path} is a directory")
            if not _private(path):
                raise UsageError(f"key file {path} is readable by others; `chmod 600 {path}` first")
            kek = crypto.kek_from_file(path, create=False)
            if kek.fingerprint == current.fingerprint:
                raise UsageError(f"{path} holds the current key; give a new key file")
            return kek, path
        return crypto.kek_from_file(path, create=True), path
    if not reencrypt:
        raise UsageError(
            "give the new key: --new-key-file PATH or --new-passphrase-env VAR "
            "(or --reencrypt alone to keep this key and replace the data key)"
        )
    return current, Path(current.source) if current.kind == "file" else None


def rotate(app: Any, *, new_key_file: str | None = None, new_passphrase_env: str | None = None,
           reencrypt: bool = False, progress: Callable[[int], Progress | None] | None = None) -> RotateResult:
    """Re-wrap the data key under a new key-encryption key, or (reencrypt) make a new
    data key and re-encrypt every value. `progress(total)` may return a callback."""
    from sessctl.store import keys as store_keys

    store = app.store(create=False)
    if store is None:
        raise UsageError(f"the database {app.config.database.display} does not exist yet; there is no key to rotate")
    unlocked = store_keys.unlock(store)  # the old key must work before anything is created
    new_kek, path = _new_kek(app, unlocked.kek, unlocked.ring["kek_kind"], new_key_file=new_key_file,
                             new_passphrase_env=new_passphrase_env, reencrypt=reencrypt)
    now = app.now()
    if reencrypt:
        cb = progress(store_keys.count_values(store)) if progress else None
        n: int | None = store_keys.reencrypt(store, unlocked, new_kek, now, cb)
    else:
        store_keys.rewrap(store, unlocked, new_kek, now)
        n = None
    info = store_keys.info(store)
    assert info is not None
    return RotateResult(info, n, path if new_kek.kind == "file" else None,
                        new_passphrase_env if new_kek.kind == "passphrase" else None)
