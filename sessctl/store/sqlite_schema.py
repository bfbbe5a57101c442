"""SQLite schema: ordered steps, each run in one transaction together with its record.

`PRAGMA user_version` holds the number of steps applied (cheap to read on every start);
the `schema_migrations` table records which ran and when. A database whose version is
higher than len(MIGRATIONS) was written by a newer sessctl and is refused (exit 7).

Append new steps at the end; never edit or reorder a released one, and add the same
step to postgres_schema.py: both engines keep the same version numbers for the same
logical schema.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from sessctl.errors import StorageError


def _m001_initial(conn: sqlite3.Connection) -> None:
    # Encrypted columns (BLOB): sessions.title/system/metadata, message_bodies.content.
    # Everything else is plaintext so filters and statistics run in SQL.
    # Message bodies live apart from message facts so that scans for `stats` and
    # retention read a slim table instead of paging through every ciphertext.
    statements = [
        """CREATE TABLE keyring (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            db_id TEXT NOT NULL,
            kek_kind TEXT NOT NULL CHECK (kek_kind IN ('file', 'passphrase')),
            kek_fingerprint TEXT NOT NULL,
            kdf TEXT,
            wrapped_dek BLOB NOT NULL,
            dek_check BLOB NOT NULL,
            dek_created_at INTEGER NOT NULL,
            wrapped_at INTEGER NOT NULL
        ) STRICT""",
        # AUTOINCREMENT: a pk is never reused, so ciphertext bound to a deleted
        # session's pk can never open in a later session of the same id.
        """CREATE TABLE sessions (
            pk INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            user TEXT,
            provider TEXT,
            model TEXT,
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            archived_at INTEGER,
            expires_at INTEGER,
            title BLOB,
            system BLOB,
            metadata BLOB,
            options TEXT,
            message_count INTEGER NOT NULL DEFAULT 0,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            redactions INTEGER NOT NULL DEFAULT 0,
            redaction_rules TEXT
        ) STRICT""",
        "CREATE INDEX sessions_activity ON sessions (status, updated_at, pk)",
        "CREATE INDEX sessions_user ON sessions (user, updated_at)",
        "CREATE INDEX sessions_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'incomplete', 'unanswered')),
            created_at INTEGER NOT NULL,
            provider TEXT,
            model TEXT,
            tokens_in INTEGER,
            tokens_out INTEGER,
            tokens_estimated INTEGER,
            latency_ms INTEGER,
            first_token_ms INTEGER,
            redactions TEXT,
            redaction_count INTEGER NOT NULL DEFAULT 0,
            UNIQUE (session_pk, seq)
        ) STRICT""",
        """CREATE TABLE message_bodies (
            id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            content BLOB NOT NULL
        ) STRICT""",
        """CREATE TABLE session_meta_index (
            tag BLOB NOT NULL,
            session_pk INTEGER NOT NULL REFERENCES sessions (pk) ON DELETE CASCADE,
            PRIMARY KEY (tag, session_pk)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX session_meta_index_session ON session_meta_index (session_pk)",
    ]
    for sql in statements:
        conn.execute(sql)


def _m002_scale_indexes(conn: sqlite3.Connection) -> None:
    # `export` and `archive --dry-run` walk sessions oldest first: with this index that
    # is an index scan instead of sorting every session row in memory.
    conn.execute("CREATE INDEX sessions_created ON sessions (created_at, pk)")
    # `stats` percentiles over the whole database read two positions of this index
    # instead of sorting every reply's latency. Partial: user messages have none.
    conn.execute("CREATE INDEX messages_latency ON messages (latency_ms) WHERE latency_ms IS NOT NULL")
    # `stats --since/--before` count only messages in a time window (often the last days).
    conn.execute("CREATE INDEX messages_created ON messages (created_at)")


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("initial", _m001_initial),
    ("scale indexes", _m002_scale_indexes),
]
LATEST = len(MIGRATIONS)

_RECORD_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT"""


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(version: int, path: object) -> None:
    if version > LATEST:
        raise StorageError(
            f"{path} has schema version {version}, newer than this sessctl understands "
            f"({LATEST}); upgrade sessctl to open it"
        )


def check_not_foreign(conn: sqlite3.Connection, path: object) -> None:
    """Refuse an SQLite file that holds someone else's tables (version 0, not empty)."""
    foreign = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    if foreign:
        raise StorageError(
            f"{path} is an SQLite database but not a sessctl one "
            f"(it has tables {', '.join(sorted(foreign)[:3])}); use another --db"
        )


def migrate(conn: sqlite3.Connection, path: object) -> int:
    """Apply pending steps; returns how many ran. The caller holds no transaction."""
    applied = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = current_version(conn)
            check_version(version, path)
            if version >= LATEST:
                conn.execute("COMMIT")
                return applied
            if version == 0:
                check_not_foreign(conn, path)
            name, step = MIGRATIONS[version]
            conn.execute(_RECORD_TABLE)
            step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version + 1, name, int(time.time())),
            )
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
            applied += 1
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
