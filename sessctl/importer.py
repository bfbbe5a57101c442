"""`import`: sessions from `export` output (a JSON array or JSONL) back into the store.

The input is streamed one session at a time (JSONL line by line, a JSON array element
by element), validated, and written inside ONE transaction: any invalid element, or a
conflict under `--on-conflict fail`, rolls everything back, so an import is all or
nothing. Text goes through the store's single sanitize+encrypt path; sanitizing is
idempotent, so an export imported into an empty database exports byte for byte the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

from sessctl import timeutil
from sessctl.errors import AlreadyExistsError, StorageError, UsageError
from sessctl.import_reader import Invalid, Reader
from sessctl.models import MESSAGE_STATUSES, SESSION_ID, STATUSES, Message, Session
from sessctl.service import App, new_session_spec

ON_CONFLICT = ("fail", "skip", "replace")

SESSION_FIELDS = {
    "id", "user", "title", "provider", "model", "status", "created_at", "updated_at", "archived_at",
    "expires_at", "system", "metadata", "options", "context", "stats", "messages", "forked_from",
}
USER_MESSAGE_FIELDS = {"seq", "role", "content", "created_at", "redactions", "status"}
REPLY_MESSAGE_FIELDS = USER_MESSAGE_FIELDS | {
    "model", "tokens_in", "tokens_out", "latency_ms", "provider", "tokens_estimated", "first_token_ms",
}
MAX_INT = 2**53  # counts and tokens: exact in every JSON reader (jq's doubles), far below int64


# --- validating -----------------------------------------------------------------------


class _Check:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> Invalid:
        return Invalid(f"{self.where}: {path}: {problem}; nothing was imported")

    def string(self, obj: dict[str, Any], key: str, path: str, *, nullable: bool = True) -> str | None:
        value = obj.get(key)
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string{' or null' if nullable else ''}, got {_kind(value)}")
        return value

    def count(self, obj: dict[str, Any], key: str, path: str, *, nullable: bool = True, minimum: int = 0) -> int | None:
        value = obj.get(key)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT:
            raise self.fail(path, f"expected a whole number from {minimum} to {MAX_INT}"
                                  f"{' or null' if nullable else ''}, got {_kind(value)}")
        return value

    def time(self, obj: dict[str, Any], key: str, path: str, *, nullable: bool = True) -> int | None:
        value = self.string(obj, key, path, nullable=nullable)
        if value is None:
            return None
        try:
            return timeutil.parse_iso(value)
        except UsageError:
            raise self.fail(path, f"expected an ISO-8601 time such as 2026-11-21T10:00:00Z, got {value!r}") from None

    def choice(self, obj: dict[str, Any], key: str, path: str, choices: tuple[str, ...], default: str) -> str:
        if key not in obj and default not in choices:
            raise self.fail(path, f"missing (one of {', '.join(choices)})")
        value = obj.get(key, default)
        if value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}, got {_kind(value)}")
        return str(value)

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {_kind(value)}")
        return value

    def fields(self, obj: dict[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(set(obj) - allowed)
        if extra:
            raise self.fail(f"{path}{extra[0]}", "unknown field (is this sessctl export output?)")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int) and abs(value) > 10**18:
        return "a very large number"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else "a string"
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else type(value).__name__


def parse_session(app: App | None, element: Any, where: str) -> tuple[Session, list[Message]]:
    """One session object of `export` output → (Session, messages), or Invalid.

    Fields `export` writes are all accepted; only `id` is required. Absent fields get
    what `create` would give (the default provider, now, active); fields present are
    taken literally, so an export round-trips exactly."""
    c = _Check(where)
    if not isinstance(element, dict):
        raise c.fail("element", f"expected a session object, got {_kind(element)}")
    sid = c.string(element, "id", "id", nullable=False)
    assert sid is not None
    if not SESSION_ID.fullmatch(sid):
        raise c.fail("id", f"{sid!r} is not a valid session id (1-128 letters, digits or . _ : @ + -)")
    c = _Check(f"{where} (session {sid!r})")
    c.fields(element, SESSION_FIELDS, "")

    provider = c.string(element, "provider", "provider")
    model = c.string(element, "model", "model")
    if provider is None and app is not None:
        spec, _ = new_session_spec(app, sid, model=model)
        provider = spec.provider
        if "model" not in element:
            model = spec.model

    metadata = c.obj(element.get("metadata", {}), "metadata")
    for key, value in metadata.items():
        if not isinstance(value, str) or not key.strip():
            raise c.fail(f"metadata.{key}", f"expected a string value, got {_kind(value)}")
    options = c.obj(element.get("options", {}), "options")
    context = c.obj(element.get("context", {}), "context")
    c.fields(context, {"max_messages", "max_tokens"}, "context.")

    raw_messages = element.get("messages", [])
    if not isinstance(raw_messages, list):
        raise c.fail("messages", f"expected an array, got {_kind(raw_messages)}")
    created_at = c.time(element, "created_at", "created_at")
    if created_at is None:
        first = raw_messages[0] if raw_messages and isinstance(raw_messages[0], dict) else {}
        created_at = c.time(first, "created_at", "messages[0].created_at")
        if created_at is None:
            created_at = app.now() if app is not None else timeutil.now()
    messages = [_message(c, m, i, created_at) for i, m in enumerate(raw_messages)]
    _check_turns(c, messages, [isinstance(m, dict) and "status" in m for m in raw_messages])
    updated_at = c.time(element, "updated_at", "updated_at")
    if updated_at is None:
        updated_at = max([created_at] + [m.created_at for m in messages])

    tokens_in = sum(m.tokens_in or 0 for m in messages)
    tokens_out = sum(m.tokens_out or 0 for m in messages)
    message_redactions = sum(sum(m.redactions.values()) for m in messages)
    redactions = message_redactions
    if "stats" in element:
        stats = c.obj(element["stats"], "stats")
        c.fields(stats, {"messages", "tokens_in", "tokens_out", "redactions"}, "stats.")
        for key in ("messages", "tokens_in", "tokens_out"):
            c.count(stats, key, f"stats.{key}")  # checked for shape; the totals are recomputed
        if "messages" not in element and stats.get("messages"):
            # `list` output has stats but no messages: importing it would make empty sessions.
            raise c.fail("messages", f"missing, but stats.messages is {stats['messages']} "
                                     "(import takes `export` output, not `list`)")
        # Title, system prompt and metadata redactions count in the session total only,
        # so a given total at least the messages' own is kept (an export round-trips).
        given = c.count(stats, "redactions", "stats.redactions")
        if given is not None and given >= message_redactions:
            redactions = given

    forked_from, forked_at = _origin(c, element.get("forked_from"))
    session = Session(
        pk=0, id=sid, user=c.string(element, "user", "user"), provider=provider, model=model,
        status=c.choice(element, "status", "status", STATUSES, "active"),
        created_at=created_at, updated_at=updated_at,
        archived_at=c.time(element, "archived_at", "archived_at"),
        expires_at=c.time(element, "expires_at", "expires_at"),
        title=c.string(element, "title", "title"), system=c.string(element, "system", "system"),
        metadata=dict(metadata), options=dict(options),
        max_context_messages=c.count(context, "max_messages", "context.max_messages", minimum=1),
        max_context_tokens=c.count(context, "max_tokens", "context.max_tokens", minimum=1),
        message_count=len(messages), tokens_in=tokens_in, tokens_out=tokens_out, redactions=redactions,
        forked_from=forked_from, forked_at=forked_at,
    )
    return session, messages


def _check_turns(c: _Check, messages: list[Message], given: list[bool]) -> None:
    """The history must be whole turns, as `send` and `retry` write them and `doctor`
    checks. A turn is a user message and the replies after it:
      user ok          exactly one ok reply; any others superseded (replaced by retry)
                       or incomplete (a retry cut short)
      user unanswered  no ok or superseded reply; incomplete ones may be there
    No user message is incomplete or superseded, no reply unanswered, and nothing comes
    before the first user message. A status left out (a hand-written document) is
    inferred by these rules: a user message with a reply is ok, without one unanswered;
    a reply to an ok message is ok, to an unanswered one incomplete. A status that is
    given and breaks them is refused, naming the message: a broken history would be
    sent as context, or make `doctor` fail, after the import."""
    if messages and messages[0].role != "user":
        raise c.fail("messages[0]", "the history starts with an assistant message; it must start with a user message")
    turns: list[list[int]] = []
    for i, m in enumerate(messages):
        if m.role == "user":
            turns.append([i])
        else:
            turns[-1].append(i)
    for turn in turns:
        u, replies = turn[0], turn[1:]
        user = messages[u]
        if not given[u]:
            user.status = "ok" if any(not given[r] or messages[r].status == "ok" for r in replies) else "unanswered"
        for r in replies:
            if not given[r]:
                messages[r].status = "ok" if user.status == "ok" else "incomplete"
        path = f"messages[{u}]"
        if user.status not in ("ok", "unanswered"):
            raise c.fail(f"{path}.status", f"{user.status!r}: a user message is ok or unanswered (only a reply "
                                            "can be incomplete or superseded)")
        for r in replies:
            if messages[r].status == "unanswered":
                raise c.fail(f"messages[{r}].status", "'unanswered': a reply cannot be unanswered (only a user "
                                                       "message can)")
        oks = [r for r in replies if messages[r].status == "ok"]
        sups = [r for r in replies if messages[r].status == "superseded"]
        if user.status == "ok" and len(oks) != 1:
            raise c.fail(f"{path}.status", f"'ok': a user message marked ok needs exactly one ok reply in its "
                                            f"turn (it has {len(oks)}; else it is unanswered)")
        if user.status == "unanswered" and (oks or sups):
            raise c.fail(f"{path}.status", "'unanswered': an unanswered user message cannot have an ok or "
                                            "superseded reply")


def _origin(c: _Check, value: Any) -> tuple[str | None, int | None]:
    """`forked_from`: null, or {"id": the origin session, "seq": the last message copied}."""
    if value is None:
        return None, None
    origin = c.obj(value, "forked_from")
    c.fields(origin, {"id", "seq"}, "forked_from.")
    oid = c.string(origin, "id", "forked_from.id", nullable=False)
    if not SESSION_ID.fullmatch(oid or ""):
        raise c.fail("forked_from.id", f"{oid!r} is not a valid session id")
    return oid, c.count(origin, "seq", "forked_from.seq", nullable=False)


def parse_message(raw: Any, *, seq: int | None = None) -> Message:
    """One message object of `export` output → Message, or Invalid (exit 2). Without
    `seq` the object's own (or 1) is taken as its place."""
    c = _Check("message")
    given = raw.get("seq") if isinstance(raw, dict) else None
    i = (seq if seq is not None else given if isinstance(given, int) and not isinstance(given, bool) and given >= 1
         else 1) - 1
    return _message(c, raw, i, timeutil.now())


