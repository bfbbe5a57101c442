"""`send`: history → provider → stored turn, for one session or many at once.

A turn (the user's message and the reply) is written in ONE transaction after the
call, so no process death can leave half a turn. When the call fails, or is
interrupted, the turn is still written: the user's message marked `unanswered` and
any partial reply marked `incomplete`. The user's text is therefore never lost, and
the context sent on later turns holds only complete (`ok`) messages, so the history
an endpoint sees always alternates user/assistant.

Several sessions are called concurrently on one event loop with one shared HTTP
client; a semaphore bounds concurrency; one failure does not stop the others.

Ctrl-C. While the calls run, SIGINT is handled by the event loop itself
(loop.add_signal_handler), not by asyncio.run's default handler: that one raises
KeyboardInterrupt at an arbitrary bytecode on a second Ctrl-C, which can land inside
the store's transaction or the first-use key-file write. Handled in the loop, a
signal only ever cancels the calls (at an await); saving each turn is synchronous
code the signal cannot split. Every session still in flight (or waiting its turn)
then gets its turn stored as above, with an `Interrupted` error (exit 130). SIGTERM
(`timeout 60 sessctl send ...` in cron, a service manager stopping a job) is handled
the same way and exits 143, where by default it would lose the user's message.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessctl.errors import Interrupted, NotFoundError, SessctlError, Terminated, UsageError
from sessctl.models import Message, NewSession, Session, check_session_id
from sessctl.providers.base import (
    SECRET_PLACEHOLDER,
    ChatMessage,
    ChatReply,
    ChatRequest,
    Provider,
    estimate_tokens,
    make_provider,
    scrub,
)
from sessctl.service import App, new_session_spec
from sessctl.text import clean as clean_text
from sessctl.text import clean_json
from sessctl.text import plain as plain_text
from sessctl.store import NewMessage


RunDb = Callable[[Callable[[], Any]], Awaitable[Any]]

# The redaction rule under which a provider's own secret, found in a message, is counted.
SECRET_RULE = "provider_secret"


@dataclass
class SendOptions:
    text: str
    provider: str | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    create: bool = True
    unarchive: bool = False
    concurrency: int = 8
    # For a session this send creates: its owner, its `[templates.NAME]`, and a
    # system prompt (chat's /system before the first message). Ignored for one that exists.
    user: str | None = None
    template: str | None = None
    system: str | None = None
    # `retry`: no new message; ask again for the session's last user message (_retry_turn).
    retry: bool = False


@dataclass
class TurnResult:
    session_id: str
    reply: Message | None = None
    redactions: dict[str, int] = field(default_factory=dict)
    error: SessctlError | None = None
    created: bool = False
    notice: str | None = None  # e.g. that the fallback provider was used for a new session
    # A failed or interrupted call whose turn was still stored: the user's message as
    # `unanswered`, and this many characters of partial reply as `incomplete`.
    kept: bool = False
    partial_chars: int = 0
    # A retry: the question asked again was already stored (seq), as ok (a whole turn
    # whose answer the new reply replaced, `superseded`) or unanswered (now answered).
    retried_seq: int | None = None
    superseded_seq: int | None = None


@dataclass
class _Plan:
    session_id: str
    session: Session | None
    create: NewSession | None
    provider: Provider
    request: ChatRequest
    started_at: int
    # The user's words as given; the store sanitizes them on the way in. The request
    # may hold a redacted copy (outbound sanitizing), which is not what we keep.
    text: str
    notice: str | None = None
    partial: list[str] = field(default_factory=list)
    result: TurnResult | None = None
    retry: Any = None  # store.workflow.LastTurn: the turn a retry asks again


def build_context(
    history: Sequence[Message],
    system: str | None,
    new_text: str,
    *,
    max_messages: int | None,
    max_tokens: int | None,
) -> list[ChatMessage]:
    """The messages to send: complete history trimmed oldest-turn-first to the limits,
    then the new user message. The system prompt (sent separately) always stays and
    counts toward the token limit; the new message always stays, even alone over it."""
    msgs = [ChatMessage(m.role, m.content) for m in history if m.status == "ok"]
    # A history always starts with a user message; drop anything before the first.
    while msgs and msgs[0].role != "user":
        msgs.pop(0)
    sizes = [estimate_tokens(m.content) + 4 for m in msgs]
    total = estimate_tokens(system or "") + sum(sizes) + estimate_tokens(new_text) + 4
    start = 0

    def over() -> bool:
        kept = len(msgs) - start
        return (max_messages is not None and kept + 1 > max_messages) or (
            max_tokens is not None and total > max_tokens
        )

    while start < len(msgs) and over():
        # Drop a whole turn (user + its reply) so the rest still starts with a user message.
        step = 2 if start + 1 < len(msgs) and msgs[start + 1].role == "assistant" else 1
        total -= sum(sizes[start:start + step])
        start += step
    return msgs[start:] + [ChatMessage("user", new_text)]


def _plan(app: App, session_id: str, opts: SendOptions, *, calling: bool) -> _Plan:
    check_session_id(session_id)
    store = app.store(create=True)
    if calling:
        store.cipher(create=True)  # before the snapshot: a first key (or first sealing) is a write
    # The header and the history from one snapshot, so the integrity check sees them as
    # one writer left them, whatever other processes append meanwhile.
    with store.reading():
        session = store.find_session(session_id)
        history_all = store.messages(session) if session else []
        turn = _retry_turn(store, session) if opts.retry and session is not None else None
    spec, notice = None, None
    if opts.template is not None:
        app.config.template(opts.template)  # an unknown name is an error even for an existing session
    if session is None and opts.retry:
        raise NotFoundError(f"session {session_id!r} not found (see `sessctl list --status all`)")
    if session is None:
        if not opts.create:
            raise NotFoundError(f"session {session_id!r} not found (--no-create was given)")
        spec, notice = new_session_spec(app, session_id, provider=opts.provider, model=opts.model,
                                        user=opts.user, template=opts.template, system=opts.system)
    elif session.status == "archived" and not opts.unarchive:
        raise UsageError(
            f"session {session_id!r} is archived; unarchive it first "
            f"(sessctl archive --unarchive {session_id}) or pass --unarchive"
        )
    provider_name = opts.provider or (session.provider if session else spec.provider if spec else None)
    assert provider_name is not None
    pcfg = app.config.provider(provider_name)
    # The session's model belongs to the session's provider: a turn sent to another
    # provider uses that provider's model unless --model names one.
    own_model = session.model if session and session.provider == provider_name else None
    if spec is not None:
        own_model = spec.model
    model = plain_text(opts.model) or own_model or pcfg.model
    if not model:
        raise UsageError(f"no model for provider {provider_name!r}: set model in its config or pass --model")
    user_text = opts.text
    # All of them were read (and checked against the session's chain); send the complete ones.
    history = [m for m in history_all if m.status == "ok"]
    if opts.retry:
        assert session is not None and turn is not None
        # The question as stored (sanitized), with only the history before it.
        user_text = turn.user.content
        history = [m for m in history if m.seq < turn.user.seq]
    sanitizer = app.sanitizer()
    # What the provider gets is valid Unicode (text.py); the store counts the replaced
    # characters when it stores the raw text.
    text = clean_text(user_text)[0]
    text = sanitizer.sanitize(text)[0] if sanitizer.outbound else text
    # A session this send creates starts from its spec (a template's system prompt,
    # options and limits apply from the first turn).
    own: Any = session if session is not None else spec
    system = own.system if own is not None else None
    messages = build_context(
        history,
        system,
        text,
        max_messages=(own.max_context_messages if own is not None else None) or pcfg.max_context_messages,
        max_tokens=(own.max_context_tokens if own is not None else None) or pcfg.max_context_tokens,
    )
    options = clean_json({**(own.options if own is not None else {}), **opts.options})
    assert isinstance(options, dict)
    request = ChatRequest(model=model, messages=messages, system=system, options=options, stream=opts.stream)
    provider = make_provider(pcfg, app.env)
    if calling:
        # A missing API key is the user's to fix, not a failed call: refuse before
        # anything is stored, as for an unknown provider or an archived session.
        provider.preflight()
    return _Plan(session_id, session, spec, provider, request, app.now(), user_text, notice, retry=turn)


def _retry_turn(store: Any, session: Session) -> Any:
    """The turn `retry` asks again: the session's last user message, whether it is
    unanswered (a failed or interrupted send) or whole (a new reply is wanted)."""
    from sessctl.store import workflow

    turn = workflow.last_turn(store, session)
    if turn is None:
        raise UsageError(f"session {session.id!r} has no message to retry; send one first")
    if turn.user.status not in ("ok", "unanswered"):
        raise UsageError(f"session {session.id!r}: message {turn.user.seq} is {turn.user.status}, "
                         "not a question to ask again (run `sessctl doctor`)")
    return turn


def plan_all(app: App, session_ids: Sequence[str], opts: SendOptions, *,
             calling: bool = True) -> list[_Plan | TurnResult]:
    """A plan per session, or the TurnResult of a session that failed before any call."""
    if not opts.retry and not opts.text.strip():
        raise UsageError("the message is empty")
    if opts.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    out: list[_Plan | TurnResult] = []
    for sid in dict.fromkeys(session_ids):
        try:
            out.append(_plan(app, sid, opts, calling=calling))
        except SessctlError as exc:
            if len(session_ids) == 1:
                raise
            out.append(TurnResult(sid, error=exc))
    return out


def dry_run(app: App, session_ids: Sequence[str], opts: SendOptions) -> list[dict[str, Any]]:
    """The exact request bodies that would be sent; nothing is called or stored, and no
    API key is needed (so the output can be shared: it never holds one)."""
    results = []
    for item in plan_all(app, session_ids, opts, calling=False):
        if isinstance(item, TurnResult):
            assert item.error is not None
            raise item.error
        results.append({"session": item.session_id, "provider": item.provider.name,
                        "url": item.provider.endpoint(), "body": item.provider.build_body(item.request)})
    return results


def _store_turn(app: App, plan: _Plan, reply: ChatReply | None, error: SessctlError | None) -> TurnResult:
    store = app.store(create=True)
    secrets = plan.provider.secrets()

    def message(content: str, **fields: Any) -> NewMessage:
        # The provider's own secrets, matched exactly: a key pasted into a message or
        # echoed in a reply is never stored, whatever its format (the sanitizer's
        # rules know the common ones; an Azure or proxy key can look like anything).
        content, n = scrub(content, secrets, f"[REDACTED:{SECRET_RULE}]")
        return NewMessage(content=content, redactions={SECRET_RULE: n} if n else {}, **fields)

    turn = plan.retry
    # A retry stores no new question: only the new reply (or what arrived of it).
    msgs = [] if turn is not None else [message(plan.text, role="user", created_at=plan.started_at,
                                                status="ok" if reply is not None else "unanswered")]
    partial = "".join(plan.partial)
    if reply is not None:
        msgs.append(message(
            reply.text, role="assistant", provider=plan.provider.name, model=reply.model,
            tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, tokens_estimated=reply.tokens_estimated,
            latency_ms=reply.latency_ms, first_token_ms=reply.first_token_ms,
        ))
    elif partial:
        cut = message(partial, role="assistant", status="incomplete", provider=plan.provider.name,
                      model=plan.request.model)
        # Streamed pieces were scrubbed on their way to the screen: the keys they held
        # are already markers, counted here as the whole reply's would have been.
        already = partial.count(SECRET_PLACEHOLDER)
        if already:
            cut.redactions = {**cut.redactions, SECRET_RULE: cut.redactions.get(SECRET_RULE, 0) + already}
        msgs.append(cut)
    now = app.now()
    changed: list[str] = []  # what happened to the session while the call ran, if anything
    superseded = turn.answer.seq if turn is not None and reply is not None and turn.answer else None

    def tx(conn: Any) -> tuple[Session, list[Message]]:
        changed.clear()
        from sessctl.models import SessionFilter

        create = plan.create
        if plan.session is not None:
            current = store.find_session(plan.session_id, decrypt=False)
            if current is None or current.pk != plan.session.pk:
                if turn is not None:  # a retry's question went with the session
                    from sessctl.store.workflow import Conflict

                    raise Conflict(f"session {plan.session_id!r} was deleted")
                # Deleted (and perhaps made again) while the reply was on its way: the
                # turn is kept in the session of that id, made anew from the header the
                # send began with if need be, rather than thrown away.
                if current is None:
                    create = _respawn(plan.session)
                changed.append("deleted")
            elif current.status == "archived" and plan.session.status != "archived":
                # Archived meanwhile: the turn goes in and the session stays archived, as
                # whoever archived it asked; said on stderr, never silently.
                changed.append("archived")
            elif plan.session.status == "archived":
                # `send --unarchive`: unarchiving and the turn commit together.
                store.set_status(SessionFilter(ids=(plan.session_id,)), "active", now)
        if turn is not None:
            _restatus_retried(store, plan, turn, answered=reply is not None)
        if not msgs:
            return store.get_session(plan.session_id), []
        return store.append_messages(plan.session_id, msgs, now, create=create)  # type: ignore[no-any-return]

    if turn is not None and reply is None and not msgs:
        # A retry that failed before any text arrived changes nothing.
        return TurnResult(plan.session_id, error=error, kept=False, retried_seq=turn.user.seq)
    from sessctl.store.workflow import Conflict

    try:
        session, stored = store.write(tx)
    except Conflict:
        if reply is None:  # a failed retry whose partial reply has nowhere to go
            return TurnResult(plan.session_id, error=error, retried_seq=turn.user.seq)
        raise Conflict(f"session {plan.session_id!r} changed while the retry ran (another send or retry wrote "
                       f"to it); the new reply was not stored: run `sessctl retry {plan.session_id}` again") from None
    if changed == ["deleted"]:
        app.notice(f"session {plan.session_id!r} was deleted while the reply was on its way; "
                   f"the turn is kept in session {plan.session_id!r}, made again (without the earlier history)")
    elif changed == ["archived"]:
        app.notice(f"session {plan.session_id!r} was archived while the reply was on its way; the turn is "
                   f"stored in it and it stays archived (sessctl unarchive {plan.session_id})")
    redactions: dict[str, int] = {}
    for m in stored:
        for k, v in m.redactions.items():
            redactions[k] = redactions.get(k, 0) + v
    return TurnResult(
        plan.session_id,
        reply=stored[-1] if reply is not None else None,
        redactions=redactions,
        error=error,
        created=plan.create is not None,
        notice=plan.notice if plan.create is not None else None,
        kept=reply is None and (turn is None or bool(partial)),
        partial_chars=len(partial) if reply is None else 0,
        retried_seq=turn.user.seq if turn is not None else None,
        superseded_seq=superseded,
    )


def _respawn(old: Session) -> NewSession:
    """A session to hold a turn whose session was deleted mid-call: the same header."""
    return NewSession(id=old.id, user=old.user, provider=old.provider, model=old.model, title=old.title,
                      system=old.system, metadata=dict(old.metadata), options=dict(old.options),
                      max_context_messages=old.max_context_messages, max_context_tokens=old.max_context_tokens,
                      expires_at=old.expires_at)


def _restatus_retried(store: Any, plan: _Plan, turn: Any, *, answered: bool) -> None:
    """Inside the retry's transaction: the session must be as the plan read it (no
    message added since), then a new answer supersedes the old one, or answers the
    question that had none."""
    from sessctl.store import workflow

    session = store.get_session(plan.session_id, lock=True, decrypt=False)
    if session.message_count != turn.message_count:
        raise workflow.Conflict(f"session {plan.session_id!r} has new messages")
    if not answered:
        return
    changes = []
    if turn.answer is not None:
        changes.append((turn.answer.seq, "ok", "superseded"))
    if turn.user.status == "unanswered":
        changes.append((turn.user.seq, "unanswered", "ok"))
    workflow.set_message_statuses(store, session.pk, changes)


def _interrupted(plan: _Plan, signum: int = signal.SIGINT) -> Interrupted:
    if signum == signal.SIGTERM:
        return Terminated("terminated (SIGTERM)" + ("" if plan.partial else " before any reply arrived"))
    return Interrupted("interrupted" if plan.partial else "interrupted before any reply arrived")


async def _turn(app: App, plan: _Plan, get_http: Callable[[], Any], semaphore: asyncio.Semaphore,
                on_text: Callable[[str], None] | None, save_db: RunDb, stopped_by: list[int]) -> None:
    """One session's turn: call the provider, then store the turn, whatever happened.

    Cancellation (Ctrl-C in the CLI, a task cancelled or a deadline in a program) while
    the call runs stores the user's message `unanswered` and any partial reply
    `incomplete`, synchronously, so a second cancellation cannot split it; a turn whose
    reply had fully arrived is stored whole even if cancellation comes while storing
    (`_save` records it on the plan inside the storage step)."""

    def collect(piece: str) -> None:
        plan.partial.append(piece)
        if on_text is not None:
            on_text(piece)

    try:
        async with semaphore:
            http = get_http() if plan.provider.needs_http else None
            reply = await plan.provider.chat(plan.request, http, collect)
    except SessctlError as exc:
        error = exc  # the except clause unbinds `exc`; the storage step runs after it
        await save_db(lambda: _save(app, plan, None, error))
        return
    except asyncio.CancelledError:
        _save(app, plan, None, _interrupted(plan, *stopped_by[:1]))
        raise
    await save_db(lambda: _save(app, plan, reply, None))


def _save(app: App, plan: _Plan, reply: ChatReply | None, error: SessctlError | None) -> None:
    plan.result = _store_turn(app, plan, reply, error)


async def send_turns(app: App, session_ids: Sequence[str], opts: SendOptions, *, get_http: Callable[[], Any],
                     semaphore: asyncio.Semaphore, run_db: RunDb, save_db: RunDb | None = None,
                     on_text: Callable[[str], None] | None = None,
                     stopped_by: list[int] | None = None) -> list[TurnResult]:
    """Send opts.text to each session concurrently (at most `semaphore` calls at once,
    over the shared HTTP client `get_http()` makes on first need); results in the
    order the sessions were given.

    `run_db(fn)` runs a storage step off the event loop (the async client's database
    thread); `save_db(fn)` (default: run_db) the step that stores a finished turn, which
    the async client commits together with other turns finishing at the same moment. `on_text` receives reply text as it streams (a single session only). When
    this coroutine is cancelled, every session still in flight (or waiting its turn)
    gets its turn stored as interrupted; then, if a signal caused it (`stopped_by`
    names it), the results are returned, each cut-short session carrying an
    Interrupted error; otherwise CancelledError propagates, as asyncio expects."""
    stopped = stopped_by if stopped_by is not None else []
    items = await run_db(lambda: _mark_active(app, plan_all(app, session_ids, opts), opts))
    plans = [p for p in items if isinstance(p, _Plan)]
    stream_cb = on_text if (opts.stream and len(plans) == 1) else None
    saver = save_db or run_db
    tasks = [asyncio.ensure_future(_turn(app, p, get_http, semaphore, stream_cb, saver, stopped)) for p in plans]
    try:
        # return_exceptions: a cancelled call is a stored, reported result, not a crash.
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _store_unstarted(app, plans, stopped)
        if not stopped:
            raise
        return [item if isinstance(item, TurnResult) else item.result for item in items]  # type: ignore[misc]
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    _store_unstarted(app, plans, stopped)
    return [item if isinstance(item, TurnResult) else item.result for item in items]  # type: ignore[misc]


def _store_unstarted(app: App, plans: list[_Plan], stopped_by: list[int]) -> None:
    for plan in plans:
        if plan.result is None:  # cancelled before its first step: nothing was sent
            _save(app, plan, None, _interrupted(plan, *stopped_by[:1]))


def _mark_active(app: App, items: list[_Plan | TurnResult], opts: SendOptions) -> list[_Plan | TurnResult]:
    """Mark the existing sessions active before any provider call (one transaction).
    `cleanup` re-checks idleness under its write lock, so from here on it leaves these
    sessions alone while the call runs. One deleted since planning is planned again,
    which creates it anew as send does for any missing session (or fails: --no-create)."""
    from sessctl.store import bulk

    existing = [p.session_id for p in items if isinstance(p, _Plan) and p.session is not None]
    if not existing:
        return items
    gone = set(bulk.touch(app.store(create=True), existing, app.now()))
    out: list[_Plan | TurnResult] = []
    for item in items:
        if isinstance(item, _Plan) and item.session_id in gone:
            try:
                item = _plan(app, item.session_id, opts, calling=True)
            except SessctlError as exc:
                if len(items) == 1:
                    raise
                item = TurnResult(item.session_id, error=exc)
        out.append(item)
    return out


def send(
    app: App,
    session_ids: Sequence[str],
    opts: SendOptions,
    *,
    on_text: Callable[[str], None] | None = None,
) -> list[TurnResult]:
    """`sessctl send`: the async client's sends, run to completion in this process,
    with SIGINT and SIGTERM turned into a clean stop (see the module docstring).

    After a Ctrl-C, the sessions whose calls were cut short carry an `Interrupted`
    error (exit 130); those that had finished carry their replies."""
    return asyncio.run(_send_handling_signals(app, session_ids, opts, on_text))


async def _send_handling_signals(app: App, session_ids: Sequence[str], opts: SendOptions,
                                 on_text: Callable[[str], None] | None) -> list[TurnResult]:
    from sessctl.api import AsyncClient

    loop = asyncio.get_running_loop()
    stopped_by: list[int] = []  # the first signal received, if any
    main = asyncio.current_task()
    assert main is not None

    def on_signal(signum: int) -> None:
        # Only the first signal stops the work; a second Ctrl-C while turns are being
        # stored must not cut that short.
        if not stopped_by:
            main.cancel()
        stopped_by.append(signum)

    # First thing, so no Ctrl-C falls between the calls starting and the handler.
    # Where the loop cannot take signals (Windows, a non-main thread) asyncio.run's own
    # handler stays: it cancels this task, which cancels the calls; each still stores
    # its turn, and KeyboardInterrupt comes out of asyncio.run.
    handled: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        async with AsyncClient(app, concurrency=opts.concurrency, owns_app=False) as client:
            return await client.send_turns(session_ids, opts, on_text=on_text, stopped_by=stopped_by)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def exit_code(results: Sequence[TurnResult]) -> int:
    """The exit status of a send: 0 when every session got its reply; 130 when Ctrl-C
    (143 when SIGTERM) cut any call short; otherwise the code of the first failed
    session in the order the sessions were given (so it does not depend on which call
    finished first)."""
    codes = [int(r.error.exit_code) for r in results if r.error is not None]
    stopped = [int(r.error.exit_code) for r in results if isinstance(r.error, Interrupted)]
    return (stopped or codes or [0])[0]


def kept_note(r: TurnResult, multi: bool = False) -> str:
    """For an error message: where the user's text went when the call failed (saved,
    never lost), or, for a retry, that nothing changed."""
    if r.retried_seq is not None:
        # A retry stores no new message: say what stayed as it was.
        note = f"; message {r.retried_seq} stays as it was"
        if r.partial_chars:
            note += ", and the partial reply is kept, marked incomplete"
        return note
    if not r.kept:
        return ""
    where = "" if multi else f" in session {r.session_id!r}"
    note = f"; your message is saved{where}, marked unanswered"
    if r.partial_chars:
        note += ", and the partial reply, marked incomplete"
    return note
