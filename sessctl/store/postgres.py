"""The PostgreSQL engine: one store shared by many processes on many hosts.

Encryption stays on the client: the server receives only ciphertext, wrapped keys and
keyed hashes, exactly what an SQLite file holds. The driver is psycopg 3 (the optional
extra `sessctl[postgres]`), imported only here, only when a postgresql:// URL is used.

Concurrency, the part that differs most from SQLite (where BEGIN IMMEDIATE serialises
every writer):
- Writes run at READ COMMITTED and lock what they change: an append locks its session's
  row (`SELECT ... FOR UPDATE`), so appends to one session queue and number their
  messages gap-free, while writers to different sessions never wait on each other.
  Bulk deletes and retention lock the rows they select; PostgreSQL re-checks a locked
  row against the query, so a session a send has just made active is not deleted.
- Key rotation must not race a writer sealing under the old data key: every write
  takes a shared transaction-scoped advisory lock, rotation the exclusive one.
- A serialization failure, a deadlock, or losing the race to create the same session
  or key (a unique violation on those constraints) retries the whole transaction; the
  transaction function re-reads everything, so a retry sees the winner's row.
- A killed client leaves nothing half done: the server rolls back its transaction.
- `[storage] busy_timeout` becomes `lock_timeout`: a lock wait past it is exit 7.
- Reads that must be consistent (show, export, doctor) run in one REPEATABLE READ,
  READ ONLY transaction; export reads sessions through a server-side cursor.

Connection settings come only from the URL (and libpq's environment: PGPASSWORD,
PGSSLMODE, ~/.pgpass...), nothing is hard-coded that a deployment might need to
change; `prepare_threshold=0` in the URL turns off prepared statements for PgBouncer
in transaction mode.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any

from sessctl.config import Config
from sessctl.errors import StorageError, UsageError
from sessctl.store import postgres_schema
from sessctl.store.engine import Engine

_KEYRING_KEY = "hashtext(current_schema() || '/sessctl-keyring')"
# Unique violations that mean "another process created it first": retry and find it.
_RACE_CONSTRAINTS = {"sessions_id_key", "keyring_pkey"}
_MAX_ATTEMPTS = 12
# Validated constraints each table must have (doctor): (table, kind) → how many.
_CONSTRAINTS = {
    ("keyring", "p"): 1, ("keyring", "c"): 2,
    ("sessions", "p"): 1, ("sessions", "u"): 1, ("sessions", "c"): 1,
    ("messages", "p"): 1, ("messages", "f"): 1, ("messages", "u"): 1, ("messages", "c"): 2,
    ("message_bodies", "p"): 1, ("message_bodies", "f"): 1,
    ("session_meta_index", "p"): 1, ("session_meta_index", "f"): 1,
    ("message_search", "p"): 1, ("message_search", "f"): 1,
    ("search_backlog", "p"): 1, ("search_backlog", "c"): 1,
}
# Tables a later schema step made: not expected in a schema older than that step.
_TABLE_SINCE = {"message_search": 3, "search_backlog": 3}
_KINDS = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check"}
_cursor_names = itertools.count(1)
_SNAPSHOT_NAME = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")  # pg_export_snapshot()'s form


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StorageError(
            "a postgresql:// database needs the PostgreSQL driver: pip install 'sessctl[postgres]' "
            "(psycopg 3)"
        ) from None
    return psycopg


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """The shared dialect's `?` placeholders → psycopg's `%s` (and a literal % doubled).
    The store's SQL never has a `?` inside a string literal."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A psycopg connection speaking the shared dialect (`?` placeholders), with the
    small part of sqlite3.Connection's surface the store uses."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(_pg_sql(sql), params if params else None)

    def executemany(self, sql: str, rows: Any) -> Any:
        cur = self.raw.cursor()
        cur.executemany(_pg_sql(sql), list(rows))
        return cur

    def close(self) -> None:
        self.raw.close()


