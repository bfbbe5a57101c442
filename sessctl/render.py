"""Output: tables, JSON, JSONL, CSV, text and markdown. Pure; writes to a given stream.

JSON shapes are the contract in SPEC.md (Output). Fields beyond the SPEC's are added,
never renamed or removed: sessions carry `options` and `context` (so an export can be
imported back exactly), messages carry `status` and, for replies, `provider`,
`tokens_estimated` and `first_token_ms`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

from sessctl.models import Message, Session, Stats
from sessctl.timeutil import iso

CSV_FIELDS = (
    "id", "user", "title", "provider", "model", "status", "created_at", "updated_at",
    "archived_at", "expires_at", "messages", "tokens_in", "tokens_out", "redactions",
)


def dumps(obj: Any, *, pretty: bool = False) -> str:
    if pretty:
        return json.dumps(obj, ensure_ascii=False, indent=2)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_json(out: TextIO, obj: Any) -> None:
    out.write(dumps(obj, pretty=True) + "\n")


# --- objects ------------------------------------------------------------------------


def message_dict(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"seq": m.seq, "role": m.role, "content": m.content, "created_at": iso(m.created_at)}
    if m.role == "assistant":
        d.update(model=m.model, tokens_in=m.tokens_in, tokens_out=m.tokens_out, latency_ms=m.latency_ms)
    d["redactions"] = dict(m.redactions)
    d["status"] = m.status
    if m.role == "assistant":
        d.update(provider=m.provider, tokens_estimated=m.tokens_estimated, first_token_ms=m.first_token_ms)
    return d


def session_dict(s: Session, messages: Iterable[Message] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": s.id,
        "user": s.user,
        "title": s.title,
        "provider": s.provider,
        "model": s.model,
        "status": s.status,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
        "archived_at": iso(s.archived_at),
        "expires_at": iso(s.expires_at),
        "system": s.system,
        "metadata": dict(s.metadata),
        "options": dict(s.options),
        "context": {"max_messages": s.max_context_messages, "max_tokens": s.max_context_tokens},
        "stats": {
            "messages": s.message_count,
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
            "redactions": s.redactions,
        },
    }
    if s.forked_from is not None:
        # Only on forks: every other session object (and so an older export read back
        # and written again) stays byte for byte what it was.
        d["forked_from"] = origin_dict(s)
    if messages is not None:
        d["messages"] = [message_dict(m) for m in messages]
    return d


def origin_dict(s: Session) -> dict[str, Any] | None:
    """A fork's origin as export writes it (null for a session that is not a fork)."""
    return None if s.forked_from is None else {"id": s.forked_from, "seq": s.forked_at}


def stats_dict(st: Stats) -> dict[str, Any]:
    return {
        "sessions": {"total": st.sessions_total, "active": st.sessions_active, "archived": st.sessions_archived},
        "users": st.users,
        "messages": st.messages,
        "tokens": {"in": st.tokens_in, "out": st.tokens_out},
        "latency_ms": {"avg": st.latency_avg, "p50": st.latency_p50, "p95": st.latency_p95},
        "redactions": st.redactions,
        "redactions_by_rule": dict(sorted(st.redaction_rules.items())),
        # Counted in "messages" too; never sent as context again.
        "messages_not_ok": {k: st.statuses.get(k, 0) for k in ("unanswered", "incomplete", "superseded")},
    }


# --- tables -------------------------------------------------------------------------


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    from tabulate import tabulate  # only commands that print a table pay for it

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, missingval="-")


def write_table(out: TextIO, rows: list[list[Any]], headers: list[str]) -> None:
    """A plain table (the same style as `list`) for commands with their own rows."""
    out.write(_table(rows, headers) + "\n")


