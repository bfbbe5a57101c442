"""The built-in detection rules behind sessctl.sanitize (the contract lives there; what
each rule knows about token shapes lives in sanitize_catalog).

Every scanner works on byte views of the text that keep one byte per code point
(`text.encode("ascii", "replace")`), so a match offset is also an offset into the str:

    b    the text, non-ASCII code points replaced by "?"
    low  b.lower() (ASCII-only, so lengths never change): case-insensitive keywords
    cls  character classes: digit -> "0", A-Z -> "A", a-z -> "a", the rest unchanged
    tok  token classes: [A-Za-z0-9_-] -> "a", everything else -> " "
    val  value classes: [A-Za-z0-9_+/.~$-] -> "v", everything else -> " "

Why the views and how the scans stay fast and linear: Python's `re` searches quickly
only for a pattern that starts with a literal; one that starts with a class such as
`\\d` costs 6-9 ns per byte even where nothing matches, and one that starts with a
lookbehind enters the matcher at every byte. In the views every rule has a literal
start: against `cls`, "13 digits" is "0000000000000"; against `tok`, "a token of 16+
characters" is sixteen "a"s; keywords are literal in `low`. Candidates are found with
bytes.find (which skips ahead many bytes at a time) and checked with pattern.match at
each one; see _at for the fallback to re on dense input. After its literal, a pattern
has a fixed-width negative lookbehind so a match can only begin at the start of a
token; a failed attempt costs at most the token it began on (quantifiers are bounded,
or followed by nothing that can fail), and scanning resumes past it, so no stretch
of text is scanned more than a constant number of times.

More rules do not mean more passes. Most credentials are a run of 16+ token
characters, and one pass over `tok` visits every such run once (scan_tokens). What a
run can be is then looked up, never searched for: its first two characters select
the prefixed formats to try (a dict of ~100 keys), a ".", "~" or "$" before it selects
formats such as "hvs.", "SG." or "dp.pt.", its last characters select a few suffixed
formats, and, failing all that, the key it is assigned to (DATADOG_API_KEY=...,
"client_secret": ...) is read backwards from the value and its words are looked up.
Adding a format adds a dict entry and a pattern compiled the first time a candidate
needs it, so start-up and throughput stay flat as the catalog grows. The few rules
that are not token runs (PEM blocks, cards, IBANs, emails, URLs with passwords, the
Authorization header...) keep one literal-keyed pass each.

Checksums (Luhn, mod-97, the JWT header, Basic credentials) and context checks run
in Python, on candidates only.

A scanner appends `(start, end, priority)` hits; the engine (sanitize.py) drops those
that the allow-lists keep or that touch an existing marker, and merges overlaps.
"""

from __future__ import annotations

import binascii
import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator
from typing import Any

from sessctl import sanitize_catalog as _c
from sessctl.sanitize_catalog import RULES, RuleSpec

__all__ = ["RULES", "RULE_NAMES", "PRIO", "RuleSpec", "Views", "Tables", "build_tables", "scan_tokens",
           "SCANNERS", "markers", "Hit"]

RULE_NAMES: tuple[str, ...] = tuple(r.name for r in RULES)
PRIO: dict[str, int] = {name: i for i, name in enumerate(RULE_NAMES)}

Hit = tuple[int, int, int]  # start, end, priority (index into the engine's rule order)


# ---------------------------------------------------------------- views of one text

_CLS = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"0" * 10 + b"A" * 26 + b"a" * 26,
)
_TOK = bytes(
    0x61 if (0x30 <= i <= 0x39 or 0x41 <= i <= 0x5A or 0x61 <= i <= 0x7A or i in (0x2D, 0x5F)) else 0x20
    for i in range(256)
)
# Characters of a credential value, so that a value's ends are found with one
# bytes.find / rfind however it is spelled (base64, base64url, dotted, hyphenated).
# "=" is left out: it is the assignment before a value far more often than padding.
_VAL = bytes(0x76 if _TOK[i] == 0x61 or i in b"+/.~$" else 0x20 for i in range(256))


class Views:
    """One text and its byte views. All are computed up front: every scan needs most
    of them, each costs one C-level pass, and plain attributes are faster to reach
    than lazily computed ones in the hot loops."""

    __slots__ = ("text", "b", "low", "cls", "tok", "val", "_ini")

    def __init__(self, text: str) -> None:
        self.text = text
        # "replace" turns each non-ASCII code point into exactly one "?", so offsets agree.
        b = self.b = text.encode("ascii", "replace")
        self.low = b.lower()
        self.cls = b.translate(_CLS)
        self.tok = b.translate(_TOK)
        self.val = b.translate(_VAL)
        self._ini: list[int] | None = None

    def in_ini_section(self, pos: int) -> bool:
        """Is the line at pos inside an INI [section]: a header line at most 2000
        characters before it, and only blank, comment or key = value lines between?"""
        if self._ini is None:  # header ends, found once per text
            b = self.b
            self._ini = [m.end() for m in P.ini_section.finditer(b)
                         if m.start() == 0 or b[m.start() - 1] == 0x0A]  # column 0 only
        i = bisect_right(self._ini, pos) - 1
        if i < 0 or pos - self._ini[i] > 2000:
            return False
        return P.ini_lines.fullmatch(self.b, self._ini[i], pos) is not None


# ------------------------------------------------------------ lazily compiled patterns

class _Lazy:
    """Compiles each pattern on first use, so importing this module stays cheap."""

    def __init__(self, **sources: bytes | str) -> None:
        self._sources = sources

    def __getattr__(self, name: str) -> re.Pattern[Any]:
        try:
            source = self.__dict__["_sources"][name]
        except KeyError:
            raise AttributeError(name) from None
        rx = re.compile(source)
        setattr(self, name, rx)
        return rx


def _at(hay: bytes, literal: bytes, rx: re.Pattern[bytes]) -> Iterator[re.Match[bytes]]:
    """Non-overlapping matches of rx, which begins with `literal`, like rx.finditer(hay).

    re's own search for a literal prefix is a tight loop on the literal's first byte:
    the fastest scan when that byte is uncommon, and measured faster than bytes.find
    for short literals. bytes.find skips ahead by the literal's length, which wins for
    long literals and for the class views, whose first bytes ("0", "A", "a") are
    everywhere. With find, a Python step per occurrence costs more than re's C loop when
    occurrences are dense and fail (an adversarial "sk-sk-sk-..."), so after a run of
    misses re takes over.
    """
    if len(literal) <= 6 and literal[0] not in b"0Aa":
        yield from rx.finditer(hay)
        return
    find = hay.find
    i = find(literal)
    misses = 0
    while i >= 0:
        m = rx.match(hay, i)
        if m is None:
            misses += 1
            if misses > 32:
                yield from rx.finditer(hay, i + 1)
                return
            i = find(literal, i + 1)
        else:
            misses = 0
            yield m
            i = find(literal, m.end() if m.end() > i else i + 1)


# After a password keyword: an optional closing quote, then := => = : (group 2) or,
# after --password, blanks (group 3), then a quoted or bare value (group 4).
_PW_TAIL = (rb"(?![a-z0-9_])[\"'`]?[ \t]{0,16}"
            rb"(?:(:=|=>|=(?![=>])|:(?![:/]))[ \t]{0,16}|([ \t]+))"
            rb"(\"(?:[^\"\\\r\n]|\\.){0,256}\"|'(?:[^'\\\r\n]|\\.){0,256}'|`[^`\r\n]{0,256}`"
            rb"|[^\s\"'`]{1,256})")
_SEP = rb"""["'`]?[ \t]{0,16}(?::=|=>|=(?![=>])|:(?![:/]))[ \t]{0,16}["'`]?"""  # key ... = / : ... value

