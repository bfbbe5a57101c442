"""Parallel JSON export: forked workers render batches of sessions, the parent keeps order.

One process renders about 55,000 messages a second here; fetching rows, decrypting
and escaping JSON are all CPU and none of it releases the GIL, so threads cannot help.
For a large database `export --format json|jsonl` forks workers instead:

1. The parent unlocks the data key, then closes its database connection: no SQLite
   connection may cross a fork (the child would share its locks' bookkeeping).
2. It forks the workers; they inherit the unlocked key (a passphrase is not run
   through Argon2id again) and open their own connections.
3. The parent reopens the database, and in one read transaction streams the session
   pks in export order, in batches, round-robin to the workers. Each worker starts
   its own read transaction when its first batch arrives (on PostgreSQL it joins the
   parent's snapshot, sent first; on SQLite its snapshot is no older than the
   parent's), renders each batch's sessions, and sends them back as one frame.
4. The parent reads the frames strictly in batch order and yields the sessions. At
   most two batches per worker are in flight, so memory stays flat and nothing can
   deadlock (pks are a few KB per batch; a worker blocks on its result pipe until
   the parent reads it).

Consistency: on PostgreSQL the whole export is one snapshot: the parent shares its
REPEATABLE READ snapshot (pg_export_snapshot) and each worker joins it (SET
TRANSACTION SNAPSHOT) before its first batch, while the parent's transaction, and so
the snapshot, lasts until the end. SQLite has no such thing: every session is read
whole inside one snapshot, but different workers' snapshots may differ by the commits
of the first milliseconds of the export, and a session deleted in between is left out. Errors come back as frames carrying the exit
code (a tampered value is exit 6 exactly as without workers). Workers always leave
with os._exit, so nothing buffered in the parent is written twice.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sessctl import errors
from sessctl.models import SessionFilter

# Sessions per batch. Each process's peak memory grows with it (a batch's rows, texts
# and frame are alive at once): 256 put a PostgreSQL export of 1M messages at 153 MB
# RSS over its three processes (psycopg and libpq add ~8 MB to each), 128 at 135 MB
# (SQLite: 131 → 112), at no measurable cost in speed.
BATCH = 128
MIN_DB_BYTES = 64 << 20  # smaller databases export in well under a second anyway
_HEADER = struct.Struct("!cQ")


def worker_count(app: Any) -> int:
    """How many workers an export of this database gets (1 means no workers): two for a
    database of 64 MiB or more (PostgreSQL: the store's tables and indexes) on a
    machine with two or more CPUs, else none.
    SESSCTL_EXPORT_WORKERS overrides the choice (0 or 1 turns workers off)."""
    override = app.env.get("SESSCTL_EXPORT_WORKERS")
    if override is not None:
        try:
            n = int(override)
        except ValueError:
            raise errors.UsageError(f"SESSCTL_EXPORT_WORKERS must be a number, not {override!r}") from None
        return max(1, n) if hasattr(os, "fork") else 1
    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return 1
    store = app.store(create=False)
    size = None if store is None else store.db.data_bytes()  # the file; on PostgreSQL, the schema's tables
    # Two workers: what a 2-core machine can use, and it keeps the export's memory (all
    # processes together) within 150 MB. More cores: SESSCTL_EXPORT_WORKERS=N.
    return 2 if size is not None and size >= MIN_DB_BYTES else 1


# --- frames ---------------------------------------------------------------------------


def _write_frame(fd: int, kind: bytes, payload: bytes) -> None:
    data = _HEADER.pack(kind, len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _read_frame(fd: int) -> tuple[bytes, bytes] | None:
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    kind, size = _HEADER.unpack(header)
    payload = _read_exact(fd, size) if size else b""
    if payload is None:
        return None
    return kind, payload


# --- the worker -------------------------------------------------------------------------


def _worker(config: Any, keyholder: Any, commands: int, results: int) -> None:
    """Runs in the forked child; never returns."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: just stop; the parent reports it
        from sessctl import render
        from sessctl.store import Store
        from sessctl.store.export import rows_for

        store = Store.open(config, None, create=False)
        if store is None:
            raise errors.StorageError(f"{config.database} disappeared during the export")
        store.adopt_key(keyholder)
        # Each batch is read once: a small page cache keeps the workers' memory down
        # (three processes' peak RSS summed stays under 150 MB) at no cost in speed.
        if store.db.name == "sqlite":
            store.conn.execute("PRAGMA cache_size = -4000")
        fast = render._FastMessages()
        frame = _read_frame(commands)
        snapshot = None
        if frame is not None and frame[0] == b"S":  # PostgreSQL: the parent's snapshot, to join
            snapshot = frame[1].decode()
            frame = _read_frame(commands)
        if frame is not None:
            # One snapshot: the parent's own (PostgreSQL), or one begun after the parent's.
            with store.reading(snapshot):
                while frame is not None:
                    pks = array("q")
                    pks.frombytes(frame[1])
                    texts = [render.export_session_json(s, rows, fast) for s, rows in rows_for(store, pks.tolist())]
                    _write_frame(results, b"D", struct.pack("!I", len(texts)) + "\n".join(texts).encode())
                    frame = _read_frame(commands)
        store.close()
    except errors.SessctlError as exc:
        _try_write(results, b"E", json.dumps([type(exc).__name__, exc.message, int(exc.exit_code)]).encode())
    except BrokenPipeError:
        pass  # the parent has gone
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, which owns the exit code
        _try_write(results, b"X", f"{type(exc).__name__}: {exc}".encode())
    os._exit(0)


def _try_write(fd: int, kind: bytes, payload: bytes) -> None:
    try:
        _write_frame(fd, kind, payload)
    except OSError:
        pass


def _error_from(kind: bytes, payload: bytes) -> BaseException:
    if kind == b"E":
        name, message, code = json.loads(payload)
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, errors.SessctlError) and cls is not errors.ProviderError:
            return cls(message)
        err = errors.SessctlError(message)
        err.exit_code = code
        return err
    return RuntimeError(f"export worker failed: {payload.decode(errors='replace')}")


