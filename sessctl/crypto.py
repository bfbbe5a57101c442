"""Keys and AES-256-GCM. Knows nothing of SQL or Click.

Envelope scheme (SPEC.md, Storage and encryption):
- One random 256-bit data key (DEK) per database encrypts every sensitive value.
- The DEK is stored only wrapped (AES-256-GCM) by a key-encryption key (KEK) that comes
  from a key file (32 random bytes, base64, created 0600) or from a passphrase through
  Argon2id (64 MiB, 3 passes, 4 lanes; salt and parameters stored with the wrap).
- The wrap's associated data names the database id, so a wrapped key cannot be moved to
  another database; a wrong KEK fails the wrap's tag, which is the key check.
- A value is sealed as: version byte 0x01 | 96-bit random nonce | ciphertext | tag, with
  associated data naming table, field, session and row (see `aad`), so a value copied
  to another row, field or session fails to open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessctl.errors import CryptoError

VALUE_VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
ARGON2_PARAMS = {"memory_cost": 65536, "iterations": 3, "lanes": 4}  # KiB, passes, lanes
_CHECK_PLAINTEXT = b"sessctl data key check v1"
# v2: every session carries its integrity digest (store/integrity.py). Kept inside the
# sealed check value, so the mark cannot be removed without the key to make v1 anew.
_CHECK_PLAINTEXT_V2 = b"sessctl data key check v2"
# Bits kept of each word's keyed hash in the search index: 16,384 tags, so every tag
# stands for many words (see README, "What the search index reveals").
SEARCH_TAG_BITS = 14


class Tampered(Exception):
    """A sealed value failed authentication; the caller adds where it was."""


def _aesgcm(key: bytes) -> Any:
    # Imported here (and hashlib, hmac, base64 in the functions that use them):
    # cryptography costs ~20 ms and commands that touch no encrypted value
    # (`--version`, `list` on an empty database, `list --format ids`) skip it.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def aad(table: str, field: str, session_id: str, session_pk: int, row: int) -> bytes:
    """Associated data binding a value to its place. Fields are separated by 0x1f,
    a byte session ids cannot contain (they are validated), so the encoding is unambiguous."""
    return aad_prefix(table, field, session_id, session_pk) + str(row).encode()


def aad_prefix(table: str, field: str, session_id: str, session_pk: int) -> bytes:
    """`aad` without the row, for bulk reads of many rows of one session: aad(...) ==
    aad_prefix(...) + str(row).encode()."""
    return f"sessctl\x1f1\x1f{table}\x1f{field}\x1f{session_id}\x1f{session_pk}\x1f".encode()


class Cipher:
    """Seals and opens values under one data key."""

    def __init__(self, dek: bytes) -> None:
        if len(dek) != KEY_BYTES:
            raise ValueError("data key must be 32 bytes")
        import hashlib
        import hmac

        self._aes = _aesgcm(dek)
        self._index_key = hmac.new(dek, b"sessctl metadata index v1", hashlib.sha256).digest()
        # Keyed BLAKE2b for the per-session integrity chain and digest: a MAC in one C
        # call, so checking every message of an export costs little.
        self.integrity_key = hmac.new(dek, b"sessctl integrity v1", hashlib.sha256).digest()
        # A separate key for the search index: the two blind indexes cannot be compared.
        self._search_key = hmac.new(dek, b"sessctl search index v1", hashlib.sha256).digest()

    def seal(self, plaintext: str, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VALUE_VERSION + nonce + self._aes.encrypt(nonce, plaintext.encode(), associated)

    def open(self, blob: bytes, associated: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        if not blob or blob[:1] != VALUE_VERSION or len(blob) < 1 + NONCE_BYTES + 16:
            raise Tampered("unknown format")
        try:
            return self._aes.decrypt(blob[1:13], blob[13:], associated).decode()
        except InvalidTag:
            raise Tampered("authentication failed") from None

    def opener(self) -> Callable[[bytes, bytes], str]:
        """`open` for bulk reads (export, doctor): the same checks, minus the per-call
        attribute and import lookups that cost as much as decrypting a short message."""
        from cryptography.exceptions import InvalidTag

        decrypt = self._aes.decrypt
        version = VALUE_VERSION[0]
        shortest = 1 + NONCE_BYTES + 16

        def open_(blob: bytes, associated: bytes) -> str:
            if len(blob) < shortest or blob[0] != version:
                raise Tampered("unknown format")
            try:
                return decrypt(blob[1:13], blob[13:], associated).decode()
            except InvalidTag:
                raise Tampered("authentication failed") from None

        return open_

    def index_tag(self, key: str, value: str) -> bytes:
        """A keyed hash of one metadata pair, so `--meta K=V` filters by SQL without
        storing the value. Reveals only which sessions share a pair, never the pair."""
        import hashlib
        import hmac

        msg = json.dumps([key, value], ensure_ascii=False).encode()
        return hmac.new(self._index_key, msg, hashlib.sha256).digest()[:16]

    def word_tag(self, word: str) -> int:
        """The search index's tag of one normalized word: a keyed hash (BLAKE2b keyed
        with a key derived from the data key) truncated to SEARCH_TAG_BITS, so that many
        words share each tag (store/search.py caches it per word)."""
        from hashlib import blake2b

        digest = blake2b(word.encode(), key=self._search_key, digest_size=8).digest()
        return int.from_bytes(digest, "big") >> (64 - SEARCH_TAG_BITS)


# --- key-encryption keys -------------------------------------------------------------


@dataclass(frozen=True)
class Kek:
    kind: str  # "file" | "passphrase"
    key: bytes
    kdf: dict[str, Any] | None  # passphrase: {"alg", "salt", params...}
    source: str  # the file path or "SESSCTL_PASSPHRASE", for messages

    @property
    def fingerprint(self) -> str:
        """Short id of the KEK, to tell key files apart (`key status`); not secret-bearing."""
        import hashlib

        return hashlib.sha256(b"sessctl kek id v1" + self.key).hexdigest()[:16]


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


MAX_KEY_FILE = 4096  # a key file holds 45 bytes; anything far larger is not one


def read_key_file(path: Path) -> bytes:
    """The key in a key file. Only a regular file of a few bytes is read: a FIFO would
    block forever, a device (/dev/zero) never end, a huge file exhaust memory."""
    import base64
    import stat

    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang before fstat says what it is.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CryptoError(
            f"key file {path} is missing; the database cannot be opened without it "
            "(set SESSCTL_KEY_FILE to where it is, or restore it from backup)"
        ) from None
    except OSError as exc:
        raise CryptoError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CryptoError(f"key file {path} is not a regular file (a FIFO, device or directory); "
                              "a key file is the small file sessctl created")
        if st.st_size > MAX_KEY_FILE:
            raise CryptoError(f"key file {path} is {st.st_size} bytes: not a sessctl key (expected 32 bytes, base64)")
        data = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise CryptoError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise CryptoError(f"key file {path} is not a sessctl key (expected 32 bytes, base64)")
    return key


def create_key_file(path: Path) -> bytes:
    """Write a new random key with mode 0600; reuse the file if another process won the race.

    The key is written and fsynced under a temporary name, then hard-linked into place:
    the link appears whole or not at all and fails if the name exists, so a racing
    process never reads a half-written key and an existing key is never replaced. Only
    when the filesystem refuses hard links do we fall back to O_EXCL on the final name."""
    import base64

    _ensure_private_dir(path.parent)
    key = os.urandom(KEY_BYTES)
    data = (base64.b64encode(key).decode() + "\n").encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return read_key_file(path)
        except OSError:
            return _create_key_file_excl(path, key, data)
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return key


def _create_key_file_excl(path: Path, key: bytes, data: bytes) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return key


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (a key file must survive a power cut once the
    database has been committed under it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def kek_from_file(path: Path, *, create: bool) -> Kek:
    key = create_key_file(path) if create and not path.exists() else read_key_file(path)
    return Kek("file", key, None, str(path))


# Bounds on Argon2id parameters read back from a database: whoever can write the file
# must not make every command allocate gigabytes or spin for hours before the key fails.
ARGON2_BOUNDS = {"memory_cost": (8 * 1024, 1024 * 1024), "iterations": (1, 64), "lanes": (1, 64)}


def _kdf_params(kdf: Any) -> tuple[bytes, int, int, int]:
    """(salt, iterations, lanes, memory_cost) from a stored kdf record, or CryptoError."""
    import base64

    if not isinstance(kdf, dict) or kdf.get("alg") != "argon2id":
        alg = kdf.get("alg") if isinstance(kdf, dict) else None
        raise CryptoError(f"unsupported or damaged key derivation record ({alg!r}); run `sessctl doctor`")
    values = {}
    for name, (low, high) in ARGON2_BOUNDS.items():
        value = kdf.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CryptoError(f"the key derivation record has {name}={value!r}, outside {low}..{high}: "
                              "the key table was altered; run `sessctl doctor`")
        values[name] = value
    if values["memory_cost"] < 8 * values["lanes"]:
        raise CryptoError("the key derivation record is inconsistent (memory below 8 KiB per lane)")
    try:
        salt = base64.b64decode(str(kdf.get("salt")), validate=True)
    except ValueError:
        salt = b""
    if not 8 <= len(salt) <= 64:
        raise CryptoError("the key derivation record's salt is damaged; run `sessctl doctor`")
    return salt, values["iterations"], values["lanes"], values["memory_cost"]


def kek_from_passphrase(passphrase: str, kdf: dict[str, Any] | None = None) -> Kek:
    """Derive with Argon2id; `kdf` holds the stored salt and parameters (None: new ones)."""
    import base64

    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    if not passphrase:
        raise CryptoError("SESSCTL_PASSPHRASE is empty")
    if kdf is None:
        kdf = {"alg": "argon2id", "salt": base64.b64encode(os.urandom(16)).decode(), **ARGON2_PARAMS}
    salt, iterations, lanes, memory_cost = _kdf_params(kdf)
    key = Argon2id(salt=salt, length=KEY_BYTES, iterations=iterations, lanes=lanes,
                   memory_cost=memory_cost).derive(passphrase.encode())
    return Kek("passphrase", key, kdf, "SESSCTL_PASSPHRASE")


def _wrap_aad(db_id: str) -> bytes:
    return f"sessctl\x1f1\x1fdata-key\x1f{db_id}".encode()


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)  # the same source as the secrets module, without importing it


def wrap(kek: Kek, dek: bytes, db_id: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _aesgcm(kek.key).encrypt(nonce, dek, _wrap_aad(db_id))


def unwrap(kek: Kek, wrapped: bytes, db_id: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    wrapped = bytes(wrapped) if isinstance(wrapped, (bytes, bytearray, memoryview)) else b""
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16 or not isinstance(db_id, str):
        raise CryptoError("the wrapped data key is damaged (wrong size): the key table was altered; "
                          "run `sessctl doctor`")
    try:
        return _aesgcm(kek.key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(db_id))
    except InvalidTag:
        what = "passphrase" if kek.kind == "passphrase" else f"key file {kek.source}"
        raise CryptoError(f"wrong key: the {what} does not open this database") from None


def key_check(cipher: Cipher, db_id: str, version: int = 2) -> bytes:
    text = _CHECK_PLAINTEXT_V2 if version == 2 else _CHECK_PLAINTEXT
    return cipher.seal(text.decode(), _wrap_aad(db_id) + b"\x1fcheck")


def verify_key_check(cipher: Cipher, check: bytes, db_id: str) -> int:
    """The check value's version (1: sessions not yet sealed with digests; 2: they are),
    or CryptoError when the key is not the one the check was made with."""
    try:
        text = cipher.open(bytes(check), _wrap_aad(db_id) + b"\x1fcheck").encode()
    except (Tampered, TypeError, UnicodeDecodeError):
        text = b""
    if text == _CHECK_PLAINTEXT_V2:
        return 2
    if text == _CHECK_PLAINTEXT:
        return 1
    raise CryptoError("the data key fails its check value: the key table was altered")
