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

from collections.abc import Callable
from typing import Any

from sessctl.errors import StorageError
from sessctl.store import migrate as migrate_


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


def _m003_integrity(conn: Any) -> None:
    # The same columns as SQLite's step 3 (see there).
    conn.execute("ALTER TABLE sessions ADD COLUMN settings bytea")
    conn.execute("ALTER TABLE sessions ADD COLUMN digest bytea")
    conn.execute("ALTER TABLE messages ADD COLUMN chain bytea")


def _m005_search_index(conn: Any) -> None:
    # The same two tables as SQLite's step 5 (see there for why each exists).
    conn.execute("""CREATE TABLE message_search (
        session_pk bigint NOT NULL,
        seq bigint NOT NULL,
        tags bytea NOT NULL,
        PRIMARY KEY (session_pk, seq),
        FOREIGN KEY (session_pk, seq) REFERENCES messages (session_pk, seq) ON DELETE CASCADE
    )""")
    conn.execute("""CREATE TABLE search_backlog (
        id integer PRIMARY KEY CHECK (id = 1),
        messages bigint NOT NULL
    )""")
    conn.execute("INSERT INTO search_backlog (id, messages) SELECT 1, count(*) FROM messages HAVING count(*) > 0")


def _m004_workflow(conn: Any) -> None:
    """The same as SQLite's step 4 (retry's `superseded` status, a fork's origin, an
    index of the messages that are not ok). PostgreSQL alters the CHECK in place."""
    # The column constraint's generated name, looked up rather than assumed.
    names = [r[0] for r in conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'messages'::regclass AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE '%status%'")]
    for name in names:
        conn.execute(f'ALTER TABLE messages DROP CONSTRAINT "{name}"')
    conn.execute("ALTER TABLE messages ADD CONSTRAINT messages_status_check "
                 "CHECK (status IN ('ok', 'incomplete', 'unanswered', 'superseded'))")
    conn.execute("ALTER TABLE sessions ADD COLUMN forked_from text, ADD COLUMN forked_at bigint")
    conn.execute("CREATE INDEX messages_not_ok ON messages (status, session_pk) WHERE status <> 'ok'")


MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = [
    ("initial", _m001_initial),
    ("scale indexes", _m002_scale_indexes),
    ("integrity digests and sealed settings", _m003_integrity),
    ("workflow: superseded status, fork origin", _m004_workflow),
    ("search index", _m005_search_index),
]
LATEST = len(MIGRATIONS)
# The tables sessctl makes (schema_migrations aside); a schema holding any of them that
# sessctl did not make is someone else's.
TABLES = frozenset({"keyring", "sessions", "messages", "message_bodies", "session_meta_index", "message_search",
                    "search_backlog"})

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
    migrate_.check_version(version, LATEST, where)


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


def _begin(conn: Any) -> None:
    conn.execute("BEGIN")
    conn.execute(MIGRATE_LOCK)


SCHEMA = migrate_.Schema(
    steps=MIGRATIONS,
    record_table=_RECORD_TABLE,
    begin=_begin,
    version=current_version,
    check_not_foreign=check_not_foreign,
    in_transaction=lambda conn: conn.raw.info.transaction_status != 0,
)


def migrate(conn: Any, where: object) -> int:
    """Apply pending steps, one transaction each, under the migration lock; returns how
    many ran. The caller holds no transaction."""
    if current_schema(conn) is None:
        raise StorageError(f"{where}: no schema to create tables in (search_path names none that exists)")
    return migrate_.run(conn, SCHEMA, where)