def _short(text: str | None, width: int = 40) -> str | None:
    if text is None:
        return None
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def write_sessions(out: TextIO, sessions: Iterable[Session], fmt: str, *, show_status: bool) -> int:
    """`list` output; returns how many sessions were written."""
    n = 0
    if fmt == "ids":
        for s in sessions:
            out.write(s.id + "\n")
            n += 1
    elif fmt == "jsonl":
        for s in sessions:
            out.write(dumps(session_dict(s)) + "\n")
            n += 1
    elif fmt == "json":
        items = [session_dict(s) for s in sessions]
        write_json(out, items)
        n = len(items)
    elif fmt == "csv":
        import csv

        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for s in sessions:
            d = session_dict(s)
            writer.writerow(
                [d[k] for k in CSV_FIELDS[:10]]
                + [s.message_count, s.tokens_in, s.tokens_out, s.redactions]
            )
            n += 1
    else:
        headers = ["ID", "USER", "PROVIDER", "MODEL", "MSGS", "LAST ACTIVITY", "TITLE"]
        if show_status:
            headers.insert(4, "STATUS")
        rows = []
        for s in sessions:
            row = [s.id, s.user, s.provider, s.model, str(s.message_count), iso(s.updated_at), _short(s.title)]
            if show_status:
                row.insert(4, s.status)
            rows.append(row)
        n = len(rows)
        if rows:
            out.write(_table(rows, headers) + "\n")
    return n


def write_search_hits(out: TextIO, hits: list[Any], fmt: str) -> None:
    """`search` output (SearchHit objects, best first). `ids`: each session once, in the
    order of its best hit."""
    if fmt == "ids":
        for sid in dict.fromkeys(h.session for h in hits):
            out.write(sid + "\n")
    elif fmt == "jsonl":
        for h in hits:
            out.write(dumps(h.to_dict()) + "\n")
    elif fmt == "json":
        write_json(out, [h.to_dict() for h in hits])
    else:
        rows = [[h.session, h.seq, h.role, iso(h.created_at), h.snippet] for h in hits]
        out.write(_table(rows, ["SESSION", "SEQ", "ROLE", "TIME", "SNIPPET"]) + "\n")


def stats_document(groups: list[tuple[Any, Stats]], by: str | None) -> dict[str, Any]:
    """What `stats --format json` prints (and `Client.stats` returns)."""
    if by is None:
        return stats_dict(groups[0][1])
    return {"by": by, "groups": [{"key": k, **stats_dict(st)} for k, st in groups]}


def write_stats(out: TextIO, groups: list[tuple[Any, Stats]], fmt: str, by: str | None) -> None:
    if fmt == "json":
        write_json(out, stats_document(groups, by))
        return

    def lat(v: float | int | None) -> str:
        return "-" if v is None else f"{v:g} ms"

    if by is None:
        st = groups[0][1]
        rows = [
            ["sessions", f"{st.sessions_total} ({st.sessions_active} active, {st.sessions_archived} archived)"],
            ["users", str(st.users)],
            ["messages", str(st.messages)],
            *[[f"  {k}", str(st.statuses[k])] for k in ("unanswered", "incomplete", "superseded")
              if st.statuses.get(k)],
            ["tokens in", str(st.tokens_in)],
            ["tokens out", str(st.tokens_out)],
            ["latency avg", lat(st.latency_avg)],
            ["latency p50", lat(st.latency_p50)],
            ["latency p95", lat(st.latency_p95)],
            ["redactions", str(st.redactions)],
        ]
        rows += [[f"  {rule}", str(n)] for rule, n in sorted(st.redaction_rules.items())]
        out.write(_table(rows, ["METRIC", "VALUE"]) + "\n")
        return
    headers = [by.upper(), "SESSIONS", "ACTIVE", "ARCHIVED", "USERS", "MESSAGES", "TOKENS IN", "TOKENS OUT",
               "LAT AVG", "LAT P50", "LAT P95", "REDACTIONS"]
    rows = [
        [k, st.sessions_total, st.sessions_active, st.sessions_archived, st.users, st.messages, st.tokens_in,
         st.tokens_out, lat(st.latency_avg), lat(st.latency_p50), lat(st.latency_p95), st.redactions]
        for k, st in groups
    ]
    rows = [[("-" if v is None else str(v)) for v in r] for r in rows]
    if rows:
        out.write(_table(rows, headers) + "\n")


