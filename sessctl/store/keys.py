"""Keyring changes: re-wrap the data key under a new key-encryption key, or replace the
data key and re-encrypt every value. The SQL for `sessctl key` lives here.

Both run in ONE write transaction that first checks the keyring is still the one that
was unlocked (another `key rotate` may have won the race), so a killed or failed
rotation leaves the database exactly as it was: under the old key, every value intact.

Crash ordering (the caller's part): a new key file is created and fsynced BEFORE this
transaction commits, and nothing ever deletes or overwrites a key file, so there is no
moment at which the database is wrapped under a key that is not on disk.

Re-encryption opens each stored value with the old data key and seals the same
plaintext under the new one with the same associated data. It deliberately does not go
through Store._put_text: the values were sanitized when they were stored, and running
today's (possibly different) rules again would silently change history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sessctl import crypto
from sessctl.errors import CryptoError, StorageError

Progress = Callable[[int, int], None]  # (values done, values in total)

_BATCH = 2000


@dataclass(frozen=True)
class KeyInfo:
    """The keyring, minus anything secret (no wrapped key, no salt)."""

    db_id: str
    kind: str  # "file" | "passphrase"
    fingerprint: str
    kdf: dict[str, Any] | None  # Argon2id parameters for a passphrase, without the salt
    data_key_created_at: int
    wrapped_at: int


@dataclass(frozen=True)
class Unlocked:
    ring: dict[str, Any]
    kek: crypto.Kek
    dek: bytes


def info(store: Any) -> KeyInfo | None:
    ring = store.keyring()
    if ring is None:
        return None
    kdf = json.loads(ring["kdf"]) if ring["kdf"] else None
    if kdf is not None:
        kdf = {k: v for k, v in kdf.items() if k != "salt"}
    return KeyInfo(
        db_id=ring["db_id"], kind=ring["kek_kind"], fingerprint=ring["kek_fingerprint"], kdf=kdf,
        data_key_created_at=ring["dek_created_at"], wrapped_at=ring["wrapped_at"],
    )


def unlock(store: Any) -> Unlocked:
    """The keyring opened with the configured key (CryptoError, exit 6, when it does not)."""
    ring = store.keyring()
    if ring is None:
        raise CryptoError(f"{store.location} has no key yet (the first write creates it); nothing to rotate")
    kek = store._kek_for(ring)
    dek = crypto.unwrap(kek, ring["wrapped_dek"], ring["db_id"])
    crypto.verify_key_check(crypto.Cipher(dek), ring["dek_check"], ring["db_id"])
    return Unlocked(ring, kek, dek)


def _still_current(store: Any, conn: Any, unlocked: Unlocked) -> None:
    row = conn.execute(f"SELECT wrapped_dek, dek_check FROM keyring WHERE id = 1{store.db.for_update}").fetchone()
    if row is None or (bytes(row[0]), bytes(row[1])) != (unlocked.ring["wrapped_dek"], unlocked.ring["dek_check"]):
        raise StorageError("the key changed while this rotation was starting (another `key rotate`?); run it again")


def _set_keyring(conn: Any, kek: crypto.Kek, db_id: str, dek: bytes, now: int,
                 *, new_dek: bool) -> None:
    sets = "kek_kind = ?, kek_fingerprint = ?, kdf = ?, wrapped_dek = ?, wrapped_at = ?"
    params: list[Any] = [kek.kind, kek.fingerprint, json.dumps(kek.kdf) if kek.kdf else None,
                         crypto.wrap(kek, dek, db_id), now]
    if new_dek:
        sets += ", dek_check = ?, dek_created_at = ?"
        params += [crypto.key_check(crypto.Cipher(dek), db_id), now]
    conn.execute(f"UPDATE keyring SET {sets} WHERE id = 1", params)


def rewrap(store: Any, unlocked: Unlocked, new_kek: crypto.Kek, now: int) -> None:
    """Wrap the same data key under new_kek. Values are untouched (fast, any size)."""

    def tx(conn: Any) -> None:
        _still_current(store, conn, unlocked)
        _set_keyring(conn, new_kek, unlocked.ring["db_id"], unlocked.dek, now, new_dek=False)

    store.write(tx, rotating=True)
    store.forget_key()
    checkpoint(store)


def count_values(store: Any) -> int:
    """Encrypted values: each title, system prompt, metadata document and message body."""
    sessions = store.conn.execute(
        "SELECT count(title) + count(system) + count(metadata) FROM sessions"
    ).fetchone()[0]
    bodies = store.conn.execute("SELECT count(*) FROM message_bodies").fetchone()[0]
    return int(sessions) + int(bodies)


def reencrypt(store: Any, unlocked: Unlocked, new_kek: crypto.Kek, now: int,
              progress: Progress | None = None) -> int:
    """New data key; every value re-sealed and the metadata index re-keyed, all in one
    transaction. Returns how many values (see count_values) were re-encrypted."""
    db_id = unlocked.ring["db_id"]
    old = crypto.Cipher(unlocked.dek)
    new_dek = crypto.new_data_key()
    new = crypto.Cipher(new_dek)

    def reseal(blob: bytes, table: str, field: str, sid: str, spk: int, row: int) -> tuple[bytes, str]:
        associated = crypto.aad(table, field, sid, spk, row)
        try:
            plain = old.open(blob, associated)
        except crypto.Tampered:
            where = f"{table}.{field} of session {sid!r}" + (f" message {row}" if table == "messages" else "")
            raise CryptoError(
                f"cannot re-encrypt: {where} does not decrypt (altered or moved); nothing was changed; "
                "run `sessctl doctor`"
            ) from None
        return new.seal(plain, associated), plain

    def tx(conn: Any) -> int:
        _still_current(store, conn, unlocked)
        total = count_values(store)
        done = 0
        if progress:
            progress(done, total)
        # The blind index is keyed by the data key: rebuild it from the decrypted metadata.
        conn.execute("DELETE FROM session_meta_index")
        last = 0
        while True:
            rows = conn.execute(
                "SELECT pk, id, title, system, metadata FROM sessions WHERE pk > ? "
                "AND (title IS NOT NULL OR system IS NOT NULL OR metadata IS NOT NULL) ORDER BY pk LIMIT ?",
                (last, _BATCH),
            ).fetchall()
            if not rows:
                break
            updates, tags = [], []
            for pk, sid, title, system, metadata in rows:
                t = reseal(title, "sessions", "title", sid, pk, pk)[0] if title is not None else None
                s = reseal(system, "sessions", "system", sid, pk, pk)[0] if system is not None else None
                m = None
                if metadata is not None:
                    m, plain = reseal(metadata, "sessions", "metadata", sid, pk, pk)
                    tags += [(new.index_tag(k, v), pk) for k, v in json.loads(plain).items()]
                updates.append((t, s, m, pk))
            conn.executemany("UPDATE sessions SET title = ?, system = ?, metadata = ? WHERE pk = ?", updates)
            conn.executemany(
                "INSERT INTO session_meta_index (tag, session_pk) VALUES (?, ?) ON CONFLICT DO NOTHING", tags)
            last = rows[-1][0]
            done += sum((r[2] is not None) + (r[3] is not None) + (r[4] is not None) for r in rows)
            if progress:
                progress(done, total)
        last = 0
        bodies = 0
        while True:
            rows = conn.execute(
                "SELECT b.id, b.content, m.seq, s.id, s.pk FROM message_bodies b "
                "JOIN messages m ON m.id = b.id JOIN sessions s ON s.pk = m.session_pk "
                "WHERE b.id > ? ORDER BY b.id LIMIT ?",
                (last, _BATCH),
            ).fetchall()
            if not rows:
                break
            conn.executemany(
                "UPDATE message_bodies SET content = ? WHERE id = ?",
                [(reseal(blob, "messages", "content", sid, spk, seq)[0], bid) for bid, blob, seq, sid, spk in rows],
            )
            last = rows[-1][0]
            bodies += len(rows)
            done += len(rows)
            if progress:
                progress(done, total)
        orphans = conn.execute("SELECT count(*) FROM message_bodies").fetchone()[0] - bodies
        if orphans:
            # A body with no message has no place to bind to; it would stay under the
            # old key. Refuse rather than leave it behind.
            raise StorageError(
                f"cannot re-encrypt: {orphans} message bodies belong to no message; nothing was changed; "
                "run `sessctl doctor`"
            )
        _set_keyring(conn, new_kek, db_id, new_dek, now, new_dek=True)
        return done

    n = store.write(tx, rotating=True)
    store.forget_key()
    checkpoint(store)
    return n


def checkpoint(store: Any) -> None:
    """Do not leave the old wrapped key or old ciphertexts in side files (SQLite's WAL)."""
    store.db.checkpoint()
