"""SQLite schema: ordered steps, each run in one transaction together with its record.

`PRAGMA user_version` holds the number of steps applied (cheap to read on every start);
the `schema_migrations` table records which ran and when. A database whose version is
higher than len(MIGRATIONS) was written by a newer sessctl and is refused (exit 7).

Append new steps at the end; never edit or reorder a released one, and add the same
step to postgres_schema.py: both engines keep the same version numbers for the same
logical schema.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from sessctl.errors import StorageError
from sessctl.store import migrate as migrate_


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


def _m003_integrity(conn: sqlite3.Connection) -> None:
    # Per-session integrity (store/integrity.py): each message's link in a keyed chain
    # over the session's messages, and a keyed digest over the session's header and the
    # chain's end. `settings` holds the provider options and context limits sealed,
    # where `options` kept them in plaintext. All three are filled by the first write
    # that holds the key (no key here), which then marks the database as sealed.
    conn.execute("ALTER TABLE sessions ADD COLUMN settings BLOB")
    conn.execute("ALTER TABLE sessions ADD COLUMN digest BLOB")
    conn.execute("ALTER TABLE messages ADD COLUMN chain BLOB")


def _m005_search_index(conn: sqlite3.Connection) -> None:
    # The blind search index (store/search.py): one row per message, the sorted set of
    # its words' truncated keyed hashes, clustered by (session_pk, seq) so that a
    # message is indexed with one insert and a session's rows go with one range delete.
    # The foreign key to the message removes a row with its message (ON DELETE CASCADE).
    conn.execute("""CREATE TABLE message_search (
        session_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        tags BLOB NOT NULL,
        PRIMARY KEY (session_pk, seq),
        FOREIGN KEY (session_pk, seq) REFERENCES messages (session_pk, seq) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID""")
    # Messages stored before this step cannot be indexed here (a migration has no key):
    # one row records that they are waiting; the first search (or doctor
    # --rebuild-search-index) indexes them and removes it.
    conn.execute("""CREATE TABLE search_backlog (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        messages INTEGER NOT NULL
    ) STRICT""")
    conn.execute("INSERT INTO search_backlog (id, messages) SELECT 1, count(*) FROM messages HAVING count(*) > 0")


# The CHECK on messages.status before and after step 4: retry keeps a replaced reply,
# marked `superseded`.
_STATUS_CHECK_OLD = "CHECK (status IN ('ok', 'incomplete', 'unanswered'))"
_STATUS_CHECK_NEW = "CHECK (status IN ('ok', 'incomplete', 'unanswered', 'superseded'))"


def _m004_workflow(conn: sqlite3.Connection) -> None:
    """retry and fork (issue 12): a `superseded` message status, the origin of a fork,
    and an index of the messages that are not `ok` (for `stats`).

    SQLite cannot alter a CHECK constraint, so `messages` is rebuilt with SQLite's own
    procedure (lang_altertable.html, "other kinds of table schema changes"): the new
    table is made from the stored CREATE statement with only the CHECK changed (so
    columns an earlier step added stay), rows copied with their ids (message_bodies
    and anything else keyed by message id stay valid), the old table dropped, the new
    one renamed, and every index and trigger on it re-created from its stored SQL
    (whatever earlier steps made). `migrate` runs this step with foreign keys off, so
    dropping the old table cannot cascade into message_bodies, and checks them before
    committing. All of it is one transaction: a crash leaves version 4 intact.
    """
    (table_sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'").fetchone()
    if table_sql.count(_STATUS_CHECK_OLD) != 1:
        raise StorageError("cannot migrate: the messages table is not as sessctl made it "
                           "(its status CHECK constraint was changed); restore it from a backup")
    new_sql = table_sql.replace(_STATUS_CHECK_OLD, _STATUS_CHECK_NEW)
    new_sql = re.sub(r"^CREATE TABLE\s+\"?messages\"?", "CREATE TABLE messages_rebuild", new_sql, count=1)
    attached = [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'messages' AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type, name")]
    conn.execute(new_sql)
    conn.execute("INSERT INTO messages_rebuild SELECT * FROM messages")
    conn.execute("DROP TABLE messages")
    # Legacy rename: only the table's own name changes. The modern one re-checks every
    # view and trigger in the schema, and one of another step's that names `messages`
    # would fail to parse in the instant the table is gone.
    conn.execute("PRAGMA legacy_alter_table = ON")
    try:
        conn.execute("ALTER TABLE messages_rebuild RENAME TO messages")
    finally:
        conn.execute("PRAGMA legacy_alter_table = OFF")
    for sql in attached:
        conn.execute(sql)
    # A fork's origin: the session id and the last seq copied. Plaintext like every id;
    # not a foreign key, since the origin may be deleted and the fork keeps its history.
    conn.execute("ALTER TABLE sessions ADD COLUMN forked_from TEXT")
    conn.execute("ALTER TABLE sessions ADD COLUMN forked_at INTEGER")
    # `stats` counts messages by status from this small index (most messages are ok)
    # instead of scanning every message.
    conn.execute("CREATE INDEX messages_not_ok ON messages (status, session_pk) WHERE status <> 'ok'")
    problems = conn.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise StorageError(f"cannot migrate: {len(problems)} rows break foreign keys; run `sessctl doctor`")


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("initial", _m001_initial),
    ("scale indexes", _m002_scale_indexes),
    ("integrity digests and sealed settings", _m003_integrity),
    ("workflow: superseded status, fork origin", _m004_workflow),
    ("search index", _m005_search_index),
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
    migrate_.check_version(version, LATEST, path)


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


SCHEMA = migrate_.Schema(
    steps=MIGRATIONS,
    record_table=_RECORD_TABLE,
    # BEGIN IMMEDIATE is the lock: one writer at a time on the file.
    begin=lambda conn: conn.execute("BEGIN IMMEDIATE"),
    version=current_version,
    check_not_foreign=check_not_foreign,
    in_transaction=lambda conn: conn.in_transaction,
    # user_version: read on every start without touching a table.
    after_step=lambda conn, version: conn.execute(f"PRAGMA user_version = {int(version)}"),
)


def migrate(conn: sqlite3.Connection, path: object) -> int:
    """Apply pending steps; returns how many ran. The caller holds no transaction.

    Foreign keys are off while steps run (step 4 rebuilds `messages`, which must not
    cascade into message_bodies; the pragma is a no-op inside a transaction, hence
    here) and back on afterwards; step 4 checks them itself before committing."""
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        return migrate_.run(conn, SCHEMA, path)
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