P = _Lazy(
    run0=rb"0+",
    # The words of a key name: AWS_SECRET_ACCESS_KEY, apiKey, X-Api-Key, newRelicKey.
    key_words=rb"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+",
    # Kubernetes env entries and JSON name/value pairs: the name before a "value" key.
    value_name=rb"name[\"']?[ \t]*:[ \t]*[\"']?([A-Za-z0-9_.-]{1,64})[\"']?[ \t]*,?[ \t]*\r?\n?[ \t-]*[\"']?$",
    pem_begin=rb"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
    b64_16=rb"[A-Za-z0-9+/]{16}",
    pem_end=rb"-----END [A-Z0-9 ]{0,40}-----",
    # Where a truncated key ends: runs of base64 after whitespace or JSON-escaped
    # newlines, 16+ characters (a key's lines are 64) or a short last one with "="
    # padding. Prose words are shorter, so the prose after a cut paste survives.
    pem_body=(rb"(?:(?:\s+|(?:\\r)?\\n)(?:[A-Za-z0-9+/=]{16,}|[A-Za-z0-9+/]{1,15}={1,2})"
              rb"(?![A-Za-z0-9+/=]))*"),
    # PuTTY's .ppk, whose private part is counted lines.
    putty_lines=rb"Private-Lines: ([0-9]{1,3})\r?\n",
    # Context rules, on the lower-cased view.
    aws_secret=rb"secret[ _-]?((?:access[ _-]?)?)key" + _SEP + rb"([a-z0-9/+]{40})(?![a-z0-9/+=])",
    # Authorization: [scheme] credentials. Group 1 the scheme, group 2 the credentials.
    auth=(rb"authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:([a-z][a-z0-9_-]{1,30})[ \t]+)?"
          rb"([a-z0-9._~+/=-]{8,})"),
    # Two patterns with literal starts ("pass", "pwd") rather than one starting "p":
    # re's scan then stops only at those, not at every "p".
    password=rb"(pass(?:w(?:or)?d|phrase)?)" + _PW_TAIL,
    password_pwd=rb"(pwd)" + _PW_TAIL,
    nuget=rb"<add[ \t]+key=\"(?:cleartext)?password\"[ \t]+value=\"([^\"\r\n]{1,256})\"",
    curl_user=rb"-u(?<![^\s\"'-]-u)(?:ser[ =]| ?)[\"']?[^\s:\"']{1,64}:([^\s\"']{1,128})",
    mysql_p=rb"mysql[a-z]*[ \t](?:[^\n]{0,200}?[ \t])?-p([^\s\"']{1,128})",
    ini_section=rb"\[[A-Za-z0-9_. -]{1,64}\][ \t]*(?:\r?\n|\Z)",
    ini_lines=rb"(?:[ \t]*(?:[#;][^\n]*|[A-Za-z0-9_.-]+[ \t]*[=:][^\n]*)?\r?\n)*",
    password_xml=rb"<([a-z0-9_.:-]{0,32}password)>([^<\r\n]{1,256})</\1>",
    ssn_ctx=rb"ssn(?<![a-z]ssn)[ \t]*(?:[:#=-]|is|no\.?)?[ \t]*([0-9]{3}[ ]?[0-9]{2}[ ]?[0-9]{4})(?![0-9-])",
    ssn_ctx2=rb"social security(?: number| no\.?| #)?[ \t]*(?:[:#=-]|is)?[ \t]*([0-9]{3}[ ]?[0-9]{2}[ ]?[0-9]{4})(?![0-9-])",
    # Structure rules, on the class view: literal digit shapes.
    # Grouped by one kind of separator throughout (the back-reference), one pass for both.
    card_grouped=(rb"0000(?P<sep>[ -])0(?<![0Aa_.+-]0000[ -]0)"
                  rb"(?:000(?P=sep)0000(?P=sep)0{1,4}(?:(?P=sep)000)?|00000(?P=sep)0{4,5})"),
    ssn=rb"000-00-0000(?<![0Aa_.+/-]000-00-0000)",
    iban=rb"AA00(?<![0Aa_]AA00)(?:[A0]{10,30}|(?: [A0]{4}){2,7}(?: [A0]{1,3})?)",
    # On the plain view.
    # The password runs to the last "@" of the authority: "p@ss" typed unencoded is common.
    url_password=rb"://([^\s:/#@\[\]\"'<>]{0,64}):([^\s/#\"'<>]{1,128})@(?=[A-Za-z0-9\[])",
    # The second branch swallows chains like a@b@c@d@... or @@@@... (8+ links: never
    # an address) in one match, so such input costs one step instead of one per "@".
    email_at=(rb"@(?:(?<=[A-Za-z0-9._%+?-]@)"
              rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
              rb"|[A-Za-z0-9.-]*(?:@[A-Za-z0-9.-]*){8}[A-Za-z0-9.@-]*)"),
    email_local=rb"[A-Za-z0-9._%+?-]{1,64}",
    phone=rb"\+(?<![A-Za-z0-9+)\]]\+)[1-9][0-9 ().-]{6,22}[0-9]",
    # Webhook URLs, each tried where "hook" occurs.
    hook_slack=rb"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{16,}",
    hook_discord=rb"discord(?:app)?\.com/api/webhooks/[0-9]{15,20}/[A-Za-z0-9_-]{60,80}" + _c._E,
    hook_teams=rb"webhook\.office\.com/webhookb2/[A-Za-z0-9@/-]{80,300}",
    host_rev=rb"[A-Za-z0-9.-]{0,64}",
    # Kubernetes Secret manifests: the kind, and the data / stringData sections.
    k8s_kind=rb"kind[\"']?[ \t]*:[ \t]*[\"']?Secret(?![A-Za-z0-9_-])",
    yaml_top_key=rb"[A-Za-z_][A-Za-z0-9_.-]{0,62}[ \t]*:(?:[ \t]|\r?$)",
    k8s_yaml_entry=rb"([ \t]+)([\"']?[A-Za-z0-9_.-]{1,253}[\"']?):[ \t]*([^\r\n]*)",
    k8s_json_data=rb"\"(?:data|stringData)\"[ \t]*:[ \t]*\{",
    k8s_json_entry=rb"[ \t\r\n]*\"[A-Za-z0-9_.-]{1,253}\"[ \t]*:[ \t]*\"((?:[^\"\\\r\n]|\\.){1,4096})\"[ \t\r\n]*,?",
    # Azure SAS: the query around a sig= parameter.
    sas_query=rb"[?&]([a-z]{2,4})=([^&\s\"'<>#]{1,400})",
    sas_end=rb"[\s\"'<>#]",
    # IP addresses (opt-in rule): dotted quads, and IPv6 with "::" or eight groups.
    ipv4=rb"(?<![0-9A-Za-z.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])",
    ipv6=(rb"(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![0-9A-Za-z:])"
          rb"|(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::"
          rb"(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?(?![0-9A-Za-z:])"),
    marker=rb"\[REDACTED:[a-z0-9_]{1,64}\]",
    space_or_slash=rb"[\s/]",
    shell_sep=rb"[;|&]",
)


# ------------------------------------------------------------------------- checks

# Checks on the original str, also compiled on first use.
S = _Lazy(
    digit=r"[0-9]",
    digit_run=r"[0-9]+",
    letter=r"[A-Za-z]",
    field_name=r"(?i)[a-z_]*(?:pass|pwd)[a-z_]*",
    hex32=r"[0-9a-f]{32,}",
    placeholder=r"""(?ix)
    \$\{.*\} | \$\(.*\) | \{\{.*\}\} | \{\{ | \{[a-z_][a-z0-9_.]*\} | <[^>]*> | \[[^\]]*\]
    | (?:[:@/\ ._-]*(?:%[sdr]|%\([a-z_]+\)[sdr]|\{[a-z_0-9]*\}))+[:@/\ ._-]*  # "%s:%s", "{}:{}"
    | \*+ | x{3,} | \.{3,} | …
    | \$[a-z_][a-z0-9_]* | %[a-z_][a-z0-9_]*% | env\(.*\) | (?:your|my)[_ -]?(?:db[_ -]?)?(?:password|pass|pwd|secret)(?:[_ -]?here)?
    """,
    # Words that mark a value as a documented stand-in rather than a credential.
    stand_in=r"(?i)example|sample|dummy|placeholder|changeme|change_me|redacted|your[_-]|fake|x{5}|0{8}|1234567890",
    ident=r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*",
    # The words of a type or class name (PKCS7PrivateKeyTypes, sshPublicKey,
    # Ed25519PrivateKey): an optional lower-case head, then capitalised words, acronyms
    # and digits. Used with findall and a check that the parts cover the value: a
    # fullmatch of these overlapping alternatives repeated would backtrack
    # exponentially on a value that fails.
    type_head=r"[a-z]{1,12}[0-9]*",
    type_part=r"[A-Z]{2,}[0-9]*(?![a-z])|[A-Z][a-z]+[0-9]*|[A-Z][a-z]?[0-9]+|_",
    module_name=r"[a-z_][a-z0-9_]{0,15}",
    cut=r"[,;&(){}\[\]<>]",
    cut_query=r"[&#]",
    retina=r"[0-9]{1,2}x",
)


def _variety(v: Views, s: int, e: int) -> int:
    """How many of upper case, lower case and digits occur in [s, e): random tokens show 2-3."""
    c = v.cls[s:e]
    return (b"A" in c) + (b"a" in c) + (b"0" in c)


def _randomish(v: Views, s: int, e: int, min_distinct: int = 8) -> bool:
    # Placeholders ("sk-xxxxxxxx...", "ghp_your_token_here") are one-case or repetitive;
    # a long token showing all three classes is random enough without counting.
    c = v.cls[s:e]
    variety = (b"A" in c) + (b"a" in c) + (b"0" in c)
    if variety == 3 and e - s >= 32:
        return True
    return variety >= 2 and len(set(v.b[s:e])) >= min_distinct


def _opaque(v: Views, s: int, e: int) -> bool:
    """A header credential: random tokens this long almost always show a digit, while
    placeholders (AccessTokenHere, YourApiKeyGoesHere) are words in mixed case."""
    c = v.cls[s:e]
    return b"0" in c and (b"A" in c or b"a" in c) and len(set(v.b[s:e])) >= 6


Span = tuple[int, int] | None
Check = Callable[[Views, "re.Match[bytes]"], Span]  # -> what to redact, or None


def _varied_end(b: bytes, s: int, e: int) -> bool:
    """The last 16 characters are not a placeholder (XXXX..., 0000-0000-...): a
    format's fixed prefix must not carry a documentation example through."""
    return len(set(b[max(s, e - 16):e])) >= 6


def _ok(v: Views, m: re.Match[bytes]) -> Span:
    return m.span() if _varied_end(v.b, m.start(), m.end()) else None


