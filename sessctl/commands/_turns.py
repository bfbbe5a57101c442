"""Running sends from a command and printing what came back: shared by `send` and
`retry` (which is a send that asks the last question again)."""

from __future__ import annotations

from typing import Any

import click


def run(ctx: click.Context, app: Any, sessions: tuple[str, ...] | list[str], opts: Any, fmt: str) -> None:
    """Send (with Ctrl-C and SIGTERM handled), print each reply or error, and exit
    with the code of the first failure in the order given."""
    from sessctl import conversation, render
    from sessctl.conversation import kept_note

    streamed: list[str] = []

    def on_text(piece: str) -> None:
        if fmt == "text" and piece:
            streamed.append(piece[-1])
            app.stdout.write(piece)
            app.stdout.flush()

    def end_stream() -> None:
        if streamed and streamed[-1] != "\n":
            app.stdout.write("\n")

    results = conversation.send(app, sessions, opts, on_text=on_text)
    multi = len(results) > 1
    for i, r in enumerate(results):
        if r.created:
            app.notice(f"created session {r.session_id!r}" + (f" ({r.notice})" if r.notice else ""))
        if r.superseded_seq is not None and r.reply is not None:
            app.notice(f"message {r.superseded_seq}, the earlier reply, is kept marked superseded")
        if fmt == "json":
            d = render.send_dict(r.session_id, r.reply, r.redactions, str(r.error) if r.error else None,
                                 exit_code=int(r.error.exit_code) if r.error else None)
            if opts.retry:
                d["retried"] = r.retried_seq
                d["superseded"] = r.superseded_seq
            app.stdout.write(render.dumps(d) + "\n")
        elif r.reply is not None:
            if multi:
                app.stdout.write(("\n" if i else "") + f"==> {r.session_id} <==\n")
            if streamed and not multi:
                end_stream()
            else:
                app.stdout.write(r.reply.content + ("" if r.reply.content.endswith("\n") else "\n"))
        if r.error is not None:
            if not multi:
                end_stream()
            prefix = f"session {r.session_id!r}: " if multi else ""
            app.stderr.write(f"sessctl: error: {prefix}{r.error}{kept_note(r, multi)}\n")
    app.stdout.flush()
    ctx.exit(conversation.exit_code(results))
