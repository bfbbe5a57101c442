"""`sessctl chat`: on a real pseudo-terminal (readline editing and history, a reply
streamed, Ctrl-C mid-stream, Ctrl-C at the prompt, Ctrl-D), and with stdin not a
terminal (each line a message; the first failure ends it).

The pty tests run sessctl in a child of pty.fork(), so the pty is its controlling
terminal: Ctrl-C is the byte 0x03 typed at it, turned into SIGINT by the terminal's
line discipline, as for a person. Nothing waits on time (the deadlines only turn a
hang into a failure, and are long because the machine may be busy): a stream is held after its
first piece (TextReply.hold) until the test has seen it and typed Ctrl-C; reads wait
for the text they expect (with a generous deadline only so a broken build fails
instead of hanging).
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import threading
import time
from typing import Any

import pytest
from fakeserver import ErrorReply, FakeLLMServer, TextReply
from sendkit import chats, configure, roles

from conftest import Paths, Run, mode

pytestmark = pytest.mark.engines

UP, LEFT = b"\x1b[A", b"\x1b[D"


class Terminal:
    """sessctl chat on the slave side of a pty; the test types at the master side."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env.update(TERM="xterm", INPUTRC="/dev/null")
        argv = [sys.executable, "-c", "from sessctl.cli import main; main()", "chat", *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a new session whose controlling terminal is the pty
            try:
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.seen = b""

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, wanted: bytes, timeout: float = 120.0) -> bytes:
        """Read until `wanted` appears after what earlier expects consumed; return it all."""
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {wanted!r}; the terminal shows {self.seen[-600:]!r}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                assert chunk, f"the chat ended before {wanted!r}; it showed {self.seen[-600:]!r}"
                self.seen += chunk
        upto = self.seen.index(wanted) + len(wanted)
        out, self.seen = self.seen[:upto], self.seen[upto:]
        return out

    def wait_reading(self, timeout: float = 120.0) -> None:
        """Wait until the chat sleeps in select/poll on the terminal, i.e. readline is
        waiting for a key. A Ctrl-C typed before that (the prompt is on the screen a
        moment before readline waits) is flagged by Python but noticed only with the
        next key, so a test that types it must first know readline is waiting."""
        waiting = {"7", "23", "270", "271"}  # poll, select, pselect6, ppoll (x86-64)
        deadline = time.monotonic() + timeout
        while True:
            with open(f"/proc/{self.pid}/syscall") as fh:
                if fh.read().split(" ", 1)[0] in waiting:
                    return
            assert time.monotonic() < deadline, "the chat never waited for a key"
            time.sleep(0.01)

    def finish(self, timeout: float = 120.0) -> int:
        """Drain the terminal until the child exits; its exit status."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline, f"the chat did not exit; it shows {self.seen[-600:]!r}"
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def terminals() -> Any:
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal(*args)
        opened.append(t)
        return t

    yield start
    for t in opened:
        t.close()


def _msgs(ok: Run, sid: str) -> list[tuple[str, str, str]]:
    return [(m["role"], m["content"], m["status"]) for m in ok("show", sid, "--json").json()["messages"]]


def test_ctrl_c_mid_stream_keeps_the_turn_and_the_chat_goes_on(terminals: Any, ok: Run, paths: Paths,
                                                                 fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "openai")
    ok("send", "-s", "c", "before")
    fake_llm.enqueue(TextReply(pieces=["Once ", "upon"]),
                     TextReply(pieces=["partial ", "never ", "sent"], hold=threading.Event()))
    t = terminals("-s", "c")
    assert b"Chatting in session 'c'." in t.expect(b"> ")
    t.type(b"tell a story\r")
    t.expect(b"Once upon\r\n")  # streamed, then the line ended
    t.expect(b"> ")
    t.type(b"tell me more\r")
    t.expect(b"partial ")  # the server holds the rest: the reply is in flight
    t.type(b"\x03")
    shown = t.expect(b"> ")  # back at the prompt, not out of the chat
    assert b"sessctl: interrupted; your message is saved in session 'c', marked unanswered, " \
           b"and the partial reply, marked incomplete" in shown
    t.type(b"after\r")
    t.expect(b"echo: after")
    t.expect(b"> ")
    t.type(b"\x04")  # Ctrl-D
    assert t.finish() == 0
    assert _msgs(ok, "c") == [
        ("user", "before", "ok"), ("assistant", "echo: before", "ok"),
        ("user", "tell a story", "ok"), ("assistant", "Once upon", "ok"),
        ("user", "tell me more", "unanswered"), ("assistant", "partial ", "incomplete"),
        ("user", "after", "ok"), ("assistant", "echo: after", "ok")]
    # The cut-short turn is never context again.
    assert [r for r in roles(chats(fake_llm)[-1].json) if r[0] != "system"] == [
        ("user", "before"), ("assistant", "echo: before"), ("user", "tell a story"), ("assistant", "Once upon"),
        ("user", "after")]


def test_line_editing_history_and_ctrl_c_at_the_prompt(terminals: Any, ok: Run, paths: Paths,
                                                       engine: str) -> None:
    t = terminals("-s", "ed")
    t.expect(b"> ")
    t.type(b"hllo" + LEFT * 3 + b"e\r")  # fixed with the cursor keys before Enter
    t.expect(b"> ")
    t.type(b"mail bob@example.com please\r")
    t.expect(b"> ")
    t.type(b"never sent")
    t.expect(b"never sent")  # readline has the line
    t.wait_reading()
    t.type(b"\x03")  # Ctrl-C at the prompt drops the line
    t.expect(b"> ")
    t.type(b"\x04")
    assert t.finish() == 0
    assert [m[1] for m in _msgs(ok, "ed") if m[0] == "user"] == ["hello", "mail [REDACTED:email] please"]
    history = paths.root / "home" / ".local" / "state" / "sessctl" / "chat_history"
    assert mode(history) == 0o600
    text = history.read_text()
    assert "bob@example.com" not in text and "mail [REDACTED:email] please" in text
    # A new chat recalls the history with the Up key.
    t = terminals("-s", "ed")
    t.expect(b"> ")
    t.type(UP + UP + b"\r")
    t.expect(b"> ")
    t.type(b"/exit\r")
    assert t.finish() == 0
    assert [m[1] for m in _msgs(ok, "ed") if m[0] == "user"][-1] == "hello"


def test_new_session_slash_commands_and_several_lines(terminals: Any, ok: Run, paths: Paths) -> None:
    t = terminals("--no-history")
    banner = t.expect(b"> ").decode()
    sid = banner.split("Chatting in session '")[1].split("'")[0]
    assert "(new)" in banner
    t.type(b"/system Answer in French.\r")
    t.expect(b"system prompt set")
    t.expect(b"> ")
    t.type(b'"""\r')
    t.expect(b"... ")
    t.type(b"first line\r")
    t.expect(b"... ")
    t.type(b"second line\r")
    t.expect(b"... ")
    t.type(b'"""\r')
    t.expect(b"second line\r\n> ")  # the echo reply of both lines
    t.type(b"/help\r")
    t.expect(b"/fork NEW [SEQ]")
    t.expect(b"> ")
    t.type(b"/retry\r")
    t.expect(b"kept marked superseded")
    t.expect(b"> ")
    t.type(b"/fork branch\r")
    t.expect(b"now chatting in 'branch'")
    t.expect(b"> ")
    t.type(b"/model other\r")
    t.expect(b"> ")
    t.type(b"on the branch\r")
    t.expect(b"on the branch\r\n> ")
    t.type(b"/show 2\r")
    t.expect(b"Forked:   from " + sid.encode())
    t.expect(b"> ")
    t.type(b"/exit\r")
    assert t.finish() == 0
    s = ok("show", sid, "--json").json()
    assert s["system"] == "Answer in French."
    assert [(m["content"], m["status"]) for m in s["messages"]] == [
        ("first line\nsecond line", "ok"), ("first line\nsecond line", "superseded"),
        ("first line\nsecond line", "ok")]
    b = ok("show", "branch", "--json").json()
    assert b["forked_from"] == {"id": sid, "seq": 3}
    assert [(m["content"], m.get("model")) for m in b["messages"][3:]] == [("on the branch", None),
                                                                           ("on the branch", "other")]
    assert not (paths.root / "home" / ".local" / "state" / "sessctl" / "chat_history").exists()