def _message(c: _Check, raw: Any, i: int, default_time: int) -> Message:
    path = f"messages[{i}]"
    m = c.obj(raw, path)
    role = c.choice(m, "role", f"{path}.role", ("user", "assistant"), "")
    c.fields(m, REPLY_MESSAGE_FIELDS if role == "assistant" else USER_MESSAGE_FIELDS, f"{path}.")
    # `seq` may be left out (a hand-written or jq-edited document): position is order.
    # `seq` is checked for shape but messages are numbered by their order, so a history
    # cut or edited with jq (`.messages |= .[:4]`) imports as written.
    c.count(m, "seq", f"{path}.seq", minimum=1)
    content = c.string(m, "content", f"{path}.content", nullable=False)
    red = c.obj(m.get("redactions", {}), f"{path}.redactions")
    for rule, n in red.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise c.fail(f"{path}.redactions.{rule}", f"expected a whole number >= 0, got {_kind(n)}")
    estimated = m.get("tokens_estimated", False)
    if not isinstance(estimated, bool):
        raise c.fail(f"{path}.tokens_estimated", f"expected true or false, got {_kind(estimated)}")
    created_at = c.time(m, "created_at", f"{path}.created_at")
    return Message(
        seq=i + 1, role=role, content=content or "",
        created_at=default_time if created_at is None else created_at,
        status=c.choice(m, "status", f"{path}.status", MESSAGE_STATUSES, "ok"),
        provider=c.string(m, "provider", f"{path}.provider"), model=c.string(m, "model", f"{path}.model"),
        tokens_in=c.count(m, "tokens_in", f"{path}.tokens_in"),
        tokens_out=c.count(m, "tokens_out", f"{path}.tokens_out"),
        tokens_estimated=estimated,
        latency_ms=c.count(m, "latency_ms", f"{path}.latency_ms"),
        first_token_ms=c.count(m, "first_token_ms", f"{path}.first_token_ms"),
        redactions=dict(red),
    )