def _random_token(v: Views, m: re.Match[bytes]) -> Span:
    s, e = m.span()
    c = v.cls[s:e]
    variety = (b"A" in c) + (b"a" in c) + (b"0" in c)
    if variety < 2:
        return None
    b = v.b
    if len(set(b[e - 16 if e - s > 16 else s:e])) < 6:
        return None  # a placeholder tail: sk_live_xxxxxxxx..., ghp_0000...
    return (s, e) if (variety == 3 and e - s >= 32) or len(set(b[s:e])) >= 8 else None


def _openai(v: Views, m: re.Match[bytes]) -> Span:
    # The sk- prefix is short and shared with CSS/kebab names (--sk-color-primary-500-bg):
    # demand all three character classes, or the hex of DeepSeek-style keys.
    s, e = m.start() + 3, m.end()
    if _variety(v, s, e) == 3 and len(set(v.b[s:e])) >= 8:
        return m.span()
    return m.span() if S.hex32.fullmatch(v.text, s, e) else None


def _aws_access(v: Views, m: re.Match[bytes]) -> Span:
    return m.span() if len(set(v.b[m.start(1):m.end(1)])) > 4 else None  # not AKIAXXXXXXXXXXXXXXXX


def _github(v: Views, m: re.Match[bytes]) -> Span:
    # "__ghp_...__" in markdown: the underscores after the token are emphasis.
    end = m.end()
    while v.b[end - 1] == 0x5F:
        end -= 1
    return (m.start(), end) if _randomish(v, m.start(), end) else None


def _b64decode(seg: str) -> bytes | None:
    try:
        return binascii.a2b_base64(seg.replace("-", "+").replace("_", "/") + "=" * (-len(seg) % 4))
    except (binascii.Error, ValueError):
        return None


def _jwt(v: Views, m: re.Match[bytes]) -> Span:
    s, e = m.start(), m.end()
    parts = v.text[s:e].split(".")
    header = _b64decode(parts[0])
    if not header or not header.lstrip().startswith(b"{"):
        return None
    if b'"enc"' in header:  # JWE: header.key.iv.ciphertext.tag, the key may be empty
        return (s, e) if len(parts) == 5 and parts[3] else None
    if b'"alg"' not in header and b'"typ"' not in header:
        return None
    if len(parts) < 3 or not parts[1]:
        return None
    # A JWS has three parts; anything after a third dot is not ours.
    return s, s + len(parts[0]) + len(parts[1]) + len(parts[2]) + 2


def _grafana_legacy(v: Views, m: re.Match[bytes]) -> Span:
    # Grafana's old API keys are base64 of {"k":"...","n":"...","id":N}.
    decoded = _b64decode(v.text[m.start():m.end()].rstrip("="))
    return m.span() if decoded and decoded.startswith(b'{"k":"') else None


def _discord(v: Views, m: re.Match[bytes]) -> Span:
    # A bot token's first part is the bot's user id (a snowflake) in base64.
    head = v.text[m.start():m.start() + v.b.index(b".", m.start()) - m.start()]
    decoded = _b64decode(head)
    return m.span() if decoded and decoded.isdigit() and 15 <= len(decoded) <= 20 else None


def _telegram(v: Views, m: re.Match[bytes]) -> Span:
    # bot id (digits) ":" secret: the whole token is the credential.
    b, s = v.b, m.start()
    if s < 2 or b[s - 1] != 0x3A:
        return None
    i = s - 1
    while i > 0 and 0x30 <= b[i - 1] <= 0x39 and s - i < 13:
        i -= 1
    if s - 1 - i < 5 or (i > 0 and (_TOK[b[i - 1]] == 0x61)):
        return None
    return (i, m.end()) if _randomish(v, s, m.end()) else None


_CHECKS: dict[str, Check] = {
    "ok": _ok, "random": _random_token, "openai": _openai, "aws_access": _aws_access, "github": _github,
    "jwt": _jwt, "grafana_legacy": _grafana_legacy, "discord": _discord, "telegram": _telegram,
}


# ---------------------------------------------------------------- the token pass

class _Format:
    """A catalog format ready to try. Its pattern is compiled the first time it is
    needed (most texts need few of the ~150), so neither import nor the first sanitize
    pays for all of them; after that, `match` and `fullmatch` are the compiled
    pattern's own methods, with no Python in between."""

    __slots__ = ("prio", "source", "check", "match", "fullmatch")

    def __init__(self, prio: int, source: bytes | str, check: Check) -> None:
        self.prio, self.source, self.check = prio, source, check
        self.match = self._compile_then("match")
        self.fullmatch = self._compile_then("fullmatch")

    def _compile_then(self, method: str) -> Callable[..., Any]:
        def first(*args: Any) -> Any:
            rx = re.compile(self.source)
            self.match, self.fullmatch = rx.match, rx.fullmatch
            return getattr(rx, method)(*args)
        return first


class Tables:
    """What the token pass looks up, built once per Sanitizer from the enabled rules."""

    __slots__ = ("prefix", "infix", "tail", "keyed", "tail_lengths", "exact", "header", "generic", "basic",
                 "any_keyed")

    def __init__(self, prefix: dict[bytes, list[_Format]], infix: tuple[tuple[bytes, int, _Format], ...],
                 tail: tuple[tuple[bytes, _Format], ...], keyed: dict[str, list[_Format]],
                 tail_lengths: frozenset[int], exact: dict[bytes, int], header: int | None,
                 generic: int | None, basic: int | None) -> None:
        self.prefix = prefix              # first two characters -> formats
        self.infix = infix                # literal inside, offset of the start
        self.tail = tail                  # literal at (or near) the end
        self.keyed = keyed                # key word -> value shapes
        self.tail_lengths = tail_lengths  # run lengths the tails can have
        self.exact = exact                # exact key spelling -> rule
        self.header = header              # api_key_header
        self.generic = generic            # secret_assignment
        self.basic = basic                # basic_auth (docker "auth")
        self.any_keyed = bool(keyed or exact) or header is not None or generic is not None or basic is not None


def build_tables(on: Collection[str], prio: dict[str, int]) -> Tables:
    prefix: dict[bytes, list[_Format]] = {}
    for f in _c.TOKENS:
        if f.rule in on:
            fmt = _Format(prio[f.rule], f.pattern, _CHECKS[f.check])
            for key in f.keys:
                prefix.setdefault(key, []).append(fmt)
    infix = tuple((lit, back, _Format(prio[f.rule], f.pattern, _CHECKS[f.check]))
                  for lit, back, f in _c.INFIXES if f.rule in on)
    tail = tuple((lit, _Format(prio[rule], source, _ok)) for rule, lit, source, _ in _c.TAILS if rule in on)
    tail_lengths = frozenset(n for rule, _, _, lengths in _c.TAILS if rule in on for n in lengths)
    keyed: dict[str, list[_Format]] = {}
    for k in _c.KEYED:
        if k.rule in on:
            fmt = _Format(prio[k.rule], k.shape, _CHECKS[k.check])
            for word in k.words:
                keyed.setdefault(word, []).append(fmt)
    exact = {key: prio[rule] for key, rule in _c.EXACT_KEYS.items() if rule in on}

    def p(rule: str) -> int | None:
        return prio[rule] if rule in on else None

    return Tables(prefix, infix, tail, keyed, tail_lengths, exact, p("api_key_header"), p("secret_assignment"),
                  p("basic_auth"))


_MIN_RUN = 16  # shortest token that scan_tokens looks at (a minimal JWT header is 19)
_RUN = b"a" * _MIN_RUN
_CHAIN = frozenset(b".~$+/")
_LEAD = frozenset(b"-_")


def _try(v: Views, fmts: list[_Format], at: int, out: list[Hit]) -> int:
    """Try the formats at a position; the end of the first that matches, else -1."""
    b = v.b
    for f in fmts:
        m = f.match(b, at)
        if m is not None:
            span = f.check(v, m)
            if span is not None:
                out.append((span[0], span[1], f.prio))
                return span[1]
    return -1


def scan_tokens(v: Views, t: Tables, out: list[Hit]) -> None:
    """Visit each run of 16+ token characters once and look up what it can be.

    The loop runs for every such run in the text, so it is written for few steps per
    run: each test is one expression, and a found token ends the iteration."""
    b = v.b
    val = v.val
    find = v.tok.find
    n = len(b)
    prefix, infix, tail, tail_lengths = t.prefix, t.infix, t.tail, t.tail_lengths
    keyed = t.any_keyed
    keys: dict[bytes, _KeyInfo] = {}  # what each key name means, worked out once per text
    covered = 0   # end of the last hit: a JWT's payload run needs no second look
    looked = 0    # end of the last value whose key was read: its other runs need none
    prev_end = -9  # end of the previous run
    s = find(_RUN)
    while s >= 0:
        run_end = find(b" ", s + _MIN_RUN)
        if run_end < 0:
            run_end = n
        nxt = find(_RUN, run_end)
        if s >= covered:
            s0 = s
            if b[s] in _LEAD:  # "__ghp_...__", "--token-...": the token starts after the - and _
                s += len(b[s:s + 4]) - len(b[s:s + 4].lstrip(b"-_"))
            fmts = prefix.get(b[s:s + 2])
            end = _try(v, fmts, s, out) if fmts is not None else -1
            c = b[s0 - 1] if s0 else 0x20
            # A run one "+", "/" or "." after the previous one is in the same token (a
            # base64 blob, a path): that token's start has been tried already.
            if end < 0 and c in _CHAIN and (s0 - prev_end > 2 or b[prev_end] not in _CHAIN):
                end = _chained(v, prefix, infix, s0, out)
            if end < 0 and run_end - s in tail_lengths:
                end = _tail(b, tail, s, run_end, out)
            if end < 0 and keyed and s0 >= looked and (c in _BEFORE_VALUE or val[s0 - 1] == 0x76):
                end, looked = _keyed_value(v, t, keys, s0, run_end, out)
            if end > covered:
                covered = end
        prev_end = run_end
        s = nxt