# --- stdin not a terminal ---------------------------------------------------------------


def test_piped_lines_are_messages_and_commands(ok: Run, run: Run, paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, "anthropic", max_retries=0)
    r = ok("chat", "-s", "p", input='hi\n\n"""\na\nb\n"""\n//not a command\n/retry\n/exit\nnever\n')
    assert r.stdout == "echo: hi\necho: a\nb\necho: /not a command\necho: /not a command\n"
    assert r.stderr == ("sessctl: created session 'p'\n"
                        "sessctl: message 6, the earlier reply, is kept marked superseded\n")
    assert [m[1] for m in _msgs(ok, "p") if m[0] == "user"] == ["hi", "a\nb", "/not a command"]
    # The first failure ends the chat with its code; what came before is kept.
    fake_llm.enqueue(ErrorReply(500, "boom"))
    r = run("chat", "-s", "p", input="fails\nnever sent\n")
    assert r.exit_code == 5
    assert r.stderr.endswith("HTTP 500: boom; your message is saved in session 'p', marked unanswered\n")
    assert _msgs(ok, "p")[-1] == ("user", "fails", "unanswered")
    r = run("chat", "-s", "p", input="/nope\n")
    assert r.exit_code == 2 and "unknown command /nope" in r.stderr


def test_chat_sessions_new_continued_and_templated(ok: Run, run: Run, paths: Paths) -> None:
    paths.write_config('[templates.fr]\nsystem = "En français."\n')
    r = ok("chat", "--template", "fr", "--user", "dora", input="bonjour\n")
    assert r.stderr.startswith("sessctl: new session 's-")
    sid = r.stderr.split("'")[1]
    s = ok("show", sid, "--json").json()
    assert (s["system"], s["user"], len(s["messages"])) == ("En français.", "dora", 2)
    r = ok("chat", "-c", "--user", "dora", input="encore\n")
    assert r.stderr == f"sessctl: continuing session '{sid}'\n"
    assert len(ok("show", sid, "--json").json()["messages"]) == 4
    assert run("chat", "-c", "--user", "nobody", input="x\n").exit_code == 3
    assert run("chat", "--template", "nope", input="x\n").exit_code == 2
    assert run("chat", "-s", "bad id", input="x\n").exit_code == 2
    assert run("chat", "-s", "a", "-c", input="x\n").exit_code == 2
    assert ok("chat", "-s", "quiet", input="").stdout == ""  # nothing typed: nothing created
    assert run("show", "quiet").exit_code == 3
