"""An incremental Server-Sent Events parser (the WHATWG "event stream" interpretation).

Pure and network-free so it can be tested byte by byte. Feed it raw chunks exactly as
they come off the socket: a chunk may end inside a UTF-8 sequence, inside a line, or
between the CR and LF of a CRLF, and the parser must not care.

Rules implemented (https://html.spec.whatwg.org/multipage/server-sent-events.html):
- lines end in CRLF, LF or CR; a leading BOM is dropped;
- a blank line dispatches the event being built; an event with no data is not dispatched;
- `:` starts a comment (servers use these as keep-alives);
- `field: value` drops one leading space from the value; a line without a colon is a
  field with an empty value; unknown fields are ignored;
- several `data:` lines are joined with "\\n";
- an event left unfinished at end of stream is discarded, never dispatched, which is
  what lets a provider tell a stream cut in the middle from a complete one.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    event: str  # "message" when the server named none
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into SSEEvents: `feed(chunk)` as data arrives, `close()` at EOF."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        return self._take_lines(text, final=False)

    def close(self) -> list[SSEEvent]:
        """End of stream: finish a pending line ending; drop any unfinished event."""
        events = self._take_lines(self._utf8.decode(b"", final=True), final=True)
        self._buf = ""
        self._event, self._data = "", []
        return events

    def _take_lines(self, text: str, *, final: bool) -> list[SSEEvent]:
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        buf = self._buf + text
        events: list[SSEEvent] = []
        pos = 0
        while True:
            m = _EOL.search(buf, pos)
            if m is None:
                break
            if m.group() == "\r" and m.end() == len(buf) and not final:
                break  # maybe the CR of a CRLF whose LF is in the next chunk
            event = self._line(buf[pos : m.start()])
            if event is not None:
                events.append(event)
            pos = m.end()
        self._buf = buf[pos:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self._last_id,
            retry=self._retry,
        )
        self._event, self._data = "", []
        return event


def parse_sse(raw: bytes | str) -> list[SSEEvent]:
    """All complete events in a whole stream (for tests and small bodies)."""
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close()
