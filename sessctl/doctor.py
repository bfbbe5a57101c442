"""`sessctl doctor`: is this database sound, private, readable with the configured key,
and consistent with what sessctl writes? Read-only: it never migrates, repairs or
creates anything.

Checks that only one engine can make come from the engine (SQLite: the file's own
integrity check, foreign keys, journal mode, file modes); the rest is the same SQL on
SQLite and PostgreSQL.

Each check ends `ok`, `warn` (worth knowing, not wrong), `fail` or `skip` (could not
run because an earlier check failed). A failing check carries the exit code of its
kind (SPEC.md exit codes):
  6  key or decryption: no key, wrong key, the key file readable by others, a value
     that does not decrypt, a metadata index that does not match the data key;
  7  storage: SQLite integrity, foreign keys, schema, sequence gaps, half-written turns,
     counters, orphan rows, database files readable by others.
The command exits 7 if any storage check failed (the file itself needs attention, and
decryption failures may only be a symptom), else 6 if a key check failed, else 0.

All queries run in one read transaction, so a doctor running beside busy writers sees
one consistent snapshot and reports no false mismatches.
"""

from __future__ import annotations

import json
import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessctl import crypto
from sessctl.errors import ExitStatus, SessctlError, StorageError

KEY = int(ExitStatus.KEY)
STORAGE = int(ExitStatus.STORAGE)
MAX_PROBLEMS = 50  # problems listed per check (all are counted)

Progress = Callable[[int, int], None]


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    code: int = 0  # exit code when status is fail
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    database: str  # a path, or a URL with its password masked
    quick: bool
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str, code: int = 0, problems: list[str] | None = None) -> Check:
        c = Check(name, status, detail, code if status == "fail" else 0, list(problems or [])[:MAX_PROBLEMS])
        self.checks.append(c)
        return c

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        codes = {c.code for c in self.failed}
        return STORAGE if STORAGE in codes else KEY if KEY in codes else 0


# --- files ---------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_permissions(report: Report, db_files: list[Path], key_file: Path | None) -> None:
    """Files must be private (no group/other bits). Directories only warn: a database
    under a shared directory may be deliberate, but others able to write there could
    swap files."""
    problems: list[tuple[str, int]] = []
    notes: list[str] = []
    seen: list[str] = []
    files = [(f, STORAGE) for f in db_files]
    if key_file is not None:
        files.append((key_file, KEY))
    for path, code in files:
        if not path.exists():
            continue
        m = _mode(path)
        seen.append(f"{path.name} {m:04o}")
        if m & 0o077:
            problems.append((f"{path} is mode {m:04o}: others can read it; run `chmod 600 {path}`", code))
        if path.stat().st_uid != os.getuid():
            notes.append(f"{path} belongs to uid {path.stat().st_uid}, not to you")
    dirs = {f.parent for f in db_files[:1]} | ({key_file.parent} if key_file is not None else set())
    for d in sorted(dirs):
        if not d.exists():
            continue
        m = _mode(d)
        if m & 0o022 and not m & stat.S_ISVTX:
            notes.append(f"directory {d} is mode {m:04o}: others can replace files in it; run `chmod 700 {d}`")
    if problems:
        code = STORAGE if any(c == STORAGE for _, c in problems) else KEY
        report.add("permissions", "fail", "files readable by others", code, [p for p, _ in problems] + notes)
    elif notes:
        report.add("permissions", "warn", "; ".join(notes), problems=notes)
    elif seen:
        report.add("permissions", "ok", ", ".join(seen))


# --- the run -----------------------------------------------------------------------


def run(app: Any, *, quick: bool = False, sample: int = 1000, progress: Callable[[int], Progress | None] | None = None,
        seed: int | None = None) -> Report:
    from sessctl.store import Store, health

    cfg = app.config
    report = Report(cfg.database.display, quick)
    try:
        engine, stop = _open(cfg)
    except StorageError as exc:
        report.add("database", "fail", exc.message, STORAGE)
        return report
    if engine is None:
        assert stop is not None
        report.add("database", *stop)
        return report
    store = Store(engine, cfg, sanitizer=None)
    errors = engine.driver_errors
    try:
        conn = engine.conn
        engine._begin_read(conn)
        _run_checks(report, store, health, quick=quick, sample=sample, progress=progress,
                    rng=random.Random(seed))
    except errors as exc:
        # Damage bad enough that a query could not even run.
        report.add("storage", "fail", f"database error: {engine.describe_error(exc)}", STORAGE)
    finally:
        engine.close()
    return report


def _open(cfg: Any) -> tuple[Any, tuple[str, str, int] | None]:
    if cfg.database.kind == "postgresql":
        from sessctl.store.postgres import PostgresEngine

        return PostgresEngine.for_doctor(cfg)
    from sessctl.store.sqlite import SQLiteEngine

    return SQLiteEngine.for_doctor(cfg)


