"""The engine-neutral store: the contract every engine keeps, and the only path from
text to the database.

Every text that reaches the database passes through `_put_text`, which sanitizes it
and then seals it under the data key with associated data naming its table, field,
session and row. There is no other path from text to storage, whichever the engine.

The SQL here and in the helper modules beside it (bulk, keys, export, stats, health)
is written once, in the dialect SQLite and PostgreSQL share; `engine.py` says what an
engine supplies (connections, transactions and their retries, row locks, schema
migrations, a few dialect expressions), and `sqlite.py` and `postgres.py` supply it.

Every message is also in the blind search index (store/search.py), written in the same
transaction as the message. A write path that stores message text calls, inside its
transaction and after the message row exists:

    store.index_message(conn, session_pk, seq, clean_text)   # the SANITIZED text, as sealed

(`_seal_text` returns it; a path that copies already-stored text, such as a fork,
passes the decrypted text), and one that removes or replaces a single message calls
`store.unindex_message(conn, session_pk, seq)` (deleting the message row does it too:
the index row references it ON DELETE CASCADE). Deleting a whole session goes through
bulk._delete_pk, which removes its index rows. A message without its index row is
invisible to `search`; doctor reports it, and `doctor --rebuild-search-index` repairs it.

Every write runs in one transaction (`Store.write`) that the engine retries as a whole
when it is transient trouble (SQLite busy, a PostgreSQL serialization failure or
deadlock), so concurrent processes queue cleanly and a killed process leaves either
all of a change or none of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sessctl import crypto
from sessctl import text as _text
from sessctl.config import Config
from sessctl.errors import AlreadyExistsError, CryptoError, NotFoundError
from sessctl.models import Message, NewSession, Session, SessionFilter, Stats
from sessctl.store import integrity
from sessctl.store.engine import Engine

T = TypeVar("T")

_SESSION_COLS = (
    'pk, id, "user", provider, model, status, created_at, updated_at, archived_at, expires_at, '
    "title, system, metadata, options, message_count, tokens_in, tokens_out, redactions, redaction_rules, "
    "settings, digest, forked_from, forked_at"
)
_MESSAGE_COLS = (
    "m.seq, m.role, b.content, m.created_at, m.status, m.provider, m.model, m.tokens_in, "
    "m.tokens_out, m.tokens_estimated, m.latency_ms, m.first_token_ms, m.redactions, m.chain"
)
def _merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


@dataclass
class NewMessage:
    """A message to append. `redactions` adds counts already known (e.g. on import)."""

    role: str
    content: str
    status: str = "ok"
    provider: str | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_estimated: bool = False
    latency_ms: int | None = None
    first_token_ms: int | None = None
    created_at: int | None = None
    redactions: dict[str, int] = field(default_factory=dict)


class Store:
    """One open database. Create with `Store.open`; close with `close()`.

    Safe to share between threads: each thread runs its statements on its own
    connection (the engine keeps one per thread), and the data key, once unlocked, is
    shared."""

    def __init__(self, engine: Engine, config: Config, sanitizer: Any) -> None:
        self.db = engine
        self.config = config
        self.sanitizer = sanitizer
        self._cipher: crypto.Cipher | None = None
        # The key-check value of the data key behind _cipher: compared inside each
        # transaction so a process that cached the data key before another process ran
        # `key rotate --reencrypt` never seals a value under the retired key.
        self._dek_check: bytes | None = None
        # Whether sessions carry integrity digests (the key check is v2); see integrity.py.
        self._sealed = False
        self._open: Callable[[bytes, bytes], str] | None = None  # cipher.opener(), for reads
        # Where warnings go (the App sets its notice; the library's goes to logging).
        self.notice: Callable[[str], None] = lambda message: None
        self._warned = False

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, config: Config, sanitizer: Any, *, create: bool) -> Store | None:
        """Open (and migrate) the database; None when it holds no sessctl data yet and
        create is False (reads of a missing database see an empty one, creating nothing)."""
        engine: Engine | None
        if config.database.kind == "postgresql":
            from sessctl.store.postgres import PostgresEngine

            engine = PostgresEngine.open(config, create=create)
        else:
            from sessctl.store.sqlite import SQLiteEngine

            engine = SQLiteEngine.open(config, create=create)
        return None if engine is None else cls(engine, config, sanitizer)

    @property
    def conn(self) -> Any:
        """This thread's connection."""
        return self.db.conn

    @property
    def location(self) -> str:
        """The database as people may see it (a path, or a URL with the password masked)."""
        return self.db.location

    def close(self) -> None:
        self.db.close()

    # --- transactions -------------------------------------------------------------------

    def write(self, fn: Callable[[Any], T], *, keyring_change: bool = False, durable: bool = True) -> T:
        """Run fn(conn) in one write transaction, retried as a whole on transient
        trouble, so fn must have no effects outside the database. A write inside a
        write joins the outer transaction (bulk loaders batch many appends into one).

        `durable=False`: see Engine.write (no fsync of its own; for marks only).

        `keyring_change` (making the key, rotating it): wait for every writer in flight
        and keep new ones out until this transaction ends, so no value is sealed under
        a data key being replaced, and what the keyring change reads is not changing
        under it."""
        if self.db.in_write:
            return fn(self.conn)

        def tx(conn: Any) -> T:
            if keyring_change:
                self.db.lock_keyring_exclusive(conn)
            else:
                self.db.lock_keyring_shared(conn)
            self._check_data_key()
            return fn(conn)

        return self.db.write(tx, durable=durable)

    @contextlib.contextmanager
    def reading(self, snapshot: str | None = None) -> Iterator[None]:
        """One read transaction: every query inside sees the same snapshot, so a long
        read (export, doctor) is consistent even while other processes write. Inside
        a write it simply joins that transaction. `snapshot`: join the one another
        connection shared (Engine.share_snapshot; export workers on PostgreSQL)."""
        with self.db.reading(snapshot):
            self._check_data_key()
            yield

    def _check_data_key(self) -> None:
        """Forget the cached data key if the keyring now holds another one (re-read
        under the current transaction); the next seal or open loads the new one."""
        if self._cipher is None:
            return
        row = self.conn.execute("SELECT dek_check FROM keyring WHERE id = 1").fetchone()
        if row is None or bytes(row[0]) != self._dek_check:
            self.forget_key()

    # --- keys ---------------------------------------------------------------------

    def keyring(self) -> dict[str, Any] | None:
        cur = self.conn.execute(
            "SELECT db_id, kek_kind, kek_fingerprint, kdf, wrapped_dek, dek_check, dek_created_at, wrapped_at "
            "FROM keyring WHERE id = 1"
        )
        row = cur.fetchone()
        if row is None:
            return None
        names = [d[0] for d in cur.description]
        return dict(zip(names, row))  # type: ignore[return-value]

    def _kek_for(self, ring: dict[str, Any]) -> crypto.Kek:
        env = self.config.env
        if ring["kek_kind"] == "passphrase":
            passphrase = env.get("SESSCTL_PASSPHRASE")
            if not passphrase:
                raise CryptoError(
                    f"{self.location} is protected by a passphrase: set SESSCTL_PASSPHRASE"
                )
            try:
                kdf = json.loads(ring["kdf"]) if isinstance(ring["kdf"], str) else None
            except ValueError:
                kdf = None
            return crypto.kek_from_passphrase(passphrase, kdf)
        kek = crypto.kek_from_file(self.config.key_file, create=False)
        self._warn_if_shared(self.config.key_file)
        return kek

    def _warn_if_shared(self, path: Any) -> None:
        """A key file others can read is a warning on every use: the database is only
        as private as its key (doctor fails on it; this says it where people look)."""
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if mode & 0o077 and not self._warned:
            self._warned = True
            self.notice(f"warning: key file {path} is readable by others (mode {mode & 0o777:04o}); "
                        f"run `chmod 600 {path}`")

    def new_kek(self) -> crypto.Kek:
        """The KEK for a new wrap: the passphrase when one is set, else the key file."""
        passphrase = self.config.env.get("SESSCTL_PASSPHRASE")
        if passphrase:
            return crypto.kek_from_passphrase(passphrase)
        return crypto.kek_from_file(self.config.key_file, create=True)

    def cipher(self, *, create: bool = False) -> crypto.Cipher | None:
        """The data-key cipher; None when the database has no key yet and create is False.

        A database that has a key table is never given a new key: a missing or wrong
        key is an error (exit 6), not a fresh start over someone's data.

        create=True also finishes sealing a database made before integrity digests:
        the first write that holds the key gives every session its chain and digest
        (and seals settings that were kept in plaintext), in one transaction."""
        if self._cipher is not None:
            if create and not self._sealed and not self.db.in_write:
                self._seal_everything()
            return self._cipher
        ring = self.keyring()
        if ring is None:
            if not create:
                return None
            kek = self.new_kek()

            def make(conn: Any) -> None:
                # One statement, so one snapshot: PostgreSQL gives each statement of a READ
                # COMMITTED transaction its own, and a process that committed its key and
                # then a session between two separate reads would look like a lost key.
                have_key, have_data = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM keyring WHERE id = 1), "
                    "EXISTS (SELECT 1 FROM sessions) OR EXISTS (SELECT 1 FROM message_bodies)").fetchone()
                if have_key:
                    return  # another process made it first; use theirs
                if have_data:
                    # Every session is created under an existing key, so data without a
                    # key table means the table was lost or removed: a fresh key would
                    # seal new data beside ciphertext that nothing can open any more.
                    raise CryptoError(
                        f"{self.location} holds sessions but its key table is missing; refusing to make "
                        "a new key over existing data (restore the database from a backup; see `sessctl doctor`)"
                    )
                db_id = os.urandom(16).hex()
                dek = crypto.new_data_key()
                now = int(time.time())
                conn.execute(
                    "INSERT INTO keyring (id, db_id, kek_kind, kek_fingerprint, kdf, wrapped_dek, dek_check, "
                    "dek_created_at, wrapped_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        db_id,
                        kek.kind,
                        kek.fingerprint,
                        json.dumps(kek.kdf) if kek.kdf else None,
                        crypto.wrap(kek, dek, db_id),
                        crypto.key_check(crypto.Cipher(dek), db_id),
                        now,
                        now,
                    ),
                )

            self.write(make, keyring_change=True)
            ring = self.keyring()
            assert ring is not None
        kek = self._kek_for(ring)
        dek = crypto.unwrap(kek, ring["wrapped_dek"], ring["db_id"])
        cipher = crypto.Cipher(dek)
        version = crypto.verify_key_check(cipher, ring["dek_check"], ring["db_id"])
        self._cipher = cipher
        self._dek_check = bytes(ring["dek_check"])
        self._open = cipher.opener()
        self._sealed = version >= 2
        if create and not self._sealed and not self.db.in_write:
            self._seal_everything()
        return cipher

    def _seal_everything(self) -> None:
        """v1 → v2: plaintext settings sealed, every chain and digest computed, the key
        check rewritten as v2, all in one transaction (all or nothing)."""
        cipher = self._cipher
        assert cipher is not None
        check = self._dek_check

        def tx(conn: Any) -> None:
            ring = conn.execute("SELECT db_id, dek_check FROM keyring WHERE id = 1").fetchone()
            if ring is None or bytes(ring[1]) != check:
                return  # another process sealed it (or rotated the key) first
            for pk, sid, options in conn.execute(
                    "SELECT pk, id, options FROM sessions WHERE options IS NOT NULL").fetchall():
                data = json.loads(options)
                legacy = Session(pk=pk, id=sid, user=None, provider=None, model=None, status="active",
                                 created_at=0, updated_at=0, options=data.get("options", {}),
                                 max_context_messages=data.get("max_context_messages"),
                                 max_context_tokens=data.get("max_context_tokens"))
                self._write_settings(conn, pk, sid, legacy)
            integrity.rebuild_all(conn, cipher.integrity_key)
            conn.execute("UPDATE keyring SET dek_check = ? WHERE id = 1",
                         (crypto.key_check(cipher, ring[0], version=2),))

        self.write(tx, keyring_change=True)
        self.forget_key()
        self.cipher()

    def adopt_key(self, other: Store) -> None:
        """Use the data key another Store unlocked (a forked export worker inherits it,
        so a passphrase is not run through Argon2id again in every worker)."""
        self._cipher, self._dek_check, self._open = other._cipher, other._dek_check, other._open
        self._sealed = other._sealed

    def forget_key(self) -> None:
        """Drop the cached data key (after this process changed the keyring)."""
        self._cipher = None
        self._dek_check = None
        self._open = None
        self._sealed = False

    def _need_cipher(self) -> crypto.Cipher:
        cipher = self.cipher()
        if cipher is None:
            raise CryptoError(f"{self.location} holds encrypted data but has no key table; run `sessctl doctor`")
        return cipher

    # --- sealing ------------------------------------------------------------------

    def _put_text(
        self, text: str | None, table: str, field: str, session_id: str, session_pk: int, row: int
    ) -> tuple[bytes | None, dict[str, int]]:
        """Make valid, sanitize, then seal. The single path by which text reaches the database."""
        blob, counts, _ = self._seal_text(text, table, field, session_id, session_pk, row)
        return blob, counts

    def _seal_text(
        self, text: str | None, table: str, field: str, session_id: str, session_pk: int, row: int
    ) -> tuple[bytes | None, dict[str, int], str | None]:
        """`_put_text`, also returning the sanitized text: what a message's search index
        row is made from, so redacted values are never searchable."""
        if text is None:
            return None, {}, None
        valid, bad = _text.clean(text)
        clean, counts = self.sanitizer.sanitize(valid)
        if bad:
            counts = {**counts, _text.RULE: counts.get(_text.RULE, 0) + bad}
        cipher = self.cipher(create=True)
        assert cipher is not None
        return cipher.seal(clean, crypto.aad(table, field, session_id, session_pk, row)), counts, clean

    # --- the search index ------------------------------------------------------------

    def index_message(self, conn: Any, session_pk: int, seq: int, text: str) -> None:
        """Put one message in the search index (or replace its entry), inside the
        caller's write transaction. `text` is the message as stored: sanitized. Every
        path that writes a message calls this (see the module docstring)."""
        from sessctl.store import search

        cipher = self.cipher(create=True)
        assert cipher is not None
        search.index_message(conn, cipher, session_pk, seq, text)

    def unindex_message(self, conn: Any, session_pk: int, seq: int) -> None:
        """Remove one message's search index entry, inside the caller's write transaction."""
        from sessctl.store import search

        search.unindex_message(conn, session_pk, seq)

    def _open_text(
        self, blob: bytes | None, table: str, field: str, session_id: str, session_pk: int, row: int
    ) -> str | None:
        if blob is None:
            return None
        if self._open is None:
            self._need_cipher()
        try:
            return self._open(blob, crypto.aad(table, field, session_id, session_pk, row))  # type: ignore[misc]
        except crypto.Tampered:
            where = f"{table}.{field} of session {session_id!r}" + (f" message {row}" if table == "messages" else "")
            raise CryptoError(
                f"cannot decrypt {where}: the value was altered or moved; run `sessctl doctor`"
            ) from None

    # --- sessions -----------------------------------------------------------------

    def _session(self, row: Sequence[Any], *, decrypt: bool = True) -> Session:
        (pk, sid, user, provider, model, status, created, updated, archived, expires,
         title, system, metadata, options, count, tin, tout, red, red_rules, settings, digest, forked_from, forked_at) = row
        opts = json.loads(options) if options else {}
        if settings is not None and decrypt:
            opened = self._open_text(settings, "sessions", "settings", sid, pk, pk)
            opts = json.loads(opened) if opened else {}
        s = Session(
            pk=pk, id=sid, user=user, provider=provider, model=model, status=status,
            created_at=created, updated_at=updated, archived_at=archived, expires_at=expires,
            options=opts.get("options", {}),
            max_context_messages=opts.get("max_context_messages"),
            max_context_tokens=opts.get("max_context_tokens"),
            message_count=count, tokens_in=tin, tokens_out=tout, redactions=red,
            redaction_rules=json.loads(red_rules) if red_rules else {},
            forked_from=forked_from, forked_at=forked_at,
        )
        s._seal = ([sid, pk, user, provider, model, created, expires, options, integrity.tag(settings),
                    integrity.tag(title), integrity.tag(system), integrity.tag(metadata), count, tin, tout, red,
                    red_rules, forked_from, forked_at], digest)
        if decrypt:
            s.title = self._open_text(title, "sessions", "title", sid, pk, pk)
            s.system = self._open_text(system, "sessions", "system", sid, pk, pk)
            meta = self._open_text(metadata, "sessions", "metadata", sid, pk, pk)
            s.metadata = json.loads(meta) if meta else {}
        return s

    def get_session(self, session_id: str, *, decrypt: bool = True, lock: bool = False) -> Session:
        """The session with this id (NotFoundError when there is none). `lock`, inside a
        write: hold the session's row until the transaction ends, so concurrent writers
        to this session queue while writers to others go on."""
        lock_sql = self.db.for_update if lock else ""
        row = self.conn.execute(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?{lock_sql}",
                                (session_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"session {session_id!r} not found (see `sessctl list --status all`)")
        return self._session(row, decrypt=decrypt)

    def find_session(self, session_id: str, *, decrypt: bool = True) -> Session | None:
        try:
            return self.get_session(session_id, decrypt=decrypt)
        except NotFoundError:
            return None

    def _insert_session(self, conn: Any, new: NewSession, now: int) -> int:
        cur = conn.execute(
            'INSERT INTO sessions (id, "user", provider, model, status, created_at, updated_at, expires_at) '
            "VALUES (?, ?, ?, ?, 'active', ?, ?, ?) RETURNING pk",
            (new.id, _text.plain(new.user), _text.plain(new.provider), _text.plain(new.model), now, now,
             new.expires_at),
        )
        pk = int(cur.fetchone()[0])
        self._write_settings(conn, pk, new.id, new)
        self._write_session_texts(conn, pk, new.id, new.title, new.system, new.metadata, set_title=True,
                                  set_system=True, set_meta=True, new=True)
        return pk

    @staticmethod
    def _settings(new: NewSession | Session) -> dict[str, Any]:
        """Provider options and context limits, as one document."""
        data: dict[str, Any] = {}
        if new.options:
            data["options"] = dict(new.options)
        if new.max_context_messages is not None:
            data["max_context_messages"] = new.max_context_messages
        if new.max_context_tokens is not None:
            data["max_context_tokens"] = new.max_context_tokens
        return data

    def _write_settings(self, conn: Any, pk: int, sid: str, new: NewSession | Session) -> None:
        """Seal a session's settings. Option values are treated as metadata values are:
        every string in them made valid, sanitized, counted; then the document sealed."""
        data = self._settings(new)
        counts: list[dict[str, int]] = []

        def clean(value: Any) -> Any:
            if isinstance(value, str):
                valid, bad = _text.clean(value)
                cleaned, c = self.sanitizer.sanitize(valid)
                counts.append({**c, _text.RULE: bad} if bad else c)
                return cleaned
            if isinstance(value, dict):
                return {_text.clean(str(k))[0]: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        blob = None
        if data:
            cipher = self.cipher(create=True)
            assert cipher is not None
            text = json.dumps(clean(data), ensure_ascii=False, sort_keys=True)
            blob = cipher.seal(text, crypto.aad("sessions", "settings", sid, pk, pk))
        conn.execute("UPDATE sessions SET settings = ?, options = NULL WHERE pk = ?", (blob, pk))
        self._add_redactions(conn, pk, _merge_counts(*counts))

    def _add_redactions(self, conn: Any, pk: int, total: dict[str, int]) -> None:
        if not total:
            return
        rules = conn.execute("SELECT redaction_rules FROM sessions WHERE pk = ?", (pk,)).fetchone()[0]
        merged = _merge_counts(json.loads(rules) if rules else {}, total)
        conn.execute("UPDATE sessions SET redactions = redactions + ?, redaction_rules = ? WHERE pk = ?",
                     (sum(total.values()), json.dumps(merged, sort_keys=True), pk))

    # --- integrity -----------------------------------------------------------------

    def _integrity_key(self) -> bytes | None:
        """The chain/digest key when this database's sessions are sealed with digests."""
        cipher = self.cipher()
        return cipher.integrity_key if cipher is not None and self._sealed else None

    def _reseal(self, conn: Any, pk: int) -> None:
        """Recompute session pk's digest (after any change to what it covers)."""
        key = self._integrity_key()
        if key is not None:
            integrity.reseal(conn, key, pk)

    def _verify(self, session: Session, rows: Sequence[Sequence[Any]], *, whole: bool,
                prev: bytes | None = None) -> None:
        """Check the messages read (rows: _MESSAGE_COLS) against their chain and the
        session's digest. whole: rows are all its messages; else the last ones, and
        the count is checked with one query."""
        key = self._integrity_key()
        if key is None or session._seal is None:
            return
        facts, digest = session._seal
        if whole:
            if [r[0] for r in rows] != list(range(1, len(rows) + 1)) or len(rows) != session.message_count:
                raise integrity.tampered(session.id, "messages missing or out of order")
        else:
            n, top = self.conn.execute("SELECT count(*), max(seq) FROM messages WHERE session_pk = ?",
                                       (session.pk,)).fetchone()
            if int(n) != session.message_count or (n and top != n):
                raise integrity.tampered(session.id, "messages missing or out of order")
        link_rows = [(r[0], r[1], r[4], r[3], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[2], r[13])
                     for r in rows]
        last = integrity.verify_messages(key, session.id, link_rows, prev)
        if not whole and not rows and session.message_count:
            row = self.conn.execute("SELECT chain FROM messages WHERE session_pk = ? AND seq = ?",
                                    (session.pk, session.message_count)).fetchone()
            last = bytes(row[0]) if row and row[0] is not None else None
        if digest is None or bytes(digest) != integrity.header(key, facts, last):
            raise integrity.tampered(session.id, "its header does not match its digest")

    def _write_session_texts(
        self, conn: Any, pk: int, sid: str, title: str | None, system: str | None,
        metadata: dict[str, str], *, set_title: bool, set_system: bool, set_meta: bool,
        new: bool = False,
    ) -> dict[str, int]:
        """Seal and store a session's texts. `new`: the row was just inserted, so it has
        no metadata index entries to clear."""
        sets: list[str] = []
        params: list[Any] = []
        counts: list[dict[str, int]] = []
        if set_title:
            blob, c = self._put_text(title, "sessions", "title", sid, pk, pk)
            sets.append("title = ?"), params.append(blob), counts.append(c)
        if set_system:
            blob, c = self._put_text(system, "sessions", "system", sid, pk, pk)
            sets.append("system = ?"), params.append(blob), counts.append(c)
        if set_meta:
            clean: dict[str, str] = {}
            for key, value in metadata.items():
                valid, bad = _text.clean(value)
                cleaned, c = self.sanitizer.sanitize(valid)
                clean[_text.clean(key)[0]] = cleaned
                counts.append({**c, _text.RULE: bad} if bad else c)
            blob, _ = self._put_text(json.dumps(clean, ensure_ascii=False, sort_keys=True) if clean else None,
                                     "sessions", "metadata", sid, pk, pk)
            sets.append("metadata = ?"), params.append(blob)
            if not new:
                conn.execute("DELETE FROM session_meta_index WHERE session_pk = ?", (pk,))
            if clean:
                cipher = self.cipher(create=True)
                assert cipher is not None
                conn.executemany(
                    "INSERT INTO session_meta_index (tag, session_pk) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [(cipher.index_tag(k, v), pk) for k, v in clean.items()],
                )
        total = _merge_counts(*counts)
        if sets:
            conn.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE pk = ?", (*params, pk))
        self._add_redactions(conn, pk, total)
        self._reseal(conn, pk)
        return total

    def create_session(self, new: NewSession, now: int, *, exist_ok: bool = False) -> tuple[Session, bool]:
        """Insert a session; returns (session, created). Duplicate ids raise exit 4 unless exist_ok."""
        self.cipher(create=True)

        def tx(conn: Any) -> bool:
            if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (new.id,)).fetchone():
                if exist_ok:
                    return False
                raise AlreadyExistsError(f"session {new.id!r} already exists (use --exist-ok to accept that)")
            self._insert_session(conn, new, now)
            return True

        created = self.write(tx)
        return self.get_session(new.id), created

    def update_session(
        self,
        session_id: str,
        now: int,
        *,
        title: str | None = None,
        set_title: bool = False,
        user: str | None = None,
        set_user: bool = False,
        meta_set: dict[str, str] | None = None,
        meta_unset: Iterable[str] = (),
        system: str | None = None,
        set_system: bool = False,
    ) -> Session:
        """Change title, user, system prompt or metadata (merge semantics) in one transaction."""
        unset = list(meta_unset)
        self.cipher(create=True)  # also seals a database from before integrity digests

        def tx(conn: Any) -> None:
            current = self.get_session(session_id, lock=True)
            metadata = dict(current.metadata)
            if meta_set:
                metadata.update(meta_set)
            for key in unset:
                metadata.pop(key, None)
            change_meta = bool(meta_set) or bool(unset)
            self._write_session_texts(conn, current.pk, current.id, title, system, metadata,
                                      set_title=set_title, set_system=set_system, set_meta=change_meta)
            if set_user:
                conn.execute('UPDATE sessions SET "user" = ? WHERE pk = ?', (_text.plain(user), current.pk))
                self._reseal(conn, current.pk)
            # updated_at is last *conversation* activity (list order, --older-than,
            # retention): editing labels is not activity, or a script that tags old
            # sessions would postpone their retention. `now` stays for callers.

        self.write(tx)
        return self.get_session(session_id)

    # --- messages -----------------------------------------------------------------

    def append_messages(
        self,
        session_id: str,
        messages: Sequence[NewMessage],
        now: int,
        *,
        create: NewSession | None = None,
    ) -> tuple[Session, list[Message]]:
        """Append messages (a whole turn) atomically with gap-free sequence numbers.

        With `create`, a missing session is created in the same transaction."""
        self.cipher(create=True)

        def tx(conn: Any) -> list[tuple[int, dict[str, int]]]:
            # The session's row lock is what makes seq gap-free under concurrent appends.
            row = conn.execute(
                f"SELECT pk, message_count FROM sessions WHERE id = ?{self.db.for_update}", (session_id,)
            ).fetchone()
            if row is None:
                if create is None:
                    raise NotFoundError(f"session {session_id!r} not found")
                pk, count = self._insert_session(conn, create, now), 0
            else:
                pk, count = row
            written: list[tuple[int, dict[str, int]]] = []
            tin = tout = 0
            key = self._integrity_key()
            chain = None
            if key is not None and count:
                last = conn.execute("SELECT chain FROM messages WHERE session_pk = ? AND seq = ?",
                                    (pk, count)).fetchone()
                chain = bytes(last[0]) if last and last[0] is not None else None
            for i, m in enumerate(messages):
                seq = count + i + 1
                blob, red, clean = self._seal_text(m.content, "messages", "content", session_id, pk, seq)
                red = _merge_counts(red, m.redactions)
                facts = (seq, m.role, m.status, m.created_at or now, _text.plain(m.provider), _text.plain(m.model),
                         m.tokens_in, m.tokens_out, int(m.tokens_estimated) if m.tokens_in is not None else None,
                         m.latency_ms, m.first_token_ms, json.dumps(red, sort_keys=True) if red else None)
                chain = integrity.link(key, chain, facts, blob) if key is not None else None
                cur = conn.execute(
                    "INSERT INTO messages (session_pk, seq, role, status, created_at, provider, model, tokens_in, "
                    "tokens_out, tokens_estimated, latency_ms, first_token_ms, redactions, redaction_count, chain) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (pk, *facts, sum(red.values()), chain),
                )
                conn.execute("INSERT INTO message_bodies (id, content) VALUES (?, ?)", (cur.fetchone()[0], blob))
                self.index_message(conn, pk, seq, clean or "")
                tin += m.tokens_in or 0
                tout += m.tokens_out or 0
                written.append((seq, red))
            total = _merge_counts(*(r for _, r in written))
            rules_sql, rules_params = "", []
            if total:
                old = conn.execute("SELECT redaction_rules FROM sessions WHERE pk = ?", (pk,)).fetchone()[0]
                rules_sql = ", redaction_rules = ?"
                rules_params = [json.dumps(_merge_counts(json.loads(old) if old else {}, total), sort_keys=True)]
            conn.execute(
                "UPDATE sessions SET message_count = message_count + ?, tokens_in = tokens_in + ?, "
                f"tokens_out = tokens_out + ?, redactions = redactions + ?, updated_at = ?{rules_sql} WHERE pk = ?",
                (len(messages), tin, tout, sum(total.values()), now, *rules_params, pk),
            )
            self._reseal(conn, pk)
            return written

        written = self.write(tx)
        session = self.get_session(session_id)
        seqs = [seq for seq, _ in written]
        stored = self.messages(session, seqs=seqs)
        return session, stored

    def _message(self, session: Session, row: Sequence[Any]) -> Message:
        (seq, role, content, created, status, provider, model, tin, tout, est, lat, first, red, _chain) = row
        return Message(
            seq=seq, role=role,
            content=self._open_text(content, "messages", "content", session.id, session.pk, seq) or "",
            created_at=created, status=status, provider=provider, model=model, tokens_in=tin,
            tokens_out=tout, tokens_estimated=bool(est), latency_ms=lat, first_token_ms=first,
            redactions=json.loads(red) if red else {},
        )

    def messages(
        self,
        session: Session,
        *,
        last: int | None = None,
        seqs: Sequence[int] | None = None,
        only_ok: bool = False,
    ) -> list[Message]:
        """A session's messages in order; `last` keeps the final N. Unless only some are
        asked for (seqs, only_ok), what is read is checked against the session's
        integrity chain and digest first (CryptoError, exit 6, when altered)."""
        if seqs is not None and not seqs:
            return []  # (and `IN ()` is SQLite's alone: PostgreSQL rejects an empty list)
        where, params = "m.session_pk = ?", [session.pk]
        if only_ok:
            where += " AND m.status = 'ok'"
        if seqs is not None:
            where += f" AND m.seq IN ({','.join('?' * len(seqs))})"
            params += list(seqs)
        sql = f"SELECT {_MESSAGE_COLS} FROM messages m JOIN message_bodies b ON b.id = m.id WHERE {where}"
        if last is not None:
            sql += " ORDER BY m.seq DESC LIMIT ?"
            rows = self.conn.execute(sql, (*params, last)).fetchall()
            rows.reverse()
        else:
            rows = self.conn.execute(sql + " ORDER BY m.seq", params).fetchall()
        # Decrypt first: a value altered in place is named precisely by its own check.
        out = [self._message(session, r) for r in rows]
        if seqs is None and not only_ok:
            if last is not None and len(rows) < session.message_count:
                # Only the last N are shown, but the whole chain is checked: every
                # message's facts and its body's tag (read from the end of the value,
                # nothing decrypted), so tampering before the window is seen too.
                rows = self.conn.execute(
                    f"SELECT {integrity.TAG_ROW_COLS} FROM messages m JOIN message_bodies b ON b.id = m.id "
                    "WHERE m.session_pk = ? ORDER BY m.seq", (session.pk,)).fetchall()
            self._verify(session, rows, whole=True)
        return out

    # --- selection ----------------------------------------------------------------

    def _where(self, f: SessionFilter, alias: str = "") -> tuple[str, list[Any]]:
        """SQL conditions for f over the sessions table (columns prefixed by `alias.`)."""
        p = f"{alias}." if alias else ""
        clauses: list[str] = []
        params: list[Any] = []
        if f.ids:
            clauses.append(f"{p}id IN ({','.join('?' * len(f.ids))})")
            params += list(f.ids)
        if f.status != "all":
            clauses.append(f"{p}status = ?")
            params.append(f.status)
        for column, value in (('"user"', f.user), ("model", f.model), ("provider", f.provider)):
            if value is not None:
                clauses.append(f"{p}{column} = ?")
                params.append(value)
        if f.updated_before is not None:
            clauses.append(f"{p}updated_at < ?")
            params.append(f.updated_before)
        if f.updated_since is not None:
            clauses.append(f"{p}updated_at >= ?")
            params.append(f.updated_since)
        if f.meta:
            cipher = self.cipher()
            if cipher is None:
                clauses.append("FALSE")
            else:
                for key, value in f.meta:
                    clauses.append(f"{p}pk IN (SELECT session_pk FROM session_meta_index WHERE tag = ?)")
                    params.append(cipher.index_tag(key, value))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_sessions(
        self, f: SessionFilter, *, limit: int | None = None, decrypt: bool = True, oldest_first: bool = False
    ) -> Iterator[Session]:
        """Sessions matching f, newest activity first (or by creation for exports)."""
        where, params = self._where(f)
        order = " ORDER BY created_at, pk" if oldest_first else " ORDER BY updated_at DESC, pk DESC"
        sql = f"SELECT {_SESSION_COLS} FROM sessions{where}{order}"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        for row in self.conn.execute(sql, params):
            yield self._session(row, decrypt=decrypt)

    def session_ids(self, f: SessionFilter) -> list[str]:
        where, params = self._where(f)
        return [r[0] for r in self.conn.execute(f"SELECT id FROM sessions{where} ORDER BY created_at, pk", params)]

    def missing_ids(self, ids: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        found = {
            r[0]
            for r in self.conn.execute(
                f"SELECT id FROM sessions WHERE id IN ({','.join('?' * len(wanted))})", wanted
            )
        }
        return [i for i in wanted if i not in found]

    def set_status(self, f: SessionFilter, status: str, now: int) -> list[str]:
        """Archive or unarchive every matching session not already so; returns their ids."""
        where, params = self._where(f)
        cond = f"{where} AND status != ?" if where else " WHERE status != ?"
        archived_at = now if status == "archived" else None

        def tx(conn: Any) -> list[str]:
            rows = conn.execute(
                f"UPDATE sessions SET status = ?, archived_at = ?{cond} RETURNING id, created_at, pk",
                (status, archived_at, *params, status),
            ).fetchall()
            return [r[0] for r in sorted(rows, key=lambda r: (r[1], r[2]))]

        return self.write(tx)

    # --- statistics ---------------------------------------------------------------

    def stats(self, f: SessionFilter, *, since: int | None = None, before: int | None = None,
              by: str | None = None) -> list[tuple[Any, Stats]]:
        """Totals over the selected sessions; with `by`, one Stats per group, key-sorted.

        Without a message window (`since`/`before`), message and token totals come
        from the per-session counters, so the common case never scans messages."""
        from sessctl.store.stats import compute

        return compute(self, self._where(f, "s"), since=since, before=before, by=by)