# --- transcripts --------------------------------------------------------------------

_ROLE_COLOR = {"user": "\x1b[1;34m", "assistant": "\x1b[1;32m"}


def _reply_facts(m: Message) -> list[str]:
    facts = []
    if m.model:
        facts.append(m.model)
    if m.tokens_in is not None or m.tokens_out is not None:
        est = "~" if m.tokens_estimated else ""
        facts.append(f"{est}{m.tokens_in or 0}→{est}{m.tokens_out or 0} tokens")
    if m.latency_ms is not None:
        facts.append(f"{m.latency_ms} ms")
    return facts


def write_transcript_text(out: TextIO, s: Session, messages: list[Message], *, color: bool = False) -> None:
    def field(label: str, value: Any) -> None:
        if value not in (None, "", {}):
            out.write(f"{label + ':':<10}{value}\n")

    field("Session", s.id)
    field("Title", s.title)
    field("User", s.user)
    field("Provider", f"{s.provider or '-'} ({s.model or 'default model'})")
    field("Status", s.status + (f" since {iso(s.archived_at)}" if s.archived_at else ""))
    field("Created", iso(s.created_at))
    field("Updated", iso(s.updated_at))
    field("Expires", iso(s.expires_at))
    if s.forked_from is not None:
        field("Forked", f"from {s.forked_from} at #{s.forked_at}")
    field("Metadata", ", ".join(f"{k}={v}" for k, v in sorted(s.metadata.items())))
    field("Messages", f"{s.message_count} · tokens {s.tokens_in} in / {s.tokens_out} out · redactions {s.redactions}")
    if s.system is not None:
        out.write("System:\n")
        for line in s.system.splitlines() or [""]:
            out.write(f"  {line}\n")
    for m in messages:
        facts = [iso(m.created_at) or ""]
        if m.role == "assistant":
            facts = _reply_facts(m) + facts
        if m.status != "ok":
            facts.append(m.status.upper())
        if m.redactions:
            facts.append("redacted " + ", ".join(f"{k}×{v}" for k, v in sorted(m.redactions.items())))
        role = f"{_ROLE_COLOR.get(m.role, '')}{m.role}\x1b[0m" if color else m.role
        out.write(f"\n--- #{m.seq} {role} · {' · '.join(facts)}\n")
        out.write(m.content + ("" if m.content.endswith("\n") else "\n"))


def write_transcript_markdown(out: TextIO, s: Session, messages: list[Message]) -> None:
    out.write(f"# {s.title or s.id}\n\n")
    rows = [
        ("id", s.id), ("user", s.user), ("provider", s.provider), ("model", s.model), ("status", s.status),
        ("created", iso(s.created_at)), ("updated", iso(s.updated_at)), ("expires", iso(s.expires_at)),
        ("forked from", None if s.forked_from is None else f"{s.forked_from} #{s.forked_at}"),
    ]
    rows += [(f"meta.{k}", v) for k, v in sorted(s.metadata.items())]
    for label, value in rows:
        if value is not None:
            out.write(f"- **{label}:** {value}\n")
    if s.system is not None:
        out.write("\n**System prompt**\n\n")
        out.write("".join(f"> {line}\n" if line else ">\n" for line in s.system.splitlines()))
    for m in messages:
        facts = [iso(m.created_at) or ""]
        if m.role == "assistant":
            facts = _reply_facts(m) + facts
        if m.status != "ok":
            facts.append(f"*{m.status}*")
        out.write(f"\n## {m.seq}. {m.role} — {' · '.join(facts)}\n\n")
        out.write(m.content + ("" if m.content.endswith("\n") else "\n"))


def write_show(out: TextIO, s: Session, messages: list[Message], fmt: str, *, color: bool = False) -> None:
    if fmt == "json":
        write_json(out, session_dict(s, messages))
    elif fmt == "markdown":
        write_transcript_markdown(out, s, messages)
    else:
        write_transcript_text(out, s, messages, color=color)