class PostgresEngine(Engine):
    name = "postgresql"
    for_update = " FOR UPDATE"
    parallelism = 4
    latest_version = postgres_schema.LATEST

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.psycopg = _driver()
        self.driver_errors = (self.psycopg.Error,)
        self._conninfo, self._connect_kwargs = self._conninfo_from_url()
        self._server_version: str | None = None

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, config: Config, *, create: bool) -> PostgresEngine | None:
        """Connect, check (and migrate) the schema; None when the database holds no
        sessctl schema yet and create is False (a read sees an empty store)."""
        engine = cls(config)
        conn = engine._connect()
        try:
            version = engine._guard(lambda: postgres_schema.current_version(conn))
            postgres_schema.check_version(version, engine.location)
            if version == 0:
                # Someone else's tables under our names are refused by every command, as
                # SQLite refuses someone else's file, not read as an empty store...
                try:
                    engine._guard(lambda: postgres_schema.check_not_foreign(conn, engine.location))
                except StorageError:
                    # ...unless they are ours after all: a process beside us committed its
                    # first migration step between the version read and this one.
                    version = engine._guard(lambda: postgres_schema.current_version(conn))
                    if version == 0:
                        raise
                    postgres_schema.check_version(version, engine.location)
            if version == 0 and not create:
                conn.close()
                return None
            if version < postgres_schema.LATEST:
                engine._guard(lambda: postgres_schema.migrate(conn, engine.location))
        except BaseException:
            conn.close()
            raise
        engine.adopt(conn)
        return engine

    def _conninfo_from_url(self) -> tuple[str, dict[str, Any]]:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        url = self.database.url or ""
        try:
            params = conninfo_to_dict(url)
        except self.psycopg.ProgrammingError as exc:
            raise UsageError(f"malformed PostgreSQL URL {self.location}: {self.describe_error(exc)}") from None
        kwargs: dict[str, Any] = {}
        if "prepare_threshold" in params:
            value = str(params.pop("prepare_threshold")).strip().lower()
            try:
                kwargs["prepare_threshold"] = None if value in ("0", "off", "none", "") else int(value)
            except ValueError:
                raise UsageError(f"{self.location}: prepare_threshold must be a number or 0 (off)") from None
        params.setdefault("application_name", "sessctl")
        params.setdefault("connect_timeout", "10")
        return make_conninfo(**params), kwargs

    def _connect(self) -> PgConn:
        try:
            raw = self.psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
        except self.psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self.location}: {self.describe_error(exc)}") from None
        return PgConn(raw)

    def _guard(self, fn: Any) -> Any:
        """Run fn, turning a driver error into a one-line StorageError (exit 7)."""
        try:
            return fn()
        except self.psycopg.Error as exc:
            raise StorageError(f"{self.location}: {self.describe_error(exc)}") from None

    def _scrub(self, text: str) -> str:
        for secret in self.database.secrets:
            text = text.replace(secret, "***")
        return text

    def describe_error(self, exc: BaseException) -> str:
        # libpq's messages span lines ("connection to server ... failed: ...\n\tIs the
        # server running...?"): one line, and never a password.
        return self._scrub(" ".join(str(exc).split()) or type(exc).__name__)

    # --- transactions -------------------------------------------------------------------

    def in_transaction(self, conn: PgConn) -> bool:
        return conn.raw.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE

    def _begin_write(self, conn: PgConn, durable: bool = True) -> None:
        # SET LOCAL, with BEGIN in one round trip: the settings end with the transaction,
        # so behind PgBouncer in transaction mode they neither leak to another client
        # nor get lost on a server connection this client did not set up.
        extra = "" if durable else "; SET LOCAL synchronous_commit = off"
        conn.execute(f"BEGIN; SET LOCAL lock_timeout = {int(self.config.busy_timeout_ms)}{extra}")

    def _begin_read(self, conn: PgConn) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def data_bytes(self) -> int | None:
        """The store's tables with their indexes and TOAST, in this schema only (one
        database may hold several stores, one per schema)."""
        row = self.conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(?)",
            (sorted(postgres_schema.TABLES),)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def share_snapshot(self, conn: PgConn) -> str | None:
        # Valid while this transaction lasts: the exporting side must stay in it until
        # every connection that joins it has begun (export_workers.py does).
        return str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])

    def _join_read(self, conn: PgConn, snapshot: str) -> None:
        if not _SNAPSHOT_NAME.fullmatch(snapshot):  # it is spliced into the SQL below
            raise ValueError(f"not a snapshot name: {snapshot!r}")
        # SET TRANSACTION SNAPSHOT must come before any query of the transaction.
        conn.execute(f"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'")

    def _retryable(self, exc: BaseException, attempts: int, elapsed: float) -> bool:
        errors = self.psycopg.errors
        if attempts >= _MAX_ATTEMPTS:
            return False
        if isinstance(exc, (errors.SerializationFailure, errors.DeadlockDetected)):
            return True
        return isinstance(exc, errors.UniqueViolation) and exc.diag.constraint_name in _RACE_CONSTRAINTS

    def _storage_error(self, exc: BaseException) -> BaseException | None:
        errors = self.psycopg.errors
        if isinstance(exc, errors.LockNotAvailable):
            return StorageError(
                f"{self.location}: a session stayed locked past the busy timeout "
                f"({self.config.busy_timeout_ms} ms); try again or raise [storage] busy_timeout"
            )
        if isinstance(exc, (errors.SerializationFailure, errors.DeadlockDetected)):
            return StorageError(f"{self.location}: the transaction kept conflicting with others; try again")
        if isinstance(exc, self.psycopg.OperationalError):
            return StorageError(f"{self.location}: {self.describe_error(exc)}")
        return None

    def lock_keyring_shared(self, conn: PgConn) -> None:
        conn.execute(f"SELECT pg_advisory_xact_lock_shared({_KEYRING_KEY})")

    def lock_keyring_exclusive(self, conn: PgConn) -> None:
        conn.execute(f"SELECT pg_advisory_xact_lock({_KEYRING_KEY})")

    def stream(self, conn: PgConn, sql: str, params: Sequence[Any] = (), *, batch: int = 2000) -> Iterator[Any]:
        """A server-side cursor (inside the caller's transaction): rows arrive `batch`
        at a time, so memory stays flat whatever the store's size."""
        if not self.in_transaction(conn):
            yield from conn.execute(sql, params)
            return
        with conn.raw.cursor(name=f"sessctl_{next(_cursor_names)}") as cur:
            cur.itersize = batch
            cur.execute(_pg_sql(sql), params if params else None)
            yield from cur

    def bulk(self, conn: PgConn, sql: str, params: Sequence[Any] = ()) -> Any:
        # Binary results: bytea comes as its bytes, not as hex text that the server
        # writes and psycopg parses back (twice the bytes on the wire). The Python
        # values are the same for every type the store reads (text, bigint, bytea).
        return conn.raw.execute(_pg_sql(sql), params if params else None, binary=True)

    # --- dialect ------------------------------------------------------------------------

    def day(self, column: str) -> str:
        return f"to_char(to_timestamp({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def blob_contains(self, column: str) -> str:
        return f"position(? IN {column}) > 0"

    # --- schema and maintenance -----------------------------------------------------------

    def schema_version(self, conn: Any) -> int:
        return postgres_schema.current_version(conn)

    def migrate(self, conn: Any) -> int:
        return postgres_schema.migrate(conn, self.location)

    def vacuum(self) -> bool:
        """VACUUM the tables deletes touch: dead rows' space (and their ciphertext) is
        reclaimed for reuse. Runs outside any transaction, as PostgreSQL requires."""
        conn = self.conn
        for table in ("message_bodies", "messages", "session_meta_index", "sessions"):
            conn.execute(f"VACUUM {table}")
        return True

    # --- diagnostics (doctor) -------------------------------------------------------------

    @classmethod
    def for_doctor(cls, config: Config) -> tuple[PostgresEngine | None, tuple[str, str, int] | None]:
        engine = cls(config)
        conn = engine._connect()
        try:
            engine._guard(lambda: conn.execute("SET default_transaction_read_only = on"))
            tables = engine._guard(lambda: engine.table_names(conn))
        except BaseException:
            conn.close()
            raise
        if not tables & postgres_schema.TABLES:
            # As a missing SQLite file: nothing sessctl made is here yet (someone else's
            # tables beside ours are allowed: one database may serve several programs).
            conn.close()
            return None, ("warn", f"{engine.location} holds no sessctl tables yet: nothing to check "
                                  "(sessctl creates them on first write)", 0)
        engine.adopt(conn)
        return engine, None

    def integrity(self, conn: Any, *, quick: bool, limit: int = 20) -> tuple[str, str, list[str]] | None:
        """The server keeps its own pages consistent; what can go wrong under us is an
        index left invalid (a failed concurrent build) or a constraint dropped or never
        validated, which would let the rules the store relies on slip. A schema sessctl
        did not make has nothing of ours to check (the schema check says what it is)."""
        if postgres_schema.current_version(conn) == 0:
            return ("no sessctl schema to check", "", [])
        problems = [
            f"index {name} is not valid (rebuild it: REINDEX INDEX {name})"
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready)")
        ]
        have = {(table, kind): n for table, kind, n in conn.execute(
            "SELECT t.relname, c.contype, count(*) FILTER (WHERE c.convalidated) FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema() GROUP BY 1, 2")}
        version = postgres_schema.current_version(conn)
        for (table, kind), want in _CONSTRAINTS.items():
            if version < _TABLE_SINCE.get(table, 1):
                continue
            if have.get((table, kind), 0) < want:
                problems.append(f"table {table} lacks its {_KINDS[kind]} constraints (found "
                                f"{have.get((table, kind), 0)} of {want})")
        return ("indexes valid, keys and constraints in place",
                "the schema is damaged; repair it from the problems listed or restore from a backup", problems[:limit])

    def schema_record(self, conn: Any) -> tuple[int, list[int], list[str]]:
        version = postgres_schema.current_version(conn)
        recorded = [] if version == 0 else [
            int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        return version, recorded, []

    def table_names(self, conn: Any) -> set[str]:
        return {r[0] for r in conn.execute(postgres_schema.TABLES_HERE)}

    @property
    def setup_note(self) -> str:  # type: ignore[override]
        row = self.conn.execute("SELECT current_setting('server_version'), current_schema()").fetchone()
        return f"PostgreSQL {row[0]}, schema {row[1]}"