def _guard(report: Report, store: Any, name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except store.db.driver_errors as exc:
        report.add(name, "fail", f"database error: {store.db.describe_error(exc)}", STORAGE)


def _run_checks(report: Report, store: Any, health: Any, *, quick: bool, sample: int,
                progress: Callable[[int], Progress | None] | None, rng: random.Random) -> None:
    conn = store.conn
    engine = store.db
    tables = engine.table_names(conn)
    n = health.counts(conn) if {"sessions", "messages", "message_bodies"} <= tables else None
    report.add("database", "ok", f"{store.location}" + (
        f": {n['sessions']} sessions, {n['messages']} messages" if n else ""))

    ring = None
    try:
        ring = store.keyring() if n is not None else None
    except engine.driver_errors:
        pass
    check_permissions(report, engine.private_files(),
                      store.config.key_file if ring is not None and ring["kek_kind"] == "file" else None)

    checked = engine.integrity(conn, quick=quick)
    if checked is not None:
        sound, damaged, problems = checked
        if problems:
            report.add("integrity", "fail", damaged, STORAGE, problems)
        else:
            report.add("integrity", "ok", sound)

    latest = engine.latest_version
    version, recorded, notes = engine.schema_record(conn)
    if version > latest:
        report.add("schema", "fail", f"version {version} is newer than this sessctl ({latest}); upgrade sessctl",
                   STORAGE)
        return
    if n is None:
        report.add("schema", "fail", "no sessctl tables: this is not a sessctl database", STORAGE)
        return
    if recorded != list(range(1, version + 1)):
        report.add("schema", "fail", f"version {version}, but the migration record is {recorded or 'missing'}", STORAGE)
        return
    if version < latest:
        notes = [f"version {version} of {latest}: the next sessctl command that writes migrates it", *notes]
    report.add("schema", "warn" if notes else "ok", "; ".join(notes) or f"version {version}, {engine.setup_note}")

    # --quick: the per-session checks run on one random sample of sessions.
    pks = health.sample_ids(conn, "sessions", "pk", sample, rng) if quick else None
    cipher = _check_key(report, store, ring, n["values"])
    if cipher is not None:
        _guard(report, store, "decrypt", lambda: _check_values(
            report, store, health, cipher, quick=quick, sample=sample, progress=progress, rng=rng,
            total=n["values"], pks=pks))
    elif n["values"]:
        report.add("decrypt", "skip", "no usable key")

    scope = "" if pks is None else f" (a sample of {len(pks)} sessions)"
    _guard(report, store, "sequences", lambda: _check_sessions(report, health, conn, pks, scope))
    _guard(report, store, "turns", lambda: _check_turns(report, health, conn, n["unanswered"], pks, scope))
    _guard(report, store, "orphans", lambda: _check_orphans(report, health, conn, quick))


def _check_key(report: Report, store: Any, ring: dict[str, Any] | None, values: int) -> crypto.Cipher | None:
    if ring is None:
        if values:
            report.add("key", "fail", "encrypted values but no key table: this database cannot be read", KEY)
        else:
            report.add("key", "ok", "no key yet (the first write creates it)")
        return None
    try:
        cipher = store.cipher()
    except SessctlError as exc:
        report.add("key", "fail", exc.message, KEY)
        return None
    source = str(store.config.key_file) if ring["kek_kind"] == "file" else "SESSCTL_PASSPHRASE"
    report.add("key", "ok", f"{ring['kek_kind']} key ({source}, fingerprint {ring['kek_fingerprint']}) "
                            "opens the data key; key check ok")
    return cipher  # type: ignore[no-any-return]


def _where(table: str, field_: str, sid: str, row: int) -> str:
    return f"{table}.{field_} of session {sid!r}" + (f" message {row}" if table == "messages" else "")


def _check_values(report: Report, store: Any, health: Any, cipher: crypto.Cipher, *, quick: bool, sample: int,
                  progress: Callable[[int], Progress | None] | None, rng: random.Random, total: int,
                  pks: list[int] | None) -> None:
    conn = store.conn
    bad: list[str] = []
    bad_count = 0
    index_bad: list[str] = []
    index_count = 0
    checked = 0

    def try_open(blob: bytes, table: str, field_: str, sid: str, spk: int, row: int) -> str | None:
        nonlocal bad_count
        try:
            return cipher.open(blob, crypto.aad(table, field_, sid, spk, row))
        except crypto.Tampered:
            bad_count += 1
            if len(bad) < MAX_PROBLEMS:
                bad.append(f"{_where(table, field_, sid, row)} does not decrypt (altered or moved)")
            return None

    def sessions(rows: list[Any], tags: dict[int, set[bytes]]) -> None:
        nonlocal checked, index_count
        for pk, sid, title, system, metadata in rows:
            for name, blob in (("title", title), ("system", system)):
                if blob is not None:
                    try_open(blob, "sessions", name, sid, pk, pk)
                    checked += 1
            want: set[bytes] = set()
            if metadata is not None:
                checked += 1
                plain = try_open(metadata, "sessions", "metadata", sid, pk, pk)
                if plain is None:
                    continue  # already reported; its index cannot be judged
                want = {cipher.index_tag(k, v) for k, v in json.loads(plain).items()}
            if tags.get(pk, set()) != want:
                index_count += 1
                if len(index_bad) < MAX_PROBLEMS:
                    index_bad.append(f"session {sid!r}: the --meta index does not match its metadata")

    def bodies(rows: list[Any]) -> None:
        nonlocal checked
        for _bid, blob, seq, sid, spk in rows:
            try_open(blob, "messages", "content", sid, spk, seq)
            checked += 1

    if quick:
        s_rows, s_tags = health.sessions_by_pk(conn, pks or [])
        sessions(s_rows, s_tags)
        bodies(health.bodies_by_id(conn, health.sample_ids(conn, "message_bodies", "id", sample, rng)))
        scope = f"a sample of {checked} of {total} values"
    else:
        cb = progress(total) if progress else None
        for s_rows, s_tags in health.session_batches(conn):
            sessions(s_rows, s_tags)
            if cb:
                cb(checked, total)
        for b_rows in health.body_batches(conn):
            bodies(b_rows)
            if cb:
                cb(checked, total)
        stray = health.stray_index_tags(conn)
        if stray:
            index_count += stray
            index_bad.append(f"{stray} index entries belong to no session")
        scope = f"all {checked} values"
    if bad_count:
        report.add("decrypt", "fail", f"{bad_count} of {scope} do not decrypt", KEY, bad)
    else:
        report.add("decrypt", "ok", f"{scope} decrypt")
    if index_count:
        report.add("metadata index", "fail", f"{index_count} sessions' --meta index is wrong", KEY, index_bad)
    else:
        report.add("metadata index", "ok", "matches the metadata" + (" (sampled sessions)" if quick else ""))


def _check_sessions(report: Report, health: Any, conn: Any, pks: list[int] | None,
                    scope: str) -> None:
    seq_problems: list[str] = []
    counter_problems: list[str] = []
    seq_n = counter_n = 0
    for t in health.inconsistent_sessions(conn, pks):
        if t.n != t.message_count or (t.n and (t.min_seq != 1 or t.max_seq != t.n)):
            seq_n += 1
            if len(seq_problems) < MAX_PROBLEMS:
                have = f"seq {t.min_seq}..{t.max_seq}" if t.n else "none"
                seq_problems.append(f"session {t.session_id!r}: {t.n} messages ({have}), counter says {t.message_count}")
        if (t.sum_in, t.sum_out) != (t.tokens_in, t.tokens_out) or t.sum_redactions > t.redactions:
            counter_n += 1
            if len(counter_problems) < MAX_PROBLEMS:
                counter_problems.append(
                    f"session {t.session_id!r}: tokens {t.tokens_in}/{t.tokens_out} (messages say "
                    f"{t.sum_in}/{t.sum_out}), redactions {t.redactions} (messages alone {t.sum_redactions})"
                )
    if seq_n:
        report.add("sequences", "fail", f"{seq_n} sessions are not numbered 1..N or disagree with their count",
                   STORAGE, seq_problems)
    else:
        report.add("sequences", "ok", f"every session numbered 1..N without gaps, matching its count{scope}")
    if counter_n:
        report.add("counters", "fail", f"{counter_n} sessions' token or redaction totals disagree with their messages",
                   STORAGE, counter_problems)
    else:
        report.add("counters", "ok", f"session totals match their messages{scope}")


def _check_turns(report: Report, health: Any, conn: Any, unanswered: int, pks: list[int] | None,
                 scope: str) -> None:
    problems = []
    count = 0
    for sid, seq, role, status in health.half_turns(conn, pks):
        count += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(f"session {sid!r} message {seq}: {role} ({status}) is not part of a whole turn")
    note = f"; {unanswered} unanswered messages kept as such" if unanswered else ""
    if count:
        report.add("turns", "fail", f"{count} messages outside a whole turn{note}", STORAGE, problems)
    else:
        report.add("turns", "ok", f"no half-written turns{scope}{note}")


def _check_orphans(report: Report, health: Any, conn: Any, quick: bool) -> None:
    found = {k: v for k, v in health.orphans(conn, quick=quick).items() if v}
    if found:
        report.add("orphans", "fail", ", ".join(f"{v} {k}" for k, v in found.items()), STORAGE)
    elif quick:
        report.add("orphans", "ok", "as many bodies as messages")
    else:
        report.add("orphans", "ok", "every message has its body and every body its message")
