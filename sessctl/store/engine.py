"""The seam between the engine-neutral store and a database engine.

The store (`sessctl/store/__init__.py` and its helpers) writes its SQL once, in a
dialect both engines accept: `?` placeholders, `RETURNING`, `ON CONFLICT DO NOTHING`,
`count(*) FILTER (WHERE ...)`, `coalesce(sum(x), 0)`, `TRUE`/`FALSE`, the `"user"`
column always quoted. What differs between SQLite and PostgreSQL lives behind this
interface, and only there:

- connections (one per thread: a Client may be shared between threads) and closing;
- transactions: how a write begins, which failures retry the whole transaction
  (SQLite: busy; PostgreSQL: serialization failure, deadlock, a lost race to insert
  the same session), what a read snapshot is;
- row locks (`for_update`): SQLite's BEGIN IMMEDIATE already serialises writers,
  PostgreSQL locks the one session row a write touches, so writers to different
  sessions never wait on each other;
- the keyring latch: `key rotate --reencrypt` must not race a writer that is sealing
  under the old data key;
- schema migrations, the few dialect expressions (a UTC day, index hints), and the
  maintenance verbs (vacuum, checkpoint) and diagnostics that only one engine has.
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from sessctl.config import Config, Database

T = TypeVar("T")


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int = ...) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What the store's SQL runs on: sqlite3.Connection as is, or an adapter."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...
    def executemany(self, sql: str, rows: Any) -> Any: ...


class Engine(ABC):
    """One database, opened. Subclasses: SQLiteEngine, PostgresEngine."""

    name: str  # "sqlite" | "postgresql"
    # `SELECT ... {for_update}`: lock the selected rows until the transaction ends.
    for_update: str = ""
    # How many threads may usefully run statements at once (the async client's pool).
    parallelism: int = 1

    def __init__(self, config: Config) -> None:
        self.config = config
        self.database: Database = config.database
        self._local = threading.local()
        self._all: list[Any] = []  # every connection opened, for close()
        self._lock = threading.Lock()
        self.closed = False

    @property
    def location(self) -> str:
        """The database as people see it: a path, or the URL with its password masked."""
        return self.database.display

    # --- connections ---------------------------------------------------------------------

    @property
    def conn(self) -> Any:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.closed:
                raise RuntimeError("the store is closed")
            conn = self._connect()
            self._local.conn = conn
            self._local.depth = 0
            with self._lock:
                self._all.append(conn)
        return conn

    def adopt(self, conn: Any) -> None:
        """Use an already-open connection for this thread (the one `open` migrated with)."""
        self._local.conn = conn
        self._local.depth = 0
        with self._lock:
            self._all.append(conn)

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection, configured."""

    def close(self) -> None:
        self.closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                self._close_conn(conn)
        self._local = threading.local()

    def _close_conn(self, conn: Any) -> None:
        conn.close()

    def forget_connection(self) -> None:
        """Drop this thread's connection without closing it (after a fork, the child
        must not touch the parent's connection)."""
        self._local = threading.local()
        with self._lock:
            self._all = []

    # --- transactions ---------------------------------------------------------------------

    def write(self, fn: Callable[[Any], T], *, durable: bool = True) -> T:
        """Run fn(conn) in one write transaction; the whole of fn is retried when the
        engine says the failure is transient, so fn must have no effects outside the
        database. A write inside a write joins the outer transaction.

        durable=False: the commit need not reach the disk before returning (no fsync);
        it is ordered before every later commit, so it becomes durable with the next
        durable one and a crash can only lose it together with everything after it.
        Only for marks whose loss harms nothing (a send's "active now" mark)."""
        conn = self.conn
        if self._local.depth:
            return fn(conn)
        attempts = 0
        started = time.monotonic()
        while True:
            try:
                self._begin_write(conn, durable)
                self._local.depth += 1
                try:
                    result = fn(conn)
                    self._commit(conn, durable)
                    return result
                except BaseException:
                    self._rollback(conn)
                    raise
                finally:
                    self._local.depth -= 1
            except Exception as exc:  # noqa: BLE001 - classified just below
                attempts += 1
                if self._retryable(exc, attempts, time.monotonic() - started):
                    self._backoff(attempts)
                    continue
                error = self._storage_error(exc)
                if error is None:
                    raise
                raise error from None

    @contextlib.contextmanager
    def reading(self, snapshot: str | None = None) -> Iterator[Any]:
        """One read snapshot: every query inside sees the same data. Inside a write it
        joins that transaction. `snapshot`: another connection's, from share_snapshot
        (this connection then sees exactly what that one sees)."""
        conn = self.conn
        if self.in_transaction(conn):
            yield conn
            return
        if snapshot is None:
            self._begin_read(conn)
        else:
            self._join_read(conn, snapshot)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                if self.in_transaction(conn):
                    self._end_read(conn)

    @property
    def in_write(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    @abstractmethod
    def in_transaction(self, conn: Any) -> bool: ...

    @abstractmethod
    def _begin_write(self, conn: Any, durable: bool = True) -> None: ...

    def _commit(self, conn: Any, durable: bool = True) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            if self.in_transaction(conn):
                conn.execute("ROLLBACK")

    @abstractmethod
    def _begin_read(self, conn: Any) -> None: ...

    def data_bytes(self) -> int | None:
        """How much the store occupies (None: unknown), for choices that scale with it
        (how many export workers)."""
        return None

    def share_snapshot(self, conn: Any) -> str | None:
        """Inside a read: a name other connections can pass to reading() to see this
        very snapshot, or None when the engine has no such thing (SQLite)."""
        return None

    def _join_read(self, conn: Any, snapshot: str) -> None:
        raise NotImplementedError(f"{self.name} cannot share a read snapshot")

    def _end_read(self, conn: Any) -> None:
        conn.execute("COMMIT")

    @abstractmethod
    def _retryable(self, exc: BaseException, attempts: int, elapsed: float) -> bool:
        """Whether a failed write transaction should run again (after _backoff);
        `elapsed` seconds since the first attempt began."""

    def _storage_error(self, exc: BaseException) -> BaseException | None:
        """The StorageError to raise instead of a driver error that will not retry."""
        return None

    def _backoff(self, attempts: int) -> None:
        import random  # only on this rare path: it costs start-up time

        time.sleep(random.uniform(0.005, 0.03) * attempts)

    def lock_keyring_shared(self, conn: Any) -> None:
        """Called first in every write transaction: hold off `key rotate --reencrypt`
        until this transaction ends (nothing for engines that serialise writers)."""

    def lock_keyring_exclusive(self, conn: Any) -> None:
        """Called by key rotation: wait for writers in flight, keep new ones out."""

    # --- reading helpers -----------------------------------------------------------------

    def stream(self, conn: Any, sql: str, params: Sequence[Any] = (), *, batch: int = 2000) -> Iterator[Any]:
        """Rows of a query too big to hold (export): a cursor on the engine's side."""
        yield from conn.execute(sql, params)

    def bulk(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        """The rows of one query that carries much ciphertext (export's batches), all
        at once; the engine may pick a cheaper wire format for them."""
        return conn.execute(sql, params)

    # --- dialect ------------------------------------------------------------------------

    @abstractmethod
    def day(self, column: str) -> str:
        """SQL for the UTC day (YYYY-MM-DD) of a Unix-seconds column."""

    @abstractmethod
    def blob_contains(self, column: str) -> str:
        """SQL true when the bytes bound to its one `?` occur in the blob `column`
        (the search index's scan)."""

    def index_hint(self, index: str) -> str:
        """`FROM table{hint}`: force an index where the planner would not pick it."""
        return ""

    # --- schema and maintenance -----------------------------------------------------------

    @abstractmethod
    def schema_version(self, conn: Any) -> int:
        """Migrations applied (0: no sessctl schema yet)."""

    @abstractmethod
    def migrate(self, conn: Any) -> int:
        """Apply pending migrations safely beside other processes; returns how many ran."""

    def vacuum(self) -> bool:
        """Reclaim space left by deleted rows; False when another reader kept some."""
        return True

    def checkpoint(self) -> None:
        """Make sure old ciphertext does not linger in side files (SQLite's WAL)."""

    def size_bytes(self) -> int | None:
        """The database's size on disk, when cheap to know."""
        return None

    # --- diagnostics (doctor) -------------------------------------------------------------

    latest_version: int = 0  # the schema version this sessctl writes
    setup_note: str = ""  # how a healthy database is set up, for doctor's schema line
    driver_errors: tuple[type[BaseException], ...] = ()  # the driver's own error classes

    def describe_error(self, exc: BaseException) -> str:
        """A driver error as one line for people (passwords masked)."""
        return " ".join(str(exc).split())

    def integrity(self, conn: Any, *, quick: bool, limit: int = 20) -> tuple[str, str, list[str]] | None:
        """(detail when sound, detail when damaged, problems) from the engine's own
        consistency check; None when the engine has none."""
        return None

    @abstractmethod
    def schema_record(self, conn: Any) -> tuple[int, list[int], list[str]]:
        """(version, versions recorded as applied, notes on the set-up)."""

    @abstractmethod
    def table_names(self, conn: Any) -> set[str]:
        """The tables sessctl would see."""

    def private_files(self) -> list[Any]:
        """Local files that must be readable by their owner only (none for a server)."""
        return []
