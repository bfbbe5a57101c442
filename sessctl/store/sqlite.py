"""The SQLite engine: a local file, in WAL mode, private to its owner.

Writers serialise on the database (`BEGIN IMMEDIATE`); a transaction that finds the
database busy is retried as a whole until `[storage] busy_timeout` has passed in all,
so concurrent sessctl processes queue instead of failing. `synchronous = FULL`: a
commit that returned is on disk. `secure_delete`: deleted ciphertext is zeroed in the
file, and `checkpoint` folds the WAL back so it does not linger there either.

The hot path uses the standard library's sqlite3 directly: importing sqlite-utils
costs about 90 ms, more than the whole start-up budget of `sessctl list`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sessctl.config import Config
from sessctl.errors import StorageError
from sessctl.store import sqlite_schema
from sessctl.store.engine import Engine

_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED} if hasattr(sqlite3, "SQLITE_BUSY") else {5, 6}
_PRAGMAS = (
    "foreign_keys = ON",
    "secure_delete = ON",
    "synchronous = FULL",
    "temp_store = MEMORY",
    "cache_size = -16000",
)
PAGE_SIZE = 16384  # for new files (see _prepare)


def is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


class SQLiteEngine(Engine):
    name = "sqlite"
    latest_version = sqlite_schema.LATEST
    driver_errors = (sqlite3.Error,)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        assert self.database.path is not None
        self.path: Path = self.database.path
        # On storage sessctl cannot write (a read-only filesystem or directory) the file
        # is opened immutable: reads work, any write is a one-line exit 7.
        self.read_only = False

    @classmethod
    def open(cls, config: Config, *, create: bool) -> SQLiteEngine | None:
        """Open (and migrate) the file; None when it does not exist and create is False."""
        engine = cls(config)
        path = engine.path
        if not path.exists():
            if not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                # Create the file 0600 ourselves before SQLite writes a byte; SQLite gives
                # the -wal and -shm files the same mode as the database file.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise StorageError(f"cannot create database {path}: {exc.strerror}") from None
        elif path.is_dir():
            raise StorageError(f"{path} is a directory, not a database file")
        if _unwritable(path):
            if create:
                raise StorageError(f"{path} is on read-only storage (its directory cannot be written): "
                                   "it can be read, not changed; copy it elsewhere to write to it")
            engine._check_readable_wal()
            engine.read_only = True
        conn = engine._connect_raw()
        try:
            engine._prepare(conn, create=create)
        except BaseException:
            conn.close()
            raise
        engine.adopt(conn)
        return engine

    def _check_readable_wal(self) -> None:
        """Immutable mode reads the main file only: committed changes still in the WAL
        (not yet checkpointed) would be silently missing, so refuse rather than show an
        older state."""
        wal = Path(f"{self.path}-wal")
        try:
            pending = wal.stat().st_size > 0
        except OSError:
            pending = False
        if pending:
            raise StorageError(
                f"{self.path} is on read-only storage and has changes still in {wal.name}, which cannot be "
                "applied there; open it once where it can be written (or copy the three files elsewhere)")

    def _connect_raw(self) -> sqlite3.Connection:
        if self.read_only:
            from urllib.parse import quote

            try:
                conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro&immutable=1", uri=True,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open database {self.path}: {exc}") from None
            return conn
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.config.busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from None
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = self._connect_raw()
        for pragma in _PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _prepare(self, conn: sqlite3.Connection, *, create: bool) -> None:
        try:
            # One read snapshot for the version and the table list: a process that
            # starts while another creates the schema must not see the tables of
            # step 1 with the version from before it, and call the file foreign.
            conn.execute("BEGIN")
            try:
                version = sqlite_schema.current_version(conn)
                sqlite_schema.check_version(version, self.path)
                if version == 0:
                    # Before anything changes the file: someone else's database is refused as it is.
                    sqlite_schema.check_not_foreign(conn, self.path)
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path} is not a usable sessctl database: {exc}") from None
        if version == 0:
            self._make_private()
        for pragma in _PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        if version < sqlite_schema.LATEST and self.read_only:
            raise StorageError(f"{self.path} is on read-only storage and needs a schema upgrade (version "
                               f"{version} of {sqlite_schema.LATEST}); open it once where it can be written")
        if version < sqlite_schema.LATEST:
            if version == 0 and conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new file. Message bodies of a few KB overflow 4 KiB pages and leave
                # the tail of the last overflow page empty; 16 KiB pages hold them whole
                # and make the store ~7 % smaller, with no measurable cost to send or
                # show (bench/README.md, "Store size"). Only possible before the first
                # page is written; an existing file keeps its size.
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            try:
                sqlite_schema.migrate(conn, self.path)
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise StorageError(f"database {self.path} is locked; try again") from None
                raise

    def _make_private(self) -> None:
        """A file sessctl is about to initialise (empty, or left by a process killed
        before its first migration) is made 0600 if it is ours: data must never land in
        a file others can read, whoever created it."""
        try:
            st = self.path.stat()
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.chmod(self.path, 0o600)
        except OSError:
            pass

    def _retry_busy(self, fn: Any) -> Any:
        import time

        started = time.monotonic()
        attempts = 0
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                attempts += 1
                if not self._retryable(exc, attempts, time.monotonic() - started):
                    raise self._storage_error(exc) or exc from None
                self._backoff(attempts)

    # --- transactions ---------------------------------------------------------------------

    def in_transaction(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    def _begin_write(self, conn: sqlite3.Connection, durable: bool = True) -> None:
        if self.read_only:
            raise StorageError(f"{self.path} is on read-only storage: it can be read, not changed")
        if not durable:
            # In WAL mode NORMAL skips the fsync at commit; the frames still precede
            # every later commit's, which (FULL) fsyncs them too.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")

    def _commit(self, conn: sqlite3.Connection, durable: bool = True) -> None:
        try:
            conn.execute("COMMIT")
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")

    def _rollback(self, conn: Any) -> None:
        super()._rollback(conn)
        conn.execute("PRAGMA synchronous = FULL")

    def data_bytes(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def _begin_read(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")

    def _retryable(self, exc: BaseException, attempts: int, elapsed: float) -> bool:
        # SQLite's busy handler has already waited inside the failed statement; one more
        # try is worth it only while the whole wait is within the configured timeout.
        return is_busy(exc) and elapsed < self.config.busy_timeout_ms / 1000

    def _storage_error(self, exc: BaseException) -> BaseException | None:
        if is_busy(exc):
            return StorageError(
                f"database {self.path} stayed locked past the busy timeout "
                f"({self.config.busy_timeout_ms} ms); try again or raise [storage] busy_timeout"
            )
        return None

    # --- dialect ------------------------------------------------------------------------

    def day(self, column: str) -> str:
        return f"strftime('%Y-%m-%d', {column}, 'unixepoch')"

    def blob_contains(self, column: str) -> str:
        return f"instr({column}, ?) > 0"

    def index_hint(self, index: str) -> str:
        return f" INDEXED BY {index}"

    # --- schema and maintenance -----------------------------------------------------------

    def schema_version(self, conn: Any) -> int:
        return sqlite_schema.current_version(conn)

    def migrate(self, conn: Any) -> int:
        return sqlite_schema.migrate(conn, self.path)

    def vacuum(self) -> bool:
        """VACUUM, then fold the WAL back into the file and truncate it, so pages that
        held deleted ciphertext are gone from both files. False when another process
        still reads the database: the checkpoint then could not finish and the old pages
        leave the WAL only at a later checkpoint."""
        conn = self.conn
        self._retry_busy(lambda: conn.execute("VACUUM"))
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so an old wrapped key or old
        ciphertexts do not linger in the -wal file (secure_delete zeroes them in the main
        file). Best effort: a concurrent reader can keep frames alive a little longer."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            pass

    def size_bytes(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    # --- diagnostics (doctor) -------------------------------------------------------------

    @classmethod
    def for_doctor(cls, config: Config) -> tuple[SQLiteEngine | None, tuple[str, str, int] | None]:
        """A read-only engine for doctor, or (None, (status, detail, exit code)) when the
        file cannot be examined as a database at all. Opening never creates the file,
        migrates or switches modes: a damaged or older database is seen as it is."""
        from urllib.parse import quote

        engine = cls(config)
        db = engine.path
        if not db.exists():
            return None, ("warn", f"{db} does not exist yet: nothing to check (sessctl creates it on first write)", 0)
        if db.is_file() and db.stat().st_size == 0:
            # What a process killed between creating the file and migrating leaves behind;
            # sessctl initialises it on the next write.
            return None, ("warn", f"{db} is empty: not initialised yet (the next write does it)", 0)
        try:
            with db.open("rb") as fh:
                header = fh.read(16)
        except OSError as exc:
            return None, ("fail", f"cannot read {db}: {exc.strerror}", 7)
        if db.is_dir() or header != b"SQLite format 3\x00":
            return None, ("fail", f"{db} is not an SQLite database", 7)
        mode = "rw"
        if _unwritable(db):
            try:
                engine._check_readable_wal()
            except StorageError as exc:
                return None, ("fail", exc.message, 7)
            mode, engine.read_only = "ro&immutable=1", True
        try:
            conn = sqlite3.connect(f"file:{quote(str(db))}?mode={mode}", uri=True,
                                   timeout=config.busy_timeout_ms / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            return None, ("fail", f"cannot open {db}: {exc}", 7)
        engine.adopt(conn)
        return engine, None

    def integrity(self, conn: Any, *, quick: bool, limit: int = 20) -> tuple[str, str, list[str]]:
        """(detail when sound, detail when not, problems): SQLite's own page-level
        check, and the foreign keys."""
        pragma = "quick_check" if quick else "integrity_check"
        rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}({int(limit)})")]
        # One row may carry several lines ("*** in database main ***\nOn tree page ...").
        problems = [] if rows == ["ok"] else [ln for row in rows for ln in str(row).splitlines() if ln.strip()]
        damaged = f"{pragma} found damage; restore from a backup"
        if quick:
            return f"{pragma} ok", damaged, problems
        for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
            problems.append(f"{table} row {rowid} points to a missing {parent} row")
            if len(problems) >= limit:
                break
        return f"{pragma} ok, foreign keys ok", damaged, problems

    def schema_record(self, conn: Any) -> tuple[int, list[int], list[str]]:
        """(version, versions recorded in schema_migrations, notes on the set-up)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        try:
            recorded = [int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        except sqlite3.OperationalError:
            recorded = []
        if self.read_only:  # immutable: SQLite reports no journal mode worth checking
            return version, recorded, []
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        return version, recorded, [] if mode == "wal" else [f"journal mode is {mode}, not wal"]

    @property
    def setup_note(self) -> str:  # type: ignore[override]
        return "read-only storage, opened immutable" if self.read_only else "journal wal"

    def table_names(self, conn: Any) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def private_files(self) -> list[Path]:
        """Files that must be readable by their owner only."""
        return [self.path] + [Path(f"{self.path}{s}") for s in ("-wal", "-shm")]


def _unwritable(path: Path) -> bool:
    """Whether the database's directory cannot be written: a read-only filesystem, or a
    directory this user may not write (SQLite must create -wal and -shm files there)."""
    directory = path.parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(directory, os.W_OK)
