"""The built-in detection rules behind sessctl.sanitize (the contract lives there).

Every scanner works on byte views of the text that keep one byte per code point
(`text.encode("ascii", "replace")`), so a match offset is also an offset into the str:

    b    the text, non-ASCII code points replaced by "?"
    low  b.lower() (ASCII-only, so lengths never change): case-insensitive keywords
    cls  character classes: digit -> "0", A-Z -> "A", a-z -> "a", the rest unchanged
    tok  token classes: [A-Za-z0-9_-] -> "a", everything else -> " "

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
from typing import Any, NamedTuple


class RuleSpec(NamedTuple):
    name: str
    description: str
    example: str  # FAKE, and redacted by its own rule (a test checks this)
    default: bool


# Priority order: when hits overlap, the merged redaction is labelled with the rule
# listed first, so the specific formats come before the generic context rules (an
# OpenAI key after "Authorization: Bearer" is reported as openai_key).
RULES: tuple[RuleSpec, ...] = (
    RuleSpec("pem_private_key", "PEM private key block (RSA, EC, DSA, OpenSSH, PKCS#8, PGP)",
             "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANFAKEFAKEFAKEFAKEkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
             True),
    RuleSpec("jwt", "JSON Web Token whose header decodes to JSON naming alg/typ/enc",
             "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmYWtlLXVzZXIifQ.RkFLRS1zaWduYXR1cmUtMDAwMA",
             True),
    RuleSpec("anthropic_key", "Anthropic API key (sk-ant-...)",
             "sk-ant-api03-FAKEfake0000EXAMPLEexample1111FAKEfake2222EXAMPLEexample3333-AA", True),
    RuleSpec("openrouter_key", "OpenRouter API key (sk-or-v1-...)",
             "sk-or-v1-0000fake0000fake0000fake0000fake0000fake0000fake0000fake0000", True),
    RuleSpec("openai_key", "OpenAI-style secret key (sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...)",
             "sk-proj-FAKE0000example1111FAKE2222example3333FAKE", True),
    RuleSpec("google_api_key", "Google / Gemini API key (AIza + 35 characters)",
             "AIzaSyFAKE00example00FAKE00example00000", True),
    RuleSpec("huggingface_token", "Hugging Face access token (hf_...)",
             "hf_FAKEexampleFAKEexampleFAKEexample00", True),
    RuleSpec("groq_key", "Groq API key (gsk_...)",
             "gsk_FAKE0000example1111FAKE2222example3333FAKE4444exam", True),
    RuleSpec("xai_key", "xAI API key (xai-...)",
             "xai-FAKE0000example1111FAKE2222example3333FAKE4444example5555", True),
    RuleSpec("replicate_token", "Replicate API token (r8_...)",
             "r8_FAKE0000example1111FAKE2222example33", True),
    RuleSpec("perplexity_key", "Perplexity API key (pplx-...)",
             "pplx-FAKE0000example1111FAKE2222example3333FAKE4444", True),
    RuleSpec("aws_access_key", "AWS access key id (AKIA/ASIA/ABIA/ACCA + 16)",
             "AKIAIOSFODNN7EXAMPLE", True),
    RuleSpec("aws_secret_key", "AWS secret access key (40 characters after aws_secret_access_key, SecretAccessKey...)",
             "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", True),
    RuleSpec("github_token", "GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
             "ghp_FAKE0000example1111FAKE2222example33", True),
    RuleSpec("gitlab_token", "GitLab token (glpat-, gldt-, glrt-, glptt-, ...)",
             "glpat-FAKE0000example1111xx", True),
    RuleSpec("slack_webhook", "Slack incoming webhook URL",
             "https://hooks.slack.com/services/T00000000/B00000000/FAKEFAKEFAKEFAKEFAKE0000", True),
    RuleSpec("slack_token", "Slack token (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe-, xapp-)",
             "xoxb-000000000000-0000000000000-FAKEfakeFAKEfakeFAKEfake", True),
    RuleSpec("stripe_key", "Stripe secret, restricted or webhook key (sk_live_, sk_test_, rk_*, whsec_)",
             "sk_test_FAKE0000example1111FAKE2222", True),
    RuleSpec("twilio_key", "Twilio API key SID (SK + 32 hex) or auth token after TWILIO_AUTH_TOKEN",
             "SK0000fa4e0000fa4e0000fa4e0000fa4e", True),
    RuleSpec("sendgrid_key", "SendGrid API key (SG.xxx.yyy)",
             "SG.FAKE0000example111122.FAKE0000example1111FAKE2222example3333FAKE", True),
    RuleSpec("npm_token", "npm access token (npm_...) or _authToken= in .npmrc",
             "npm_FAKE0000example1111FAKE2222example33", True),
    RuleSpec("pypi_token", "PyPI / TestPyPI API token (pypi-Ag...)",
             "pypi-AgEIcHlwaS5vcmcFAKE0000example1111FAKE2222example3333FAKE4444example", True),
    RuleSpec("bearer_token", "Bearer/token credentials in an Authorization header",
             "Authorization: Bearer FAKEtoken0000example1111", True),
    RuleSpec("basic_auth", "Basic credentials in an Authorization header (base64 of user:password)",
             "Authorization: Basic ZmFrZXVzZXI6ZmFrZXBhc3N3b3Jk", True),
    RuleSpec("api_key_header", "secret in an API-key header (x-api-key, api-key, x-auth-token, private-token, ...)",
             "x-api-key: FAKE0000example1111FAKE", True),
    RuleSpec("url_password", "password in scheme://user:password@host (only the password is redacted)",
             "postgres://app:FAKEpass0000@db.example.com:5432/app", True),
    RuleSpec("password", "password / passwd / passphrase / *_pass / *_pwd assignment, curl -u user:PASS (the value)",
             'password = "FAKE-hunter2-example"', True),
    RuleSpec("credit_card", "payment card number: known issuer prefix and length, Luhn check",
             "4111 1111 1111 1111", True),
    RuleSpec("iban", "IBAN: known country and length, mod-97 check",
             "GB82 WEST 1234 5698 7654 32", True),
    RuleSpec("us_ssn", "US Social Security number (ddd-dd-dddd; other forms after 'SSN')",
             "SSN 123-45-6780", True),
    RuleSpec("email", "email address", "jane.doe@example.com", True),
    RuleSpec("phone", "phone number in international form (+CC ...); opt-in, being noisy",
             "+1 202 555 0143", False),
)

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


class Views:
    """One text and its byte views, each computed on first use."""

    __slots__ = ("text", "b", "_low", "_cls", "_tok", "_ini")

    def __init__(self, text: str) -> None:
        self.text = text
        # "replace" turns each non-ASCII code point into exactly one "?", so offsets agree.
        self.b = text.encode("ascii", "replace")
        self._low: bytes | None = None
        self._cls: bytes | None = None
        self._tok: bytes | None = None
        self._ini: list[int] | None = None

    @property
    def low(self) -> bytes:
        if self._low is None:
            self._low = self.b.lower()
        return self._low

    @property
    def cls(self) -> bytes:
        if self._cls is None:
            self._cls = self.b.translate(_CLS)
        return self._cls

    @property
    def tok(self) -> bytes:
        if self._tok is None:
            self._tok = self.b.translate(_TOK)
        return self._tok

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


_T = rb"[A-Za-z0-9_-]"  # token character (base64url alphabet)
# After a password keyword: an optional closing quote, then := => = : (group 2) or,
# after --password, blanks (group 3), then a quoted or bare value (group 4).
_PW_TAIL = (rb"(?![a-z0-9_])[\"'`]?[ \t]{0,16}"
            rb"(?:(:=|=>|=(?![=>])|:(?![:/]))[ \t]{0,16}|([ \t]+))"
            rb"(\"(?:[^\"\\\r\n]|\\.){0,256}\"|'(?:[^'\\\r\n]|\\.){0,256}'|`[^`\r\n]{0,256}`"
            rb"|[^\s\"'`]{1,256})")
_SEP = rb"""["'`]?[ \t]{0,16}(?::=|=>|=(?![=>])|:(?![:/]))[ \t]{0,16}["'`]?"""  # key ... = / : ... value

P = _Lazy(
    run0=rb"0+",
    # Formats dispatched from the start of a token run (see _TOKEN_RULES).
    anthropic=rb"sk-ant-" + _T + rb"{20,}",
    openrouter=rb"sk-or-" + _T + rb"{20,}",
    openai=rb"sk-(?!ant-|or-)(?:(?:proj|svcacct|admin|None)-)?" + _T + rb"{20,}",
    stripe=rb"(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,})(?![A-Za-z0-9_-])",
    google=rb"AIza" + _T + rb"{35}(?!" + _T + rb")",
    huggingface=rb"hf_[A-Za-z0-9]{30,}(?!" + _T + rb")",
    groq=rb"gsk_[A-Za-z0-9]{40,}(?!" + _T + rb")",
    xai=rb"xai-[A-Za-z0-9]{40,}(?!" + _T + rb")",
    replicate=rb"r8_[A-Za-z0-9]{30,}(?!" + _T + rb")",
    perplexity=rb"pplx-[A-Za-z0-9]{32,}(?!" + _T + rb")",
    aws_access=rb"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])([A-Z0-9]{16})(?![A-Za-z0-9])",
    github=rb"(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,244})(?![A-Za-z0-9])",
    gitlab=rb"gl(?:pat|dt|ptt|rt|cbt|oas|soat|ffct|imt|agent|ft)-" + _T + rb"{20,}(?:\.[A-Za-z0-9_-]{1,16}){0,2}",
    slack=rb"(?:xox[abposre]-[A-Za-z0-9-]{20,}|xapp-[0-9]-[A-Za-z0-9-]{20,})",
    twilio_sid=rb"SK[0-9a-f]{32}(?![A-Za-z0-9])",
    npm=rb"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])",
    pypi=rb"pypi-Ag" + _T + rb"{50,}",
    jwt=rb"eyJ" + _T + rb"{13,}(?:\." + _T + rb"*){1,4}",
    # Formats with a literal that a token run does not start with.
    sendgrid=rb"SG\.(?<![A-Za-z0-9_-]SG\.)" + _T + rb"{16,32}\." + _T + rb"{16,64}(?!" + _T + rb")",
    slack_webhook=rb"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{16,}",
    npmrc=rb"_authToken[ \t]*=[ \t]*[\"']?([A-Za-z0-9._~+/=-]{16,})",
    pem_begin=rb"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
    b64_16=rb"[A-Za-z0-9+/]{16}",
    pem_end=rb"-----END [A-Z0-9 ]{0,40}-----",
    # Where a truncated key ends: runs of base64 after whitespace or JSON-escaped
    # newlines, 16+ characters (a key's lines are 64) or a short last one with "="
    # padding. Prose words are shorter, so the prose after a cut paste survives.
    pem_body=(rb"(?:(?:\s+|(?:\\r)?\\n)(?:[A-Za-z0-9+/=]{16,}|[A-Za-z0-9+/]{1,15}={1,2})"
              rb"(?![A-Za-z0-9+/=]))*"),
    # Context rules, on the lower-cased view.
    aws_secret=rb"secret[ _-]?((?:access[ _-]?)?)key" + _SEP + rb"([a-z0-9/+]{40})(?![a-z0-9/+=])",
    twilio_ctx=(rb"twilio[a-z_]{0,20}(?:auth[_-]?token|api[_-]?secret)" + _SEP
                + rb"([a-z0-9]{32})(?![a-z0-9])"),
    auth=(rb"authorization[\"']?[ \t]*[:=][ \t]*[\"']?(bearer|token|basic)[ \t]+"
          rb"([a-z0-9._~+/=-]{8,})"),
    # Two patterns with literal starts ("pass", "pwd") rather than one starting "p":
    # re's scan then stops only at those, not at every "p".
    password=rb"(pass(?:w(?:or)?d|phrase)?)" + _PW_TAIL,
    password_pwd=rb"(pwd)" + _PW_TAIL,
    curl_user=rb"-u(?<![^\s\"'-]-u)(?:ser[ =]| ?)[\"']?[^\s:\"']{1,64}:([^\s\"']{1,128})",
    mysql_p=rb"mysql[a-z]*[ \t](?:[^\n]{0,200}?[ \t])?-p([^\s\"']{1,128})",
    key_header=rb"-key[\"']?[ \t]*[:=][ \t]*[\"']?([a-z0-9._~+/=-]{16,})",
    key_token=rb"-token[\"']?[ \t]*[:=][ \t]*[\"']?([a-z0-9._~+/=-]{16,})",
    ini_section=rb"\[[A-Za-z0-9_. -]{1,64}\][ \t]*(?:\r?\n|\Z)",
    ini_lines=rb"(?:[ \t]*(?:[#;][^\n]*|[A-Za-z0-9_.-]+[ \t]*[=:][^\n]*)?\r?\n)*",
    password_xml=rb"<([a-z0-9_.:-]{0,32}password)>([^<\r\n]{1,256})</\1>",
    ssn_ctx=rb"ssn(?<![a-z]ssn)[ \t]*(?:[:#=-]|is|no\.?)?[ \t]*([0-9]{3}[ ]?[0-9]{2}[ ]?[0-9]{4})(?![0-9-])",
    ssn_ctx2=rb"social security(?: number| no\.?| #)?[ \t]*(?:[:#=-]|is)?[ \t]*([0-9]{3}[ ]?[0-9]{2}[ ]?[0-9]{4})(?![0-9-])",
    # Structure rules, on the class view: literal digit shapes.
    card=rb"0000000000000(?<![0Aa_.+-]0000000000000)0*",
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
    marker=rb"\[REDACTED:[a-z0-9_]{1,64}\]",
    space_or_slash=rb"[\s/]",
    shell_sep=rb"[;|&]",
)


# ------------------------------------------------------------------------- checks

# Checks on the original str, also compiled on first use.
S = _Lazy(
    digit=r"[0-9]",
    field_name=r"(?i)[a-z_]*(?:pass|pwd)[a-z_]*",
    hex32=r"[0-9a-f]{32,}",
    placeholder=r"""(?ix)
    \$\{.*\} | \$\(.*\) | \{\{.*\}\} | \{\{ | \{[a-z_][a-z0-9_.]*\} | <[^>]*> | \[[^\]]*\]
    | (?:[:@/\ ._-]*(?:%[sdr]|%\([a-z_]+\)[sdr]|\{[a-z_0-9]*\}))+[:@/\ ._-]*  # "%s:%s", "{}:{}"
    | \*+ | x{3,} | \.{3,} | …
    | \$[a-z_][a-z0-9_]* | env\(.*\) | (?:your|my)[_ -]?(?:db[_ -]?)?(?:password|pass|pwd|secret)(?:[_ -]?here)?
    """,
    ident=r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*",
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
    variety = _variety(v, s, e)
    if variety == 3 and e - s >= 32:
        return True
    return variety >= 2 and len(set(v.b[s:e])) >= min_distinct


def _opaque(v: Views, s: int, e: int) -> bool:
    """A header credential: random tokens this long almost always show a digit, while
    placeholders (AccessTokenHere, YourApiKeyGoesHere) are words in mixed case."""
    c = v.cls[s:e]
    return b"0" in c and (b"A" in c or b"a" in c) and len(set(v.b[s:e])) >= 6


Check = Callable[["Views", "re.Match[bytes]"], int]  # -> end of the redaction, or -1


def _ok(_v: Views, m: re.Match[bytes]) -> int:
    return m.end()


def _random_token(v: Views, m: re.Match[bytes]) -> int:
    return m.end() if _randomish(v, m.start(), m.end()) else -1


def _openai(v: Views, m: re.Match[bytes]) -> int:
    # The sk- prefix is short and shared with CSS/kebab names (--sk-color-primary-500-bg):
    # demand all three character classes, or the hex of DeepSeek-style keys.
    s, e = m.start() + 3, m.end()
    if _variety(v, s, e) == 3 and len(set(v.b[s:e])) >= 8:
        return e
    return e if S.hex32.fullmatch(v.text, s, e) else -1


def _aws_access(v: Views, m: re.Match[bytes]) -> int:
    return m.end() if len(set(v.b[m.start(1):m.end(1)])) > 4 else -1  # not AKIAXXXXXXXXXXXXXXXX


def _github(v: Views, m: re.Match[bytes]) -> int:
    # "__ghp_...__" in markdown: the underscores after the token are emphasis.
    end = m.end()
    while v.b[end - 1] == 0x5F:
        end -= 1
    return end if _randomish(v, m.start(), end) else -1


def _b64decode(seg: str) -> bytes | None:
    try:
        return binascii.a2b_base64(seg.replace("-", "+").replace("_", "/") + "=" * (-len(seg) % 4))
    except (binascii.Error, ValueError):
        return None


def _jwt(v: Views, m: re.Match[bytes]) -> int:
    s, e = m.start(), m.end()
    parts = v.text[s:e].split(".")
    header = _b64decode(parts[0])
    if not header or not header.lstrip().startswith(b"{"):
        return -1
    if b'"enc"' in header:  # JWE: header.key.iv.ciphertext.tag, the key may be empty
        return e if len(parts) == 5 and parts[3] else -1
    if b'"alg"' not in header and b'"typ"' not in header:
        return -1
    if len(parts) < 3 or not parts[1]:
        return -1
    # A JWS has three parts; anything after a third dot is not ours.
    return s + len(parts[0]) + len(parts[1]) + len(parts[2]) + 2


# Formats found at the start of a token run, keyed by its first two characters.
_TOKEN_RULES: tuple[tuple[str, tuple[bytes, ...], str, Check], ...] = (
    ("jwt", (b"ey",), "jwt", _jwt),
    ("anthropic_key", (b"sk",), "anthropic", _random_token),
    ("openrouter_key", (b"sk",), "openrouter", _random_token),
    ("openai_key", (b"sk",), "openai", _openai),
    ("stripe_key", (b"sk", b"rk", b"wh"), "stripe", _random_token),
    ("google_api_key", (b"AI",), "google", _random_token),
    ("huggingface_token", (b"hf",), "huggingface", _random_token),
    ("groq_key", (b"gs",), "groq", _random_token),
    ("xai_key", (b"xa",), "xai", _random_token),
    ("replicate_token", (b"r8",), "replicate", _random_token),
    ("perplexity_key", (b"pp",), "perplexity", _random_token),
    ("aws_access_key", (b"AK", b"AS", b"AB", b"AC", b"A3"), "aws_access", _aws_access),
    ("github_token", (b"gh", b"gi"), "github", _github),
    ("gitlab_token", (b"gl",), "gitlab", _random_token),
    ("slack_token", (b"xo", b"xa"), "slack", _random_token),
    ("twilio_key", (b"SK",), "twilio_sid", _ok),
    ("npm_token", (b"np",), "npm", _random_token),
    ("pypi_token", (b"py",), "pypi", _ok),
)

Dispatch = dict[bytes, list[tuple[int, "re.Pattern[bytes]", Check]]]


def build_dispatch(on: Collection[str], prio: dict[str, int]) -> Dispatch:
    table: Dispatch = {}
    for rule, keys, pattern, check in _TOKEN_RULES:
        if rule in on:
            for key in keys:
                table.setdefault(key, []).append((prio[rule], getattr(P, pattern), check))
    return table


_MIN_RUN = 16  # shortest token that scan_tokens dispatches (a minimal JWT header is 19)
_RUN = b"a" * _MIN_RUN


def scan_tokens(v: Views, dispatch: Dispatch, out: list[Hit]) -> None:
    """Find runs of 16+ token characters and try the formats their first two select."""
    b = v.b
    tok = v.tok
    find = tok.find
    covered = 0  # end of the last hit: a JWT's payload run needs no second look
    s = find(_RUN)
    while s >= 0:
        run_end = find(b" ", s + _MIN_RUN)
        if run_end < 0:
            run_end = len(tok)
        nxt = find(_RUN, run_end)
        if s < covered:
            s = nxt
            continue
        # "__ghp_...__" or "--token-..." : the token proper starts after the - and _.
        lead = 0
        while b[s + lead] in b"-_" and lead < 4:
            lead += 1
        s += lead
        cands = dispatch.get(b[s:s + 2])
        if cands is not None:
            for prio, rx, check in cands:
                mm = rx.match(b, s)
                if mm is not None:
                    end = check(v, mm)
                    if end > s:
                        out.append((s, end, prio))
                        covered = end
                        break
        s = nxt


def _scan_simple(v: Views, rx: re.Pattern[bytes], literal: bytes, group: int, prio: int,
                 check: Callable[[Views, int, int], bool] | None, out: list[Hit]) -> None:
    for m in _at(v.b, literal, rx):
        s, e = m.span(group)
        if s < e and (check is None or check(v, s, e)):
            out.append((s, e, prio))


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
            yaml_like = op == b":" and (not rest or rest[:1] in (b",", b"}", b"#"))
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


_KEY_HEADERS = (b"x-api-key", b"api-key", b"x-goog-api-key", b"ocp-apim-subscription-key",
                b"x-auth-token", b"x-access-token", b"private-token", b"x-apikey")


def scan_key_header(v: Views, prio: int, out: list[Hit]) -> None:
    """x-api-key: ..., api-key: ... (Azure OpenAI), private-token: ... (GitLab)."""
    low, text = v.low, v.text
    for m in (*_at(low, b"-key", P.key_header), *_at(low, b"-token", P.key_token)):
        start = m.start() + 1
        name_start = start
        while name_start > 0 and low[name_start - 1] in _KEY_CHARS:
            name_start -= 1
        name = low[name_start:m.start()] + (b"-key" if low.startswith(b"-key", m.start()) else b"-token")
        if name not in _KEY_HEADERS:
            continue
        s, e = m.span(1)
        value = text[s:e]
        if _opaque(v, s, e) and not S.placeholder.fullmatch(value):
            out.append((s, e, prio))


def scan_aws_secret(v: Views, prio: int, out: list[Hit]) -> None:
    low = v.low
    for m in _at(low, b"secret", P.aws_secret):
        if not m.group(1) and b"aws" not in low[max(0, m.start() - 12):m.start()]:
            continue  # a bare secret_key = "..." is not AWS's unless the key says so
        s, e = m.span(2)
        if _variety(v, s, e) >= 2:
            out.append((s, e, prio))


def scan_twilio_ctx(v: Views, prio: int, out: list[Hit]) -> None:
    for m in _at(v.low, b"twilio", P.twilio_ctx):
        s, e = m.span(1)
        if _variety(v, s, e) >= 2:
            out.append((s, e, prio))


def scan_auth(v: Views, bearer: int | None, basic: int | None, out: list[Hit]) -> None:
    low = v.low
    text = v.text
    for m in _at(low, b"authorization", P.auth):
        s, e = m.span(2)
        value = text[s:e]
        if m.group(1) == b"basic":
            if basic is None:
                continue
            decoded = _b64decode(value)  # the scheme's own check: base64 of "user:password"
            if decoded and b":" in decoded and all(32 <= c < 127 for c in decoded):
                out.append((s, e, basic))
        elif bearer is not None:
            if len(value) >= 12 and _opaque(v, s, e) and not S.placeholder.fullmatch(value):
                out.append((s, e, bearer))


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


def _card_ok(digits: str) -> bool:
    return _issuer_ok(digits) and _luhn(digits) and len(set(digits)) > 1


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
        if (13 <= e - s <= 16 and (s == 0 or cls[s - 1] not in b"0Aa_.+-")
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


def _slack_webhook(v: Views, prio: int, out: list[Hit]) -> None:
    b = v.b
    for m in _at(b, b"hooks.slack.com", P.slack_webhook):
        s = m.start()
        for scheme in (b"https://", b"http://"):
            if b[s - len(scheme):s] == scheme:
                s -= len(scheme)
                break
        out.append((s, m.end(), prio))


def _sendgrid(v: Views, prio: int, out: list[Hit]) -> None:
    _scan_simple(v, P.sendgrid, b"SG.", 0, prio, _randomish, out)


def _npmrc(v: Views, prio: int, out: list[Hit]) -> None:
    _scan_simple(v, P.npmrc, b"_authToken", 1, prio, lambda v, s, e: _variety(v, s, e) >= 2, out)


def markers(v: Views) -> list[tuple[int, int]]:
    """Spans of existing [REDACTED:rule] markers, which no new redaction may touch."""
    return [m.span() for m in _at(v.b, b"[REDACTED:", P.marker)]


# Scanners other than the token-run dispatch: (rules they report, function(v, on, prio, out)).
Scanner = Callable[[Views, Collection[str], dict[str, int], list[Hit]], None]


def _one(rule: str, fn: Callable[[Views, int, list[Hit]], None]) -> tuple[tuple[str, ...], Scanner]:
    def run(v: Views, on: Collection[str], prio: dict[str, int], out: list[Hit]) -> None:
        fn(v, prio[rule], out)
    return (rule,), run


def _auth(v: Views, on: Collection[str], prio: dict[str, int], out: list[Hit]) -> None:
    scan_auth(v, prio["bearer_token"] if "bearer_token" in on else None,
              prio["basic_auth"] if "basic_auth" in on else None, out)


SCANNERS: tuple[tuple[tuple[str, ...], Scanner], ...] = (
    _one("pem_private_key", scan_pem),
    _one("sendgrid_key", _sendgrid),
    _one("slack_webhook", _slack_webhook),
    _one("npm_token", _npmrc),
    _one("aws_secret_key", scan_aws_secret),
    _one("twilio_key", scan_twilio_ctx),
    (("bearer_token", "basic_auth"), _auth),
    _one("api_key_header", scan_key_header),
    _one("password", scan_curl_user),
    _one("url_password", scan_url_password),
    _one("password", scan_password),
    _one("credit_card", scan_cards),
    _one("iban", scan_iban),
    _one("us_ssn", scan_ssn),
    _one("us_ssn", scan_ssn_ctx),
    _one("email", scan_email),
    _one("phone", scan_phone),
)

