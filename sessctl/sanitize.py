"""Secrets and personal data out of text before it is stored. Pure functions, no I/O.

Interface used by the rest of sessctl (keep it stable):

    sanitizer = Sanitizer.from_config(cfg.sanitize)   # the raw [sanitize] table (may be empty/None)
    clean, counts = sanitizer.sanitize(text)          # counts: {rule_name: n}, {} when clean
    sanitizer.outbound                                # bool: also redact what goes to the provider
    sanitizer.rules()                                 # [RuleInfo(name, description, example, enabled, builtin)]

Each match becomes `[REDACTED:<rule>]`; `counts` says how many redactions each rule
made. Values are never kept. Overlapping matches merge into one redaction, labelled
with the most specific rule: the order of `--list-rules` (provider formats before the
generic forms, secrets before personal data), then custom rules in the order of the
config. Existing `[REDACTED:...]` markers are never matched again, so sanitizing
sanitized text changes nothing.

Built-in rules (132, all on by default except `phone` and `ip_address`; the full list,
each with its description and a FAKE example, is `sessctl sanitize --list-rules`, and
what each knows about its format is in sanitize_catalog.py):

    provider tokens   one rule per provider format (openai_key, aws_access_key,
                      github_token, datadog_key, vault_token, ...): a fixed prefix
                      (sk-proj-, ghp_, hvs., dop_v1_), an infix (Q~, .atlasv1.), a
                      suffix (-us12, NRAL) or, for formats without one, a value of the
                      provider's length and alphabet assigned to a key naming it
                      (DATADOG_API_KEY=..., "heroku_api_key": "..."); each token must
                      look random (placeholders such as sk_live_xxxx... do not)
    pem_private_key   PEM private key blocks of every kind (also cut short or
                      JSON-escaped), SSH2 and PuTTY private keys
    jwt               eyJ... tokens whose header decodes to JSON naming alg/typ/enc
    kubernetes_secret the values under data: / stringData: of a kind: Secret manifest
    azure_sas_token   sig= of a URL that also carries sv= and se=/sp=
    slack_webhook, discord_webhook, teams_webhook   webhook URLs
    bearer_token      the credentials after `Authorization: <scheme>` (12+ characters
                      with a digit; not Digest or AWS4 signatures)
    basic_auth        Basic credentials, and a docker config "auth", that decode to user:pass
    api_key_header    the value of an API-key header (x-api-key, api-key, dd-api-key, ...)
    url_password      the password in scheme://user:password@host; user and host stay readable
    password          the value in password=..., "password": "...", passwd/passphrase,
                      *_pass/*_pwd keys, --password VALUE, <password>...</password>,
                      NuGet ClearTextPassword, curl -u user:PASS, mysql -pPASS;
                      references (${VAR}, %s, %VAR%, os.environ[...], args.password)
                      are not values, and a bare word counts only where it is a literal
                      (.env, query string, flag, YAML, INI)
    secret_assignment a value assigned to a secret's name (secret, token, api_key,
                      client_secret, ...): 16+ characters mixing letters and digits,
                      not a stand-in (example, changeme, xxxxx), not code (a variable,
                      a type name, a call)
    credit_card       13-19 digits grouped by spaces or dashes, or 13-16 unseparated,
                      with a known issuer prefix for the length and a valid Luhn
                      checksum; the processors' documented test numbers are kept
    iban              country code, that country's length and a valid ISO 7064 mod-97
                      check; compact or in groups of four
    us_ssn            ddd-dd-dddd with area not 000/666/9xx, group not 00, serial not
                      0000; spaced or unseparated forms only right after "SSN" or
                      "social security"
    email             local@domain.tld (not user@host inside a URL, scp-style
                      git@host:path, ssh deploy@host logins, or file names like icon@2x.png)
    phone             +<country code> then 8-15 digits in all (opt-in: it is noisy)
    ip_address        IPv4 and IPv6 addresses, not loopback, unspecified or the
                      documentation ranges (opt-in: logs are full of them)

`Sanitizer.rules()` gives each rule's one-line description and a FAKE example.

Configuration, the `[sanitize]` table of config.toml:

    [sanitize]
    outbound = false                 # true: also redact what is sent to the provider
    disable = ["email"]              # built-in or custom rules to turn off
    enable = ["phone"]               # opt-in built-in rules to turn on
    allow = ["ops@example.com"]      # literal values never redacted (where a match lies
                                     # inside an occurrence of one, it is kept)
    allow_patterns = ['.*@example\\.com']   # a match whose text fully matches one is kept

    [sanitize.rules]                 # custom rules: name = "regex" (Python syntax);
    ticket_secret = "tkt_[a-z0-9]{24}"   # with a group named `secret`, only that group
    db_dsn = 'dsn=(?P<secret>\\S+)'      # is redacted. Names: [a-z][a-z0-9_]{0,31}.

Anything invalid (an unknown key or rule name, a wrong type, a bad regex, a pattern
that matches the empty string) raises sessctl.errors.UsageError with a one-line
message naming the key.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from typing import Any, NamedTuple

from sessctl import sanitize_rules as _r
from sessctl.errors import UsageError

__all__ = ["Sanitizer", "RuleInfo"]

_KEYS = ("outbound", "disable", "enable", "allow", "allow_patterns", "rules")
_NAME = r"[a-z][a-z0-9_]{0,31}"
_HINT = "see `sessctl sanitize --list-rules`"


_MAX_PASSES = 4  # bound on re-scans; real text converges in one or two

class RuleInfo(NamedTuple):
    name: str
    description: str
    example: str | None  # a FAKE value the rule redacts; None for custom rules
    enabled: bool
    builtin: bool


class _Custom(NamedTuple):
    name: str
    pattern: re.Pattern[str]
    group: int | str  # "secret" when the pattern names that group, else 0


def _str_list(table: Mapping[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise UsageError(f"config [sanitize] {key} must be a list of strings")
    return value


def _compile(source: str, where: str) -> re.Pattern[str]:
    try:
        rx = re.compile(source)
    except re.error as exc:
        raise UsageError(f"config {where}: invalid regex {source!r}: {str(exc).splitlines()[0]}") from None
    if rx.fullmatch(""):
        raise UsageError(f"config {where}: regex {source!r} matches the empty string")
    return rx


class Sanitizer:
    """Finds secrets and personal data and replaces them with [REDACTED:<rule>]."""

    def __init__(
        self,
        *,
        outbound: bool = False,
        disable: frozenset[str] = frozenset(),
        enable: frozenset[str] = frozenset(),
        allow: tuple[str, ...] = (),
        allow_patterns: tuple[re.Pattern[str], ...] = (),
        custom: tuple[_Custom, ...] = (),
    ) -> None:
        self.outbound = outbound
        self._custom = custom
        self._order = _r.RULE_NAMES + tuple(c.name for c in custom)
        self._prio = {name: i for i, name in enumerate(self._order)}
        self._labels = tuple(f"[REDACTED:{name}]" for name in self._order)
        self._on = frozenset(
            r.name for r in _r.RULES if (r.default or r.name in enable) and r.name not in disable
        )
        self._custom_on = tuple(c for c in custom if c.name not in disable)
        self._allow = tuple(a for a in allow if a)
        self._allow_patterns = allow_patterns
        self._scanners = tuple(fn for rules, fn in _r.SCANNERS if self._on.intersection(rules))
        self._tables: _r.Tables | None = None  # built on the first sanitize

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> Sanitizer:
        table = dict(table or {})
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise UsageError(
                f"config [sanitize]: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}"
            )
        outbound = table.get("outbound", False)
        if not isinstance(outbound, bool):
            raise UsageError("config [sanitize] outbound must be true or false")
        disable, enable = _str_list(table, "disable"), _str_list(table, "enable")
        allow = _str_list(table, "allow")
        if any(not a for a in allow):
            raise UsageError("config [sanitize] allow: empty string (it would allow nothing)")
        allow_patterns = tuple(
            _compile(p, f"[sanitize] allow_patterns[{i}]")
            for i, p in enumerate(_str_list(table, "allow_patterns"))
        )
        rules_table = table.get("rules", {})
        if not isinstance(rules_table, Mapping):
            raise UsageError('config [sanitize] rules must be a table of name = "regex"')
        custom: list[_Custom] = []
        for name, source in rules_table.items():
            where = f"[sanitize.rules] {name}"
            if not isinstance(name, str) or not re.fullmatch(_NAME, name):
                raise UsageError(f"config {where}: a rule name is [a-z][a-z0-9_]{{0,31}}")
            if name in _r.PRIO:
                raise UsageError(f"config {where}: a built-in rule has this name; pick another")
            if not isinstance(source, str):
                raise UsageError(f'config {where}: must be a regex string, as in {name} = "..."')
            rx = _compile(source, where)
            custom.append(_Custom(name, rx, "secret" if "secret" in rx.groupindex else 0))
        known = set(_r.PRIO) | {c.name for c in custom}
        for key, names in (("disable", disable), ("enable", enable)):
            for name in names:
                if name not in known:
                    raise UsageError(f"config [sanitize] {key}: unknown rule {name!r}; {_HINT}")
        both = sorted(set(disable) & set(enable))
        if both:
            raise UsageError(f"config [sanitize] enable and disable both name {', '.join(both)}")
        return cls(
            outbound=outbound,
            disable=frozenset(disable),
            enable=frozenset(enable),
            allow=tuple(allow),
            allow_patterns=allow_patterns,
            custom=tuple(custom),
        )

    def rules(self) -> list[RuleInfo]:
        """Every rule, built-in first in priority order, then custom ones."""
        infos = [RuleInfo(r.name, r.description, r.example, r.name in self._on, True) for r in _r.RULES]
        on = {c.name for c in self._custom_on}
        infos += [
            RuleInfo(c.name, f"custom rule: {c.pattern.pattern}", None, c.name in on, False)
            for c in self._custom
        ]
        return infos

    def sanitize(self, text: str) -> tuple[str, dict[str, int]]:
        """Return the text with every match replaced, and how many each rule replaced."""
        if not text:
            return text, {}
        hits = self._find(text)
        if not hits:
            return text, {}
        text, counts, spans = self._redact(text, hits)  # hits come sorted
        # A redaction can expose a match it used to overlap (a card number one space
        # after another), so sanitizing twice would change more. Rescan until nothing
        # changes, but only around the new markers: everywhere else the text, and
        # the context any rule looks at, is what the full scan just saw.
        for _ in range(_MAX_PASSES - 1):
            found = self._find_in(text, _windows(text, spans))
            if not found:
                break
            text, more, spans = self._redact(text, sorted(found))
            for rule, n in more.items():
                counts[rule] = counts.get(rule, 0) + n
        return text, counts

    # ------------------------------------------------------------------ internals

    def _find(self, text: str) -> list[_r.Hit]:
        v = _r.Views(text)
        hits: list[_r.Hit] = []
        if self._tables is None:
            self._tables = _r.build_tables(self._on, self._prio)
        _r.scan_tokens(v, self._tables, hits)
        for scan in self._scanners:
            scan(v, self._on, self._prio, hits)
        for c in self._custom_on:
            prio = self._prio[c.name]
            for m in c.pattern.finditer(text):
                s, e = m.span(c.group)
                if s < e:
                    hits.append((s, e, prio))
        if hits and (self._allow or self._allow_patterns):
            hits = [h for h in hits if not self._allowed(text, h[0], h[1])]
        if hits:
            hits.sort()
            marks = _r.markers(v)
            if marks:
                hits = _outside(hits, marks)
        return hits

    def _find_in(self, text: str, windows: list[tuple[int, int]]) -> list[_r.Hit]:
        """Hits inside the given stretches of text, in text positions. The stretches are
        scanned as one text, joined by blank lines that no rule matches across, since
        every scan has a fixed cost that thousands of small ones would multiply."""
        starts: list[int] = []  # where each stretch begins in the joined text
        pos = 0
        for ws, we in windows:
            starts.append(pos)
            pos += we - ws + len(_JOIN)
        joined = _JOIN.join(text[ws:we] for ws, we in windows)
        out: list[_r.Hit] = []
        for s, e, p in self._find(joined):
            i = bisect_right(starts, s) - 1
            ws, we = windows[i]
            if e - starts[i] <= we - ws:  # not across a join
                out.append((s - starts[i] + ws, e - starts[i] + ws, p))
        return out

    def _allowed(self, text: str, s: int, e: int) -> bool:
        return any(self._allowed_literal(text, s, e, a) for a in self._allow) or any(
            rx.fullmatch(text, s, e) for rx in self._allow_patterns
        )

    @staticmethod
    def _allowed_literal(text: str, s: int, e: int, literal: str) -> bool:
        # Is [s, e) inside some occurrence of `literal`? Only occurrences starting
        # in [e - len, s] can contain it.
        n = len(literal)
        if n < e - s:
            return False
        i = text.find(literal, max(0, e - n), s + n)
        return 0 <= i <= s

    def _redact(self, text: str, hits: list[_r.Hit]) -> tuple[str, dict[str, int], list[tuple[int, int]]]:
        """Replace sorted hits, merging overlaps into one marker per group; also
        returns where the markers stand in the new text."""
        order, labels = self._order, self._labels
        pieces: list[str] = []
        counts: dict[str, int] = {}
        spans: list[tuple[int, int]] = []
        pos = out = 0
        cur_s, cur_e, cur_p = hits[0]
        for s, e, p in hits[1:] + [(len(text) + 1, len(text) + 1, 0)]:
            if s < cur_e:  # overlapping: one redaction, labelled by the more specific rule
                if e > cur_e:
                    cur_e = e
                if p < cur_p:
                    cur_p = p
                continue
            label = labels[cur_p]
            out += cur_s - pos
            spans.append((out, out + len(label)))
            out += len(label)
            pieces.append(text[pos:cur_s])
            pieces.append(label)
            name = order[cur_p]
            counts[name] = counts.get(name, 0) + 1
            pos = cur_e
            cur_s, cur_e, cur_p = s, e, p
        pieces.append(text[pos:])
        return "".join(pieces), counts, spans


_JOIN = "\n\n\n"
_SPACE = re.compile(r"\s")


_REACH = 48
# A marker hides nothing unless a token continues right after or before it, or digits
# (a spaced card, IBAN or phone number) stand within a few characters of it.
_GLUED_AFTER = re.compile(r"[\w+/=.:@-]|[ \t(]{1,2}[+\d]")
# Only a token character right before a marker can have continued into what it hid
# ("=" and ":" end a token: KEY=[REDACTED] and key: [REDACTED] hide nothing).
_GLUED_BEFORE = re.compile(r"[\w+/.@-]\Z|\d")


def _windows(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What to rescan after redacting: the text around each marker (spans, sorted),
    widened to whitespace so no token is cut, merged. A redaction changes matches only
    next to it: it splits the token it stood in (a key glued to a card number) or ends
    a run that a spaced format (card, IBAN, phone) had swallowed, within _REACH
    characters. Linear: stretches never overlap, and a marker inside the stretch
    already taken adds nothing, so each character is searched once."""
    out: list[tuple[int, int]] = []
    n = len(text)
    for ms, me in spans:
        floor = out[-1][1] if out else 0
        if out and me + _REACH <= floor:
            continue
        if not (_GLUED_AFTER.match(text, me) or _GLUED_BEFORE.search(text, max(0, ms - 3), ms)):
            continue  # whitespace or a quote on both sides, no digits near: nothing was hidden
        s, e = max(floor, ms - _REACH), min(n, me + _REACH)
        if s > floor:
            cut = max(text.rfind(c, floor, s) for c in " \n\t")
            s = cut + 1 if cut >= 0 else floor
        if e < n:
            m = _SPACE.search(text, e)
            e = m.start() if m else n
        if out and s <= floor:
            out[-1] = (out[-1][0], max(floor, e))
        else:
            out.append((s, e))
    return out


def _outside(hits: list[_r.Hit], marks: list[tuple[int, int]]) -> list[_r.Hit]:
    """Sorted hits without those touching a marker (marks: sorted, disjoint)."""
    starts = [ms for ms, _ in marks]
    kept = []
    for h in hits:
        i = bisect_left(starts, h[1]) - 1  # the last marker starting before the hit ends
        if i < 0 or marks[i][1] <= h[0]:
            kept.append(h)
    return kept