def _quote(text: str) -> str:
    """json.dumps(text, ensure_ascii=False), at the speed of the ASCII encoder when the
    text is ASCII: for ASCII both give the same result except for DEL (0x7f), which
    only the ASCII encoder escapes."""
    from json.encoder import encode_basestring, encode_basestring_ascii

    if text.isascii() and "\x7f" not in text:
        return encode_basestring_ascii(text)  # type: ignore[no-any-return]
    return encode_basestring(text)  # type: ignore[no-any-return]


class _FastMessages:
    """Message JSON from store.export rows, identical to dumps(message_dict(m)) but
    with the repeated pieces (model and provider names, the day part of timestamps,
    redaction maps) rendered once and reused. Keep in step with message_dict;
    tests/test_export_stream.py compares the two byte for byte."""

    def __init__(self) -> None:
        from json.encoder import encode_basestring, encode_basestring_ascii

        self._ascii, self._unicode = encode_basestring_ascii, encode_basestring
        self._names: dict[Any, str] = {None: "null"}
        self._days: dict[int, str] = {}
        self._redactions: dict[Any, str] = {None: "{}"}

    def name(self, value: str | None) -> str:
        """A repeated string (model, provider, status, user, system prompt), quoted once.
        The cache is bounded so a million distinct values cannot grow it without end."""
        try:
            return self._names[value]
        except KeyError:
            out = _quote(value)  # type: ignore[arg-type]
            if len(self._names) < 4096:
                self._names[value] = out
            return out

    def iso(self, ts: int) -> str:
        day, rest = divmod(ts, 86400)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = self._days[day] = iso(day * 86400)[:11]  # type: ignore[index]  # "2026-11-21T"
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{prefix}{hours:02d}:{minutes:02d}:{seconds:02d}Z"

    def redactions(self, stored: str | None) -> str:
        try:
            return self._redactions[stored]
        except KeyError:
            self._redactions[stored] = out = dumps(dict(json.loads(stored)))  # type: ignore[arg-type]
            return out

    def text(self, value: str | None, cache: bool = False) -> str:
        if value is None:
            return "null"
        return self.name(value) if cache else _quote(value)

    def time(self, ts: int | None) -> str:
        return "null" if ts is None else f'"{self.iso(ts)}"'

    def metadata(self, meta: dict[str, str]) -> str:
        return dumps(dict(meta)) if meta else "{}"

    def session(self, s: Session) -> str:
        """dumps(session_dict(s)) without the closing brace."""
        num = lambda v: "null" if v is None else str(v)  # noqa: E731
        name, text, time_ = self.name, self.text, self.time
        return (
            f'{{"id":{_quote(s.id)},"user":{name(s.user)},"title":{text(s.title)},"provider":{name(s.provider)},'
            f'"model":{name(s.model)},"status":{name(s.status)},"created_at":{time_(s.created_at)},'
            f'"updated_at":{time_(s.updated_at)},"archived_at":{time_(s.archived_at)},'
            f'"expires_at":{time_(s.expires_at)},"system":{text(s.system, cache=True)},'
            f'"metadata":{self.metadata(s.metadata)},"options":{dumps(dict(s.options)) if s.options else "{}"},'
            f'"context":{{"max_messages":{num(s.max_context_messages)},"max_tokens":{num(s.max_context_tokens)}}},'
            f'"stats":{{"messages":{s.message_count},"tokens_in":{s.tokens_in},"tokens_out":{s.tokens_out},'
            f'"redactions":{s.redactions}}}'
            + ("" if s.forked_from is None else f',"forked_from":{dumps(origin_dict(s))}')
        )

    def render(self, rows: Iterable[tuple[Any, ...]]) -> str:
        ascii_, unicode_, name, iso_, red = self._ascii, self._unicode, self.name, self.iso, self.redactions
        out = []
        for seq, role, content, created, status, provider, model, tin, tout, est, lat, first, reds in rows:
            text = ascii_(content) if content.isascii() and "\x7f" not in content else unicode_(content)
            if role == "user":
                out.append(f'{{"seq":{seq},"role":"user","content":{text},"created_at":"{iso_(created)}",'
                           f'"redactions":{red(reds)},"status":{name(status)}}}')
            else:
                out.append(
                    f'{{"seq":{seq},"role":{name(role)},"content":{text},"created_at":"{iso_(created)}",'
                    f'"model":{name(model)},"tokens_in":{"null" if tin is None else tin},'
                    f'"tokens_out":{"null" if tout is None else tout},"latency_ms":{"null" if lat is None else lat},'
                    f'"redactions":{red(reds)},"status":{name(status)},"provider":{name(provider)},'
                    f'"tokens_estimated":{"true" if est else "false"},'
                    f'"first_token_ms":{"null" if first is None else first}}}'
                )
        return ",".join(out)


