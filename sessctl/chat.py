"""`sessctl chat`: an interactive conversation with one session.

Each message is a `send` turn through the very same path (conversation.send: plan →
provider call → stored turn, SIGINT and SIGTERM handled during the call), so a chat
turn is sanitized, stored and marked exactly as `send` would: Ctrl-C while a reply
streams cancels that call only (the message kept `unanswered`, the partial reply
`incomplete`) and the chat goes on. Slash commands call the library (Client.fork,
.get, .update) and `retry` through the same send path.

On a terminal, input is read with readline (line editing, history in
$XDG_STATE_HOME/sessctl/chat_history, 0600). What goes into that file is sanitized
first, and multi-line blocks never go there: the file is plaintext, unlike the store.
When stdin is not a terminal, each line is a message or a slash command, no prompt is
shown, and the first failed turn ends the chat with its exit code (a script's later
lines usually depend on the earlier answers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessctl.errors import ExitStatus, Interrupted, SessctlError, Terminated, UsageError

BLOCK = '"""'
HELP = f"""Commands:
  /help            this list
  /retry           ask again for a reply to the last message (the old reply is kept, superseded)
  /fork NEW [SEQ]  copy this session (up to message SEQ) into NEW and go on chatting there
  /show [N]        the session and its last N messages (all without N)
  /system [TEXT]   set the system prompt (without TEXT: show it)
  /model [NAME]    use model NAME for the rest of this chat (without NAME: show it)
  /exit            leave (so does Ctrl-D)
A line {BLOCK} starts a message of several lines; a line {BLOCK} ends it.
A line starting with // sends the rest of it, starting with /.
Ctrl-C stops a reply as it streams (what arrived is kept, marked incomplete).
"""


@dataclass
class ChatOptions:
    model: str | None = None
    provider: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    template: str | None = None
    history: bool = True