# --- importing ------------------------------------------------------------------------


@dataclass
class ImportResult:
    imported: list[str] = field(default_factory=list)  # new or replaced, in input order
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    messages: int = 0
    dry_run: bool = False


class _DryRun(Exception):
    """Raised at the end of a dry run so the transaction rolls back."""


def import_sessions(app: App, stream: IO[bytes], source: str, *, on_conflict: str = "fail",
                    dry_run: bool = False, size: int | None = None) -> ImportResult:
    """Import every session in the stream in one transaction, or none of them.
    `size` (bytes, when known) sizes the progress bar."""
    from sessctl.ops import PROGRESS_MIN_BYTES, progress
    from sessctl.store import bulk

    if on_conflict not in ON_CONFLICT:
        raise UsageError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}")
    reader = Reader(stream, source)
    result = ImportResult(dry_run=dry_run)
    store = app.store(create=not dry_run)
    if store is not None:
        store.cipher(create=not dry_run)  # outside the transaction: it may write the key table
    started = False

    def load(conn: Any) -> None:
        nonlocal started
        if started:
            # The input is a stream: a retried transaction cannot read it again.
            raise StorageError(f"database {app.config.database} was busy during the import; nothing was imported, try again")
        started = True
        seen: dict[str, str] = {}
        with progress(app, size or 0, "importing", minimum=PROGRESS_MIN_BYTES) as step:
            done = 0
            for where, element in reader:
                session, messages = parse_session(app, element, where)
                if session.id in seen:
                    raise Invalid(f"{where}: session {session.id!r} appears twice in the input (first at "
                                  f"{seen[session.id]}); nothing was imported")
                seen[session.id] = where
                pk = bulk.find_pk(conn, session.id) if conn is not None else None
                if pk is not None:
                    if on_conflict == "fail":
                        raise AlreadyExistsError(
                            f"{where}: session {session.id!r} already exists; nothing was imported "
                            "(use --on-conflict skip or --on-conflict replace)")
                    if on_conflict == "skip":
                        result.skipped.append(session.id)
                        continue
                    bulk.delete_pk(conn, pk)
                    result.replaced.append(session.id)
                if conn is not None:
                    bulk.insert_full(store, conn, session, messages)
                result.imported.append(session.id)
                result.messages += len(messages)
                step(reader.bytes_read - done)
                done = reader.bytes_read
        if dry_run:
            raise _DryRun

    try:
        if store is None:
            load(None)
        else:
            store.write(load)
    except _DryRun:
        pass
    return result