def export_session_json(s: Session, rows: Iterable[tuple[Any, ...]], fast: _FastMessages | None = None) -> str:
    """dumps(session_dict(s, messages)) for messages given as store.export rows: the
    same text, without a Message object, a dict and a json.dumps per message."""
    fast = fast or _FastMessages()
    return f'{fast.session(s)},"messages":[{fast.render(rows)}]}}'


class ExportWriter:
    """Streams `export` output one session at a time (memory stays flat)."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out, self.fmt, self.count = out, fmt, 0

    def __enter__(self) -> ExportWriter:
        if self.fmt == "json":
            self.out.write("[")
        return self

    def write(self, s: Session, messages: list[Message]) -> None:
        if self.fmt == "markdown":
            if self.count:
                self.out.write("\n---\n\n")
            write_transcript_markdown(self.out, s, messages)
        else:
            text = dumps(session_dict(s, messages))
            if self.fmt == "json":
                self.out.write(("\n" if self.count == 0 else ",\n") + text)
            else:
                self.out.write(text + "\n")
        self.count += 1

    def write_block(self, block: str | bytes, n: int) -> None:
        """json/jsonl: n session objects already rendered and joined by newlines
        (service.export_json). Bytes go straight to the binary stream underneath when
        there is one. JSON text holds no raw newline, so newlines separate objects."""
        if isinstance(block, bytes):
            nl, sep = b"\n", b",\n"
        else:
            nl, sep = "\n", ",\n"  # type: ignore[assignment]
        if self.fmt == "json":
            data = (nl if self.count == 0 else sep) + block.replace(nl, sep)  # type: ignore[operator, arg-type]
        else:
            data = block + nl  # type: ignore[operator]
        if isinstance(data, bytes):
            binary = getattr(self.out, "buffer", None)
            if binary is None:
                self.out.write(data.decode())
            else:
                self.out.flush()  # keep order with what went through the text layer
                binary.write(data)
        else:
            self.out.write(data)
        self.count += n

    def __exit__(self, *exc: object) -> None:
        if self.fmt == "json" and exc[0] is None:
            self.out.write("\n]\n" if self.count else "]\n")


def send_dict(session_id: str, reply: Message | None, redactions: dict[str, int], error: str | None = None,
              *, exit_code: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "session": session_id,
        "reply": reply.content if reply else None,
        "model": reply.model if reply else None,
        "tokens_in": reply.tokens_in if reply else None,
        "tokens_out": reply.tokens_out if reply else None,
        "latency_ms": reply.latency_ms if reply else None,
        "redactions": dict(sorted(redactions.items())),
    }
    if reply is not None:
        d.update(seq=reply.seq, status=reply.status, provider=reply.provider,
                 tokens_estimated=reply.tokens_estimated, first_token_ms=reply.first_token_ms)
    if error is not None:
        d["error"] = error
        if exit_code is not None:
            d["exit_code"] = exit_code  # this session's own code; the process exits with one
    return d
