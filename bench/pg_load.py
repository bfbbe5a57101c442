#!/usr/bin/env python3
"""Copy a gen.py SQLite store into an empty PostgreSQL database, row for row.

    python bench/pg_load.py /tmp/pgbench/bench1m.db postgresql://postgres@127.0.0.1:5432/bench1m

Why not gen.py --db URL: gen.py writes through the real Store, one round trip per
statement, about a dozen per turn; on PostgreSQL over TCP on this 2-core machine that
is ~1,000 messages/s, an hour for a million. Why not `export | import`: import
re-sanitizes, re-seals and re-indexes every message (~1,000/s here too), and the
ciphertext would differ from the SQLite file's anyway.

This copies what sessctl wrote, unchanged: encryption is on the client and every value's
associated data names its table, field, session id, session pk and seq, never anything
engine-specific, so the same rows with the same pks are a valid PostgreSQL store under
the same key file. sessctl first makes the schema (its own migrations, nothing written),
then the rows go in with COPY in the source's rowid order (messages interleaved across
sessions as they were generated), identity sequences are moved past the copied pks and
the tables ANALYZEd. Check the result with `sessctl --db URL doctor` (decrypts every
value and checks every integrity chain).
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessctl import config  # noqa: E402
from sessctl.service import App  # noqa: E402

# In foreign-key order; schema_migrations is PostgreSQL's own (made by sessctl).
TABLES = ("keyring", "sessions", "messages", "message_bodies", "session_meta_index", "message_search",
          "search_backlog")
IDENTITY = {"sessions": "pk", "messages": "id"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sqlite", help="the SQLite store (made by gen.py)")
    ap.add_argument("url", help="postgresql://... of an empty database (or schema, via options=-csearch_path)")
    args = ap.parse_args()

    import psycopg

    env = {**os.environ, "SESSCTL_DB": args.url}
    app = App(config=config.load(env=env), stdin=io.StringIO(), stdout=io.StringIO(), stderr=sys.stderr)
    store = app.store(create=True)  # migrates: the schema, no key and no rows yet
    if store.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]:
        sys.exit(f"{args.url} already holds sessions; load into an empty database")
    app.close()

    src = sqlite3.connect(f"file:{args.sqlite}?mode=ro", uri=True)
    started = time.monotonic()
    with psycopg.connect(args.url) as pg:  # one transaction
        for table in TABLES:
            cols = [r[0] for r in pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (table,))]
            names = ", ".join(f'"{c}"' for c in cols)
            order = " ORDER BY rowid" if table not in ("session_meta_index", "message_search") else ""
            n = 0
            with pg.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {names} FROM {table}{order}"):
                    copy.write_row(row)
                    n += 1
            print(f"{table}: {n} rows ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        for table, col in IDENTITY.items():
            pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                       f"(SELECT coalesce(max({col}), 0) + 1 FROM {table}), false)")
    with psycopg.connect(args.url, autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")
        size = pg.execute(
            "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()[0]
    print(f"copied in {time.monotonic() - started:.0f} s; {size / 1e6:.1f} MB on the server", file=sys.stderr)


if __name__ == "__main__":
    main()