class Ended(Exception):
    """Leave the chat with this exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def history_path(env: Any) -> Path:
    """$XDG_STATE_HOME/sessctl/chat_history (default ~/.local/state/...)."""
    base = env.get("XDG_STATE_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path(env.get("HOME") or os.path.expanduser("~")) / ".local/state"
    return root / "sessctl" / "chat_history"


class LineReader:
    """Input lines: readline on a terminal (editing, history), plain lines otherwise."""

    def __init__(self, app: Any, *, history: bool) -> None:
        self.app = app
        self.interactive = app.stdin_isatty
        self.readline: Any = None
        self.path: Path | None = None
        if self.interactive:
            try:
                import readline as module
                self.readline = module
            except ImportError:  # pragma: no cover - a Python built without it
                self.readline = None
            if self.readline is not None and history:
                self._open_history(self.readline)

    def _open_history(self, readline: Any) -> None:
        path = history_path(self.app.env)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 before readline writes to it: it holds what was typed.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
            readline.read_history_file(str(path))
        except OSError as exc:
            self.app.notice(f"chat history off: cannot use {path}: {exc.strerror}")
            return
        readline.set_history_length(1000)
        readline.set_auto_history(False)  # entries are added sanitized, by remember()
        self.path = path

    def read(self, prompt: str) -> str:
        """One line without its newline; EOFError at the end, KeyboardInterrupt on Ctrl-C."""
        if self.interactive:
            return input(prompt)
        line = self.app.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n").rstrip("\r")

    def remember(self, line: str) -> None:
        """Add a single-line entry to the history, sanitized (the file is not encrypted)."""
        if self.readline is None or not line.strip():
            return
        clean = self.app.sanitizer().sanitize(line)[0]
        self.readline.add_history(clean)
        if self.path is not None:
            try:
                self.readline.append_history_file(1, str(self.path))
            except OSError:
                pass

    def close(self) -> None:
        if self.readline is not None and self.path is not None:
            try:
                self.readline.write_history_file(str(self.path))  # trimmed to the history length
                os.chmod(self.path, 0o600)
            except OSError:
                pass


class Chat:
    """One chat: the session it talks to, and what the user changed for this chat."""

    def __init__(self, app: Any, client: Any, session_id: str, opts: ChatOptions, *, exists: bool) -> None:
        self.app, self.client, self.sid, self.opts = app, client, session_id, opts
        self.exists = exists
        # A session named with -s that does not exist yet is created by the first
        # message, with send's notice; a new id without -s was announced already.
        self.announce_created = True
        self.pending_system: str | None = None  # /system before the session exists
        self.reader = LineReader(app, history=opts.history)
        self.interactive = self.reader.interactive
        self.out = app.stdout

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        if self.interactive:
            self._banner()
        try:
            while True:
                self._one()
        except Ended as end:
            return end.code
        finally:
            self.out.flush()
            self.reader.close()

    def _one(self) -> None:
        """Read and carry out one message or command; Ended leaves the chat."""
        try:
            text = self._next_message()
        except EOFError:
            if self.interactive:
                self.out.write("\n")
            raise Ended(0) from None
        except KeyboardInterrupt:
            # Ctrl-C at the prompt drops the line, as shells do; Ctrl-D leaves.
            self.out.write("\n")
            return
        if text is None:
            return
        try:
            if text.startswith("/") and not text.startswith("//"):
                self._command(text)
            else:
                self._send(text[1:] if text.startswith("//") else text)
        except SessctlError as exc:
            self._error(str(exc), int(exc.exit_code))
        except KeyboardInterrupt:
            # Ctrl-C outside a call (while a command reads or prints): every store
            # write is one transaction, so nothing is half done; back to the prompt.
            if not self.interactive:
                raise
            self.out.write("\n")

    def _next_message(self) -> str | None:
        line = self.reader.read("> ")
        if line.strip() != BLOCK:
            self.reader.remember(line)
            return line if line.strip() else None
        lines: list[str] = []
        while True:
            more = self.reader.read("... ")
            if more.strip() == BLOCK:
                break
            lines.append(more)
        text = "\n".join(lines)
        return text if text.strip() else None

    def _error(self, message: str, code: int) -> None:
        self.out.flush()
        self.app.stderr.write(f"sessctl: error: {message}\n")
        self.app.stderr.flush()
        if not self.interactive:
            raise Ended(code)

    def _banner(self) -> None:
        state = "" if self.exists else " (new)"
        self.out.write(f"Chatting in session {self.sid!r}{state}. /help for commands, {BLOCK} for several "
                       "lines, Ctrl-D or /exit to leave.\n")
        self.out.flush()

    # --- turns ------------------------------------------------------------------------------

    def _send(self, text: str, *, retry: bool = False) -> None:
        from sessctl import conversation

        stream = self.app.stdout_isatty
        opts = conversation.SendOptions(
            text=text, model=self.opts.model, provider=self.opts.provider, options=dict(self.opts.options),
            stream=stream, create=not retry, user=self.opts.user, template=self.opts.template,
            system=self.pending_system, retry=retry)
        streamed: list[str] = []

        def on_text(piece: str) -> None:
            if piece:
                streamed.append(piece[-1])
                self.out.write(piece)
                self.out.flush()

        (result,) = conversation.send(self.app, [self.sid], opts, on_text=on_text)
        if streamed and streamed[-1] != "\n":
            self.out.write("\n")
        if result.created:
            if self.exists is False and self.announce_created:
                self.app.notice(f"created session {self.sid!r}" + (f" ({result.notice})" if result.notice else ""))
            self.pending_system = None
        self.exists = True
        if result.reply is not None:
            if not streamed:
                content = result.reply.content
                self.out.write(content + ("" if content.endswith("\n") else "\n"))
            if result.superseded_seq is not None:
                self.app.notice(f"message {result.superseded_seq}, the earlier reply, is kept marked superseded")
            self.out.flush()
        if result.error is None:
            return
        from sessctl.conversation import kept_note

        if isinstance(result.error, Terminated):
            self._error(f"{result.error}{kept_note(result)}", int(ExitStatus.TERMINATED))
            raise Ended(int(ExitStatus.TERMINATED))
        if isinstance(result.error, Interrupted) and self.interactive:
            # Ctrl-C stopped this reply only; the chat goes on.
            self.app.stderr.write(f"sessctl: {result.error}{kept_note(result)}\n")
            self.app.stderr.flush()
            return
        self._error(f"{result.error}{kept_note(result)}", int(result.error.exit_code))

    # --- slash commands ---------------------------------------------------------------------

    def _command(self, line: str) -> None:
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        handler: Callable[[str], None] | None = {
            "/help": self._help, "/retry": self._retry, "/fork": self._fork, "/show": self._show,
            "/system": self._system, "/model": self._model, "/exit": self._exit, "/quit": self._exit,
        }.get(name)
        if handler is None:
            raise UsageError(f"unknown command {name}; /help lists them (start a message with // to send a /)")
        handler(arg)

    def _help(self, arg: str) -> None:
        self.out.write(HELP)

    def _exit(self, arg: str) -> None:
        raise Ended(0)

    def _need_session(self) -> None:
        if not self.exists:
            raise UsageError(f"session {self.sid!r} has no messages yet; send one first")

    def _retry(self, arg: str) -> None:
        self._need_session()
        self._send("", retry=True)

    def _fork(self, arg: str) -> None:
        self._need_session()
        parts = arg.split()
        if not 1 <= len(parts) <= 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise UsageError("usage: /fork NEW [SEQ]")
        at = int(parts[1]) if len(parts) == 2 else None
        forked = self.client.fork_result(self.sid, parts[0], at=at)
        note = " (its last message is a question left unanswered: /retry asks it)" if forked.opened_question else ""
        self.app.notice(f"forked {self.sid!r} into {parts[0]!r}: {forked.copied} messages copied{note}; "
                        f"now chatting in {parts[0]!r}")
        self.sid = parts[0]

    def _show(self, arg: str) -> None:
        from sessctl import render

        self._need_session()
        if arg and not arg.isdigit():
            raise UsageError("usage: /show [N]")
        session = self.client.get(self.sid, last=int(arg) if arg else None)
        color = self.app.stdout_isatty and "NO_COLOR" not in self.app.env
        render.write_transcript_text(self.out, session, session.messages or [], color=color)

    def _system(self, arg: str) -> None:
        if not arg:
            current = self.client.get(self.sid, last=0).system if self.exists else self.pending_system
            self.out.write((current if current is not None else "(no system prompt)") + "\n")
            return
        if self.exists:
            self.client.update(self.sid, system=arg)
        else:
            self.pending_system = arg  # set when the first message creates the session
        self.app.notice("system prompt set")

    def _model(self, arg: str) -> None:
        if arg:
            self.opts.model = arg
            self.app.notice(f"model {arg!r} for the rest of this chat")
            return
        if self.opts.model is not None:
            self.out.write(self.opts.model + "\n")
        elif self.exists:
            self.out.write((self.client.get(self.sid, last=0).model or "(provider default)") + "\n")
        else:
            self.out.write("(the new session's default)\n")


def start(app: Any, client: Any, session_id: str | None, opts: ChatOptions, *, continue_: bool = False) -> int:
    """Resolve the session (given, continued, or a new id), then chat; the exit status."""
    from sessctl import service, workflow
    from sessctl.models import check_session_id

    if opts.template is not None:
        app.config.template(opts.template)  # an unknown name fails before anything starts
    if continue_ and session_id is not None:
        raise UsageError("give -s/--session or -c/--continue, not both")
    exists = True
    session_id_given = session_id is not None
    if continue_:
        chosen = workflow.latest_session(app, opts.user)
        app.notice(f"continuing session {chosen.id!r}")
        session_id = chosen.id
    elif session_id is None:
        session_id = service.new_session_id()
        exists = False
        if not app.stdin_isatty:
            app.notice(f"new session {session_id!r}")
    else:
        check_session_id(session_id)
        store = app.store(create=False)
        exists = store is not None and store.find_session(session_id, decrypt=False) is not None
    chat = Chat(app, client, session_id, opts, exists=exists)
    chat.announce_created = continue_ or exists or session_id_given
    return chat.run()