def _tail(b: bytes, tail: tuple[tuple[bytes, _Format], ...], s: int, run_end: int, out: list[Hit]) -> int:
    for literal, f in tail:
        if b.find(literal, run_end - len(literal) - 4, run_end) >= 0 and f.fullmatch(b, s, run_end) \
                and _varied_end(b, s, run_end):
            out.append((s, run_end, f.prio))
            return run_end
    return -1


def _chained(v: Views, prefix: dict[bytes, list[_Format]], infix: tuple[tuple[bytes, int, _Format], ...],
             s: int, out: list[Hit]) -> int:
    """A run right after ".", "~", "$", "+" or "/": try the token the run belongs to, a
    dotted prefix before it (hvs.<run>, SG.<run>.<run>, sha256~<run>) or the start of
    a base64 token whose first 16 characters hold a + or /."""
    b = v.b
    lo = s - 64 if s > 64 else 0
    c = v.val.rfind(b" ", lo, s) + 1 or lo  # no break in 64 characters: try from there
    chain = b[c:s].lstrip(b".~$+/-_")
    if not chain:
        return -1
    c = s - len(chain)
    fmts = prefix.get(chain[:2])
    if fmts is not None:
        end = _try(v, fmts, c, out)
        if end >= 0:
            return end
    for literal, back, f in infix:
        i = chain.find(literal)
        if i >= back:
            end = _try(v, [f], c + i - back, out)
            if end >= 0:
                return end
    return -1


# Type names between a declared name and its value (Go, TypeScript, Kotlin, Swift).
_TYPE_WORDS = frozenset((b"string", b"String", b"str", b"bytes", b"any", b"text", b"Text"))
# What may stand right before a value that is assigned to a key (when the value does
# not begin earlier, with a "." "/" "+" "~" that the run starts after).
_BEFORE_VALUE = frozenset(b"\"'` \t=:>,(\\")