# --- the parent ---------------------------------------------------------------------------


@dataclass
class _Child:
    pid: int
    commands: int  # parent writes batches here
    results: int  # parent reads frames here


def json_blocks(app: Any, f: SessionFilter, workers: int) -> Iterator[tuple[bytes, int]]:
    """(block, n): the UTF-8 JSON texts of n matching sessions joined by newlines, in
    export order, rendered by workers. Bytes, passed through untouched: decoding and
    re-encoding 1 GB in the parent would take a core's worth of time from the workers."""
    store = app.store(create=False)
    if store is None:
        return
    store.cipher()  # unlock here, once; the workers inherit the key
    keyholder = store
    app.close()  # closes the connection (the key stays in keyholder)
    children: list[_Child] = []
    try:
        for _ in range(workers):
            commands_r, commands_w = os.pipe()
            results_r, results_w = os.pipe()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            pid = os.fork()
            if pid == 0:  # the worker
                for c in children:
                    os.close(c.commands)
                    os.close(c.results)
                os.close(commands_w)
                os.close(results_r)
                _worker(app.config, keyholder, commands_r, results_w)
            os.close(commands_r)
            os.close(results_w)
            children.append(_Child(pid, commands_w, results_r))

        store = app.store(create=False)
        if store is None:
            return
        with store.reading():
            from sessctl.store.export import export_pk_batches

            snapshot = store.db.share_snapshot(store.conn)
            if snapshot is not None:  # every worker reads exactly what the parent reads
                for c in children:
                    try:
                        _write_frame(c.commands, b"S", snapshot.encode())
                    except BrokenPipeError:
                        raise RuntimeError(f"export worker {c.pid} died unexpectedly") from None
            pks = export_pk_batches(store, f, BATCH)
            in_flight: deque[_Child] = deque()
            sent = 0
            exhausted = False

            def dispatch() -> None:
                nonlocal sent, exhausted
                chunk = next(pks, None)
                if not chunk:
                    exhausted = True
                    for c in children:  # end of input: each worker finishes and exits
                        if c.commands >= 0:
                            os.close(c.commands)
                            c.commands = -1
                    return
                child = children[sent % workers]
                try:
                    _write_frame(child.commands, b"B", array("q", chunk).tobytes())
                except BrokenPipeError:
                    raise RuntimeError(f"export worker {child.pid} died unexpectedly") from None
                in_flight.append(child)
                sent += 1

            while not exhausted and len(in_flight) < 2 * workers:
                dispatch()
            while in_flight:
                child = in_flight.popleft()
                frame = _read_frame(child.results)
                if frame is None:
                    raise RuntimeError(f"export worker {child.pid} died unexpectedly")
                kind, payload = frame
                if kind != b"D":
                    raise _error_from(kind, payload)
                if not exhausted:
                    dispatch()
                (n,) = struct.unpack_from("!I", payload)
                if n:
                    yield payload[4:], n
    finally:
        for c in children:
            for fd in (c.commands, c.results):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            try:
                os.kill(c.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for c in children:
            try:
                os.waitpid(c.pid, 0)
            except ChildProcessError:
                pass
