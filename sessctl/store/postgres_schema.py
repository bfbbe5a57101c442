"""PostgreSQL schema: the same logical steps as sqlite_schema.py, in PostgreSQL's types.

Step N here and step N there make the same tables, columns, constraints and indexes,
so the store's SQL (written once) runs on both and a version number means the same
schema on either engine. `schema_migrations` records each step; there is no
user_version, so the highest recorded step is the version.

Two processes (or hosts) starting at once on a new database must not both migrate:
each step runs in one transaction under a transaction-scoped advisory lock, and the
version is re-read after the lock is taken. Tables go to the connection's current
schema (the first existing one in search_path), so one database can hold several
sessctl stores side by side, one per schema.

Append new steps at the end; never edit or reorder a released one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sessctl.errors import StorageError


def _m001_initial(conn: Any) -> None:
    # bytea: the encrypted columns (sessions.title/system/metadata, message_bodies.content).
    # bigint everywhere a count or a Unix time can grow. Identity columns are never
    # reused, as SQLite's AUTOINCREMENT: ciphertext bound to a deleted session's pk can
    # never open in a later session of the same id.
    statements = [
        """CREATE TABLE keyring (
            id integer PRIMARY KEY CHECK (id = 1),
            db_id text NOT NULL,
            kek_kind text NOT NULL CHECK (kek_kind IN ('file', 'passphrase')),
            kek_fingerprint text NOT NULL,
            kdf text,
            wrapped_dek bytea NOT NULL,
            dek_check bytea NOT NULL,
            dek_created_at bigint NOT NULL,
            wrapped_at bigint NOT NULL
        )""",
        """CREATE TABLE sessions (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL CONSTRAINT sessions_id_key UNIQUE,
            "user" text,
            provider text,
            model text,
            status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            archived_at bigint,
            expires_at bigint,
            title bytea,
            system bytea,
            metadata bytea,
            options text,
            message_count bigint NOT NULL DEFAULT 0,
            tokens_in bigint NOT NULL DEFAULT 0,
            tokens_out bigint NOT NULL DEFAULT 0,
            redactions bigint NOT NULL DEFAULT 0,
            redaction_rules text
        )""",
        "CREATE INDEX sessions_activity ON sessions (status, updated_at, pk)",
        'CREATE INDEX sessions_user ON sessions ("user", updated_at)',
        "CREATE INDEX sessions_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            seq bigint NOT NULL,
            role text NOT NULL CHECK (role IN ('user', 'assistant')),
            status text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'incomplete', 'unanswered')),
            created_at bigint NOT NULL,
            provider text,
            model text,
            tokens_in bigint,
            tokens_out bigint,
            tokens_estimated integer,
            latency_ms bigint,
            first_token_ms bigint,
            redactions text,
            redaction_count bigint NOT NULL DEFAULT 0,
            UNIQUE (session_pk, seq)
        )""",
        """CREATE TABLE message_bodies (
            id bigint PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            content bytea NOT NULL
        )""",
        # Ciphertext does not compress: do not let TOAST try on every long message.
        "ALTER TABLE message_bodies ALTER COLUMN content SET STORAGE EXTERNAL",
        """CREATE TABLE session_meta_index (
            tag bytea NOT NULL,
            session_pk bigint NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            PRIMARY KEY (tag, session_pk)
        )""",
        "CREATE INDEX session_meta_index_session ON session_meta_index (session_pk)",
    ]
    for sql in statements:
        conn.execute(sql)


def _m002_scale_indexes(conn: Any) -> None:
    # The same three indexes as SQLite's step 2 (see there for why each exists).
    conn.execute("CREATE INDEX sessions_created ON sessions (created_at, pk)")
    conn.execute("CREATE INDEX messages_latency ON messages (latency_ms) WHERE latency_ms IS NOT NULL")
    conn.execute("CREATE INDEX messages_created ON messages (created_at)")


MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = [
    ("initial", _m001_initial),
    ("scale indexes", _m002_scale_indexes),
]
LATEST = len(MIGRATIONS)
# The tables sessctl makes (schema_migrations aside); a schema holding any of them that
# sessctl did not make is someone else's.
TABLES = frozenset({"keyring", "sessions", "messages", "message_bodies", "session_meta_index"})

_RECORD_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at bigint NOT NULL
)"""

# Transaction-scoped advisory locks, keyed by the schema so stores in different schemas
# of one database never wait on each other.
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/sessctl-migrate'))"


# The tables of the connection's current schema, from the catalog: information_schema's
# views cost several milliseconds a query, and every command asks on opening.
TABLES_HERE = ("SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
               "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')")


def current_version(conn: Any) -> int:
    """Steps applied; 0 when there is no sessctl schema here yet."""
    # A scan of pg_class, not to_regclass(): that goes through this backend's catalog
    # cache, which may not yet know of a table another process has just committed (seen
    # while two processes migrate a new schema at once).
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = 'schema_migrations')"
    ).fetchone()
    if not row[0]:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])


def check_version(version: int, where: object) -> None:
    if version > LATEST:
        raise StorageError(
            f"{where} has schema version {version}, newer than this sessctl understands "
            f"({LATEST}); upgrade sessctl to open it"
        )


def check_not_foreign(conn: Any, where: object) -> None:
    """Refuse a schema whose tables look like ours but were not made by sessctl."""
    clash = sorted(r[0] for r in conn.execute(TABLES_HERE) if r[0] in TABLES)
    if clash:
        raise StorageError(
            f"{where}: schema {current_schema(conn)!r} already has tables named {', '.join(clash[:3])} "
            "that sessctl did not make; use another database or schema (e.g. ?options=-csearch_path%3Dsessctl)"
        )


def current_schema(conn: Any) -> str | None:
    row = conn.execute("SELECT current_schema()").fetchone()
    return None if row is None else row[0]


def migrate(conn: Any, where: object) -> int:
    """Apply pending steps, one transaction each, under the migration lock; returns how
    many ran. The caller holds no transaction."""
    if current_schema(conn) is None:
        raise StorageError(f"{where}: no schema to create tables in (search_path names none that exists)")
    applied = 0
    while True:
        conn.execute("BEGIN")
        try:
            conn.execute(MIGRATE_LOCK)
            # Re-read under the lock: another process may have migrated meanwhile.
            version = current_version(conn)
            check_version(version, where)
            if version >= LATEST:
                conn.execute("COMMIT")
                return applied
            if version == 0:
                check_not_foreign(conn, where)
            name, step = MIGRATIONS[version]
            conn.execute(_RECORD_TABLE)
            step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version + 1, name, int(time.time())),
            )
            conn.execute("COMMIT")
            applied += 1
        except BaseException:
            conn.execute("ROLLBACK")
            raise
