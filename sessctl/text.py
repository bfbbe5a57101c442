"""Text that enters sessctl is made valid Unicode before anything uses it.

Where text comes from bytes that are not UTF-8 (stdin, arguments, a file), Python
hands it over with each undecodable byte as a lone surrogate (U+DC80..U+DCFF); JSON
can carry lone surrogates too (`"\\ud800"`). Neither can be encoded, sealed, sent to a
provider or stored in PostgreSQL, so every entry point passes text through `clean`:
each such code point becomes U+FFFD (the replacement character), and how many were
replaced is counted. The store counts them as redactions under the rule
`invalid_unicode`, so show, export and stats say the stored text differs from what was
given, exactly as for a redacted secret. One behaviour everywhere: nothing is refused,
nothing else is changed.

Plaintext columns (user, provider, model) also cannot hold NUL on PostgreSQL: `plain`
replaces NUL too, so both engines store the same thing.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
RULE = "invalid_unicode"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> tuple[str, int]:
    """(text with every lone surrogate replaced by U+FFFD, how many were replaced)."""
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        return _SURROGATE.subn(REPLACEMENT, text)


def plain(value: str | None) -> str | None:
    """A value for a plaintext column: clean, and without NUL characters."""
    if value is None:
        return None
    value = clean(value)[0]
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


def clean_json(obj: object) -> object:
    """`clean` through a JSON-like value (provider options): strings and keys."""
    if isinstance(obj, str):
        return clean(obj)[0]
    if isinstance(obj, dict):
        return {clean(str(k))[0]: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean_json(v) for v in obj]
    return obj


def decode(data: bytes) -> str:
    """Bytes read from a pipe or file → str, undecodable bytes kept as lone surrogates
    for `clean` to replace and count where the text is stored."""
    return data.decode("utf-8", errors="surrogateescape")
