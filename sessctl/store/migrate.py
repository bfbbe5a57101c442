"""The migration runner both engines share; each engine's schema module supplies its
steps and the few things that differ (how a migration transaction begins and takes its
lock, where the version lives, what a foreign database looks like).

Each step runs in one transaction together with its record in `schema_migrations`;
the version is re-read after the lock is taken, so two processes starting at once on
an old (or new) database migrate it once. A database newer than this program is
refused (exit 7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sessctl.errors import StorageError

Step = tuple[str, Callable[[Any], None]]


@dataclass(frozen=True)
class Schema:
    steps: Sequence[Step]
    record_table: str  # CREATE TABLE IF NOT EXISTS schema_migrations ...
    begin: Callable[[Any], None]  # start a write transaction holding the migration lock
    version: Callable[[Any], int]  # steps applied (0: none)
    check_not_foreign: Callable[[Any, object], None]  # refuse someone else's tables
    in_transaction: Callable[[Any], bool]
    after_step: Callable[[Any, int], None] = lambda conn, version: None  # e.g. SQLite's user_version

    @property
    def latest(self) -> int:
        return len(self.steps)


def check_version(version: int, latest: int, where: object) -> None:
    if version > latest:
        raise StorageError(
            f"{where} has schema version {version}, newer than this sessctl understands "
            f"({latest}); upgrade sessctl to open it"
        )


def run(conn: Any, schema: Schema, where: object) -> int:
    """Apply pending steps, one transaction each; returns how many ran. The caller
    holds no transaction."""
    applied = 0
    while True:
        schema.begin(conn)
        try:
            # Re-read under the lock: another process may have migrated meanwhile.
            version = schema.version(conn)
            check_version(version, schema.latest, where)
            if version >= schema.latest:
                conn.execute("COMMIT")
                return applied
            if version == 0:
                schema.check_not_foreign(conn, where)
            name, step = schema.steps[version]
            conn.execute(schema.record_table)
            step(conn)
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                         (version + 1, name, int(time.time())))
            schema.after_step(conn, version + 1)
            conn.execute("COMMIT")
            applied += 1
        except BaseException:
            if schema.in_transaction(conn):
                conn.execute("ROLLBACK")
            raise