def _keyed_value(v: Views, t: Tables, keys: dict[bytes, _KeyInfo], s: int, run_end: int,
                 out: list[Hit]) -> tuple[int, int]:
    """The run [s, run_end) as (part of) the value of a key: redact it when the key
    names a provider whose format the value has, an API-key header, or a secret in
    general. Returns (end of the hit or -1, end of the value looked at).

    Byte tests and C-level finds, no regex, until the key's name is known; what the
    name means is worked out once per text (most keys mean nothing: id, etag, ...).
    Like the token loop, written for few steps on the common ways out."""
    b, val = v.b, v.val
    # The value: from the last break before the run (it may begin earlier: base64,
    # dotted, hyphenated) to the next, with any base64 padding.
    vs = val.rfind(b" ", s - 256 if s > 256 else 0, s) + 1 if val[s - 1] == 0x76 else s
    if vs == 0 and s > 256:  # inside a blob far longer than any credential: skip all of it
        blob_end = val.find(b" ", run_end)
        return -1, blob_end if blob_end >= 0 else len(b)
    ve = val.find(b" ", run_end, run_end + 512)
    ve = (ve if ve >= 0 else min(len(b), run_end + 512))
    if b[ve:ve + 1] == b"=":
        ve += len(b[ve:ve + 3]) - len(b[ve:ve + 3].lstrip(b"="))
    # Every format looked up below has digits or both cases; words and identifiers
    # (ANTHROPIC_API_KEY, conference-room-booking) have neither and leave here.
    cl = v.cls[vs:ve]
    if b"0" not in cl and (b"A" not in cl or b"a" not in cl):
        return -1, ve
    # Before the value: an opening quote (escaped in a JSON string: \"), blanks, the
    # operator, blanks, the key's closing bracket and quote, the key.
    head = v.b[vs - 100 if vs > 100 else 0:vs]
    quote = head[-1:] if head[-1:] in (b'"', b"'", b"`") else b""
    rest = head[:-1].rstrip(b"\\").rstrip(b" \t") if quote else head.rstrip(b" \t")
    if rest[-1:] == b"\n" and rest.rstrip()[-1:] == b">":  # <key>\n    value\n</key>
        rest = rest.rstrip()
    op = rest[len(rest.rstrip(b"=:!?+.>,(")):]
    if op:
        if len(op) > 4 or op[-1:] not in b"=:>,(" or (op[-1:] == b"(" and len(op) > 1):  # ... :::= (make)
            return -1, ve
        rest = rest[:-len(op)].rstrip(b" \t").rstrip(b"])").rstrip(b"\"'`").rstrip(b"\\")
    elif len(rest) == len(head) or not rest or rest[-1:] in b"\r\n":
        return -1, ve  # glued to what stands before it, or the first word of a line
    key_e = vs - (len(head) - len(rest))
    key_s = val.rfind(b" ", key_e - 64 if key_e > 64 else 0, key_e) + 1
    if key_s == 0 and key_e > 64:
        return -1, ve  # 64 characters with no break: no key name is that long
    key = b[key_s:key_e].lstrip(b"+/~.$-") if not op or op != b">" else b[key_s:key_e]
    if not key or (not op and not b[key_e - len(key) - 2:key_e].startswith(b"--")):
        return -1, ve  # no key, or words before a value that is no flag's
    if b.endswith(b"[REDACTED:", 0, key_e - len(key)):
        return -1, ve  # a marker's rule name is no key: sanitizing twice must change nothing
    if op == b">" and b[key_e - len(key) - 1:key_e - len(key)] != b"<":
        return -1, ve  # ">" is an assignment only as the end of an XML tag <key>
    if key in _TYPE_WORDS:  # var apiToken string = "...", apiToken: string = "...": the name is before
        lo = key_e - len(key) - 80 if key_e - len(key) > 80 else 0
        before = b[lo:key_e - len(key)].rstrip(b" \t").rstrip(b":").rstrip(b" \t")
        key = before[len(before.rstrip(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")):]
        key_s = lo + len(before) - len(key)
    if key in (b"value", b"Value", b"VALUE"):  # {"name": "API_TOKEN", "value": "..."} (Kubernetes env)
        nm = P.value_name.search(b, key_e - 125 if key_e > 125 else 0, key_e - 5)
        key = nm.group(1) if nm is not None else key
    info = keys.get(key)
    if info is None:
        info = keys[key] = _key_info(t, key)
    if info.skip:
        return -1, ve  # a key that says nothing: id, etag, name, attachment, ...
    # Is a bare value a literal here, or may it be a variable? Quoted, after ":"
    # (YAML, JSON, headers, logs), in an XML element, a flag's, KEY=value with no
    # blanks (.env, shell, query strings) or in an INI section: a literal. "key =
    # value" in code: a variable unless it cannot be one.
    literal = bool(quote) or op[:1] in (b":", b">", b"") or (op == b"=" and key_e + 1 == vs)
    if not literal and op == b"=" and (key_s == 0 or b[key_s - 1] == 0x0A):
        literal = v.in_ini_section(key_s)
    if not literal and S.ident.fullmatch(v.text, vs, ve) and not _random_name(v.text[vs:ve]):
        return -1, ve  # token = someVariable2, secret = config.api.secret: code
    # The value proper, for the generic rule: a quoted string runs to its closing quote.
    qe = -1
    if quote:
        close = b.find(quote, ve, ve + 256)
        if close >= 0 and b.find(b"\n", vs, close) < 0:
            qe = close - 1 if b[close - 1] == 0x5C else close  # \"value\" in escaped JSON
    return _classify(v, t, info, vs, ve, qe, op[:1] in (b":", b","), out), ve


def _random_name(value: str) -> bool:
    """Does an identifier-shaped value look generated rather than named? Names switch
    between letters and digits once or twice (sha256Digest, accessTokenV2); random
    strings of 16+ letters and digits switch several times (l0eyi3n9b2r89v0v...)."""
    return len(S.digit_run.findall(value)) >= 3 and not _type_name(value)


class _KeyInfo:
    """What a key name says about the value assigned to it."""

    __slots__ = ("skip", "exact", "formats", "header", "generic")

    def __init__(self, skip: bool, exact: int | None, formats: tuple[_Format, ...], header: bool,
                 generic: bool) -> None:
        self.skip = skip          # nothing to find: no rule for it, or a password (the password rule's)
        self.exact = exact        # a rule for this exact spelling (_authToken, auth)
        self.formats = formats    # provider formats the key names, best first
        self.header = header      # an API-key header name
        self.generic = generic    # a secret's name (token, client_secret, apiKey, ...)


_NOTHING = _KeyInfo(True, None, (), False, False)


def _key_info(t: Tables, key: bytes) -> _KeyInfo:
    words = [w.decode().lower() for w in P.key_words.findall(key)]
    if not words or any("pass" in w or w == "pwd" for w in words):
        return _NOTHING
    bare = key.lstrip(b"$")
    glued = "".join(words)
    cands = set(words)
    cands.update(words[i] + words[i + 1] for i in range(len(words) - 1))
    cands.add(glued)
    last = words[-1]
    formats: list[_Format] = []
    if last not in _c.ID_WORDS:
        if len(words) == 1 and len(glued) > 8:  # IBMCLOUDIAMAPIKEY: the provider is inside
            cands.update(w for w in t.keyed if len(w) >= 4 and w in glued)
        for word in cands:
            formats.extend(t.keyed.get(word, ()))
    formats = sorted(set(formats), key=lambda f: f.prio)
    header = t.header is not None and bare.lower() in _c.KEY_HEADERS
    two = words[-2] + last if len(words) > 1 else ""
    generic = (t.generic is not None and cands.isdisjoint(_c.NOT_SECRET_WORDS)
               and (last in _c.SECRET_WORDS or two in _c.SECRET_WORDS
                    or (len(words) == 1 and glued.endswith(("secret", "token", "apikey", "secretkey", "accesskey")))))
    exact = t.exact.get(bare)
    if not (formats or header or generic or exact is not None):
        return _NOTHING
    return _KeyInfo(False, exact, tuple(formats), header, generic)


def _classify(v: Views, t: Tables, info: _KeyInfo, vs: int, ve: int, qe: int, header: bool,
              out: list[Hit]) -> int:
    """Which rule, if any, a value assigned to a key falls under; the end of the hit or -1."""
    value = v.text[vs:ve]
    if value in _c.DOCUMENTED_VALUES:
        return -1
    if info.exact is not None:
        if info.exact == t.basic:
            return _docker_auth(v, vs, ve, info.exact, out)
        if _variety(v, vs, ve) >= 2:
            out.append((vs, ve, info.exact))
            return ve
        return -1
    # A provider's format: a key naming it, a value of its shape.
    for f in info.formats:
        if f.fullmatch(value) and (_varied_end(v.b, vs, ve) if f.check is _ok else _randomish(v, vs, ve)):
            out.append((vs, ve, f.prio))
            return ve
    if info.header and header and t.header is not None:
        if _opaque(v, vs, ve) and not S.placeholder.fullmatch(value):
            out.append((vs, ve, t.header))
            return ve
        return -1
    if not info.generic or t.generic is None:
        return -1
    gs, ge = (vs, qe) if qe > 0 else (vs, ve)
    if not _generic_value(v, gs, ge, quoted=qe > 0):
        return -1
    out.append((gs, ge, t.generic))
    return ge


def _generic_value(v: Views, s: int, e: int, quoted: bool) -> bool:
    """A value that looks like a credential: 16+ characters, letters and digits mixed,
    no stand-in words, not code (an identifier, a call, a path, a URL)."""
    value = v.text[s:e]
    if len(value) < 16 or len(value) > 256 or " " in value:
        return False
    if not S.digit.search(value) or not S.letter.search(value) or len(set(value)) < 8:
        return False
    if S.stand_in.search(value) or S.placeholder.fullmatch(value):
        return False
    if value[0] in "/$%{<@" or "://" in value or (not quoted and v.b[e:e + 1] in (b"(", b"[")):
        return False
    if not quoted and (_code_name(value) or _in_signature(v.b, s)):
        return False  # private_key: PKCS7PrivateKeyTypes (a type), def f(token: TokenV2): code
    return True


def _type_name(word: str) -> bool:
    """Capitalised words run together (see S.type_part). Random tokens almost never
    split this way: a lone lower-case letter between capitals or digits breaks it."""
    head = S.type_head.match(word)
    rest = word[head.end():] if head else word
    return bool(rest) and "".join(S.type_part.findall(rest)) == rest


def _code_name(value: str) -> bool:
    """A type name, or a dotted path of module and type names (rsa.RSAPrivateKey)."""
    parts = value.split(".")
    return _type_name(parts[-1]) and all(S.module_name.fullmatch(p) or _type_name(p) for p in parts[:-1])


def _in_signature(b: bytes, pos: int) -> bool:
    """Is pos in a parameter list: "(" on its line (within 200 characters: a bound, so
    a huge line costs no more per candidate) before it and no ")" between?"""
    lo = pos - 200 if pos > 200 else 0
    ls = b.rfind(b"\n", lo, pos) + 1 or lo
    op = b.rfind(b"(", ls, pos)
    return op >= 0 and b.find(b")", op, pos) < 0


def _docker_auth(v: Views, s: int, e: int, prio: int, out: list[Hit]) -> int:
    """A docker config "auth" value: base64 of user:password."""
    decoded = _b64decode(v.text[s:e])
    if decoded and b":" in decoded and len(decoded) >= 5 and all(32 <= c < 127 for c in decoded):
        out.append((s, e, prio))
        return e
    return -1


# ------------------------------------------------------------- context rules (low)

_KEYWORDS = frozenset(
    "none null nil true false undefined required optional str string int bool bytes secret "
    "password passwd pwd pass yes no on off env default empty hidden masked redacted unset "
    "any object text varchar char".split()
)
_KEY_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")
# Words after which a KEY=value is shell/env/YAML-list syntax, i.e. a literal value.
_ENV_WORDS = frozenset((b"export", b"set", b"setx", b"env", b"-e", b"--env", b"-", b"declare", b"-x",
                        b"local", b"readonly"))


def _password_value(v: Views, m: re.Match[bytes]) -> tuple[int, int] | None:
    """The span of a password assignment's value, or None when it is not a literal."""
    text, low = v.text, v.low
    k, kw_end = m.span(1)
    keyword = m.group(1)
    if keyword in (b"pass", b"pwd") and (k == 0 or low[k - 1] not in b"_.-"):
        # Bare "pass"/"pwd" only as a suffix (db_pass, --pwd), as a quoted key
        # ("pass": ...) or as a YAML "pwd:" line: not bypass, compass, $PWD, "pass: 12".
        q = low[k - 1:k] if k else b""
        quoted = q in (b'"', b"'") and low[kw_end:kw_end + 1] == q
        yaml_pwd = (keyword == b"pwd" and m.group(2) == b":" and (k == 0 or low[k - 1] in b"\n \t")
                    and low[m.start(4):m.start(4) + 1] not in (b"/", b"~"))
        if not (quoted or yaml_pwd):
            return None
    key_start = k
    while key_start > 0 and low[key_start - 1] in _KEY_CHARS:
        key_start -= 1
    if key_start > 0 and low[key_start - 1] in b"\"'`":
        key_start -= 1
    op = m.group(2)
    vs, ve = m.span(4)
    raw = text[vs:ve]
    flag = low.startswith(b"--", key_start)
    if op is None and not flag:
        return None  # "the password hunter2 leaked" is prose; "--password hunter2" a flag
    if raw[:1] in "\"'`":
        inner = raw[1:-1]
        if not inner.strip() or S.placeholder.fullmatch(inner) or "\\n" in inner:
            return None  # an escaped newline: prose or a docstring, not a password
        if keyword == b"pass" and " " in inner:
            return None  # "pass": "The pass statement ..." (a bare "pass" key is ambiguous)
        if S.field_name.fullmatch(inner):
            return None  # CHALLENGE_PASSWORD: "challengePassword": a field's name, not its value
        return vs + 1, ve - 1
    floor = max(0, key_start - 200)
    nl = low.rfind(b"\n", floor, key_start)
    if nl < 0 and floor > 0:
        line_start = False  # more than 200 characters into a line: not a KEY=value line
    else:
        words = low[nl + 1:key_start].split()
        line_start = not words or words[-1] in _ENV_WORDS
    query = key_start > 0 and low[key_start - 1] in b"?&"
    value = raw.rstrip(",;")  # key=None, / "password": str, : the comma is syntax
    cut = None if (line_start or flag) else S.cut_query if query else S.cut
    if cut is not None:
        c = cut.search(value)
        if c:
            value = value[:c.start()]
    if len(value) < 3 or value.lower() in _KEYWORDS or S.placeholder.fullmatch(value):
        return None
    if value[0] in "$%{<:?@!&*=#\\([":
        return None  # ${VAR}, %s, :param, ?, @Value, !vault, (a + b): references or code
    head = S.ident.match(value)
    if head and value[head.end():head.end() + 1] in ("(", "["):
        return None  # getpass(), os.environ[...], Optional[str]: code, not a literal
    ve = vs + len(value)
    if S.ident.fullmatch(value):
        if "." in value or text[ve:ve + 1] in ("(", "["):
            return None  # args.password, getpass(), os.environ[...]: code, not a literal
        if not S.digit.search(value):
            # A bare word is a literal in .env, a query string, a flag or a YAML line,
            # but a variable in code (password=password, password = secret), and prose
            # after a flag ("the --password option").
            if op is None:
                return None
            tight = low[kw_end:vs].strip(b"\"'`") in (b"=", b":")
            rest = low[ve:ve + 64].split(b"\n", 1)[0].strip()  # bounded: no rescanning long lines
            yaml_like = (op == b":" and (not rest or rest[:1] in (b",", b"}", b"#"))
                         and not _in_signature(v.b, key_start))  # def f(shrink_pass: PassKind,
            at_col0 = key_start == 0 or low[key_start - 1] == 0x0A  # INI keys start lines
            ini = at_col0 and op == b"=" and v.in_ini_section(key_start)
            if not (flag or query or yaml_like or ini or (line_start and tight and op == b"=")):
                return None
    return vs, ve


def scan_password(v: Views, prio: int, out: list[Hit]) -> None:
    low = v.low
    for literal, rx in ((b"pass", P.password), (b"pwd", P.password_pwd)):
        for m in _at(low, literal, rx):
            span = _password_value(v, m)
            if span is not None:
                out.append((span[0], span[1], prio))
    if b"password>" in low:
        for m in P.password_xml.finditer(low):
            s, e = m.span(2)
            inner = v.text[s:e].strip()
            if inner and not S.placeholder.fullmatch(inner):
                out.append((s, e, prio))
    if b"<add" in low:  # NuGet.config: <add key="ClearTextPassword" value="..." />
        for m in _at(low, b"<add", P.nuget):
            s, e = m.span(1)
            if not S.placeholder.fullmatch(v.text[s:e]):
                out.append((s, e, prio))


def scan_curl_user(v: Views, prio: int, out: list[Hit]) -> None:
    """curl/wget -u user:password, --user user:password, mysql -pPASSWORD (the password)."""
    b, low, text = v.b, v.low, v.text
    for m in _at(low, b"mysql", P.mysql_p):
        s, e = m.span(1)
        # -p glued to its value is the password; -P3306 (capital) is the port.
        if text[s - 1] == "p" and text[s] not in "$%{<" and not S.placeholder.fullmatch(text[s:e]):
            out.append((s, e, prio))
    for m in _at(b, b"-u", P.curl_user):
        s, e = m.span(1)
        pw = v.text[s:e]
        if pw[0] in "$%{<" or S.placeholder.fullmatch(pw):
            continue
        out.append((s, e, prio))


def scan_aws_secret(v: Views, prio: int, out: list[Hit]) -> None:
    low = v.low
    for m in _at(low, b"secret", P.aws_secret):
        if not m.group(1) and b"aws" not in low[max(0, m.start() - 12):m.start()]:
            continue  # a bare secret_key = "..." is not AWS's unless the key says so
        s, e = m.span(2)
        if _variety(v, s, e) >= 2:
            out.append((s, e, prio))


# Schemes whose "credentials" are a per-request signature or a login name, not a
# reusable secret.
_SIGNED_SCHEMES = frozenset((b"digest", b"aws4-hmac-sha256", b"hmac", b"signature", b"negotiate", b"ntlm"))


def scan_auth(v: Views, bearer: int | None, basic: int | None, okta: int | None, out: list[Hit]) -> None:
    """Authorization headers: Basic credentials that decode to user:password, and any
    other scheme's (Bearer, token, SSWS, Bot, ...) opaque credentials."""
    low = v.low
    text = v.text
    for m in _at(low, b"authorization", P.auth):
        s, e = m.span(2)
        value = text[s:e]
        scheme = m.group(1)
        if scheme == b"basic":
            if basic is None:
                continue
            decoded = _b64decode(value)  # the scheme's own check: base64 of "user:password"
            if decoded and b":" in decoded and all(32 <= c < 127 for c in decoded):
                out.append((s, e, basic))
        elif scheme not in _SIGNED_SCHEMES and bearer is not None:
            if scheme is None and (S.ident.fullmatch(value) or text[e:e + 1] in ("(", "[", ".")):
                continue  # authorization = base64.decodebytes(...): code, not a credential
            if len(value) >= 12 and _opaque(v, s, e) and not S.placeholder.fullmatch(value):
                out.append((s, e, okta if scheme == b"ssws" and okta is not None else bearer))


def _ssn_ok(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    # Numbers printed in advertising and on sample cards, famous enough to be examples.
    return digits not in ("078051120", "219099999", "123456789")


def scan_ssn_ctx(v: Views, prio: int, out: list[Hit]) -> None:
    low = v.low
    for literal, rx in ((b"ssn", P.ssn_ctx), (b"social security", P.ssn_ctx2)):
        for m in _at(low, literal, rx):
            s, e = m.span(1)
            if _ssn_ok(v.text[s:e].replace(" ", "")):
                out.append((s, e, prio))


# ------------------------------------------------------------ structure rules (cls)

_DOUBLE = str.maketrans("0123456789", "0246813579")  # 2d, minus 9 when above 9


def _luhn(digits: str) -> bool:
    # Sums of ASCII codes stay in C; every digit contributes 48 too much.
    kept, doubled = digits[-1::-2], digits[-2::-2].translate(_DOUBLE)
    total = sum(kept.encode()) + sum(doubled.encode()) - 48 * len(digits)
    return total % 10 == 0


def _issuer_ok(d: str) -> bool:
    """Length fits the issuer named by the first digits (IIN): cuts most random numbers."""
    n = len(d)
    two, four = int(d[:2]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if 2200 <= four <= 2204:
        return 16 <= n <= 19  # Mir
    if two in (34, 37):
        return n == 15  # American Express
    if two in (36, 38, 39) or 300 <= int(d[:3]) <= 305:
        return 14 <= n <= 19  # Diners Club
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if d[0] == "6":
        return 16 <= n <= 19  # Discover, UnionPay, Maestro, RuPay
    if two in (50, 56, 57, 58):
        return 13 <= n <= 19  # Maestro
    if two in (81, 82):
        return n == 16  # RuPay
    return False


# Numbers the payment processors publish for testing (Stripe, Braintree, Adyen, PayPal):
# pasted from their documentation, they identify no one, and redacting them would
# break the very conversations about integrating a payment form.
TEST_CARDS = frozenset((
    "4242424242424242", "4000056655665556", "4111111111111111", "4012888888881881", "4222222222222",
    "4000000000000002", "4000000000009995", "4000000000000077", "4000000000000341", "4000002500003155",
    "4000002760003184", "4000000000003220", "4000000000000101", "4000000000000127", "4000000000000119",
    "4000000000000069", "4000000000000036", "4000000000000010", "4000000000000028", "4000000000000259",
    "4000000000005126", "4000008400001629", "4100000000000019", "4000000000009235", "4000000000009979",
    "4000000000009987", "4009348888881881", "4005519200000004", "4012000033330026", "4012000077777777",
    "4217651111111119", "4500600000000061", "5555555555554444", "2223003122003222", "5200828282828210",
    "5105105105105100", "5500000000000004", "5431111111111111", "2223000048400011", "378282246310005",
    "371449635398431", "378734493671000", "6011111111111117", "6011000990139424", "6011981111111113",
    "6011601160116611", "3056930009020004", "36227206271667", "30569309025904", "38520000023237",
    "3566002020360505", "3530111333300000", "3566111111111113", "6200000000000005", "6205500000000000004",
))


def _card_ok(digits: str) -> bool:
    return _issuer_ok(digits) and _luhn(digits) and len(set(digits)) > 1 and digits not in TEST_CARDS


def _digit_after(cls: bytes, e: int, seps: bytes) -> bool:
    """True when position e continues a number or code: an alphanumeric, or a separator
    then an alphanumeric (4111111111111111.5, 123-45-6789-A)."""
    c = cls[e:e + 1]
    if c in (b"0", b"A", b"a", b"_"):
        return True
    return bool(c) and c in seps and cls[e + 1:e + 2] in (b"0", b"A", b"a")


def scan_cards(v: Views, prio: int, out: list[Hit]) -> None:
    cls, text = v.cls, v.text
    find = cls.find
    s = find(b"0000000000000")
    while s >= 0:
        e = P.run0.match(cls, s).end()  # the whole digit run: its inside is never revisited
        # Unseparated, only 13-16 digits: 17-19 are rare on cards but common as 64-bit
        # integers (hashes, ids), of which ~4% pass the issuer and Luhn checks.
        if (13 <= e - s <= 16 and (s == 0 or cls[s - 1] not in b"0Aa_.+-/")  # /feature/5068609911521280: an id
                and not _digit_after(cls, e, b".-") and _card_ok(text[s:e])):
            out.append((s, e, prio))
        s = find(b"0000000000000", e)
    for m in P.card_grouped.finditer(cls):
        s, e = m.span()
        sep = text[s + 4]
        ends = [e]
        if e - s == 23:  # 4-4-4-4-3: the last group may be a CVV rather than digits 17-19
            ends.append(e - 4)
        for end in ends:
            tail = cls[end:end + 5]
            if tail[:1] in (b"0", b"A", b"a", b"_") or tail == (sep.encode() + b"0000"):
                continue  # more digits follow: part of a longer number
            if _card_ok(text[s:end].replace(sep, "")):
                out.append((s, end, prio))
                break


def scan_ssn(v: Views, prio: int, out: list[Hit]) -> None:
    cls, text = v.cls, v.text
    for m in _at(cls, b"000-00-0000", P.ssn):
        s, e = m.span()
        if _digit_after(cls, e, b".-"):
            continue
        if _ssn_ok(text[s:e].replace("-", "")):
            out.append((s, e, prio))


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


_IBAN_DIGITS = {ord(c): str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def iban_valid(iban: str) -> bool:
    """Country, length and the ISO 7064 mod-97 check of a compact upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not "02" <= iban[2:4] <= "98":
        return False
    return int((iban[4:] + iban[:4]).translate(_IBAN_DIGITS)) % 97 == 1


def scan_iban(v: Views, prio: int, out: list[Hit]) -> None:
    cls, text = v.cls, v.text
    for m in _at(cls, b"AA00", P.iban):
        s, e = m.span()
        length = IBAN_LENGTHS.get(text[s:s + 2])
        if length is None:
            continue
        # Take exactly `length` characters; in the grouped form the rest of the match
        # may be a following word or number, which must then begin after a space.
        grouped = cls[s + 4:s + 5] == b" "
        end = s + length + ((length - 1) // 4 if grouped else 0)
        if end > e or (end < e and text[end] != " ") or _digit_after(cls, end, b""):
            continue
        if iban_valid(text[s:end].replace(" ", "")):
            out.append((s, end, prio))


# --------------------------------------------------------------- plain-view rules

def scan_url_password(v: Views, prio: int, out: list[Hit]) -> None:
    b, text = v.b, v.text
    for m in _at(b, b"://", P.url_password):
        s, e = m.span(2)
        pw = text[s:e]
        if "?" in pw or "?" in text[m.start(1):m.end(1)]:
            continue  # a real "?" ends the authority: this "@" is in the query string
        if S.placeholder.fullmatch(pw) or pw[0] in "$%{":
            continue
        out.append((s, e, prio))


_FILE_TLDS = frozenset(
    "png jpg jpeg gif svg webp ico bmp tif tiff js mjs cjs ts tsx jsx css scss less html htm json "
    "yaml yml toml lock txt log csv tsv xml py pyc rb go rs java kt class c h cpp hpp o so dll exe "
    "bin zip gz tgz bz2 xz tar whl jar war md rst pdf mp3 mp4 mov wav ttf woff woff2 map".split()
)


_SSH_WORDS = frozenset((b"ssh", b"scp", b"sftp", b"rsync", b"mosh", b"autossh", b"ssh-copy-id"))


def _ssh_line(b: bytes, pos: int) -> bool:
    """Is pos on a command line that starts with ssh, scp, rsync...?"""
    start = b.rfind(b"\n", max(0, pos - 300), pos) + 1 or max(0, pos - 300)
    words = b[start:min(pos, start + 40)].split(None, 2)
    if words and words[0] in (b"$", b"#", b">"):
        words = words[1:]
    # ...and the same command: "ssh host; mail jane@example.com" is not.
    return bool(words) and words[0] in _SSH_WORDS and not P.shell_sep.search(b, start, pos)


def scan_email(v: Views, prio: int, out: list[Hit]) -> None:
    b, text = v.b, v.text
    if b"@" not in b:
        return
    urls = b"://" in b  # most texts can skip the URL-authority check entirely
    for m in P.email_at.finditer(b):
        at, e = m.start(), m.end()
        if b.find(b"@", at + 1, e) >= 0:
            continue  # the chain branch
        window = b[max(0, at - 65):at][::-1]
        lm = P.email_local.match(window)
        if lm is None:
            continue
        ls = at - lm.end()
        if lm.end() == 64 and ls > 0 and P.email_local.match(b, ls - 1):
            continue  # local part longer than 64: not an address
        local = text[ls:at]
        # In `b` a "?" is a real one or a non-ASCII letter (kept: josé@...); a real one
        # is punctuation before the address.
        q = local.rfind("?")
        if q >= 0:
            ls += q + 1
            local = local[q + 1:]
        while local and local[0] in ".-+%_":
            ls += 1
            local = local[1:]
        if not local:
            continue
        domain = text[at + 1:e]
        labels = domain.split(".")
        if labels[-1].lower() in _FILE_TLDS or S.retina.fullmatch(labels[0]):
            continue  # icon@2x.png, pkg@lib.js
        nxt = text[e:e + 2]
        if nxt[:1] == "(" or (nxt[:1] == ":" and nxt[1:2] not in ("", " ", "\n", "\t", "\r")):
            continue  # method call, or scp-style git@host:org/repo
        if _ssh_line(b, ls):
            continue  # ssh deploy@host.example.com: a login on a host, not an address
        if urls:
            i = b.rfind(b"://", max(0, ls - 256), ls)
            if i >= 0 and not P.space_or_slash.search(b, i + 3, ls):
                continue  # user@host inside a URL's authority: url_password's business
        out.append((ls, e, prio))


def scan_phone(v: Views, prio: int, out: list[Hit]) -> None:
    b, text = v.b, v.text
    if b"+" not in b:
        return
    for m in P.phone.finditer(b):
        s, e = m.span()
        number = text[s:e]
        digits = sum(ch.isdigit() for ch in number)
        if not 8 <= digits <= 15:
            continue
        if text[e:e + 1].isalnum() or "  " in number or "--" in number or ".." in number:
            continue
        if number.count("(") != number.count(")") or number.count("(") > 1:
            continue
        out.append((s, e, prio))


def scan_pem(v: Views, prio: int, out: list[Hit]) -> None:
    b = v.b
    if b"-----BEGIN" not in b:
        return
    pos = 0
    # The next well-formed END line at or after `searched`; -1 when there is none. Kept
    # between BEGINs so that no stretch of text is searched twice (malformed ENDs and
    # BEGIN after BEGIN would otherwise make this quadratic).
    end_at, end_end, searched = -1, -1, 0
    while True:
        s = b.find(b"-----BEGIN ", pos)
        if s < 0:
            return
        m = P.pem_begin.match(b, s)
        if m is None:
            pos = s + 1
            continue
        hdr_end = m.end()
        if end_at < hdr_end and searched <= hdr_end:
            end_at, i = -1, b.find(b"-----END ", hdr_end)
            while i >= 0:
                em = P.pem_end.match(b, i)
                if em:
                    end_at, end_end = i, em.end()
                    break
                i = b.find(b"-----END ", i + 1)
            searched = len(b) if end_at < 0 else end_at
        end = end_end if end_at >= hdr_end else -1
        if end >= 0 and b.find(b"-----BEGIN ", hdr_end, end_at) >= 0:
            end = -1  # that END closes a later block: this one was cut short
        if end < 0:
            # A truncated paste still leaks key material: take the base64 body that follows.
            end = P.pem_body.match(b, hdr_end).end()
            while end > hdr_end and b[end - 1] in b" \t\r\n":
                end -= 1
        if P.b64_16.search(b, hdr_end, end) is None:
            pos = hdr_end  # a bare header (a constant in code, a doc): no key material
            continue
        out.append((s, end, prio))
        pos = max(end, hdr_end)


def _putty(v: Views, prio: int, out: list[Hit]) -> None:
    """PuTTY .ppk files: the lines after "Private-Lines: N" are the private key."""
    b = v.b
    i = b.find(b"PuTTY-User-Key-File-")
    while i >= 0:
        m = P.putty_lines.search(b, i, i + 4000)
        if m is None:
            return
        s = e = m.end()
        for _ in range(min(int(m.group(1)), 200)):
            nl = b.find(b"\n", e)
            if nl < 0:
                e = len(b)
                break
            e = nl + 1
        while e > s and b[e - 1] in b"\r\n":
            e -= 1
        if e > s:
            out.append((s, e, prio))
        i = b.find(b"PuTTY-User-Key-File-", max(e, i + 1))


def scan_private_keys(v: Views, prio: int, out: list[Hit]) -> None:
    scan_pem(v, prio, out)
    b = v.b
    begin, end = b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", b"---- END SSH2 ENCRYPTED PRIVATE KEY ----"
    i = b.find(begin)
    e = b.find(end, i) if i >= 0 else -1
    while i >= 0 and e >= 0:
        nxt = b.find(begin, i + len(begin), e)
        if nxt < 0:  # the BEGIN nearest its END is the block (an earlier one was cut short)
            out.append((i, e + len(end), prio))
            i = b.find(begin, e)
            e = b.find(end, i) if i >= 0 else -1
        else:
            i = nxt
    if b"PuTTY-User-Key-File-" in b:
        _putty(v, prio, out)


def markers(v: Views) -> list[tuple[int, int]]:
    """Spans of existing [REDACTED:rule] markers, which no new redaction may touch."""
    return [m.span() for m in _at(v.b, b"[REDACTED:", P.marker)]


# ----------------------------------------------------------- rules keyed on a literal

def _with_scheme(b: bytes, s: int) -> int:
    for scheme in (b"https://", b"http://"):
        if b[s - len(scheme):s] == scheme:
            return s - len(scheme)
    return s


def scan_webhooks(v: Views, slack: int | None, discord: int | None, teams: int | None,
                  out: list[Hit]) -> None:
    """Slack, Discord and Teams webhook URLs, found where "hook" occurs: one pass for all."""
    b = v.b
    find = b.find
    i = find(b"hook")
    while i >= 0:
        nxt = i + 4
        if slack is not None and b.startswith(b"hooks.slack.com/", i):
            m = P.hook_slack.match(b, i)
            if m:
                out.append((_with_scheme(b, i), m.end(), slack))
                nxt = m.end()
        elif discord is not None and b.startswith(b"hooks/", i) and b[i - 7:i] == b"api/web":
            for back in (19, 22):  # discord.com/api/web, discordapp.com/api/web
                m = P.hook_discord.match(b, i - back) if i >= back else None
                if m:
                    out.append((_with_scheme(b, i - back), m.end(), discord))
                    nxt = m.end()
                    break
        elif teams is not None and b.startswith(b"hook.office.com/", i) and b[i - 3:i] == b"web":
            m = P.hook_teams.match(b, i - 3)
            if m:
                host = P.host_rev.match(b[max(0, i - 68):i - 3][::-1]).end()
                out.append((_with_scheme(b, i - 3 - host), m.end(), teams))
                nxt = m.end()
        i = find(b"hook", nxt)


def _k8s_values(v: Views, lo: int, hi: int, prio: int, out: list[Hit]) -> None:
    """Redact the values under data: / stringData: between lo and hi."""
    b = v.b
    for indent, pos in _k8s_sections(b, lo, hi):
        while pos < hi:
            e = P.k8s_yaml_entry.match(b, pos, hi)
            if e is None or len(e.group(1)) <= indent:
                break
            deep = len(e.group(1))
            vs, ve = e.span(3)
            raw = b[vs:ve].rstrip()
            pos = e.end() + 1
            if raw in (b"|", b"|-", b"|+", b">", b">-", b">+"):
                # A block scalar: the more deeply indented lines after it.
                bs = be = pos
                while be < hi:
                    nl = b.find(b"\n", be, hi)
                    line_end = nl if nl >= 0 else hi
                    line = b[be:line_end]
                    if line.strip() and len(line) - len(line.lstrip(b" \t")) <= deep:
                        break
                    be = line_end + 1 if nl >= 0 else hi
                end = min(be, hi)
                while end > bs and b[end - 1] in b" \t\r\n":
                    end -= 1
                first = bs + len(b[bs:end]) - len(b[bs:end].lstrip())
                if end > first:
                    out.append((first, end, prio))
                pos = be
                continue
            ve = vs + len(raw)
            if raw[:1] in (b'"', b"'") and raw[-1:] == raw[:1] and len(raw) >= 2:
                vs, ve = vs + 1, ve - 1
            value = v.text[vs:ve]
            if ve > vs and not S.placeholder.fullmatch(value) and value not in ("~", "null"):
                out.append((vs, ve, prio))
    i = b.find(b'ata"', lo, hi)
    while i >= 0:
        m = P.k8s_json_data.match(b, i - 2 if b[i - 2:i] == b'"d' else i - 8, hi)
        i = b.find(b'ata"', i + 4, hi)
        if m is None:
            continue
        pos = m.end()
        while True:
            e = P.k8s_json_entry.match(b, pos, hi)
            if e is None:
                break
            vs, ve = e.span(1)
            if not S.placeholder.fullmatch(v.text[vs:ve]):
                out.append((vs, ve, prio))
            pos = e.end()


def _k8s_sections(b: bytes, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """YAML "data:" and "stringData:" keys alone on their line between lo and hi: their
    indentation and where the line after them starts. Found by literal, not by a
    line-anchored pattern (which would be tried at every byte)."""
    i = b.find(b"ata:", lo, hi)
    while i >= 0:
        if b[i - 1:i] == b"d":
            key_s = i - 1
        elif b[i - 7:i] == b"stringD":
            key_s = i - 7
        else:
            key_s = -1
        if key_s >= 0:
            ls = b.rfind(b"\n", lo, key_s) + 1 or lo
            nl = b.find(b"\n", i + 4, hi)
            nl = hi if nl < 0 else nl
            if not b[ls:key_s].strip(b" \t") and b[i + 4:nl].strip(b" \t\r")[:1] in (b"", b"#"):
                yield key_s - ls, nl + 1
        i = b.find(b"ata:", i + 4, hi)


def _yaml_block(b: bytes, pos: int) -> tuple[int, int]:
    """The YAML mapping around the line at pos: the lines next to it that are blank,
    comments, indented, or top-level "key:" lines (prose ends it, as does a second
    top-level "kind:", which starts another object). At most 3000 characters before
    and 8000 after."""
    ls = b.rfind(b"\n", 0, pos) + 1
    lo = ls
    floor = max(0, ls - 3000)
    while lo > floor:
        prev = b.rfind(b"\n", floor, lo - 1) + 1 or floor
        if not _yaml_line(b[prev:lo - 1]):
            break
        lo = prev
    hi = b.find(b"\n", pos)
    ceiling = min(len(b), pos + 8000)
    hi = ceiling if hi < 0 or hi > ceiling else hi
    while hi < ceiling:
        nxt = b.find(b"\n", hi + 1, ceiling)
        nxt = ceiling if nxt < 0 else nxt
        if not _yaml_line(b[hi + 1:nxt]):
            break
        hi = nxt
    return lo, hi


def _yaml_line(line: bytes) -> bool:
    stripped = line.strip()
    if not stripped or stripped[:1] == b"#" or line[:1] in (b" ", b"\t") or line.startswith(b"---"):
        return True
    return P.yaml_top_key.match(line) is not None and not line.startswith(b"kind:")


def scan_k8s_secret(v: Views, prio: int, out: list[Hit]) -> None:
    """Kubernetes Secret manifests: every value under data: (base64 of the secret) and
    stringData: (the secret itself), within the manifest: its YAML mapping, or for JSON
    the paragraph around it."""
    b = v.b
    done = 0
    for m in _at(b, b"kind", P.k8s_kind):
        if m.start() < done:
            continue
        if b[m.start() - 1:m.start()] in (b'"', b"'"):  # JSON: the paragraph around it
            lo = b.rfind(b"\n\n", max(0, m.start() - 1500), m.start())
            lo = max(0, m.start() - 1500) if lo < 0 else lo + 2
            hi = b.find(b"\n\n", m.end(), m.end() + 6000)
            hi = min(len(b), m.end() + 6000) if hi < 0 else hi
        else:
            lo, hi = _yaml_block(b, m.start())
        _k8s_values(v, max(lo, done), hi, prio, out)
        done = hi


def scan_azure_sas(v: Views, prio: int, out: list[Hit]) -> None:
    """The sig= of an Azure shared access signature: a query string that also carries
    the service version (sv=) and an expiry or permissions (se=, sp=). The query is
    read at most 600 characters back and 400 on, so a huge line costs no more."""
    b = v.b
    pos = b.find(b"sig=")
    while pos >= 0:
        if pos > 0 and b[pos - 1] in b"?&":
            lo = pos - 600 if pos > 600 else 0
            q = max(b.rfind(c, lo, pos) for c in (b"?", b" ", b"\n", b'"', b"'"))
            m = P.sas_end.search(b, pos, pos + 400)
            end = m.start() if m else min(len(b), pos + 400)
            names = {m.group(1) for m in P.sas_query.finditer(b, q if q >= 0 else lo, end)}
            if b"sv" in names and (b"se" in names or b"sp" in names):
                vs = pos + 4
                ve = b.find(b"&", vs, end)
                ve = end if ve < 0 else ve
                if ve - vs >= 20:
                    out.append((vs, ve, prio))
        pos = b.find(b"sig=", pos + 4)


def _ip_kept(address: str) -> bool:
    """Addresses that identify no one: loopback, unspecified, broadcast, netmasks and
    the documentation ranges (RFC 5737, RFC 3849)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return True
    if ip.version == 4:
        return (address.startswith(("255.", "192.0.2.", "198.51.100.", "203.0.113.")))
    return ip in ipaddress.ip_network("2001:db8::/32")


def scan_ip(v: Views, prio: int, out: list[Hit]) -> None:
    b, text = v.b, v.text
    for m in P.ipv4.finditer(b):
        s, e = m.span()
        before = b[max(0, s - 8):s].lower()
        if before.endswith((b"v", b"version ", b"/")):
            continue  # v1.2.3.4, version 1.2.3.4, Chrome/120.0.0.0
        if not _ip_kept(text[s:e]):
            out.append((s, e, prio))
    if b"::" not in b and b.count(b":") < 7:
        return
    for m in P.ipv6.finditer(b):
        s, e = m.span()
        address = text[s:e]
        if len(address) < 6 or not S.digit.search(address):
            continue  # dead::beef, a::b (C++ scopes)
        if not _ip_kept(address):
            out.append((s, e, prio))


# Scanners other than the token pass: (rules they report, function(v, on, prio, out)).
Scanner = Callable[[Views, Collection[str], dict[str, int], list[Hit]], None]


def _one(rule: str, fn: Callable[[Views, int, list[Hit]], None]) -> tuple[tuple[str, ...], Scanner]:
    def run(v: Views, on: Collection[str], prio: dict[str, int], out: list[Hit]) -> None:
        fn(v, prio[rule], out)
    return (rule,), run


def _p(on: Collection[str], prio: dict[str, int], rule: str) -> int | None:
    return prio[rule] if rule in on else None


def _auth(v: Views, on: Collection[str], prio: dict[str, int], out: list[Hit]) -> None:
    scan_auth(v, _p(on, prio, "bearer_token"), _p(on, prio, "basic_auth"), _p(on, prio, "okta_token"), out)


def _hooks(v: Views, on: Collection[str], prio: dict[str, int], out: list[Hit]) -> None:
    scan_webhooks(v, _p(on, prio, "slack_webhook"), _p(on, prio, "discord_webhook"),
                  _p(on, prio, "teams_webhook"), out)


SCANNERS: tuple[tuple[tuple[str, ...], Scanner], ...] = (
    _one("pem_private_key", scan_private_keys),
    (("slack_webhook", "discord_webhook", "teams_webhook"), _hooks),
    _one("aws_secret_key", scan_aws_secret),
    (("bearer_token", "basic_auth"), _auth),
    _one("password", scan_curl_user),
    _one("url_password", scan_url_password),
    _one("password", scan_password),
    _one("kubernetes_secret", scan_k8s_secret),
    _one("azure_sas_token", scan_azure_sas),
    _one("credit_card", scan_cards),
    _one("iban", scan_iban),
    _one("us_ssn", scan_ssn),
    _one("us_ssn", scan_ssn_ctx),
    _one("email", scan_email),
    _one("phone", scan_phone),
    _one("ip_address", scan_ip),
)
