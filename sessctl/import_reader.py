"""Reading `export` output for `import`: a JSON array or JSONL from a byte stream,
one element at a time, with the line (JSONL) or element index (JSON) of each.

Only the current element is held in memory: JSONL is read line by line, and a JSON
array element by element with an incremental decoder over a growing buffer (doubling,
so a long element costs linear time). The format is decided by the first non-blank
byte of a chunk, not of a line, because a compact array (`jq -c`) is a single line.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import IO, Any

from sessctl.errors import UsageError

CHUNK = 1 << 16


class Invalid(UsageError):
    """Bad input: says where (line or element) and what."""


class Reader:
    """Yields (where, element) from a byte stream holding a JSON array or JSONL,
    keeping only the current element in memory. `bytes_read` feeds the progress bar."""

    def __init__(self, stream: IO[bytes], source: str) -> None:
        self.stream, self.source, self.bytes_read = stream, source, 0

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.bytes_read += len(data)
        return data

    def _readline(self) -> bytes:
        data = self.stream.readline()
        self.bytes_read += len(data)
        return data

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        # Decide the format from the first non-blank byte of a chunk, not of a line:
        # a compact array (`jq -c`) is one line, and reading it as one would hold the
        # whole input in memory.
        head = self._read(CHUNK)
        if head.startswith(codecs.BOM_UTF8):
            head = head[len(codecs.BOM_UTF8):]
        while head and not head.strip():
            more = self._read(CHUNK)
            if not more:
                return
            head += more
        if not head:
            return
        start = len(head) - len(head.lstrip())
        lineno = 1 + head.count(b"\n", 0, start)
        head = head[start:]
        if head.startswith(b"["):
            yield from self._array(head, lineno)
        else:
            yield from self._jsonl(head, lineno)

    def _lines(self, head: bytes) -> Iterator[bytes]:
        """Lines of the input, the first ones from the chunk already read."""
        buf = head
        while True:
            i = buf.find(b"\n")
            if i >= 0:
                yield buf[: i + 1]
                buf = buf[i + 1:]
                continue
            more = self._readline()  # completes the partial line at the end of buf
            if not more:
                if buf:
                    yield buf
                return
            buf += more

    def _decode(self, raw: bytes, where: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{where}: not valid UTF-8; nothing was imported") from None

    def _jsonl(self, head: bytes, lineno: int) -> Iterator[tuple[str, Any]]:
        for raw in self._lines(head):
            where = f"{self.source} line {lineno}"
            lineno += 1
            if not raw.strip():
                continue
            try:
                obj = json.loads(self._decode(raw, where))
            except json.JSONDecodeError as exc:
                raise Invalid(f"{where}: invalid JSON: {exc.msg} (column {exc.colno}); nothing was imported") from None
            except (RecursionError, ValueError) as exc:
                raise Invalid(f"{where}: {_unreadable(exc)}; nothing was imported") from None
            yield where, obj

    def _array(self, first: bytes, lineno: int) -> Iterator[tuple[str, Any]]:
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")()
        line_base = lineno  # line number of buf[0]
        eof = False

        def more(buf: str) -> str:
            nonlocal eof
            data = self._read(max(CHUNK, len(buf)))  # doubling: a long element costs linear time
            if not data:
                eof = True
            try:
                return buf + utf8.decode(data, final=eof)
            except UnicodeDecodeError:
                raise Invalid(f"{self.source} near line {line_base}: not valid UTF-8; nothing was imported") from None

        try:
            buf = utf8.decode(first)
        except UnicodeDecodeError:
            raise Invalid(f"{self.source} near line {lineno}: not valid UTF-8; nothing was imported") from None
        pos = 1  # just after the "["
        index = 0

        def skip_ws() -> None:
            nonlocal buf, pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or eof:
                    return
                buf = more(buf)

        def where() -> str:
            return f"{self.source} element [{index}] (line {line_base + buf.count(chr(10), 0, pos)})"

        while True:
            skip_ws()
            if pos >= len(buf):
                raise Invalid(f"{self.source}: the JSON array is not closed (truncated input?); nothing was imported")
            if buf[pos] == "]":
                pos += 1
                while True:
                    skip_ws()
                    if pos >= len(buf):
                        return
                    raise Invalid(f"{self.source} line {line_base + buf.count(chr(10), 0, pos)}: "
                                  "unexpected data after the JSON array; nothing was imported")
            if index:
                if buf[pos] != ",":
                    raise Invalid(f"{where()}: expected ',' or ']' between elements; nothing was imported")
                pos += 1
                skip_ws()
                if pos >= len(buf):
                    raise Invalid(f"{self.source}: the JSON array is not closed (truncated input?); nothing was imported")
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as exc:
                    if eof:
                        line = line_base + buf.count("\n", 0, exc.pos)
                        raise Invalid(f"{where()}: invalid JSON at line {line}: {exc.msg}; nothing was imported") from None
                    buf = more(buf)
                except (RecursionError, ValueError) as exc:
                    raise Invalid(f"{where()}: {_unreadable(exc)}; nothing was imported") from None
            here = where()
            # Drop what was consumed so memory holds one element at a time.
            line_base += buf.count("\n", 0, end)
            buf, pos = buf[end:], 0
            yield here, obj
            index += 1


def _unreadable(exc: BaseException) -> str:
    """Valid JSON that no session object can be: nested past Python's recursion limit,
    or a number with thousands of digits (which Python refuses to convert)."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply to be a session object"
    return f"unreadable JSON value ({' '.join(str(exc).split())[:80]})"
